//! Pinging many targets at once: `ping_many`, built on the library's single ping.
//!
//! A driver task on the runtime starts one ping per target, at most `concurrency` at a
//! time, and sends each outcome down a channel as it completes; the Python iterator
//! (sync or async) takes them from the channel. The pings run at full speed whether or
//! not Python reads: the channel is unbounded, and holds at most one small outcome per
//! target. Dropping or closing the iterator cancels what is still running.

use std::sync::{Arc, Mutex};

use peng3dnet::{PingError, PingReply};
use pyo3::exceptions::{PyStopAsyncIteration, PyValueError};
use pyo3::prelude::*;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::errors::ping_error_value;
use crate::ping::{options, reply_dict, target};
use crate::runtime::{block_on, runtime};

/// One finished ping: the target's index in the input and what came of it.
type Outcome = (usize, Result<PingReply, PingError>);

/// The outcome of one target's ping, as `ping_many` yields it.
#[pyclass(frozen, module = "peng3dnet_rs")]
pub(crate) struct PingResult {
    /// The target exactly as it was given.
    #[pyo3(get)]
    target: Py<PyAny>,
    /// Its position in the input.
    #[pyo3(get)]
    index: usize,
    /// The answer (as `ping_server` returns it), or `None` if the ping failed.
    #[pyo3(get)]
    reply: Option<Py<PyAny>>,
    /// The exception (a `PingError`, not raised), or `None` if the ping succeeded.
    #[pyo3(get)]
    error: Option<Py<PyAny>>,
}

#[pymethods]
impl PingResult {
    /// True if the server answered.
    #[getter]
    fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The reply, or raises the ping's error.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match (&self.reply, &self.error) {
            (Some(reply), _) => Ok(reply.clone_ref(py)),
            (None, Some(error)) => Err(PyErr::from_value(error.bind(py).clone())),
            (None, None) => Ok(py.None()),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let target = self.target.bind(py).repr()?;
        Ok(match &self.error {
            None => format!("PingResult(target={target}, ok=True)"),
            Some(error) => format!(
                "PingResult(target={target}, ok=False, error={})",
                error.bind(py).repr()?
            ),
        })
    }
}

/// Iterator over the outcomes of `ping_many`, in the order they complete. Use it with
/// `for` or `async for`; `close()` (or dropping it) cancels the pings still running.
#[pyclass(frozen, module = "peng3dnet_rs")]
pub(crate) struct PingMany {
    /// The targets as given, to hand back in each result.
    targets: Vec<Py<PyAny>>,
    /// Outcomes as they complete; closed when every ping is done.
    outcomes: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Outcome>>>,
    /// The driver task, aborted on close.
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl PingMany {
    fn result(&self, py: Python<'_>, (index, outcome): Outcome) -> PyResult<PingResult> {
        let (reply, error) = match outcome {
            Ok(reply) => (Some(reply_dict(py, &reply)?), None),
            Err(e) => (None, Some(ping_error_value(py, &e))),
        };
        Ok(PingResult {
            target: self.targets[index].clone_ref(py),
            index,
            reply,
            error,
        })
    }

    fn abort(&self) {
        let driver = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(driver) = driver {
            driver.abort();
        }
    }
}

impl Drop for PingMany {
    fn drop(&mut self) {
        self.abort();
    }
}

#[pymethods]
impl PingMany {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PingResult>> {
        let outcomes = self.outcomes.clone();
        let next = block_on(py, async move { outcomes.lock().await.recv().await })?;
        next.map(|outcome| self.result(py, outcome)).transpose()
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let outcomes = slf.get().outcomes.clone();
        let this = slf.unbind();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let next = outcomes.lock().await.recv().await;
            Python::attach(|py| match next {
                Some(outcome) => this.get().result(py, outcome),
                None => Err(PyStopAsyncIteration::new_err(())),
            })
        })
    }

    /// Cancels the pings still running; the iterator then ends after what already came.
    fn close(&self) {
        self.abort();
    }

    /// How many targets were given.
    #[getter]
    fn total(&self) -> usize {
        self.targets.len()
    }
}

/// Pings many servers, `concurrency` at a time, and yields a `PingResult` for each as
/// it completes (not in input order). `targets` is an iterable of addresses in either
/// form; the other arguments are `ping_server`'s, applied to every target.
#[pyfunction]
#[pyo3(signature = (targets, data=None, timeout=10.0, tls=None, concurrency=64))]
pub(crate) fn ping_many(
    py: Python<'_>,
    targets: &Bound<'_, PyAny>,
    data: Option<&Bound<'_, PyAny>>,
    timeout: f64,
    tls: Option<&Bound<'_, PyAny>>,
    concurrency: usize,
) -> PyResult<PingMany> {
    if concurrency == 0 {
        return Err(PyValueError::new_err("concurrency must be at least 1"));
    }
    let mut given = Vec::new();
    let mut parsed = Vec::new();
    for item in targets.try_iter()? {
        let item = item?;
        parsed.push(target(&item)?);
        given.push(item.unbind());
    }
    let options = Arc::new(options(py, data, timeout, tls)?);
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = runtime().spawn(async move {
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut running = JoinSet::new();
        for (index, target) in parsed.into_iter().enumerate() {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (tx, options) = (tx.clone(), options.clone());
            running.spawn(async move {
                let result = peng3dnet::ping_server(&target, &options).await;
                drop(slot);
                let _ = tx.send((index, result));
            });
            // Collect finished tasks as we go, so the set stays at `concurrency`.
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
    });
    Ok(PingMany {
        targets: given,
        outcomes: Arc::new(tokio::sync::Mutex::new(rx)),
        driver: Mutex::new(Some(driver)),
    })
}
