//! Reading a PROXY protocol header off a new connection, before anything else (TLS
//! included) touches it: exactly the header's bytes are consumed, so the TLS sniff and
//! the frame decoder see the relayed connection's first byte.
//!
//! Each round peeks at what has arrived, parses the header bytes so far plus the peeked
//! ones, and takes from the socket only what belongs to the header: the whole header once
//! it is complete, or everything peeked while it is still a prefix (all of it is header
//! then). A header that arrives in one segment, as balancers send it, costs one peek and
//! one read.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::proxy::{parse, ProxyHeader, Refusal, MAX_HEADER_LEN};

/// Why a connection's header was refused, for the count and the log line.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) reason: Refusal,
    pub(crate) why: String,
}

/// Reads the header, no later than `deadline`.
pub(crate) async fn read(tcp: &mut TcpStream, deadline: Instant) -> Result<ProxyHeader, Refused> {
    let mut header = Vec::new();
    let mut peeked = vec![0u8; MAX_HEADER_LEN];
    loop {
        let room = MAX_HEADER_LEN.saturating_sub(header.len()).max(1);
        let n = match timeout_at(deadline, tcp.peek(&mut peeked[..room])).await {
            Err(_) => {
                return Err(cut_short(
                    &header,
                    "nothing more came within the handshake timeout",
                ))
            }
            Ok(Err(e)) => return Err(cut_short(&header, &format!("reading failed: {e}"))),
            Ok(Ok(0)) => return Err(cut_short(&header, "the connection closed")),
            Ok(Ok(n)) => n,
        };
        let before = header.len();
        header.extend_from_slice(&peeked[..n]);
        let parsed = parse(&header).map_err(|e| Refused {
            reason: Refusal::of(&e),
            why: e.to_string(),
        })?;
        // Take from the socket what belongs to the header: all of it when complete, all
        // that was peeked while it is not.
        let take = match &parsed {
            Some(h) => h.len - before,
            None => n,
        };
        match timeout_at(deadline, tcp.read_exact(&mut peeked[..take])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(cut_short(&header, &format!("reading failed: {e}"))),
            Err(_) => return Err(cut_short(&header, "the handshake timeout passed")),
        }
        if let Some(h) = parsed {
            return Ok(h);
        }
    }
}

/// The refusal of a connection that stopped sending before its header was complete.
fn cut_short(header: &[u8], what: &str) -> Refused {
    if header.is_empty() {
        Refused {
            reason: Refusal::Missing,
            why: format!("no PROXY protocol header: {what} before its first byte"),
        }
    } else {
        Refused {
            reason: Refusal::Partial,
            why: format!(
                "partial PROXY protocol header: {what} after {} bytes of it",
                header.len()
            ),
        }
    }
}
