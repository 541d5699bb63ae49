//! Master servers: the list of servers a browser starts from, and servers announcing
//! themselves to it.
//!
//! A master (`peng3dnet master`) keeps a list of servers that asked to be listed and
//! answered its ping, with their pong data. This module is its client, over the master's
//! HTTP API (version 1, JSON; see `docs/master.md`):
//!
//! - [`fetch`] reads the list (`GET /servers`, every page), filtered by a [`Query`];
//!   [`fetch_page`] reads one page, [`blocking::fetch`] does it for synchronous code;
//! - [`announce`] asks to be listed (`POST /announce`) and [`unlist`] to leave
//!   (`DELETE /announce`);
//! - an [`Announcer`] keeps a server listed: it announces at once, again every interval
//!   the master asks for, retries with backoff when the master cannot be reached or
//!   refuses, and unlists when stopped. [`Server::announce`](crate::Server::announce) ties
//!   one to a running server's port and shutdown.
//!
//! The list says what the *master* measured; a browser pings the servers itself for the
//! player's own latency:
//!
//! ```no_run
//! use peng3dnet::master::{fetch, Query};
//! use peng3dnet::ping::{ping_server, PingOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let servers = fetch("http://master.example.org:8090", &Query::new().tag("eu").up()).await?;
//! for server in &servers {
//!     match ping_server(server.address.as_str(), &PingOptions::default()).await {
//!         Ok(reply) => println!("{} {:?} {:?}", server.address, server.name, reply.delay),
//!         Err(e) => println!("{} {e}", server.address),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! `http://` and (with the `tls` feature, the default) `https://` masters are supported;
//! every exchange has a deadline ([`FetchOptions::timeout`]) and a size limit
//! ([`FetchOptions::max_response_bytes`]), and every failure a [`MasterError`] with a
//! stable [`kind`](MasterError::kind).

mod announce;
pub mod blocking;
mod error;
mod http;

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

pub use self::announce::{AnnounceOptions, AnnounceState, Announcer};
pub use self::error::MasterError;
use self::http::{encode, exchange, Exchange, MasterUrl};
use crate::tls::ClientTls;

/// The version of the master's JSON this client reads (`"schema"` of `GET /servers`).
pub const SCHEMA: u64 = 1;

/// At most this many tags per announce (the master refuses more).
pub const MAX_TAGS: usize = 16;

/// At most this many characters per tag.
pub const MAX_TAG_CHARS: usize = 32;

/// One server of a master's list (a `<Server>` object of the API).
///
/// Fields a master adds in a later version are ignored; a field it leaves out takes its
/// default (empty, `null`, `0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ListedServer {
    /// `host:port` to ping (IPv6 as `[::1]:7000`).
    pub address: String,
    /// The host of `address`.
    #[serde(default)]
    pub host: String,
    /// The port of `address`.
    #[serde(default)]
    pub port: u16,
    /// Whether the master's last ping was answered (`false`: marked down, not yet
    /// dropped).
    #[serde(default)]
    pub up: bool,
    /// The server's `name`, from its pong.
    #[serde(default)]
    pub name: Option<String>,
    /// The server's `motd`, from its pong.
    #[serde(default)]
    pub motd: Option<String>,
    /// Connected clients, from its pong.
    #[serde(default)]
    pub clients: Option<u64>,
    /// Most clients, from its pong.
    #[serde(default)]
    pub max_clients: Option<u64>,
    /// The server's `version`, from its pong.
    #[serde(default)]
    pub version: Option<String>,
    /// The whole pong data as JSON (byte strings as base64 strings).
    #[serde(default)]
    pub data: serde_json::Value,
    /// The tags it announced with.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The master's last measured latency, in ms (not the caller's: ping for that).
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// When the master first listed it (RFC 3339).
    #[serde(default)]
    pub first_seen: Option<String>,
    /// When it last answered the master (RFC 3339).
    #[serde(default)]
    pub last_seen: Option<String>,
    /// When the master last pinged it (RFC 3339).
    #[serde(default)]
    pub last_ping: Option<String>,
    /// Consecutive failed pings.
    #[serde(default)]
    pub failures: u64,
    /// The last results of the master's pings, newest first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// One of the master's pings of a listed server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// When (RFC 3339).
    #[serde(default)]
    pub at: String,
    /// Whether the pong came.
    #[serde(default)]
    pub ok: bool,
    /// Its latency in ms, when it came.
    #[serde(default)]
    pub latency_ms: Option<f64>,
}

/// The order of the list (`sort=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sort {
    /// By address (the master's default).
    Address,
    /// By name.
    Name,
    /// By name, descending.
    NameDesc,
    /// By the master's latency, fastest first.
    Latency,
    /// By the master's latency, slowest first.
    LatencyDesc,
    /// By clients, fewest first.
    Clients,
    /// By clients, most first.
    ClientsDesc,
}

impl Sort {
    /// The value of `sort=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Address => "address",
            Sort::Name => "name",
            Sort::NameDesc => "-name",
            Sort::Latency => "latency",
            Sort::LatencyDesc => "-latency",
            Sort::Clients => "clients",
            Sort::ClientsDesc => "-clients",
        }
    }
}

/// Which servers to list: the filters of `GET /servers`, all optional.
///
/// ```
/// use peng3dnet::master::{Query, Sort};
///
/// let q = Query::new().tag("eu").tag("pvp").name("Lobby 1").free().up().sort(Sort::Name);
/// assert_eq!(q.to_query_string(), "tag=eu&tag=pvp&name=Lobby%201&free=1&up=1&sort=name");
/// assert_eq!(Query::new().to_query_string(), "");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Servers with all of these tags.
    pub tags: Vec<String>,
    /// Servers whose name contains this (case-insensitive).
    pub name: Option<String>,
    /// Servers with a free slot (clients below max_clients).
    pub free: bool,
    /// Servers of this version.
    pub version: Option<String>,
    /// Servers up only (not marked down).
    pub up: bool,
    /// The order.
    pub sort: Option<Sort>,
    /// One page of at most this many servers (the master allows 10,000); `None`: every
    /// server, page after page ([`fetch`]).
    pub limit: Option<u32>,
    /// Skip this many servers.
    pub offset: Option<u32>,
}

impl Query {
    /// Every server.
    pub fn new() -> Query {
        Query::default()
    }

    /// Adds a tag every server listed must have.
    pub fn tag(mut self, tag: impl Into<String>) -> Query {
        self.tags.push(tag.into());
        self
    }

    /// Servers whose name contains `part` (case-insensitive).
    pub fn name(mut self, part: impl Into<String>) -> Query {
        self.name = Some(part.into());
        self
    }

    /// Servers with a free slot.
    pub fn free(mut self) -> Query {
        self.free = true;
        self
    }

    /// Servers of this version.
    pub fn version(mut self, version: impl Into<String>) -> Query {
        self.version = Some(version.into());
        self
    }

    /// Servers up only.
    pub fn up(mut self) -> Query {
        self.up = true;
        self
    }

    /// In this order.
    pub fn sort(mut self, sort: Sort) -> Query {
        self.sort = Some(sort);
        self
    }

    /// One page of at most `n` servers.
    pub fn limit(mut self, n: u32) -> Query {
        self.limit = Some(n);
        self
    }

    /// Skip `n` servers.
    pub fn offset(mut self, n: u32) -> Query {
        self.offset = Some(n);
        self
    }

    /// The query string (`tag=eu&up=1`), values percent-encoded; empty for no filter.
    pub fn to_query_string(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for tag in &self.tags {
            parts.push(format!("tag={}", encode(tag)));
        }
        if let Some(name) = &self.name {
            parts.push(format!("name={}", encode(name)));
        }
        if self.free {
            parts.push("free=1".into());
        }
        if let Some(version) = &self.version {
            parts.push(format!("version={}", encode(version)));
        }
        if self.up {
            parts.push("up=1".into());
        }
        if let Some(sort) = self.sort {
            parts.push(format!("sort={}", sort.as_str()));
        }
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        if let Some(offset) = self.offset {
            parts.push(format!("offset={offset}"));
        }
        parts.join("&")
    }
}

/// How the client talks to a master.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Time allowed for each request: resolving, connecting, TLS, the request and the
    /// whole answer (default 10 s; an announce waits for the master's own ping of the
    /// server, a few seconds at most).
    pub timeout: Duration,
    /// Largest answer body accepted, in bytes (default 16 MiB: a page of 1,000 servers
    /// with their pong data and history is a few MB).
    pub max_response_bytes: usize,
    /// Most servers [`fetch`] reads over all pages (default 100,000); a list that has
    /// more is [`MasterError::TooLarge`].
    pub max_servers: usize,
    /// Servers per page when [`fetch`] reads every page (default 1,000).
    pub page_size: u32,
    /// TLS for `https://` masters (`None`: the system's root certificates).
    pub tls: Option<ClientTls>,
    /// Connect from this local address (`None`: the system chooses). An announce without
    /// `host` lists the address the master sees it come from.
    pub source: Option<IpAddr>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(10),
            max_response_bytes: 16 << 20,
            max_servers: 100_000,
            page_size: 1000,
            tls: None,
            source: None,
        }
    }
}

impl FetchOptions {
    fn exchange(&self) -> Exchange<'_> {
        Exchange {
            timeout: self.timeout,
            max_body: self.max_response_bytes,
            tls: self.tls.as_ref(),
            source: self.source,
        }
    }
}

/// One page of a master's list.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Page {
    /// Servers matching the query, before paging.
    pub total: u64,
    /// This page's servers.
    pub servers: Vec<ListedServer>,
    /// The answer's `ETag`, for [`fetch_page_if_changed`].
    pub etag: Option<String>,
}

/// Checks a master's URL without sending anything: `http://` or (with TLS) `https://`, a
/// host, no query string; the error says what is wrong (for a settings check before
/// starting).
///
/// ```
/// use peng3dnet::master::check_url;
///
/// assert!(check_url("http://127.0.0.1:8090").is_ok());
/// assert_eq!(check_url("127.0.0.1:8090").unwrap_err().kind(), "bad_url");
/// ```
pub fn check_url(url: &str) -> Result<(), MasterError> {
    MasterUrl::parse(url).map(|_| ())
}

/// Every server of the master at `url` that matches `query`, page after page (one page
/// when `query.limit` is set), with the [default options](FetchOptions::default).
///
/// `url` is the master's base URL (`http://master.example.org:8090`, or with a path
/// prefix when the master is served under one). A server listed on two pages (the list
/// changed between them) is returned once.
///
/// ```no_run
/// # async fn demo() -> Result<(), peng3dnet::master::MasterError> {
/// let servers = peng3dnet::master::fetch("http://127.0.0.1:8090", &Default::default()).await?;
/// println!("{} servers", servers.len());
/// # Ok(()) }
/// ```
pub async fn fetch(url: &str, query: &Query) -> Result<Vec<ListedServer>, MasterError> {
    fetch_with(url, query, &FetchOptions::default()).await
}

/// [`fetch`] with options.
pub async fn fetch_with(
    url: &str,
    query: &Query,
    options: &FetchOptions,
) -> Result<Vec<ListedServer>, MasterError> {
    let url = MasterUrl::parse(url)?;
    if query.limit.is_some() {
        return Ok(page(&url, query, options, None)
            .await?
            .map(|p| p.servers)
            .unwrap_or_default());
    }
    let page_size = options.page_size.clamp(1, 10_000);
    let mut offset = query.offset.unwrap_or(0);
    let mut servers = Vec::new();
    let mut seen = HashSet::new();
    let mut read = 0usize;
    loop {
        let one = query.clone().limit(page_size).offset(offset);
        let Some(got) = page(&url, &one, options, None).await? else {
            break;
        };
        let n = got.servers.len();
        read += n;
        if read > options.max_servers {
            return Err(MasterError::TooLarge {
                master: url.shown(),
                what: format!(
                    "more than {} servers (max_servers); narrow the query",
                    options.max_servers
                ),
            });
        }
        for server in got.servers {
            if seen.insert(server.address.clone()) {
                servers.push(server);
            }
        }
        offset = offset.saturating_add(n as u32);
        if n == 0 || u64::from(offset) >= got.total || offset == u32::MAX {
            break;
        }
    }
    Ok(servers)
}

/// One page of the list, as `query` asks (`limit` and `offset`; the master's default
/// page is 1,000 servers).
pub async fn fetch_page(
    url: &str,
    query: &Query,
    options: &FetchOptions,
) -> Result<Page, MasterError> {
    let url = MasterUrl::parse(url)?;
    Ok(page(&url, query, options, None).await?.unwrap_or_default())
}

/// [`fetch_page`] unless the list is unchanged since the answer that gave `etag`
/// (`If-None-Match`): `None` then, and nothing is sent but the status.
pub async fn fetch_page_if_changed(
    url: &str,
    query: &Query,
    options: &FetchOptions,
    etag: &str,
) -> Result<Option<Page>, MasterError> {
    let url = MasterUrl::parse(url)?;
    page(&url, query, options, Some(etag)).await
}

/// `GET /servers`: `None` for a 304.
async fn page(
    url: &MasterUrl,
    query: &Query,
    options: &FetchOptions,
    etag: Option<&str>,
) -> Result<Option<Page>, MasterError> {
    let answer = exchange(
        url,
        Method::GET,
        "/servers",
        &query.to_query_string(),
        None,
        etag,
        options.exchange(),
    )
    .await?;
    if answer.status == StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    let bad = |reason: String| MasterError::BadResponse {
        master: url.shown(),
        reason,
    };
    #[derive(Deserialize)]
    struct Raw {
        schema: u64,
        #[serde(default)]
        total: Option<u64>,
        servers: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(&answer.body)
        .map_err(|e| bad(format!("not the list of servers ({e})")))?;
    if raw.schema != SCHEMA {
        return Err(bad(format!(
            "schema version {}; this client reads version {SCHEMA}",
            raw.schema
        )));
    }
    let servers = raw
        .servers
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<ListedServer>(v).map_err(|e| bad(format!("server {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Page {
        total: raw.total.unwrap_or(servers.len() as u64),
        servers,
        etag: answer.etag,
    }))
}

/// What a server asks a master: list it (or unlist it) at this port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Announcement {
    /// The server's port.
    pub port: u16,
    /// The host to list, instead of the address the request comes from: honoured only
    /// from announcers the master trusts (else `403 forbidden`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Tags (at most [`MAX_TAGS`], each 1 to [`MAX_TAG_CHARS`] characters of
    /// `A-Z a-z 0-9 _ . -`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Announcement {
    /// An announcement of `port`, no host, no tags.
    pub fn port(port: u16) -> Announcement {
        Announcement {
            port,
            ..Announcement::default()
        }
    }

    /// Checks what the master would refuse anyway: port 0, the number and form of tags.
    pub fn check(&self) -> Result<(), MasterError> {
        let bad = |reason: String| Err(MasterError::BadRequest { reason });
        if self.port == 0 {
            return bad("cannot announce port 0 (announce the port the server is bound to)".into());
        }
        if self.tags.len() > MAX_TAGS {
            return bad(format!(
                "{} tags: a master takes at most {MAX_TAGS}",
                self.tags.len()
            ));
        }
        for tag in &self.tags {
            let ok_chars = tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS || !ok_chars {
                return bad(format!(
                    "tag {:?}: tags are 1 to {MAX_TAG_CHARS} characters of A-Z a-z 0-9 _ . -",
                    error::clean_text(tag)
                ));
            }
        }
        if let Some(host) = &self.host {
            if host.is_empty() || host.len() > 255 || host.chars().any(char::is_control) {
                return bad(format!("host {:?} is not a host", error::clean_text(host)));
            }
        }
        Ok(())
    }
}

/// A master's answer to an announce.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Announced {
    /// The address listed (`host:port`).
    pub address: String,
    /// The listing, when the master sent it.
    pub server: Option<ListedServer>,
    /// When to announce again, as the master asks (`reannounce_after_s`).
    pub reannounce_after: Option<Duration>,
}

/// `POST /announce`: asks the master at `url` to list `what` (or refresh its listing). The
/// master pings the server before it answers; a server it cannot ping is refused with
/// `422 not_verified` ([`MasterError::Refused`]).
pub async fn announce(
    url: &str,
    what: &Announcement,
    options: &FetchOptions,
) -> Result<Announced, MasterError> {
    let url = MasterUrl::parse(url)?;
    announce_to(&url, what, options).await
}

pub(crate) async fn announce_to(
    url: &MasterUrl,
    what: &Announcement,
    options: &FetchOptions,
) -> Result<Announced, MasterError> {
    what.check()?;
    let body = serde_json::to_vec(what).unwrap_or_default();
    let answer = exchange(
        url,
        Method::POST,
        "/announce",
        "",
        Some(body),
        None,
        options.exchange(),
    )
    .await?;
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        listed: Option<bool>,
        address: String,
        #[serde(default)]
        server: Option<serde_json::Value>,
        #[serde(default)]
        reannounce_after_s: Option<u64>,
    }
    let bad = |reason: String| MasterError::BadResponse {
        master: url.shown(),
        reason,
    };
    let raw: Raw = serde_json::from_slice(&answer.body)
        .map_err(|e| bad(format!("not an answer to an announce ({e})")))?;
    if raw.listed == Some(false) {
        return Err(bad("the answer says the server is not listed".into()));
    }
    Ok(Announced {
        address: error::clean_text(&raw.address),
        server: raw
            .server
            .and_then(|v| serde_json::from_value::<ListedServer>(v).ok()),
        reannounce_after: raw.reannounce_after_s.map(Duration::from_secs),
    })
}

/// `DELETE /announce`: asks the master at `url` to unlist `what`. `Ok(true)` when it was
/// listed, `Ok(false)` when the master did not list it (`404 not_found`).
pub async fn unlist(
    url: &str,
    what: &Announcement,
    options: &FetchOptions,
) -> Result<bool, MasterError> {
    let url = MasterUrl::parse(url)?;
    unlist_at(&url, what, options).await
}

pub(crate) async fn unlist_at(
    url: &MasterUrl,
    what: &Announcement,
    options: &FetchOptions,
) -> Result<bool, MasterError> {
    #[derive(Serialize)]
    struct Body<'a> {
        port: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<&'a str>,
    }
    let body = serde_json::to_vec(&Body {
        port: what.port,
        host: what.host.as_deref(),
    })
    .unwrap_or_default();
    match exchange(
        url,
        Method::DELETE,
        "/announce",
        "",
        Some(body),
        None,
        options.exchange(),
    )
    .await
    {
        Ok(_) => Ok(true),
        Err(MasterError::Refused { status: 404, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
