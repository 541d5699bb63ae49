//! The PostgreSQL store: several masters share one database. Writes that change the list
//! take the `meta.seq` row lock first (so they commit in their change numbers' order),
//! claims of the refresh use `FOR UPDATE SKIP LOCKED` and take no such lock (masters
//! claim side by side, never the same row).
//!
//! Two connections per master, each reopened when it breaks: one for writes, one for
//! the reads of the in-memory list. No TLS: the database is expected on the master's
//! host or a private network (docs/master.md).

use std::sync::Arc;

use futures_util::future::try_join_all;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel, NoTls, Row};

use super::{after_failure, Changes, Claim, ListError, Listing, StoreError, COLUMNS, MIGRATIONS};
use crate::model::{push_history, Observation, Record};

/// Any constant: the advisory lock that lets one master at a time migrate.
const MIGRATION_LOCK: i64 = 0x7065_6e67_3364;

struct Conn {
    url: String,
    client: Mutex<Option<Client>>,
}

impl Conn {
    async fn open(url: &str) -> Result<Client, StoreError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| StoreError::doing("cannot connect to PostgreSQL", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection lost; reconnecting on next use");
            }
        });
        Ok(client)
    }

    /// The client, reconnected first if its connection closed.
    async fn get(&self) -> Result<MutexGuard<'_, Option<Client>>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(Conn::open(&self.url).await?);
        }
        Ok(guard)
    }
}

/// An open PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    write: Arc<Conn>,
    read: Arc<Conn>,
}

fn record_of(r: &Row) -> Record {
    Record {
        address: r.get(0),
        host: r.get(1),
        port: u16::try_from(r.get::<_, i32>(2)).unwrap_or(0),
        up: r.get(3),
        name: r.get(4),
        motd: r.get(5),
        clients: r.get(6),
        max_clients: r.get(7),
        version: r.get(8),
        data: r.get(9),
        tags: r.get(10),
        latency_ms: r.get(11),
        first_seen: r.get(12),
        last_seen: r.get(13),
        last_ping: r.get(14),
        failures: r.get(15),
        history: r.get(16),
        source: r.get(17),
    }
}

fn client<'a>(guard: &'a mut MutexGuard<'_, Option<Client>>) -> Result<&'a mut Client, StoreError> {
    guard
        .as_mut()
        .ok_or_else(|| StoreError("no PostgreSQL connection".into()))
}

async fn next_seq(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, tokio_postgres::Error> {
    Ok(tx
        .query_one(
            "UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value",
            &[],
        )
        .await?
        .get(0))
}

impl PgStore {
    /// Connects and migrates (one master at a time, under an advisory lock).
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let write = Arc::new(Conn {
            url: url.to_owned(),
            client: Mutex::new(Some(Conn::open(url).await?)),
        });
        let read = Arc::new(Conn {
            url: url.to_owned(),
            client: Mutex::new(Some(Conn::open(url).await?)),
        });
        let store = PgStore { write, read };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let doing = |e| StoreError::doing("migrating the schema", e);
        let mut guard = self.write.get().await?;
        let tx = client(&mut guard)?.transaction().await.map_err(doing)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(doing)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(doing)?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
                &[],
            )
            .await
            .map_err(doing)?
            .get(0);
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > newest {
            return Err(StoreError(format!(
                "the database's schema is version {current}, newer than this master's {newest}: \
                 run a newer peng3dnet"
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch_execute(sql).await.map_err(doing)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[version, &crate::clock::now_ms()],
            )
            .await
            .map_err(doing)?;
        }
        tx.commit().await.map_err(doing)
    }

    pub(crate) async fn schema_version(&self) -> Result<i64, StoreError> {
        let mut guard = self.read.get().await?;
        let row = client(&mut guard)?
            .query_one("SELECT MAX(version) FROM schema_migrations", &[])
            .await
            .map_err(|e| StoreError::doing("reading the schema version", e))?;
        Ok(row.get(0))
    }

    pub(crate) async fn list(&self, l: Listing) -> Result<Record, ListError> {
        let db = |e| StoreError::doing("storing an announce", e);
        let mut guard = self.write.get().await?;
        let tx = client(&mut guard)?.transaction().await.map_err(db)?;
        let seq = next_seq(&tx).await.map_err(db)?;
        let old = tx
            .query_opt(
                "SELECT history, first_seen FROM servers WHERE address = $1 FOR UPDATE",
                &[&l.address],
            )
            .await
            .map_err(db)?;
        if old.is_none() {
            let total: i64 = tx
                .query_one("SELECT COUNT(*) FROM servers", &[])
                .await
                .map_err(db)?
                .get(0);
            if total as u64 >= l.max_servers as u64 {
                return Err(ListError::Full(format!(
                    "the list is full ({} servers)",
                    l.max_servers
                )));
            }
            if let Some(cap) = l.max_per_source {
                let mine: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM servers WHERE source = $1",
                        &[&l.source],
                    )
                    .await
                    .map_err(db)?
                    .get(0);
                if mine as u64 >= cap as u64 {
                    return Err(ListError::Full(format!(
                        "{} already has {cap} servers listed, the most one source may have",
                        l.source
                    )));
                }
            }
        }
        let (history, first_seen): (String, i64) = old
            .map(|r| (r.get(0), r.get(1)))
            .unwrap_or_else(|| ("[]".into(), l.at));
        let history = push_history(&history, l.at, Some(l.pong.latency_ms), l.history);
        let p = &l.pong;
        let port = i32::from(l.port);
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO servers (address, host, port, up, name, motd, clients,
                        max_clients, version, data, tags, latency_ms, first_seen, last_seen,
                        last_ping, failures, history, source, next_due, seq)
                     VALUES ($1, $2, $3, TRUE, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13,
                        0, $14, $15, $16, $17)
                     ON CONFLICT (address) DO UPDATE SET up = TRUE, name = excluded.name,
                        motd = excluded.motd, clients = excluded.clients,
                        max_clients = excluded.max_clients, version = excluded.version,
                        data = excluded.data, tags = excluded.tags,
                        latency_ms = excluded.latency_ms, last_seen = excluded.last_seen,
                        last_ping = excluded.last_ping, failures = 0,
                        history = excluded.history, source = excluded.source,
                        next_due = excluded.next_due, seq = excluded.seq
                     RETURNING {COLUMNS}"
                ),
                &[
                    &l.address as &(dyn ToSql + Sync),
                    &l.host,
                    &port,
                    &p.name,
                    &p.motd,
                    &p.clients,
                    &p.max_clients,
                    &p.version,
                    &p.data,
                    &l.tags,
                    &p.latency_ms,
                    &first_seen,
                    &l.at,
                    &history,
                    &l.source,
                    &l.next_due,
                    &seq,
                ],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(record_of(&row))
    }

    pub(crate) async fn unlist(&self, address: &str) -> Result<bool, StoreError> {
        let mut guard = self.write.get().await?;
        let n = client(&mut guard)?
            .execute("DELETE FROM servers WHERE address = $1", &[&address])
            .await
            .map_err(|e| StoreError::doing("removing a server", e))?;
        Ok(n > 0)
    }

    pub(crate) async fn get(&self, address: &str) -> Result<Option<Record>, StoreError> {
        let mut guard = self.read.get().await?;
        let row = client(&mut guard)?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM servers WHERE address = $1"),
                &[&address],
            )
            .await
            .map_err(|e| StoreError::doing("reading a server", e))?;
        Ok(row.as_ref().map(record_of))
    }

    pub(crate) async fn heartbeat(
        &self,
        master: &str,
        now: i64,
        since: i64,
    ) -> Result<(u64, u64), StoreError> {
        let db = |e| StoreError::doing("heartbeat", e);
        let mut guard = self.write.get().await?;
        let c = client(&mut guard)?;
        c.execute(
            "INSERT INTO masters (id, seen) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET seen = excluded.seen",
            &[&master, &now],
        )
        .await
        .map_err(db)?;
        let row = c
            .query_one(
                "SELECT (SELECT COUNT(*) FROM masters WHERE seen >= $1),
                        (SELECT COUNT(*) FROM servers WHERE next_due <= $2)",
                &[&since, &now],
            )
            .await
            .map_err(db)?;
        let (alive, due): (i64, i64) = (row.get(0), row.get(1));
        Ok((alive.max(1) as u64, due.max(0) as u64))
    }

    pub(crate) async fn claim_due(
        &self,
        now: i64,
        until: i64,
        limit: usize,
        master: &str,
    ) -> Result<Vec<Claim>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut guard = self.write.get().await?;
        let rows = client(&mut guard)?
            .query(
                "WITH due AS (
                    SELECT address, next_due FROM servers WHERE next_due <= $1
                    ORDER BY next_due LIMIT $2 FOR UPDATE SKIP LOCKED)
                 UPDATE servers s SET next_due = $3, pinged_by = $4 FROM due
                 WHERE s.address = due.address
                 RETURNING s.address, due.next_due",
                &[&now as &(dyn ToSql + Sync), &limit, &until, &master],
            )
            .await
            .map_err(|e| StoreError::doing("claiming servers to ping", e))?;
        Ok(rows
            .iter()
            .map(|r| Claim {
                address: r.get(0),
                late_ms: now - r.get::<_, i64>(1),
            })
            .collect())
    }

    pub(crate) async fn record(
        &self,
        observations: Vec<Observation>,
        down_after: u32,
        keep: usize,
    ) -> Result<(), StoreError> {
        let db = |e| StoreError::doing("storing ping results", e);
        let mut guard = self.write.get().await?;
        let tx = client(&mut guard)?.transaction().await.map_err(db)?;
        let seq = next_seq(&tx).await.map_err(db)?;
        let addresses: Vec<&str> = observations.iter().map(|o| o.address.as_str()).collect();
        let current = tx
            .query(
                "SELECT address, history, failures FROM servers WHERE address = ANY($1)
                 ORDER BY address FOR UPDATE",
                &[&addresses],
            )
            .await
            .map_err(db)?;
        let current: std::collections::HashMap<String, (String, i64)> = current
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let ok = tx
            .prepare(
                "UPDATE servers SET up = TRUE, name = $2, motd = $3, clients = $4,
                    max_clients = $5, version = $6, data = $7, latency_ms = $8,
                    last_seen = $9, last_ping = $9, failures = 0, history = $10, seq = $11
                 WHERE address = $1",
            )
            .await
            .map_err(db)?;
        let failed = tx
            .prepare(
                "UPDATE servers SET up = $2, last_ping = $3, failures = $4, history = $5,
                    seq = $6
                 WHERE address = $1",
            )
            .await
            .map_err(db)?;
        let mut updates = Vec::new();
        for o in &observations {
            let Some((history, failures)) = current.get(&o.address) else {
                continue; // unlisted meanwhile
            };
            match &o.outcome {
                Ok(p) => {
                    let history = push_history(history, o.at, Some(p.latency_ms), keep);
                    let tx = &tx;
                    let ok = &ok;
                    updates.push(Box::pin(async move {
                        tx.execute(
                            ok,
                            &[
                                &o.address as &(dyn ToSql + Sync),
                                &p.name,
                                &p.motd,
                                &p.clients,
                                &p.max_clients,
                                &p.version,
                                &p.data,
                                &p.latency_ms,
                                &o.at,
                                &history,
                                &seq,
                            ],
                        )
                        .await
                    })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>);
                }
                Err(_) => {
                    let history = push_history(history, o.at, None, keep);
                    let (failures, up) = after_failure(*failures, down_after);
                    let tx = &tx;
                    let failed = &failed;
                    updates.push(Box::pin(async move {
                        tx.execute(
                            failed,
                            &[
                                &o.address as &(dyn ToSql + Sync),
                                &up,
                                &o.at,
                                &failures,
                                &history,
                                &seq,
                            ],
                        )
                        .await
                    }));
                }
            }
        }
        // Polled together, the updates go out pipelined on the one connection.
        try_join_all(updates).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    pub(crate) async fn drop_stale(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut guard = self.write.get().await?;
        client(&mut guard)?
            .execute("DELETE FROM servers WHERE last_seen < $1", &[&cutoff])
            .await
            .map_err(|e| StoreError::doing("dropping silent servers", e))
    }

    pub(crate) async fn changes_since(&self, since: i64) -> Result<Changes, StoreError> {
        let db = |e| StoreError::doing("reading the list", e);
        let mut guard = self.read.get().await?;
        // One snapshot: the rows, the number and the count of one moment.
        let tx = client(&mut guard)?
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        let seq: i64 = tx
            .query_one("SELECT value FROM meta WHERE key = 'seq'", &[])
            .await
            .map_err(db)?
            .get(0);
        let count: i64 = tx
            .query_one("SELECT COUNT(*) FROM servers", &[])
            .await
            .map_err(db)?
            .get(0);
        let rows = tx
            .query(
                &format!("SELECT {COLUMNS} FROM servers WHERE seq > $1 ORDER BY address"),
                &[&since],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Changes {
            rows: rows.iter().map(record_of).collect(),
            seq,
            count: count as u64,
        })
    }

    pub(crate) async fn addresses(&self) -> Result<Vec<String>, StoreError> {
        let mut guard = self.read.get().await?;
        let rows = client(&mut guard)?
            .query("SELECT address FROM servers", &[])
            .await
            .map_err(|e| StoreError::doing("reading the list", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
