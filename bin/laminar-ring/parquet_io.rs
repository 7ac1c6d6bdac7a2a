//! Parquet input: reads checked against the file's size, time zones as
//! the writer stored them.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

/// A Parquet file whose reads are checked against its size: a column chunk
/// or page that claims more bytes than the file holds is an error before
/// anything is allocated for it.
pub struct BoundedFile {
    file: File,
    len: u64,
}

impl BoundedFile {
    pub fn new(file: File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

impl Length for BoundedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for BoundedFile {
    type T = <File as ChunkReader>::T;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        if start > self.len {
            return Err(ParquetError::EOF(format!(
                "a read at {start}, past the end of the {}-byte file",
                self.len
            )));
        }
        self.file.get_read(start)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let inside = start
            .checked_add(length as u64)
            .is_some_and(|end| end <= self.len);
        if !inside {
            return Err(ParquetError::EOF(format!(
                "bytes {start}..+{length} outside the {}-byte file",
                self.len
            )));
        }
        self.file.get_bytes(start, length)
    }
}

/// The Arrow schema that the writer of a Parquet file stored in its
/// metadata (`ARROW:schema`: base64 of an IPC schema message), if any.
fn stored_arrow_schema(
    metadata: &parquet::file::metadata::FileMetaData,
) -> Option<arrow_schema::Schema> {
    use base64::Engine as _;
    let encoded = metadata
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == "ARROW:schema")?
        .value
        .as_ref()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let message = match bytes.get(..4) {
        Some([0xff, 0xff, 0xff, 0xff]) => bytes.get(8..)?,
        _ => &bytes[..],
    };
    crate::guard::guarded("the Arrow schema decoder", || {
        let message = arrow_ipc::root_as_message(message)
            .map_err(|e| arrow_schema::ArrowError::IpcError(e.to_string()))?;
        let schema = message
            .header_as_schema()
            .ok_or_else(|| arrow_schema::ArrowError::IpcError("no schema".into()))?;
        arrow_ipc::convert::try_fb_to_schema(schema)
    })
    .ok()
}

/// The reader's schema with each top-level timestamp column's time zone
/// as the file's writer stored it. Parquet itself records only "adjusted
/// to UTC"; arrow-rs takes the zone from the stored Arrow schema only when
/// the units match, and pyarrow stores timestamp[s] as milliseconds, so a
/// `timestamp[s, Asia/Tokyo]` column came out as `timestamp[ms, UTC]`. The
/// values are instants either way: only the zone label changes.
pub fn with_stored_zones(
    schema: &arrow_schema::SchemaRef,
    metadata: &parquet::file::metadata::FileMetaData,
) -> arrow_schema::SchemaRef {
    use arrow_schema::DataType::Timestamp;
    let Some(stored) = stored_arrow_schema(metadata) else {
        return schema.clone();
    };
    let mut changed = false;
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| {
            let zone = stored
                .field_with_name(f.name())
                .ok()
                .and_then(|s| match s.data_type() {
                    Timestamp(_, Some(tz)) => Some(tz.clone()),
                    _ => None,
                });
            match (f.data_type(), zone) {
                (Timestamp(unit, Some(tz)), Some(zone)) if *tz != zone => {
                    changed = true;
                    Arc::new(
                        f.as_ref()
                            .clone()
                            .with_data_type(Timestamp(*unit, Some(zone))),
                    )
                }
                _ => f.clone(),
            }
        })
        .collect();
    if !changed {
        return schema.clone();
    }
    Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// `batch` relabelled with `schema`'s time zones (same values).
pub fn relabel(
    batch: arrow_array::RecordBatch,
    schema: &arrow_schema::SchemaRef,
) -> Result<arrow_array::RecordBatch, arrow_schema::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(c.clone()),
            false => arrow_cast::cast(c, f.data_type()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    arrow_array::RecordBatch::try_new(schema.clone(), columns)
}
