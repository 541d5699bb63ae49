//! The server: an accept loop and one task per connection.
//!
//! Each connection task owns its socket and its [`ServerProtocol`](crate::protocol::ServerProtocol); the rest of the
//! program reaches it through a [`ClientHandle`] (send, close). The server enforces the
//! [`Limits`]: a cap on connections (the rest get closeconn `serverfull`), a handshake
//! deadline, an idle timeout, a write timeout, and a cap on bytes queued for a peer.
//! [`Server::shutdown`] closes every connection with `servershutdown` after flushing what
//! was queued for it, and returns once every connection task is gone.

//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the public API: [`ServerBuilder`], [`Server`], [`listen`], [`BindError`] |
//! | `handler.rs` | what the application sees: [`Handler`], [`ClientHandle`], [`Closed`], [`SendError`] |
//! | `accept.rs` | the accept loop: the connection cap, per-address slots, refusals |
//! | `establish.rs` | what comes before the protocol: the PROXY header, the TLS sniff and handshake |
//! | `conn.rs` | one connection's task: its loop, frames in, frames out, deadlines, the close |
//! | `pong_path.rs` | the measured fast path of a pong, apart |
//! | `read.rs` | the read side: the frame codec with per-phase limits, the budget, the frame deadline |
//! | `announce.rs` | [`Server::announce`]: listing the server on a master (feature `master`) |
//! | `mailbox.rs`, `per_addr.rs`, `on_this_thread.rs` | a connection's command queue and timer; per-address counts; blocking-client self-deadlock detection |

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Limits};
use crate::frame::FrameCodec;
use crate::observe::ServerObserver;
use crate::pong::PingResponder;
use crate::protocol::{CloseReason, ConnType, ServerSetup};
use crate::proxy::ProxyPolicy;
use crate::registry::Registry;
use crate::stats::{ClientId, Stats};
use crate::tls::ServerTls;
use crate::value::Value;

use peng3dnet_proto::deadlines::Timeouts;
mod accept;
#[cfg(feature = "master")]
mod announce;
mod conn;
mod establish;
mod handler;
mod mailbox;
pub(crate) mod on_this_thread;
mod per_addr;
mod pong_path;
pub(crate) mod read;

use accept::{accept_loop, MAX_LINGERING_REFUSALS};
pub use establish::TLS_GRACE;
use handler::Command;
pub use handler::{ClientHandle, Closed, Handler, NoHandler, SendError};
use per_addr::AddrCounts;
use read::{Budget, PhaseLimits};

/// Builds a [`Server`].
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use peng3dnet::server::{ClientHandle, Handler, Server};
/// use peng3dnet::{Packet, Registry};
///
/// struct Echo;
/// impl Handler for Echo {
///     type State = u32; // packets seen from this client
///     fn on_packet(&self, client: &ClientHandle, seen: &mut u32, packet: Packet) {
///         *seen += 1;
///         let _ = client.send("chat:msg.say", &packet.body);
///     }
/// }
///
/// let mut registry = Registry::new();
/// registry.register("chat:msg.say")?;
/// let server = Server::builder().registry(registry).handler(Echo).bind("127.0.0.1:8080").await?;
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct ServerBuilder<H: Handler = NoHandler> {
    config: Config,
    registry: Registry,
    handler: H,
    ping: Option<PingResponder>,
    conntypes: Vec<String>,
    tls: Option<ServerTls>,
    observer: Option<Arc<dyn ServerObserver>>,
    proxy: Option<ProxyPolicy>,
}

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket could not be bound; the error names the address ("cannot
    /// bind 127.0.0.1:8080: address in use").
    #[error(transparent)]
    Bind(#[from] io::Error),
    /// `bind` was polled outside a tokio runtime (see [`ServerBuilder::bind`]).
    #[error("the server needs a tokio runtime: call bind inside one, or use peng3dnet::blocking::Server from synchronous code")]
    NoRuntime,
    /// A connection type was added twice (the reference's `AlreadyRegisteredError`).
    #[error("connection type {0:?} is already registered")]
    ConnTypeTaken(String),
}

impl Default for ServerBuilder<NoHandler> {
    fn default() -> Self {
        ServerBuilder {
            config: Config::default(),
            registry: Registry::new(),
            handler: NoHandler,
            ping: None,
            conntypes: Vec::new(),
            tls: None,
            observer: None,
            proxy: None,
        }
    }
}

impl<H: Handler> ServerBuilder<H> {
    /// Uses this configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Uses this packet registry (sent to classic clients in the handshake).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Uses these application hooks.
    pub fn handler<H2: Handler>(self, handler: H2) -> ServerBuilder<H2> {
        ServerBuilder {
            config: self.config,
            registry: self.registry,
            handler,
            ping: self.ping,
            conntypes: self.conntypes,
            tls: self.tls,
            observer: self.observer,
            proxy: self.proxy,
        }
    }

    /// Tells `observer` about connections, refusals, pings and bytes (for metrics; see
    /// [`crate::observe`]).
    pub fn observer(mut self, observer: Arc<dyn ServerObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Serves over TLS: every connection starts with a TLS handshake, bounded by the
    /// handshake timeout.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serves behind load balancers that speak the PROXY protocol (HAProxy's
    /// `send-proxy-v2` or `send-proxy`): every connection from a source the policy trusts
    /// must start with a header, v1 (text) or v2 (binary), and then counts as coming from
    /// the client the header names: [`ClientHandle::addr`], [`PingRequest::peer_addr`](crate::pong::PingRequest::peer_addr),
    /// the per-address cap and every log line see that address.
    ///
    /// - A connection from a source the policy does not trust is refused at once, before
    ///   anything is read (counted in [`ProxyStats::untrusted`](crate::stats::ProxyStats)):
    ///   with the PROXY protocol on, the server is reached through its balancers only.
    /// - A missing, partial, malformed or oversized header refuses the connection within
    ///   the handshake timeout, with one log line and a count in [`Stats::proxy`]; the
    ///   header is never guessed.
    /// - `LOCAL` (the balancer's health checks) and headers naming no client are served
    ///   with the connection's own addresses.
    /// - With TLS the header comes first, before the ClientHello, as balancers in TCP mode
    ///   send it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use peng3dnet::proxy::ProxyPolicy;
    /// use peng3dnet::{PingResponder, Server};
    ///
    /// // HAProxy runs on 10.0.0.5 and 10.0.0.6.
    /// let policy: ProxyPolicy = "10.0.0.5,10.0.0.6".parse()?;
    /// let server = Server::builder()
    ///     .pingable(PingResponder::new())
    ///     .proxy_protocol(policy)
    ///     .bind("0.0.0.0:8080")
    ///     .await?;
    /// # server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn proxy_protocol(mut self, policy: ProxyPolicy) -> Self {
        self.proxy = Some(policy);
        self
    }

    /// Makes the server pingable (the seed's `PingableServerMixin`): it offers the `ping`
    /// connection type and answers with what `responder` builds.
    pub fn pingable(mut self, responder: PingResponder) -> Self {
        self.ping = Some(responder);
        self
    }

    /// Offers a custom connection type (the reference's `addConnType`).
    pub fn conntype(mut self, name: &str) -> Self {
        self.conntypes.push(name.to_owned());
        self
    }

    /// Binds and starts serving in the background; use the returned [`Server`] to talk to
    /// clients and to shut down.
    ///
    /// Runtime: the server's tasks are spawned on the tokio runtime this is awaited on,
    /// and run only while that runtime runs. Use a multi-thread runtime (`#[tokio::main]`),
    /// or a current-thread runtime that goes on being driven; a runtime used only for
    /// `block_on(bind(..))` leaves the server bound but never answering. From synchronous
    /// code, use [`crate::blocking::Server`], which owns its runtime thread. Outside any
    /// runtime this returns [`ServerError::NoRuntime`] instead of panicking.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Server, ServerError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ServerError::NoRuntime);
        }
        let mut types = Vec::new();
        if self.ping.is_some() {
            types.push(ConnType::Ping);
        }
        for name in &self.conntypes {
            let t = ConnType::from_name(name);
            if t == ConnType::Classic || types.contains(&t) {
                return Err(ServerError::ConnTypeTaken(name.clone()));
            }
            types.push(t);
        }
        let soft = crate::fdlimit::raise();
        let max_connections = crate::fdlimit::cap(self.config.limits.max_connections, soft);
        if max_connections < self.config.limits.max_connections {
            tracing::warn!(
                "open-file limit is {}: serving at most {max_connections} connections instead of {} (raise the hard limit, `ulimit -Hn`, to serve more)",
                soft.unwrap_or(0),
                self.config.limits.max_connections,
            );
        } else if let Some(soft) = soft {
            tracing::debug!("open-file limit is {soft}");
        }
        let listener = listen(addr, max_connections).await?;
        let local_addr = listener.local_addr()?;
        let registry = Arc::new(self.registry);
        let shared = Arc::new(Shared {
            setup: Arc::new(
                ServerSetup::new(registry.clone(), types, self.config.limits.max_depth)
                    .with_max_items(self.config.limits.max_items),
            ),
            registry,
            limits: self.config.limits,
            timeouts: Timeouts::from(&self.config.limits),
            compression: self.config.compression,
            encoder: FrameCodec::new(self.config.limits.frame, self.config.compression),
            budget: Arc::new(Budget::new(self.config.limits.frame_budget)),
            phase_limits: Arc::new(PhaseLimits::new(&self.config.limits)),
            _on_this_thread: on_this_thread::register(local_addr),
            per_addr: Arc::new(AddrCounts::new(
                self.config.limits.max_connections_per_addr,
                self.config.limits.per_addr_ipv6_prefix,
            )),
            ping: self.ping,
            tls: self.tls,
            proxy: self.proxy,
            clients: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(max_connections)),
            lingering: Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS)),
            max_connections,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            local_addr,
            stats: Stats::default(),
            observer: self.observer,
        });
        let handler = Arc::new(self.handler);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), handler));
        Ok(Server {
            shared,
            accept: Arc::new(Mutex::new(Some(accept))),
        })
    }
}

/// What every task of one server shares: its settings, its counters and the handles that
/// reach its connections. One `Arc` of it per task.
struct Shared {
    /// The protocol's side of the settings: connection types offered, the handshake body.
    setup: Arc<ServerSetup>,
    /// Packet names and ids, for classic connections and [`ClientHandle::send`].
    registry: Arc<Registry>,
    /// The limits every connection is held to.
    limits: Limits,
    /// The time limits of [`Limits`], as the proto crate's deadlines take them.
    timeouts: Timeouts,
    /// How outgoing bodies are compressed.
    compression: crate::config::Compression,
    /// Frames are written with it straight into a connection's write buffer.
    encoder: FrameCodec,
    /// Bytes held in large partial frames and inflate buffers, across connections.
    budget: Arc<Budget>,
    /// The frame limits of each phase of a connection, for every connection's codec.
    phase_limits: Arc<PhaseLimits>,
    /// Kept while the server lives when it runs on a `current_thread` runtime (see
    /// [`on_this_thread`]).
    _on_this_thread: Option<on_this_thread::Registration>,
    /// Connections per source (an IPv4 address or an IPv6 prefix), when
    /// `Limits::max_connections_per_addr` is set.
    per_addr: Arc<AddrCounts>,
    /// The pong's data, on a pingable server.
    ping: Option<PingResponder>,
    /// The certificate and settings, on a TLS server.
    tls: Option<ServerTls>,
    /// Trusted sources of PROXY protocol headers, when the server is behind balancers.
    proxy: Option<ProxyPolicy>,
    /// The established connections, for [`Server::clients`] and broadcasts.
    clients: Mutex<HashMap<ClientId, ClientHandle>>,
    /// The next connection's [`ClientId`].
    next_id: AtomicU64,
    /// One permit per connection served: the connection cap.
    slots: Arc<Semaphore>,
    /// Refusals waiting for their peer to read the closeconn (see [`refuse_full`]).
    lingering: Arc<Semaphore>,
    /// The connection cap in force: `Limits::max_connections`, lowered to fit the
    /// open-file limit.
    max_connections: usize,
    /// Cancelled by [`Server::shutdown`]: the accept loop stops, connections close.
    shutdown: CancellationToken,
    /// Every task of the server, so that shutdown returns when the last is gone.
    tracker: TaskTracker,
    /// The address bound.
    local_addr: SocketAddr,
    /// Counters that ping data providers and [`Server::stats`] see.
    stats: Stats,
    /// Metrics hooks, when the embedder gave some.
    observer: Option<Arc<dyn ServerObserver>>,
}

impl Shared {
    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, ClientHandle>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running server. Cheap to clone; every clone controls the same server.
///
/// Dropping the handles does **not** stop the server: it serves until
/// [`shutdown`](Self::shutdown) or until its runtime stops (so a server can be started
/// and left running). [`crate::blocking::Server`] instead shuts down when dropped.
#[derive(Clone)]
#[must_use = "the server runs in the background; keep the handle to shut it down"]
pub struct Server {
    shared: Arc<Shared>,
    accept: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}

impl Server {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder<NoHandler> {
        ServerBuilder::default()
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The handle of a connected client.
    pub fn client(&self, id: ClientId) -> Option<ClientHandle> {
        self.shared.clients().get(&id).cloned()
    }

    /// Handles of all connected clients.
    pub fn clients(&self) -> Vec<ClientHandle> {
        self.shared.clients().values().cloned().collect()
    }

    /// Most connections served at once: `Limits::max_connections`, or less when the
    /// process's open-file limit (raised to its hard limit at start) cannot hold that many.
    pub fn max_connections(&self) -> usize {
        self.shared.max_connections
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.shared.stats.connected.load(Ordering::Relaxed) as usize
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Bytes of the frame budget ([`Limits::frame_budget`](crate::config::Limits)) that
    /// connections hold now: what their partial frames and inflate buffers take beyond
    /// the first 64 KiB each. Shows how close a server is to refusing large frames with
    /// `serverfull`.
    pub fn budget_held(&self) -> usize {
        self.shared.budget.held()
    }

    /// The ping responder, if the server is pingable (to change its data while running).
    pub fn ping_responder(&self) -> Option<&PingResponder> {
        self.shared.ping.as_ref()
    }

    /// Sends a registered packet to one client.
    pub fn send(&self, id: ClientId, name: &str, body: &Value) -> Result<(), SendError> {
        self.client(id)
            .ok_or(SendError::NoSuchClient(id))?
            .send(name, body)
    }

    /// Closes one client with a reason.
    pub fn close_client(
        &self,
        id: ClientId,
        reason: impl Into<CloseReason>,
    ) -> Result<(), SendError> {
        self.client(id)
            .ok_or(SendError::NoSuchClient(id))?
            .close(reason);
        Ok(())
    }

    /// Stops accepting, closes every client with `servershutdown` after flushing what was
    /// queued for it and answering the pings it had already read, and waits until every connection is gone (each bounded by the write
    /// timeout and close linger).
    pub async fn shutdown(&self) {
        // First the token (the accept loop, and connections still in their PROXY or TLS
        // handshake), then every registered connection. A connection registers itself
        // and then looks at the token, under the same lock order: none is missed.
        self.shared.shutdown.cancel();
        for client in self.shared.clients().values() {
            let _ = client.mailbox.push(Command::Shutdown);
        }
        let accept = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(accept) = accept {
            let _ = accept.await;
        }
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }
}

/// Binds a listener whose accept queue holds a burst of up to `max_connections`
/// connections (at least 1024, as tokio's default; the kernel caps it at `somaxconn`), so
/// a burst of connections does not overflow the queue and leave well-behaved clients
/// waiting for SYN-ACK retransmissions (1 s, 3 s...) before they are even accepted.
/// Public for tools that serve without this server (the benchmark's floor).
pub async fn listen(addr: impl ToSocketAddrs, max_connections: usize) -> io::Result<TcpListener> {
    let backlog = u32::try_from(max_connections)
        .unwrap_or(u32::MAX)
        .clamp(1024, 65_535);
    let mut last = None;
    let addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve the address: {e}")))?;
    for addr in addrs {
        // Each error names the address it concerns ("cannot bind 0.0.0.0:80: permission
        // denied"), as a server binding several cannot otherwise tell which failed.
        let bound = (|| {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // As TcpListener::bind does: rebinding a port in TIME_WAIT works.
            #[cfg(unix)]
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(backlog)
        })();
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(io::Error::new(e.kind(), BindError { addr, source: e })),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to no address",
        )
    }))
}

/// A listening socket that could not be bound, with the address it concerns. It travels
/// inside the `io::Error` that [`listen`] returns (same kind), keeping the OS error in
/// its `source` field (`raw_os_error` of it gives the errno). Its message says that
/// error already, so [`std::error::Error::source`] does not return it again.
#[derive(Debug)]
pub struct BindError {
    /// The address that could not be bound.
    pub addr: SocketAddr,
    /// Why.
    pub source: io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot bind {}: {}", self.addr, self.source)
    }
}

impl std::error::Error for BindError {}
