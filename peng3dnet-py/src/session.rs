//! `PingSession` and `AsyncPingSession`: one connection, many pings (the seed's
//! `PingableClientMixin` with `setPingData` and `wait_for_pong`), on the library's
//! [`peng3dnet::PingSession`].
//!
//! Both classes share one [`Core`]: the library's session behind an async mutex, so calls
//! from several threads (or asyncio tasks) take turns instead of corrupting it, and a
//! closing signal that makes every waiting call give up at once when `close()` is called.
//!
//! Interrupting a call (Ctrl-C in a blocking one, cancelling an asyncio task) drops its
//! future. Waiting for a pong is cancel-safe in the library (the pong is kept for the next
//! call); sending a ping is not, so the session is taken out of its slot while a ping is
//! being written, and a send that is interrupted leaves the slot empty: the session is then
//! closed, and says so, rather than carrying a half-written frame.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::Poll;
use std::time::Duration;

use peng3dnet::{PingError, PingOptions, PingReply, Value};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tokio::sync::{watch, Mutex};
use tokio::time::{timeout_at, Instant};

use crate::errors::{package_error, ping_error};
use crate::ping::{data_map, duration, options, reply_dict, target};
use crate::runtime::{block_on, runtime};

/// Why a session no longer works.
#[derive(Clone)]
enum Closed {
    /// `close()` was called (or the context manager ended).
    ByUser,
    /// A call was interrupted while it wrote a ping.
    Interrupted,
    /// The connection ended with this error (its text).
    Failed(String),
}

impl Closed {
    fn describe(&self) -> String {
        match self {
            Closed::ByUser => "the session is closed".into(),
            Closed::Interrupted => {
                "the session is closed: a call was interrupted while it sent a ping".into()
            }
            Closed::Failed(why) => format!("the session is closed: {why}"),
        }
    }
}

/// What the mutex guards.
struct State {
    /// The library's session; `None` once closed (or while a ping is being written).
    session: Option<peng3dnet::PingSession>,
    /// A ping was sent and its pong not yet received.
    pending: bool,
    /// The pong of the last ping, once it came: `wait_for_pong` returns it again.
    last: Option<PingReply>,
    /// Why the session is closed, if it is.
    closed: Option<Closed>,
}

/// What a session's calls fail with, before they become Python exceptions (which need the
/// GIL).
enum Failure {
    /// The library's error.
    Ping(PingError),
    /// Calls on a closed session: `SessionClosed`.
    Closed(String),
    /// Waiting for another call on the session took the whole timeout: `PingTimeout`.
    Busy(Duration),
    /// `wait_for_pong` before any ping.
    NoPing,
}

impl Failure {
    fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Ping(e) => ping_error(py, &e),
            Failure::Closed(why) => package_error(py, "SessionClosed", why, |_| Ok(())),
            Failure::Busy(after) => package_error(
                py,
                "PingTimeout",
                format!(
                    "timed out waiting for another call on this session to finish (after {:.1} s)",
                    after.as_secs_f64()
                ),
                |e| {
                    e.setattr("phase", "waiting for the session")?;
                    e.setattr("after", after.as_secs_f64())
                },
            ),
            Failure::NoPing => PyRuntimeError::new_err(
                "wait_for_pong: no ping was sent on this session; call ping() or send_ping() first",
            ),
        }
    }
}

/// One connection shared by the Python objects and the calls in flight.
pub(crate) struct Core {
    state: Mutex<State>,
    /// Set to `true` by `close()`: calls waiting for the mutex or a pong give up.
    closing: watch::Sender<bool>,
    /// The data of later pings (the seed's `setPingData`): outside the async mutex, so
    /// setting it never waits for a call in flight; each ping sends what it holds then.
    data: StdMutex<Value>,
    /// The server's address.
    peer: SocketAddr,
    /// The time a ping is allowed when its call gives none.
    timeout: Duration,
}

impl Drop for Core {
    fn drop(&mut self) {
        // Garbage-collected while open: close politely in the background.
        if let Some(session) = self.state.get_mut().session.take() {
            runtime().spawn(session.close());
        }
    }
}

/// Runs `work` unless `close()` is called first (then `Failure::Closed`).
async fn unless_closing<T>(
    closing: &watch::Sender<bool>,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let mut rx = closing.subscribe();
    let mut work = pin!(work);
    let mut closed = pin!(async move {
        let _ = rx.wait_for(|c| *c).await;
    });
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        match closed.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Failure::Closed(Closed::ByUser.describe()))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

impl Core {
    /// Connects (the whole set-up within `options.timeout`).
    async fn connect(target: String, options: PingOptions) -> Result<Arc<Core>, PingError> {
        let session = peng3dnet::PingSession::connect(target.as_str(), &options).await?;
        Ok(Arc::new(Core {
            peer: session.peer_addr(),
            timeout: options.timeout,
            closing: watch::channel(false).0,
            data: StdMutex::new(options.data),
            state: Mutex::new(State {
                session: Some(session),
                pending: false,
                last: None,
                closed: None,
            }),
        }))
    }

    /// The state, once the calls before this one are done; by `deadline`.
    async fn lock(
        &self,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<tokio::sync::MutexGuard<'_, State>, Failure> {
        match deadline {
            None => Ok(self.state.lock().await),
            Some((at, after)) => timeout_at(at, self.state.lock())
                .await
                .map_err(|_| Failure::Busy(after)),
        }
    }

    /// Sets the data of later pings, at once (even while another call waits).
    fn set_data(&self, data: Value) {
        *self.data.lock().unwrap_or_else(|e| e.into_inner()) = data;
    }

    /// What a ping sends: its own data, else the session's.
    fn ping_data(&self, data: Option<Value>) -> Value {
        data.unwrap_or_else(|| self.data.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Sends a ping (with `data` instead of the session's for this one ping, if given);
    /// returns its sequence number.
    async fn send(&self, data: Option<Value>, timeout: Option<Duration>) -> Result<u64, Failure> {
        unless_closing(&self.closing, async {
            let allowed = timeout.unwrap_or(self.timeout);
            let deadline = peng3dnet_deadline(allowed);
            let mut state = self.lock(Some((deadline, allowed))).await?;
            send_locked(&mut state, self.ping_data(data)).await
        })
        .await
    }

    /// Waits for the pong of the last ping (at once if it came): up to `timeout`, or
    /// without limit.
    async fn wait(&self, timeout: Option<Duration>) -> Result<PingReply, Failure> {
        unless_closing(&self.closing, async {
            let deadline = timeout.map(|t| (peng3dnet_deadline(t), t));
            let mut state = self.lock(deadline).await?;
            let remaining = deadline.map(|(at, _)| at.saturating_duration_since(Instant::now()));
            wait_locked(&mut state, remaining, timeout).await
        })
        .await
    }

    /// Sends a ping and waits for its pong, both within `timeout` (default: the session's).
    async fn ping(
        &self,
        data: Option<Value>,
        timeout: Option<Duration>,
    ) -> Result<PingReply, Failure> {
        unless_closing(&self.closing, async {
            let allowed = timeout.unwrap_or(self.timeout);
            let deadline = peng3dnet_deadline(allowed);
            let mut state = self.lock(Some((deadline, allowed))).await?;
            send_locked(&mut state, self.ping_data(data)).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            wait_locked(&mut state, Some(remaining), Some(allowed)).await
        })
        .await
    }

    /// Closes with `pingcomplete` (idempotent): calls in flight give up first.
    async fn close(&self) {
        self.closing.send_replace(true);
        let mut state = self.state.lock().await;
        if state.closed.is_none() {
            state.closed = Some(Closed::ByUser);
        }
        state.pending = false;
        if let Some(session) = state.session.take() {
            session.close().await;
        }
    }

    /// Whether the session is closed.
    fn is_closed(&self) -> bool {
        if *self.closing.borrow() {
            return true;
        }
        match self.state.try_lock() {
            Ok(state) => state.closed.is_some() || state.session.is_none(),
            // A call holds it: the session was open when that call began.
            Err(_) => false,
        }
    }
}

/// `allowed` from now (saturating: a huge timeout is a year away, not a panic).
fn peng3dnet_deadline(allowed: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(allowed)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// `Failure::Closed` if the session is closed.
fn open(state: &State) -> Result<(), Failure> {
    if let Some(closed) = &state.closed {
        return Err(Failure::Closed(closed.describe()));
    }
    if state.session.is_none() {
        return Err(Failure::Closed(Closed::Interrupted.describe()));
    }
    Ok(())
}

/// Records a fatal error: the session is dropped and later calls say why.
fn fail(state: &mut State, error: PingError) -> Failure {
    state.session = None;
    state.pending = false;
    state.closed = Some(Closed::Failed(error.to_string()));
    Failure::Ping(error)
}

async fn send_locked(state: &mut State, data: Value) -> Result<u64, Failure> {
    open(state)?;
    // Out of its slot while it writes: an interrupted write leaves the slot empty.
    let mut session = state.session.take().expect("checked open");
    session.set_data(data);
    let sent = session.send_ping().await;
    state.session = Some(session);
    match sent {
        Ok(seq) => {
            state.pending = true;
            state.last = None;
            Ok(seq)
        }
        Err(e) => Err(fail(state, e)),
    }
}

/// `remaining`: the time left (`None`: no limit); `allowed`: the timeout to name.
async fn wait_locked(
    state: &mut State,
    remaining: Option<Duration>,
    allowed: Option<Duration>,
) -> Result<PingReply, Failure> {
    if !state.pending {
        if let Some(last) = &state.last {
            return Ok(last.clone());
        }
        open(state)?;
        return Err(Failure::NoPing);
    }
    open(state)?;
    let session = state.session.as_mut().expect("checked open");
    loop {
        // No limit: wait a day at a time (the library's wait is cancel-safe).
        let step = remaining.unwrap_or(Duration::from_secs(24 * 3600));
        match session.wait_for_pong(step).await {
            Ok(reply) => {
                state.pending = false;
                state.last = Some(reply.clone());
                return Ok(reply);
            }
            Err(PingError::Timeout { phase, target, .. }) => {
                if remaining.is_none() {
                    continue;
                }
                // Still open: the ping stays outstanding, its pong may come later.
                return Err(Failure::Ping(PingError::Timeout {
                    phase,
                    after: allowed.unwrap_or(step),
                    target,
                }));
            }
            Err(e) => return Err(fail(state, e)),
        }
    }
}

/// Reads `timeout=None | seconds`.
fn optional_duration(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    timeout.map(|t| duration(t, "timeout")).transpose()
}

/// Reads the optional per-ping `data`.
fn optional_data(data: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Value>> {
    match data {
        Some(d) if !d.is_none() => Ok(Some(data_map(Some(d), "data")?)),
        _ => Ok(None),
    }
}

fn peer_tuple<'py>(py: Python<'py>, peer: SocketAddr) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            peer.ip().to_string().into_pyobject(py)?.into_any(),
            peer.port().into_pyobject(py)?.into_any(),
        ],
    )
}

/// A ping connection that stays open for many pings (the seed's `PingableClientMixin`).
///
/// `PingSession(addr, data=None, timeout=10.0, tls=None)` connects at once (within
/// `timeout`) and raises a `PingError` subclass if it cannot. Then `ping()` as often as
/// needed, or `send_ping()` and later `wait_for_pong()`; `close()` (or the `with` block's
/// end) closes with `pingcomplete`. The GIL is released while a call waits, and Ctrl-C
/// interrupts it. Several threads may share one session: their calls take turns.
#[pyclass(frozen, module = "peng3dnet_rs")]
pub(crate) struct PingSession {
    core: Arc<Core>,
    target: String,
}

#[pymethods]
impl PingSession {
    #[new]
    #[pyo3(signature = (addr, data=None, timeout=10.0, tls=None))]
    fn new(
        py: Python<'_>,
        addr: &Bound<'_, PyAny>,
        data: Option<&Bound<'_, PyAny>>,
        timeout: f64,
        tls: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let target = target(addr)?;
        let options = options(py, data, timeout, tls)?;
        let name = target.clone();
        let core = block_on(py, Core::connect(name, options))?.map_err(|e| ping_error(py, &e))?;
        Ok(PingSession { core, target })
    }

    /// Sets the data sent with later pings (the seed's `setPingData`); `time` and `seq`
    /// are set by the library. Never waits, even while another thread's call does.
    fn set_ping_data(&self, data: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.core.set_data(data_map(data, "data")?);
        Ok(())
    }

    /// Sends a ping and waits for its pong: the server's dict plus `recvtime` and `delay`
    /// of this ping. `data` replaces the session's data for this ping only; `timeout`
    /// (seconds, default the session's) bounds the whole call.
    #[pyo3(signature = (data=None, timeout=None))]
    fn ping(
        &self,
        py: Python<'_>,
        data: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let data = optional_data(data)?;
        let timeout = optional_duration(timeout)?;
        let core = self.core.clone();
        let reply = block_on(py, async move { core.ping(data, timeout).await })?;
        reply_dict(py, &reply.map_err(|f| f.into_py(py))?)
    }

    /// Sends a ping without waiting; returns its sequence number. Collect the pong with
    /// `wait_for_pong()`.
    #[pyo3(signature = (data=None, timeout=None))]
    fn send_ping(
        &self,
        py: Python<'_>,
        data: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let data = optional_data(data)?;
        let timeout = optional_duration(timeout)?;
        let core = self.core.clone();
        block_on(py, async move { core.send(data, timeout).await })?.map_err(|f| f.into_py(py))
    }

    /// Waits up to `timeout` seconds (`None`: without limit; Ctrl-C interrupts) for the
    /// pong of the last ping and returns it; returns at once if it already came, and the
    /// same pong again until the next ping. Raises `PingTimeout` when it does not come in
    /// time (the session stays open).
    #[pyo3(signature = (timeout=None))]
    fn wait_for_pong(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let timeout = optional_duration(timeout)?;
        let core = self.core.clone();
        let reply = block_on(py, async move { core.wait(timeout).await })?;
        reply_dict(py, &reply.map_err(|f| f.into_py(py))?)
    }

    /// Closes the connection with `pingcomplete`; calls waiting in other threads raise
    /// `SessionClosed`. Closing again does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let core = self.core.clone();
        block_on(py, async move { core.close().await })
    }

    /// Whether the session is closed (by `close()`, or by an error that ended the
    /// connection).
    #[getter]
    fn closed(&self) -> bool {
        self.core.is_closed()
    }

    /// The server's address that answered, `(ip, port)`.
    #[getter]
    fn peer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        peer_tuple(py, self.core.peer)
    }

    /// The time allowed for a ping when a call gives none, in seconds.
    #[getter]
    fn timeout(&self) -> f64 {
        self.core.timeout.as_secs_f64()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.core.is_closed() {
            "closed"
        } else {
            "open"
        };
        format!("<PingSession {} ({}) {state}>", self.target, self.core.peer)
    }
}

/// What an `AsyncPingSession` holds before and after it connects.
enum Link {
    /// Not connected yet: the target and options.
    New(Box<(String, PingOptions)>),
    /// `connect()` is running.
    Connecting,
    /// Connected (or closed: the core says).
    Ready(Arc<Core>),
    /// Connecting failed (its text).
    Failed(String),
}

/// `PingSession` for asyncio.
///
/// `AsyncPingSession(addr, data=None, timeout=10.0, tls=None)` does not connect yet:
/// `await session.connect()` (which returns the session) or `async with
/// AsyncPingSession(addr) as session:` does. Its methods return awaitables; cancelling one
/// gives up that call (a pong it waited for is kept for the next). Calls from several
/// tasks take turns.
#[pyclass(frozen, module = "peng3dnet_rs")]
pub(crate) struct AsyncPingSession {
    link: StdMutex<Link>,
    target: String,
}

impl AsyncPingSession {
    fn core(&self, py: Python<'_>) -> PyResult<Arc<Core>> {
        match &*self.link.lock().unwrap_or_else(|e| e.into_inner()) {
            Link::Ready(core) => Ok(core.clone()),
            Link::Failed(why) => Err(package_error(
                py,
                "SessionClosed",
                format!("the session is closed: it could not connect: {why}"),
                |_| Ok(()),
            )),
            Link::New(..) | Link::Connecting => Err(package_error(
                py,
                "SessionClosed",
                "the session is not connected yet: await session.connect() or use async with"
                    .into(),
                |_| Ok(()),
            )),
        }
    }
}

/// Runs a call on the core in asyncio.
fn spawn<'py, T, F>(
    py: Python<'py>,
    work: F,
    finish: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: Send + 'static,
{
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let result = work.await;
        Python::attach(|py| match result {
            Ok(value) => finish(py, value),
            Err(f) => Err(f.into_py(py)),
        })
    })
}

#[pymethods]
impl AsyncPingSession {
    #[new]
    #[pyo3(signature = (addr, data=None, timeout=10.0, tls=None))]
    fn new(
        py: Python<'_>,
        addr: &Bound<'_, PyAny>,
        data: Option<&Bound<'_, PyAny>>,
        timeout: f64,
        tls: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let target = target(addr)?;
        let options = options(py, data, timeout, tls)?;
        Ok(AsyncPingSession {
            link: StdMutex::new(Link::New(Box::new((target.clone(), options)))),
            target,
        })
    }

    /// Connects; the awaitable's result is the session itself.
    fn connect<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.clone().unbind();
        let (target, options) = {
            let mut link = slf.get().link.lock().unwrap_or_else(|e| e.into_inner());
            match std::mem::replace(&mut *link, Link::Connecting) {
                Link::New(args) => *args,
                other => {
                    *link = other;
                    return Err(PyRuntimeError::new_err(
                        "connect(): this AsyncPingSession is already connected or connecting",
                    ));
                }
            }
        };
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let result = Core::connect(target, options).await;
            Python::attach(|py| {
                let session = this.bind(py).get();
                let mut link = session.link.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(core) => {
                        *link = Link::Ready(core);
                        Ok(this.clone_ref(py).into_any())
                    }
                    Err(e) => {
                        *link = Link::Failed(e.to_string());
                        Err(ping_error(py, &e))
                    }
                }
            })
        })
    }

    /// `set_ping_data` of `PingSession`, awaitable.
    fn set_ping_data<'py>(
        &self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = data_map(data, "data")?;
        self.core(py)?.set_data(data);
        pyo3_async_runtimes::tokio::future_into_py(py, async { Ok(()) })
    }

    /// `ping` of `PingSession`, awaitable.
    #[pyo3(signature = (data=None, timeout=None))]
    fn ping<'py>(
        &self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = optional_data(data)?;
        let timeout = optional_duration(timeout)?;
        let core = self.core(py)?;
        spawn(
            py,
            async move { core.ping(data, timeout).await },
            |py, r| reply_dict(py, &r),
        )
    }

    /// `send_ping` of `PingSession`, awaitable.
    #[pyo3(signature = (data=None, timeout=None))]
    fn send_ping<'py>(
        &self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = optional_data(data)?;
        let timeout = optional_duration(timeout)?;
        let core = self.core(py)?;
        spawn(
            py,
            async move { core.send(data, timeout).await },
            |py, seq| Ok(seq.into_pyobject(py)?.into_any().unbind()),
        )
    }

    /// `wait_for_pong` of `PingSession`, awaitable (`None`: without limit).
    #[pyo3(signature = (timeout=None))]
    fn wait_for_pong<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = optional_duration(timeout)?;
        let core = self.core(py)?;
        spawn(py, async move { core.wait(timeout).await }, |py, r| {
            reply_dict(py, &r)
        })
    }

    /// Closes with `pingcomplete` (awaitable; closing again, or before connecting, does
    /// nothing but mark it closed).
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = {
            let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
            match &*link {
                Link::Ready(core) => Some(core.clone()),
                Link::New(..) => {
                    *link = Link::Failed("closed before it connected".into());
                    None
                }
                Link::Connecting | Link::Failed(_) => None,
            }
        };
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            if let Some(core) = core {
                core.close().await;
            }
            Ok(())
        })
    }

    /// Whether the session is closed (or never connected).
    #[getter]
    fn closed(&self) -> bool {
        match &*self.link.lock().unwrap_or_else(|e| e.into_inner()) {
            Link::Ready(core) => core.is_closed(),
            Link::Failed(_) => true,
            Link::New(..) | Link::Connecting => false,
        }
    }

    /// The server's address that answered, `(ip, port)` (`None` before connecting).
    #[getter]
    fn peer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match &*self.link.lock().unwrap_or_else(|e| e.into_inner()) {
            Link::Ready(core) => Ok(Some(peer_tuple(py, core.peer)?)),
            _ => Ok(None),
        }
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        AsyncPingSession::connect(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        let state = match &*self.link.lock().unwrap_or_else(|e| e.into_inner()) {
            Link::New(..) => "not connected".to_string(),
            Link::Connecting => "connecting".to_string(),
            Link::Ready(core) if core.is_closed() => format!("({}) closed", core.peer),
            Link::Ready(core) => format!("({}) open", core.peer),
            Link::Failed(_) => "closed".to_string(),
        };
        format!("<AsyncPingSession {} {state}>", self.target)
    }
}
