//! Python ends of laminar-ring's Arrow rings (`import laminar_ring`).
//!
//! A [`Consumer`] receives `pyarrow.RecordBatch`es; by default their buffers
//! point into the ring's shared mapping, and the ring's lease on them is
//! released when Python drops the last reference (the Arrow C data
//! interface's release callback drops the Rust buffers that hold it). It
//! reads every lane of a stream several producers write, as `laminar-ring
//! consume` does. A [`Producer`] sends any object that implements the Arrow
//! PyCapsule interface (`__arrow_c_array__` or `__arrow_c_stream__`:
//! pyarrow, polars, DuckDB, nanoarrow, ...), joining the stream on a lane of
//! its own when another producer holds the ring, as `laminar-ring produce`
//! does. The bridge is arrow-rs's own `arrow-pyarrow`, the version of the
//! arrow crates the ring is built on.
//!
//! Blocking calls release the GIL and wait in steps of at most 100 ms,
//! checking for signals (and for `close()` from another thread) between
//! steps, so Ctrl-C interrupts them. Both classes may be shared between
//! threads: calls on one object take turns. A forked child cannot use the
//! objects it inherited, and leaves the parent's ring alone when it drops
//! them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use arrow_schema::SchemaRef;
use laminar_ring::arrow::{
    ArrowRingError, ArrowRingOptions, BatchFanIn, BatchFanInError, BatchProducer,
};
use laminar_ring::shm::{
    self, HeaderError, OpenError, Policy, RingKind, RoleInfo, RoleState, SegmentOptions, Start,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

create_exception!(
    laminar_ring,
    RingError,
    PyException,
    "An error of the ring (the message is the library's)."
);
create_exception!(
    laminar_ring,
    PeerGone,
    RingError,
    "The producer died; every batch it committed was delivered."
);
create_exception!(
    laminar_ring,
    ProducerFailed,
    RingError,
    "The producer gave up with an error; every batch it committed was delivered."
);
create_exception!(
    laminar_ring,
    ConsumerGone,
    RingError,
    "The consumer is gone and what it left unreleased leaves no room."
);
create_exception!(
    laminar_ring,
    SchemaMismatch,
    RingError,
    "A batch or stream of another schema than the ring's."
);
create_exception!(
    laminar_ring,
    Closed,
    RingError,
    "The producer or consumer was closed."
);

/// The longest a blocking call waits without looking for signals.
const STEP: Duration = Duration::from_millis(100);

fn ring_err(e: ArrowRingError) -> PyErr {
    let m = e.to_string();
    match e {
        ArrowRingError::Timeout => PyTimeoutError::new_err(m),
        ArrowRingError::PeerGone => PeerGone::new_err(m),
        ArrowRingError::ProducerFailed { .. } => ProducerFailed::new_err(m),
        ArrowRingError::ConsumerGone => ConsumerGone::new_err(m),
        ArrowRingError::SchemaMismatch { .. } => SchemaMismatch::new_err(m),
        ArrowRingError::TooManyLeases { .. } => RingError::new_err(format!(
            "{m} (a Consumer with copy=True keeps nothing in the ring)"
        )),
        _ => RingError::new_err(m),
    }
}

/// A fan-in error: a lane's end or failure as the same exception a lone
/// ring's would be, its message naming the lane.
fn fan_in_err(e: BatchFanInError) -> PyErr {
    match e {
        BatchFanInError::Timeout => ring_err(ArrowRingError::Timeout),
        BatchFanInError::Lane { lane: 0, error } => ring_err(error),
        BatchFanInError::Lane { lane, error } => {
            let m = format!("producer of lane {lane}: {error}");
            match error {
                ArrowRingError::PeerGone => PeerGone::new_err(m),
                ArrowRingError::ProducerFailed { .. } => ProducerFailed::new_err(m),
                ArrowRingError::SchemaMismatch { .. } => SchemaMismatch::new_err(m),
                _ => RingError::new_err(m),
            }
        }
    }
}

fn open_err(e: OpenError) -> PyErr {
    RingError::new_err(e.to_string())
}

fn closed(what: &str) -> PyErr {
    Closed::new_err(format!("the {what} is closed"))
}

fn forked(what: &str) -> PyErr {
    RingError::new_err(format!(
        "this {what} was opened by the parent process: a forked child cannot use it \
         (open a new one in the child)"
    ))
}

/// Ring options from the keyword arguments shared by every call.
fn options(
    dir: Option<PathBuf>,
    subscriber: Option<String>,
    from: Option<&str>,
) -> PyResult<ArrowRingOptions> {
    let mut opts = ArrowRingOptions::default();
    opts.segment.dir = dir_or_default(dir);
    if let Some(s) = subscriber {
        opts.segment.subscriber = s;
    }
    opts.segment.start = match from {
        None | Some("earliest") => Start::Earliest,
        Some("latest") => Start::Latest,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "from_ must be 'earliest' or 'latest', not {other:?}"
            )));
        }
    };
    Ok(opts)
}

/// A ring name the command would take: a stream's name, not a lane's.
fn check_name(name: &str) -> PyResult<()> {
    shm::check_stream_name(name).map_err(open_err)
}

/// The deadline `timeout` seconds from now (`None`, infinity, or a time
/// too far to count: no deadline).
fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t >= 0.0 => Ok(Duration::try_from_secs_f64(t)
            .ok()
            .and_then(|d| Instant::now().checked_add(d))),
        Some(t) => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds or None, not {t}"
        ))),
    }
}

/// The next step of a wait until `deadline`: at most [`STEP`].
fn step(deadline: Option<Instant>) -> Duration {
    match deadline {
        None => STEP,
        Some(d) => d.saturating_duration_since(Instant::now()).min(STEP),
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// One object's state behind its lock, shared by both classes: the
/// library's handle, the pid of the process that opened it, and whether
/// `close()` was asked (so that a wait in another thread gives up).
struct Shared<T> {
    inner: Mutex<Option<T>>,
    closing: AtomicBool,
    pid: u32,
    what: &'static str,
}

impl<T> Shared<T> {
    fn new(inner: T, what: &'static str) -> Self {
        Self {
            inner: Mutex::new(Some(inner)),
            closing: AtomicBool::new(false),
            pid: std::process::id(),
            what,
        }
    }

    /// The lock, waited for with the GIL released (another thread's call
    /// on this object may hold it while it waits on the ring).
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Option<T>>> {
        if std::process::id() != self.pid {
            return Err(forked(self.what));
        }
        loop {
            match self.inner.try_lock() {
                Ok(g) => return Ok(g),
                Err(TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(TryLockError::WouldBlock) => {
                    py.detach(|| std::thread::sleep(Duration::from_millis(1)));
                    py.check_signals()?;
                }
            }
        }
    }

    /// The handle, for a call that is not closing it.
    fn with<R>(&self, py: Python<'_>, f: impl FnOnce(&mut T) -> PyResult<R>) -> PyResult<R> {
        let mut g = self.lock(py)?;
        match g.as_mut() {
            Some(inner) if !self.closing.load(Ordering::Relaxed) => f(inner),
            _ => Err(closed(self.what)),
        }
    }

    /// Whether a waiting call should give up: `close()` was asked.
    fn closing(&self) -> PyResult<()> {
        match self.closing.load(Ordering::Relaxed) {
            true => Err(closed(self.what)),
            false => Ok(()),
        }
    }

    /// Takes the handle out, once any call in another thread noticed
    /// `closing` and returned.
    fn take(&self, py: Python<'_>) -> PyResult<Option<T>> {
        self.closing.store(true, Ordering::Relaxed);
        Ok(self.lock(py)?.take())
    }

    /// Drops the handle as the object dies: in a forked child, without
    /// touching the ring (the parent's handle is the one that counts).
    fn drop_with(&mut self, f: impl FnOnce(T)) {
        let inner = self
            .inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(inner) = inner {
            if std::process::id() == self.pid {
                f(inner);
            } else {
                std::mem::forget(inner);
            }
        }
    }
}

/// Receives `pyarrow.RecordBatch`es from an Arrow ring.
///
/// `Consumer(name, *, dir=None, from_="earliest", as_=None, copy=False)`
/// attaches to ring `name` (creating it if it does not exist) as the
/// subscriber `as_` (default: the ring's default subscriber). A new
/// subscription starts at the oldest batch the ring holds (`from_="earliest"`)
/// or at the next one published (`"latest"`); an existing one resumes at its
/// first unreleased batch. It reads every producer's lane of the stream.
///
/// By default a received batch's buffers lie in the shared mapping, and the
/// ring holds its space until Python drops the batch (and every array
/// taken from it): a batch is released once it is dropped, so a consumer
/// killed before that gets it again (at-least-once). Releases go in order,
/// so a batch kept long holds back the ring, and a batch held while the
/// next is received keeps its space meanwhile: with batches larger than
/// half the ring's message area, drop each (`del batch`) before the next.
/// `copy=True` copies each batch into process memory instead and releases
/// it as `recv` returns it.
#[pyclass(module = "laminar_ring", frozen)]
struct Consumer {
    shared: Shared<BatchFanIn>,
    copy: bool,
    /// Iteration has met the end of the stream: `next()` says so again.
    ended: AtomicBool,
}

impl Consumer {
    fn recv_until(&self, py: Python<'_>, deadline: Option<Instant>) -> PyResult<Option<Py<PyAny>>> {
        let copy = self.copy;
        let shared = &self.shared;
        shared.with(py, |inner| {
            loop {
                let wait = step(deadline);
                let got = py.detach(|| {
                    if copy {
                        inner.recv_lane(Some(wait))
                    } else {
                        inner
                            .recv_lane_zero_copy(Some(wait))
                            .map(|b| b.map(|(lane, leased)| (lane, leased.into_inner())))
                    }
                });
                match got {
                    Ok(Some((_, batch))) => return Ok(Some(batch.to_pyarrow(py)?.unbind())),
                    Ok(None) => return Ok(None),
                    Err(BatchFanInError::Timeout) => {
                        py.check_signals()?;
                        shared.closing()?;
                        if past(deadline) {
                            return Err(ring_err(ArrowRingError::Timeout));
                        }
                    }
                    Err(e) => return Err(fan_in_err(e)),
                }
            }
        })
    }
}

#[pymethods]
impl Consumer {
    #[new]
    #[pyo3(signature = (name, *, dir=None, from_=None, as_=None, copy=false))]
    fn new(
        py: Python<'_>,
        name: &str,
        dir: Option<PathBuf>,
        from_: Option<&str>,
        as_: Option<String>,
        copy: bool,
    ) -> PyResult<Self> {
        check_name(name)?;
        let opts = options(dir, as_, from_)?;
        // Opening may wait for a ring being created (up to 2 s).
        let inner = py
            .detach(|| match BatchFanIn::open(name, &opts) {
                Err(ArrowRingError::Open(OpenError::NotFound { .. })) => {
                    match BatchFanIn::create(name, &opts) {
                        Err(ArrowRingError::Open(OpenError::AlreadyExists { .. })) => {
                            BatchFanIn::open(name, &opts)
                        }
                        other => other,
                    }
                }
                other => other,
            })
            .map_err(ring_err)?;
        Ok(Self {
            shared: Shared::new(inner, "consumer"),
            copy,
            ended: AtomicBool::new(false),
        })
    }

    /// The next batch, waiting at most `timeout` seconds (`None`: as long
    /// as it takes); `None` at the end of the stream (a later call waits
    /// for the next producer). Raises `TimeoutError` at the deadline,
    /// `PeerGone` after the last batch of a producer that died,
    /// `ProducerFailed` after one that gave up, `Closed` when `close()` is
    /// called meanwhile.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let deadline = deadline(timeout)?;
        self.recv_until(py, deadline)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if self.ended.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let got = self.recv_until(py, None)?;
        if got.is_none() {
            self.ended.store(true, Ordering::Relaxed);
        }
        Ok(got)
    }

    /// The stream's schema (`pyarrow.Schema`), once known.
    #[getter]
    fn schema(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let schema: Option<SchemaRef> =
            self.shared.with(py, |inner| Ok(inner.schema().cloned()))?;
        schema
            .map(|s| Ok(s.as_ref().to_pyarrow(py)?.unbind()))
            .transpose()
    }

    /// Releases the batches Python no longer holds (oldest first, up to the
    /// first one still held) and returns how many received batches stay
    /// unreleased: 0 when Python holds none.
    fn outstanding(&self, py: Python<'_>) -> PyResult<usize> {
        self.shared.with(py, |inner| Ok(inner.release_dropped()))
    }

    /// The addresses `(start, end)` of the mappings of the stream's lanes in
    /// this process: a zero-copy batch's buffers lie inside one of them.
    fn mapped_ranges(&self, py: Python<'_>) -> PyResult<Vec<(usize, usize)>> {
        self.shared.with(py, |inner| {
            Ok(inner
                .mapped_ranges()
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect())
        })
    }

    /// Detaches from the ring (a `recv` waiting in another thread raises
    /// `Closed`). Batches Python still holds keep the mapping alive until
    /// they are dropped, and they and everything received after the oldest
    /// of them stay unreleased: the next consumer of this name receives
    /// them again.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        drop(self.shared.take(py)?);
        Ok(())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.drop_with(drop);
    }
}

/// A producer's handle: attached, or (another producer holds the ring) to
/// join the stream on a lane of its own once the first batch gives the
/// schema.
enum Sender {
    Attached(Box<BatchProducer>),
    Joining {
        name: String,
        opts: ArrowRingOptions,
    },
}

impl Sender {
    /// The producer, joining with `schema` if not attached yet.
    fn producer(&mut self, py: Python<'_>, schema: &SchemaRef) -> PyResult<&mut BatchProducer> {
        if let Sender::Joining { name, opts } = self {
            let tx = py
                .detach(|| BatchProducer::join(name, schema.clone(), opts))
                .map_err(ring_err)?;
            *self = Sender::Attached(Box::new(tx));
        }
        match self {
            Sender::Attached(tx) => Ok(tx),
            Sender::Joining { .. } => unreachable!("joined above"),
        }
    }
}

/// Sends Arrow data into a ring.
///
/// `Producer(name, *, dir=None)` attaches to ring `name` as its producer,
/// creating it if it does not exist; when another producer holds it, this
/// one joins the stream on a lane of its own at its first batch (a stream's
/// producers send one schema). `send` takes any object that implements the
/// Arrow PyCapsule interface and returns once its batches are in the ring.
/// `close()` (or leaving a `with` block normally) ends the stream cleanly;
/// leaving it by an exception, or dropping the producer unclosed, ends it
/// failed or abandoned: consumers receive every batch sent, then
/// `ProducerFailed` (with the exception as the reason) or `PeerGone`.
#[pyclass(module = "laminar_ring", frozen)]
struct Producer {
    shared: Shared<Sender>,
}

impl Producer {
    /// Sends one batch and waits until it is in the ring: for room, and
    /// while the consumer is gone and its unreleased batches leave none,
    /// for a new consumer (as `laminar-ring produce` does), in steps with
    /// the GIL released, until `deadline`. A batch larger than the ring's
    /// message area goes in halves, as `produce` sends it.
    fn send_batch(
        &self,
        py: Python<'_>,
        tx: &mut BatchProducer,
        batch: &RecordBatch,
        deadline: Option<Instant>,
    ) -> PyResult<()> {
        loop {
            let wait = step(deadline);
            match py.detach(|| tx.send_timeout(batch, wait)) {
                Ok(()) => return self.flush(py, tx, deadline),
                Err(ArrowRingError::BatchTooLarge { .. }) if batch.num_rows() > 1 => {
                    let half = batch.num_rows() / 2;
                    self.send_batch(py, tx, &batch.slice(0, half), deadline)?;
                    let rest = batch.slice(half, batch.num_rows() - half);
                    return self.send_batch(py, tx, &rest, deadline);
                }
                Err(ArrowRingError::Timeout) => {}
                Err(ArrowRingError::ConsumerGone) => py.detach(|| std::thread::sleep(wait)),
                Err(e) => return Err(ring_err(e)),
            }
            self.wait_on(py, deadline)?;
        }
    }

    /// Waits until what is pending is in the ring, as `send_batch` does.
    fn flush(
        &self,
        py: Python<'_>,
        tx: &mut BatchProducer,
        deadline: Option<Instant>,
    ) -> PyResult<()> {
        loop {
            let wait = step(deadline);
            match py.detach(|| tx.flush(wait)) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(ArrowRingError::ConsumerGone) => py.detach(|| std::thread::sleep(wait)),
                Err(e) => return Err(ring_err(e)),
            }
            self.wait_on(py, deadline)?;
        }
    }

    /// Between two steps of a wait: signals, `close()` from another thread,
    /// the deadline.
    fn wait_on(&self, py: Python<'_>, deadline: Option<Instant>) -> PyResult<()> {
        py.check_signals()?;
        self.shared.closing()?;
        if past(deadline) {
            return Err(ring_err(ArrowRingError::Timeout));
        }
        Ok(())
    }
}

#[pymethods]
impl Producer {
    #[new]
    #[pyo3(signature = (name, *, dir=None))]
    fn new(py: Python<'_>, name: &str, dir: Option<PathBuf>) -> PyResult<Self> {
        check_name(name)?;
        let opts = options(dir, None, None)?;
        let attached = py.detach(|| match BatchProducer::open(name, &opts) {
            Err(ArrowRingError::Open(OpenError::NotFound { .. })) => {
                match BatchProducer::create(name, &opts) {
                    Err(ArrowRingError::Open(OpenError::AlreadyExists { .. })) => {
                        BatchProducer::open(name, &opts)
                    }
                    other => other,
                }
            }
            other => other,
        });
        let sender = match attached {
            Ok(tx) => Sender::Attached(Box::new(tx)),
            Err(ArrowRingError::Open(OpenError::RoleTaken { .. })) => Sender::Joining {
                name: name.to_owned(),
                opts,
            },
            Err(e) => return Err(ring_err(e)),
        };
        Ok(Self {
            shared: Shared::new(sender, "producer"),
        })
    }

    /// Sends `data`: a record batch (`__arrow_c_array__`: a
    /// `pyarrow.RecordBatch`, a nanoarrow array of a struct) or a stream of
    /// them (`__arrow_c_stream__`: a `pyarrow.Table` or `RecordBatchReader`,
    /// a polars `DataFrame`, a DuckDB result). Returns the number of batches
    /// sent, once they are in the ring.
    ///
    /// Waits while the ring is full, and while its consumer is gone and
    /// what it left unreleased leaves no room (a new consumer of the same
    /// name resumes there), at most `timeout` seconds in all (`None`: as
    /// long as it takes); then raises `TimeoutError`. A batch that could
    /// not go in whole by then is not in the ring; the ones before it are.
    #[pyo3(signature = (data, timeout=None))]
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<u64> {
        let deadline = deadline(timeout)?;
        if data.hasattr("__arrow_c_array__")? {
            let batch = RecordBatch::from_pyarrow_bound(data)?;
            self.shared.with(py, |sender| {
                let tx = sender.producer(py, &batch.schema())?;
                self.send_batch(py, tx, &batch, deadline)
            })?;
            Ok(1)
        } else if data.hasattr("__arrow_c_stream__")? {
            self.send_stream_until(py, data, deadline)
        } else {
            Err(PyTypeError::new_err(format!(
                "send takes Arrow data (an object with __arrow_c_array__ or \
                 __arrow_c_stream__), not {}",
                data.get_type().name()?
            )))
        }
    }

    /// Sends every batch of `reader` (any object with
    /// `__arrow_c_stream__`); returns how many. `timeout` as for `send`.
    /// An exception the stream raises (a generator's, Ctrl-C) comes through
    /// as it is, after the batches before it were sent.
    #[pyo3(signature = (reader, timeout=None))]
    fn send_stream(
        &self,
        py: Python<'_>,
        reader: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let deadline = deadline(timeout)?;
        if !reader.hasattr("__arrow_c_stream__")? {
            return Err(PyTypeError::new_err(format!(
                "send_stream takes an Arrow stream (an object with __arrow_c_stream__), not {}",
                reader.get_type().name()?
            )));
        }
        self.send_stream_until(py, reader, deadline)
    }

    /// The stream's schema (`pyarrow.Schema`), once the first batch went.
    #[getter]
    fn schema(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let schema: Option<SchemaRef> = self.shared.with(py, |sender| {
            Ok(match sender {
                Sender::Attached(tx) => tx.schema().cloned(),
                Sender::Joining { .. } => None,
            })
        })?;
        schema
            .map(|s| Ok(s.as_ref().to_pyarrow(py)?.unbind()))
            .transpose()
    }

    /// Ends the stream cleanly: consumers receive everything, then the end.
    /// Waits, as `send` does, at most `timeout` seconds for what is pending
    /// to go in; at the deadline raises `TimeoutError` and stays open.
    #[pyo3(signature = (timeout=None))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let deadline = deadline(timeout)?;
        let done = self.shared.with(py, |sender| match sender {
            Sender::Attached(tx) => self.flush(py, tx, deadline),
            Sender::Joining { .. } => Ok(()),
        });
        match done {
            Err(e) if e.is_instance_of::<Closed>(py) => return Ok(()),
            r => r?,
        }
        if let Some(Sender::Attached(tx)) = self.shared.take(py)? {
            py.detach(|| tx.close()).map_err(ring_err)?;
        }
        Ok(())
    }

    /// Ends the stream failed, with `reason`: consumers receive everything
    /// sent, then `ProducerFailed` with the reason.
    fn fail(&self, py: Python<'_>, reason: &str) -> PyResult<()> {
        if let Some(Sender::Attached(tx)) = self.shared.take(py)? {
            py.detach(|| tx.fail(reason));
        }
        Ok(())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (exc_type, exc, _tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        if exc_type.is_none() {
            self.close(py, None)?;
        } else {
            let kind = exc_type
                .getattr("__qualname__")
                .and_then(|q| q.extract::<String>())
                .unwrap_or_else(|_| "exception".into());
            let reason = exc.str().map(|s| s.to_string()).unwrap_or_default();
            self.fail(py, &format!("{kind}: {reason}"))?;
        }
        Ok(false)
    }
}

impl Producer {
    /// Sends each batch of `stream` (read through pyarrow, so that what the
    /// stream raises reaches the caller as it is).
    fn send_stream_until(
        &self,
        py: Python<'_>,
        stream: &Bound<'_, PyAny>,
        deadline: Option<Instant>,
    ) -> PyResult<u64> {
        let reader = py
            .import("pyarrow")?
            .getattr("RecordBatchReader")?
            .call_method1("from_stream", (stream,))?;
        let schema = SchemaRef::new(arrow_schema::Schema::from_pyarrow_bound(
            &reader.getattr("schema")?,
        )?);
        // The stream's schema is checked (and, for a producer that joins,
        // given) before its first batch, even if it has none.
        self.shared.with(py, |sender| {
            sender
                .producer(py, &schema)?
                .set_schema(schema.clone())
                .map_err(ring_err)
        })?;
        let mut sent = 0;
        loop {
            let batch = match reader.call_method0("read_next_batch") {
                Ok(b) => b,
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => break,
                Err(e) => return Err(e),
            };
            let batch = RecordBatch::from_pyarrow_bound(&batch)?;
            self.shared.with(py, |sender| {
                let tx = sender.producer(py, &schema)?;
                self.send_batch(py, tx, &batch, deadline)
            })?;
            sent += 1;
        }
        Ok(sent)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Unclosed: the stream ends abandoned (consumers get `PeerGone`),
        // never cleanly; a clean end says the producer finished.
        self.shared.drop_with(|sender| {
            if let Sender::Attached(tx) = sender {
                tx.abandon();
            }
        });
    }
}

/// Creates Arrow ring `name` (`slots` message slots, `arena_bytes` of
/// message space, up to `consumers` subscribers), failing if it exists.
#[pyfunction]
#[pyo3(signature = (name, *, dir=None, slots=None, arena_bytes=None, consumers=None))]
fn create(
    py: Python<'_>,
    name: &str,
    dir: Option<PathBuf>,
    slots: Option<usize>,
    arena_bytes: Option<u64>,
    consumers: Option<u32>,
) -> PyResult<()> {
    check_name(name)?;
    let mut opts = options(dir, None, None)?;
    if let Some(s) = slots {
        opts.slots = s;
    }
    if let Some(a) = arena_bytes {
        opts.arena_bytes = a;
    }
    if let Some(c) = consumers {
        opts.segment.max_consumers = c;
    }
    py.detach(|| laminar_ring::arrow::create(name, &opts))
        .map_err(ring_err)
}

/// `dir`, else `$LAMINAR_RING_DIR` when set, else `/dev/shm`, as the
/// command chooses.
fn dir_or_default(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(shm::ring_dir)
}

fn segment_in(dir: &std::path::Path) -> SegmentOptions {
    SegmentOptions {
        dir: dir.to_owned(),
        ready_timeout: Duration::ZERO,
        ..SegmentOptions::default()
    }
}

/// The names of the rings in `dir` (a stream's lanes under its name, files
/// that are not rings left out), sorted.
#[pyfunction]
#[pyo3(signature = (*, dir=None))]
fn ls(dir: Option<PathBuf>) -> PyResult<Vec<String>> {
    let dir = dir_or_default(dir);
    let mut names = shm::list_candidates(&dir)
        .map_err(|e| RingError::new_err(format!("listing {}: {e}", dir.display())))?;
    let opts = segment_in(&dir);
    names.retain(|n| {
        shm::parse_lane_name(n).1 == 0
            && !matches!(
                shm::inspect(n, &opts),
                Err(OpenError::BadHeader {
                    source: HeaderError::BadMagic { .. } | HeaderError::TooShort { .. },
                    ..
                })
            )
    });
    names.sort();
    Ok(names)
}

/// Removes ring `name` and its stream's other lanes. A ring a live process
/// holds is refused unless `force=True` (processes attached keep their
/// mapping); a file that is not a ring is always refused.
#[pyfunction]
#[pyo3(signature = (name, *, dir=None, force=false))]
fn rm(name: &str, dir: Option<PathBuf>, force: bool) -> PyResult<()> {
    check_name(name)?;
    let dir = dir_or_default(dir);
    let opts = segment_in(&dir);
    let mut all: Vec<String> = (1..shm::MAX_LANES)
        .map(|lane| shm::lane_name(name, lane))
        .filter(|lane| dir.join(lane).is_file())
        .collect();
    all.reverse();
    all.push(name.to_owned());
    for ring in &all {
        match shm::inspect(ring, &opts) {
            Ok(_) => {}
            Err(
                e @ OpenError::BadHeader {
                    source: HeaderError::BadMagic { .. } | HeaderError::TooShort { .. },
                    ..
                },
            ) => return Err(RingError::new_err(format!("not a ring: {e}"))),
            Err(e @ OpenError::NotFound { .. }) => return Err(open_err(e)),
            Err(e) if !force => {
                return Err(RingError::new_err(format!("{e} (force=True removes it)")));
            }
            Err(_) => {}
        }
        let removed = match force {
            true => shm::remove_in(ring, &dir),
            false => shm::remove_unused(ring, &dir),
        };
        removed.map_err(|e| match e {
            OpenError::InUse { .. } => {
                RingError::new_err(format!("{e} (force=True removes it anyway)"))
            }
            e => open_err(e),
        })?;
    }
    Ok(())
}

/// A side's state, as `laminar-ring info --json` names it: `attached`
/// while a live process holds it, `dead` when its holder died attached.
fn state_name(r: &RoleInfo) -> String {
    match (r.alive, r.state) {
        (true, _) => "attached".into(),
        (false, RoleState::Attached) => "dead".into(),
        (false, RoleState::Unknown(v)) => format!("unknown ({v})"),
        (false, other) => format!("{other:?}").to_lowercase(),
    }
}

fn role<'py>(py: Python<'py>, r: &RoleInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("state", state_name(r))?;
    d.set_item("alive", r.alive)?;
    d.set_item(
        "pid",
        r.pid.filter(|_| r.alive || r.state == RoleState::Attached),
    )?;
    d.set_item("waiting", r.waiting_since.is_some())?;
    Ok(d)
}

/// What `laminar-ring info --json` tells of ring `name`, as a dict with the
/// same keys (less the times, `waiting_s` and `created`, and a stream's
/// `lanes`): its layout, positions, producer, consumer and subscribers.
#[pyfunction]
#[pyo3(signature = (name, *, dir=None))]
fn info<'py>(py: Python<'py>, name: &str, dir: Option<PathBuf>) -> PyResult<Bound<'py, PyDict>> {
    let opts = options(dir, None, None)?;
    let i = shm::inspect(name, &opts.segment).map_err(open_err)?;
    let l = &i.layout;
    let d = PyDict::new(py);
    d.set_item("name", name)?;
    d.set_item("status", "ok")?;
    d.set_item("path", i.path.display().to_string())?;
    d.set_item("layout_version", shm::header::LAYOUT_VERSION)?;
    d.set_item(
        "kind",
        match l.kind {
            RingKind::Typed => "typed",
            RingKind::Arrow => "arrow",
        },
    )?;
    d.set_item("temporary", l.temporary)?;
    d.set_item("capacity", l.capacity)?;
    d.set_item("slot_size", l.slot_size)?;
    d.set_item("slots_used", i.lag())?;
    d.set_item("arena_bytes", l.arena_len)?;
    d.set_item("arena_used", i.arena_used())?;
    d.set_item("arena_head", i.arena_head)?;
    d.set_item("arena_released", i.arena_released)?;
    d.set_item("write_seq", i.write_seq)?;
    d.set_item("read_seq", i.read_seq)?;
    d.set_item("lag", i.lag())?;
    d.set_item("ends_pending", i.ends_pending)?;
    let producer = role(py, &i.producer)?;
    producer.set_item("sessions", i.producer_sessions)?;
    producer.set_item("failure", i.producer_failure.clone())?;
    d.set_item("producer", producer)?;
    d.set_item("consumer", role(py, &i.consumer)?)?;
    d.set_item("max_consumers", l.max_consumers)?;
    let policy = PyDict::new(py);
    match l.policy {
        Policy::Block => policy.set_item("kind", "block")?,
        Policy::Lag { bound, grace } => {
            policy.set_item("kind", "lag")?;
            policy.set_item("bound", bound)?;
            policy.set_item("grace_s", grace.as_secs_f64())?;
        }
    }
    d.set_item("policy", policy)?;
    let subs = PyList::empty(py);
    for s in &i.subscribers {
        let sd = role(py, &s.role)?;
        sd.set_item("name", &s.name)?;
        sd.set_item("cursor", s.cursor)?;
        sd.set_item("read_seq", s.read_seq)?;
        sd.set_item("lag", s.lag(&i))?;
        sd.set_item("arena_lag", s.arena_lag(&i))?;
        sd.set_item("arena_released", s.arena_released)?;
        sd.set_item("ends_pending", s.ends_pending)?;
        sd.set_item("dropped", s.dropped)?;
        subs.append(sd)?;
    }
    d.set_item("subscribers", subs)?;
    d.set_item("total_bytes", l.total_len)?;
    Ok(d)
}

#[pymodule]
fn _laminar_ring(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Consumer>()?;
    m.add_class::<Producer>()?;
    m.add_function(wrap_pyfunction!(create, m)?)?;
    m.add_function(wrap_pyfunction!(ls, m)?)?;
    m.add_function(wrap_pyfunction!(rm, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add("RingError", py.get_type::<RingError>())?;
    m.add("PeerGone", py.get_type::<PeerGone>())?;
    m.add("ProducerFailed", py.get_type::<ProducerFailed>())?;
    m.add("ConsumerGone", py.get_type::<ConsumerGone>())?;
    m.add("SchemaMismatch", py.get_type::<SchemaMismatch>())?;
    m.add("Closed", py.get_type::<Closed>())?;
    Ok(())
}
