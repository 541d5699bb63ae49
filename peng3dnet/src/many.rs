//! Pinging many servers at once: a server browser, a fleet's status page, a cron job over
//! thousands of hosts.
//!
//! [`ping_many`] takes the targets as an iterator ([`ping_many_stream`]: as a stream, read
//! as they come) and yields each target's result as soon as it is known, in completion
//! order, with its index in the input. It pings each target once (with up to
//! [`ManyOptions::tries`] attempts), resolving names concurrently, and keeps within:
//!
//! - a **concurrency** bound ([`ManyOptions::concurrency`]); by default derived from the
//!   open-files limit, which is first raised from its soft value to the hard one
//!   ([`raise_fd_limit`], [`default_concurrency`]);
//! - at most [`FRESH_PINGS`] pings in their first [`FRESH_HOLD`] at once, so that on a
//!   fast network, where the CPU is what limits, few connections are set up together
//!   (which is faster), while slow and silent targets still wait side by side;
//! - a **rate** of new connections per second ([`ManyOptions::rate`]);
//! - **politeness** per address: never two pings of one address at once, and at least
//!   [`ManyOptions::spacing`] between the starts of two ([`Limiter`]);
//! - a per-attempt time-out ([`PingOptions::timeout`](crate::ping::PingOptions)), counted
//!   from the moment the target's turn comes, not from when it was queued;
//! - a total **deadline** ([`ManyOptions::deadline`]): targets still running then fail
//!   with a time-out, targets not yet started are not pinged;
//! - **cancellation**: dropping the [`PingMany`] stream, or cancelling
//!   [`ManyOptions::cancel`], stops everything at once.
//!
//! A shortage of local resources (too many open files, no buffer space) is backpressure,
//! never a target's failure: the attempt waits and is made again, without counting as a
//! try.
//!
//! Where the results are read matters when there are thousands: read in a task of the
//! runtime (`tokio::spawn`), each result wakes a task; read in the thread of `block_on`
//! (the body of `#[tokio::main]`), which sleeps between two results, each wakes that
//! thread. With 10,000 loopback targets on two cores that was 11,000 context switches
//! against 3,000, and about a tenth more CPU.
//!
//! ```no_run
//! # async fn f() {
//! use peng3dnet::many::{ping_many, ManyOptions};
//!
//! let targets = ["alpha.example:8080", "beta.example", "[::1]:9000"];
//! let mut results = ping_many(targets, ManyOptions::default());
//! while let Some(done) = results.next().await {
//!     match done.result {
//!         Ok(reply) => println!("{}: {:?}", done.target, reply.delay),
//!         Err(e) => println!("{}: {e}", done.target),
//!     }
//! }
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::error::{ConnectionError, Phase};
use crate::ping::{one_shot, PingError, PingOptions, PingReply, Shot};
use crate::target::{Target, ToTarget};

/// File descriptors kept free for everything that is not a ping connection (the runtime,
/// standard streams, name lookups, files the caller has open).
const FD_RESERVE: u64 = 64;

/// Upper bound of the default concurrency, however high the open-files limit.
pub const MAX_DEFAULT_CONCURRENCY: usize = 2048;

/// Pings in their first [`FRESH_HOLD`] at once, at most (see [`Limiter`]).
pub const FRESH_PINGS: usize = 128;

/// How long a ping counts among the [`FRESH_PINGS`].
pub const FRESH_HOLD: Duration = Duration::from_millis(20);

/// Raises the soft limit of open files (`RLIMIT_NOFILE`) to the hard limit, as fping and
/// most servers do at start, and returns the limit now in force (`None` where there is no
/// such limit, as on Windows, or it cannot be read).
///
/// ```
/// let limit = peng3dnet::many::raise_fd_limit();
/// # #[cfg(unix)]
/// assert!(limit.is_some_and(|n| n > 0));
/// ```
pub fn raise_fd_limit() -> Option<u64> {
    // The server raises it the same way at start (crate::fdlimit).
    crate::fdlimit::raise().map(|n| n as u64)
}

/// The default number of targets pinged at once: three quarters of the open-files limit
/// (after [`raise_fd_limit`]) less a reserve of 64, between 1 and
/// [`MAX_DEFAULT_CONCURRENCY`] (720 under a limit of 1,024). A ping holds one descriptor
/// while it runs (a target that never answers holds it until its time-out); the quarter
/// left is room for the second and later attempts of a Happy Eyeballs connect. Should the
/// descriptors still run out, the connect waits and is made again: backpressure, never a
/// target's failure.
///
/// ```
/// let n = peng3dnet::many::default_concurrency();
/// assert!((1..=peng3dnet::many::MAX_DEFAULT_CONCURRENCY).contains(&n));
/// ```
pub fn default_concurrency() -> usize {
    concurrency_for(raise_fd_limit())
}

fn concurrency_for(fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(n) => {
            let n = n.saturating_sub(FD_RESERVE) / 4 * 3;
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .clamp(1, MAX_DEFAULT_CONCURRENCY)
        }
        None => 256,
    }
}

/// How to ping many targets. Start from the default and set what you need.
///
/// ```
/// use std::time::Duration;
/// use peng3dnet::many::ManyOptions;
///
/// let mut options = ManyOptions::default();
/// options.ping.timeout = Duration::from_secs(2); // per attempt
/// options.tries = 3;                             // as mcstatus' tries
/// options.deadline = Some(Duration::from_secs(30));
/// options.rate = Some(500.0);                    // new connections per second
/// ```
#[derive(Debug, Clone)]
pub struct ManyOptions {
    /// Options of each ping; its `timeout` is the time allowed for each attempt
    /// (resolving, connecting, hello and pong).
    pub ping: PingOptions,
    /// Targets pinged at once; `None`: [`default_concurrency`].
    pub concurrency: Option<usize>,
    /// Attempts per target (at least 1): a target that fails is tried again, up to this
    /// many times in all (an unresolvable name is not). Default 1.
    pub tries: u32,
    /// Time allowed for the whole run; `None`: no limit.
    pub deadline: Option<Duration>,
    /// New connections per second at most, over all targets; `None`: no cap.
    pub rate: Option<f64>,
    /// Least time between the starts of two pings of one address (default 50 ms).
    pub spacing: Duration,
    /// Cancelled: stop at once (as dropping the stream does).
    pub cancel: CancellationToken,
}

impl Default for ManyOptions {
    fn default() -> Self {
        ManyOptions {
            ping: PingOptions::default(),
            concurrency: None,
            tries: 1,
            deadline: None,
            rate: None,
            spacing: Duration::from_millis(50),
            cancel: CancellationToken::new(),
        }
    }
}

/// One target's result.
#[derive(Debug)]
pub struct Pinged<T> {
    /// Position of the target in the input (0 for the first).
    pub index: usize,
    /// The target as given.
    pub target: T,
    /// The reply of the last attempt, or its error.
    pub result: Result<PingReply, PingError>,
    /// Attempts made (failed ones for lack of local resources not counted).
    pub tries: u32,
}

/// The results of [`ping_many`], a [`Stream`] in completion order (also readable without
/// `StreamExt` through [`PingMany::next`]). Dropping it stops the pings still running.
pub struct PingMany<T> {
    inner: Run<T>,
}

/// A run of [`ping_many`]: started, or refused for want of a runtime.
enum Run<T> {
    Started {
        results: mpsc::Receiver<Pinged<T>>,
        driver: JoinHandle<()>,
    },
    /// Created outside a tokio runtime: each target comes out failed with
    /// [`ConnectionError::NoRuntime`], none pinged.
    NoRuntime {
        targets: BoxStream<'static, T>,
        index: usize,
    },
}

impl<T> std::fmt::Debug for PingMany<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let started = matches!(self.inner, Run::Started { .. });
        f.debug_struct("PingMany")
            .field("started", &started)
            .finish_non_exhaustive()
    }
}

impl<T> PingMany<T> {
    /// The next result, or `None` when every target is done (or the run was stopped).
    pub async fn next(&mut self) -> Option<Pinged<T>> {
        std::future::poll_fn(|cx| self.poll_result(cx)).await
    }

    fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<Option<Pinged<T>>> {
        match &mut self.inner {
            Run::Started { results, .. } => results.poll_recv(cx),
            Run::NoRuntime { targets, index } => targets.poll_next_unpin(cx).map(|target| {
                let target = target?;
                *index += 1;
                Some(Pinged {
                    index: *index - 1,
                    target,
                    result: Err(ConnectionError::NoRuntime),
                    tries: 0,
                })
            }),
        }
    }
}

impl<T> Stream for PingMany<T> {
    type Item = Pinged<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_result(cx)
    }
}

impl<T> Drop for PingMany<T> {
    fn drop(&mut self) {
        if let Run::Started { driver, .. } = &self.inner {
            driver.abort();
        }
    }
}

/// Pings every target of `targets` once (see the [module](self) documentation). Called
/// outside a tokio runtime, it pings none: each target comes out with
/// [`ConnectionError::NoRuntime`], as every async entry point of this crate fails.
pub fn ping_many<I>(targets: I, options: ManyOptions) -> PingMany<I::Item>
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    I::Item: ToTarget + Send + Sync + 'static,
{
    ping_many_stream(stream::iter(targets), options)
}

/// [`ping_many`] for targets that arrive over time (lines of a pipe, a discovery
/// service): each is started as soon as it comes and there is room.
pub fn ping_many_stream<S>(targets: S, options: ManyOptions) -> PingMany<S::Item>
where
    S: Stream + Send + 'static,
    S::Item: ToTarget + Send + Sync + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return PingMany {
            inner: Run::NoRuntime {
                targets: targets.boxed(),
                index: 0,
            },
        };
    }
    let concurrency = options
        .concurrency
        .unwrap_or_else(default_concurrency)
        .max(1);
    let limiter = Arc::new(Limiter::new(concurrency, options.rate, options.spacing));
    // A bounded channel: a caller that stops reading holds up the pings, not memory.
    let (tx, rx) = mpsc::channel(concurrency.min(1024));
    let driver = tokio::spawn(drive(targets.boxed(), options, limiter, tx));
    PingMany {
        inner: Run::Started {
            results: rx,
            driver,
        },
    }
}

async fn drive<T>(
    mut input: BoxStream<'static, T>,
    options: ManyOptions,
    limiter: Arc<Limiter>,
    tx: mpsc::Sender<Pinged<T>>,
) where
    T: ToTarget + Send + Sync + 'static,
{
    let deadline = options.deadline.map(crate::deadline::after);
    let options = Arc::new(options);
    let mut running: JoinSet<Pinged<T>> = JoinSet::new();
    let mut index = 0usize;
    let mut more = true;
    let cancel = options.cancel.clone();
    let until_deadline = async {
        match deadline {
            Some(d) => sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    loop {
        if !more && running.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            Some(joined) = running.join_next() => {
                if let Ok(done) = joined {
                    if tx.send(done).await.is_err() {
                        return;
                    }
                }
            }
            // No new target after the deadline; the running ones time out by themselves.
            _ = &mut until_deadline, if more => more = false,
            next = async {
                let permit = limiter.permit().await;
                (permit, input.next().await)
            }, if more => match next {
                (permit, Some(target)) => {
                    let i = index;
                    index += 1;
                    running.spawn(ping_one(i, target, permit, options.clone(), limiter.clone(), deadline));
                }
                (_, None) => more = false,
            },
        }
    }
}

/// Pings one target, with its tries, holding a concurrency permit.
async fn ping_one<T: ToTarget>(
    index: usize,
    target: T,
    _permit: OwnedSemaphorePermit,
    options: Arc<ManyOptions>,
    limiter: Arc<Limiter>,
    deadline: Option<Instant>,
) -> Pinged<T> {
    // Boxed: the task then stays small. A task's future is copied whole when it is
    // spawned and at each change of its stage (running, finished, consumed); the ping's
    // own state is a few kilobytes, and copying it was a tenth of the client's work.
    let attempt = Box::pin(async {
        let mut tries = 0;
        loop {
            tries += 1;
            let result = ping_target(&target, &options.ping, &limiter, deadline).await;
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            match &result {
                Err(ConnectionError::Resolve { .. }) => return (result, tries),
                Err(_) if tries < options.tries.max(1) && !out_of_time => continue,
                _ => return (result, tries),
            }
        }
    });
    let (result, tries) = match deadline {
        None => attempt.await,
        // A backstop: each ping is already bounded by the deadline, and ends with the
        // phase it was in. This fires only for a ping still waiting for its turn (the rate
        // cap, its address's spacing): it never got to connect.
        Some(d) => match timeout_at(d, attempt).await {
            Ok(done) => done,
            Err(_) => (
                Err(ConnectionError::Timeout {
                    phase: Phase::Connecting,
                    after: options.deadline.unwrap_or_default(),
                    target: target
                        .to_target(options.ping.config.client_port)
                        .ok()
                        .map(|t| t.to_string()),
                }),
                1,
            ),
        },
    };
    Pinged {
        index,
        target,
        result,
        tries,
    }
}

/// Resolves `target` and pings it once under `limiter`'s rules, within its timeout and
/// the run's deadline, whichever ends first (so a ping cut short by the deadline says
/// which phase it was in).
async fn ping_target(
    target: &impl ToTarget,
    options: &PingOptions,
    limiter: &Limiter,
    run_deadline: Option<Instant>,
) -> Result<PingReply, PingError> {
    let started = Instant::now();
    let own = crate::deadline::at(started, options.timeout);
    let deadline = run_deadline.map_or(own, |d| d.min(own));
    let target = target.to_target(options.config.client_port)?;
    let addrs = resolve(&target, options, deadline).await?;
    let timeout = deadline.saturating_duration_since(Instant::now());
    limiter
        .ping_within(&addrs, &target.host, options, timeout)
        .await
}

async fn resolve(
    target: &Target,
    options: &PingOptions,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, PingError> {
    match timeout_at(deadline, target.resolve(options.family)).await {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(source)) => Err(PingError::Resolve {
            target: target.to_string(),
            source,
        }),
        Err(_) => Err(PingError::Timeout {
            phase: Phase::Resolving,
            after: options.timeout,
            target: Some(target.to_string()),
        }),
    }
}

/// The rules that keep many pings polite and within this machine's means: a bound on
/// connections at once, a cap on new connections per second, and, per address, one ping at
/// a time at least a spacing apart. Share one between everything that pings (the CLI's
/// `ping` of many targets does).
///
/// Within the bound on connections, at most [`FRESH_PINGS`] pings are in their first
/// [`FRESH_HOLD`] at once. On a fast network a ping is over well within that time, so this
/// keeps the connections being set up together few when the CPU, not the network, is what
/// limits (fewer in flight is then faster: less state to go through per event); a slower
/// ping gives its place up after that time and goes on under the concurrency bound alone,
/// so targets that never answer hold only a connection slot (and a descriptor).
///
/// ```no_run
/// # async fn f() -> Result<(), peng3dnet::PingError> {
/// use std::time::Duration;
/// use peng3dnet::many::Limiter;
/// use peng3dnet::PingOptions;
///
/// let limiter = Limiter::new(100, Some(1000.0), Duration::from_millis(50));
/// let addrs = ["127.0.0.1:8080".parse().unwrap()];
/// let _permit = limiter.permit().await;
/// let reply = limiter.ping_resolved(&addrs, "127.0.0.1", &PingOptions::default()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Limiter {
    permits: Arc<Semaphore>,
    /// Seconds between two new connections, when capped.
    rate_gap: Option<Duration>,
    /// The earliest start of the next new connection.
    next_start: Mutex<Instant>,
    spacing: Duration,
    /// Per address: a lock held while it is pinged, with the time of the last start.
    addrs: Mutex<Gates>,
    /// Places for pings in their first FRESH_HOLD.
    fresh: Semaphore,
}

impl Limiter {
    /// At most `concurrency` permits at once, `rate` new connections per second (`None`: no
    /// cap), and `spacing` between two pings of one address.
    pub fn new(concurrency: usize, rate: Option<f64>, spacing: Duration) -> Limiter {
        let rate_gap = rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok());
        let concurrency = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        Limiter {
            permits: Arc::new(Semaphore::new(concurrency)),
            rate_gap,
            next_start: Mutex::new(Instant::now()),
            spacing,
            addrs: Mutex::new(Gates::default()),
            fresh: Semaphore::new(concurrency.min(FRESH_PINGS)),
        }
    }

    /// Waits for a turn among the connections at once; hold the permit while pinging.
    pub async fn permit(&self) -> OwnedSemaphorePermit {
        match self.permits.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => unreachable!("the limiter's semaphore is never closed"),
        }
    }

    /// Waits for the next slot under the rate cap.
    async fn rate_slot(&self) {
        let Some(gap) = self.rate_gap else { return };
        let at = {
            let mut next = self.next_start.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + gap;
            at
        };
        sleep_until(at).await;
    }

    /// [`ping_addrs`](crate::ping::ping_addrs) holding a place among the fresh pings for
    /// its first [`FRESH_HOLD`] (given up on the ping's own timer), with `timeout` counted
    /// from now.
    async fn fresh_ping(
        &self,
        addrs: &[SocketAddr],
        host: &str,
        options: &PingOptions,
        timeout: Duration,
    ) -> Result<PingReply, PingError> {
        // The semaphore is never closed.
        let fresh = self.fresh.acquire().await.ok();
        let start = Instant::now();
        let shot = Shot {
            start,
            timeout,
            resolve: Duration::ZERO,
        };
        let hold = fresh.map(|place| (place, start + FRESH_HOLD));
        one_shot(addrs, host, options, shot, hold)
            .await
            .map_err(|e| e.with_target(crate::target::name_with_port(host, addrs)))
    }

    /// Pings `addrs` (one target's addresses) once: waits for the rate cap, for the
    /// address's own turn (one ping at a time, `spacing` apart, keyed by its first
    /// address) and for a place among the fresh pings, then pings within
    /// `options.timeout`, counted from then. An attempt that
    /// fails for lack of local resources is made again after a pause, not reported.
    /// The caller holds a [`permit`](Self::permit).
    pub async fn ping_resolved(
        &self,
        addrs: &[SocketAddr],
        host: &str,
        options: &PingOptions,
    ) -> Result<PingReply, PingError> {
        self.ping_within(addrs, host, options, options.timeout)
            .await
    }

    /// [`ping_resolved`](Self::ping_resolved) with `timeout` in place of `options.timeout`.
    async fn ping_within(
        &self,
        addrs: &[SocketAddr],
        host: &str,
        options: &PingOptions,
        timeout: Duration,
    ) -> Result<PingReply, PingError> {
        let Some(key) = addrs.first().copied() else {
            return Err(PingError::State("no address to connect to"));
        };
        let gate = self
            .addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gate(key, self.spacing);
        let mut last = gate.lock().await;
        if let Some(last) = *last {
            sleep_until(last + self.spacing).await;
        }
        let mut backoff = Duration::from_millis(10);
        loop {
            self.rate_slot().await;
            *last = Some(Instant::now());
            match self.fresh_ping(addrs, host, options, timeout).await {
                Err(e) if e.is_local_exhaustion() => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                result => return result,
            }
        }
    }
}

/// A lock per address (held while it is pinged) with the start of its last ping.
type Gate = Arc<tokio::sync::Mutex<Option<Instant>>>;

/// The addresses pinged lately, each with its [`Gate`].
#[derive(Debug, Default)]
struct Gates {
    map: HashMap<SocketAddr, Gate>,
    /// Size of the map at which the next sweep runs.
    sweep_at: usize,
}

impl Gates {
    /// The gate of `addr`, made if there is none. An address is kept while a ping of it
    /// runs or waits, and for `spacing` after its last start, so that a ping of it that
    /// comes later is spaced too; older ones are swept from time to time (when the map has
    /// doubled since the last sweep), so a long stream of targets does not grow the map.
    fn gate(&mut self, addr: SocketAddr, spacing: Duration) -> Gate {
        if self.map.len() >= self.sweep_at {
            let now = Instant::now();
            self.map.retain(|_, gate| {
                Arc::strong_count(gate) > 1
                    || gate
                        .try_lock()
                        .map_or(true, |last| last.is_some_and(|t| t + spacing > now))
            });
            self.sweep_at = (2 * self.map.len()).max(64);
        }
        self.map.entry(addr).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_follows_the_fd_limit() {
        assert_eq!(concurrency_for(Some(1024)), 720);
        assert_eq!(concurrency_for(Some(20_000)), MAX_DEFAULT_CONCURRENCY);
        assert_eq!(concurrency_for(Some(64)), 1);
        assert_eq!(concurrency_for(Some(0)), 1);
        assert_eq!(concurrency_for(Some(1 << 20)), MAX_DEFAULT_CONCURRENCY);
        assert_eq!(concurrency_for(None), 256);
    }
}
