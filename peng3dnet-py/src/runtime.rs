//! The one tokio runtime behind the package, and blocking on it from Python.
//!
//! Everything (the blocking calls, the asyncio ones, the servers) runs on the runtime
//! that `pyo3-async-runtimes` keeps, a multi-threaded tokio runtime started on first use.
//! A blocking call releases the GIL while it waits, and wakes every
//! [`SIGNAL_CHECK`] to let Python handle signals, so Ctrl-C interrupts a long ping.

use std::future::Future;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// How often a blocking wait lets Python run its signal handlers.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The runtime.
pub(crate) fn runtime() -> &'static Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Runs `future` to completion on the runtime, without the GIL. A pending signal's
/// exception (`KeyboardInterrupt`) cancels the future and is raised.
///
/// Refuses to run on one of the runtime's own threads (blocking there could stall the very
/// tasks being waited for) and inside a `PingServer`'s `dynamic` callback (its answer is
/// awaited for `callback_timeout` only, and its threads are few).
pub(crate) fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() || crate::callbacks::in_callback_thread() {
        return Err(PyRuntimeError::new_err(
            "blocking peng3dnet_rs calls cannot be made from a PingServer's dynamic callback \
             (its answer is awaited for callback_timeout only, on a few threads); \
             use a thread of your own",
        ));
    }
    let runtime = runtime();
    let mut future = std::pin::pin!(future);
    loop {
        let step = py.detach(|| {
            runtime.block_on(async { tokio::time::timeout(SIGNAL_CHECK, future.as_mut()).await })
        });
        match step {
            Ok(output) => return Ok(output),
            Err(_still_running) => py.check_signals()?,
        }
    }
}
