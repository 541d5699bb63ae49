//! [`Announcer`]: keeps a server listed on a master, from start to shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::http::MasterUrl;
use super::{announce_to, unlist_at, Announced, Announcement, FetchOptions, MasterError};

/// The shortest wait between two announces, whatever a master asks: a master (or a
/// hostile one) cannot make an announcer hammer it.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The longest wait between two announces, whatever a master asks.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// The longest an unlisting at stop may take.
const UNLIST_TIMEOUT: Duration = Duration::from_secs(5);

/// How an [`Announcer`] announces.
#[derive(Debug, Clone)]
pub struct AnnounceOptions {
    /// Tags to list the server with.
    pub tags: Vec<String>,
    /// The host to list instead of the address the announce comes from (honoured only by
    /// masters that trust the announcer).
    pub host: Option<String>,
    /// Between announces when the master does not say (`reannounce_after_s`); default
    /// 60 s, as the API's. Never less than 1 s.
    pub interval: Duration,
    /// The first wait after a failed announce (default 1 s); each further failure doubles
    /// it, up to [`max_backoff`](Self::max_backoff). A `429` waits as long as its
    /// `Retry-After` says instead (at most an hour).
    pub min_backoff: Duration,
    /// The longest wait between failed announces (default 60 s).
    pub max_backoff: Duration,
    /// How each request is made (timeout, size limit, TLS, source address).
    pub http: FetchOptions,
}

impl Default for AnnounceOptions {
    fn default() -> Self {
        AnnounceOptions {
            tags: Vec::new(),
            host: None,
            interval: Duration::from_secs(60),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            http: FetchOptions::default(),
        }
    }
}

/// Where an [`Announcer`] is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnnounceState {
    /// The first announce is under way.
    Starting,
    /// Listed: the master answered the last announce.
    Listed {
        /// The address the master lists (`host:port`).
        address: String,
        /// Announces answered so far.
        announces: u64,
        /// Until the next announce.
        next_in: Duration,
    },
    /// The last announce failed; it is tried again after a wait.
    Failed {
        /// Why.
        error: Arc<MasterError>,
        /// Failures in a row.
        attempts: u32,
        /// Until the next try.
        retry_in: Duration,
    },
    /// Stopped, and the master has unlisted the server, or did not list it (it said so,
    /// or no announce ever reached it).
    Unlisted,
    /// Stopped without unlisting: the master could not be reached (the error says why),
    /// or the announcer's runtime shut down first. The master drops the server once it
    /// stops answering its pings.
    Stopped {
        /// Why the unlisting failed, when it was tried.
        error: Option<Arc<MasterError>>,
    },
}

impl AnnounceState {
    /// Whether the master lists the server as of the last announce.
    pub fn is_listed(&self) -> bool {
        matches!(self, AnnounceState::Listed { .. })
    }

    /// Whether the announcer has stopped.
    pub fn is_stopped(&self) -> bool {
        matches!(
            self,
            AnnounceState::Unlisted | AnnounceState::Stopped { .. }
        )
    }
}

/// Keeps a server listed on a master: announces at once (`POST /announce`), again every
/// interval the master asks for, retries with a growing backoff while the master cannot
/// be reached or refuses (each failure is logged with `tracing`, never a panic), and
/// unlists (`DELETE /announce`) when stopped: by [`stop`](Self::stop), by dropping it
/// (the unlisting then runs on its own, if the runtime still runs), or, from
/// [`Server::announce`](crate::Server::announce), when the server shuts down.
///
/// ```no_run
/// use peng3dnet::master::{AnnounceOptions, Announcer};
///
/// # async fn demo() -> Result<(), peng3dnet::master::MasterError> {
/// let options = AnnounceOptions { tags: vec!["eu".into()], ..Default::default() };
/// let announcer = Announcer::start("http://master.example.org:8090", 7000, options)?;
/// let address = announcer.listed().await;
/// println!("listed as {address}");
/// // ... serve ...
/// announcer.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Announcer {
    /// Stops the task (which then unlists); cancelled on drop too.
    stop: CancellationToken,
    /// The task, awaited by [`stop`](Self::stop).
    task: Option<JoinHandle<()>>,
    /// The task's state.
    state: watch::Receiver<AnnounceState>,
    /// The master, for logs.
    master: String,
}

impl Announcer {
    /// Starts announcing `port` to the master at `url`, on the current tokio runtime.
    ///
    /// Fails at once, sending nothing, on a bad URL, bad tags or host
    /// ([`Announcement::check`]), port 0, or outside a runtime; every later failure is
    /// retried.
    pub fn start(url: &str, port: u16, options: AnnounceOptions) -> Result<Announcer, MasterError> {
        Self::start_until(url, port, options, CancellationToken::new())
    }

    /// [`start`](Self::start), stopping (and unlisting) when `stop` is cancelled too.
    pub(crate) fn start_until(
        url: &str,
        port: u16,
        options: AnnounceOptions,
        stop: CancellationToken,
    ) -> Result<Announcer, MasterError> {
        let master = MasterUrl::parse(url)?;
        let what = Announcement {
            port,
            host: options.host.clone(),
            tags: options.tags.clone(),
        };
        what.check()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MasterError::NoRuntime)?;
        let (tx, state) = watch::channel(AnnounceState::Starting);
        let shown = url.trim().to_owned();
        let task = runtime.spawn(run(master, what, options, stop.clone(), tx, shown.clone()));
        Ok(Announcer {
            stop,
            task: Some(task),
            state,
            master: shown,
        })
    }

    /// The state now.
    pub fn state(&self) -> AnnounceState {
        self.state.borrow().clone()
    }

    /// A receiver of every change of state (for a health check, or a test that waits for
    /// the listing).
    pub fn subscribe(&self) -> watch::Receiver<AnnounceState> {
        self.state.clone()
    }

    /// Waits until the master lists the server (returns at once if it does), and returns
    /// the address listed. Waits as long as that takes: bound it with a timeout. Returns
    /// an empty string if the announcer stops first.
    pub async fn listed(&self) -> String {
        let mut state = self.state.clone();
        let found = state
            .wait_for(|s| s.is_listed() || s.is_stopped())
            .await
            .map(|s| s.clone());
        match found {
            Ok(AnnounceState::Listed { address, .. }) => address,
            _ => String::new(),
        }
    }

    /// Stops announcing and unlists the server (within a few seconds), then returns the
    /// final state: [`AnnounceState::Unlisted`], or [`AnnounceState::Stopped`] with the
    /// unlisting's error.
    pub async fn stop(mut self) -> AnnounceState {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let state = self.state.borrow().clone();
        if state.is_stopped() {
            state
        } else {
            // The task ended without its last word: its runtime is shutting down.
            AnnounceState::Stopped { error: None }
        }
    }

    /// The master's URL, as given.
    pub fn master(&self) -> &str {
        &self.master
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // The task unlists on its own.
        self.stop.cancel();
    }
}

/// The wait after `attempts` failures in a row: the backoff doubled per failure, with up
/// to a quarter taken off at random (announcers restarted together spread out), or
/// what a `429` asked for; within the options' bounds.
fn backoff(attempts: u32, error: &MasterError, options: &AnnounceOptions) -> Duration {
    let max = options.max_backoff.max(MIN_INTERVAL);
    if let Some(wait) = error.retry_after() {
        return wait.clamp(MIN_INTERVAL, MAX_INTERVAL);
    }
    let base = options.min_backoff.max(Duration::from_millis(10));
    let doubled = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let wait = doubled.min(max);
    wait.saturating_sub(wait.mul_f64(jitter() * 0.25))
}

/// A number in `[0, 1)` that differs from call to call and process to process.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The announcer's task.
async fn run(
    master: MasterUrl,
    what: Announcement,
    options: AnnounceOptions,
    stop: CancellationToken,
    state: watch::Sender<AnnounceState>,
    shown: String,
) {
    let mut attempts = 0u32;
    let mut announces = 0u64;
    // Whether an announce may have reached the master (one that failed before a
    // connection was made cannot have listed anything).
    let mut reached = false;
    let interval = options.interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            result = announce_to(&master, &what, &options.http) => result,
        };
        reached |= !matches!(
            &result,
            Err(MasterError::Connect { .. } | MasterError::Resolve { .. })
        );
        let wait = match result {
            Ok(Announced {
                address,
                reannounce_after,
                ..
            }) => {
                announces += 1;
                let next_in = reannounce_after
                    .unwrap_or(interval)
                    .clamp(MIN_INTERVAL, MAX_INTERVAL);
                if attempts > 0 || announces == 1 {
                    tracing::info!(master = %shown, %address, "listed on the master");
                } else {
                    tracing::debug!(master = %shown, %address, "listing refreshed");
                }
                attempts = 0;
                state.send_replace(AnnounceState::Listed {
                    address,
                    announces,
                    next_in,
                });
                next_in
            }
            Err(error) => {
                attempts = attempts.saturating_add(1);
                let retry_in = backoff(attempts, &error, &options);
                tracing::warn!(
                    master = %shown,
                    kind = error.kind(),
                    attempts,
                    retry_in_s = (retry_in.as_secs_f64() * 1000.0).round() / 1000.0,
                    "announce failed: {error}"
                );
                state.send_replace(AnnounceState::Failed {
                    error: Arc::new(error),
                    attempts,
                    retry_in,
                });
                retry_in
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Unlisted even if no announce was answered, if one may have reached the master.
    if !reached {
        tracing::debug!(master = %shown, "no announce reached the master: nothing to unlist");
        state.send_replace(AnnounceState::Unlisted);
        return;
    }
    let mut http = options.http.clone();
    http.timeout = http.timeout.min(UNLIST_TIMEOUT);
    let last = match unlist_at(&master, &what, &http).await {
        Ok(was_listed) => {
            tracing::info!(master = %shown, was_listed, "unlisted from the master");
            AnnounceState::Unlisted
        }
        Err(error) => {
            tracing::warn!(master = %shown, kind = error.kind(), "unlisting failed: {error}");
            AnnounceState::Stopped {
                error: Some(Arc::new(error)),
            }
        }
    };
    state.send_replace(last);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> MasterError {
        MasterError::Connect {
            master: "m".into(),
            reason: "refused".into(),
        }
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let options = AnnounceOptions {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            ..Default::default()
        };
        for (attempts, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (40, 8)] {
            let wait = backoff(attempts, &io_error(), &options);
            let full = Duration::from_secs(full);
            assert!(
                wait <= full && wait >= full.mul_f64(0.75),
                "{attempts}: {wait:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_within_an_hour() {
        let options = AnnounceOptions::default();
        let refused = |secs| MasterError::Refused {
            master: "m".into(),
            status: 429,
            error: Some("rate_limited".into()),
            message: None,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(backoff(1, &refused(7), &options), Duration::from_secs(7));
        assert_eq!(backoff(1, &refused(0), &options), MIN_INTERVAL);
        assert_eq!(
            backoff(1, &refused(120), &options),
            Duration::from_secs(120)
        );
        assert_eq!(backoff(1, &refused(1 << 40), &options), MAX_INTERVAL);
    }
}
