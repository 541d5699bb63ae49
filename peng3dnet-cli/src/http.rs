//! The small HTTP server behind `serve --metrics` and `exporter`: hyper 1 (HTTP/1.1),
//! one task per connection, GET only.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Most HTTP connections (`/metrics`, the exporter's `/probe`) open at once; more are
/// closed as soon as they are accepted. Each holds a file descriptor for up to the 10 s
/// header timeout, and without a cap a flood of them took every descriptor of the
/// process, so that the peng3dnet listener could accept no player. Scrapers need a
/// handful; the exporter's probes are capped lower still (`--max-concurrent`).
pub(crate) const MAX_CONNECTIONS: usize = 128;

/// The content type of the OpenMetrics text format (what `prometheus-client` encodes).
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of Prometheus' classic text format, version 0.0.4.
pub(crate) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition in the format the scraper asks for: OpenMetrics (what
/// `prometheus-client` encodes) when its Accept header names it, as Prometheus' does;
/// else Prometheus' classic text format 0.0.4 (curl, promtool, older scrapers).
pub(crate) fn exposition<B>(request: &Request<B>, openmetrics: String) -> Response<Full<Bytes>> {
    let wants_openmetrics = request
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        response(StatusCode::OK, OPENMETRICS, openmetrics)
    } else {
        response(
            StatusCode::OK,
            PROMETHEUS_TEXT,
            to_text_format(&openmetrics),
        )
    }
}

/// OpenMetrics text as Prometheus' text format 0.0.4: a counter family is named with
/// its `_total` suffix (as its samples are), and the `# UNIT` and `# EOF` lines go.
pub(crate) fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match meta {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A response with a body and a content type.
pub(crate) fn response(
    status: StatusCode,
    content_type: &str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body.into())
}

/// Serves `handle` on `listener` until `stop` is cancelled. Only GET (and HEAD, which
/// hyper answers without the body) reach `handle`; other methods get 405.
pub(crate) async fn serve<H, F>(listener: TcpListener, stop: CancellationToken, handle: H)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let handle = Arc::new(handle);
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!("metrics/probe listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over the cap, closed at once: its descriptor is the process's, which the
        // peng3dnet listener needs too.
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "HTTP connection refused: {MAX_CONNECTIONS} open already");
            drop(stream);
            continue;
        };
        let handle = handle.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request: Request<Incoming>| {
                let handle = handle.clone();
                async move {
                    if request.method() != Method::GET && request.method() != Method::HEAD {
                        return Ok::<_, Infallible>(text(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "only GET\n",
                        ));
                    }
                    Ok(handle(request, peer).await)
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "HTTP connection: {e}");
                    }
                }
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}

/// The value of query parameter `name` in `query` (percent-decoded; `+` is a space).
/// Given twice it is an error, not the first of the two: a proxy or a scrape config that
/// adds its own `target=` must not silently lose to (or win over) the other one.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, String> {
    let mut values = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key) == name).then(|| decode(value))
        });
    let first = values.next();
    match values.next() {
        Some(_) => Err(format!("the {name} parameter is given more than once")),
        None => Ok(first),
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_with_their_suffix() {
        let om = "# HELP a_x Pings.\n# TYPE a_x counter\na_x_total 3\n# HELP b Bytes.\n\
                  # TYPE b_bytes gauge\n# UNIT b_bytes bytes\nb_bytes 1\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP a_x_total Pings.\n# TYPE a_x_total counter\na_x_total 3\n# HELP b Bytes.\n\
             # TYPE b_bytes gauge\nb_bytes 1\n"
        );
    }

    #[test]
    fn query_params_are_decoded() {
        let q = Some("target=127.0.0.1%3A8080&tls=1&x=a+b&bad=%zz&end=%4&u=%C3%A9%é");
        let get = |name| query_param(q, name).unwrap();
        assert_eq!(get("target").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(get("tls").as_deref(), Some("1"));
        assert_eq!(get("x").as_deref(), Some("a b"));
        assert_eq!(get("bad").as_deref(), Some("%zz"));
        assert_eq!(get("end").as_deref(), Some("%4"));
        assert_eq!(get("u").as_deref(), Some("é%é"));
        assert_eq!(get("missing"), None);
        assert_eq!(query_param(None, "target"), Ok(None));
        // Twice (even spelled differently) is refused, not first-wins.
        assert_eq!(
            query_param(Some("target=a:1&target=b:2"), "target"),
            Err("the target parameter is given more than once".into())
        );
        assert!(query_param(Some("target=a:1&%74arget=b:2"), "target").is_err());
    }
}
