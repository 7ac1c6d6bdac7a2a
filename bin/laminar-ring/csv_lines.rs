//! Where the records of a CSV input start, and whether it ends inside a
//! quoted field.
//!
//! arrow-csv numbers records, not lines: a quoted field may hold line
//! breaks, and empty lines are skipped. [`LineIndex`] runs csv-core (the
//! parser arrow-csv uses) over the same bytes as they are read, and keeps
//! where each record starts, so that an error names the line an editor
//! shows. It also tells a quote left open at the end of the input, which
//! csv-core reads as one last field holding the rest of the input.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};

/// A quoted field still open at the end of the input.
#[derive(Debug)]
pub struct UnterminatedQuote {
    line: u64,
}

impl std::fmt::Display for UnterminatedQuote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unterminated quote: the record that starts on line {} opens a quoted field \
             that is not closed before the end of the input",
            self.line
        )
    }
}

impl std::error::Error for UnterminatedQuote {}

/// Where the records of a CSV input start, learnt by parsing its bytes as
/// they are read with csv-core, configured as arrow-csv configures it
/// (one-byte delimiter, `"` quotes doubled inside quoted fields, CR, LF or
/// CRLF ends a record, empty lines skipped).
pub struct LineIndex {
    parser: csv_core::Reader,
    /// Where the parser writes a field's bytes, which are not kept.
    scratch: Vec<u8>,
    /// The line of the next byte, from 1.
    line: u64,
    /// The index of the next record to start.
    next_record: u64,
    /// Inside a record (its first byte was seen, its end not yet).
    in_record: bool,
    /// Where the parser writes fields' ends, which are not kept.
    ends: Vec<usize>,
    /// The line where the current record starts.
    record_line: u64,
    /// `(first record, line - record)` for each run of records that start
    /// at the same distance from their index, oldest first.
    runs: VecDeque<(u64, u64)>,
    /// The end of the input was seen.
    ended: bool,
}

impl LineIndex {
    pub fn new(delimiter: u8) -> Self {
        Self {
            parser: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            scratch: vec![0; 64 << 10],
            line: 1,
            next_record: 0,
            in_record: false,
            ends: vec![0; 1024],
            record_line: 1,
            runs: VecDeque::new(),
            ended: false,
        }
    }

    /// Parses the next bytes of the input.
    pub fn feed(&mut self, mut input: &[u8]) {
        let newlines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count() as u64;
        while !input.is_empty() {
            if !self.in_record {
                // Line ends between records: csv-core skips them as well.
                let skip = input
                    .iter()
                    .position(|&b| b != b'\n' && b != b'\r')
                    .unwrap_or(input.len());
                self.line += newlines(&input[..skip]);
                input = &input[skip..];
                if input.is_empty() {
                    break;
                }
                let distance = self.line - self.next_record;
                if self.runs.back().map(|r| r.1) != Some(distance) {
                    self.runs.push_back((self.next_record, distance));
                }
                self.next_record += 1;
                self.in_record = true;
                self.record_line = self.line;
            }
            let (result, nin, _, _) =
                self.parser
                    .read_record(input, &mut self.scratch, &mut self.ends);
            self.line += newlines(&input[..nin]);
            input = &input[nin..];
            match result {
                csv_core::ReadRecordResult::Record => self.in_record = false,
                _ if nin == 0 => break,
                _ => {}
            }
        }
    }

    /// At the end of the input: `Err` if a quoted field is still open.
    pub fn finish(&mut self) -> Result<(), UnterminatedQuote> {
        if std::mem::replace(&mut self.ended, true) || !self.in_record {
            return Ok(());
        }
        // A line end closes any record except one inside quotes, where it
        // is part of the field.
        match self
            .parser
            .read_record(b"\n", &mut self.scratch, &mut self.ends)
            .0
        {
            csv_core::ReadRecordResult::Record => Ok(()),
            _ => Err(UnterminatedQuote {
                line: self.record_line,
            }),
        }
    }

    /// The line where record `record` (the header is 0) starts.
    pub fn line_of(&self, record: u64) -> u64 {
        self.runs
            .iter()
            .rev()
            .find(|r| r.0 <= record)
            .map_or(record + 1, |r| record + r.1)
    }

    /// Drops what only records before `record` need.
    pub fn forget_before(&mut self, record: u64) {
        while self.runs.len() > 1 && self.runs[1].0 <= record {
            self.runs.pop_front();
        }
    }
}

/// A reader that shows each byte it reads to a [`LineIndex`], and fails at
/// the end of the input if a quoted field is still open.
pub struct Tracked<R> {
    pub inner: R,
    pub lines: Arc<Mutex<LineIndex>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut lines = lock(&self.lines);
        if n > 0 {
            lines.feed(&buf[..n]);
        } else if !buf.is_empty() {
            lines
                .finish()
                .map_err(|q| std::io::Error::new(std::io::ErrorKind::InvalidData, q))?;
        }
        Ok(n)
    }
}

/// `lines`, locked.
pub fn lock(lines: &Mutex<LineIndex>) -> MutexGuard<'_, LineIndex> {
    // A panic while it was held ends the input (the reader is guarded).
    lines.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn index(bytes: &[u8], chunk: usize) -> LineIndex {
        let mut l = LineIndex::new(b',');
        for c in bytes.chunks(chunk) {
            l.feed(c);
        }
        l
    }

    #[test]
    fn records_map_to_the_lines_they_start_on() {
        let csv = b"id,name\n1,\"two\nlines\"\n\n2,x\r\n3,\"a\r\nb\r\nc\"\n4,y";
        for chunk in [1, 2, 3, 7, csv.len()] {
            let mut l = index(csv, chunk);
            assert_eq!(
                (0..5).map(|r| l.line_of(r)).collect::<Vec<_>>(),
                [1, 2, 5, 6, 9],
                "chunks of {chunk}"
            );
            assert!(l.finish().is_ok());
        }
    }

    #[test]
    fn a_quote_open_at_the_end_names_the_line_its_record_starts_on() {
        let mut l = index(b"id,name\n1,\"abc\n2,def\n", 4);
        assert_eq!(l.finish().unwrap_err().line, 2);
        let mut l = index(b"a,b\n\n1,\"x\ny\",\"z\nw", 3);
        assert_eq!(l.finish().unwrap_err().line, 3);
        // Closed quotes, with and without a last line end.
        for ok in [
            &b"a,b\n1,\"x\"\n"[..],
            b"a,b\n1,\"x\"",
            b"a,b\n1,\"x\"\"\"\n",
            b"a\n",
        ] {
            assert!(index(ok, 2).finish().is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn forgetting_keeps_the_lines_of_later_records() {
        let mut l = index(b"h\n\"a\nb\"\nc\n\"d\ne\"\nf\n", 5);
        let want: Vec<u64> = (0..5).map(|r| l.line_of(r)).collect();
        assert_eq!(want, [1, 2, 4, 5, 7]);
        l.forget_before(3);
        assert_eq!(l.line_of(3), 5);
        assert_eq!(l.line_of(4), 7);
    }
}
