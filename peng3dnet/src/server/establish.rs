//! What comes before the protocol on a connection: the PROXY header of a trusted balancer,
//! the TLS sniff (a plain client of a TLS server gets closeconn `tlsrequired`), the TLS
//! handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::accept::refuse;
use super::per_addr::AddrSlot;
use super::Shared;
use crate::protocol::CloseReason;
use crate::transport::Stream;

/// What reading a connection's PROXY header decided.
pub(super) enum Proxied {
    /// Serve it as coming from this address (holding its per-address slot, if capped).
    Serve(SocketAddr, Option<AddrSlot>),
    /// Refused (logged and counted); closes it.
    Refused,
    /// Refused by the per-address cap: tell it `serverfull`.
    Full,
}

/// Reads the PROXY header of a connection from a trusted source and takes the
/// per-address slot of the client it names.
pub(super) async fn proxied(
    tcp: &mut TcpStream,
    via: SocketAddr,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Proxied {
    let stats = &shared.stats.proxy;
    let addr = match crate::proxy_header::read(tcp, deadline).await {
        Ok(header) => match header.source {
            Some(source) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %source, %via, "PROXY protocol {} header", header.version);
                source
            }
            None => {
                stats.local.fetch_add(1, Ordering::Relaxed);
                let what = if header.local {
                    "LOCAL (a health check)"
                } else {
                    "naming no client"
                };
                tracing::debug!(peer = %via, "PROXY protocol {} header {what}: served with the connection's own addresses", header.version);
                via
            }
        },
        Err(refused) => {
            stats
                .refused(refused.reason)
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %via, "refused: {}", refused.why);
            return Proxied::Refused;
        }
    };
    if !shared.per_addr.is_capped() {
        return Proxied::Serve(addr, None);
    }
    match shared.per_addr.take(addr.ip()) {
        Some(slot) => Proxied::Serve(addr, Some(slot)),
        None => {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            let per_addr = shared.per_addr.max();
            tracing::warn!(peer = %addr, %via, "refused: more than {per_addr} connections from this address");
            Proxied::Full
        }
    }
}

/// How long a TLS server waits for a new connection's first bytes before it concludes that
/// the peer is a plain client waiting for a hello (a TLS client sends its ClientHello at
/// once) and answers with a plain closeconn `tlsrequired`; the handshake timeout instead,
/// when that is shorter.
pub const TLS_GRACE: Duration = Duration::from_millis(750);

/// Whether a connection to a TLS server starts with a TLS record: `Some(false)` if its
/// first bytes are something else or it stays silent until `until`, `None` if it closed.
pub(super) async fn first_bytes_tls(tcp: &TcpStream, until: Instant) -> Option<bool> {
    let mut first = [0u8; 2];
    match timeout_at(until, tcp.peek(&mut first)).await {
        Err(_) => Some(false),
        Ok(Ok(0)) | Ok(Err(_)) => None,
        Ok(Ok(n)) => crate::sniff::client_speaks_tls(&first[..n]),
    }
}

/// What comes before the protocol on a server behind balancers or with TLS: the PROXY
/// header (naming the client) and the TLS handshake. `None` when the connection is done
/// with (refused, failed or shut down: logged and counted here).
pub(super) async fn establish(
    mut tcp: TcpStream,
    addr: SocketAddr,
    shared: &Arc<Shared>,
    handshake_deadline: Instant,
) -> Option<(Stream, SocketAddr, Option<AddrSlot>)> {
    // Behind a balancer: the header first (before the TLS sniff), naming the client.
    let (addr, slot) = if shared.proxy.is_some() {
        let proxied = tokio::select! {
            _ = shared.shutdown.cancelled() => return None,
            proxied = proxied(&mut tcp, addr, shared, handshake_deadline) => proxied,
        };
        match proxied {
            Proxied::Serve(addr, slot) => (addr, slot),
            Proxied::Refused => return None,
            Proxied::Full => {
                if shared.tls.is_none() {
                    let within = shared.limits.write_timeout.min(Duration::from_secs(1));
                    refuse(tcp, CloseReason::ServerFull, within).await;
                }
                return None;
            }
        }
    } else {
        (addr, None)
    };
    let stream = match &shared.tls {
        None => Stream::Plain(tcp),
        Some(tls) => match tokio::select! {
            // A peer in the middle of its TLS handshake does not hold up a shutdown.
            _ = shared.shutdown.cancelled() => return None,
            accepted = async {
                // The sniff ends by the handshake's deadline at the latest, and a peer
                // silent until then is a plain client too: it is told `tlsrequired`
                // whichever of the two times is shorter (the handshake's own timer, run
                // alongside, would otherwise close it unanswered when they are equal).
                let sniff_until = handshake_deadline.min(Instant::now() + TLS_GRACE);
                match first_bytes_tls(&tcp, sniff_until).await {
                    Some(true) => timeout_at(handshake_deadline, tls.accept(tcp)).await.map(Ok),
                    Some(false) => Ok(Err(tcp)),
                    None => Ok(Ok(Err(io::ErrorKind::UnexpectedEof.into()))),
                }
            } => match accepted {
                Ok(Err(tcp)) => {
                    tracing::info!(
                        peer = %addr,
                        "refused: the client does not speak TLS (silent, or its first bytes are \
                         not a TLS record); sent closeconn {}",
                        CloseReason::TlsRequired
                    );
                    let within = shared.limits.write_timeout.min(Duration::from_secs(1));
                    refuse(tcp, CloseReason::TlsRequired, within).await;
                    return None;
                }
                Ok(Ok(accepted)) => Ok(accepted),
                Err(elapsed) => Err(elapsed),
            },
        } {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                if let Some(observer) = &shared.observer {
                    observer.tls_handshake_failed();
                }
                tracing::info!(peer = %addr, "TLS handshake failed: {e}");
                return None;
            }
            Err(_) => {
                if let Some(observer) = &shared.observer {
                    observer.tls_handshake_failed();
                }
                tracing::info!(peer = %addr, "TLS handshake timed out");
                return None;
            }
        },
    };
    Some((stream, addr, slot))
}
