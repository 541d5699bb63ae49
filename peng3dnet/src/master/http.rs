//! One HTTP/1.1 exchange with a master: the URL taken apart, the connection made (the
//! library's own resolver, RFC 8305 connect and rustls), one request sent with hyper and
//! its answer read within a size limit, all under one deadline.
//!
//! hyper's client connection (`hyper::client::conn::http1`) is used rather than a
//! ready-made client such as reqwest: hyper is already in the dependency tree, and its
//! connection-level API lets the library choose the socket (a source address for
//! announces, the happy-eyeballs connect of pings) and the TLS (the library's rustls
//! setup and crypto provider), which a bundled client would do its own way.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::error::{clean_text, MasterError};
use crate::error::ConnectionError;
use crate::tls::ClientTls;
use crate::transport::Stream;

/// Largest status line and headers accepted from a master.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A master's base URL, taken apart: `http[s]://host[:port][/prefix]`.
#[derive(Debug, Clone)]
pub(crate) struct MasterUrl {
    /// `https://`.
    tls: bool,
    /// The host as resolved and as TLS checks it (IPv6 without brackets).
    host: String,
    /// The port (80 or 443 unless given).
    port: u16,
    /// The `Host` header: the authority as written.
    authority: String,
    /// The path prefix, without a trailing `/` (empty for the root).
    prefix: String,
}

impl MasterUrl {
    /// Parses a master's base URL; the error says what is wrong with it.
    pub(crate) fn parse(url: &str) -> Result<MasterUrl, MasterError> {
        let bad = |reason: &str| MasterError::BadUrl {
            url: clean_text(url),
            reason: reason.to_owned(),
        };
        let uri: hyper::Uri = url
            .trim()
            .parse()
            .map_err(|_| bad("not a URL (expected http://HOST[:PORT][/PATH])"))?;
        let tls = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(_) => return Err(bad("only http:// and https:// masters are supported")),
            None => return Err(bad("no scheme: write http://HOST[:PORT]")),
        };
        if tls && !cfg!(feature = "tls") {
            return Err(bad(
                "https:// needs TLS, and this build of peng3dnet has none (its tls feature is off)",
            ));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information (user@host) is not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = match authority.port_u16() {
            Some(0) => return Err(bad("port 0 cannot be connected to")),
            Some(port) => port,
            None if authority.as_str().ends_with(':') => return Err(bad("empty port")),
            None if tls => 443,
            None => 80,
        };
        if uri.query().is_some() {
            return Err(bad(
                "a query string is not part of a master's URL (filters are options)",
            ));
        }
        Ok(MasterUrl {
            tls,
            host,
            port,
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `host:port` for messages (`[v6]:port`).
    pub(crate) fn shown(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Path and query of an endpoint (`/servers`, `?tag=eu`) under the prefix.
    fn target(&self, path: &str, query: &str) -> String {
        if query.is_empty() {
            format!("{}{path}", self.prefix)
        } else {
            format!("{}{path}?{query}", self.prefix)
        }
    }
}

/// How one exchange is made.
#[derive(Clone, Copy)]
pub(crate) struct Exchange<'a> {
    /// For everything: resolving, connecting, TLS, the request and the whole answer.
    pub(crate) timeout: Duration,
    /// Largest body accepted.
    pub(crate) max_body: usize,
    /// TLS for `https://` (system roots when `None`).
    pub(crate) tls: Option<&'a ClientTls>,
    /// Local address to connect from.
    pub(crate) source: Option<IpAddr>,
}

/// A master's answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The status.
    pub(crate) status: StatusCode,
    /// `ETag`, if given.
    pub(crate) etag: Option<String>,
    /// The body, whole.
    pub(crate) body: Bytes,
}

/// Sends one request (`body` as JSON) and reads the answer; a status that is not 2xx or
/// 304 is [`MasterError::Refused`] (or, for a redirect, [`MasterError::Http`]).
pub(crate) async fn exchange(
    url: &MasterUrl,
    method: Method,
    path: &str,
    query: &str,
    body: Option<Vec<u8>>,
    if_none_match: Option<&str>,
    how: Exchange<'_>,
) -> Result<Answer, MasterError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(MasterError::NoRuntime);
    }
    let deadline = crate::deadline::after(how.timeout);
    let run = exchange_by(url, method, path, query, body, if_none_match, how, deadline);
    match tokio::time::timeout_at(deadline, run).await {
        Ok(result) => result,
        Err(_) => Err(MasterError::Timeout {
            master: url.shown(),
            after: how.timeout,
        }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn exchange_by(
    url: &MasterUrl,
    method: Method,
    path: &str,
    query: &str,
    body: Option<Vec<u8>>,
    if_none_match: Option<&str>,
    how: Exchange<'_>,
    deadline: Instant,
) -> Result<Answer, MasterError> {
    let shown = url.shown();
    let master = shown.as_str();
    let stream = connect(url, how, deadline).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEADER_BYTES)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| http_error(master, &e))?;
    let mut request = Request::builder()
        .method(method)
        .uri(url.target(path, query))
        .header(header::HOST, &url.authority)
        .header(
            header::USER_AGENT,
            concat!("peng3dnet/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::ACCEPT, "application/json")
        .header(header::CONNECTION, "close");
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(tag) = if_none_match.and_then(|t| HeaderValue::from_str(t).ok()) {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| MasterError::BadUrl {
            url: format!("{}{}", url.authority, url.target(path, query)),
            reason: format!("cannot make a request of it: {e}"),
        })?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http_error(master, &e))?;
        let (parts, body) = response.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > how.max_body as u64) {
            return Err(too_large(master, how.max_body, declared));
        }
        let body = Limited::new(body, how.max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large(master, how.max_body, None)
                } else {
                    MasterError::Http {
                        master: master.to_owned(),
                        reason: chain(e.as_ref()),
                    }
                }
            })?
            .to_bytes();
        Ok::<_, MasterError>((parts, body))
    };
    tokio::pin!(exchange);
    tokio::pin!(conn);
    let mut conn_open = true;
    let (parts, body) = loop {
        tokio::select! {
            biased;
            result = &mut exchange => break result?,
            ended = &mut conn, if conn_open => {
                conn_open = false;
                // The answer may be complete in hyper's buffers: the exchange says.
                if let Err(e) = ended {
                    return Err(http_error(master, &e));
                }
            }
        }
    };
    let status = parts.status;
    let header_text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(Answer {
            status,
            etag: header_text(header::ETAG),
            body,
        });
    }
    if status.is_redirection() {
        let location = header_text(header::LOCATION)
            .map(|l| format!(" to {}", clean_text(&l)))
            .unwrap_or_default();
        return Err(MasterError::Http {
            master: master.to_owned(),
            reason: format!(
                "HTTP {}: a redirect{location}, which is not followed (give the master's own URL)",
                status.as_u16()
            ),
        });
    }
    let retry_after = header_text(header::RETRY_AFTER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let (error, message) = error_body(&body);
    Err(MasterError::Refused {
        master: master.to_owned(),
        status: status.as_u16(),
        error,
        message,
        retry_after,
    })
}

/// The contract's error body `{"error": KIND, "message": TEXT}`, each part if present.
fn error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: Option<serde_json::Value>,
        message: Option<serde_json::Value>,
    }
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(clean_text(&s)),
        _ => None,
    };
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (
            text(b.error).filter(|e| {
                e.len() <= 64
                    && e.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            }),
            text(b.message),
        ),
        // Not the contract's body (a proxy's error page): a little of its text.
        Err(_) => {
            let shown = String::from_utf8_lossy(&body[..body.len().min(200)]);
            let shown = shown.split_whitespace().collect::<Vec<_>>().join(" ");
            (None, (!shown.is_empty()).then(|| clean_text(&shown)))
        }
    }
}

fn too_large(master: &str, limit: usize, declared: Option<u64>) -> MasterError {
    MasterError::TooLarge {
        master: master.to_owned(),
        what: match declared {
            Some(n) => format!("a body of {n} bytes, over the limit of {limit} bytes"),
            None => format!("a body over the limit of {limit} bytes"),
        },
    }
}

/// An error and its causes, `: `-separated, each once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn http_error(master: &str, e: &hyper::Error) -> MasterError {
    MasterError::Http {
        master: master.to_owned(),
        reason: chain(e),
    }
}

/// Resolves the master's host, connects (from `how.source` if given) and runs the TLS
/// handshake for `https://`.
async fn connect(
    url: &MasterUrl,
    how: Exchange<'_>,
    deadline: Instant,
) -> Result<Stream, MasterError> {
    let master = url.shown();
    let addrs: Vec<_> = match url.host.parse::<IpAddr>() {
        Ok(ip) => vec![std::net::SocketAddr::new(ip, url.port)],
        Err(_) => tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|source| MasterError::Resolve {
                master: master.clone(),
                source,
            })?
            .collect(),
    };
    // A source address reaches only addresses of its own family.
    let addrs: Vec<_> = addrs
        .into_iter()
        .filter(|a| how.source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
        .collect();
    if addrs.is_empty() {
        return Err(MasterError::Resolve {
            master,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                match how.source {
                    Some(s) => format!("no address of the family of the source address {s}"),
                    None => "no address".to_owned(),
                },
            ),
        });
    }
    let (tcp, _) = crate::happy_eyeballs::connect_by(&addrs, how.source, deadline)
        .await
        .map_err(|e| match e {
            ConnectionError::Timeout { .. } => MasterError::Timeout {
                master: master.clone(),
                after: how.timeout,
            },
            // One address: its error alone (the master's address is in the message).
            ConnectionError::Connect { source, .. } if addrs.len() == 1 => MasterError::Connect {
                master: master.clone(),
                reason: io_words(&source),
            },
            e => MasterError::Connect {
                master: master.clone(),
                reason: e.to_string(),
            },
        })?;
    let _ = tcp.set_nodelay(true);
    if !url.tls {
        return Ok(Stream::Plain(tcp));
    }
    tls_connect(url, how, tcp).await
}

#[cfg(feature = "tls")]
async fn tls_connect(
    url: &MasterUrl,
    how: Exchange<'_>,
    tcp: tokio::net::TcpStream,
) -> Result<Stream, MasterError> {
    let tls_error = |reason: String| MasterError::Tls {
        master: url.shown(),
        reason,
    };
    let system;
    let tls = match how.tls {
        Some(tls) => tls,
        None => {
            system = ClientTls::with_system_roots().map_err(|e| tls_error(e.to_string()))?;
            &system
        }
    };
    tls.connect(&url.host, tcp)
        .await
        .map_err(|e| tls_error(crate::tls::describe_handshake_error(&e)))
}

#[cfg(not(feature = "tls"))]
async fn tls_connect(
    url: &MasterUrl,
    how: Exchange<'_>,
    _tcp: tokio::net::TcpStream,
) -> Result<Stream, MasterError> {
    // MasterUrl::parse refuses https:// in this build; kept total all the same.
    let _ = how.tls;
    Err(MasterError::Tls {
        master: url.shown(),
        reason: "this build of peng3dnet has no TLS (its tls feature is off)".into(),
    })
}

/// An I/O error in words, without its `(os error N)` suffix.
fn io_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Percent-encodes a query parameter's value: everything but the unreserved characters
/// of RFC 3986.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() {
        let u = MasterUrl::parse("http://127.0.0.1:8090").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 8090, false));
        assert_eq!(u.target("/servers", "tag=eu"), "/servers?tag=eu");
        let u = MasterUrl::parse("http://[::1]:9/master/").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.shown(), "[::1]:9");
        assert_eq!(u.authority, "[::1]:9");
        assert_eq!(u.target("/announce", ""), "/master/announce");
        assert_eq!(MasterUrl::parse("HTTP://example.org").unwrap().port, 80);
        #[cfg(feature = "tls")]
        assert_eq!(MasterUrl::parse("https://example.org").unwrap().port, 443);
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("ftp://example.org", "only http:// and https://"),
            ("example.org:8090", "no scheme"),
            ("http://u:p@example.org", "user information"),
            ("http://example.org/?tag=eu", "query string"),
            ("http://example.org:0", "port 0"),
            ("http://exa mple.org", "not a URL"),
            ("", "not a URL"),
        ] {
            let e = MasterUrl::parse(url).unwrap_err();
            assert_eq!(e.kind(), "bad_url", "{url}");
            assert!(e.to_string().contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~");
    }

    #[test]
    fn error_bodies_give_kind_and_message() {
        let (e, m) = error_body(br#"{"error":"not_verified","message":"no answer\u001b"}"#);
        assert_eq!(e.as_deref(), Some("not_verified"));
        assert_eq!(m.as_deref(), Some("no answer "));
        let (e, m) = error_body(b"<html>\n<h1>502 Bad Gateway</h1></html>");
        assert_eq!(e, None);
        assert_eq!(m.as_deref(), Some("<html> <h1>502 Bad Gateway</h1></html>"));
        // A kind that is not a word is not shown as one.
        let (e, _) = error_body(br#"{"error":"a b c"}"#);
        assert_eq!(e, None);
    }
}
