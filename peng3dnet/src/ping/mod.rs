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
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | options, replies, [`ping_server`], and the one step every driver shares: a read handed to the proto crate's [`PingClient`] |
//! | `session.rs` | [`PingSession`]: one connection, many pings |
//! | `one_shot.rs` | the one-shot ping: one connection, one ping, one timer |

mod one_shot;
mod session;

pub(crate) use one_shot::{one_shot, Shot};
pub use session::PingSession;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::{timeout_at, Instant};

use crate::config::Config;
pub use crate::error::PingError;
use crate::error::{FrameError, Phase};
use crate::frame::Frame;
use crate::pong::{PongMessage, SERVER_TIMING_KEY};
use crate::protocol::CloseReason;
use crate::target::{Family, Target, ToTarget};
use crate::tls::{ClientTls, SecurityLevel};
use crate::value::{self, get, insert, map, Value};
use peng3dnet_proto::ping_client::{self, PingFailure, Received};
use peng3dnet_proto::PingClient;

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

/// Why a ping connection stops, as the drivers report it: the error for the caller, and
/// the closeconn reason to send first when closing is ours to do (`None`: the server
/// closed, or the socket failed).
pub(crate) struct Stop {
    pub(crate) error: PingError,
    pub(crate) close: Option<CloseReason>,
}

impl From<ping_client::Stop> for Stop {
    fn from(stop: ping_client::Stop) -> Stop {
        Stop {
            error: PingError::from(stop.failure),
            close: stop.close,
        }
    }
}

impl From<PingFailure> for PingError {
    fn from(failure: PingFailure) -> PingError {
        match failure {
            PingFailure::NotPeng3dnet(why) => PingError::NotPeng3dnet(why),
            PingFailure::ProtocolMismatch => PingError::ProtocolMismatch,
            PingFailure::ClosedByPeer {
                reason,
                at_hello: true,
            } => crate::error::closed_at_hello(reason),
            PingFailure::ClosedByPeer { reason, .. } => PingError::ClosedByPeer(reason),
            PingFailure::Protocol(reason) => PingError::Protocol(reason),
        }
    }
}

/// A driver's read (`None`: end of stream) handed to the ping client at `now`: the one
/// place where the async session, the one-shot ping and the blocking session meet the
/// protocol. An I/O error is the driver's and closes quietly; everything else is the
/// [`PingClient`]'s to judge.
pub(crate) fn on_read(
    client: &mut PingClient,
    read: Option<Result<Frame, FrameError>>,
    now: std::time::Instant,
) -> Result<Received, Stop> {
    match read {
        Some(Ok(frame)) => client.handle_frame(frame, now).map_err(Stop::from),
        Some(Err(FrameError::Io(e))) => {
            client.close();
            Err(Stop {
                error: PingError::Io(e),
                close: None,
            })
        }
        Some(Err(e)) => Err(client.handle_frame_error(&e).into()),
        None => Err(client.handle_eof().into()),
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
