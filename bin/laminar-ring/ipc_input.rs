//! Arrow IPC input, stream or file, with every length the input declares
//! checked against what it holds before anything is allocated for it.
//!
//! arrow-ipc's `StreamReader` and `FileReader` allocate (and zero) the
//! buffer a message or a footer block claims before reading it, so a
//! 20 KB file that claims an 8 GB block costs 8 GB. Here the framing is
//! read first: a file's blocks must lie inside the file, a stream's
//! message inside what is left of it, and from standard input (size
//! unknown) a message's buffer grows only as its bytes arrive. The
//! messages are then decoded by arrow-ipc's `FileDecoder`, with validation
//! on and under [`guarded`].

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{FileDecoder, read_footer_length};
use arrow_ipc::{Block, MessageHeader, MetadataVersion};
use arrow_schema::{ArrowError, SchemaRef};

use crate::guard::guarded;
use crate::units::fmt_counted;

/// The marker before a message's metadata length (IPC format since 0.15).
const CONTINUATION: [u8; 4] = [0xff; 4];
/// An IPC file starts with `ARROW1` and two bytes of padding.
const FILE_HEAD: u64 = 8;
/// An IPC file ends with the footer's length (4 bytes) and `ARROW1`.
const FILE_TRAILER: u64 = 10;
/// At most this much is reserved ahead of a message's bytes when the size
/// of the input is unknown; past it the buffer grows as bytes arrive.
const RESERVE_AHEAD: u64 = 16 << 20;

fn ipc_err(m: impl Into<String>) -> ArrowError {
    ArrowError::IpcError(m.into())
}

/// A flatbuffer that fails verification, in one line (the verifier's
/// message goes on with the path to the bad field, a line per level).
fn flatbuffer_err(what: &str, e: &dyn std::fmt::Display) -> ArrowError {
    let e = e.to_string();
    ipc_err(format!("{what}: {}", e.lines().next().unwrap_or_default()))
}

/// Refuses data in the other byte order: arrow-rs would read its numbers
/// byte-swapped (and panic on its decimals).
fn check_byte_order(schema: arrow_ipc::Schema<'_>) -> Result<(), ArrowError> {
    let order = schema.endianness();
    if order.equals_to_target_endianness() {
        return Ok(());
    }
    let order = match order {
        arrow_ipc::Endianness::Big => "big-endian".to_string(),
        arrow_ipc::Endianness::Little => "little-endian".to_string(),
        other => format!("byte order {}", other.0),
    };
    Err(ipc_err(format!(
        "the data is {order}, which this build does not convert; rewrite it in this \
         machine's byte order (pyarrow on a {} machine reads it and writes it back)",
        if cfg!(target_endian = "little") {
            "little-endian"
        } else {
            "big-endian"
        }
    )))
}

/// Reads into `buf` until it is full or the input ends; returns the count.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Appends exactly `len` bytes of `r` to `buf`, growing `buf` only as the
/// bytes arrive.
fn read_onto(r: &mut impl Read, buf: &mut Vec<u8>, len: u64, what: &str) -> Result<(), ArrowError> {
    buf.reserve(usize::try_from(len.min(RESERVE_AHEAD)).unwrap_or(0));
    let n = r.by_ref().take(len).read_to_end(buf)?;
    if (n as u64) < len {
        return Err(ipc_err(format!(
            "truncated: {what} of {}, but the input ends after {n}",
            fmt_counted(len, "byte", "bytes")
        )));
    }
    Ok(())
}

fn take_left(left: &mut Option<u64>, n: u64, what: &str) -> Result<(), ArrowError> {
    if let Some(left) = left {
        if n > *left {
            return Err(ipc_err(format!(
                "{what} of {}, but only {} {}",
                fmt_counted(n, "byte", "bytes"),
                fmt_counted(*left, "byte", "bytes"),
                if *left == 1 { "follows" } else { "follow" }
            )));
        }
        *left -= n;
    }
    Ok(())
}

/// The next message, whole (continuation marker, metadata length,
/// metadata, body), and its kind; `None` at the end of the stream.
fn next_message(
    reader: &mut impl Read,
    left: &mut Option<u64>,
) -> Result<Option<(Vec<u8>, MessageHeader)>, ArrowError> {
    let mut word = [0_u8; 4];
    match read_full(reader, &mut word)? {
        // The end of the input without an end-of-stream marker is an
        // end too, as for arrow's readers.
        0 => return Ok(None),
        4 => take_left(left, 4, "a message prefix")?,
        n => return Err(ipc_err(format!("truncated: {n} bytes of a message prefix"))),
    }
    if word == CONTINUATION {
        if read_full(reader, &mut word)? != 4 {
            return Err(ipc_err("truncated: a message prefix without its length"));
        }
        take_left(left, 4, "a message prefix")?;
    }
    let meta_len = i32::from_le_bytes(word);
    if meta_len == 0 {
        return Ok(None); // the end-of-stream marker
    }
    let meta_len = u64::try_from(meta_len)
        .map_err(|_| ipc_err(format!("negative metadata length {meta_len}")))?;
    take_left(left, meta_len, "message metadata")?;
    let mut msg = Vec::new();
    msg.extend_from_slice(&CONTINUATION);
    msg.extend_from_slice(&word);
    read_onto(reader, &mut msg, meta_len, "message metadata")?;
    let (body_len, header) = {
        let message = arrow_ipc::root_as_message(&msg[8..])
            .map_err(|e| flatbuffer_err("message metadata", &e))?;
        let body_len = u64::try_from(message.bodyLength())
            .map_err(|_| ipc_err(format!("negative body length {}", message.bodyLength())))?;
        if let Some(schema) = message.header_as_schema() {
            check_byte_order(schema)?;
        }
        (body_len, message.header_type())
    };
    take_left(left, body_len, "a message body")?;
    read_onto(reader, &mut msg, body_len, "a message body")?;
    Ok(Some((msg, header)))
}

/// An Arrow IPC stream, read message by message.
pub struct IpcStream<R> {
    reader: R,
    /// Bytes left in the input, when its size is known (a file).
    left: Option<u64>,
    decoder: FileDecoder,
    schema: SchemaRef,
    done: bool,
}

impl<R: Read> IpcStream<R> {
    /// Reads the stream's schema message. `size`: the input's length in
    /// bytes, when known.
    pub fn try_new(mut reader: R, size: Option<u64>) -> Result<Self, ArrowError> {
        let mut left = size;
        let Some((msg, header)) = next_message(&mut reader, &mut left)? else {
            return Err(ipc_err("empty stream: no schema message"));
        };
        if header != MessageHeader::Schema {
            return Err(ipc_err(format!(
                "the first message is a {header:?}, not a schema"
            )));
        }
        let schema = Arc::new(guarded("the Arrow IPC schema decoder", || {
            let message = arrow_ipc::root_as_message(&msg[8..])
                .map_err(|e| flatbuffer_err("message metadata", &e))?;
            let schema = message
                .header_as_schema()
                .ok_or_else(|| ipc_err("a schema message without its schema"))?;
            arrow_ipc::convert::try_fb_to_schema(schema)
        })?);
        // V1: no check that each message has the schema's metadata version,
        // as arrow's StreamReader does not check it either.
        let decoder = FileDecoder::new(schema.clone(), MetadataVersion::V1);
        Ok(Self {
            reader,
            left,
            decoder,
            schema,
            done: false,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Decodes a dictionary or record batch message.
    fn decode(
        &mut self,
        msg: Vec<u8>,
        header: MessageHeader,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        let meta_len = i32::from_le_bytes(msg[4..8].try_into().expect("4 bytes"));
        let body_len = msg.len() - 8 - meta_len as usize;
        let meta_len = meta_len
            .checked_add(8)
            .ok_or_else(|| ipc_err("metadata too long"))?;
        let block = Block::new(0, meta_len, body_len as i64);
        let buf = Buffer::from_vec(msg);
        let decoder = &mut self.decoder;
        guarded("the Arrow IPC decoder", || match header {
            MessageHeader::DictionaryBatch => decoder.read_dictionary(&block, &buf).map(|()| None),
            MessageHeader::RecordBatch | MessageHeader::NONE => {
                decoder.read_record_batch(&block, &buf)
            }
            other => Err(ipc_err(format!(
                "a {other:?} message in a stream of record batches"
            ))),
        })
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        loop {
            let Some((msg, header)) = next_message(&mut self.reader, &mut self.left)? else {
                return Ok(None);
            };
            if header == MessageHeader::Schema {
                return Err(ipc_err("a second schema message in one stream"));
            }
            if let Some(batch) = self.decode(msg, header)? {
                return Ok(Some(batch));
            }
        }
    }
}

impl<R: Read> Iterator for IpcStream<R> {
    type Item = Result<RecordBatch, ArrowError>;

    /// The next batch; after the end or an error, `None`.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_batch();
        self.done = !matches!(r, Ok(Some(_)));
        r.transpose()
    }
}

/// An Arrow IPC file, read block by block as its footer lists them.
pub struct IpcFile {
    file: File,
    /// Where the footer starts: every block must end before it.
    blocks_end: u64,
    decoder: FileDecoder,
    blocks: std::vec::IntoIter<Block>,
    schema: SchemaRef,
    done: bool,
}

impl IpcFile {
    /// Reads the footer and the dictionaries of `file`.
    pub fn try_new(mut file: File) -> Result<Self, ArrowError> {
        let len = file.metadata()?.len();
        if len < FILE_HEAD + FILE_TRAILER {
            return Err(ipc_err(format!(
                "{len} bytes: too short for an Arrow IPC file"
            )));
        }
        let mut trailer = [0_u8; FILE_TRAILER as usize];
        file.seek(SeekFrom::Start(len - FILE_TRAILER))?;
        file.read_exact(&mut trailer)?;
        let footer_len = read_footer_length(trailer)? as u64;
        let blocks_end = (len - FILE_TRAILER)
            .checked_sub(footer_len)
            .filter(|&e| e >= FILE_HEAD)
            .ok_or_else(|| {
                ipc_err(format!(
                    "a footer of {footer_len} bytes in a file of {len} bytes"
                ))
            })?;
        let mut footer = vec![0_u8; footer_len as usize];
        file.seek(SeekFrom::Start(blocks_end))?;
        file.read_exact(&mut footer)?;
        let footer =
            arrow_ipc::root_as_footer(&footer).map_err(|e| flatbuffer_err("file footer", &e))?;
        let ipc_schema = footer
            .schema()
            .ok_or_else(|| ipc_err("a file footer without a schema"))?;
        check_byte_order(ipc_schema)?;
        let schema = Arc::new(guarded("the Arrow IPC schema decoder", || {
            arrow_ipc::convert::try_fb_to_schema(ipc_schema)
        })?);
        let blocks: Vec<Block> = footer
            .recordBatches()
            .ok_or_else(|| ipc_err("a file footer without its list of record batches"))?
            .iter()
            .copied()
            .collect();
        let dictionaries: Vec<Block> = footer
            .dictionaries()
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default();
        let mut me = Self {
            file,
            blocks_end,
            decoder: FileDecoder::new(schema.clone(), footer.version()),
            blocks: blocks.into_iter(),
            schema,
            done: false,
        };
        for block in &dictionaries {
            let buf = me.read_block(block)?;
            let decoder = &mut me.decoder;
            guarded("the Arrow IPC decoder", || {
                decoder.read_dictionary(block, &buf)
            })?;
        }
        Ok(me)
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The bytes of `block`, after checking that it lies inside the file.
    fn read_block(&mut self, block: &Block) -> Result<Buffer, ArrowError> {
        let (offset, meta, body) = (block.offset(), block.metaDataLength(), block.bodyLength());
        let range = u64::try_from(offset)
            .ok()
            .filter(|&o| o >= FILE_HEAD)
            .zip(u64::try_from(meta).ok().filter(|&m| m >= 8))
            .zip(u64::try_from(body).ok())
            .and_then(|((o, m), b)| Some((o, m.checked_add(b)?)))
            .filter(|&(o, n)| o.checked_add(n).is_some_and(|end| end <= self.blocks_end));
        let Some((offset, n)) = range else {
            return Err(ipc_err(format!(
                "a block at {offset} (metadata {meta} bytes, body {body} bytes) outside the \
                 {} bytes of messages in the file",
                self.blocks_end
            )));
        };
        let mut buf = vec![0_u8; n as usize];
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(&mut buf)?;
        Ok(Buffer::from_vec(buf))
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        while let Some(block) = self.blocks.next() {
            let buf = self.read_block(&block)?;
            let decoder = &self.decoder;
            let batch = guarded("the Arrow IPC decoder", || {
                decoder.read_record_batch(&block, &buf)
            })?;
            if batch.is_some() {
                return Ok(batch);
            }
        }
        Ok(None)
    }
}

impl Iterator for IpcFile {
    type Item = Result<RecordBatch, ArrowError>;

    /// The next batch; after the last or an error, `None`.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_batch();
        self.done = !matches!(r, Ok(Some(_)));
        r.transpose()
    }
}
