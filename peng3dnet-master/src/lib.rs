//! A master server for peng3dnet servers: servers announce themselves over HTTP, the
//! master verifies each announce by pinging the address back (the peng3dnet ping, so
//! what it lists is what the server itself says), re-pings every listed server on an
//! interval, and serves the list as JSON, as text and as a web page. The `peng3dnet
//! master` command runs it; docs/master.md is the HTTP contract and the operator's
//! guide.
//!
//! ```no_run
//! # async fn f() -> Result<(), peng3dnet_master::StartError> {
//! use peng3dnet_master::{settings::Settings, start};
//!
//! let settings = Settings {
//!     listen: "127.0.0.1:8090".into(),
//!     db: "sqlite:master.db".parse().unwrap(),
//!     ..Settings::default()
//! };
//! let running = start(settings).await?;
//! println!("master on http://{}/", running.local_addr());
//! // ... until a signal:
//! running.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Parts
//!
//! | module | what |
//! |---|---|
//! | [`settings`] | defaults, the TOML file, what a reload may change |
//! | [`store`] | SQLite or PostgreSQL: the table, migrations, claims of the refresh |
//! | [`snapshot`] | the list in memory: filters, sorting, paging, ETags |
//! | [`verify`] | the ping-back of announces, with per-address spacing |
//! | [`ratelimit`] | announces per source |
//! | [`metrics`] | `/metrics` |
//! | [`model`] | the record, the JSON object, pong data as JSON |
//!
//! ## Why these crates
//!
//! - **rusqlite** (with SQLite bundled) and **tokio-postgres** rather than sqlx: each
//!   is the usual driver of its database and brings only it (sqlx compiles its own
//!   runtime layer, a pool and both drivers behind one generic API); the two stores
//!   differ where it matters anyway (`FOR UPDATE SKIP LOCKED` and row locks in
//!   PostgreSQL, one writer in SQLite). Bundling SQLite means no system library to
//!   install: `peng3dnet master` alone works on a fresh machine.
//! - **hyper** 1 directly rather than a framework: the API has six routes, the
//!   workspace already builds hyper for `/metrics`, and the limits that matter against
//!   abuse (header timeout, buffer size, body limit, connection caps) are hyper's and
//!   http-body-util's own settings.
//! - **prometheus-client** for `/metrics`, as the rest of the workspace.
#![warn(missing_docs, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod clock;
mod http;
pub mod metrics;
pub mod model;
mod proxy;
pub mod ratelimit;
mod refresh;
pub mod settings;
pub mod snapshot;
pub mod store;
pub mod verify;

pub use http::MAX_BODY;
pub use refresh::tick_of;
use settings::{BadSettings, Settings};
use store::{Store, StoreError};

/// A running master's shared state.
pub struct Master {
    settings: ArcSwap<Settings>,
    store: Store,
    list: snapshot::List,
    verifier: verify::Verifier,
    limiter: ratelimit::RateLimiter,
    /// The metrics served at `/metrics`.
    pub metrics: metrics::Metrics,
    changed: Notify,
}

impl Master {
    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// The list as this master has it now.
    pub fn snapshot(&self) -> Arc<snapshot::Snapshot> {
        self.list.snapshot()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Addresses the verifier remembers (pinged within a spacing).
    pub fn remembered_pings(&self) -> usize {
        self.verifier.remembered()
    }

    /// Something changed in the database: the list in memory syncs soon.
    fn changed(&self) {
        self.changed.notify_one();
    }

    /// After a change of this master's own: the list in memory reads it before the
    /// answer goes out, so that a client sees its announce in the next `GET /servers`.
    async fn synced(&self) {
        match self.list.sync(&self.store).await {
            Ok(_) => update_gauges(self),
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(error = %e, "reading the list failed");
                self.changed();
            }
        }
    }

    /// Applies new settings (a SIGHUP): checked first; the keys that only a restart
    /// changes are kept and returned, for the log.
    pub fn reload(&self, mut new: Settings) -> Result<Vec<&'static str>, BadSettings> {
        new.check()?;
        let old = self.settings();
        let kept = old.restart_only_changes(&new);
        new.listen = old.listen.clone();
        new.db = old.db.clone();
        new.proxy_protocol = old.proxy_protocol;
        new.master_id = old.master_id.clone();
        new.concurrency = old.concurrency;
        self.settings.store(Arc::new(new));
        Ok(kept)
    }
}

/// Why a master did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings cannot work.
    #[error("{0}")]
    Settings(#[from] BadSettings),
    /// The database cannot be opened or migrated.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The HTTP address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A started master: its address, its state, and the way to stop it.
pub struct Running {
    master: Arc<Master>,
    local_addr: SocketAddr,
    stop: CancellationToken,
    http: JoinHandle<()>,
    refresh: JoinHandle<()>,
    sync: JoinHandle<()>,
}

impl Running {
    /// The HTTP address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared state.
    pub fn master(&self) -> &Arc<Master> {
        &self.master
    }

    /// Graceful shutdown: no new connection is accepted, requests under way finish (an
    /// announce being verified is stored and answered), idle connections close, the
    /// refresh stops (its pings under way are cut short; those servers come due again
    /// one interval after their claim).
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.http.await;
        let _ = self.refresh.await;
        let _ = self.sync.await;
        tracing::info!("master stopped");
    }

    /// Stops at once, as a crash would: nothing is finished or written. For tests of
    /// what the other masters on one database do when one dies.
    pub fn kill(self) {
        self.http.abort();
        self.refresh.abort();
        self.sync.abort();
    }
}

/// Starts a master: checks the settings, opens and migrates the database, listens, and
/// runs the API, the refresh and the sync of the list until [`Running::shutdown`].
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    settings.check()?;
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: settings.listen.clone(),
            source,
        })?;
    start_on(listener, settings).await
}

/// [`start`] on a listener bound already.
pub async fn start_on(listener: TcpListener, settings: Settings) -> Result<Running, StartError> {
    settings.check()?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: settings.listen.clone(),
        source,
    })?;
    let store = Store::open(&settings.db).await?;
    let master = Arc::new(Master {
        verifier: verify::Verifier::new(settings.max_verifications),
        settings: ArcSwap::from_pointee(settings),
        store,
        list: snapshot::List::default(),
        limiter: ratelimit::RateLimiter::default(),
        metrics: metrics::Metrics::default(),
        changed: Notify::new(),
    });
    master.list.sync(&master.store).await?;
    update_gauges(&master);
    let settings = master.settings();
    tracing::info!(
        listen = %local_addr,
        db = %settings.db.redacted(),
        master = %settings.master_id,
        listed = master.snapshot().servers.len(),
        "master started"
    );
    let stop = CancellationToken::new();
    let http = tokio::spawn(http::serve(listener, master.clone(), stop.clone()));
    let refresh = tokio::spawn(refresh::run(master.clone(), stop.clone()));
    let sync = tokio::spawn(sync_loop(master.clone(), stop.clone()));
    Ok(Running {
        master,
        local_addr,
        stop,
        http,
        refresh,
        sync,
    })
}

fn update_gauges(master: &Master) {
    let snapshot = master.snapshot();
    master.metrics.listed.set(snapshot.servers.len() as i64);
    master.metrics.up.set(snapshot.up as i64);
}

/// Keeps the list in memory in step: after each local change, and every tick for the
/// changes of other masters on the same database.
async fn sync_loop(master: Arc<Master>, stop: CancellationToken) {
    loop {
        let every = tick_of(master.settings().refresh).min(Duration::from_secs(1));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = master.changed.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        match master.list.sync(&master.store).await {
            Ok(_) => update_gauges(&master),
            Err(e) => {
                master.metrics.store_errors.inc();
                tracing::warn!(error = %e, "reading the list failed");
            }
        }
    }
}
