//! Building a record batch where it is sent: a loan of arena space.
//!
//! [`BatchProducer::send`] copies each of a batch's buffers into the arena;
//! for large batches that copy is the producer's whole cost. A loan reserves
//! the message's bytes in the arena first and hands out its body buffers to
//! fill in place, so sending is publishing: [`BatchLoan::commit`] checks
//! what was written, writes the metadata (a few hundred bytes) in front of
//! the body and publishes the message.
//!
//! A loaned message is laid out as a sent one is (prefix, metadata, padding
//! to 64 bytes, then each column's buffers in the schema's order, each at a
//! 64-aligned offset in the body), with two differences that no reader sees,
//! since readers find each buffer by the offset and length the metadata
//! gives: a byte column's values keep all the space reserved for them, used
//! or not, and a nullable column's bitmap keeps its space when the column
//! has no nulls (it is then declared empty, as arrow-ipc's writer declares
//! it).

use std::mem::{align_of, discriminant, size_of};
use std::time::{Duration, Instant};

use arrow_array::{ArrowPrimitiveType, OffsetSizeTrait};
use arrow_ipc::FieldNode;
use arrow_schema::{ArrowError, DataType};

use super::super::flat::{Column, FlatEncoder};
use super::super::{ARENA_ALIGN, ArrowRingError, MSG_RECORD_BATCH};
use super::BatchProducer;

const ALIGN: usize = ARENA_ALIGN as usize;

/// Where one body buffer lies: bytes from the body's start, and the bytes
/// reserved for it.
#[derive(Clone, Copy, Debug)]
struct Part {
    at: usize,
    len: usize,
}

/// One column of a loaned batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    kind: Column,
    /// The validity bitmap, reserved for nullable fields only.
    validity: Option<Part>,
    /// A byte column's offsets, `rows + 1` of them.
    offsets: Option<Part>,
    /// The values: fixed width, bits, or a byte column's bytes.
    values: Part,
    /// A byte column's offsets are 64-bit (LargeUtf8, LargeBinary).
    large: bool,
    /// A byte column's values must be UTF-8 (Utf8, LargeUtf8).
    utf8: bool,
}

/// What a column's metadata declares: its null count, and for a byte
/// column the bytes of values its offsets span.
type Declared = (usize, usize);

fn invalid(m: String) -> ArrowRingError {
    ArrowRingError::Encode(ArrowError::InvalidArgumentError(m))
}

fn too_large(arena: u64) -> ArrowRingError {
    ArrowRingError::BatchTooLarge {
        needed: u64::MAX,
        arena,
    }
}

impl BatchProducer {
    /// Lends arena space for one record batch of `rows` rows of the stream's
    /// schema, to be built in place and sent by [`BatchLoan::commit`]
    /// without a copy. `value_bytes` gives the bytes to reserve for the
    /// values of each Utf8/Binary (or Large) column, in column order (an
    /// empty slice when there are none); what a column does not use stays
    /// unused in the message. Waits while the arena or the slots are full.
    ///
    /// The stream's schema must be known ([`set_schema`](Self::set_schema),
    /// or a batch sent before) and flat: booleans, fixed-width primitives,
    /// Utf8/Binary and their Large forms. The loan's buffers hold whatever
    /// the arena held before (except bitmaps, which start all valid): write
    /// every value (a byte column's first offset starts at 0). Dropping the
    /// loan without `commit` sends no batch; a stream's first loan has sent
    /// its schema message by then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use laminar_ring::arrow::{ArrowRingOptions, BatchProducer};
    /// use laminar_ring::arrow::array::types::{Float64Type, Int64Type};
    /// use laminar_ring::arrow::schema::{DataType, Field, Schema};
    ///
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("id", DataType::Int64, false),
    ///     Field::new("px", DataType::Float64, false),
    ///     Field::new("tag", DataType::Utf8, false),
    /// ]));
    /// let mut tx = BatchProducer::create("quotes", &ArrowRingOptions::default())?;
    /// tx.set_schema(schema)?;
    /// let mut loan = tx.loan(1024, &[1024 * 5])?;
    /// for (j, v) in loan.values_mut::<Int64Type>(0)?.iter_mut().enumerate() {
    ///     *v = j as i64;
    /// }
    /// loan.values_mut::<Float64Type>(1)?.fill(0.25);
    /// loan.fill_bytes(2, (0..1024).map(|_| "alpha"))?;
    /// loan.commit()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Encode` (no schema yet, a schema that is not flat, or
    /// `value_bytes` not one size per byte column), `BatchTooLarge`,
    /// `ConsumerGone`.
    pub fn loan(
        &mut self,
        rows: usize,
        value_bytes: &[usize],
    ) -> Result<BatchLoan<'_>, ArrowRingError> {
        self.loan_until(rows, value_bytes, None)
    }

    /// [`loan`](Self::loan) if the space is free now, without waiting.
    ///
    /// # Errors
    ///
    /// As [`loan`](Self::loan), and `Timeout` when there is no room now.
    pub fn try_loan(
        &mut self,
        rows: usize,
        value_bytes: &[usize],
    ) -> Result<BatchLoan<'_>, ArrowRingError> {
        self.loan_until(rows, value_bytes, Some(Instant::now()))
    }

    /// [`loan`](Self::loan), waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`try_loan`](Self::try_loan).
    pub fn loan_timeout(
        &mut self,
        rows: usize,
        value_bytes: &[usize],
        timeout: Duration,
    ) -> Result<BatchLoan<'_>, ArrowRingError> {
        self.loan_until(rows, value_bytes, Instant::now().checked_add(timeout))
    }

    fn loan_until(
        &mut self,
        rows: usize,
        value_bytes: &[usize],
        deadline: Option<Instant>,
    ) -> Result<BatchLoan<'_>, ArrowRingError> {
        let Some(schema) = self.schema.clone() else {
            return Err(invalid(
                "a loan needs the stream's schema: call set_schema or send a batch first".into(),
            ));
        };
        let Some(flat) = self.flat.as_mut() else {
            return Err(ArrowRingError::Encode(ArrowError::NotYetImplemented(
                "a loan needs a flat schema (booleans, fixed-width primitives, Utf8/Binary)".into(),
            )));
        };
        let arena = self.arena_len;
        let slots = &mut self.loan_slots;
        slots.clear();
        let mut body = 0usize;
        let mut take = |len: Option<usize>| -> Result<Part, ArrowRingError> {
            let len = len.ok_or_else(|| too_large(arena))?;
            let part = Part { at: body, len };
            body = len
                .checked_next_multiple_of(ALIGN)
                .and_then(|l| body.checked_add(l))
                .ok_or_else(|| too_large(arena))?;
            Ok(part)
        };
        let mut sizes = value_bytes.iter();
        let bytes_columns = flat
            .columns()
            .iter()
            .filter(|c| matches!(c, Column::Bytes))
            .count();
        if value_bytes.len() != bytes_columns {
            return Err(invalid(format!(
                "{} value sizes for a schema of {bytes_columns} byte columns",
                value_bytes.len()
            )));
        }
        for (&kind, field) in flat.columns().iter().zip(schema.fields()) {
            let validity = match field.is_nullable() {
                true => Some(take(Some(rows.div_ceil(8)))?),
                false => None,
            };
            let large = matches!(
                field.data_type(),
                DataType::LargeUtf8 | DataType::LargeBinary
            );
            let utf8 = matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8);
            let (offsets, values) = match kind {
                Column::Fixed { width } => (None, take(rows.checked_mul(width))?),
                Column::Bits => (None, take(Some(rows.div_ceil(8)))?),
                Column::Bytes => {
                    let width = if large { 8 } else { 4 };
                    let offsets = take(rows.checked_add(1).and_then(|n| n.checked_mul(width)))?;
                    let cap = *sizes.next().expect("counted above");
                    (Some(offsets), take(Some(cap))?)
                }
            };
            slots.push(Slot {
                kind,
                validity,
                offsets,
                values,
                large,
                utf8,
            });
        }
        // The metadata the commit writes has this size: the same nodes and
        // buffers, whose values (null counts, lengths) are stored whole.
        list(flat, slots, rows, |s| Ok((0, s.values.len)))?;
        let header = flat.metadata(rows, body);
        let size = (header as u64).saturating_add(body as u64);
        if size > arena {
            return Err(ArrowRingError::BatchTooLarge {
                needed: size,
                arena,
            });
        }
        if !self.flush_until(deadline)? {
            return Err(ArrowRingError::Timeout);
        }
        if !self.flat_started {
            let message = FlatEncoder::schema_message(&schema).map_err(ArrowRingError::Encode)?;
            if message.len > arena {
                return Err(ArrowRingError::BatchTooLarge {
                    needed: message.len,
                    arena,
                });
            }
            self.pending.push_back(message);
            self.flat_started = true;
            let flushed = self.flush_until(deadline);
            if !matches!(flushed, Ok(true)) {
                // The loan takes nothing: a stream not begun stays so, its
                // schema going with the first batch that does (as in
                // send_flat). Nothing else was pending, so the schema
                // message is the one left.
                if self.pending.pop_back().is_some() {
                    self.flat_started = false;
                }
                flushed?;
                return Err(ArrowRingError::Timeout);
            }
        }
        let Some(pos) = self.reserve(size, deadline)? else {
            return Err(ArrowRingError::Timeout);
        };
        // reserve() may have raised the release floor to `pos` (a drained
        // ring whose next message starts the next lap). That holds only
        // once a message at `pos` is published, which a loan may never do
        // (aborted, dropped, forgotten, or its commit refused): every
        // message until then goes at `head`, and a floor above it would
        // count their bytes free. `head` is a floor: everything before it
        // is released (the ring was drained up to `pos >= head`), or the
        // floor was already lower.
        self.floor = self.floor.min(self.head);
        let start = (pos % arena) as usize;
        // SAFETY: reserve() made pos..pos+size free (the consumer released
        // it) and contiguous (start + size <= arena_len), inside the arena.
        let base = unsafe { self.arena.add(start) };
        for s in &self.loan_slots {
            if let Some(v) = s.validity {
                // SAFETY: the bitmap lies in the body (planned above),
                // inside the `size` free bytes at `base`.
                unsafe { std::ptr::write_bytes(base.add(header + v.at), 0xff, v.len) };
            }
            if let Some(o) = s.offsets {
                // The first offset, always 0.
                let width = if s.large { 8 } else { 4 };
                // SAFETY: as above; the part holds rows + 1 >= 1 offsets of
                // `width` bytes.
                unsafe { std::ptr::write_bytes(base.add(header + o.at), 0, width) };
            }
        }
        Ok(BatchLoan {
            producer: self,
            pos,
            size,
            header,
            base,
            rows,
        })
    }
}

/// Lists the nodes and buffers of a loaned batch's metadata in `flat`,
/// with what `declared` says of each column.
fn list(
    flat: &mut FlatEncoder,
    slots: &[Slot],
    rows: usize,
    mut declared: impl FnMut(&Slot) -> Result<Declared, ArrowRingError>,
) -> Result<(), ArrowRingError> {
    let (nodes, buffers) = flat.lists();
    let buffer = |p: Part, len: usize| arrow_ipc::Buffer::new(p.at as i64, len as i64);
    for slot in slots {
        let (nulls, used) = declared(slot)?;
        nodes.push(FieldNode::new(rows as i64, nulls as i64));
        // As arrow-ipc's writer: a bitmap only when there are nulls.
        buffers.push(match slot.validity {
            Some(v) if nulls > 0 => buffer(v, v.len),
            Some(v) => buffer(v, 0),
            None => buffer(slot.values, 0),
        });
        if let Some(o) = slot.offsets {
            buffers.push(buffer(o, o.len));
            buffers.push(buffer(slot.values, used));
        } else {
            buffers.push(buffer(slot.values, slot.values.len));
        }
    }
    Ok(())
}

/// A record batch being built in a ring's arena ([`BatchProducer::loan`]):
/// fill each column's buffers, then [`commit`](Self::commit). Dropped
/// without a commit, it sends nothing, and the space goes to the next
/// message.
///
/// Each accessor hands out one column's buffer at a time, checked against
/// the column's type; its values are whatever the arena held, so write
/// every one.
#[must_use = "a loan sends nothing unless committed"]
pub struct BatchLoan<'a> {
    producer: &'a mut BatchProducer,
    pos: u64,
    size: u64,
    /// Bytes before the body: prefix, metadata, padding.
    header: usize,
    /// The message's first byte in the arena.
    base: *mut u8,
    rows: usize,
}

impl std::fmt::Debug for BatchLoan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLoan")
            .field("rows", &self.rows)
            .field("pos", &self.pos)
            .field("size", &self.size)
            .finish()
    }
}

impl BatchLoan<'_> {
    /// Gives the space back without sending anything (as dropping the loan
    /// does).
    pub fn abort(self) {}

    /// Rows of the batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn slot(&self, col: usize) -> Result<Slot, ArrowRingError> {
        self.producer
            .loan_slots
            .get(col)
            .copied()
            .ok_or_else(|| invalid(format!("no column {col} in a schema of {}", self.columns())))
    }

    fn columns(&self) -> usize {
        self.producer.loan_slots.len()
    }

    fn data_type(&self, col: usize) -> &DataType {
        let schema = self.producer.schema.as_ref().expect("a loan has a schema");
        schema.field(col).data_type()
    }

    fn wrong(&self, col: usize, asked: &str) -> ArrowRingError {
        invalid(format!(
            "column {col} is {}: it has no {asked}",
            self.data_type(col)
        ))
    }

    /// `n` values of `T` at `part` of the body.
    fn slice<T>(&mut self, part: Part, n: usize) -> Result<&mut [T], ArrowRingError> {
        debug_assert!(n * size_of::<T>() <= part.len);
        // SAFETY: `part` lies in the body, inside the free bytes reserve()
        // lent this loan (loan_until).
        let ptr = unsafe { self.base.add(self.header + part.at) };
        // Every part starts 64-aligned (the arena, each message and each
        // part are): this never fails, and keeps the slice below sound if
        // a layout ever changed.
        if !(ptr as usize).is_multiple_of(align_of::<T>()) {
            return Err(invalid("a loaned buffer is not aligned".into()));
        }
        // The part holds `n` values of `T` (planned for them), aligned
        // (checked); its bytes are initialised (a mapping's bytes are), and
        // every bit pattern is a value of the primitive native types and
        // bytes this is called with. The bytes are this loan's alone: no
        // consumer reads unpublished bytes, no other message is written
        // there while the loan lives (it borrows the producer), and the
        // `&mut self` borrow lends one buffer at a time.
        let values = ptr.cast::<T>();
        // SAFETY: as said just above: `n` aligned, initialised values of
        // `T` that nothing else reads or writes while the slice lives.
        Ok(unsafe { std::slice::from_raw_parts_mut(values, n) })
    }

    /// The values of fixed-width primitive column `col`, `rows()` of them.
    ///
    /// # Errors
    ///
    /// `Encode` when column `col` is missing or is not of `T`'s type (its
    /// units, precision or time zone are not compared: the values are).
    pub fn values_mut<T: ArrowPrimitiveType>(
        &mut self,
        col: usize,
    ) -> Result<&mut [T::Native], ArrowRingError> {
        let slot = self.slot(col)?;
        match slot.kind {
            Column::Fixed { width }
                if width == size_of::<T::Native>()
                    && discriminant(self.data_type(col)) == discriminant(&T::DATA_TYPE) =>
            {
                let rows = self.rows;
                self.slice(slot.values, rows)
            }
            _ => Err(self.wrong(col, &format!("values of {}", T::DATA_TYPE))),
        }
    }

    /// The bits of boolean column `col`, bit `j` of byte `j / 8` for row
    /// `j` (least significant first), `rows().div_ceil(8)` bytes.
    ///
    /// # Errors
    ///
    /// `Encode` when column `col` is missing or not boolean.
    pub fn bits_mut(&mut self, col: usize) -> Result<&mut [u8], ArrowRingError> {
        let slot = self.slot(col)?;
        match slot.kind {
            Column::Bits => self.slice(slot.values, slot.values.len),
            _ => Err(self.wrong(col, "boolean bits")),
        }
    }

    /// The validity bitmap of nullable column `col` (a 0 bit for a null
    /// row, laid out as [`bits_mut`](Self::bits_mut)); it starts with every
    /// row valid. The null count is taken from it at the commit.
    ///
    /// # Errors
    ///
    /// `Encode` when column `col` is missing or its field is not nullable.
    pub fn validity_mut(&mut self, col: usize) -> Result<&mut [u8], ArrowRingError> {
        let slot = self.slot(col)?;
        match slot.validity {
            Some(v) => self.slice(v, v.len),
            None => Err(self.wrong(col, "validity bitmap (its field is not nullable)")),
        }
    }

    /// The offsets of byte column `col`, `rows() + 1` of them: row `j`'s
    /// value is bytes `offsets[j]..offsets[j + 1]` of
    /// [`bytes_mut`](Self::bytes_mut). The first must be 0, and they must
    /// not decrease.
    ///
    /// # Errors
    ///
    /// `Encode` when column `col` is missing, not Utf8/Binary, or has
    /// offsets of the other width (`i64` for the Large forms, else `i32`).
    pub fn offsets_mut<O: OffsetSizeTrait>(
        &mut self,
        col: usize,
    ) -> Result<&mut [O], ArrowRingError> {
        let slot = self.slot(col)?;
        match slot.offsets {
            Some(o) if slot.large == O::IS_LARGE => {
                let n = self.rows + 1;
                self.slice(o, n)
            }
            _ => Err(self.wrong(col, &format!("{}-bit offsets", size_of::<O>() * 8))),
        }
    }

    /// The value bytes of byte column `col`: as many as reserved for it.
    ///
    /// # Errors
    ///
    /// `Encode` when column `col` is missing or not Utf8/Binary.
    pub fn bytes_mut(&mut self, col: usize) -> Result<&mut [u8], ArrowRingError> {
        let slot = self.slot(col)?;
        match slot.offsets {
            Some(_) => self.slice(slot.values, slot.values.len),
            None => Err(self.wrong(col, "value bytes")),
        }
    }

    /// Writes byte column `col` whole, offsets and values, from one value
    /// per row.
    ///
    /// # Errors
    ///
    /// `Encode` when column `col` is missing or not Utf8/Binary, when
    /// `values` does not give `rows()` values, or when they need more bytes
    /// than were reserved; the column is then not fully written.
    pub fn fill_bytes<I>(&mut self, col: usize, values: I) -> Result<(), ArrowRingError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        match self.slot(col)?.large {
            true => self.fill::<i64, I>(col, values),
            false => self.fill::<i32, I>(col, values),
        }
    }

    fn fill<O: OffsetSizeTrait, I>(&mut self, col: usize, values: I) -> Result<(), ArrowRingError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let slot = self.slot(col)?;
        let (Some(o), rows) = (slot.offsets, self.rows) else {
            return Err(self.wrong(col, "value bytes"));
        };
        // Two disjoint parts of the loan at once: offsets and values.
        let offsets: *mut [O] = self.slice::<O>(o, rows + 1)?;
        let bytes: *mut [u8] = self.slice::<u8>(slot.values, slot.values.len)?;
        // SAFETY: both come from `slice` and lie in different parts of the
        // body (planned one after the other), so these two borrows do not
        // alias; nothing else borrows the loan while they live.
        let (offsets, bytes) = unsafe { (&mut *offsets, &mut *bytes) };
        // Offsets of this width reach at most `limit` bytes: checked once
        // here, not per value.
        let limit = match O::IS_LARGE {
            true => bytes.len(),
            false => bytes.len().min(i32::MAX as usize),
        };
        let mut at = 0usize;
        let mut n = 0usize;
        offsets[0] = O::usize_as(0);
        for v in values {
            let v = v.as_ref();
            let end = at + v.len();
            if n == rows || end > limit {
                return Err(invalid(match n == rows {
                    true => format!("more than {rows} values for column {col}"),
                    false if end > bytes.len() => format!(
                        "column {col}'s values need more than the {} bytes reserved",
                        bytes.len()
                    ),
                    false => format!("column {col}'s values pass 32-bit offsets"),
                }));
            }
            copy_short(&mut bytes[at..end], v);
            at = end;
            n += 1;
            offsets[n] = O::usize_as(at);
        }
        if n != rows {
            return Err(invalid(format!(
                "{n} values for column {col} of {rows} rows"
            )));
        }
        Ok(())
    }

    /// Checks what was written, writes the metadata in front of the body and
    /// sends the batch: the consumer can receive it from now on.
    ///
    /// # Errors
    ///
    /// `Encode` when a byte column's offsets do not start at 0, decrease,
    /// or span more bytes than reserved, or a Utf8 column's values are not
    /// UTF-8 cut at character boundaries. Nothing is sent then.
    pub fn commit(self) -> Result<(), ArrowRingError> {
        let Self {
            producer,
            pos,
            size,
            header,
            base,
            rows,
        } = self;
        // SAFETY: the body follows the header inside the lent bytes.
        let body = unsafe { base.add(header) };
        let flat = producer.flat.as_mut().expect("a loan has a flat encoder");
        let columns = producer.loan_slots.len();
        let mut col = 0;
        list(flat, &producer.loan_slots, rows, |slot| {
            let declared = declared(body, slot, rows)
                .map_err(|m| invalid(format!("column {col} of {columns}: {m}")));
            col += 1;
            declared
        })?;
        let body_len = (size as usize) - header;
        if flat.metadata(rows, body_len) > header {
            return Err(invalid("the loan's metadata outgrew its space".into()));
        }
        // SAFETY: `header` bytes at `base` are the lent bytes before the
        // body, and the metadata just built fits them (checked).
        unsafe { flat.write_header(base, header) };
        // Plain stores only (the caller's and write_header's): the Release
        // store of write_seq in publish (SYNC POINT write_seq) publishes them.
        producer.publish(pos, size, size, MSG_RECORD_BATCH);
        Ok(())
    }
}

/// Copies `src` to `dst` (of the same length): values of a few bytes, the
/// common case, with two overlapping moves of a fixed size instead of a
/// call to `memcpy`.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    fn two<const N: usize>(dst: &mut [u8], src: &[u8]) {
        let n = src.len();
        let head: [u8; N] = src[..N].try_into().expect("N bytes");
        let tail: [u8; N] = src[n - N..].try_into().expect("N bytes");
        dst[..N].copy_from_slice(&head);
        dst[n - N..].copy_from_slice(&tail);
    }
    match src.len() {
        0 => {}
        n @ 1..4 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..8 => two::<4>(dst, src),
        8..=16 => two::<8>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// What column `slot`'s metadata declares, from the bytes written in
/// `body`: its nulls, and the value bytes a byte column's offsets span
/// (checked).
fn declared(body: *const u8, slot: &Slot, rows: usize) -> Result<Declared, String> {
    let part = |p: Part| {
        // SAFETY: each part lies in the lent body and holds the bytes
        // planned for it (initialised: a mapping's bytes are), and nothing
        // writes it while this reads it (the commit owns the loan).
        unsafe { std::slice::from_raw_parts(body.add(p.at), p.len) }
    };
    let nulls = match slot.validity {
        Some(v) => rows - count_ones(part(v), rows),
        None => 0,
    };
    let used = match slot.offsets {
        Some(o) if slot.large => span::<i64>(part(o), part(slot.values), slot.utf8)?,
        Some(o) => span::<i32>(part(o), part(slot.values), slot.utf8)?,
        None => slot.values.len,
    };
    Ok((nulls, used))
}

/// Set bits among the first `rows` of `bits`.
fn count_ones(bits: &[u8], rows: usize) -> usize {
    let full = rows / 8;
    let mut n: usize = bits[..full].iter().map(|b| b.count_ones() as usize).sum();
    if !rows.is_multiple_of(8) {
        n += (bits[full] & ((1u8 << (rows % 8)) - 1)).count_ones() as usize;
    }
    n
}

/// The value bytes that `offsets` span in `values`, checked: first offset
/// 0, never decreasing, within `values`, and for UTF-8 every offset on a
/// character boundary of valid UTF-8. One pass without a branch per
/// offset; only a failed check looks again, for the message.
fn span<O: OffsetSizeTrait + bytemuck::Pod>(
    offsets: &[u8],
    values: &[u8],
    utf8: bool,
) -> Result<usize, String> {
    // The part is aligned for O and a whole number of them (planned so).
    let Ok(offsets) = bytemuck::try_cast_slice::<u8, O>(offsets) else {
        return Err("offsets not aligned".into());
    };
    let mut bad = offsets[0] != O::usize_as(0);
    bad |= offsets.windows(2).fold(false, |b, w| b | (w[1] < w[0]));
    // Non-negative when `bad` is false: from 0, never decreasing.
    let last = offsets[offsets.len() - 1].as_usize();
    bad |= last > values.len();
    // ASCII text (the common case) is UTF-8 cut at character boundaries
    // wherever it is cut: one fast look at the bytes settles it.
    let checked = utf8 && !bad && !values[..last].is_ascii();
    if checked {
        // A UTF-8 continuation byte is 0b10xx_xxxx: no character starts
        // there. Only the bytes the offsets span count: an offset at their
        // end starts nothing, whatever the unused reserved bytes after it
        // hold.
        let text = &values[..last];
        for &o in offsets {
            bad |= text.get(o.as_usize()).is_some_and(|&b| (b as i8) < -0x40);
        }
    }
    if bad {
        return Err(why_not(offsets, values, utf8));
    }
    if checked {
        std::str::from_utf8(&values[..last]).map_err(|e| format!("values not UTF-8: {e}"))?;
    }
    Ok(last)
}

/// Which check of [`span`] `offsets` fail, in words.
fn why_not<O: OffsetSizeTrait>(offsets: &[O], values: &[u8], utf8: bool) -> String {
    // The bytes the offsets span, as `span` looks at them (reached only
    // when every offset is in order and in bounds).
    let last = offsets.last().and_then(|o| o.to_usize()).unwrap_or(0);
    let text = &values[..last.min(values.len())];
    let mut prev = 0usize;
    for (j, o) in offsets.iter().enumerate() {
        let Ok(o) = usize::try_from(o.to_i64().unwrap_or(-1)) else {
            return format!("offset {j} ({o:?}) is negative");
        };
        if j == 0 && o != 0 {
            return format!("the first offset is {o}, not 0");
        }
        if o < prev {
            return format!("offset {j} ({o}) is below the one before it ({prev})");
        }
        if o > values.len() {
            return format!(
                "offset {j} ({o}) lies past the {} value bytes reserved",
                values.len()
            );
        }
        if utf8 && text.get(o).is_some_and(|&b| (b as i8) < -0x40) {
            return format!("offset {j} ({o}) cuts a character");
        }
        prev = o;
    }
    "offsets that no check refuses".into()
}
