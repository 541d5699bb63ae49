//! Storage of the list: SQLite ([`sqlite`], the default: one file, nothing to set up) or
//! PostgreSQL ([`postgres`], for several masters on one database).
//!
//! Both keep the same table, created and migrated at start by numbered migrations
//! ([`MIGRATIONS`], recorded in `schema_migrations`), and the same rules:
//!
//! - **Changes are numbered.** Every write that changes what the list shows takes the
//!   next number of `meta.seq` first (in PostgreSQL a row lock, so such writes commit in
//!   their numbers' order) and stamps the rows it writes. A master's in-memory copy of
//!   the list ([`crate::snapshot`]) reads only rows stamped after the last number it saw,
//!   and the count of rows to notice removals: cheap however long the list.
//! - **The refresh is leased through `next_due`.** A master claims the servers whose
//!   `next_due` has come by moving it one interval on ([`Store::claim_due`]; PostgreSQL:
//!   `FOR UPDATE SKIP LOCKED`, so two masters never claim one row). The claim is the
//!   lease: a master that dies after claiming leaves the servers due again one interval
//!   later, for the others. Each master claims at most its share of what is due (the
//!   servers due divided by the masters alive, from the `masters` heartbeat table), so
//!   that masters ticking at different moments split the work.

pub mod postgres;
pub mod sqlite;

use crate::model::{Observation, Pong, Record};
use crate::settings::Database;

/// The migrations, in order: (version, SQL). The SQL is valid in both SQLite and
/// PostgreSQL. A migration once released is never edited; changes are new versions.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE servers (
        address TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        up BOOLEAN NOT NULL,
        name TEXT,
        motd TEXT,
        clients BIGINT,
        max_clients BIGINT,
        version TEXT,
        data TEXT NOT NULL,
        tags TEXT NOT NULL,
        latency_ms DOUBLE PRECISION,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        last_ping BIGINT NOT NULL,
        failures BIGINT NOT NULL,
        history TEXT NOT NULL,
        source TEXT NOT NULL,
        next_due BIGINT NOT NULL,
        pinged_by TEXT,
        seq BIGINT NOT NULL
    );
    CREATE INDEX servers_next_due ON servers (next_due);
    CREATE INDEX servers_seq ON servers (seq);
    CREATE INDEX servers_source ON servers (source);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('seq', 0);",
    ),
    (
        2,
        "CREATE TABLE masters (id TEXT PRIMARY KEY, seen BIGINT NOT NULL);",
    ),
];

/// The columns of a [`Record`], in the order the row readers expect.
pub(crate) const COLUMNS: &str = "address, host, port, up, name, motd, clients, max_clients, \
    version, data, tags, latency_ms, first_seen, last_seen, last_ping, failures, history, source";

/// A database error, as a sentence (the driver's message, with what was being done).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl StoreError {
    pub(crate) fn doing(what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError(format!("{what}: {e}"))
    }
}

/// Why an announce was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// A cap of the list (all servers, or per source) is reached.
    #[error("{0}")]
    Full(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An announce verified by its pong, to be stored.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Row key.
    pub address: String,
    /// IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Source key of the announcer.
    pub source: String,
    /// Tags as a JSON array.
    pub tags: String,
    /// The verifying pong.
    pub pong: Pong,
    /// When it was pinged (Unix ms).
    pub at: i64,
    /// When to ping it next (Unix ms).
    pub next_due: i64,
    /// Most servers in all.
    pub max_servers: usize,
    /// Most servers of this source; `None` for trusted announcers.
    pub max_per_source: Option<usize>,
    /// History entries kept.
    pub history: usize,
}

/// The rows changed since a change number, and the state of the whole table then.
#[derive(Debug, Default)]
pub struct Changes {
    /// Rows stamped after the number asked for.
    pub rows: Vec<Record>,
    /// The newest change number.
    pub seq: i64,
    /// Rows in the table.
    pub count: u64,
}

/// A claimed server: its address and how late its ping is (ms past `next_due`).
#[derive(Debug, Clone)]
pub struct Claim {
    /// Row key.
    pub address: String,
    /// ms between when it was due and the claim.
    pub late_ms: i64,
}

/// An open store of either kind.
#[derive(Clone)]
pub enum Store {
    /// SQLite.
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL.
    Postgres(postgres::PgStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Sqlite(_) => "Store::Sqlite",
            Store::Postgres(_) => "Store::Postgres",
        })
    }
}

impl Store {
    /// Opens (creating when missing) and migrates the database.
    pub async fn open(db: &Database) -> Result<Store, StoreError> {
        match db {
            Database::Sqlite(path) => Ok(Store::Sqlite(sqlite::SqliteStore::open(path).await?)),
            Database::Postgres(url) => Ok(Store::Postgres(postgres::PgStore::open(url).await?)),
        }
    }

    /// The newest migration applied.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => s.schema_version().await,
            Store::Postgres(s) => s.schema_version().await,
        }
    }

    /// Stores a verified announce (new, or refreshing a listed server).
    pub async fn list(&self, listing: Listing) -> Result<Record, ListError> {
        match self {
            Store::Sqlite(s) => s.list(listing).await,
            Store::Postgres(s) => s.list(listing).await,
        }
    }

    /// Removes a server; whether it was listed.
    pub async fn unlist(&self, address: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.unlist(address).await,
            Store::Postgres(s) => s.unlist(address).await,
        }
    }

    /// One server.
    pub async fn get(&self, address: &str) -> Result<Option<Record>, StoreError> {
        match self {
            Store::Sqlite(s) => s.get(address).await,
            Store::Postgres(s) => s.get(address).await,
        }
    }

    /// Records that `master` is alive at `now`; the masters seen since `since` (this one
    /// included) and the servers due at `now`, for the fair share of a claim.
    pub async fn heartbeat(
        &self,
        master: &str,
        now: i64,
        since: i64,
    ) -> Result<(u64, u64), StoreError> {
        match self {
            Store::Sqlite(s) => s.heartbeat(master, now, since).await,
            Store::Postgres(s) => s.heartbeat(master, now, since).await,
        }
    }

    /// Claims up to `limit` servers due at `now`, moving their `next_due` to `until`.
    pub async fn claim_due(
        &self,
        now: i64,
        until: i64,
        limit: usize,
        master: &str,
    ) -> Result<Vec<Claim>, StoreError> {
        match self {
            Store::Sqlite(s) => s.claim_due(now, until, limit, master).await,
            Store::Postgres(s) => s.claim_due(now, until, limit, master).await,
        }
    }

    /// Stores refresh results: a pong resets the failures and updates the data; a
    /// failure counts, and marks the server down at `down_after`.
    pub async fn record(
        &self,
        observations: Vec<Observation>,
        down_after: u32,
        history: usize,
    ) -> Result<(), StoreError> {
        if observations.is_empty() {
            return Ok(());
        }
        match self {
            Store::Sqlite(s) => s.record(observations, down_after, history).await,
            Store::Postgres(s) => s.record(observations, down_after, history).await,
        }
    }

    /// Drops servers with no pong since `cutoff` (Unix ms); how many.
    pub async fn drop_stale(&self, cutoff: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.drop_stale(cutoff).await,
            Store::Postgres(s) => s.drop_stale(cutoff).await,
        }
    }

    /// Rows changed after change `seq`, with the table's count, in one consistent read.
    pub async fn changes_since(&self, seq: i64) -> Result<Changes, StoreError> {
        match self {
            Store::Sqlite(s) => s.changes_since(seq).await,
            Store::Postgres(s) => s.changes_since(seq).await,
        }
    }

    /// Every listed address (to notice removals).
    pub async fn addresses(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Sqlite(s) => s.addresses().await,
            Store::Postgres(s) => s.addresses().await,
        }
    }
}

/// The new failure count and up state after an observation.
pub(crate) fn after_failure(failures: i64, down_after: u32) -> (i64, bool) {
    let failures = failures.saturating_add(1);
    (failures, failures < i64::from(down_after))
}
