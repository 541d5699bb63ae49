//! The PROXY protocol (v1 and v2) in front of the HTTP API, for masters behind HAProxy
//! with `send-proxy-v2`: the header is parsed by the library's sans-I/O parser
//! ([`peng3dnet::proxy::parse`]) and taken off the socket byte-exact (peeked, then read),
//! so that hyper sees the relayed request's first byte.

use std::net::SocketAddr;
use std::time::Duration;

use peng3dnet::proxy::{parse, MAX_HEADER_LEN};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// Reads the header within `timeout`: the client it names, or `None` for `LOCAL` and
/// `UNKNOWN` (the balancer speaking for itself).
pub(crate) async fn read_header(
    tcp: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, String> {
    let deadline = Instant::now() + timeout;
    let mut header = Vec::new();
    let mut peeked = vec![0u8; MAX_HEADER_LEN];
    loop {
        let room = MAX_HEADER_LEN.saturating_sub(header.len()).max(1);
        let n = match timeout_at(deadline, tcp.peek(&mut peeked[..room])).await {
            Err(_) => return Err("no complete PROXY header within the request timeout".into()),
            Ok(Err(e)) => return Err(format!("reading the PROXY header failed: {e}")),
            Ok(Ok(0)) => return Err("the connection closed before its PROXY header".into()),
            Ok(Ok(n)) => n,
        };
        let before = header.len();
        header.extend_from_slice(&peeked[..n]);
        let parsed = parse(&header).map_err(|e| e.to_string())?;
        let take = match &parsed {
            Some(h) => h.len - before,
            None => n,
        };
        match timeout_at(deadline, tcp.read_exact(&mut peeked[..take])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("reading the PROXY header failed: {e}")),
            Err(_) => return Err("no complete PROXY header within the request timeout".into()),
        }
        if let Some(h) = parsed {
            return Ok(h.source);
        }
    }
}
