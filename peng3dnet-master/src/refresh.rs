//! The refresh: every listed server is pinged once per `--refresh` interval by one
//! master, through the library's many-target pinger ([`peng3dnet::many`]: bounded
//! concurrency, per-address spacing), fed as servers come due.
//!
//! Each tick (a quarter of the interval, at most a second, jittered so that masters on
//! one database take turns) claims the servers due, as many as there is room for in the
//! pinger ([`crate::store::Store::claim_due`]), and drops the servers silent for longer
//! than `--drop-after`. Results are written in batches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use peng3dnet::many::{ping_many_stream, ManyOptions, PingMany};
use peng3dnet::ping::PingOptions;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::model::{Observation, Pong};
use crate::Master;

/// Results written to the database at once, at most.
const BATCH: usize = 500;
/// Longest a result waits for its batch.
const BATCH_WAIT: Duration = Duration::from_millis(100);

/// The tick of a refresh interval: a quarter of it, between 50 ms and 1 s.
pub fn tick_of(refresh: Duration) -> Duration {
    (refresh / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// A small xorshift for the jitter (no need for a cryptographic generator).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed =
            (now_ms() as u64) ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
        Jitter(seed | 1)
    }

    /// `d` times a factor in [0.5, 1.5).
    fn around(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let f = 0.5 + (self.0 % 1000) as f64 / 1000.0;
        d.mul_f64(f)
    }
}

pub(crate) async fn run(master: Arc<Master>, stop: CancellationToken) {
    let settings = master.settings();
    let concurrency = settings.concurrency.max(1);
    let room_total = concurrency * 2;
    let (tx, rx) = mpsc::channel::<SocketAddr>(room_total);
    let cancel = CancellationToken::new();
    let options = ManyOptions {
        ping: PingOptions {
            timeout: settings.ping_timeout,
            ..PingOptions::default()
        },
        concurrency: Some(concurrency),
        tries: 1,
        deadline: None,
        rate: None,
        spacing: settings.ping_spacing,
        cancel: cancel.clone(),
    };
    let targets = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) });
    let pings = ping_many_stream(targets, options);
    let inflight = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_results(master.clone(), pings, inflight.clone()));
    let mut jitter = Jitter::new();
    loop {
        let settings = master.settings();
        let tick = jitter.around(tick_of(settings.refresh));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
        let mut room = room_total.saturating_sub(inflight.load(Ordering::Relaxed));
        let now = now_ms();
        // This master's share of what is due: masters alive are those seen within the
        // four of the longest (jittered) ticks.
        let since = now - (tick_of(settings.refresh).as_millis() as i64) * 6;
        match master
            .store
            .heartbeat(&settings.master_id, now, since)
            .await
        {
            Ok((alive, due)) => {
                let share = due.div_ceil(alive) as usize;
                room = room.min(share.max(1));
            }
            Err(e) => {
                master.metrics.store_errors.inc();
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
        if room > 0 {
            let until = now + settings.refresh.as_millis() as i64;
            match master
                .store
                .claim_due(now, until, room, &settings.master_id)
                .await
            {
                Ok(claims) => {
                    tracing::trace!(claimed = claims.len(), room, "refresh tick");
                    if let Some(late) = claims.iter().map(|c| c.late_ms).max() {
                        master.metrics.refresh_lag.set(late.max(0) as f64 / 1000.0);
                    }
                    for claim in claims {
                        let Ok(addr) = claim.address.parse::<SocketAddr>() else {
                            tracing::warn!(address = %claim.address, "a listed address does not parse; skipped");
                            continue;
                        };
                        if !master.verifier.start_refresh(addr, settings.ping_spacing) {
                            continue; // pinged within the spacing: that result stands
                        }
                        inflight.fetch_add(1, Ordering::Relaxed);
                        if tx.send(addr).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    master.metrics.store_errors.inc();
                    tracing::warn!(error = %e, "claiming servers to ping failed");
                }
            }
        }
        let cutoff = now - settings.drop_after.as_millis() as i64;
        match master.store.drop_stale(cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                master.metrics.dropped.inc_by(n);
                tracing::info!(
                    dropped = n,
                    "dropped servers silent for longer than drop-after"
                );
                master.changed();
            }
            Err(e) => {
                master.metrics.store_errors.inc();
                tracing::warn!(error = %e, "dropping silent servers failed");
            }
        }
    }
    // Pings under way are cut short: their servers are due again one interval after
    // their claim, for this master's next start or another master.
    drop(tx);
    cancel.cancel();
    let _ = writer.await;
}

async fn write_results(
    master: Arc<Master>,
    mut pings: PingMany<SocketAddr>,
    inflight: Arc<AtomicUsize>,
) {
    let mut batch: Vec<Observation> = Vec::new();
    loop {
        let next = if batch.is_empty() {
            pings.next().await
        } else {
            match tokio::time::timeout(BATCH_WAIT, pings.next()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(&master, &mut batch).await;
                    continue;
                }
            }
        };
        let Some(done) = next else { break };
        inflight.fetch_sub(1, Ordering::Relaxed);
        let outcome = match &done.result {
            Ok(reply) => Ok(Pong::of(reply)),
            Err(e) => Err(e.to_string()),
        };
        master.metrics.ping("refresh", outcome.is_ok());
        master
            .verifier
            .refreshed(done.target, Arc::new(outcome.clone()));
        batch.push(Observation {
            address: done.target.to_string(),
            at: now_ms(),
            outcome,
        });
        if batch.len() >= BATCH {
            flush(&master, &mut batch).await;
        }
    }
    flush(&master, &mut batch).await;
}

async fn flush(master: &Master, batch: &mut Vec<Observation>) {
    if batch.is_empty() {
        return;
    }
    let settings = master.settings();
    let observations = std::mem::take(batch);
    if let Err(e) = master
        .store
        .record(observations, settings.down_after, settings.history)
        .await
    {
        master.metrics.store_errors.inc();
        tracing::warn!(error = %e, "storing ping results failed");
    }
    master.changed();
}
