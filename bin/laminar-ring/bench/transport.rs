//! How the two processes of a run talk: through a shared-memory [`Ring`]
//! (and a second `u64` ring for acknowledgements), or through a Unix
//! [`Socket`] (acknowledgements on its other direction). A transport opens
//! the ends of a run and moves a [`Payload`]'s messages; what they are and
//! how they are checked is the payload's.

use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer, BatchProducer};
use laminar_ring::shm::{self, SegmentOptions, ShmConsumer, ShmPopError, ShmProducer};

use super::BenchError;
use super::job::{PayloadKind, Place, Workload};
use super::payload::{Arrow, Batches, Payload, Received, U64};

/// Acknowledgement values on the way back, besides the index of a latency
/// sample: the consumer is attached and waiting; it has received the
/// throughput phase.
pub const READY: u64 = u64::MAX;
pub const DRAINED: u64 = u64::MAX - 1;
/// How long one end waits for the other to turn up on a socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Buffer of the socket's reader and writer.
const SOCKET_BUFFER: usize = 1 << 20;
/// Most `u64` values a consumer takes at once.
const VALUE_BUFFER: usize = 4096;
/// Slots of a `u64` data ring (of each lane, with several producers).
pub const U64_SLOTS: usize = 1 << 16;

/// The producer's end of the acknowledgements.
pub trait AckRx {
    fn recv(&mut self) -> Result<u64, BenchError>;

    /// Waits for the acknowledgement `want`.
    fn wait(&mut self, want: u64) -> Result<(), BenchError> {
        match self.recv()? {
            v if v == want => Ok(()),
            v => Err(BenchError::new(format!(
                "acknowledgement {v}, expected {want}"
            ))),
        }
    }
}

/// The consumer's end of the acknowledgements.
pub trait AckTx {
    fn send(&mut self, v: u64) -> Result<(), BenchError>;
}

/// The producer's end of the data for payload `P`.
pub trait Sender<P: Payload> {
    fn send_bulk(&mut self, bulk: P::Bulk<'_>) -> Result<(), BenchError>;
    /// The throughput phase is over: passes on what is buffered.
    fn flush(&mut self) -> Result<(), BenchError> {
        Ok(())
    }
    /// Sends one message of the latency phase at once.
    fn send_sample(&mut self, sample: P::Sample<'_>) -> Result<(), BenchError>;
    /// Ends the stream.
    fn close(self) -> Result<(), BenchError>;
}

/// The consumer's end of the data for payload `P`. Each call hands what it
/// received (`None`: the stream ended) to `check` before it returns.
pub trait Receiver<P: Payload> {
    /// Receives the next message, or up to `max` values.
    fn recv_bulk<R>(
        &mut self,
        max: u64,
        check: impl FnOnce(Option<P::Got<'_>>) -> Result<R, BenchError>,
    ) -> Result<R, BenchError>;
    /// Receives one message of the latency phase.
    fn recv_sample(
        &mut self,
        check: impl FnOnce(Option<P::Got<'_>>) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        self.recv_bulk(1, check)
    }
    /// Checks that the stream ends here.
    fn expect_end(self) -> Result<(), BenchError>;
}

/// `u64` values through an end of a transport: written and read in place
/// in a ring's slots (its buffer serves the consumer's blocking `pop`), or
/// copied through a buffer of their little-endian bytes (a socket).
#[derive(Debug)]
pub struct Values<E, T> {
    end: E,
    buf: Vec<T>,
}

impl<E, T> Values<E, T> {
    /// A producer's end (which needs no buffer).
    pub fn new(end: E) -> Self {
        Self {
            end,
            buf: Vec::new(),
        }
    }
}

/// A way between the two processes.
pub trait Transport {
    type AckRx: AckRx;
    type AckTx: AckTx;
}

/// A transport that carries payload `P`.
pub trait Channel<P: Payload>: Transport {
    type Tx: Sender<P>;
    type Rx: Receiver<P>;
    /// Opens the producer's ends; returns once the consumer is [`READY`]
    /// (with several consumers, once every one is attached).
    fn open_tx(
        at: &Place,
        w: &Workload,
        src: &P::Source,
    ) -> Result<(Self::AckRx, Self::Tx), BenchError>;
    /// Opens the consumer's ends and acknowledges [`READY`].
    fn open_rx(at: &Place, w: &Workload) -> Result<(Self::AckTx, Self::Rx), BenchError>;
}

// ------------------------------------------------------------------- ring

/// A ring in shared memory for the data, a `u64` ring for the
/// acknowledgements; the parent creates both.
#[derive(Debug)]
pub struct Ring;

impl Transport for Ring {
    type AckRx = ShmConsumer<u64>;
    /// `None` for the consumers of a run with several but the first.
    type AckTx = Option<ShmProducer<u64>>;
}

impl AckRx for ShmConsumer<u64> {
    fn recv(&mut self) -> Result<u64, BenchError> {
        Ok(self.pop()?)
    }
}

impl AckTx for ShmProducer<u64> {
    fn send(&mut self, v: u64) -> Result<(), BenchError> {
        Ok(self.push(v)?)
    }
}

impl AckTx for Option<ShmProducer<u64>> {
    fn send(&mut self, v: u64) -> Result<(), BenchError> {
        match self {
            Some(acks) => acks.send(v),
            None => Ok(()),
        }
    }
}

pub(super) fn seg_options(dir: &Path) -> SegmentOptions {
    SegmentOptions {
        dir: dir.to_owned(),
        ..SegmentOptions::default()
    }
}

/// The data ring's options for a consumer at `at` (its name, when the run
/// has several) or the producer.
pub(super) fn data_options(at: &Place, w: &Workload) -> SegmentOptions {
    SegmentOptions {
        subscriber: at
            .subscriber
            .clone()
            .unwrap_or_else(|| shm::DEFAULT_SUBSCRIBER.to_owned()),
        max_consumers: w.consumers.max(shm::DEFAULT_CONSUMERS),
        ..seg_options(&at.dir)
    }
}

pub(super) fn arrow_options(at: &Place, w: &Workload) -> ArrowRingOptions {
    ArrowRingOptions {
        slots: 1024,
        arena_bytes: w.arena,
        segment: data_options(at, w),
        max_leases: 16,
    }
}

pub(super) fn ack_name(ring: &str) -> String {
    format!("{ring}-ack")
}

impl Ring {
    /// Creates the run's data and acknowledgement rings, adding each file
    /// to `made` once it exists.
    pub fn create(at: &Place, w: &Workload, made: &mut Vec<PathBuf>) -> Result<(), BenchError> {
        let seg = seg_options(&at.dir);
        match w.payload {
            PayloadKind::Arrow => {
                laminar_ring::arrow::create(&at.ring, &arrow_options(at, w))?;
            }
            PayloadKind::U64 => shm::create::<u64>(&at.ring, U64_SLOTS, &data_options(at, w))?,
        }
        made.push(at.dir.join(&at.ring));
        if w.consumers > 1 {
            // Every name subscribed from the first message on, whichever
            // process starts first.
            for i in 0..w.consumers {
                let at = Place {
                    subscriber: Some(format!("c{i}")),
                    ..at.clone()
                };
                match w.payload {
                    PayloadKind::Arrow => {
                        drop(BatchConsumer::open(&at.ring, &arrow_options(&at, w))?)
                    }
                    PayloadKind::U64 => drop(ShmConsumer::<u64>::open_with(
                        &at.ring,
                        &data_options(&at, w),
                    )?),
                }
            }
        }
        shm::create::<u64>(&ack_name(&at.ring), 1024, &seg)?;
        made.push(at.dir.join(ack_name(&at.ring)));
        Ok(())
    }

    /// Opens a run's ends: the acknowledgements, then the data (`open`),
    /// then the handshake (`ready`: the producer waits for [`READY`], the
    /// consumer sends it).
    pub(super) fn open_ends<A: U64End, D>(
        at: &Place,
        w: &Workload,
        open: impl FnOnce(&str, &Path) -> Result<D, BenchError>,
        ready: impl FnOnce(&mut A) -> Result<(), BenchError>,
    ) -> Result<(A, D), BenchError> {
        let mut acks = A::open(&ack_name(&at.ring), &at.dir, w)?;
        let data = open(&at.ring, &at.dir)?;
        ready(&mut acks)?;
        Ok((acks, data))
    }

    /// With several consumers: waits until every one is attached (`c0`'s
    /// [`READY`] speaks for `c0` alone). A subscriber whose consumer has
    /// not come yet holds the producer back as one that left, and a
    /// producer that fills the ring meanwhile is told its consumer is gone.
    fn await_consumers(at: &Place, w: &Workload) -> Result<(), BenchError> {
        if w.consumers < 2 {
            return Ok(());
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let info = shm::inspect(&at.ring, &seg_options(&at.dir))?;
            let alive = info.subscribers.iter().filter(|s| s.role.alive).count();
            if alive >= w.consumers as usize {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BenchError::new(format!(
                    "{alive} of {} consumers attached after {CONNECT_TIMEOUT:?}",
                    w.consumers
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A consumer's ends: as [`open_ends`](Self::open_ends) for the one
    /// that acknowledges; the data alone for the others of a run with
    /// several consumers.
    fn open_rx_ends<D>(
        at: &Place,
        w: &Workload,
        open: impl FnOnce(&str, &Path) -> Result<D, BenchError>,
    ) -> Result<(Option<ShmProducer<u64>>, D), BenchError> {
        if at.subscriber.as_deref().is_some_and(|s| s != "c0") {
            return Ok((None, open(&at.ring, &at.dir)?));
        }
        let (acks, data) = Self::open_ends(at, w, open, |a: &mut ShmProducer<u64>| a.send(READY))?;
        Ok((Some(acks), data))
    }
}

/// An end of a `u64` ring, waiting with the workload's strategy.
pub(super) trait U64End: Sized {
    fn open(name: &str, dir: &Path, w: &Workload) -> Result<Self, BenchError>;
}

impl U64End for ShmProducer<u64> {
    fn open(name: &str, dir: &Path, w: &Workload) -> Result<Self, BenchError> {
        let mut end = Self::open_with(name, &seg_options(dir))?;
        end.set_wait_strategy(w.wait.strategy());
        Ok(end)
    }
}

impl U64End for ShmConsumer<u64> {
    fn open(name: &str, dir: &Path, w: &Workload) -> Result<Self, BenchError> {
        let mut end = Self::open_with(name, &seg_options(dir))?;
        end.set_wait_strategy(w.wait.strategy());
        Ok(end)
    }
}

impl Channel<U64> for Ring {
    type Tx = Values<ShmProducer<u64>, u64>;
    type Rx = Values<ShmConsumer<u64>, u64>;

    fn open_tx(at: &Place, w: &Workload, _: &()) -> Result<(Self::AckRx, Self::Tx), BenchError> {
        let open = |ring: &str, dir: &Path| U64End::open(ring, dir, w);
        let (acks, end) = Self::open_ends(at, w, open, |a: &mut ShmConsumer<u64>| a.wait(READY))?;
        Self::await_consumers(at, w)?;
        Ok((acks, Values::new(end)))
    }

    fn open_rx(at: &Place, w: &Workload) -> Result<(Self::AckTx, Self::Rx), BenchError> {
        let open = |ring: &str, _: &Path| {
            let mut end = ShmConsumer::<u64>::open_with(ring, &data_options(at, w))?;
            end.set_wait_strategy(w.wait.strategy());
            Ok(end)
        };
        let (acks, end) = Self::open_rx_ends(at, w, open)?;
        let buf = vec![0; VALUE_BUFFER];
        Ok((acks, Values { end, buf }))
    }
}

impl Sender<U64> for Values<ShmProducer<u64>, u64> {
    /// Writes the values in place, a chunk of free slots per call.
    fn send_bulk(&mut self, mut values: Range<u64>) -> Result<(), BenchError> {
        while !values.is_empty() {
            let chunk = self
                .end
                .write_chunk_uninit((values.end - values.start) as usize);
            match chunk.fill_from_iter(values.clone()) {
                // Full: wait for room with the ring's own strategy.
                0 => {
                    self.end.push(values.start)?;
                    values.start += 1;
                }
                n => values.start += n as u64,
            }
        }
        Ok(())
    }

    fn send_sample(&mut self, v: u64) -> Result<(), BenchError> {
        Ok(self.end.push(v)?)
    }

    fn close(self) -> Result<(), BenchError> {
        self.end.close();
        Ok(())
    }
}

impl Receiver<U64> for Values<ShmConsumer<u64>, u64> {
    fn recv_bulk<R>(
        &mut self,
        max: u64,
        check: impl FnOnce(Option<Received<'_>>) -> Result<R, BenchError>,
    ) -> Result<R, BenchError> {
        let want = max.min(self.buf.len() as u64) as usize;
        // Checked in place, a chunk of ready slots per call.
        if let Ok(chunk) = self.end.read_chunk(want) {
            // The command's one unsafe call: the bench reads its own
            // producer's items in place, as a program that trusts its
            // producer would (`ShmReadChunk::as_slices`).
            #[allow(unsafe_code)]
            // SAFETY: the producer is this bench's own worker, which keeps
            // the protocol, and the ring has no lag bound: nothing writes
            // these published slots until the commit below releases them.
            let (first, _) = unsafe { chunk.as_slices() };
            let n = first.len();
            let got = check(Some(Received::Native(first)));
            chunk.commit(n);
            return got;
        }
        // Empty (or the end): wait with the ring's own strategy.
        self.buf[0] = self.end.pop()?;
        check(Some(Received::Native(&self.buf[..1])))
    }

    /// One blocking `pop`, as a latency sample should.
    fn recv_sample(
        &mut self,
        check: impl FnOnce(Option<Received<'_>>) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        let v = self.end.pop()?;
        check(Some(Received::Native(&[v])))
    }

    fn expect_end(mut self) -> Result<(), BenchError> {
        match self.end.pop() {
            Err(ShmPopError::EndOfStream) => Ok(()),
            other => Err(BenchError::new(format!(
                "expected the end of the stream, got {other:?}"
            ))),
        }
    }
}

impl Channel<Arrow> for Ring {
    type Tx = BatchProducer;
    type Rx = BatchConsumer;

    fn open_tx(
        at: &Place,
        w: &Workload,
        _: &Batches,
    ) -> Result<(Self::AckRx, Self::Tx), BenchError> {
        let open = |ring: &str, _: &Path| {
            let mut tx = BatchProducer::open(ring, &arrow_options(at, w))?;
            tx.set_wait_strategy(w.wait.strategy());
            Ok(tx)
        };
        let ends = Self::open_ends(at, w, open, |a: &mut ShmConsumer<u64>| a.wait(READY))?;
        Self::await_consumers(at, w)?;
        Ok(ends)
    }

    fn open_rx(at: &Place, w: &Workload) -> Result<(Self::AckTx, Self::Rx), BenchError> {
        let open = |ring: &str, _: &Path| {
            let mut rx = BatchConsumer::open(ring, &arrow_options(at, w))?;
            rx.set_wait_strategy(w.wait.strategy());
            Ok(rx)
        };
        Self::open_rx_ends(at, w, open)
    }
}

impl Sender<Arrow> for BatchProducer {
    fn send_bulk(&mut self, b: &RecordBatch) -> Result<(), BenchError> {
        Ok(self.send(b)?)
    }

    fn send_sample(&mut self, b: &RecordBatch) -> Result<(), BenchError> {
        Ok(self.send(b)?)
    }

    fn close(self) -> Result<(), BenchError> {
        Ok(BatchProducer::close(self)?)
    }
}

impl Receiver<Arrow> for BatchConsumer {
    fn recv_bulk<R>(
        &mut self,
        _: u64,
        check: impl FnOnce(Option<&RecordBatch>) -> Result<R, BenchError>,
    ) -> Result<R, BenchError> {
        // Zero-copy: the lease ends (the slot is released) when `check` is done.
        check(self.recv_zero_copy()?.as_deref())
    }

    fn expect_end(mut self) -> Result<(), BenchError> {
        match self.recv()? {
            Some(_) => Err(BenchError::new("a batch after the last one expected")),
            None => Ok(()),
        }
    }
}

// ----------------------------------------------------------------- socket

/// A Unix domain socket: the consumer listens, the producer connects; the
/// acknowledgements go back on the same connection.
#[derive(Debug)]
pub struct Socket;

impl Transport for Socket {
    type AckRx = UnixStream;
    type AckTx = UnixStream;
}

impl AckRx for UnixStream {
    fn recv(&mut self) -> Result<u64, BenchError> {
        let mut b = [0_u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

impl AckTx for UnixStream {
    fn send(&mut self, v: u64) -> Result<(), BenchError> {
        Ok(self.write_all(&v.to_le_bytes())?)
    }
}

impl Socket {
    /// Connects to the consumer and waits until it is ready; returns the
    /// acknowledgements and the data stream.
    fn connect(at: &Place) -> Result<(UnixStream, UnixStream), BenchError> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let stream = loop {
            match UnixStream::connect(&at.socket) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut acks = stream.try_clone()?;
        acks.wait(READY)?;
        Ok((acks, stream))
    }

    /// Accepts the producer and tells it this end is ready; returns the
    /// acknowledgements and the buffered data stream.
    fn accept(at: &Place) -> Result<(UnixStream, BufReader<UnixStream>), BenchError> {
        let listener = UnixListener::bind(&at.socket)?;
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e.into()),
            }
        };
        stream.set_nonblocking(false)?;
        let mut acks = stream.try_clone()?;
        acks.send(READY)?;
        Ok((acks, BufReader::with_capacity(SOCKET_BUFFER, stream)))
    }
}

impl Channel<U64> for Socket {
    type Tx = Values<BufWriter<UnixStream>, u8>;
    type Rx = Values<BufReader<UnixStream>, u8>;

    fn open_tx(at: &Place, _: &Workload, _: &()) -> Result<(Self::AckRx, Self::Tx), BenchError> {
        let (acks, stream) = Self::connect(at)?;
        let end = BufWriter::with_capacity(SOCKET_BUFFER, stream);
        Ok((acks, Values { end, buf: vec![] }))
    }

    fn open_rx(at: &Place, _: &Workload) -> Result<(Self::AckTx, Self::Rx), BenchError> {
        let (acks, end) = Self::accept(at)?;
        let buf = vec![0; 8 * VALUE_BUFFER];
        Ok((acks, Values { end, buf }))
    }
}

impl Sender<U64> for Values<BufWriter<UnixStream>, u8> {
    fn send_bulk(&mut self, values: Range<u64>) -> Result<(), BenchError> {
        self.buf.resize(8 * (values.end - values.start) as usize, 0);
        for (c, v) in self.buf.chunks_exact_mut(8).zip(values) {
            c.copy_from_slice(&v.to_le_bytes());
        }
        Ok(self.end.write_all(&self.buf)?)
    }

    fn flush(&mut self) -> Result<(), BenchError> {
        Ok(self.end.flush()?)
    }

    /// Straight to the socket: the buffer is empty since `flush`.
    fn send_sample(&mut self, v: u64) -> Result<(), BenchError> {
        Ok(self.end.get_mut().write_all(&v.to_le_bytes())?)
    }

    fn close(mut self) -> Result<(), BenchError> {
        self.end.flush()?;
        Ok(self.end.get_ref().shutdown(std::net::Shutdown::Write)?)
    }
}

impl Receiver<U64> for Values<BufReader<UnixStream>, u8> {
    fn recv_bulk<R>(
        &mut self,
        max: u64,
        check: impl FnOnce(Option<Received<'_>>) -> Result<R, BenchError>,
    ) -> Result<R, BenchError> {
        let n = max.min(self.buf.len() as u64 / 8) as usize;
        self.end.read_exact(&mut self.buf[..8 * n])?;
        check(Some(Received::LittleEndian(&self.buf[..8 * n])))
    }

    fn expect_end(mut self) -> Result<(), BenchError> {
        if self.end.read(&mut self.buf)? != 0 {
            return Err(BenchError::new("bytes after the last value expected"));
        }
        Ok(())
    }
}

impl Channel<Arrow> for Socket {
    type Tx = StreamWriter<BufWriter<UnixStream>>;
    type Rx = StreamReader<BufReader<UnixStream>>;

    fn open_tx(
        at: &Place,
        _: &Workload,
        src: &Batches,
    ) -> Result<(Self::AckRx, Self::Tx), BenchError> {
        let (acks, stream) = Self::connect(at)?;
        let out = BufWriter::with_capacity(SOCKET_BUFFER, stream);
        Ok((acks, StreamWriter::try_new(out, &src.one_row.schema())?))
    }

    /// READY first: the reader waits for the producer's schema.
    fn open_rx(at: &Place, _: &Workload) -> Result<(Self::AckTx, Self::Rx), BenchError> {
        let (acks, input) = Self::accept(at)?;
        Ok((acks, StreamReader::try_new(input, None)?))
    }
}

impl Sender<Arrow> for StreamWriter<BufWriter<UnixStream>> {
    fn send_bulk(&mut self, b: &RecordBatch) -> Result<(), BenchError> {
        Ok(self.write(b)?)
    }

    fn flush(&mut self) -> Result<(), BenchError> {
        Ok(StreamWriter::flush(self)?)
    }

    fn send_sample(&mut self, b: &RecordBatch) -> Result<(), BenchError> {
        self.write(b)?;
        Ok(StreamWriter::flush(self)?)
    }

    fn close(mut self) -> Result<(), BenchError> {
        Ok(self.finish()?)
    }
}

impl Receiver<Arrow> for StreamReader<BufReader<UnixStream>> {
    fn recv_bulk<R>(
        &mut self,
        _: u64,
        check: impl FnOnce(Option<&RecordBatch>) -> Result<R, BenchError>,
    ) -> Result<R, BenchError> {
        check(self.next().transpose()?.as_ref())
    }

    fn expect_end(mut self) -> Result<(), BenchError> {
        match self.next() {
            Some(_) => Err(BenchError::new("a batch after the last one expected")),
            None => Ok(()),
        }
    }
}
