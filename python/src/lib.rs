//! Python ends of laminar-ring's Arrow rings (`import laminar_ring`).
//!
//! A [`Consumer`] receives `pyarrow.RecordBatch`es; by default their buffers
//! point into the ring's shared mapping, and the ring's lease on them is
//! released when Python drops the last reference (the Arrow C data
//! interface's release callback drops the Rust buffers that hold it). A
//! [`Producer`] sends any object that implements the Arrow PyCapsule
//! interface (`__arrow_c_array__` or `__arrow_c_stream__`: pyarrow, polars,
//! DuckDB, nanoarrow, ...). The bridge is arrow-rs's own `arrow-pyarrow`,
//! the version of the arrow crates the ring is built on.
//!
//! Blocking calls release the GIL and wait in steps of at most 100 ms,
//! checking for signals between steps, so Ctrl-C interrupts them.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_array::ffi_stream::RecordBatchStreamReader;
use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchConsumer, BatchProducer};
use laminar_ring::shm::{
    self, OpenError, Policy, RingKind, RoleInfo, RoleState, SegmentOptions, Start,
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
        _ => RingError::new_err(m),
    }
}

fn open_err(e: OpenError) -> PyErr {
    RingError::new_err(e.to_string())
}

fn closed(what: &str) -> PyErr {
    Closed::new_err(format!("the {what} is closed"))
}

/// Ring options from the keyword arguments shared by every call.
fn options(
    dir: Option<PathBuf>,
    subscriber: Option<String>,
    from: Option<&str>,
) -> PyResult<ArrowRingOptions> {
    let mut opts = ArrowRingOptions::default();
    if let Some(dir) = dir {
        opts.segment.dir = dir;
    }
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

/// Opens ring `name` with `open`, or creates it with `create` when it does
/// not exist yet (and opens it after all if another process created it in
/// between).
fn open_or_create<T>(
    name: &str,
    opts: &ArrowRingOptions,
    open: impl Fn(&str, &ArrowRingOptions) -> Result<T, ArrowRingError>,
    create: impl Fn(&str, &ArrowRingOptions) -> Result<T, ArrowRingError>,
) -> Result<T, ArrowRingError> {
    match open(name, opts) {
        Err(ArrowRingError::Open(OpenError::NotFound { .. })) => match create(name, opts) {
            Err(ArrowRingError::Open(OpenError::AlreadyExists { .. })) => open(name, opts),
            other => other,
        },
        other => other,
    }
}

/// The deadline `timeout` seconds from now (`None`: no deadline).
fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => {
            Ok(Instant::now().checked_add(Duration::from_secs_f64(t)))
        }
        Some(t) => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, not {t}"
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

/// Receives `pyarrow.RecordBatch`es from an Arrow ring.
///
/// `Consumer(name, *, dir=None, from_="earliest", as_=None, copy=False)`
/// attaches to ring `name` (creating it if it does not exist) as the
/// subscriber `as_` (default: the ring's default subscriber). A new
/// subscription starts at the oldest batch the ring holds (`from_="earliest"`)
/// or at the next one published (`"latest"`); an existing one resumes at its
/// first unreleased batch.
///
/// By default a received batch's buffers lie in the shared mapping, and the
/// ring holds its space until Python drops the batch (and every array
/// taken from it); leases are released in order, so a batch kept long holds
/// back the ring. `copy=True` copies each batch into process memory instead.
#[pyclass(module = "laminar_ring")]
struct Consumer {
    /// In a mutex only to make the class `Sync`, as Python classes must be:
    /// every method takes `&mut self` and reaches it with `get_mut`.
    inner: Mutex<Option<BatchConsumer>>,
    copy: bool,
}

impl Consumer {
    fn inner(&mut self) -> PyResult<&mut BatchConsumer> {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        inner.as_mut().ok_or_else(|| closed("consumer"))
    }
}

#[pymethods]
impl Consumer {
    #[new]
    #[pyo3(signature = (name, *, dir=None, from_=None, as_=None, copy=false))]
    fn new(
        name: &str,
        dir: Option<PathBuf>,
        from_: Option<&str>,
        as_: Option<String>,
        copy: bool,
    ) -> PyResult<Self> {
        let opts = options(dir, as_, from_)?;
        let inner = open_or_create(name, &opts, BatchConsumer::open, BatchConsumer::create)
            .map_err(ring_err)?;
        Ok(Self {
            inner: Mutex::new(Some(inner)),
            copy,
        })
    }

    /// The next batch, waiting at most `timeout` seconds (`None`: as long
    /// as it takes); `None` at the end of the stream. Raises `TimeoutError`
    /// at the deadline, `PeerGone` after the last batch of a producer that
    /// died, `ProducerFailed` after one that gave up.
    #[pyo3(signature = (timeout=None))]
    fn recv(&mut self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let deadline = deadline(timeout)?;
        let copy = self.copy;
        let inner = self.inner()?;
        loop {
            let wait = step(deadline);
            let got = py.detach(|| {
                if copy {
                    inner.recv_timeout(wait)
                } else {
                    inner
                        .recv_zero_copy_timeout(wait)
                        .map(|b| b.map(|leased| leased.into_inner()))
                }
            });
            match got {
                Ok(Some(batch)) => return Ok(Some(batch.to_pyarrow(py)?.unbind())),
                Ok(None) => return Ok(None),
                Err(ArrowRingError::Timeout) => {
                    py.check_signals()?;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(ring_err(ArrowRingError::Timeout));
                    }
                }
                Err(e) => return Err(ring_err(e)),
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.recv(py, None)
    }

    /// The stream's schema (`pyarrow.Schema`), once known.
    #[getter]
    fn schema(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let inner = self.inner()?;
        inner
            .schema()
            .map(|s| Ok(s.as_ref().to_pyarrow(py)?.unbind()))
            .transpose()
    }

    /// Releases the batches Python no longer holds (oldest first, up to the
    /// first one still held) and returns how many received batches stay
    /// unreleased: 0 when Python holds none.
    fn outstanding(&mut self) -> PyResult<usize> {
        Ok(self.inner()?.release_dropped())
    }

    /// The addresses `(start, end)` of the ring's mapping in this process:
    /// zero-copy buffers lie inside it.
    fn mapped_range(&mut self) -> PyResult<(usize, usize)> {
        let inner = self.inner()?;
        let r = inner.mapped_range();
        Ok((r.start, r.end))
    }

    /// Detaches from the ring. Batches still held keep the mapping alive
    /// until they are dropped; what was not released is received again by
    /// the next consumer of this name.
    fn close(&mut self) {
        *self.inner.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }
}

/// Sends Arrow data into a ring.
///
/// `Producer(name, *, dir=None)` attaches to ring `name` as its producer,
/// creating it if it does not exist (one producer at a time). `send` takes any object that
/// implements the Arrow PyCapsule interface. `close()` (or leaving a `with`
/// block normally) ends the stream cleanly; leaving it by an exception ends
/// it failed, with the exception as the reason, which consumers receive as
/// `ProducerFailed`.
#[pyclass(module = "laminar_ring")]
struct Producer {
    /// As `Consumer::inner`.
    inner: Mutex<Option<BatchProducer>>,
}

impl Producer {
    fn inner(&mut self) -> PyResult<&mut BatchProducer> {
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        inner.as_mut().ok_or_else(|| closed("producer"))
    }

    fn is_closed(&mut self) -> bool {
        self.inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    fn take(&mut self) -> Option<BatchProducer> {
        self.inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Sends one batch, waiting for room (and, while the consumer is gone
    /// and its unreleased batches leave none, for a new consumer, as
    /// `laminar-ring produce` does) in steps, with the GIL released, until
    /// `deadline`.
    fn send_batch(
        &mut self,
        py: Python<'_>,
        batch: &RecordBatch,
        deadline: Option<Instant>,
    ) -> PyResult<()> {
        let inner = self.inner()?;
        loop {
            let wait = step(deadline);
            match py.detach(|| inner.send_timeout(batch, wait)) {
                Ok(()) => return Ok(()),
                Err(ArrowRingError::Timeout) => {}
                Err(ArrowRingError::ConsumerGone) => py.detach(|| std::thread::sleep(wait)),
                Err(e) => return Err(ring_err(e)),
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(ring_err(ArrowRingError::Timeout));
            }
        }
    }

    /// Delivers what is pending, waiting as `send_batch` does.
    fn flush(&mut self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner()?;
        loop {
            match py.detach(|| inner.flush(STEP)) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(ArrowRingError::ConsumerGone) => py.detach(|| std::thread::sleep(STEP)),
                Err(e) => return Err(ring_err(e)),
            }
            py.check_signals()?;
        }
    }
}

#[pymethods]
impl Producer {
    #[new]
    #[pyo3(signature = (name, *, dir=None))]
    fn new(name: &str, dir: Option<PathBuf>) -> PyResult<Self> {
        let opts = options(dir, None, None)?;
        let inner = match BatchProducer::open(name, &opts) {
            Err(ArrowRingError::Open(OpenError::NotFound { .. })) => {
                match BatchProducer::create(name, &opts) {
                    Err(ArrowRingError::Open(OpenError::AlreadyExists { .. })) => {
                        BatchProducer::open(name, &opts)
                    }
                    other => other,
                }
            }
            other => other,
        };
        let inner = match inner {
            Err(ArrowRingError::Open(OpenError::RoleTaken { .. })) => {
                return Err(RingError::new_err(format!(
                    "another producer holds ring {name}"
                )));
            }
            other => other.map_err(ring_err)?,
        };
        Ok(Self {
            inner: Mutex::new(Some(inner)),
        })
    }

    /// Sends `data`: a record batch (`__arrow_c_array__`: a
    /// `pyarrow.RecordBatch`, a nanoarrow array of a struct) or a stream of
    /// them (`__arrow_c_stream__`: a `pyarrow.Table` or `RecordBatchReader`,
    /// a polars `DataFrame`, a DuckDB result). Returns the number of batches
    /// sent.
    ///
    /// Waits while the ring is full, and while its consumer is gone and
    /// what it left unreleased leaves no room (a new consumer of the same
    /// name resumes there), at most `timeout` seconds per batch (`None`: as
    /// long as it takes); raises `TimeoutError` then, the batch not sent.
    #[pyo3(signature = (data, timeout=None))]
    fn send(
        &mut self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        if data.hasattr("__arrow_c_array__")? {
            let batch = RecordBatch::from_pyarrow_bound(data)?;
            self.send_batch(py, &batch, deadline(timeout)?)?;
            Ok(1)
        } else if data.hasattr("__arrow_c_stream__")? {
            self.send_stream(py, data, timeout)
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
    #[pyo3(signature = (reader, timeout=None))]
    fn send_stream(
        &mut self,
        py: Python<'_>,
        reader: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        deadline(timeout)?;
        if !reader.hasattr("__arrow_c_stream__")? {
            return Err(PyTypeError::new_err(format!(
                "send_stream takes an Arrow stream (an object with __arrow_c_stream__), not {}",
                reader.get_type().name()?
            )));
        }
        // Calls `__arrow_c_stream__` once (a DuckDB result streams once).
        let stream = RecordBatchStreamReader::from_pyarrow_bound(reader)?;
        let mut sent = 0;
        for batch in stream {
            let batch =
                batch.map_err(|e| RingError::new_err(format!("reading the stream: {e}")))?;
            self.send_batch(py, &batch, deadline(timeout)?)?;
            sent += 1;
        }
        Ok(sent)
    }

    /// The stream's schema (`pyarrow.Schema`), once the first batch went.
    #[getter]
    fn schema(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let inner = self.inner()?;
        inner
            .schema()
            .map(|s| Ok(s.as_ref().to_pyarrow(py)?.unbind()))
            .transpose()
    }

    /// Ends the stream cleanly: consumers receive everything, then the end
    /// (waiting, as `send` does, until what is pending is delivered).
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.is_closed() {
            return Ok(());
        }
        self.flush(py)?;
        match self.take() {
            Some(inner) => py.detach(|| inner.close()).map_err(ring_err),
            None => Ok(()),
        }
    }

    /// Ends the stream failed, with `reason`: consumers receive everything
    /// sent, then `ProducerFailed` with the reason.
    fn fail(&mut self, reason: &str) {
        if let Some(inner) = self.take() {
            inner.fail(reason);
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (exc_type, exc, _tb))]
    fn __exit__(
        &mut self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        if exc_type.is_none() {
            self.close(py)?;
        } else {
            let reason = exc.str().map(|s| s.to_string()).unwrap_or_default();
            self.fail(&format!("{}: {reason}", exc_type.str()?));
        }
        Ok(false)
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

fn dir_or_default(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| SegmentOptions::default().dir)
}

/// The names of the rings in `dir`.
#[pyfunction]
#[pyo3(signature = (*, dir=None))]
fn ls(dir: Option<PathBuf>) -> PyResult<Vec<String>> {
    let dir = dir_or_default(dir);
    let mut names = shm::list_candidates(&dir)
        .map_err(|e| RingError::new_err(format!("listing {}: {e}", dir.display())))?;
    // A stream's lanes beside lane 0 (`NAME#n`) are listed under its name.
    names.retain(|n| shm::parse_lane_name(n).1 == 0);
    names.sort();
    Ok(names)
}

/// Removes ring `name` (every lane of its stream).
#[pyfunction]
#[pyo3(signature = (name, *, dir=None))]
fn rm(name: &str, dir: Option<PathBuf>) -> PyResult<()> {
    shm::remove_in(name, &dir_or_default(dir)).map_err(open_err)
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
