//! The master's copy of the list in memory, which `GET /servers` answers from: kept in
//! step with the database by reading the rows changed since the last change number
//! (see [`crate::store`]), and rendered answers cached per query until the list changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::model::Server;
use crate::store::{Store, StoreError};

/// The JSON schema version of `GET /servers`.
pub const SCHEMA: u32 = 1;

/// Default page size of `GET /servers`.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest page.
pub const MAX_LIMIT: usize = 10_000;

/// One consistent view of the list.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Servers sorted by address.
    pub servers: Vec<Arc<Server>>,
    /// Counts up on each change.
    pub generation: u64,
    /// Servers up.
    pub up: usize,
    /// Servers listed per announcer's source key.
    pub per_source: HashMap<String, usize>,
}

#[derive(Default)]
struct SyncState {
    seq: i64,
    /// Each server with its announcer's source key.
    servers: BTreeMap<String, (Arc<Server>, String)>,
    generation: u64,
}

/// A rendered answer: body, ETag, content type.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The body.
    pub body: Bytes,
    /// The strong ETag, quoted.
    pub etag: String,
}

/// The list in memory.
#[derive(Default)]
pub struct List {
    current: ArcSwap<Snapshot>,
    sync: tokio::sync::Mutex<SyncState>,
    cache: Mutex<(u64, HashMap<String, Rendered>)>,
}

/// Cached answers at most per generation.
const CACHE_ENTRIES: usize = 256;

impl List {
    /// The current view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reads what changed in the database; whether anything did.
    pub async fn sync(&self, store: &Store) -> Result<bool, StoreError> {
        let mut state = self.sync.lock().await;
        let changes = store.changes_since(state.seq).await?;
        let mut changed = !changes.rows.is_empty();
        for record in &changes.rows {
            state.servers.insert(
                record.address.clone(),
                (Arc::new(record.to_server()), record.source.clone()),
            );
        }
        state.seq = changes.seq;
        if state.servers.len() as u64 != changes.count {
            let present: std::collections::HashSet<String> =
                store.addresses().await?.into_iter().collect();
            let before = state.servers.len();
            state.servers.retain(|a, _| present.contains(a));
            changed |= state.servers.len() != before;
            // A row added after the count (by another master) comes with the next sync.
        }
        if changed {
            state.generation += 1;
            let servers: Vec<Arc<Server>> = state.servers.values().map(|v| v.0.clone()).collect();
            let up = servers.iter().filter(|s| s.up).count();
            let mut per_source = HashMap::new();
            for (_, source) in state.servers.values() {
                *per_source.entry(source.clone()).or_insert(0) += 1;
            }
            self.current.store(Arc::new(Snapshot {
                servers,
                generation: state.generation,
                up,
                per_source,
            }));
        }
        Ok(changed)
    }

    /// The answer to a query, from the cache when the list has not changed since.
    pub fn render(&self, query: &Query, text: bool) -> Rendered {
        let snapshot = self.snapshot();
        let key = format!("{}{query:?}", if text { "t" } else { "j" });
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.0 == snapshot.generation {
                if let Some(hit) = cache.1.get(&key) {
                    return hit.clone();
                }
            }
        }
        let rendered = render(&snapshot, query, text);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != snapshot.generation || cache.1.len() >= CACHE_ENTRIES {
            *cache = (snapshot.generation, HashMap::new());
        }
        cache.1.insert(key, rendered.clone());
        rendered
    }
}

/// Sort orders of `GET /servers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// By address (the default).
    #[default]
    Address,
    /// By name, case-insensitively; servers without one last.
    Name,
    /// By the master's latency; unknown last.
    Latency,
    /// By clients; unknown last.
    Clients,
}

/// A parsed `GET /servers` query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// Tags that must all be present.
    pub tags: Vec<String>,
    /// Substring of the name, lowercased.
    pub name: Option<String>,
    /// Only servers with free slots.
    pub free: bool,
    /// Exact version.
    pub version: Option<String>,
    /// Only servers up (always for the text list).
    pub up: bool,
    /// Order.
    pub sort: Sort,
    /// Descending order.
    pub descending: bool,
    /// Page size.
    pub limit: usize,
    /// Page start.
    pub offset: usize,
}

fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" | "" => Ok(false),
        _ => Err(format!("{key}={value:?}: expected 1 or 0")),
    }
}

impl Query {
    /// Parses a query string (`tag=eu&sort=-clients&limit=50`); an unknown parameter or
    /// a bad value is an error naming it.
    ///
    /// ```
    /// use peng3dnet_master::snapshot::{Query, Sort};
    /// let q = Query::parse("tag=eu&tag=pvp&sort=-clients&limit=5&up=1").unwrap();
    /// assert_eq!(q.tags, ["eu", "pvp"]);
    /// assert_eq!((q.sort, q.descending, q.limit, q.up), (Sort::Clients, true, 5, true));
    /// assert!(Query::parse("limt=5").is_err());
    /// ```
    pub fn parse(query: &str) -> Result<Query, String> {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = value.as_ref();
            match key.as_ref() {
                "tag" => {
                    if q.tags.len() >= crate::model::MAX_TAGS {
                        return Err(format!("at most {} tag= filters", crate::model::MAX_TAGS));
                    }
                    q.tags.push(value.to_owned());
                }
                "name" => q.name = Some(value.to_lowercase()).filter(|n| !n.is_empty()),
                "free" => q.free = flag("free", value)?,
                "up" => q.up = flag("up", value)?,
                "version" => q.version = Some(value.to_owned()),
                "sort" => {
                    let (descending, field) = match value.strip_prefix('-') {
                        Some(f) => (true, f),
                        None => (false, value),
                    };
                    q.descending = descending;
                    q.sort = match field {
                        "address" => Sort::Address,
                        "name" => Sort::Name,
                        "latency" => Sort::Latency,
                        "clients" => Sort::Clients,
                        _ => {
                            return Err(format!(
                                "sort={value:?}: expected name, latency, clients or address (a leading - reverses)"
                            ))
                        }
                    };
                }
                "limit" => {
                    q.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| format!("limit={value:?}: expected 1 to {MAX_LIMIT}"))?;
                }
                "offset" => {
                    q.offset = value
                        .parse()
                        .map_err(|_| format!("offset={value:?}: expected a number"))?;
                }
                other => {
                    let shown: String = other.chars().take(40).collect();
                    return Err(format!(
                        "unknown parameter {shown:?}: expected tag, name, free, version, up, sort, limit or offset"
                    ));
                }
            }
        }
        Ok(q)
    }

    fn matches(&self, s: &Server) -> bool {
        (!self.up || s.up)
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.name.as_ref().is_none_or(|n| {
                s.name
                    .as_ref()
                    .is_some_and(|name| name.to_lowercase().contains(n))
            })
            && (!self.free || matches!((s.clients, s.max_clients), (Some(c), Some(m)) if c < m))
            && self
                .version
                .as_ref()
                .is_none_or(|v| s.version.as_deref() == Some(v))
    }
}

/// Orders two optional keys, missing ones last whatever the direction.
fn order<T: PartialOrd>(a: Option<T>, b: Option<T>, descending: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Some(a), Some(b)) => {
            let o = a.partial_cmp(&b).unwrap_or(Equal);
            if descending {
                o.reverse()
            } else {
                o
            }
        }
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
    }
}

fn render(snapshot: &Snapshot, q: &Query, text: bool) -> Rendered {
    let mut matched: Vec<&Arc<Server>> = snapshot
        .servers
        .iter()
        .filter(|s| q.matches(s) && (!text || s.up))
        .collect();
    match q.sort {
        Sort::Address if !q.descending => {} // already in address order
        Sort::Address => matched.reverse(),
        Sort::Name => matched.sort_by(|a, b| {
            order(
                a.name.as_ref().map(|n| n.to_lowercase()),
                b.name.as_ref().map(|n| n.to_lowercase()),
                q.descending,
            )
            .then_with(|| a.address.cmp(&b.address))
        }),
        Sort::Latency => matched.sort_by(|a, b| {
            order(a.latency_ms, b.latency_ms, q.descending).then_with(|| a.address.cmp(&b.address))
        }),
        Sort::Clients => matched.sort_by(|a, b| {
            order(a.clients, b.clients, q.descending).then_with(|| a.address.cmp(&b.address))
        }),
    }
    let total = matched.len();
    let page = matched.into_iter().skip(q.offset).take(q.limit);
    let body = if text {
        let mut out = String::new();
        for s in page {
            out.push_str(&s.address);
            out.push('\n');
        }
        Bytes::from(out)
    } else {
        #[derive(serde::Serialize)]
        struct Answer<'a> {
            schema: u32,
            total: usize,
            servers: Vec<&'a Server>,
        }
        let answer = Answer {
            schema: SCHEMA,
            total,
            servers: page.map(|s| s.as_ref()).collect(),
        };
        Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
    };
    let etag = format!("\"{:016x}\"", fnv1a(&body));
    Rendered { body, etag }
}

/// FNV-1a, 64 bits: the ETag of a body (the same list gives the same tag on every
/// master).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(address: &str, name: Option<&str>, clients: Option<i64>, up: bool) -> Arc<Server> {
        Arc::new(Server {
            address: address.into(),
            host: "127.0.0.1".into(),
            port: 1,
            up,
            name: name.map(Into::into),
            motd: None,
            clients,
            max_clients: Some(10),
            version: Some("1".into()),
            data: serde_json::json!({}),
            tags: vec!["eu".into()],
            latency_ms: clients.map(|c| c as f64),
            first_seen: String::new(),
            last_seen: String::new(),
            last_ping: String::new(),
            failures: 0,
            history: vec![],
        })
    }

    #[test]
    fn filters_sort_and_page() {
        let snapshot = Snapshot {
            servers: vec![
                server("a:1", Some("Beta"), Some(3), true),
                server("b:1", Some("alpha"), None, true),
                server("c:1", None, Some(10), false),
            ],
            generation: 1,
            up: 2,
            per_source: HashMap::new(),
        };
        let names = |q: &str| {
            let r = render(&snapshot, &Query::parse(q).unwrap(), false);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let list: Vec<String> = v["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["address"].as_str().unwrap().to_owned())
                .collect();
            (v["total"].as_u64().unwrap(), list)
        };
        assert_eq!(
            names(""),
            (3, vec!["a:1".into(), "b:1".into(), "c:1".into()])
        );
        assert_eq!(names("sort=name").1, ["b:1", "a:1", "c:1"]);
        assert_eq!(names("sort=-clients").1, ["c:1", "a:1", "b:1"]);
        assert_eq!(names("sort=clients").1, ["a:1", "c:1", "b:1"]);
        assert_eq!(names("up=1").0, 2);
        assert_eq!(names("free=1").1, ["a:1"]);
        assert_eq!(names("name=ALP").1, ["b:1"]);
        assert_eq!(names("tag=eu&tag=us").0, 0);
        assert_eq!(names("limit=1&offset=1"), (3, vec!["b:1".into()]));
        let text = render(&snapshot, &Query::parse("").unwrap(), true);
        assert_eq!(&text.body[..], b"a:1\nb:1\n");
    }

    #[test]
    fn bad_queries_are_named() {
        assert!(Query::parse("limit=0").unwrap_err().contains("limit"));
        assert!(Query::parse("limit=10001").is_err());
        assert!(Query::parse("sort=size").unwrap_err().contains("sort"));
        assert!(Query::parse("up=maybe").unwrap_err().contains("up"));
    }
}
