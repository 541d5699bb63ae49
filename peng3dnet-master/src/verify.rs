//! Pings of announced addresses: the ping-back that verifies an announce, with the
//! spacing that keeps the master from pinging any address more often than
//! [`Settings::ping_spacing`](crate::settings::Settings::ping_spacing), whoever asks.
//!
//! Each address has an entry: when it was last pinged (by a verification or the refresh)
//! and, once known, the result. An announce within the spacing of a ping is answered
//! from that ping: from its result when known, by waiting for it when it is a
//! verification still running, from the list when it is a refresh ping still running.
//! Entries older than the spacing are forgotten, so the map holds at most the addresses
//! pinged within one spacing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use peng3dnet::ping::{ping_server, PingOptions};
use tokio::sync::Semaphore;

use crate::model::Pong;

/// A ping's result as shared between the callers that wait for it.
pub type Outcome = Arc<Result<Pong, String>>;

enum State {
    /// A verification running: those who come meanwhile wait for it.
    Verifying(Shared<BoxFuture<'static, Outcome>>),
    /// A refresh ping running (its result comes through the refresh).
    Refreshing,
    /// The result of the last ping.
    Done(Outcome),
}

struct Entry {
    started: Instant,
    state: State,
}

/// What [`Verifier::verify`] found.
pub enum Verified {
    /// This ping's result, or a shared or recent one's.
    Result(Outcome),
    /// A refresh ping of the address is running: the list's current state stands.
    Refreshing,
}

/// The pinger of announces; shared with the refresh for the spacing.
pub struct Verifier {
    entries: Mutex<HashMap<SocketAddr, Entry>>,
    slots: Arc<Semaphore>,
}

impl Verifier {
    /// At most `max_at_once` verification pings at once; more wait.
    pub fn new(max_at_once: usize) -> Verifier {
        Verifier {
            entries: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(max_at_once.max(1))),
        }
    }

    fn prune(entries: &mut HashMap<SocketAddr, Entry>, spacing: Duration) {
        if entries.len() > 1024 {
            entries
                .retain(|_, e| e.started.elapsed() < spacing || !matches!(e.state, State::Done(_)));
        }
    }

    /// Verifies `addr` by a ping, unless one was started within `spacing`.
    pub async fn verify(
        &self,
        addr: SocketAddr,
        options: &PingOptions,
        spacing: Duration,
    ) -> Verified {
        let shared = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            Self::prune(&mut entries, spacing);
            match entries.get(&addr) {
                Some(Entry {
                    state: State::Verifying(running),
                    ..
                }) => running.clone(),
                Some(e) if e.started.elapsed() < spacing => match &e.state {
                    State::Done(outcome) => return Verified::Result(outcome.clone()),
                    State::Refreshing => return Verified::Refreshing,
                    State::Verifying(_) => unreachable!("matched above"),
                },
                _ => {
                    let slots = self.slots.clone();
                    let options = options.clone();
                    let running = async move {
                        let Ok(_slot) = slots.acquire_owned().await else {
                            return Arc::new(Err("the master is shutting down".to_owned()));
                        };
                        Arc::new(match ping_server(addr, &options).await {
                            Ok(reply) => Ok(Pong::of(&reply)),
                            Err(e) => Err(e.to_string()),
                        })
                    }
                    .boxed()
                    .shared();
                    entries.insert(
                        addr,
                        Entry {
                            started: Instant::now(),
                            state: State::Verifying(running.clone()),
                        },
                    );
                    running
                }
            }
        };
        let outcome = shared.clone().await;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get_mut(&addr) {
            if matches!(&entry.state, State::Verifying(s) if s.ptr_eq(&shared)) {
                entry.state = State::Done(outcome.clone());
            }
        }
        Verified::Result(outcome)
    }

    /// For the refresh: whether `addr` may be pinged now (no ping of it started within
    /// `spacing`); if so, it is marked as being pinged.
    pub fn start_refresh(&self, addr: SocketAddr, spacing: Duration) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Self::prune(&mut entries, spacing);
        if let Some(e) = entries.get(&addr) {
            if e.started.elapsed() < spacing || matches!(e.state, State::Verifying(_)) {
                return false;
            }
        }
        entries.insert(
            addr,
            Entry {
                started: Instant::now(),
                state: State::Refreshing,
            },
        );
        true
    }

    /// For the refresh: the result of its ping of `addr`.
    pub fn refreshed(&self, addr: SocketAddr, outcome: Outcome) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get_mut(&addr) {
            if matches!(entry.state, State::Refreshing) {
                entry.state = State::Done(outcome);
            }
        }
    }

    /// Addresses remembered (pinged within a spacing, or running), for tests and metrics.
    pub fn remembered(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
