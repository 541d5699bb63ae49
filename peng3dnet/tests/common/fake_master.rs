//! A small master server speaking the master HTTP API (version 1) for the client's tests:
//! announces verified by a peng3dnet ping back to the announcing address, unlisting,
//! `GET /servers` with the tag, name, free, up, limit and offset filters, and scripted
//! refusals. Every request is reported as an [`Event`] so that a test waits for what it
//! needs (an announce, an unlisting) instead of sleeping.
//!
//! It is a test double of the real master (`peng3dnet master`), not a copy of it: it keeps
//! its list in memory and pings only when asked to list.
//!
//! Included by path by the tests that use it (the library's and the CLI's).
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// What the master was asked.
#[derive(Debug, Clone)]
pub struct Event {
    /// `POST`, `DELETE`, `GET`.
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The request body as JSON (`null` when none or not JSON).
    pub body: Json,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The status answered.
    pub status: u16,
}

/// One listed server.
#[derive(Debug, Clone)]
struct Listing {
    host: String,
    port: u16,
    tags: Vec<String>,
    data: Json,
    latency_ms: f64,
    up: bool,
}

impl Listing {
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn text(&self, key: &str) -> Json {
        match self.data.get(key) {
            Some(Json::String(s)) => Json::String(s.clone()),
            _ => Json::Null,
        }
    }

    fn to_json(&self) -> Json {
        let clients = self.data.get("clients").and_then(Json::as_u64);
        let max = self.data.get("max_clients").and_then(Json::as_u64);
        json!({
            "address": self.address(),
            "host": self.host,
            "port": self.port,
            "up": self.up,
            "name": self.text("name"),
            "motd": self.text("motd"),
            "clients": clients,
            "max_clients": max,
            "version": self.text("version"),
            "data": self.data,
            "tags": self.tags,
            "latency_ms": self.latency_ms,
            "first_seen": "2026-12-07T12:00:00Z",
            "last_seen": "2026-12-07T12:00:00Z",
            "last_ping": "2026-12-07T12:00:00Z",
            "failures": 0,
            "history": [{"at": "2026-12-07T12:00:00Z", "ok": true, "latency_ms": self.latency_ms}],
        })
    }
}

/// A scripted refusal: status, error kind, an extra header.
type Refusal = (u16, &'static str, Option<(&'static str, String)>);

/// The master's state.
#[derive(Default)]
struct State {
    listed: BTreeMap<String, Listing>,
    /// Answers given instead of the real one, to the next requests (status, error kind,
    /// extra header).
    refusals: VecDeque<Refusal>,
    /// `reannounce_after_s` of an accepted announce.
    reannounce_after_s: u64,
    /// The latency the list reports instead of the one measured, when set.
    latency_ms: Option<f64>,
}

/// A running fake master; stops when dropped.
pub struct FakeMaster {
    /// `http://ADDR`.
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeMaster {
    /// Starts one on `127.0.0.1`, a free port, asking announcers to come back after
    /// `reannounce_after_s` seconds.
    pub async fn start(reannounce_after_s: u64) -> FakeMaster {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            reannounce_after_s,
            ..State::default()
        }));
        let (events, _) = broadcast::channel(4096);
        let task = {
            let state = state.clone();
            let events = events.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, peer)) = listener.accept().await else {
                        continue;
                    };
                    let state = state.clone();
                    let events = events.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            let events = events.clone();
                            async move { Ok::<_, Infallible>(handle(req, peer, &state, &events).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            })
        };
        FakeMaster {
            url: format!("http://{addr}"),
            addr,
            state,
            events,
            task,
        }
    }

    /// Receives every event from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The next requests get these refusals, in order, before any real answer.
    pub fn refuse_next(&self, refusals: &[(u16, &'static str)]) {
        let mut state = self.state.lock().unwrap();
        for &(status, kind) in refusals {
            state.refusals.push_back((status, kind, None));
        }
    }

    /// The next request gets a `429 rate_limited` asking for `retry_after_s`.
    pub fn rate_limit_next(&self, retry_after_s: u64) {
        self.state.lock().unwrap().refusals.push_back((
            429,
            "rate_limited",
            Some(("retry-after", retry_after_s.to_string())),
        ));
    }

    /// The addresses listed now.
    pub fn listed(&self) -> Vec<String> {
        self.state.lock().unwrap().listed.keys().cloned().collect()
    }

    /// Reports this latency for every server from now on (a figure no client measures on
    /// loopback, so a test tells the master's figure from the client's own).
    pub fn report_latency_ms(&self, ms: f64) {
        self.state.lock().unwrap().latency_ms = Some(ms);
    }

    /// Marks a listed server down (as a master does after failed pings).
    pub fn mark_down(&self, address: &str) {
        if let Some(l) = self.state.lock().unwrap().listed.get_mut(address) {
            l.up = false;
        }
    }
}

/// Waits for an event matching `pred`, within `limit`.
pub async fn wait_for(
    events: &mut broadcast::Receiver<Event>,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(limit, async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the master stopped"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within {limit:?}"))
}

fn answer(status: u16, body: Json) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn refusal(status: u16, kind: &str, message: &str) -> Response<Full<Bytes>> {
    answer(status, json!({"error": kind, "message": message}))
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    state: &Mutex<State>,
    events: &broadcast::Sender<Event>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let if_none_match = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let json_body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    let mut response = route(&method, &path, &query, &json_body, peer, state).await;
    if method == Method::GET && response.status() == 200 {
        // The list's ETag: a hash of the answer; the same tag again gets a 304.
        use std::hash::{Hash, Hasher};
        let body = response.body().clone().collect().await.unwrap().to_bytes();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        let etag = format!("\"{:016x}\"", h.finish());
        if if_none_match.as_deref() == Some(etag.as_str()) {
            response = Response::builder()
                .status(304)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        response.headers_mut().insert("etag", etag.parse().unwrap());
    }
    let _ = events.send(Event {
        method: method.to_string(),
        path,
        query,
        body: json_body,
        peer,
        status: response.status().as_u16(),
    });
    response
}

async fn route(
    method: &Method,
    path: &str,
    query: &str,
    body: &Json,
    peer: SocketAddr,
    state: &Mutex<State>,
) -> Response<Full<Bytes>> {
    let scripted = state.lock().unwrap().refusals.pop_front();
    if let Some((status, kind, header)) = scripted {
        let mut r = refusal(status, kind, "scripted refusal");
        if let Some((name, value)) = header {
            r.headers_mut().insert(name, value.parse().unwrap());
        }
        return r;
    }
    match (method.as_str(), path) {
        ("POST", "/announce") => announce(body, peer, state).await,
        ("DELETE", "/announce") => {
            let Some(port) = body.get("port").and_then(Json::as_u64) else {
                return refusal(400, "bad_request", "port missing");
            };
            let host = peer.ip().to_string();
            let key = Listing {
                host,
                port: port as u16,
                tags: vec![],
                data: Json::Null,
                latency_ms: 0.0,
                up: true,
            }
            .address();
            match state.lock().unwrap().listed.remove(&key) {
                Some(_) => answer(200, json!({"listed": false, "address": key})),
                None => refusal(404, "not_found", "not listed"),
            }
        }
        ("GET", "/servers") => servers(query, state),
        _ => refusal(404, "not_found", "no such endpoint"),
    }
}

async fn announce(body: &Json, peer: SocketAddr, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let Some(port) = body
        .get("port")
        .and_then(Json::as_u64)
        .filter(|p| (1..=65535).contains(p))
    else {
        return refusal(400, "bad_request", "port missing or out of range");
    };
    if body.get("host").is_some() {
        return refusal(403, "forbidden", "host given by an untrusted announcer");
    }
    let tags: Vec<String> = body
        .get("tags")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let target = SocketAddr::new(peer.ip(), port as u16);
    let options = peng3dnet::ping::PingOptions {
        timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let reply = match peng3dnet::ping::ping_server(target, &options).await {
        Ok(reply) => reply,
        Err(e) => {
            return refusal(
                422,
                "not_verified",
                &format!("no answer from {target} within 3 s: {e}"),
            )
        }
    };
    let data: Json = reply.deserialize().unwrap_or(Json::Null);
    let reported = state.lock().unwrap().latency_ms;
    let listing = Listing {
        host: peer.ip().to_string(),
        port: port as u16,
        tags,
        data,
        latency_ms: reported.unwrap_or(reply.delay.as_secs_f64() * 1000.0),
        up: true,
    };
    let address = listing.address();
    let server = listing.to_json();
    let mut state = state.lock().unwrap();
    state.listed.insert(address.clone(), listing);
    answer(
        200,
        json!({
            "listed": true,
            "address": address,
            "server": server,
            "reannounce_after_s": state.reannounce_after_s,
        }),
    )
}

/// Decodes `%XX` and `+` of a query value.
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn servers(query: &str, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let mut tags = Vec::new();
    let (mut name, mut free, mut up) = (None, false, false);
    let (mut limit, mut offset) = (1000usize, 0usize);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        match k {
            "tag" => tags.push(v),
            "name" => name = Some(v.to_lowercase()),
            "free" => free = v == "1",
            "up" => up = v == "1",
            "limit" => limit = v.parse().unwrap_or(1000),
            "offset" => offset = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let state = state.lock().unwrap();
    let matching: Vec<Json> = state
        .listed
        .values()
        .filter(|l| tags.iter().all(|t| l.tags.contains(t)))
        .filter(|l| {
            name.as_ref().is_none_or(|n| {
                l.text("name")
                    .as_str()
                    .is_some_and(|s| s.to_lowercase().contains(n))
            })
        })
        .filter(|l| !up || l.up)
        .filter(|l| {
            !free || {
                let clients = l.data.get("clients").and_then(Json::as_u64);
                let max = l.data.get("max_clients").and_then(Json::as_u64);
                matches!((clients, max), (Some(c), Some(m)) if c < m)
            }
        })
        .map(Listing::to_json)
        .collect();
    let total = matching.len();
    let page: Vec<Json> = matching.into_iter().skip(offset).take(limit).collect();
    answer(200, json!({"schema": 1, "total": total, "servers": page}))
}
