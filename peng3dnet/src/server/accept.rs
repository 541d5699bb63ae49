//! The accept loop: the connection cap, per-address slots, and the refusals of those not
//! served (closeconn `serverfull`, written without waiting past a small cap).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::frame::FrameCodec;
use crate::protocol::{closeconn_frame, CloseReason};

pub(super) async fn accept_loop<H: Handler>(
    listener: TcpListener,
    shared: Arc<Shared>,
    handler: Arc<H>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(ok) => {
                backoff = Duration::from_millis(5);
                ok
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning,
                // and keep serving the connections we have.
                tracing::warn!("accept failed: {e}; retrying in {} ms", backoff.as_millis());
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Some(policy) = &shared.proxy {
            if !policy.trusts(addr.ip()) {
                // The header must not be accepted from it, and guessing whether it sent
                // one is what the spec forbids: closed before anything is read.
                shared.stats.proxy.untrusted.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    peer = %addr,
                    "refused: the PROXY protocol is on and this source is not trusted to send its header (trusted: {policy})"
                );
                continue;
            }
        }
        // Behind balancers the client's address is known only after its PROXY header:
        // the connection's task counts it then.
        let cap_at_accept = shared.per_addr.is_capped() && shared.proxy.is_none();
        let slot = if cap_at_accept {
            shared.per_addr.take(addr.ip())
        } else {
            None
        };
        if cap_at_accept && slot.is_none() {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            let per_addr = shared.per_addr.max();
            tracing::info!(peer = %addr, "refused: more than {per_addr} connections from this address");
            refuse_full(&shared, stream);
            continue;
        }
        match shared.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                if let Some(observer) = &shared.observer {
                    observer.accepted();
                }
                let shared2 = shared.clone();
                let handler = handler.clone();
                shared.tracker.spawn(async move {
                    connection(stream, addr, shared2, handler).await;
                    drop(slot);
                    drop(permit);
                });
            }
            Err(_) => {
                drop(slot);
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                if let Some(observer) = &shared.observer {
                    observer.refused(CloseReason::ServerFull.as_str());
                }
                tracing::info!(peer = %addr, "refused: server full");
                refuse_full(&shared, stream);
            }
        }
    }
}

use super::conn::connection;
use super::handler::Handler;
use super::Shared;

/// Tells a connection we refuse why (in plain, before any TLS), then closes it; drains
/// what the peer sent so that the closeconn is not destroyed by a reset. Bounded by
/// `within`.
/// Refusals at the accept loop that may wait at once for their peer to read the
/// `serverfull` (up to 1 s each). Each holds a file descriptor outside the connection cap:
/// without a bound, a flood of refused connections took every descriptor and the server
/// could accept no one else.
pub(super) const MAX_LINGERING_REFUSALS: usize = 64;

/// Tells a connection the accept loop will not serve that the server is full. While few
/// refusals linger, it waits (briefly) for the peer to read the closeconn before closing;
/// past [`MAX_LINGERING_REFUSALS`] the closeconn is put in the new socket's empty send
/// buffer without waiting and the socket closed at once. A TLS client could not read a
/// plain closeconn: it is simply closed.
pub(super) fn refuse_full(shared: &Shared, stream: TcpStream) {
    if shared.tls.is_some() {
        return;
    }
    match shared.lingering.clone().try_acquire_owned() {
        Ok(permit) => {
            let linger = shared.limits.write_timeout.min(Duration::from_secs(1));
            shared.tracker.spawn(async move {
                refuse(stream, CloseReason::ServerFull, linger).await;
                drop(permit);
            });
        }
        Err(_) => {
            let frame = closeconn_frame(Some(&CloseReason::ServerFull));
            if let Ok(wire) = FrameCodec::default().to_bytes(frame) {
                let _ = stream.try_write(&wire);
            }
        }
    }
}

pub(super) async fn refuse(mut stream: TcpStream, reason: CloseReason, within: Duration) {
    let frame = closeconn_frame(Some(&reason));
    if let Ok(wire) = FrameCodec::default().to_bytes(frame) {
        let _ = timeout(within, async {
            stream.write_all(&wire).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 512];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), io::Error>(())
        })
        .await;
    }
}
