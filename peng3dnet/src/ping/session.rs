//! [`PingSession`]: a ping connection kept open for several pings.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use peng3dnet_proto::ping_client::{Pong, Received};
use peng3dnet_proto::PingClient;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Framed;

use super::{finish_reply, on_read, resolve_target, PingError, PingOptions, PingReply, Timings};
use crate::client::close_stream;
use crate::codec::Codec;
use crate::config::Config;
use crate::error::Phase;
use crate::frame::Frame;
use crate::pong::unix_seconds;
use crate::protocol::{ids, CloseReason};
use crate::target::ToTarget;
use crate::tls::{ClientTls, SecurityLevel};
use crate::transport::Stream;
use crate::value::Value;

/// An open ping connection (the seed's `PingableClientMixin` with `wait_for_pong`).
///
/// ```no_run
/// # async fn f() -> Result<(), peng3dnet::ping::PingError> {
/// use peng3dnet::ping::{PingOptions, PingSession};
/// let mut session = PingSession::connect("localhost:8080", &PingOptions::default()).await?;
/// for _ in 0..3 {
///     let reply = session.ping().await?;
///     println!("seq={} time={:?}", reply.seq, reply.delay);
/// }
/// session.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PingSession {
    framed: Framed<Stream, Codec>,
    /// The protocol: hello, sequence numbers, the outstanding ping, closes.
    client: PingClient,
    config: Config,
    /// Ping data; `time` and `seq` are set per ping.
    data: Value,
    /// Per-ping time allowance after the first.
    timeout: Duration,
    /// Timings of connection set-up, charged to the first reply.
    setup: Option<(Instant, Timings)>,
    /// Server address.
    peer: SocketAddr,
    /// How secure the connection is.
    security: SecurityLevel,
}

impl PingSession {
    /// Connects to a target and waits for the hello; sets the type to `ping`.
    pub async fn connect(
        target: impl ToTarget,
        options: &PingOptions,
    ) -> Result<PingSession, PingError> {
        crate::error::require_runtime()?;
        let start = Instant::now();
        let (target, addrs) = resolve_target(target, options, start).await?;
        let resolved = Instant::now();
        Self::connect_resolved(&addrs, &target.host, options, start, resolved - start)
            .await
            .map_err(|e| e.with_target(&target))
    }

    /// Connects to a socket address directly (no resolution).
    pub async fn connect_addr(
        addr: SocketAddr,
        options: &PingOptions,
    ) -> Result<PingSession, PingError> {
        crate::error::require_runtime()?;
        let host = addr.ip().to_string();
        Self::connect_resolved(&[addr], &host, options, Instant::now(), Duration::ZERO)
            .await
            .map_err(|e| e.with_target(addr))
    }

    /// Connects to the first of several addresses that accepts (no resolution), trying
    /// them as RFC 8305 describes ([`crate::happy_eyeballs`]): a name's addresses, say,
    /// resolved by the caller. A TLS certificate is checked against `host`.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), peng3dnet::ping::PingError> {
    /// use peng3dnet::ping::{PingOptions, PingSession};
    /// let addrs = ["[::1]:8080".parse().unwrap(), "127.0.0.1:8080".parse().unwrap()];
    /// let mut session = PingSession::connect_addrs(&addrs, "localhost", &PingOptions::default()).await?;
    /// println!("{} answered", session.peer_addr());
    /// session.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn connect_addrs(
        addrs: &[SocketAddr],
        host: &str,
        options: &PingOptions,
    ) -> Result<PingSession, PingError> {
        crate::error::require_runtime()?;
        Self::connect_resolved(addrs, host, options, Instant::now(), Duration::ZERO)
            .await
            .map_err(|e| e.with_target(host))
    }

    async fn connect_resolved(
        addrs: &[SocketAddr],
        host: &str,
        options: &PingOptions,
        start: Instant,
        resolve: Duration,
    ) -> Result<PingSession, PingError> {
        let deadline = crate::deadline::at(start, options.timeout);
        let connect_start = Instant::now();
        let (mut stream, tls, peer) = crate::client::open(
            addrs,
            host,
            options.tls.as_ref(),
            options.local_addr,
            deadline,
        )
        .await?;
        let security = stream.security(options.tls.as_ref().is_some_and(ClientTls::verifies));
        let connected = Instant::now();
        let greeting = crate::client::read_greeting(&mut stream, deadline, options.timeout).await?;
        let config = options.config.clone();
        let mut session = PingSession {
            framed: crate::client::framed_with(
                stream,
                Codec::new(options.frame_limits(), config.compression),
                greeting,
            ),
            client: PingClient::new(&config),
            config,
            data: options.data.clone(),
            timeout: options.timeout,
            setup: None,
            peer,
            security,
        };
        match timeout_at(deadline, session.await_hello()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(PingError::Timeout {
                    phase: Phase::WaitingForHello,
                    after: options.timeout,
                    target: None,
                })
            }
        }
        let timings = Timings {
            resolve,
            connect: connected - connect_start - tls,
            tls,
            hello: Instant::now() - connected,
            ..Timings::default()
        };
        session.setup = Some((start, timings));
        Ok(session)
    }

    async fn await_hello(&mut self) -> Result<(), PingError> {
        let read = self.framed.next().await;
        match on_read(&mut self.client, read, Instant::now().into_std()) {
            Ok(Received::Established(settype)) => self.write(settype).await,
            Ok(_) => Err(PingError::NotPeng3dnet("invalid hello".into())),
            Err(stop) => {
                if let Some(reason) = stop.close {
                    self.abort(reason).await;
                }
                Err(stop.error)
            }
        }
    }

    /// Sends a frame, bounded by the write timeout: a server that does not read cannot
    /// hold us.
    async fn write(&mut self, frame: Frame) -> Result<(), PingError> {
        match tokio::time::timeout(self.config.limits.write_timeout, self.framed.send(frame)).await
        {
            Ok(result) => result.map_err(PingError::from),
            Err(_) => Err(PingError::Timeout {
                phase: Phase::Sending,
                after: self.config.limits.write_timeout,
                target: Some(self.peer.to_string()),
            }),
        }
    }

    async fn abort(&mut self, reason: CloseReason) {
        self.client.close();
        let _ = close_stream(&mut self.framed, &reason, self.config.limits.close_linger).await;
    }

    /// [`abort`](Self::abort), but waiting for the server's end of stream no later than
    /// `deadline`: the closeconn is still sent (if the socket takes it at once), and a
    /// server that never closes cannot make us overrun the caller's timeout.
    async fn abort_by(&mut self, reason: CloseReason, deadline: Instant) {
        let linger = deadline
            .saturating_duration_since(Instant::now())
            .min(self.config.limits.close_linger);
        self.client.close();
        let _ = close_stream(&mut self.framed, &reason, linger).await;
    }

    /// The address that answered.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Replaces the data sent with later pings (the seed's `setPingData`); `time` and
    /// `seq` are still set by the library.
    pub fn set_data(&mut self, data: Value) {
        self.data = data;
    }

    /// Sets the time allowed for each later ping's pong.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a ping now and returns its sequence number; collect the pong with
    /// [`wait_for_pong`](Self::wait_for_pong).
    pub async fn send_ping(&mut self) -> Result<u64, PingError> {
        let mut body = Vec::with_capacity(64);
        let now = Instant::now().into_std();
        let seq = self
            .client
            .send_ping(&mut body, &self.data, unix_seconds(SystemTime::now()), now)
            .map_err(|_| PingError::State("the session is closed"))?;
        self.write(Frame::new(ids::PING, body)).await?;
        Ok(seq)
    }

    /// Waits up to `timeout` for the pong of the last ping; returns at once if it already
    /// came. A pong for an earlier ping that timed out is skipped.
    ///
    /// Cancel safety: `wait_for_pong` is cancel-safe, so it can be a branch of
    /// `tokio::select!`. Partial frames stay in the session's buffer, the ping stays
    /// outstanding until its pong is handed out (in the poll that decodes it), and the
    /// delay counts from the send: a `wait_for_pong` dropped at an `.await` loses no pong,
    /// and the next call returns it with its true delay. [`send_ping`](Self::send_ping)
    /// is not cancel-safe (a ping dropped mid-write may be half sent): let it finish.
    ///
    /// ```no_run
    /// # async fn f(mut session: peng3dnet::PingSession) -> Result<(), peng3dnet::PingError> {
    /// use std::time::Duration;
    ///
    /// session.send_ping().await?;
    /// let mut frame = tokio::time::interval(Duration::from_millis(16));
    /// let reply = loop {
    ///     tokio::select! {
    ///         reply = session.wait_for_pong(Duration::from_secs(2)) => break reply?,
    ///         _ = frame.tick() => { /* draw a frame; the pong is not lost */ }
    ///     }
    /// };
    /// println!("{:?}", reply.delay);
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_pong(&mut self, timeout: Duration) -> Result<PingReply, PingError> {
        if self.client.outstanding().is_none() {
            return Err(PingError::State("no ping outstanding"));
        }
        let deadline = crate::deadline::at(Instant::now(), timeout);
        loop {
            let Ok(read) = timeout_at(deadline, self.framed.next()).await else {
                return Err(PingError::Timeout {
                    phase: Phase::WaitingForPong,
                    after: timeout,
                    target: Some(self.peer.to_string()),
                });
            };
            let received = Instant::now();
            let recvtime = unix_seconds(SystemTime::now());
            match on_read(&mut self.client, read, received.into_std()) {
                Ok(Received::Pong(pong)) => return Ok(self.reply(pong, received, recvtime)),
                Ok(_) => continue,
                Err(stop) => {
                    if let Some(reason) = stop.close {
                        self.abort_by(reason, deadline).await;
                    }
                    return Err(stop.error);
                }
            }
        }
    }

    fn reply(&mut self, pong: Pong, received: Instant, recvtime: f64) -> PingReply {
        let delay = pong.delay;
        let timings = match self.setup.take() {
            Some((start, t)) => Timings {
                total: received - start,
                ..t
            },
            None => Timings {
                total: delay,
                ..Timings::default()
            },
        };
        finish_reply(
            pong.seq,
            pong.message,
            delay,
            recvtime,
            timings,
            self.peer,
            self.security,
        )
    }

    /// Sends a ping and waits for its pong, within the session's timeout.
    pub async fn ping(&mut self) -> Result<PingReply, PingError> {
        let deadline = match self.setup {
            // The first ping shares the connection's deadline, as the reference's does.
            Some((start, _)) => crate::deadline::at(start, self.timeout),
            None => crate::deadline::at(Instant::now(), self.timeout),
        };
        match timeout_at(deadline, self.send_ping()).await {
            Ok(sent) => sent?,
            Err(_) => {
                return Err(PingError::Timeout {
                    phase: Phase::Sending,
                    after: self.timeout,
                    target: Some(self.peer.to_string()),
                })
            }
        };
        self.wait_for_pong(deadline.saturating_duration_since(Instant::now()))
            .await
    }

    /// Closes with `pingcomplete`.
    pub async fn close(mut self) {
        self.abort(CloseReason::PingComplete).await;
    }
}
