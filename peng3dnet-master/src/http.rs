//! The HTTP API (docs/master.md): hyper 1, HTTP/1.1, one task per connection.
//!
//! Limits, so that one bad client never harms the others: connections at once in all
//! and per source (more are closed when accepted), a request's headers and body must
//! arrive within [`Settings::request_timeout`] (slowloris), headers at most 16 KiB and a
//! body at most [`MAX_BODY`] (413 before reading more), JSON nesting as serde_json
//! bounds it (128 levels).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RETRY_AFTER,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use peng3dnet::ping::PingOptions;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{check_tags, AnnounceRequest, Pong};
use crate::ratelimit::source_key;
use crate::snapshot::Query;
use crate::store::{ListError, Listing};
use crate::verify::Verified;
use crate::Master;

/// Largest request body, in bytes: an announce is well under 1 KiB.
pub const MAX_BODY: usize = 16 << 10;

/// Longest a connection is kept, whatever it does: keep-alive clients reconnect.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// The answer to a connection over the per-source cap, written without waiting.
const PER_SOURCE_REFUSAL: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\
Retry-After: 1\r\nConnection: close\r\nContent-Length: 83\r\n\r\n\
{\"error\":\"rate_limited\",\"message\":\"too many connections from this address at once\"}";

/// The web page.
const INDEX_HTML: &str = include_str!("web/index.html");

type Answer = Response<Full<Bytes>>;

fn body(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_answer(status: StatusCode, value: serde_json::Value) -> Answer {
    body(status, "application/json", value.to_string())
}

/// An error answer: `{"error": kind, "message": sentence}`.
pub(crate) fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Answer {
    json_answer(status, json!({ "error": kind, "message": message.into() }))
}

/// A refusal before it is an answer: status, kind, sentence.
struct Refusal {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            kind,
            message: message.into(),
        }
    }

    fn answer(self) -> (Answer, Option<&'static str>) {
        (error(self.status, self.kind, self.message), Some(self.kind))
    }
}

/// Open connections per source key, and the guard that counts one.
#[derive(Default)]
struct PerSource(Mutex<HashMap<IpAddr, usize>>);

struct SourceGuard {
    map: Arc<PerSource>,
    ip: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl PerSource {
    fn enter(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<SourceGuard> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(SourceGuard {
            map: self.clone(),
            ip,
        })
    }
}

/// Serves the API on `listener` until `stop`; then lets the requests under way finish
/// (an announce being verified is stored and answered), closing idle connections.
pub(crate) async fn serve(listener: TcpListener, master: Arc<Master>, stop: CancellationToken) {
    let settings = master.settings();
    let open = Arc::new(Semaphore::new(settings.max_connections));
    let per_source = Arc::new(PerSource::default());
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let settings = master.settings();
        let Ok(permit) = open.clone().try_acquire_owned() else {
            master.metrics.refused("max_connections");
            continue;
        };
        let ip = peer.ip().to_canonical();
        // The per-source cap counts the TCP peer: behind a balancer, its own cap is the one
        // that matters.
        let Some(guard) = per_source.enter(ip, settings.max_connections_per_source) else {
            master.metrics.refused("per_source");
            // A word before the close, if the socket takes it at once (never waited for).
            let _ = stream.try_write(PER_SOURCE_REFUSAL);
            continue;
        };
        let master = master.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let _guard = guard;
            connection(stream, peer, master, stop).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    master: Arc<Master>,
    stop: CancellationToken,
) {
    let settings = master.settings();
    let mut client = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if settings.proxy_protocol {
        if !settings
            .proxy_trusted
            .iter()
            .any(|c| c.contains(client.ip()))
        {
            master.metrics.refused("untrusted_proxy");
            return;
        }
        match crate::proxy::read_header(&mut stream, settings.request_timeout).await {
            Ok(Some(source)) => client = SocketAddr::new(source.ip().to_canonical(), source.port()),
            Ok(None) => {} // LOCAL (a health check): the balancer itself
            Err(why) => {
                master.metrics.refused("proxy_header");
                tracing::debug!(%peer, %why, "PROXY header refused");
                return;
            }
        }
    }
    let service = {
        let master = master.clone();
        service_fn(move |request| {
            let master = master.clone();
            async move { Ok::<_, Infallible>(handle(request, client, master).await) }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.request_timeout)
        .max_buf_size(16 << 10)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let age = tokio::time::sleep(MAX_CONNECTION_AGE);
    tokio::pin!(age);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.cancelled() => {}
        _ = &mut age => {}
    }
    conn.as_mut().graceful_shutdown();
    // A request under way gets the time of a request to finish.
    let _ = tokio::time::timeout(settings.request_timeout + settings.ping_timeout, conn).await;
}

async fn handle(request: Request<Incoming>, client: SocketAddr, master: Arc<Master>) -> Answer {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let answer = match (path.as_str(), &method) {
        ("/", &Method::GET | &Method::HEAD) => {
            let mut a = body(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML);
            a.headers_mut().insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                ),
            );
            a
        }
        ("/servers" | "/servers.txt", &Method::GET | &Method::HEAD) => {
            servers(&request, &master, path == "/servers.txt")
        }
        ("/metrics", &Method::GET | &Method::HEAD) => body(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            master.metrics.encode(),
        ),
        ("/healthz", &Method::GET | &Method::HEAD) => {
            let snapshot = master.list.snapshot();
            json_answer(
                StatusCode::OK,
                json!({ "ok": true, "listed": snapshot.servers.len(), "up": snapshot.up,
                        "master": master.settings().master_id }),
            )
        }
        ("/announce", &Method::POST) => announce(request, client, &master, true).await,
        ("/announce", &Method::DELETE) => announce(request, client, &master, false).await,
        ("/" | "/servers" | "/servers.txt" | "/metrics" | "/healthz" | "/announce", _) => {
            let allow = if path == "/announce" {
                "POST, DELETE"
            } else {
                "GET, HEAD"
            };
            let mut a = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}: use {allow}"),
            );
            a.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            a
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path: the API has /servers, /servers.txt, /announce, /metrics, /healthz",
        ),
    };
    answer
}

fn servers(request: &Request<Incoming>, master: &Master, text: bool) -> Answer {
    let query = match Query::parse(request.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let rendered = master.list.render(&query, text);
    let etag = HeaderValue::from_str(&rendered.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let not_modified = request
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == rendered.etag
        });
    let mut answer = if not_modified {
        let mut a = Response::new(Full::new(Bytes::new()));
        *a.status_mut() = StatusCode::NOT_MODIFIED;
        a
    } else if text {
        body(StatusCode::OK, "text/plain; charset=utf-8", rendered.body)
    } else {
        body(StatusCode::OK, "application/json", rendered.body)
    };
    answer.headers_mut().insert(ETAG, etag);
    answer
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer
}

/// Reads a body of at most [`MAX_BODY`] bytes within the request timeout.
async fn read_body(request: Request<Incoming>, timeout: Duration) -> Result<Bytes, Refusal> {
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the body is {} bytes; at most {MAX_BODY} are accepted",
                declared.unwrap_or(0)
            ),
        ));
    }
    match tokio::time::timeout(
        timeout,
        Limited::new(request.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            format!("the body did not arrive within {} s", timeout.as_secs_f64()),
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is larger than {MAX_BODY} bytes"),
            ))
        }
        Ok(Err(e)) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body could not be read: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The IP to list: the request's source, or `host` from a trusted announcer.
fn target_ip(host: Option<&str>, client: IpAddr, trusted: bool) -> Result<IpAddr, Refusal> {
    let Some(host) = host else {
        return Ok(client);
    };
    let trimmed = host.trim().trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = trimmed.parse::<IpAddr>() else {
        let shown: String = host.chars().take(64).collect();
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("host {shown:?} is not an IP address (names are not listed)"),
        ));
    };
    let ip = ip.to_canonical();
    if ip != client && !trusted {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "host {ip} differs from the address the announce came from ({client}), \
                 and {client} is not a trusted announcer"
            ),
        ));
    }
    let unusable = ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if unusable {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{ip} cannot be pinged (unspecified, multicast or broadcast)"),
        ));
    }
    Ok(ip)
}

async fn announce(
    request: Request<Incoming>,
    client: SocketAddr,
    master: &Master,
    list: bool,
) -> Answer {
    let method = if list { "post" } else { "delete" };
    let (answer, reason) = announce_inner(request, client, master, list).await;
    master.metrics.announce(method, reason);
    answer
}

async fn announce_inner(
    request: Request<Incoming>,
    client: SocketAddr,
    master: &Master,
    list: bool,
) -> (Answer, Option<&'static str>) {
    let settings = master.settings();
    let client_ip = client.ip();
    let trusted = settings.trusted.iter().any(|c| c.contains(client_ip));
    let source = source_key(client_ip);
    // The body first (bounded): a client answered before it finished sending would
    // see its connection reset instead of the answer.
    let bytes = match read_body(request, settings.request_timeout).await {
        Ok(b) => b,
        Err(refusal) => return refusal.answer(),
    };
    if !trusted {
        // Each server a source has listed adds its re-announces (one per refresh) to the
        // source's allowance, so that many servers behind one address keep their listing.
        let listed = master
            .snapshot()
            .per_source
            .get(&source)
            .copied()
            .unwrap_or(0);
        let per_minute =
            settings.announce_rate + listed as f64 * 60.0 / settings.refresh.as_secs_f64();
        let burst = settings
            .announce_burst
            .saturating_add(u32::try_from(listed).unwrap_or(u32::MAX));
        if let Err(wait) = master.limiter.take(&source, per_minute, burst) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut a = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many announces from {source}: at most {per_minute:.1} a minute after a burst of {burst}; retry in {secs} s"
                ),
            );
            a.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            return (a, Some("rate_limited"));
        }
    }
    // Into a JSON value first: serde_json refuses nesting deeper than 128 there, wherever
    // it is (an ignored field's value is not checked otherwise).
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
        .and_then(serde_json::from_value::<AnnounceRequest>);
    let parsed: AnnounceRequest = match parsed {
        Ok(p) => p,
        Err(e) => {
            return (
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "the body is not an announce ({{\"port\": 7000, \"tags\": [...]}}): {e}"
                    ),
                ),
                Some("bad_request"),
            )
        }
    };
    let port = match u16::try_from(parsed.port) {
        Ok(p) if p > 0 => p,
        _ => {
            return (
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("port {} is out of range: 1 to 65535", parsed.port),
                ),
                Some("bad_request"),
            )
        }
    };
    let tags = match check_tags(parsed.tags.as_deref().unwrap_or(&[])) {
        Ok(t) => t,
        Err(message) => {
            return (
                error(StatusCode::BAD_REQUEST, "bad_request", message),
                Some("bad_request"),
            )
        }
    };
    let ip = match target_ip(parsed.host.as_deref(), client_ip, trusted) {
        Ok(ip) => ip,
        Err(refusal) => return refusal.answer(),
    };
    let addr = SocketAddr::new(ip, port);
    let address = addr.to_string();
    if !list {
        return match master.store.unlist(&address).await {
            Ok(true) => {
                master.synced().await;
                tracing::info!(%address, source = %source, "unlisted");
                (
                    json_answer(
                        StatusCode::OK,
                        json!({ "listed": false, "address": address }),
                    ),
                    None,
                )
            }
            Ok(false) => (
                error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("{address} is not listed"),
                ),
                Some("not_found"),
            ),
            Err(e) => {
                master.metrics.store_errors.inc();
                tracing::error!(error = %e, "unlisting failed");
                (
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the database failed; try again",
                    ),
                    Some("internal"),
                )
            }
        };
    }
    let options = PingOptions {
        timeout: settings.ping_timeout,
        ..PingOptions::default()
    };
    let pong: Pong = match master
        .verifier
        .verify(addr, &options, settings.ping_spacing)
        .await
    {
        Verified::Result(outcome) => match outcome.as_ref() {
            Ok(p) => {
                master.metrics.ping("verify", true);
                p.clone()
            }
            Err(why) => {
                master.metrics.ping("verify", false);
                tracing::info!(%address, source = %source, %why, "announce not verified");
                return (
                    error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "not_verified",
                        format!("{address} did not answer the master's ping: {why}"),
                    ),
                    Some("not_verified"),
                );
            }
        },
        Verified::Refreshing => match master.store.get(&address).await {
            Ok(Some(r)) if r.up => Pong {
                name: r.name,
                motd: r.motd,
                clients: r.clients,
                max_clients: r.max_clients,
                version: r.version,
                data: r.data,
                latency_ms: r.latency_ms.unwrap_or(0.0),
            },
            _ => {
                let secs = settings.ping_spacing.as_secs_f64().ceil().max(1.0) as u64;
                let mut a = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("{address} is being pinged right now; announce again in {secs} s"),
                );
                a.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
                return (a, Some("rate_limited"));
            }
        },
    };
    let now = crate::clock::now_ms();
    let listing = Listing {
        address: address.clone(),
        host: ip.to_string(),
        port,
        source: source.clone(),
        tags: serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into()),
        pong,
        at: now,
        next_due: now + settings.refresh.as_millis() as i64,
        max_servers: settings.max_servers,
        max_per_source: (!trusted).then_some(settings.max_per_source),
        history: settings.history,
    };
    match master.store.list(listing).await {
        Ok(record) => {
            master.synced().await;
            tracing::info!(%address, source = %source, "listed");
            (
                json_answer(
                    StatusCode::OK,
                    json!({
                        "listed": true,
                        "address": address,
                        "server": record.to_server(),
                        "reannounce_after_s": settings.refresh.as_secs().max(1),
                    }),
                ),
                None,
            )
        }
        Err(ListError::Full(message)) => (
            error(StatusCode::SERVICE_UNAVAILABLE, "full", message),
            Some("full"),
        ),
        Err(ListError::Store(e)) => {
            master.metrics.store_errors.inc();
            tracing::error!(error = %e, "storing an announce failed");
            (
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the database failed; try again",
                ),
                Some("internal"),
            )
        }
    }
}
