//! A last line of defence around the decoders of other projects.
//!
//! arrow-ipc and parquet validate what they decode, and the readers in
//! `ipc_input.rs` and `parquet_io.rs` check every length against the input
//! first; still, a panic deep inside a decoder on bytes nobody foresaw
//! would turn a malformed file into a crash with a backtrace. [`guarded`]
//! runs such a call under `catch_unwind` and makes a panic an error of the
//! input, and the hook installed by [`install_quiet_hook`] keeps the panic's
//! report off stderr while it does.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};

use arrow_schema::ArrowError;

thread_local! {
    /// Set while this thread runs a [`guarded`] call.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Installs a panic hook that prints nothing for panics inside [`guarded`]
/// and reports every other panic as before (those are our own bugs).
pub fn install_quiet_hook() {
    let report = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if !QUIET.with(Cell::get) {
            report(info);
        }
    }));
}

/// Runs `f`, a call into a decoder that reads untrusted bytes. A panic
/// inside it becomes `Err`, saying that `what` failed on malformed data.
pub fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, ArrowError> {
    let was = QUIET.with(|q| q.replace(true));
    // AssertUnwindSafe: after a panic the caller drops the reader that
    // panicked (every input iterator stops at its first error), so no state
    // that a panic left half-updated is used again.
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        let why = why.lines().next().unwrap_or_default();
        Err(ArrowError::ParseError(format!(
            "malformed data: {what} failed ({why})"
        )))
    })
}

/// An input's batches, each read under [`guarded`]; after the first error,
/// the end.
pub struct Guarded<I> {
    inner: I,
    what: &'static str,
    done: bool,
}

impl<I> Guarded<I> {
    /// `inner`'s batches, `what` naming its decoder in errors.
    pub fn new(inner: I, what: &'static str) -> Self {
        Self {
            inner,
            what,
            done: false,
        }
    }
}

impl<T, I: Iterator<Item = Result<T, ArrowError>>> Iterator for Guarded<I> {
    type Item = Result<T, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let inner = &mut self.inner;
        let r = guarded(self.what, || inner.next().transpose()).transpose();
        self.done = !matches!(r, Some(Ok(_)));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_becomes_an_error_naming_the_decoder() {
        install_quiet_hook();
        let r: Result<(), _> = guarded("the test decoder", || {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            assert!(v.get(i).is_some(), "index {i} out of range");
            Ok(())
        });
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("the test decoder failed (index 3 out of range)"),
            "{e}"
        );
        assert!(guarded("x", || Ok(7)).unwrap() == 7);
        assert!(!QUIET.with(Cell::get), "quiet only inside");
    }
}
