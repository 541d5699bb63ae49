//! Pinging a server: the client side of the ping extension.
//!
//! [`ping_server`] is the seed's `pingServer`: one connection, one ping, one pong, closed
//! with `pingcomplete`, on a path of its own that keeps no session (it is what
//! [`crate::many`] runs thousands of at once). [`PingSession`] (the seed's
//! `PingableClientMixin`) keeps the connection open for several pings, each with a
//! sequence number, so a latency series is not dominated by connect cost; the exchange,
//! the bytes and the errors are the same.
//!
//! Every reply carries the server's whole map plus `recvtime` and `delay` (as the
//! reference's does), and typed extras: the delay measured on a monotonic clock (right even
//! when the server's write-back is off, where the reference fails), the time of each phase,
//! and the server's own processing time when it reports one.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::Framed;

use crate::client::close_stream;
use crate::codec::Codec;
use crate::config::Config;
use crate::deadline::Clock;
pub use crate::error::PingError;
use crate::error::{FrameError, Phase};
use crate::frame::{Frame, FrameCodec};
use crate::pong::{unix_seconds, PongMessage, SERVER_TIMING_KEY};
use crate::protocol::{
    closeconn_frame, ids, ping_body, ClientProtocol, CloseReason, ConnType, Event,
};
use crate::registry::Registry;
use crate::target::{Family, Target, ToTarget};
use crate::tls::{ClientTls, SecurityLevel};
use crate::transport::Stream;
use crate::value::{self, get, insert, map, Value};

/// The keys under which servers give their most clients, in the order
/// [`PingReply::max_clients`] looks: `maxclients` (this project's servers), then the
/// spellings other servers use.
pub const MAX_CLIENTS_KEYS: [&str; 4] = ["maxclients", "max_clients", "maxplayers", "max"];

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
    /// Largest frame (and inflated body) accepted from the server, in bytes: the pong
    /// above all (default [`DEFAULT_MAX_PONG_BYTES`], 64 KiB). A real server's pong is a
    /// few KB, its data and the ping's echo; without this cap every hostile target could
    /// make the client buffer an 8 MiB reply (256 of them took 1.3 GB). Raise it with
    /// large ping data, which a server echoes back. The config's frame limits still
    /// apply when lower.
    pub max_pong_bytes: usize,
}

/// The default of [`PingOptions::max_pong_bytes`]: far above a real pong, and small
/// enough that a client pinging hundreds of hostile targets at once holds a few MB.
pub const DEFAULT_MAX_PONG_BYTES: usize = 64 << 10;

impl PingOptions {
    /// The frame limits of a ping connection: the config's, cut to
    /// [`max_pong_bytes`](Self::max_pong_bytes).
    ///
    /// ```
    /// use peng3dnet::ping::PingOptions;
    ///
    /// let options = PingOptions::default();
    /// assert_eq!(options.frame_limits().max_frame_length, 64 << 10);
    /// ```
    pub fn frame_limits(&self) -> crate::config::FrameLimits {
        let frame = self.config.limits.frame;
        crate::config::FrameLimits {
            max_frame_length: frame.max_frame_length.min(self.max_pong_bytes),
            max_inflated_size: frame.max_inflated_size.min(self.max_pong_bytes),
            ..frame
        }
    }
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
            max_pong_bytes: DEFAULT_MAX_PONG_BYTES,
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
///
/// The server's map ([`data`](Self::data)) is built from the pong's bytes the first time
/// it is asked for, not when the pong arrives: a client that only wants the round trip
/// (a latency check, `peng3dnet ping`) never pays for it.
#[derive(Clone)]
pub struct PingReply {
    /// Sequence number of the ping in its session (0 for the first).
    pub seq: u64,
    /// Round trip from ping sent to pong received, on a monotonic clock.
    pub delay: Duration,
    /// Each phase's duration.
    pub timings: Timings,
    /// Address that answered.
    pub peer: SocketAddr,
    /// How secure the connection was.
    pub security: SecurityLevel,
    /// The pong as received.
    pong: PongMessage,
    /// When it came, in Unix seconds.
    recvtime: f64,
    /// [`data`](Self::data), once built.
    data: OnceLock<Value>,
}

impl PingReply {
    /// The server's whole map plus `recvtime` (Unix seconds) and `delay` (seconds), as the
    /// reference's `pingServer` returns it; built on first use.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), peng3dnet::ping::PingError> {
    /// use peng3dnet::ping::{ping_server, PingOptions};
    /// use peng3dnet::value::get;
    ///
    /// let reply = ping_server("localhost:8080", &PingOptions::default()).await?;
    /// let users = get(reply.data(), "clients").and_then(|v| v.as_u64());
    /// println!("{users:?} users, pong at {:?}", get(reply.data(), "recvtime"));
    /// # Ok(()) }
    /// ```
    pub fn data(&self) -> &Value {
        self.data.get_or_init(|| {
            let mut data = self.pong.to_map(LOCAL_KEYS.len());
            insert(&mut data, "recvtime", Value::F64(self.recvtime));
            insert(&mut data, "delay", Value::F64(self.delay.as_secs_f64()));
            data
        })
    }

    /// The pong's msgpack body exactly as the server sent it (checked to decode within the
    /// connection's limits): for a caller that stores or forwards it without building it.
    pub fn pong_bytes(&self) -> &[u8] {
        self.pong.bytes()
    }

    /// The server's data without what is not the server's: the echo of our ping
    /// (`oldmsg`), the server's timestamps, and the keys the client library added.
    pub fn server_data(&self) -> Value {
        let entries = self.data().as_map().map(|m| {
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
        get(self.data(), "oldmsg")
    }

    /// A value of the server's data by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        get(self.data(), key)
    }

    /// The server's `name`, when it gives one as a string.
    ///
    /// The common keys of a server's data have getters of their own ([`name`](Self::name),
    /// [`motd`](Self::motd), [`clients`](Self::clients), [`max_clients`](Self::max_clients),
    /// [`version`](Self::version)), so a browser does not repeat the key conventions:
    ///
    /// ```
    /// # use peng3dnet::value::map;
    /// # fn f(reply: peng3dnet::ping::PingReply) {
    /// match (reply.clients(), reply.max_clients()) {
    ///     (Some(c), Some(m)) => println!("{}: {c}/{m}", reply.name().unwrap_or("?")),
    ///     _ => println!("{}", reply.name().unwrap_or("?")),
    /// }
    /// # }
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.get("name").and_then(Value::as_str)
    }

    /// The server's message of the day (`motd`), when it gives one as a string.
    pub fn motd(&self) -> Option<&str> {
        self.get("motd").and_then(Value::as_str)
    }

    /// How many clients the server has (`clients`), when it says.
    pub fn clients(&self) -> Option<u64> {
        self.get("clients").and_then(Value::as_u64)
    }

    /// How many clients the server takes at most: the first of [`MAX_CLIENTS_KEYS`] it
    /// gives as a number.
    pub fn max_clients(&self) -> Option<u64> {
        MAX_CLIENTS_KEYS
            .iter()
            .find_map(|key| self.get(key).and_then(Value::as_u64))
    }

    /// The server's own `version`, else the peng3dnet version it reports (our servers
    /// send `peng3dnet: {version}`).
    pub fn version(&self) -> Option<&str> {
        self.get("version").and_then(Value::as_str).or_else(|| {
            self.get("peng3dnet")
                .and_then(|p| get(p, "version"))
                .and_then(Value::as_str)
        })
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

/// Equal when every field and the server's map are.
impl PartialEq for PingReply {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.delay == other.delay
            && self.timings == other.timings
            && self.peer == other.peer
            && self.security == other.security
            && self.data() == other.data()
    }
}

/// Shows the server's map as [`data`](PingReply::data) returns it.
impl std::fmt::Debug for PingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingReply")
            .field("seq", &self.seq)
            .field("data", self.data())
            .field("delay", &self.delay)
            .field("timings", &self.timings)
            .field("peer", &self.peer)
            .field("security", &self.security)
            .finish()
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
        match on_hello(&mut self.protocol, read) {
            Ok(answer) => {
                if let Some(out) = answer {
                    self.write(out).await?;
                }
                Ok(())
            }
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
        let mut body = Vec::with_capacity(64);
        ping_body(&mut body, &self.data, unix_seconds(SystemTime::now()), seq);
        let frame = Frame::new(ids::PING, body);
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
            let Ok(read) = timeout_at(deadline, self.framed.next()).await else {
                return Err(PingError::Timeout {
                    phase: Phase::WaitingForPong,
                    after: timeout,
                    target: Some(self.peer.to_string()),
                });
            };
            let received = Instant::now();
            let recvtime = unix_seconds(SystemTime::now());
            match on_pong_wait(&mut self.protocol, read, seq) {
                Ok(Some(pong)) => {
                    self.outstanding = None;
                    return Ok(self.reply(seq, pong, sent, received, recvtime));
                }
                Ok(None) => continue,
                Err(stop) => {
                    if let Some(reason) = stop.close {
                        self.abort_by(reason, deadline).await;
                    }
                    return Err(stop.error);
                }
            }
        }
    }

    fn reply(
        &mut self,
        seq: u64,
        pong: PongMessage,
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
            pong,
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
    crate::error::require_runtime()?;
    let start = Instant::now();
    let (target, addrs) = resolve_target(target, options, start).await?;
    let shot = Shot {
        start,
        timeout: options.timeout,
        resolve: Instant::now() - start,
    };
    one_shot::<()>(&addrs, &target.host, options, shot, None)
        .await
        .map_err(|e| e.with_target(&target))
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
    crate::error::require_runtime()?;
    let shot = Shot {
        start: Instant::now(),
        timeout: options.timeout,
        resolve: Duration::ZERO,
    };
    one_shot::<()>(addrs, host, options, shot, None)
        .await
        .map_err(|e| e.with_target(crate::target::name_with_port(host, addrs)))
}

/// Parses and resolves a target within `options.timeout` from `start`.
async fn resolve_target(
    target: impl ToTarget,
    options: &PingOptions,
    start: Instant,
) -> Result<(Target, Vec<SocketAddr>), PingError> {
    let deadline = crate::deadline::at(start, options.timeout);
    let target = target.to_target(options.config.client_port)?;
    let addrs = match timeout_at(deadline, target.resolve(options.family)).await {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(source)) => {
            return Err(PingError::Resolve {
                target: target.to_string(),
                source,
            })
        }
        Err(_) => {
            return Err(PingError::Timeout {
                phase: Phase::Resolving,
                after: options.timeout,
                target: Some(target.to_string()),
            })
        }
    };
    Ok((target, addrs))
}

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
    let mut protocol = ClientProtocol::new(
        ConnType::Ping,
        Registry::shared_internal(),
        config.registry_sync,
        config.limits.max_depth,
    )
    .with_max_items(config.limits.max_items);

    // The hello.
    let Some(read) = clock.within(wire.next_frame()).await else {
        return Err(PingError::Timeout {
            phase: Phase::WaitingForHello,
            after: shot.timeout,
            target: None,
        });
    };
    let settype = match on_hello(&mut protocol, read) {
        Ok(Some(settype)) => settype,
        Ok(None) => return Err(PingError::NotPeng3dnet("invalid hello".into())),
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
    ping_body(&mut body, &options.data, unix_seconds(SystemTime::now()), 0);
    wire.codec.encode_body(ids::PING, &body, &mut wire.write)?;
    let sent = Instant::now();
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
        Some(Ok(Ok(()))) => await_pong(&mut wire, &mut protocol, &mut clock, peer).await,
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
        0,
        pong,
        received - sent,
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
    protocol: &mut ClientProtocol,
    clock: &mut Clock<'_, H>,
    peer: SocketAddr,
) -> Result<(PongMessage, Instant, f64), PingError> {
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
        match on_pong_wait(protocol, read, 0) {
            Ok(Some(data)) => return Ok((data, received, recvtime)),
            Ok(None) => continue,
            Err(stop) => {
                if let Some(reason) = stop.close {
                    wire.close(clock, &reason).await;
                }
                return Err(stop.error);
            }
        }
    }
}

/// Why a ping client stops: the error for the caller, and the closeconn reason to send
/// first when closing is ours to do (`None`: the server closed, or the socket failed).
struct Stop {
    error: PingError,
    close: Option<CloseReason>,
}

impl Stop {
    fn closing(reason: CloseReason, error: PingError) -> Stop {
        Stop {
            error,
            close: Some(reason),
        }
    }

    fn quietly(error: PingError) -> Stop {
        Stop { error, close: None }
    }
}

/// What a ping client makes of its first read (`None`: end of stream): the answer to send
/// (the settype) or why to stop. [`PingSession`] and the one-shot ping ([`one_shot`])
/// share it and differ only in their I/O.
fn on_hello(
    protocol: &mut ClientProtocol,
    read: Option<Result<Frame, FrameError>>,
) -> Result<Option<Frame>, Stop> {
    let frame = match read {
        Some(Ok(frame)) => frame,
        Some(Err(FrameError::Io(e))) => return Err(Stop::quietly(PingError::Io(e))),
        Some(Err(e)) => {
            let error = PingError::NotPeng3dnet(e.to_string());
            return Err(Stop::closing(CloseReason::InvalidPacket, error));
        }
        None => return Err(Stop::quietly(PingError::ClosedByPeer(None))),
    };
    if frame.id != ids::HELLO && frame.id != ids::CLOSECONN {
        let error = PingError::NotPeng3dnet(format!("first packet has id {}, not hello", frame.id));
        return Err(Stop::closing(CloseReason::InvalidPacket, error));
    }
    let step = protocol.handle(frame);
    match step.event {
        Some(Event::Established(_)) => Ok(step.send),
        Some(Event::PeerClosed(reason)) => {
            Err(Stop::quietly(crate::error::closed_at_hello(reason)))
        }
        Some(Event::Close(CloseReason::ProtoVersionMismatch)) => Err(Stop::closing(
            CloseReason::ProtoVersionMismatch,
            PingError::ProtocolMismatch,
        )),
        Some(Event::Close(reason)) => {
            let error = PingError::NotPeng3dnet(format!("invalid hello ({reason})"));
            Err(Stop::closing(reason, error))
        }
        _ => Err(Stop::quietly(PingError::NotPeng3dnet(
            "invalid hello".into(),
        ))),
    }
}

/// What a ping client makes of a read while it waits for the pong of ping `seq` (`None`:
/// end of stream): the pong's map, `None` to go on waiting (another packet, or a late pong
/// of an earlier ping), or why to stop. Shared as [`on_hello`] is.
fn on_pong_wait(
    protocol: &mut ClientProtocol,
    read: Option<Result<Frame, FrameError>>,
    seq: u64,
) -> Result<Option<PongMessage>, Stop> {
    let frame = match read {
        Some(Ok(frame)) => frame,
        Some(Err(FrameError::Io(e))) => return Err(Stop::quietly(PingError::Io(e))),
        Some(Err(e)) => {
            let reason = e.close_reason().unwrap_or(CloseReason::InvalidPacket);
            return Err(Stop::closing(reason.clone(), PingError::Protocol(reason)));
        }
        None => return Err(Stop::quietly(PingError::ClosedByPeer(None))),
    };
    match protocol.handle(frame).event {
        Some(Event::Pong(pong)) if pong.echoed_seq().is_some_and(|s| s != seq) => Ok(None),
        Some(Event::Pong(pong)) => Ok(Some(pong)),
        Some(Event::PeerClosed(reason)) => Err(Stop::quietly(PingError::ClosedByPeer(reason))),
        Some(Event::Close(reason)) => {
            Err(Stop::closing(reason.clone(), PingError::Protocol(reason)))
        }
        _ => Ok(None),
    }
}

/// A pong as a [`PingReply`], with the server's own timing when it reports one; the map
/// (with `recvtime` and `delay` added, as the reference's `pingServer` does) is built when
/// first asked for.
pub(crate) fn finish_reply(
    seq: u64,
    pong: PongMessage,
    delay: Duration,
    recvtime: f64,
    mut timings: Timings,
    peer: SocketAddr,
    security: SecurityLevel,
) -> PingReply {
    timings.ping = delay;
    timings.server = pong.server_time();
    PingReply {
        seq,
        delay,
        timings,
        peer,
        security,
        pong,
        recvtime,
        data: OnceLock::new(),
    }
}
