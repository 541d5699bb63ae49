//! The SQLite store: one file in WAL mode (readers never wait for the writer), written
//! through one connection and read through another, each used on tokio's blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{after_failure, Changes, Claim, ListError, Listing, StoreError, COLUMNS, MIGRATIONS};
use crate::model::{push_history, Observation, Record};

/// An open SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    write: Arc<Mutex<Connection>>,
    read: Arc<Mutex<Connection>>,
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::doing(&format!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| StoreError::doing("busy_timeout", e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| {
            StoreError::doing(&format!("cannot use {} as a database", path.display()), e)
        })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError(format!(
            "{}: SQLite refused WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch("PRAGMA synchronous=NORMAL;")
        .map_err(|e| StoreError::doing("pragma", e))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let doing = |e| StoreError::doing("migrating the schema", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(doing)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .map_err(doing)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(doing)?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        return Err(StoreError(format!(
            "the database's schema is version {current}, newer than this master's {newest}: \
             run a newer peng3dnet"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql).map_err(doing)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, crate::clock::now_ms()],
        )
        .map_err(doing)?;
    }
    tx.commit().map_err(doing)
}

pub(crate) fn record_of(r: &Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        address: r.get(0)?,
        host: r.get(1)?,
        port: u16::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        up: r.get(3)?,
        name: r.get(4)?,
        motd: r.get(5)?,
        clients: r.get(6)?,
        max_clients: r.get(7)?,
        version: r.get(8)?,
        data: r.get(9)?,
        tags: r.get(10)?,
        latency_ms: r.get(11)?,
        first_seen: r.get(12)?,
        last_seen: r.get(13)?,
        last_ping: r.get(14)?,
        failures: r.get(15)?,
        history: r.get(16)?,
        source: r.get(17)?,
    })
}

fn next_seq(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row(
        "UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value",
        [],
        |r| r.get(0),
    )
}

impl SqliteStore {
    /// Opens the file (creating it), switches it to WAL and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut write = connect(&path)?;
            migrate(&mut write)?;
            let read = connect(&path)?;
            Ok(SqliteStore {
                write: Arc::new(Mutex::new(write)),
                read: Arc::new(Mutex::new(read)),
            })
        })
        .await
        .map_err(|e| StoreError::doing("opening the database", e))?
    }

    async fn with<T, F>(
        conn: &Arc<Mutex<Connection>>,
        what: &'static str,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::doing(what, e))?
    }

    pub(crate) async fn schema_version(&self) -> Result<i64, StoreError> {
        Self::with(&self.read, "reading the schema version", |c| {
            c.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .map_err(|e| StoreError::doing("reading the schema version", e))
        })
        .await
    }

    pub(crate) async fn list(&self, l: Listing) -> Result<Record, ListError> {
        let conn = self.write.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            let db = |e| StoreError::doing("storing an announce", e);
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let old: Option<(String, i64)> = tx
                .query_row(
                    "SELECT history, first_seen FROM servers WHERE address = ?1",
                    [&l.address],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            if old.is_none() {
                let total: i64 = tx
                    .query_row("SELECT COUNT(*) FROM servers", [], |r| r.get(0))
                    .map_err(db)?;
                if total as u64 >= l.max_servers as u64 {
                    return Err(ListError::Full(format!(
                        "the list is full ({} servers)",
                        l.max_servers
                    )));
                }
                if let Some(cap) = l.max_per_source {
                    let mine: i64 = tx
                        .query_row(
                            "SELECT COUNT(*) FROM servers WHERE source = ?1",
                            [&l.source],
                            |r| r.get(0),
                        )
                        .map_err(db)?;
                    if mine as u64 >= cap as u64 {
                        return Err(ListError::Full(format!(
                            "{} already has {cap} servers listed, the most one source may have",
                            l.source
                        )));
                    }
                }
            }
            let (history, first_seen) = old.unwrap_or_else(|| ("[]".into(), l.at));
            let history = push_history(&history, l.at, Some(l.pong.latency_ms), l.history);
            let seq = next_seq(&tx).map_err(db)?;
            let p = &l.pong;
            tx.execute(
                "INSERT INTO servers (address, host, port, up, name, motd, clients, max_clients,
                    version, data, tags, latency_ms, first_seen, last_seen, last_ping, failures,
                    history, source, next_due, seq)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, 0, ?14,
                    ?15, ?16, ?17)
                 ON CONFLICT (address) DO UPDATE SET up = 1, name = excluded.name,
                    motd = excluded.motd, clients = excluded.clients,
                    max_clients = excluded.max_clients, version = excluded.version,
                    data = excluded.data, tags = excluded.tags,
                    latency_ms = excluded.latency_ms, last_seen = excluded.last_seen,
                    last_ping = excluded.last_ping, failures = 0, history = excluded.history,
                    source = excluded.source, next_due = excluded.next_due, seq = excluded.seq",
                params![
                    l.address,
                    l.host,
                    l.port,
                    p.name,
                    p.motd,
                    p.clients,
                    p.max_clients,
                    p.version,
                    p.data,
                    l.tags,
                    p.latency_ms,
                    first_seen,
                    l.at,
                    history,
                    l.source,
                    l.next_due,
                    seq
                ],
            )
            .map_err(db)?;
            let record = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM servers WHERE address = ?1"),
                    [&l.address],
                    record_of,
                )
                .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(record)
        })
        .await
        .map_err(|e| ListError::Store(StoreError::doing("storing an announce", e)))?
    }

    pub(crate) async fn unlist(&self, address: &str) -> Result<bool, StoreError> {
        let address = address.to_owned();
        Self::with(&self.write, "removing a server", move |c| {
            c.execute("DELETE FROM servers WHERE address = ?1", [&address])
                .map(|n| n > 0)
                .map_err(|e| StoreError::doing("removing a server", e))
        })
        .await
    }

    pub(crate) async fn get(&self, address: &str) -> Result<Option<Record>, StoreError> {
        let address = address.to_owned();
        Self::with(&self.read, "reading a server", move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM servers WHERE address = ?1"),
                [&address],
                record_of,
            )
            .optional()
            .map_err(|e| StoreError::doing("reading a server", e))
        })
        .await
    }

    pub(crate) async fn heartbeat(
        &self,
        master: &str,
        now: i64,
        since: i64,
    ) -> Result<(u64, u64), StoreError> {
        let master = master.to_owned();
        Self::with(&self.write, "heartbeat", move |c| {
            let db = |e| StoreError::doing("heartbeat", e);
            c.execute(
                "INSERT INTO masters (id, seen) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET seen = excluded.seen",
                params![master, now],
            )
            .map_err(db)?;
            let alive: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM masters WHERE seen >= ?1",
                    [since],
                    |r| r.get(0),
                )
                .map_err(db)?;
            let due: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM servers WHERE next_due <= ?1",
                    [now],
                    |r| r.get(0),
                )
                .map_err(db)?;
            Ok((alive.max(1) as u64, due.max(0) as u64))
        })
        .await
    }

    pub(crate) async fn claim_due(
        &self,
        now: i64,
        until: i64,
        limit: usize,
        master: &str,
    ) -> Result<Vec<Claim>, StoreError> {
        let master = master.to_owned();
        Self::with(&self.write, "claiming servers to ping", move |c| {
            let db = |e| StoreError::doing("claiming servers to ping", e);
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let claims = {
                let mut select = tx
                    .prepare_cached(
                        "SELECT address, next_due FROM servers WHERE next_due <= ?1
                         ORDER BY next_due LIMIT ?2",
                    )
                    .map_err(db)?;
                let rows = select
                    .query_map(params![now, limit as i64], |r| {
                        Ok(Claim {
                            address: r.get(0)?,
                            late_ms: now - r.get::<_, i64>(1)?,
                        })
                    })
                    .map_err(db)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db)?
            };
            {
                let mut update = tx
                    .prepare_cached(
                        "UPDATE servers SET next_due = ?1, pinged_by = ?2 WHERE address = ?3",
                    )
                    .map_err(db)?;
                for claim in &claims {
                    update
                        .execute(params![until, master, claim.address])
                        .map_err(db)?;
                }
            }
            tx.commit().map_err(db)?;
            Ok(claims)
        })
        .await
    }

    pub(crate) async fn record(
        &self,
        observations: Vec<Observation>,
        down_after: u32,
        keep: usize,
    ) -> Result<(), StoreError> {
        Self::with(&self.write, "storing ping results", move |c| {
            let db = |e| StoreError::doing("storing ping results", e);
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let seq = next_seq(&tx).map_err(db)?;
            {
                let mut select = tx
                    .prepare_cached("SELECT history, failures FROM servers WHERE address = ?1")
                    .map_err(db)?;
                let mut ok = tx
                    .prepare_cached(
                        "UPDATE servers SET up = 1, name = ?2, motd = ?3, clients = ?4,
                            max_clients = ?5, version = ?6, data = ?7, latency_ms = ?8,
                            last_seen = ?9, last_ping = ?9, failures = 0, history = ?10,
                            seq = ?11
                         WHERE address = ?1",
                    )
                    .map_err(db)?;
                let mut failed = tx
                    .prepare_cached(
                        "UPDATE servers SET up = ?2, last_ping = ?3, failures = ?4,
                            history = ?5, seq = ?6
                         WHERE address = ?1",
                    )
                    .map_err(db)?;
                for o in &observations {
                    let Some((history, failures)) = select
                        .query_row([&o.address], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                        })
                        .optional()
                        .map_err(db)?
                    else {
                        continue; // unlisted meanwhile
                    };
                    match &o.outcome {
                        Ok(p) => {
                            let history = push_history(&history, o.at, Some(p.latency_ms), keep);
                            ok.execute(params![
                                o.address,
                                p.name,
                                p.motd,
                                p.clients,
                                p.max_clients,
                                p.version,
                                p.data,
                                p.latency_ms,
                                o.at,
                                history,
                                seq
                            ])
                            .map_err(db)?;
                        }
                        Err(_) => {
                            let history = push_history(&history, o.at, None, keep);
                            let (failures, up) = after_failure(failures, down_after);
                            failed
                                .execute(params![o.address, up, o.at, failures, history, seq])
                                .map_err(db)?;
                        }
                    }
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    pub(crate) async fn drop_stale(&self, cutoff: i64) -> Result<u64, StoreError> {
        Self::with(&self.write, "dropping silent servers", move |c| {
            c.execute("DELETE FROM servers WHERE last_seen < ?1", [cutoff])
                .map(|n| n as u64)
                .map_err(|e| StoreError::doing("dropping silent servers", e))
        })
        .await
    }

    pub(crate) async fn changes_since(&self, since: i64) -> Result<Changes, StoreError> {
        Self::with(&self.read, "reading the list", move |c| {
            let db = |e| StoreError::doing("reading the list", e);
            // One read transaction: the rows, the number and the count of one moment.
            let tx = c.transaction().map_err(db)?;
            let seq: i64 = tx
                .query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))
                .map_err(db)?;
            let count: i64 = tx
                .query_row("SELECT COUNT(*) FROM servers", [], |r| r.get(0))
                .map_err(db)?;
            let rows = {
                let mut select = tx
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM servers WHERE seq > ?1 ORDER BY address"
                    ))
                    .map_err(db)?;
                let rows = select.query_map([since], record_of).map_err(db)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db)?
            };
            tx.finish().map_err(db)?;
            Ok(Changes {
                rows,
                seq,
                count: count as u64,
            })
        })
        .await
    }

    pub(crate) async fn addresses(&self) -> Result<Vec<String>, StoreError> {
        Self::with(&self.read, "reading the list", move |c| {
            let db = |e| StoreError::doing("reading the list", e);
            let mut select = c
                .prepare_cached("SELECT address FROM servers")
                .map_err(db)?;
            let rows = select.query_map([], |r| r.get(0)).map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
        .await
    }
}
