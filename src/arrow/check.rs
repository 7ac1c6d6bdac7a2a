//! A faster check, exactly as strict as arrow's, for record batches of flat
//! schemas received from another process.
//!
//! arrow-ipc's validating decoder checks each string column offset by offset
//! through a chain of fallible iterator adapters; for 65,536-row batches that
//! costs the consumer about as much time as the producer spends copying the
//! batch into the arena. For schemas whose columns are all booleans,
//! fixed-width primitives (integers, floats, decimals, dates, times,
//! timestamps, durations, intervals) or Utf8/Binary (and their Large
//! variants), the consumer instead:
//!
//! 1. checks the message metadata with [`FlatSchema::admits`]: one field node
//!    per column with the batch's row count, a null count within it, the
//!    expected number of buffers, and every buffer long enough and aligned
//!    for what arrow's array constructors slice out of it (and fixed-width
//!    buffers a whole number of values). These are the
//!    conditions under which those constructors neither panic nor touch a
//!    byte outside the body;
//! 2. builds the batch from the message's buffers itself
//!    ([`FlatSchema::decode`]): each column with its typed constructor,
//!    checking each declared null count against its bitmap, offsets with
//!    [`offsets_ok`] (below), and nullability. Where `offsets_ok` says no,
//!    steps 3 and 4 decide instead:
//! 3. decodes with arrow-ipc's validation skipped;
//! 4. runs [`FlatSchema::validate`] on the batch before anyone sees it: for
//!    every column arrow's own `ArrayData::validate` and `validate_nulls`,
//!    then `validate_values` or, for Utf8/Binary columns, [`offsets_ok`]: one
//!    pass for order and bounds, then for strings one ASCII pass over the
//!    values or, if they are not all ASCII, a UTF-8 pass and one
//!    char-boundary test per offset. Where `offsets_ok` says no, arrow's
//!    `validate_values` decides (and words the error), so the fast path
//!    accepts exactly what arrow accepts. Last, the nullability check that
//!    `RecordBatch::try_new` makes.
//!
//! A message that step 1 does not admit, or a schema with any other column
//! type, is decoded by arrow-ipc with its validation on.

use arrow_array::cast::AsArray;
use arrow_array::types::{BinaryType, ByteArrayType, LargeBinaryType, LargeUtf8Type, Utf8Type};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, GenericByteArray, OffsetSizeTrait, PrimitiveArray, RecordBatch,
    RecordBatchOptions, downcast_primitive,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_data::{ArrayData, BufferSpec, layout};
use arrow_schema::{ArrowError, DataType, Schema, SchemaRef};

/// How a flat column's offsets and values are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Values {
    /// Fixed-width values or bits: arrow's `validate_data` in full.
    Fixed,
    Utf8,
    LargeUtf8,
    Binary,
    LargeBinary,
}

#[derive(Debug)]
struct FlatField {
    name: String,
    data_type: DataType,
    nullable: bool,
    values: Values,
    /// arrow's layout of the column's buffers after the validity bitmap.
    specs: Vec<BufferSpec>,
}

/// A schema whose record batches may take the fast path.
#[derive(Debug)]
pub(super) struct FlatSchema {
    fields: Vec<FlatField>,
    /// IPC buffers per record batch: each column's validity bitmap plus its
    /// layout's buffers.
    buffers: usize,
}

impl FlatSchema {
    /// `None` unless every column has a flat type (and there is at least one
    /// column: a batch without columns takes its row count from the message
    /// alone, which arrow's validating path checks).
    pub(super) fn new(schema: &Schema) -> Option<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| {
                let values = match f.data_type() {
                    DataType::Utf8 => Values::Utf8,
                    DataType::LargeUtf8 => Values::LargeUtf8,
                    DataType::Binary => Values::Binary,
                    DataType::LargeBinary => Values::LargeBinary,
                    DataType::Boolean => Values::Fixed,
                    t if t.is_primitive() => Values::Fixed,
                    _ => return None,
                };
                Some(FlatField {
                    name: f.name().clone(),
                    data_type: f.data_type().clone(),
                    nullable: f.is_nullable(),
                    values,
                    specs: layout(f.data_type()).buffers,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        if fields.is_empty() {
            return None;
        }
        let buffers = fields.iter().map(|f| 1 + f.specs.len()).sum();
        Some(Self { fields, buffers })
    }

    /// Whether the record batch `message`, whose buffers were checked to lie
    /// within `body`, may be decoded without arrow's validation: see the
    /// module docs, step 1.
    pub(super) fn admits(&self, message: &arrow_ipc::Message<'_>, body: &[u8]) -> bool {
        let Some(batch) = message.header_as_record_batch() else {
            return false;
        };
        let (Some(nodes), Some(buffers)) = (batch.nodes(), batch.buffers()) else {
            return false;
        };
        // Variadic buffer counts belong to view types; arrow's validating
        // path refuses a batch that has any (with a panic, caught).
        if batch.compression().is_some()
            || batch.variadicBufferCounts().is_some_and(|v| !v.is_empty())
            || nodes.len() != self.fields.len()
            || buffers.len() != self.buffers
        {
            return false;
        }
        let Ok(rows) = usize::try_from(batch.length()) else {
            return false;
        };
        // Whether buffer `b` holds at least `need` bytes starting at an
        // address aligned to `align`. (Offsets are non-negative and within
        // the body: checked before.)
        let fits = |b: &arrow_ipc::Buffer, need: usize, align: usize| {
            let addr = (body.as_ptr() as usize).wrapping_add(b.offset() as usize);
            usize::try_from(b.length()).is_ok_and(|len| len >= need) && addr.is_multiple_of(align)
        };
        let mut buffers = buffers.iter();
        for (field, node) in self.fields.iter().zip(nodes.iter()) {
            if usize::try_from(node.length()) != Ok(rows) {
                return false;
            }
            let Ok(nulls) = usize::try_from(node.null_count()) else {
                return false;
            };
            let Some(validity) = buffers.next() else {
                return false;
            };
            // The decoder reads the bitmap only when there are nulls.
            if nulls > rows || (nulls > 0 && !fits(validity, rows.div_ceil(8), 1)) {
                return false;
            }
            for spec in &field.specs {
                let Some(b) = buffers.next() else {
                    return false;
                };
                let ok = match *spec {
                    BufferSpec::FixedWidth {
                        byte_width,
                        alignment,
                    } => {
                        // Offsets: rows + 1 of them, except that an empty
                        // column may have none.
                        let items = match field.values {
                            Values::Fixed => Some(rows),
                            _ if rows == 0 && b.length() == 0 => Some(0),
                            _ => rows.checked_add(1),
                        };
                        // A whole number of values, too: arrow's validation
                        // reads offsets through `typed_data`, which panics
                        // (caught, an error) on a partial one.
                        items
                            .and_then(|n| n.checked_mul(byte_width))
                            .is_some_and(|need| fits(b, need, alignment.max(1)))
                            && b.length() % byte_width.max(1) as i64 == 0
                    }
                    BufferSpec::BitMap => fits(b, rows.div_ceil(8), 1),
                    BufferSpec::VariableWidth => true,
                    BufferSpec::AlwaysNull => false,
                };
                if !ok {
                    return false;
                }
            }
        }
        true
    }

    /// Builds the record batch `header` describes (a message that
    /// [`admits`](Self::admits) accepted, whose body is `body`) straight
    /// from its buffers, with the checks that arrow's validation makes of
    /// such a batch: the null count each column declares against its bitmap,
    /// string and binary offsets with [`offsets_ok`], and nullability.
    /// `Ok(None)` when `offsets_ok` says no: then arrow decides, on the path
    /// of steps 3 and 4.
    ///
    /// arrow-ipc's decoder builds every column through an `ArrayData`; for
    /// a batch of a few rows that is most of a consumer's work. Here each
    /// column is made with its typed constructor. What else arrow's
    /// `ArrayData::validate` checks of these types (buffer sizes and
    /// alignment, the bitmap's size) `admits` has checked, and the
    /// constructors assert it again (a failed assertion is a panic that the
    /// caller turns into an error).
    pub(super) fn decode(
        &self,
        header: arrow_ipc::RecordBatch<'_>,
        body: &Buffer,
        schema: &SchemaRef,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        let (Some(nodes), Some(buffers)) = (header.nodes(), header.buffers()) else {
            return Err(ArrowError::IpcError("a record batch without nodes".into()));
        };
        let rows = header.length() as usize; // admits: non-negative
        let mut buffers = buffers.iter();
        let mut next = || {
            let b = buffers.next().expect("admits counted the buffers");
            // admits and data_message: within the body.
            body.slice_with_length(b.offset() as usize, b.length() as usize)
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.fields.len());
        for (field, node) in self.fields.iter().zip(nodes.iter()) {
            let declared = node.null_count() as usize; // admits: 0..=rows
            let validity = next();
            // As arrow-ipc's decoder: a bitmap only when nulls are declared.
            let nulls = if declared > 0 {
                let nulls = NullBuffer::new(BooleanBuffer::new(validity, 0, rows));
                if nulls.null_count() != declared {
                    return Err(ArrowError::InvalidArgumentError(format!(
                        "column '{}': null_count value ({declared}) doesn't match actual \
                         number of nulls in array ({})",
                        field.name,
                        nulls.null_count()
                    )));
                }
                if !field.nullable {
                    return Err(ArrowError::InvalidArgumentError(format!(
                        "Column '{}' is declared as non-nullable but contains null values",
                        field.name
                    )));
                }
                Some(nulls)
            } else {
                None
            };
            let column: ArrayRef = match field.values {
                Values::Fixed if field.data_type == DataType::Boolean => Arc::new(
                    BooleanArray::new(BooleanBuffer::new(next(), 0, rows), nulls),
                ),
                Values::Fixed => {
                    let values = next();
                    macro_rules! primitive {
                        ($t:ty) => {
                            Arc::new(
                                PrimitiveArray::<$t>::try_new(
                                    ScalarBuffer::new(values, 0, rows),
                                    nulls,
                                )?
                                .with_data_type(field.data_type.clone()),
                            )
                        };
                    }
                    downcast_primitive! {
                        &field.data_type => (primitive),
                        _ => return Ok(None),
                    }
                }
                Values::Utf8 => match bytes::<Utf8Type>(next(), next(), rows, nulls) {
                    Some(a) => a,
                    None => return Ok(None),
                },
                Values::LargeUtf8 => match bytes::<LargeUtf8Type>(next(), next(), rows, nulls) {
                    Some(a) => a,
                    None => return Ok(None),
                },
                Values::Binary => match bytes::<BinaryType>(next(), next(), rows, nulls) {
                    Some(a) => a,
                    None => return Ok(None),
                },
                Values::LargeBinary => {
                    match bytes::<LargeBinaryType>(next(), next(), rows, nulls) {
                        Some(a) => a,
                        None => return Ok(None),
                    }
                }
            };
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(schema.clone(), columns, &options).map(Some)
    }

    /// Runs arrow's checks on a batch decoded without them: see the module
    /// docs, step 4. The batch must come from a message that
    /// [`admits`](Self::admits) accepted for this schema.
    pub(super) fn validate(&self, batch: &RecordBatch) -> Result<(), ArrowError> {
        if batch.num_columns() != self.fields.len() {
            return Err(ArrowError::InvalidArgumentError(format!(
                "{} columns decoded for a schema of {}",
                batch.num_columns(),
                self.fields.len()
            )));
        }
        for (column, field) in batch.columns().iter().zip(&self.fields) {
            let data = column.to_data();
            let checked = match field.values {
                Values::Fixed => data.validate_data(),
                Values::Utf8 => byte_column::<Utf8Type>(column, &data),
                Values::LargeUtf8 => byte_column::<LargeUtf8Type>(column, &data),
                Values::Binary => byte_column::<BinaryType>(column, &data),
                Values::LargeBinary => byte_column::<LargeBinaryType>(column, &data),
            };
            checked.map_err(|e| {
                ArrowError::InvalidArgumentError(format!("column '{}': {e}", field.name))
            })?;
            if !field.nullable && column.null_count() > 0 {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "Column '{}' is declared as non-nullable but contains null values",
                    field.name
                )));
            }
        }
        Ok(())
    }
}

/// A Utf8/Binary column of `rows` values from its offsets and values
/// buffers, if [`offsets_ok`] accepts them (`None`: arrow decides).
fn bytes<T: ByteArrayType>(
    offsets: Buffer,
    values: Buffer,
    rows: usize,
    nulls: Option<NullBuffer>,
) -> Option<ArrayRef> {
    // admits: rows + 1 whole offsets, aligned, or none for no rows.
    let offsets = if rows == 0 && offsets.is_empty() {
        OffsetBuffer::new_empty()
    } else {
        let offsets = ScalarBuffer::<T::Offset>::new(offsets, 0, rows + 1);
        let utf8 = matches!(T::DATA_TYPE, DataType::Utf8 | DataType::LargeUtf8);
        if !offsets_ok(&offsets, &values, utf8) {
            return None;
        }
        // SAFETY: offsets_ok: non-negative and in order (and within the
        // values, on char boundaries of valid UTF-8 for strings).
        unsafe { OffsetBuffer::new_unchecked(offsets) }
    };
    // The offsets are valid for `values` (and for strings every one lies on
    // a char boundary of valid UTF-8); `nulls`, when there, has `rows` bits
    // (decode built it so), as there are `rows + 1` offsets (or none).
    // SAFETY: the two facts above.
    let array = unsafe { GenericByteArray::<T>::new_unchecked(offsets, values, nulls) };
    Some(Arc::new(array))
}

/// arrow's `validate_data` for a Utf8/Binary column, with `offsets_ok` in
/// front of its `validate_values`.
fn byte_column<T: ByteArrayType>(column: &ArrayRef, data: &ArrayData) -> Result<(), ArrowError> {
    // validate() checks buffer count, sizes and alignment, the bitmap, and
    // the first and last offset; only then are the offsets read.
    data.validate()?;
    data.validate_nulls()?;
    let array = column.as_bytes::<T>();
    let utf8 = matches!(T::DATA_TYPE, DataType::Utf8 | DataType::LargeUtf8);
    if offsets_ok(array.value_offsets(), array.values(), utf8) {
        Ok(())
    } else {
        data.validate_values()
    }
}

/// Whether `offsets` pass arrow's checks of a byte array's offsets: each one
/// non-negative, at most `values.len()` and not below the one before; and for
/// strings, `values` valid UTF-8 as a whole (arrow's fast path checks the
/// whole buffer too) and every offset on a char boundary. `false` does not
/// mean invalid: arrow then decides (it also accepts invalid UTF-8 that lies
/// outside every string).
pub(super) fn offsets_ok<O: OffsetSizeTrait>(offsets: &[O], values: &[u8], utf8: bool) -> bool {
    let (Some(first), Some(last)) = (offsets.first(), offsets.last()) else {
        return true;
    };
    // No early exit: a branch-free pass the compiler can vectorise.
    let ordered = offsets.windows(2).fold(true, |ok, w| ok & (w[0] <= w[1]));
    let in_bounds =
        first.to_usize().is_some() && last.to_usize().is_some_and(|end| end <= values.len());
    if !(ordered && in_bounds) {
        return false;
    }
    // One offset is zero strings: arrow asks nothing more of it (not even a
    // char boundary), so neither does this check.
    if offsets.len() < 2 {
        return true;
    }
    // ASCII is UTF-8 with a char boundary at every byte: the common case
    // needs one pass over the values and no look at them per offset.
    if !utf8 || values.is_ascii() {
        return true;
    }
    // Every offset now lies in 0..=values.len(). In valid UTF-8 a char
    // boundary is the end or any byte that is not a continuation byte
    // (0b10xx_xxxx, i.e. below -0x40 as i8).
    simdutf8::basic::from_utf8(values).is_ok()
        && offsets.iter().all(|o| {
            o.to_usize()
                .is_some_and(|i| values.get(i).is_none_or(|&b| (b as i8) >= -0x40))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_buffer::Buffer;
    use proptest::prelude::*;

    /// arrow's own verdict on a Utf8 (or Binary) array of these offsets and
    /// values.
    fn arrow_accepts(offsets: &[i32], values: &[u8], utf8: bool) -> bool {
        let t = if utf8 {
            DataType::Utf8
        } else {
            DataType::Binary
        };
        let len = offsets.len().saturating_sub(1);
        let data = ArrayData::builder(t)
            .len(len)
            .add_buffer(Buffer::from_vec(offsets.to_vec()))
            .add_buffer(Buffer::from(values.to_vec()));
        data.build().is_ok()
    }

    #[test]
    fn offsets_ok_never_accepts_what_arrow_refuses() {
        let text = "añb€c".as_bytes(); // 1 + 2 + 1 + 3 + 1 bytes
        let cases: &[(&[i32], &[u8], bool)] = &[
            (&[0, 1, 3, 4, 7, 8], text, true),
            (&[0, 2], text, true),                 // splits 'ñ'
            (&[0, 5, 8], text, true),              // inside '€'
            (&[0, 4, 3], text, true),              // backwards
            (&[-1, 3], text, true),                // negative
            (&[0, 9], text, true),                 // past the end
            (&[1, 1, 1], text, true),              // empty strings not at 0
            (&[0, 1], b"a\xff", true),             // invalid UTF-8 outside: arrow accepts
            (&[0, 2], b"a\xff", true),             // invalid UTF-8 inside
            (&[0, 2], &[0xc3, 0xb1, 0xff], false), // binary: bytes are bytes
            (&[0, 4], &[0xc3, 0xb1, 0xff], false),
            (&[], b"", true),
            (&[0], b"", true),
        ];
        for (offsets, values, utf8) in cases {
            let fast = offsets_ok(offsets, values, *utf8);
            let arrow = arrow_accepts(offsets, values, *utf8);
            assert!(
                !fast || arrow,
                "{offsets:?} {values:?}: fast accepts, arrow refuses"
            );
        }
        // ... and accepts what arrow accepts on its own fast path.
        assert!(offsets_ok(&[0, 1, 3, 4, 7, 8], text, true));
        assert!(offsets_ok(&[0, 2], &[0xc3, 0xb1, 0xff], false));
        assert!(!offsets_ok(&[0, 2], text, true));
        assert!(!offsets_ok(&[0, 5, 8], text, true));
        assert!(!offsets_ok(&[0, 4, 3], text, true));
        assert!(!offsets_ok(&[-1, 3], text, true));
        assert!(!offsets_ok(&[0, 9], text, true));
        // Zero strings whose one offset lies inside a character: arrow
        // accepts it, and so does the fast check (it sent it to the slow
        // path before; found by the property below).
        let lone = [0xc3, 0xb1, 0xc3, 0x82];
        assert!(arrow_accepts(&[1], &lone, true));
        assert!(offsets_ok(&[1], &lone, true));
    }

    proptest! {
        /// On random offsets over random bytes (biased towards the pieces of
        /// multi-byte characters): what the fast check accepts, arrow
        /// accepts; and where arrow's own fast path applies (the values as a
        /// whole are UTF-8, or binary), the fast check accepts all that arrow
        /// does, so it sends nothing needless to the slow path.
        #[test]
        fn offsets_ok_agrees_with_arrow(
            values in prop::collection::vec(
                prop_oneof![Just(b'a'), Just(0xc3_u8), Just(0xb1), Just(0xe2), Just(0x82), Just(0xac), any::<u8>()],
                0..24,
            ),
            mut offsets in prop::collection::vec(-2_i32..28, 0..8),
            sorted: bool,
            utf8: bool,
        ) {
            if sorted {
                offsets.sort_unstable();
            }
            let fast = offsets_ok(&offsets, &values, utf8);
            let arrow = arrow_accepts(&offsets, &values, utf8);
            prop_assert!(!fast || arrow, "fast accepts what arrow refuses");
            if arrow && (!utf8 || std::str::from_utf8(&values).is_ok()) {
                prop_assert!(fast, "fast refuses what arrow's fast path accepts");
            }
        }
    }
}
