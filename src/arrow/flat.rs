//! The producer's own encoding of record batch messages for flat schemas,
//! written straight into the arena.
//!
//! arrow-ipc's `StreamEncoder` returns each message as a list of parts (the
//! prefix, the metadata, each body buffer and each padding as its own
//! `Buffer`), which the producer then splits into messages and copies part by
//! part. For a one-row batch that bookkeeping costs several times the bytes
//! it moves. For the schemas that the consumer's fast check calls flat
//! ([`FlatSchema`](super::check::FlatSchema): booleans, fixed-width primitives,
//! Utf8/Binary and their Large variants) the producer instead plans the
//! message itself, in vectors it reuses:
//!
//! 1. [`FlatEncoder::plan`] lists each column's buffers exactly as arrow-ipc's
//!    writer would (its validity bitmap when it has nulls, else an empty one;
//!    fixed-width values cut to the array's slice; bits re-based to bit 0;
//!    offsets re-based to start at 0 and the values cut to what they span),
//!    and builds the flatbuffer metadata with arrow-ipc's own builders, in the
//!    writer's order;
//! 2. [`FlatEncoder::write`] writes the prefix, metadata, body buffers and
//!    zero padding to the reserved bytes in one pass.
//!
//! The bytes are those `StreamEncoder` writes with 64-byte alignment and
//! metadata V5, byte for byte (tested against it for random batches), so a
//! consumer, a saved file or any other Arrow reader sees no difference.

use arrow_array::cast::AsArray;
use arrow_array::{Array, OffsetSizeTrait, RecordBatch, downcast_primitive_array};
use arrow_buffer::{Buffer, MutableBuffer, OffsetBuffer};
use arrow_data::{BufferSpec, layout};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow_ipc::{FieldNode, MessageBuilder, MessageHeader, MetadataVersion, RecordBatchBuilder};
use arrow_schema::{ArrowError, DataType, Schema};
use flatbuffers::FlatBufferBuilder;

use super::ARENA_ALIGN;
use super::framing::{EncodedMessage, encapsulate};

/// Bytes of a message's prefix: the continuation marker and the metadata
/// length.
const PREFIX_LEN: usize = 8;
const ALIGN: usize = ARENA_ALIGN as usize;

/// How a flat column's buffers after its validity bitmap are written.
#[derive(Clone, Copy, Debug)]
pub(super) enum Column {
    /// One buffer of values `width` bytes each.
    Fixed { width: usize },
    /// One buffer of bits (booleans).
    Bits,
    /// Offsets (32 or 64 bits), then the values they span.
    Bytes,
}

/// One body buffer: its bytes, and for offsets, the first offset to
/// subtract from each as it is written.
struct Part {
    bytes: Buffer,
    rebase: Rebase,
}

#[derive(Clone, Copy)]
enum Rebase {
    None,
    I32(i32),
    I64(i64),
}

/// Encodes the record batches of one flat schema.
pub(super) struct FlatEncoder {
    columns: Vec<Column>,
    fbb: FlatBufferBuilder<'static>,
    nodes: Vec<FieldNode>,
    buffers: Vec<arrow_ipc::Buffer>,
    parts: Vec<Part>,
}

/// The size of the message [`FlatEncoder::plan`] planned.
#[derive(Clone, Copy, Debug)]
pub(super) struct Planned {
    /// Bytes of the whole message (a multiple of 64).
    pub(super) len: u64,
}

impl FlatEncoder {
    /// `None` unless every column of `schema` is flat (and there is one).
    pub(super) fn new(schema: &Schema) -> Option<Self> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 | DataType::LargeBinary => {
                    Some(Column::Bytes)
                }
                DataType::Boolean => Some(Column::Bits),
                t if t.is_primitive() => match layout(t).buffers.first() {
                    Some(BufferSpec::FixedWidth { byte_width, .. }) => {
                        Some(Column::Fixed { width: *byte_width })
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        if columns.is_empty() {
            return None;
        }
        Some(Self {
            columns,
            fbb: FlatBufferBuilder::new(),
            nodes: Vec::new(),
            buffers: Vec::new(),
            parts: Vec::new(),
        })
    }

    /// The schema message that starts a stream of `schema`, as
    /// `StreamEncoder` writes it.
    pub(super) fn schema_message(schema: &Schema) -> Result<EncodedMessage, ArrowError> {
        let opts = IpcWriteOptions::try_new(ALIGN, false, MetadataVersion::V5)?;
        let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut DictionaryTracker::new(false),
            &opts,
        );
        let bytes = encapsulate(&encoded.ipc_message, &encoded.arrow_data)?;
        Ok(EncodedMessage {
            kind: super::MSG_SCHEMA,
            len: bytes.len() as u64,
            parts: vec![Buffer::from_vec(bytes)],
        })
    }

    /// Plans the record batch message of `batch`, whose schema is the one
    /// this encoder was made for (the caller checked it).
    pub(super) fn plan(&mut self, batch: &RecordBatch) -> Result<Planned, ArrowError> {
        self.nodes.clear();
        self.buffers.clear();
        self.parts.clear();
        if batch.num_columns() != self.columns.len() {
            return Err(ArrowError::SchemaError(format!(
                "{} columns for a schema of {}",
                batch.num_columns(),
                self.columns.len()
            )));
        }
        let mut offset = 0usize;
        for (i, column) in self.columns.iter().enumerate() {
            // Typed views of the column, not `to_data()`: that builds an
            // `ArrayData` (and allocates) per column per message. The
            // buffers are the same ones: an array's `ArrayData` holds its
            // buffers as these views hold them (values and offsets already
            // cut to the array's slice).
            let array = batch.column(i);
            let rows = array.len();
            let nulls = array.null_count();
            self.nodes.push(FieldNode::new(rows as i64, nulls as i64));
            // As arrow-ipc's writer: a bitmap only when there are nulls.
            let validity = match array.nulls() {
                Some(n) if nulls > 0 => n.inner().sliced(),
                _ => Buffer::from(MutableBuffer::new(0)),
            };
            let mut add = |bytes: Buffer, rebase: Rebase| {
                push(
                    &mut self.parts,
                    &mut self.buffers,
                    &mut offset,
                    bytes,
                    rebase,
                );
            };
            add(validity, Rebase::None);
            let wrong = || {
                ArrowError::SchemaError(format!(
                    "column {i} is {}, not of its schema's kind {column:?}",
                    array.data_type()
                ))
            };
            match *column {
                Column::Fixed { width } => {
                    let values = downcast_primitive_array!(
                        array => array.values().inner().clone(),
                        _ => return Err(wrong()),
                    );
                    if values.len() != rows * width {
                        return Err(wrong());
                    }
                    add(values, Rebase::None);
                }
                Column::Bits => {
                    let values = array.as_boolean_opt().ok_or_else(wrong)?.values().sliced();
                    add(values, Rebase::None);
                }
                Column::Bytes => {
                    let (offsets, rebase, values) = match array.data_type() {
                        DataType::Utf8 => {
                            let a = array.as_string::<i32>();
                            byte_buffers(a.offsets(), a.values())?
                        }
                        DataType::LargeUtf8 => {
                            let a = array.as_string::<i64>();
                            byte_buffers(a.offsets(), a.values())?
                        }
                        DataType::Binary => {
                            let a = array.as_binary::<i32>();
                            byte_buffers(a.offsets(), a.values())?
                        }
                        DataType::LargeBinary => {
                            let a = array.as_binary::<i64>();
                            byte_buffers(a.offsets(), a.values())?
                        }
                        _ => return Err(wrong()),
                    };
                    add(offsets, rebase);
                    add(values, Rebase::None);
                }
            }
        }
        let header = self.metadata(batch.num_rows(), offset);
        Ok(Planned {
            len: (header + offset) as u64,
        })
    }

    /// The kinds of the schema's columns, in order.
    pub(super) fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The nodes and buffers of the metadata [`metadata`](Self::metadata)
    /// builds, cleared, for a caller that lists them itself (a loan).
    pub(super) fn lists(&mut self) -> (&mut Vec<FieldNode>, &mut Vec<arrow_ipc::Buffer>) {
        self.nodes.clear();
        self.buffers.clear();
        (&mut self.nodes, &mut self.buffers)
    }

    /// Builds a record batch message's metadata of `rows` rows, the listed
    /// nodes and buffers and a body of `body` bytes, as arrow-ipc's writer
    /// builds it; returns the bytes of the prefix, metadata and padding
    /// before the body (a multiple of 64). The metadata's size depends on
    /// the number of nodes and buffers and on whether `rows` and `body` are
    /// zero, never on the other values: nodes and buffers are flatbuffer
    /// structs, stored whole.
    pub(super) fn metadata(&mut self, rows: usize, body: usize) -> usize {
        let fbb = &mut self.fbb;
        fbb.reset();
        let buffers = fbb.create_vector(&self.buffers);
        let nodes = fbb.create_vector(&self.nodes);
        let mut rb = RecordBatchBuilder::new(fbb);
        rb.add_length(rows as i64);
        rb.add_nodes(nodes);
        rb.add_buffers(buffers);
        let rb = rb.finish();
        let mut message = MessageBuilder::new(fbb);
        message.add_version(MetadataVersion::V5);
        message.add_header_type(MessageHeader::RecordBatch);
        message.add_bodyLength(body as i64);
        message.add_header(rb.as_union_value());
        let root = message.finish();
        fbb.finish(root, None);
        padded_header(self.fbb.finished_data().len())
    }

    /// Writes the prefix, the metadata [`metadata`](Self::metadata) built
    /// last and zero padding to `header` bytes at `dst`.
    ///
    /// # Safety
    ///
    /// `dst` is valid for writes of `header` bytes, and `header` is at least
    /// what `metadata` returned.
    pub(super) unsafe fn write_header(&self, dst: *mut u8, header: usize) {
        let meta = self.fbb.finished_data();
        debug_assert!(padded_header(meta.len()) <= header);
        let mut prefix = [0xffu8; PREFIX_LEN];
        prefix[4..].copy_from_slice(&((header - PREFIX_LEN) as i32).to_le_bytes());
        // SAFETY: the prefix, the metadata and the padding make `header`
        // bytes, which the caller gives.
        unsafe {
            std::ptr::copy_nonoverlapping(prefix.as_ptr(), dst, PREFIX_LEN);
            std::ptr::copy_nonoverlapping(meta.as_ptr(), dst.add(PREFIX_LEN), meta.len());
            zero(
                dst.add(PREFIX_LEN + meta.len()),
                header - PREFIX_LEN - meta.len(),
            );
        }
    }

    /// Writes the planned message to `dst`; `true` if it used streaming
    /// stores, which must be fenced before the bytes are published.
    ///
    /// # Safety
    ///
    /// `dst` is valid for writes of the planned `len` bytes, which overlap no
    /// buffer of the planned batch.
    pub(super) unsafe fn write(&mut self, dst: *mut u8) -> bool {
        let header = padded_header(self.fbb.finished_data().len());
        let mut streamed = false;
        // SAFETY: every write below lies within dst..dst+len: the prefix,
        // metadata and its padding make `header` bytes, then each part and
        // its padding as plan() counted them (the offsets in `buffers`).
        unsafe {
            self.write_header(dst, header);
            let body = dst.add(header);
            for (part, at) in self.parts.iter().zip(&self.buffers) {
                let at = body.add(at.offset() as usize);
                let len = part.bytes.len();
                match part.rebase {
                    Rebase::None => streamed |= super::encode::copy_to_arena(at, &part.bytes),
                    Rebase::I32(first) => rebase_into::<4>(at, &part.bytes, |b| {
                        i32::from_le_bytes(b).wrapping_sub(first).to_le_bytes()
                    }),
                    Rebase::I64(first) => rebase_into::<8>(at, &part.bytes, |b| {
                        i64::from_le_bytes(b).wrapping_sub(first).to_le_bytes()
                    }),
                }
                zero(at.add(len), len.next_multiple_of(ALIGN) - len);
            }
        }
        // The batch's buffers are no longer needed.
        self.parts.clear();
        streamed
    }

    /// Drops the planned message (and the batch's buffers it holds).
    pub(super) fn forget(&mut self) {
        self.parts.clear();
    }

    /// The planned message as an owned message, for one that cannot go into
    /// the arena now (it waits in the producer's pending queue).
    pub(super) fn owned_message(&mut self, planned: Planned) -> EncodedMessage {
        let mut bytes = vec![0u8; planned.len as usize];
        // SAFETY: `bytes` is `planned.len` bytes of this process's own memory.
        let streamed = unsafe { self.write(bytes.as_mut_ptr()) };
        if streamed {
            super::encode::store_fence();
        }
        EncodedMessage {
            kind: super::MSG_RECORD_BATCH,
            len: planned.len,
            parts: vec![Buffer::from_vec(bytes)],
        }
    }
}

/// The prefix and metadata of `meta_len` bytes, padded to the alignment.
fn padded_header(meta_len: usize) -> usize {
    (PREFIX_LEN + meta_len).next_multiple_of(ALIGN)
}

/// Adds a body buffer at `offset`, which moves past it and its padding.
fn push(
    parts: &mut Vec<Part>,
    buffers: &mut Vec<arrow_ipc::Buffer>,
    offset: &mut usize,
    bytes: Buffer,
    rebase: Rebase,
) {
    let len = bytes.len();
    buffers.push(arrow_ipc::Buffer::new(*offset as i64, len as i64));
    *offset += len.next_multiple_of(ALIGN);
    parts.push(Part { bytes, rebase });
}

/// A byte column's offsets (and what to subtract from each) and the values
/// they span (as arrow-ipc's `get_byte_array_buffers`).
fn byte_buffers<O: OffsetSizeTrait>(
    offsets: &OffsetBuffer<O>,
    values: &Buffer,
) -> Result<(Buffer, Rebase, Buffer), ArrowError> {
    let empty = || Buffer::from(MutableBuffer::new(0));
    if offsets.len() < 2 {
        // No values: one 0 offset, as the format requires N + 1 of them.
        return Ok((
            Buffer::from_vec(vec![0u8; size_of::<O>()]),
            Rebase::None,
            empty(),
        ));
    }
    // An OffsetBuffer's offsets are non-negative and in order.
    let (first, last) = (offsets[0].as_usize(), offsets[offsets.len() - 1].as_usize());
    let values = values.slice_with_length(first, last - first);
    let rebase = match (first, size_of::<O>()) {
        (0, _) => Rebase::None,
        (f, 4) => Rebase::I32(f as i32),
        (f, _) => Rebase::I64(f as i64),
    };
    Ok((offsets.inner().inner().clone(), rebase, values))
}

/// Writes `len` zero bytes at `dst`.
///
/// # Safety
///
/// `dst` is valid for writes of `len` bytes.
unsafe fn zero(dst: *mut u8, len: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { std::ptr::write_bytes(dst, 0, len) };
}

/// Writes each `N`-byte value of `src` through `f` to `dst`.
///
/// # Safety
///
/// `dst` is valid for writes of `src.len()` bytes that do not overlap `src`.
unsafe fn rebase_into<const N: usize>(dst: *mut u8, src: &[u8], f: impl Fn([u8; N]) -> [u8; N]) {
    for (i, chunk) in src.chunks_exact(N).enumerate() {
        let v = f(chunk.try_into().expect("N bytes"));
        // SAFETY: i * N + N <= src.len(), within dst's bytes.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), dst.add(i * N), N) };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::types::{
        Decimal128Type, Decimal256Type, DurationMicrosecondType, TimestampNanosecondType,
    };
    use arrow_array::*;
    use arrow_buffer::i256;
    use arrow_ipc::writer::StreamEncoder;
    use arrow_schema::Field;
    use proptest::prelude::*;

    use super::*;

    /// The bytes arrow-ipc's `StreamEncoder` writes for `batches`, with the
    /// ring's options.
    fn arrow_bytes(batches: &[RecordBatch]) -> Vec<u8> {
        let opts = IpcWriteOptions::try_new(ALIGN, false, MetadataVersion::V5).unwrap();
        let mut enc = StreamEncoder::try_new_with_options(&batches[0].schema(), opts).unwrap();
        let mut out = Vec::new();
        for b in batches {
            for part in enc.encode(b).unwrap() {
                out.extend_from_slice(part.as_slice());
            }
        }
        out
    }

    /// The bytes this encoder writes for `batches`.
    fn our_bytes(batches: &[RecordBatch]) -> Vec<u8> {
        let schema = batches[0].schema();
        let mut enc = FlatEncoder::new(&schema).expect("a flat schema");
        let mut out = Vec::new();
        let schema_message = FlatEncoder::schema_message(&schema).unwrap();
        for part in &schema_message.parts {
            out.extend_from_slice(part.as_slice());
        }
        for b in batches {
            let planned = enc.plan(b).unwrap();
            let m = enc.owned_message(planned);
            assert_eq!(m.len % 64, 0);
            for part in &m.parts {
                out.extend_from_slice(part.as_slice());
            }
        }
        out
    }

    fn opt<T: std::fmt::Debug + Clone + 'static>(
        rows: usize,
        s: BoxedStrategy<T>,
    ) -> impl Strategy<Value = Vec<Option<T>>> {
        prop::collection::vec(prop::option::weighted(0.8, s), rows)
    }

    /// A column of every flat kind, a fifth of its values null (or none,
    /// for `Utf8` without nulls: a column whose bitmap is absent).
    fn column(rows: usize) -> impl Strategy<Value = ArrayRef> {
        prop_oneof![
            opt(rows, any::<i8>().boxed()).prop_map(|v| Arc::new(Int8Array::from(v)) as ArrayRef),
            opt(rows, any::<i16>().boxed()).prop_map(|v| Arc::new(Int16Array::from(v)) as _),
            opt(rows, any::<i32>().boxed()).prop_map(|v| Arc::new(Int32Array::from(v)) as _),
            opt(rows, any::<i64>().boxed()).prop_map(|v| Arc::new(Int64Array::from(v)) as _),
            opt(rows, any::<u64>().boxed()).prop_map(|v| Arc::new(UInt64Array::from(v)) as _),
            opt(rows, any::<f32>().boxed()).prop_map(|v| Arc::new(Float32Array::from(v)) as _),
            opt(rows, any::<f64>().boxed()).prop_map(|v| Arc::new(Float64Array::from(v)) as _),
            opt(rows, any::<i32>().boxed()).prop_map(|v| Arc::new(Date32Array::from(v)) as _),
            opt(rows, any::<i64>().boxed()).prop_map(|v| {
                Arc::new(PrimitiveArray::<TimestampNanosecondType>::from(v)) as _
            }),
            opt(rows, any::<i64>().boxed()).prop_map(|v| {
                let v = v.into_iter().map(|x| x.map(i128::from));
                Arc::new(
                    PrimitiveArray::<Decimal128Type>::from_iter(v)
                        .with_precision_and_scale(38, 2)
                        .unwrap(),
                ) as _
            }),
            opt(rows, any::<i64>().boxed()).prop_map(|v| {
                Arc::new(PrimitiveArray::<DurationMicrosecondType>::from(v)) as _
            }),
            opt(rows, any::<i128>().boxed()).prop_map(|v| {
                let v = v.into_iter().map(|x| x.map(i256::from_i128));
                Arc::new(PrimitiveArray::<Decimal256Type>::from_iter(v)) as _
            }),
            opt(rows, any::<bool>().boxed()).prop_map(|v| Arc::new(BooleanArray::from(v)) as _),
            opt(rows, ".{0,9}".boxed()).prop_map(|v| Arc::new(StringArray::from(v)) as _),
            prop::collection::vec(".{0,9}", rows)
                .prop_map(|v| Arc::new(StringArray::from_iter_values(v)) as _),
            opt(rows, ".{0,9}".boxed()).prop_map(|v| Arc::new(LargeStringArray::from(v)) as _),
            opt(rows, prop::collection::vec(any::<u8>(), 0..7).boxed())
                .prop_map(|v| { Arc::new(BinaryArray::from_iter(v)) as _ }),
            opt(rows, prop::collection::vec(any::<u8>(), 0..7).boxed())
                .prop_map(|v| { Arc::new(LargeBinaryArray::from_iter(v)) as _ }),
        ]
    }

    /// Two batches of 1 to 4 flat columns, each a slice (any offset, any
    /// length) of longer arrays, as a sliced batch keeps them.
    fn batches() -> impl Strategy<Value = (Vec<RecordBatch>, usize, usize)> {
        (0_usize..40)
            .prop_flat_map(|rows| {
                (
                    prop::collection::vec(column(rows), 1..5),
                    0..=rows,
                    0..=rows,
                )
            })
            .prop_map(|(cols, a, b)| {
                let fields: Vec<Field> = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
                    .collect();
                let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
                let (start, end) = (a.min(b), a.max(b));
                let sliced = batch.slice(start, end - start);
                (vec![sliced, batch], start, end)
            })
    }

    /// The consumer's own decoding of `batch`'s message (check.rs), with
    /// the message 64-byte aligned as in the arena.
    fn consumer_decodes(batch: &RecordBatch) -> Option<RecordBatch> {
        let schema = batch.schema();
        let mut enc = FlatEncoder::new(&schema).unwrap();
        let planned = enc.plan(batch).unwrap();
        let message = enc.owned_message(planned);
        let mut aligned = MutableBuffer::new(message.len as usize);
        aligned.extend_from_slice(message.parts[0].as_slice());
        let bytes = Buffer::from(aligned);
        let (meta, body_start) = super::super::framing::data_message(
            &bytes,
            super::super::MSG_RECORD_BATCH,
            &mut super::super::framing::KnownShape::default(),
        )
        .unwrap();
        let flat = super::super::check::FlatSchema::new(&schema).unwrap();
        assert!(flat.admits(&meta, &bytes[body_start..]), "admitted");
        let header = meta.header_as_record_batch().unwrap();
        flat.decode(header, &bytes.slice(body_start), &schema)
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn prop_flat_messages_are_arrow_ipc_s_bytes_exactly((b, _, _) in batches()) {
            prop_assert_eq!(our_bytes(&b), arrow_bytes(&b));
        }

        /// Valid batches take the consumer's own decoding (none falls back
        /// to arrow's) and come out equal.
        #[test]
        fn prop_the_consumer_decodes_flat_messages_to_the_same_batch((b, _, _) in batches()) {
            for batch in &b {
                let decoded = consumer_decodes(batch);
                prop_assert_eq!(decoded.as_ref(), Some(batch));
            }
        }
    }

    #[test]
    fn a_sliced_boolean_and_string_column_are_re_based_as_arrow_does() {
        let bools: ArrayRef = Arc::new(BooleanArray::from(vec![
            Some(true),
            None,
            Some(false),
            Some(true),
            None,
            Some(true),
            Some(true),
            Some(false),
            Some(true),
            None,
            Some(false),
        ]));
        let strings: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            None,
            Some("bcd"),
            Some(""),
            Some("ef"),
            None,
            Some("ghij"),
            Some("k"),
            Some("l"),
            Some("mn"),
            None,
        ]));
        let schema = Arc::new(Schema::new(vec![
            Field::new("b", DataType::Boolean, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![bools, strings]).unwrap();
        for (offset, len) in [(3, 7), (1, 0), (0, 11), (9, 2)] {
            let b = vec![batch.slice(offset, len)];
            assert_eq!(our_bytes(&b), arrow_bytes(&b), "slice {offset}+{len}");
        }
    }

    /// Buffers of 64 KiB and more are copied with streaming stores.
    #[test]
    fn a_large_batch_is_arrow_ipc_s_bytes_exactly() {
        let rows = 100_000;
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows));
        let names: ArrayRef = Arc::new(StringArray::from_iter(
            (0..rows).map(|i| (i % 7 != 0).then(|| format!("name-{i}"))),
        ));
        let batch = RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap();
        for b in [vec![batch.clone()], vec![batch.slice(1_001, 70_000)]] {
            assert_eq!(our_bytes(&b), arrow_bytes(&b));
        }
    }

    #[test]
    fn only_flat_schemas_get_an_encoder() {
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int32, true)));
        for (t, flat) in [
            (DataType::Int64, true),
            (DataType::Utf8, true),
            (DataType::LargeBinary, true),
            (DataType::Boolean, true),
            (list, false),
            (DataType::Null, false),
            (
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false,
            ),
            (DataType::Utf8View, false),
        ] {
            let schema = Schema::new(vec![Field::new("x", t.clone(), true)]);
            assert_eq!(FlatEncoder::new(&schema).is_some(), flat, "{t}");
        }
        assert!(FlatEncoder::new(&Schema::empty()).is_none());
    }
}
