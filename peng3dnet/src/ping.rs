//! Pinging a server: the client side of the ping extension.
//!
//! [`ping_server`] is the seed's `pingServer`: one connection, one ping, one pong, closed
//! with `pingcomplete`. [`PingSession`] is the building block underneath (the seed's
//! `PingableClientMixin`): it keeps the connection open for several pings, each with a
//! sequence number, so a latency series is not dominated by connect cost.
//!
//! Every reply carries the server's whole map plus `recvtime` and `delay` (as the
//! reference's does), and typed extras: the delay measured on a monotonic clock (right even
//! when the server's write-back is off, where the reference fails), the time of each phase,
//! and the server's own processing time when it reports one.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Framed;

use crate::client::close_stream;
use crate::codec::Codec;
use crate::config::Config;
pub use crate::error::PingError;
use crate::error::{FrameError, Phase};
use crate::frame::Frame;
use crate::pong::{unix_seconds, SERVER_TIMING_KEY};
use crate::protocol::{ids, ClientProtocol, CloseReason, ConnType, Event};
use crate::registry::Registry;
use crate::target::{Family, ToTarget};
use crate::tls::{ClientTls, SecurityLevel};
use crate::transport::Stream;
use crate::value::{self, get, insert, map, Value};

/// Keys the client library adds to a reply, not sent by the server.
const LOCAL_KEYS: [&str; 2] = ["recvtime", "delay"];

/// Options of a ping (the seed's `pingServer` arguments besides the address).
#[derive(Debug, Clone)]
pub struct PingOptions {
    /// Configuration (limits, compression, default port).
    pub config: Config,
    /// Data sent in the ping (a map); `time` and `seq` are set by the library.
    pub data: Value,
    /// Time allowed for the whole ping: resolving, connecting, hello and pong.
    /// Default 10 s, as the reference's.
    pub timeout: Duration,
    /// Address family.
    pub family: Family,
    /// TLS, if the server speaks it (`None`: plain TCP, as the reference).
    pub tls: Option<ClientTls>,
    /// Connect from this local address (`None`: the system chooses), as iputils'
    /// `ping -I` and fping's `-S`; only server addresses of its family are tried.
    pub local_addr: Option<std::net::IpAddr>,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions {
            config: Config::default(),
            data: map([]),
            timeout: Duration::from_secs(10),
            family: Family::Any,
            tls: None,
            local_addr: None,
        }
    }
}

/// How long each phase of a ping took, on a monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Timings {
    /// Name resolution (zero for a session's later pings).
    pub resolve: Duration,
    /// TCP connect (zero for a session's later pings).
    pub connect: Duration,
    /// TLS handshake (zero without TLS and for a session's later pings).
    pub tls: Duration,
    /// From connected to hello received (zero for a session's later pings).
    pub hello: Duration,
    /// From ping sent to pong received: the round trip.
    pub ping: Duration,
    /// From start to pong received.
    pub total: Duration,
    /// The server's own time between receiving the ping and sending the pong, when it
    /// reports it (our servers do; the Python reference does not).
    pub server: Option<Duration>,
}

/// A pong, as returned to the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReply {
    /// Sequence number of the ping in its session (0 for the first).
    pub seq: u64,
    /// The server's whole map plus `recvtime` (Unix seconds) and `delay` (seconds), as
    /// the reference's `pingServer` returns it.
    pub data: Value,
    /// Round trip from ping sent to pong received, on a monotonic clock.
    pub delay: Duration,
    /// Each phase's duration.
    pub timings: Timings,
    /// Address that answered.
    pub peer: SocketAddr,
    /// How secure the connection was.
    pub security: SecurityLevel,
}

impl PingReply {
    /// The server's data without what is not the server's: the echo of our ping
    /// (`oldmsg`), the server's timestamps, and the keys the client library added.
    pub fn server_data(&self) -> Value {
        let entries = self.data.as_map().map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    let k = k.as_str().unwrap_or("");
                    k != "oldmsg" && k != SERVER_TIMING_KEY && !LOCAL_KEYS.contains(&k)
                })
                .cloned()
                .collect()
        });
        Value::Map(entries.unwrap_or_default())
    }

    /// The echo of our ping, if the server has write-back on.
    pub fn echo(&self) -> Option<&Value> {
        get(&self.data, "oldmsg")
    }

    /// A value of the server's data by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        get(&self.data, key)
    }

    /// The server's data as a serde type (extra keys are ignored unless the type denies
    /// unknown fields).
    ///
    /// ```
    /// # fn f(reply: peng3dnet::ping::PingReply) -> Result<(), peng3dnet::ValueError> {
    /// #[derive(serde::Deserialize)]
    /// struct Status { name: String, clients: u32 }
    /// let status: Status = reply.deserialize()?;
    /// # Ok(()) }
    /// ```
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, crate::ValueError> {
        value::from_value(self.server_data())
    }
}

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
    protocol: ClientProtocol,
    config: Config,
    /// Ping data; `time` and `seq` are set per ping.
    data: Value,
    /// Per-ping time allowance after the first.
    timeout: Duration,
    /// Next sequence number.
    next_seq: u64,
    /// The ping awaiting its pong: sequence number, monotonic send time.
    outstanding: Option<(u64, Instant)>,
    /// A pong that already arrived and was not yet taken.
    ready: Option<PingReply>,
    /// Timings of connection set-up, charged to the first reply.
    setup: Option<(Instant, Timings)>,
    /// Server address.
    peer: SocketAddr,
    /// How secure the connection is.
    security: SecurityLevel,
    /// A one-shot ping's session ([`ping_server`], [`ping_addrs`]): the answer to the
    /// hello is held back and goes out with the ping, in one write.
    one_shot: bool,
}

impl PingSession {
    /// Connects to a target and waits for the hello; sets the type to `ping`.
    pub async fn connect(
        target: impl ToTarget,
        options: &PingOptions,
    ) -> Result<PingSession, PingError> {
        Self::connect_target(target, options, false).await
    }

    async fn connect_target(
        target: impl ToTarget,
        options: &PingOptions,
        one_shot: bool,
    ) -> Result<PingSession, PingError> {
        let start = Instant::now();
        let deadline = crate::deadline::at(start, options.timeout);
        let target = target
            .to_target(options.config.client_port)
            .map_err(PingError::from)?;
        let addrs = timeout_at(deadline, target.resolve(options.family))
            .await
            .map_err(|_| PingError::Timeout {
                phase: Phase::Resolving,
                after: options.timeout,
                target: Some(target.to_string()),
            })?
            .map_err(|source| PingError::Resolve {
                target: target.to_string(),
                source,
            })?;
        let resolved = Instant::now();
        Self::connect_resolved(
            &addrs,
            &target.host,
            options,
            start,
            resolved - start,
            one_shot,
        )
        .await
        .map_err(|e| e.with_target(&target))
    }

    /// Connects to a socket address directly (no resolution).
    pub async fn connect_addr(
        addr: SocketAddr,
        options: &PingOptions,
    ) -> Result<PingSession, PingError> {
        let host = addr.ip().to_string();
        Self::connect_resolved(
            &[addr],
            &host,
            options,
            Instant::now(),
            Duration::ZERO,
            false,
        )
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
        Self::connect_addrs_as(addrs, host, options, false).await
    }

    async fn connect_addrs_as(
        addrs: &[SocketAddr],
        host: &str,
        options: &PingOptions,
        one_shot: bool,
    ) -> Result<PingSession, PingError> {
        Self::connect_resolved(
            addrs,
            host,
            options,
            Instant::now(),
            Duration::ZERO,
            one_shot,
        )
        .await
        .map_err(|e| e.with_target(host))
    }

    async fn connect_resolved(
        addrs: &[SocketAddr],
        host: &str,
        options: &PingOptions,
        start: Instant,
        resolve: Duration,
        one_shot: bool,
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
                Codec::new(config.limits.frame, config.compression),
                greeting,
            ),
            protocol: ClientProtocol::new(
                ConnType::Ping,
                Registry::shared_internal(),
                config.registry_sync,
                config.limits.max_depth,
            )
            .with_max_items(config.limits.max_items),
            config,
            data: options.data.clone(),
            timeout: options.timeout,
            next_seq: 0,
            outstanding: None,
            ready: None,
            setup: None,
            peer,
            security,
            one_shot,
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
        let frame = match self.framed.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(FrameError::Io(e))) => return Err(PingError::Io(e)),
            Some(Err(e)) => {
                self.abort(CloseReason::InvalidPacket).await;
                return Err(PingError::NotPeng3dnet(e.to_string()));
            }
            None => return Err(PingError::ClosedByPeer(None)),
        };
        if frame.id != ids::HELLO && frame.id != ids::CLOSECONN {
            self.abort(CloseReason::InvalidPacket).await;
            return Err(PingError::NotPeng3dnet(format!(
                "first packet has id {}, not hello",
                frame.id
            )));
        }
        let step = self.protocol.handle(frame);
        if let Some(out) = step.send {
            if self.one_shot && matches!(step.event, Some(Event::Established(_))) {
                // Buffered only: the ping's write takes it along (one segment, one read
                // for the server), as does a closeconn if there is no ping.
                self.framed.feed(out).await.map_err(PingError::from)?;
            } else {
                self.write(out).await?;
            }
        }
        match step.event {
            Some(Event::Established(_)) => Ok(()),
            Some(Event::PeerClosed(reason)) => Err(crate::error::closed_at_hello(reason)),
            Some(Event::Close(CloseReason::ProtoVersionMismatch)) => {
                self.abort(CloseReason::ProtoVersionMismatch).await;
                Err(PingError::ProtocolMismatch)
            }
            Some(Event::Close(reason)) => {
                self.abort(reason.clone()).await;
                Err(PingError::NotPeng3dnet(format!("invalid hello ({reason})")))
            }
            _ => Err(PingError::NotPeng3dnet("invalid hello".into())),
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
        self.protocol.close();
        let _ = close_stream(&mut self.framed, &reason, self.config.limits.close_linger).await;
    }

    /// [`abort`](Self::abort), but waiting for the server's end of stream no later than
    /// `deadline`: the closeconn is still sent (if the socket takes it at once), and a
    /// server that never closes cannot make us overrun the caller's timeout.
    async fn abort_by(&mut self, reason: CloseReason, deadline: Instant) {
        let linger = deadline
            .saturating_duration_since(Instant::now())
            .min(self.config.limits.close_linger);
        self.protocol.close();
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
        let seq = self.next_seq;
        self.next_seq += 1;
        let message = ping_message(&self.data, seq);
        let frame = Frame::new(ids::PING, value::encode(&message));
        self.outstanding = Some((seq, Instant::now()));
        self.ready = None;
        self.write(frame).await?;
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
        if let Some(reply) = self.ready.take() {
            return Ok(reply);
        }
        let Some((seq, sent)) = self.outstanding else {
            return Err(PingError::State("no ping outstanding"));
        };
        let deadline = crate::deadline::at(Instant::now(), timeout);
        loop {
            let frame = match timeout_at(deadline, self.framed.next()).await {
                Err(_) => {
                    return Err(PingError::Timeout {
                        phase: Phase::WaitingForPong,
                        after: timeout,
                        target: Some(self.peer.to_string()),
                    })
                }
                Ok(None) => return Err(PingError::ClosedByPeer(None)),
                Ok(Some(Err(FrameError::Io(e)))) => return Err(PingError::Io(e)),
                Ok(Some(Err(e))) => {
                    let reason = e.close_reason().unwrap_or(CloseReason::InvalidPacket);
                    self.abort_by(reason.clone(), deadline).await;
                    return Err(PingError::Protocol(reason));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let received = Instant::now();
            let recvtime = unix_seconds(SystemTime::now());
            let step = self.protocol.handle(frame);
            match step.event {
                Some(Event::Pong(data)) => {
                    if echoed_seq(&data).is_some_and(|s| s != seq) {
                        continue; // a late pong of an earlier ping
                    }
                    self.outstanding = None;
                    return Ok(self.reply(seq, data, sent, received, recvtime));
                }
                Some(Event::PeerClosed(reason)) => return Err(PingError::ClosedByPeer(reason)),
                Some(Event::Close(reason)) => {
                    self.abort_by(reason.clone(), deadline).await;
                    return Err(PingError::Protocol(reason));
                }
                _ => continue,
            }
        }
    }

    fn reply(
        &mut self,
        seq: u64,
        data: Value,
        sent: Instant,
        received: Instant,
        recvtime: f64,
    ) -> PingReply {
        let delay = received - sent;
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
            seq,
            data,
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

/// Pings a server once (the seed's `pingServer`): connects, sends `data` with `time` set,
/// waits for the pong and closes with `pingcomplete`, all within `options.timeout`.
///
/// ```no_run
/// # async fn f() -> Result<(), peng3dnet::ping::PingError> {
/// use peng3dnet::ping::{ping_server, PingOptions};
/// let reply = ping_server("localhost:8080", &PingOptions::default()).await?;
/// println!("{} answered in {:?}: {}", reply.peer, reply.delay, reply.server_data());
/// # Ok(()) }
/// ```
///
/// A server cannot make it take longer than `options.timeout`: the closing handshake
/// (closeconn, then waiting for the server's end of stream) is cut short at that deadline.
pub async fn ping_server(
    target: impl ToTarget,
    options: &PingOptions,
) -> Result<PingReply, PingError> {
    let deadline = crate::deadline::at(Instant::now(), options.timeout);
    let session = PingSession::connect_target(target, options, true).await?;
    ping_once(session, deadline).await
}

/// [`ping_server`] for addresses already resolved: connects to the first that accepts, as
/// RFC 8305 describes ([`crate::happy_eyeballs`]), and checks a TLS certificate against
/// `host`.
///
/// ```no_run
/// # async fn f() -> Result<(), peng3dnet::ping::PingError> {
/// use peng3dnet::ping::{ping_addrs, PingOptions};
/// let addrs = ["[::1]:8080".parse().unwrap(), "127.0.0.1:8080".parse().unwrap()];
/// let reply = ping_addrs(&addrs, "localhost", &PingOptions::default()).await?;
/// println!("{} answered in {:?}", reply.peer, reply.delay);
/// # Ok(()) }
/// ```
pub async fn ping_addrs(
    addrs: &[SocketAddr],
    host: &str,
    options: &PingOptions,
) -> Result<PingReply, PingError> {
    let deadline = crate::deadline::at(Instant::now(), options.timeout);
    let session = PingSession::connect_addrs_as(addrs, host, options, true).await?;
    ping_once(session, deadline).await
}

/// One ping over a new session, then closing it by `deadline`.
async fn ping_once(mut session: PingSession, deadline: Instant) -> Result<PingReply, PingError> {
    let result = session.ping().await;
    match &result {
        Ok(_) => session.abort_by(CloseReason::PingComplete, deadline).await,
        // The server closed, or we already closed with the reason it earned.
        Err(PingError::ClosedByPeer(_) | PingError::Protocol(_) | PingError::ProtocolMismatch) => {}
        Err(_) => session.abort_by(CloseReason::Timeout, deadline).await,
    }
    result
}

/// The ping message: the caller's data (a map) with `time` (Unix seconds, now) and `seq`
/// set, as the seed's client sends it.
pub(crate) fn ping_message(data: &Value, seq: u64) -> Value {
    let mut message = if data.is_map() { data.clone() } else { map([]) };
    insert(
        &mut message,
        "time",
        Value::F64(unix_seconds(SystemTime::now())),
    );
    insert(&mut message, "seq", Value::from(seq));
    message
}

/// A pong as a [`PingReply`]: adds `recvtime` and `delay` to the server's map (as the
/// reference's `pingServer` does) and reads the server's own timing when it reports one.
pub(crate) fn finish_reply(
    seq: u64,
    mut data: Value,
    delay: Duration,
    recvtime: f64,
    mut timings: Timings,
    peer: SocketAddr,
    security: SecurityLevel,
) -> PingReply {
    if !data.is_map() {
        data = map([]);
    }
    let server = get(&data, SERVER_TIMING_KEY).and_then(|t| {
        let recv = get(t, "recvtime")?.as_f64()?;
        let send = get(t, "sendtime")?.as_f64()?;
        Duration::try_from_secs_f64(send - recv).ok()
    });
    insert(&mut data, "recvtime", Value::F64(recvtime));
    insert(&mut data, "delay", Value::F64(delay.as_secs_f64()));
    timings.ping = delay;
    timings.server = server;
    PingReply {
        seq,
        data,
        delay,
        timings,
        peer,
        security,
    }
}

/// The sequence number a pong echoes (from its `oldmsg`), if the server has write-back on.
pub(crate) fn echoed_seq(pong: &Value) -> Option<u64> {
    get(pong, "oldmsg")
        .and_then(|m| get(m, "seq"))
        .and_then(Value::as_u64)
}
