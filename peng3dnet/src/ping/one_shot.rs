//! The one-shot ping ([`super::ping_server`], and every ping of [`crate::many`]): one
//! connection, one ping, one timer.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use peng3dnet_proto::ping_client::{Pong, Received};
use peng3dnet_proto::PingClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{finish_reply, on_read, PingError, PingOptions, PingReply, Timings};
use crate::deadline::Clock;
use crate::error::{FrameError, Phase};
use crate::frame::{Frame, FrameCodec};
use crate::pong::unix_seconds;
use crate::protocol::{closeconn_frame, ids, CloseReason};
use crate::tls::ClientTls;
use crate::transport::Stream;

/// When a one-shot ping began and how long it has ([`one_shot`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shot {
    /// The start (before resolving, if the caller resolved).
    pub(crate) start: Instant,
    /// Time allowed from `start` for everything; also the `after` of a time-out while
    /// connecting or waiting for the hello.
    pub(crate) timeout: Duration,
    /// Time the caller spent resolving (for [`Timings::resolve`]).
    pub(crate) resolve: Duration,
}

/// Room for a frame before each read of a one-shot ping (a hello, a pong of our servers).
const READ_ROOM: usize = 512;

/// A one-shot ping's connection: the socket, the bytes read and not yet taken as frames,
/// the write buffer, and the codec.
struct Wire {
    stream: Stream,
    read: BytesMut,
    write: BytesMut,
    codec: FrameCodec,
    linger: Duration,
}

impl Wire {
    /// The next frame; `None` at the end of the stream.
    async fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        loop {
            match self.codec.decode(&mut self.read) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            self.read.reserve(READ_ROOM);
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) => return self.codec.decode_eof(&mut self.read).transpose(),
                Ok(_) => {}
                Err(e) => return Some(Err(FrameError::Io(e))),
            }
        }
    }

    /// Writes the write buffer out and empties it.
    async fn flush(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.write).await?;
        self.write.clear();
        self.stream.flush().await
    }

    /// Closes as [`close_stream`] does (closeconn with `reason`, our end shut, then the
    /// server's end of stream awaited), for at most the close linger and never past the
    /// clock's deadline; a step that is ready at once is still taken after it.
    async fn close<H>(&mut self, clock: &mut Clock<'_, H>, reason: &CloseReason) {
        clock.cut(Instant::now() + self.linger);
        let _ = clock
            .within(async {
                self.write.clear();
                self.codec
                    .encode(closeconn_frame(Some(reason)), &mut self.write)
                    .map_err(std::io::Error::other)?;
                self.flush().await?;
                self.stream.shutdown().await?;
                loop {
                    self.read.clear();
                    self.read.reserve(READ_ROOM);
                    if self.stream.read_buf(&mut self.read).await? == 0 {
                        return Ok::<(), std::io::Error>(());
                    }
                }
            })
            .await;
    }
}

/// One ping over a new connection, closed with `pingcomplete` ([`ping_server`],
/// [`ping_addrs`], and [`crate::many`]'s pings): the exchange, bytes, errors and close
/// reasons of a [`PingSession`] connected, pinged once and closed, without the session's
/// machinery: no `Framed`, the ping encoded straight into the write buffer and sent with
/// the answer to the hello in one write, the pong decoded once, and one timer for every
/// step up to `shot`'s deadline. `hold` (a place among `many`'s fresh pings) is kept until
/// its time on that same timer, or until the ping ends.
pub(crate) async fn one_shot<H>(
    addrs: &[SocketAddr],
    host: &str,
    options: &PingOptions,
    shot: Shot,
    hold: Option<(H, Instant)>,
) -> Result<PingReply, PingError> {
    let deadline = crate::deadline::at(shot.start, shot.timeout);
    let sleep = std::pin::pin!(tokio::time::sleep_until(deadline));
    let mut clock = Clock::new(sleep, deadline, hold);
    let connect_start = Instant::now();
    let tls_options = options.tls.as_ref();
    let opened = match (tls_options, addrs) {
        // Plain TCP to one address (a literal, a name with one address): the attempt on
        // the ping's own timer; the errors of `happy_eyeballs` for one address.
        (None, [addr]) => {
            let attempt = crate::happy_eyeballs::attempt(*addr, options.local_addr, deadline);
            clock
                .within(attempt)
                .await
                .map(|(addr, connected)| match connected {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        Ok((Stream::Plain(tcp), Duration::ZERO, addr))
                    }
                    Err(source) => Err(PingError::Connect { addr, source }),
                })
        }
        // Boxed: a race of addresses or a TLS handshake would make every ping's state
        // larger.
        _ => {
            let open = crate::client::open(addrs, host, tls_options, options.local_addr, deadline);
            clock.within(Box::pin(open)).await
        }
    };
    let (mut stream, tls, peer) = match opened {
        Some(opened) => opened?,
        None => {
            return Err(PingError::Timeout {
                phase: Phase::Connecting,
                after: connect_start.elapsed(),
                target: None,
            })
        }
    };
    let security = stream.security(tls_options.is_some_and(ClientTls::verifies));
    let connected = Instant::now();
    let read = crate::client::read_greeting_by(&mut stream, &mut clock, shot.timeout).await?;
    let config = &options.config;
    let mut wire = Wire {
        stream,
        read,
        write: BytesMut::new(),
        codec: FrameCodec::new(options.frame_limits(), config.compression),
        linger: config.limits.close_linger,
    };
    let mut client = PingClient::new(config);

    // The hello.
    let Some(read) = clock.within(wire.next_frame()).await else {
        return Err(PingError::Timeout {
            phase: Phase::WaitingForHello,
            after: shot.timeout,
            target: None,
        });
    };
    let settype = match on_read(&mut client, read, Instant::now().into_std()) {
        Ok(Received::Established(settype)) => settype,
        Ok(_) => return Err(PingError::NotPeng3dnet("invalid hello".into())),
        Err(stop) => {
            if let Some(reason) = stop.close {
                wire.close(&mut clock, &reason).await;
            }
            return Err(stop.error);
        }
    };
    let hello = Instant::now() - connected;

    // The answer to the hello and the ping, in one write (as PingSession::ping).
    wire.codec.encode(settype, &mut wire.write)?;
    let mut body = Vec::with_capacity(64);
    let unix_time = unix_seconds(SystemTime::now());
    client
        .send_ping(
            &mut body,
            &options.data,
            unix_time,
            Instant::now().into_std(),
        )
        .map_err(|_| PingError::State("the ping connection is not established"))?;
    wire.codec.encode_body(ids::PING, &body, &mut wire.write)?;
    let write_timeout = config.limits.write_timeout;
    let result = match clock
        .within(tokio::time::timeout(write_timeout, wire.flush()))
        .await
    {
        None => Err(PingError::Timeout {
            phase: Phase::Sending,
            after: shot.timeout,
            target: Some(peer.to_string()),
        }),
        Some(Err(_)) => Err(PingError::Timeout {
            phase: Phase::Sending,
            after: write_timeout,
            target: Some(peer.to_string()),
        }),
        Some(Ok(Err(e))) => Err(PingError::from(FrameError::Io(e))),
        Some(Ok(Ok(()))) => await_pong(&mut wire, &mut client, &mut clock, peer).await,
    };
    match &result {
        Ok(_) => wire.close(&mut clock, &CloseReason::PingComplete).await,
        // The server closed, or we already closed with the reason it earned.
        Err(PingError::ClosedByPeer(_) | PingError::Protocol(_) | PingError::ProtocolMismatch) => {}
        Err(_) => wire.close(&mut clock, &CloseReason::Timeout).await,
    }
    let (pong, received, recvtime) = result?;
    let timings = Timings {
        resolve: shot.resolve,
        connect: connected - connect_start - tls,
        tls,
        hello,
        total: received - shot.start,
        ..Timings::default()
    };
    Ok(finish_reply(
        pong.seq,
        pong.message,
        pong.delay,
        recvtime,
        timings,
        peer,
        security,
    ))
}

/// Waits for the pong of a one-shot ping (as [`PingSession::wait_for_pong`]); returns it
/// with the monotonic and Unix times it came at.
async fn await_pong<H>(
    wire: &mut Wire,
    client: &mut PingClient,
    clock: &mut Clock<'_, H>,
    peer: SocketAddr,
) -> Result<(Pong, Instant, f64), PingError> {
    let after = clock.deadline().saturating_duration_since(Instant::now());
    loop {
        let Some(read) = clock.within(wire.next_frame()).await else {
            return Err(PingError::Timeout {
                phase: Phase::WaitingForPong,
                after,
                target: Some(peer.to_string()),
            });
        };
        let received = Instant::now();
        let recvtime = unix_seconds(SystemTime::now());
        match on_read(client, read, received.into_std()) {
            Ok(Received::Pong(pong)) => return Ok((pong, received, recvtime)),
            Ok(_) => continue,
            Err(stop) => {
                if let Some(reason) = stop.close {
                    wire.close(clock, &reason).await;
                }
                return Err(stop.error);
            }
        }
    }
}
