//! Parquet input: reads checked against the file's size.

use std::fs::File;

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
