//! The `dynamic` callable of a `PingServer`, called off the network threads and under a
//! deadline.
//!
//! The library asks its ping data provider for the dynamic data synchronously, on the
//! connection's task. Calling Python there (as this package first did) let one slow or
//! blocked callable stall the runtime's few worker threads, and with them every other
//! connection, new ones' hellos and `stop()`. Here the provider only hands the ping to a
//! small pool of threads of its own ([`THREADS`]), which attach to Python and call the
//! callable, and waits for the answer until the deadline (`callback_timeout`). The wait
//! uses `tokio::task::block_in_place`: the worker's other tasks move to another thread
//! meanwhile, so the network keeps running; the waiting thread holds no GIL. (The
//! library's provider interface is synchronous, and the pong is built where the ping is
//! read: this needs no change to it.)
//!
//! The pool's threads keep their Python thread state while they live, and a thread that
//! finds more pings queued when its call returns calls them too before it lets the GIL go:
//! handing each ping over costs a trivial callable's server about a quarter of its pings
//! per second (16,000 instead of 21,000 on two cores, clients in another process), against
//! half without these two.
//!
//! When the answer does not come in time, or the pool cannot take the ping (all its
//! threads are stuck past their deadlines, or [`QUEUED`] pings already wait), the pong is
//! sent with the static data only and a warning is logged on the `peng3dnet_rs` logger, at
//! most one per [`WARN_EVERY`] per server (with the count of those not logged since). A
//! callable that never returns keeps its thread, which is abandoned, never joined: the pool
//! holds at most [`THREADS`] of them, and `stop()` ([`Callbacks::halt`]) releases every
//! waiting ping at once.
//!
//! The default deadline, 1 s, is well within any client's timeout (ours and the seed's
//! default to 10 s), twenty times what a callable that asks a database or a game loop
//! typically takes, and short enough that a stuck callable costs the clients of the first
//! pings at most a second (later ones are answered at once: see [`State::saturated`]).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use peng3dnet::pong::PingMessage;
use peng3dnet::value::map;
use peng3dnet::{PingRequest, Value};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::convert::{to_py, to_value};

/// Name of the logger that reports failures and late answers of the `dynamic` callable.
const LOGGER: &str = "peng3dnet_rs";

/// Threads of a server that call the callable. Python runs one thread at a time, so more
/// only help callables that wait (I/O, sleeps, locks): eight of those overlap; and a
/// callable that never returns can hold no more than eight threads.
pub(crate) const THREADS: usize = 8;

/// Pings that may wait for a free thread; beyond them a ping gets the static data at once.
const QUEUED: usize = 64;

/// An idle thread of the pool exits after this long without a ping.
const IDLE: Duration = Duration::from_secs(30);

/// At most one warning about late or refused callbacks per server this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Longest deadline kept (a larger `callback_timeout` waits this long).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

thread_local! {
    /// Set on the pool's threads: the blocking calls of the package refuse to run there.
    static CALLBACK_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is one that calls `dynamic` callables.
pub(crate) fn in_callback_thread() -> bool {
    CALLBACK_THREAD.with(Cell::get)
}

/// The callable of one server with its threads; clones share them.
#[derive(Clone)]
pub(crate) struct Callbacks {
    shared: Arc<Shared>,
}

struct Shared {
    /// The `dynamic` callable.
    callable: Py<PyAny>,
    /// How long a ping waits for it.
    timeout: Duration,
    state: Mutex<State>,
    /// Signalled when a ping is queued or the pool closes: wakes an idle thread.
    work: Condvar,
}

#[derive(Default)]
struct State {
    /// Pings waiting for a thread.
    queue: VecDeque<Job>,
    /// Pings whose answer is still awaited (queued or being called), each with what wakes
    /// it (with `state`) when its answer is ready or the server stops: one ping, not all.
    waiting: HashMap<u64, Arc<Condvar>>,
    /// Answers not yet picked up by their ping.
    results: HashMap<u64, Value>,
    /// The calls running now (also those whose ping gave up): id and deadline.
    running: Vec<(u64, Instant)>,
    /// Threads of the pool, and how many of them wait for a ping.
    threads: usize,
    idle: usize,
    next_id: u64,
    /// The server runs: pings are handed to the pool (else answered with the static data).
    accepting: bool,
    /// Counts the stops: a waiting ping gives up when it changes.
    epoch: u64,
    /// The server is gone: idle threads exit.
    closed: bool,
    /// When the last warning was logged, and how many were not logged since.
    warned_at: Option<Instant>,
    suppressed: u64,
}

/// One ping handed to the pool.
struct Job {
    id: u64,
    ping: PingMessage,
    client_id: u64,
    peer: SocketAddr,
    deadline: Instant,
}

/// Why a ping was answered with the static data only.
enum Fallback {
    /// The callable did not answer within the deadline (`started`: it was running).
    Late { started: bool },
    /// The pool could not take the ping.
    Saturated,
}

impl Callbacks {
    /// The pool for `callable`, waiting `timeout` per ping; no thread starts before the
    /// first ping, nor before [`open`](Self::open).
    pub(crate) fn new(callable: Py<PyAny>, timeout: Duration) -> Self {
        Callbacks {
            shared: Arc::new(Shared {
                callable,
                timeout: timeout.min(MAX_TIMEOUT),
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// The server starts: pings are handed to the callable.
    pub(crate) fn open(&self) {
        self.shared.lock().accepting = true;
    }

    /// The server stops: pings waiting for the callable are answered with the static data
    /// now, and later ones at once, until [`open`](Self::open). A call still running is
    /// left to finish on its own.
    pub(crate) fn halt(&self) {
        let mut state = self.shared.lock();
        state.accepting = false;
        state.epoch = state.epoch.wrapping_add(1);
        // Their pings see the new epoch, and forget them.
        state.queue.clear();
        for wake in state.waiting.values() {
            wake.notify_one();
        }
    }

    /// The server is gone: [`halt`](Self::halt), and the idle threads exit.
    pub(crate) fn close(&self) {
        self.halt();
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }

    /// The dynamic data for one ping (the library's provider): the callable's answer, or
    /// an empty map when it fails, is late or cannot be called now.
    pub(crate) fn answer(&self, request: &PingRequest<'_>) -> Value {
        let shared = &self.shared;
        let now = Instant::now();
        let job = Job {
            id: 0,
            ping: request.ping().clone(),
            client_id: request.client_id.0,
            peer: request.peer_addr,
            deadline: now + shared.timeout,
        };
        let (client_id, peer, deadline) = (job.client_id, job.peer, job.deadline);
        let mut state = shared.lock();
        if !state.accepting {
            return map([]);
        }
        if state.saturated(now) {
            let warning = state.warning(now);
            drop(state);
            self.warn(warning, Fallback::Saturated, client_id, peer);
            return map([]);
        }
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        state.queue.push_back(Job { id, ..job });
        let wake = Arc::new(Condvar::new());
        state.waiting.insert(id, Arc::clone(&wake));
        let epoch = state.epoch;
        let spawn = state.queue.len() > state.idle && state.threads < THREADS;
        if spawn {
            state.threads += 1;
        }
        drop(state);
        shared.work.notify_one();
        if spawn {
            let worker = Arc::clone(shared);
            let spawned = std::thread::Builder::new()
                .name("peng3dnet-callback".into())
                .spawn(move || worker.work());
            if spawned.is_err() {
                // No thread: the ping waits for another one, or its deadline.
                shared.lock().threads -= 1;
            }
        }
        // Block this thread only once the runtime has moved its other tasks elsewhere.
        let outcome = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| shared.wait(id, &wake, epoch, deadline))
            }
            Err(_) => shared.wait(id, &wake, epoch, deadline),
            // A runtime that cannot hand its tasks over: take only an answer already there.
            Ok(_) => shared.wait(id, &wake, epoch, now),
        };
        match outcome {
            Outcome::Answered(value) => value,
            Outcome::Stopped => map([]),
            Outcome::Late { started } => {
                let warning = shared.lock().warning(Instant::now());
                self.warn(warning, Fallback::Late { started }, client_id, peer);
                map([])
            }
        }
    }

    /// Logs a fallback if the rate limit lets it through (`warning`: how many were not
    /// logged before it).
    fn warn(&self, warning: Option<u64>, why: Fallback, client_id: u64, peer: SocketAddr) {
        let Some(suppressed) = warning else {
            return;
        };
        let timeout = self.shared.timeout.as_secs_f64();
        let what = match why {
            Fallback::Late { started: true } => {
                format!("did not return within the callback_timeout of {timeout} s")
            }
            Fallback::Late { started: false } => format!(
                "was not called within the callback_timeout of {timeout} s (its {THREADS} threads were busy)"
            ),
            Fallback::Saturated => format!(
                "was not called: its {THREADS} threads are all busy past their deadline, or {QUEUED} pings wait for one"
            ),
        };
        let since = match suppressed {
            0 => String::new(),
            n => format!(", and {n} more pings since the last warning"),
        };
        let message = format!(
            "{what}; answered client {client_id} ({peer}){since} with the static data only \
             (at most one such warning per {} s)",
            WARN_EVERY.as_secs()
        );
        log_warning(Arc::clone(&self.shared), message);
    }
}

/// How a ping's wait ended.
enum Outcome {
    Answered(Value),
    Late { started: bool },
    Stopped,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the answer to ping `id` (woken by `wake`) until `deadline`, or until the
    /// server stops.
    fn wait(&self, id: u64, wake: &Condvar, epoch: u64, deadline: Instant) -> Outcome {
        let mut state = self.lock();
        loop {
            if let Some(value) = state.results.remove(&id) {
                state.waiting.remove(&id);
                return Outcome::Answered(value);
            }
            if state.epoch != epoch {
                state.forget(id);
                return Outcome::Stopped;
            }
            let now = Instant::now();
            if now >= deadline {
                let started = state.forget(id);
                return Outcome::Late { started };
            }
            state = wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// One thread of the pool: calls the callable for queued pings until it is idle for
    /// [`IDLE`] or the pool closes. It keeps its Python thread state for its whole life
    /// (detached while it waits), so that a call only has to take the GIL.
    fn work(self: Arc<Self>) {
        CALLBACK_THREAD.with(|c| c.set(true));
        // None while the interpreter shuts down: serve without Python (static data only).
        if Python::try_attach(|py| py.detach(|| self.serve())).is_none() {
            self.serve();
        }
    }

    fn serve(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                state.running.push((job.id, job.deadline));
                drop(state);
                self.run(job);
                state = self.lock();
                continue;
            }
            if state.closed {
                break;
            }
            state.idle += 1;
            let (next, waited) = self
                .work
                .wait_timeout(state, IDLE)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            state.idle -= 1;
            if waited.timed_out() && state.queue.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }

    /// Calls the callable for `job` (already in `running`), then for the pings queued
    /// meanwhile, taking the GIL once for them all.
    fn run(&self, job: Job) {
        let mut next = Some(job);
        // Holding the GIL while locking `state` cannot deadlock: no thread takes the GIL
        // while it holds `state`.
        let _ = Python::try_attach(|py| {
            while let Some(job) = next.take() {
                let value = call_dynamic(py, &self.callable, &job);
                next = self.finish(job.id, value);
            }
        });
        // Not attached (the interpreter shuts down): no dynamic data.
        while let Some(job) = next.take() {
            next = self.finish(job.id, map([]));
        }
    }

    /// Hands the answer of ping `id` to it, if it still waits; returns the next queued
    /// ping, now running, if there is one.
    fn finish(&self, id: u64, value: Value) -> Option<Job> {
        let mut state = self.lock();
        if let Some(at) = state.running.iter().position(|(running, _)| *running == id) {
            state.running.swap_remove(at);
        }
        if let Some(wake) = state.waiting.get(&id) {
            wake.notify_one();
            state.results.insert(id, value);
        }
        let next = state.queue.pop_front();
        if let Some(job) = &next {
            state.running.push((job.id, job.deadline));
        }
        next
    }
}

impl State {
    /// Whether a ping cannot be handed to the pool: too many wait already, or every thread
    /// is busy with a call past its deadline (a stuck callable: waiting would only make
    /// each client wait the whole deadline for nothing).
    fn saturated(&self, now: Instant) -> bool {
        self.queue.len() >= QUEUED
            || (self.running.len() >= THREADS && self.running.iter().all(|(_, d)| *d <= now))
    }

    /// Gives up on ping `id`; returns whether its call had started.
    fn forget(&mut self, id: u64) -> bool {
        self.waiting.remove(&id);
        let queued = self.queue.len();
        self.queue.retain(|job| job.id != id);
        self.queue.len() == queued
    }

    /// Counts one fallback; `Some(suppressed)` when it is to be logged.
    fn warning(&mut self, now: Instant) -> Option<u64> {
        match self.warned_at {
            Some(at) if now.saturating_duration_since(at) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.warned_at = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Calls the `dynamic` callable for one ping. Never fails: a problem is logged and
/// answered with no dynamic data.
fn call_dynamic(py: Python<'_>, dynamic: &Py<PyAny>, job: &Job) -> Value {
    let attempt = || -> PyResult<Value> {
        let message = to_py(py, job.ping.value())?;
        let result = dynamic.bind(py).call1((message, job.client_id))?;
        if result.is_none() {
            return Ok(map([]));
        }
        if !result.is_instance_of::<PyDict>() {
            let type_name = result.get_type().name()?.to_string();
            return Err(PyTypeError::new_err(format!(
                "the dynamic ping data callable returned {type_name}, not a dict"
            )));
        }
        to_value(&result, "the dynamic ping data")
    };
    attempt().unwrap_or_else(|err| {
        log_failure(py, dynamic, job, err);
        map([])
    })
}

/// Logs a failed `dynamic` call, with its traceback, on the package's logger.
fn log_failure(py: Python<'_>, dynamic: &Py<PyAny>, job: &Job, err: PyErr) {
    let logged = (|| -> PyResult<()> {
        let logger = py.import("logging")?.call_method1("getLogger", (LOGGER,))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", err.clone_ref(py).into_value(py))?;
        logger.call_method(
            "error",
            (
                "dynamic ping data callable %r failed for client %d (%s); answering with the static data only",
                dynamic.bind(py),
                job.client_id,
                job.peer.to_string(),
            ),
            Some(&kwargs),
        )?;
        Ok(())
    })();
    if let Err(logging_failed) = logged {
        // Logging itself failed (a broken handler): print both rather than lose them.
        err.print(py);
        logging_failed.print(py);
    }
}

/// A warning for the logging thread: the server's callable, and what to say about it.
struct Warning {
    shared: Arc<Shared>,
    message: String,
}

/// Hands a warning to the thread that logs them: the network thread that noticed must not
/// wait for the GIL (the late callable may hold it). Dropped if that thread lags behind.
fn log_warning(shared: Arc<Shared>, message: String) {
    static SENDER: OnceLock<Option<SyncSender<Warning>>> = OnceLock::new();
    let sender = SENDER.get_or_init(|| {
        let (sender, receiver) = sync_channel::<Warning>(16);
        std::thread::Builder::new()
            .name("peng3dnet-log".into())
            .spawn(move || {
                for warning in receiver {
                    // None while the interpreter shuts down: nowhere to log.
                    let _ = Python::try_attach(|py| emit_warning(py, &warning));
                }
            })
            .ok()
            .map(|_| sender)
    });
    if let Some(sender) = sender {
        let _ = sender.try_send(Warning { shared, message });
    }
}

/// Logs one warning on the package's logger.
fn emit_warning(py: Python<'_>, warning: &Warning) {
    let logged = (|| -> PyResult<()> {
        let logger = py.import("logging")?.call_method1("getLogger", (LOGGER,))?;
        logger.call_method1(
            "warning",
            (
                "dynamic ping data callable %r %s",
                warning.shared.callable.bind(py),
                warning.message.as_str(),
            ),
        )?;
        Ok(())
    })();
    if let Err(logging_failed) = logged {
        logging_failed.print(py);
    }
}
