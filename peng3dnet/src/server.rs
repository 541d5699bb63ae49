//! The server: an accept loop and one task per connection.
//!
//! Each connection task owns its socket and its [`ServerProtocol`]; the rest of the
//! program reaches it through a [`ClientHandle`] (send, close). The server enforces the
//! [`Limits`]: a cap on connections (the rest get closeconn `serverfull`), a handshake
//! deadline, an idle timeout, a write timeout, and a cap on bytes queued for a peer.
//! [`Server::shutdown`] closes every connection with `servershutdown` after flushing what
//! was queued for it, and returns once every connection task is gone.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::{Decoder, Framed};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Limits};
use crate::error::{FrameError, RegistryError};
use crate::frame::{Frame, FrameCodec};
use crate::observe::{ObservedCodec, ServerObserver};
use crate::pong::{PingRequest, PingResponder, ServerTiming};
use crate::protocol::{
    closeconn_frame, hello_frame, ids, CloseReason, ConnType, Event, Packet, ServerProtocol,
    ServerSetup,
};
use crate::proxy::ProxyPolicy;
use crate::registry::Registry;
use crate::security::InsufficientSecurity;
use crate::server_codec::{Budget, Phase, PhaseLimits, ServerCodec};
use crate::stats::{ClientId, Stats};
use crate::tls::{SecurityLevel, ServerTls};
use crate::transport::Stream;
use crate::value::{self, Value};
use crate::wall_clock::wall_times;

#[cfg(feature = "master")]
mod announce;
mod mailbox;
pub(crate) mod on_this_thread;
mod per_addr;
use mailbox::{Inbox, Mailbox};
use per_addr::{AddrCounts, AddrSlot};

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// We sent closeconn with this reason (protocol violation, limit, shutdown, or an
    /// application's [`ClientHandle::close`]).
    ByUs(CloseReason),
    /// The peer sent closeconn, with its reason if it gave one.
    ByPeer(Option<CloseReason>),
    /// The socket ended or failed without a closeconn (`socketclose`).
    SocketClosed,
}

impl Closed {
    /// The reason, as the reference reports it: the closeconn reason, or `socketclose`.
    pub fn reason(&self) -> Option<CloseReason> {
        match self {
            Closed::ByUs(r) => Some(r.clone()),
            Closed::ByPeer(r) => r.clone(),
            Closed::SocketClosed => Some(CloseReason::SocketClose),
        }
    }
}

/// Application hooks of a server. Every method has a default that does nothing.
///
/// `State` is per-client state, created by [`new_state`](Self::new_state) when a client
/// connects (by default with `Default`) and handed to every hook of that client; it
/// lives in the client's task, so it needs no lock. Hooks run on the connection's task:
/// keep them short, or spawn. A hook that panics costs only its connection: it is closed
/// with `internalerror` and [`on_close`](Self::on_close) still runs.
///
/// State built from the connection (its address, its security level, a handle kept in a
/// table of players) comes from overriding [`new_state`](Self::new_state):
///
/// ```
/// use std::net::SocketAddr;
/// use peng3dnet::server::{ClientHandle, Handler};
///
/// struct Game;
///
/// #[derive(Default)]
/// struct Player {
///     from: Option<SocketAddr>,
///     packets: u64,
/// }
///
/// impl Handler for Game {
///     type State = Player;
///     fn new_state(&self, client: &ClientHandle) -> Player {
///         Player { from: Some(client.addr()), packets: 0 }
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Per-client state.
    ///
    /// It must be `Default` even when [`new_state`](Self::new_state) builds it: the
    /// default `new_state` uses it (a trait cannot provide a method only for some of its
    /// implementors without breaking the others), and so does a `new_state` that panics
    /// (the connection is then closed with `internalerror`, and `on_close` sees
    /// `State::default()`). A state with no sensible default can be an `Option`.
    type State: Default + Send + 'static;

    /// Creates the state of a client that just connected, before
    /// [`on_connect`](Self::on_connect). The default is `State::default()`.
    fn new_state(&self, _client: &ClientHandle) -> Self::State {
        Self::State::default()
    }

    /// A client connected (before any packet).
    fn on_connect(&self, _client: &ClientHandle, _state: &mut Self::State) {}

    /// The connection is established: handshake complete (classic), or type set (ping,
    /// custom).
    fn on_established(&self, _client: &ClientHandle, _state: &mut Self::State) {}

    /// An application packet arrived on a classic or custom connection.
    fn on_packet(&self, _client: &ClientHandle, _state: &mut Self::State, _packet: Packet) {}

    /// The connection is closed; no hook of this client runs after this one.
    fn on_close(&self, _client: &ClientHandle, _state: &mut Self::State, _closed: &Closed) {}
}

/// A handler that does nothing (a server that only answers pings, for example).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHandler;

impl Handler for NoHandler {
    type State = ();
}

/// Errors of [`ClientHandle`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The packet name is not registered.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The connection is closed or closing.
    #[error("client {0} is disconnected")]
    Disconnected(ClientId),
    /// Too many bytes are queued for this client; it is being closed with
    /// `sendqueuefull`.
    #[error("send queue of client {0} is full; closing it")]
    QueueFull(ClientId),
    /// The client does not exist (any more).
    #[error("no client {0}")]
    NoSuchClient(ClientId),
    /// The packet requires a more secure connection than this client's (the reference's
    /// `min_sslsec_level`).
    #[error(transparent)]
    InsufficientSecurity(#[from] InsufficientSecurity),
}

/// Most bytes a closing connection reads (and discards) while it lingers.
const LINGER_MAX_BYTES: usize = 64 << 10;

/// Bytes a queued message is charged besides its body: its frame header, its queue
/// node and its allocation.
const QUEUE_OVERHEAD: usize = 64;

enum Command {
    Send(Frame),
    Close(CloseReason),
    /// The server shuts down: answer what was read, then close with `servershutdown`.
    /// Sent through the command queue rather than a cancellation token that every
    /// connection's loop would poll on every frame (a tenth of a ping's cost).
    Shutdown,
}

/// A connected client, as seen from the rest of the program: who it is and how to talk to
/// it. Cheap to clone.
#[derive(Clone)]
pub struct ClientHandle {
    /// Unique id.
    id: ClientId,
    /// Peer address.
    addr: SocketAddr,
    /// Commands to the connection task, with the bytes they queue.
    mailbox: Arc<Mailbox<Command>>,
    /// Cap on the mailbox's queued bytes.
    max_queued: usize,
    /// The server's registry, to name packets.
    registry: Arc<Registry>,
    /// How secure the connection is (TLS, client certificate).
    security: SecurityLevel,
}

impl fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandle")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish()
    }
}

impl ClientHandle {
    /// The client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The client's address: the peer's, or behind a load balancer that speaks the PROXY
    /// protocol ([`ServerBuilder::proxy_protocol`]), the client's its header names.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How secure the connection is.
    pub fn security(&self) -> SecurityLevel {
        self.security
    }

    /// Queues a registered packet for this client.
    pub fn send(&self, name: &str, body: &Value) -> Result<(), SendError> {
        let id = self
            .registry
            .id(name)
            .ok_or_else(|| RegistryError::UnknownName(name.to_owned()))?;
        InsufficientSecurity::check(&self.registry, name, self.security)?;
        self.send_id(id, body)
    }

    /// Queues a packet by id (custom connection types use ids without names). An id the
    /// registry names gets the same minimum security check as [`send`](Self::send).
    pub fn send_id(&self, id: u32, body: &Value) -> Result<(), SendError> {
        if let Some(name) = self.registry.name(id) {
            InsufficientSecurity::check(&self.registry, name, self.security)?;
        }
        let frame = Frame::new(id, value::encode(body));
        // Each message costs its frame header and queue node besides its body, so a flood
        // of tiny messages is bounded too.
        let len = frame.body.len() + QUEUE_OVERHEAD;
        let mailbox = &self.mailbox;
        let queued = mailbox.queued.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.max_queued {
            mailbox.queued.fetch_sub(len, Ordering::AcqRel);
            // One close command, however many sends are refused.
            if !mailbox.closing.swap(true, Ordering::AcqRel) {
                let _ = mailbox.push(Command::Close(CloseReason::SendQueueFull));
            }
            return Err(SendError::QueueFull(self.id));
        }
        mailbox.push(Command::Send(frame)).map_err(|_| {
            mailbox.queued.fetch_sub(len, Ordering::AcqRel);
            SendError::Disconnected(self.id)
        })
    }

    /// Closes the connection with a reason, after what is already queued.
    pub fn close(&self, reason: impl Into<CloseReason>) {
        let _ = self.mailbox.push(Command::Close(reason.into()));
    }
}

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
    /// the client the header names: [`ClientHandle::addr`], [`PingRequest::peer_addr`],
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

struct Shared {
    setup: Arc<ServerSetup>,
    registry: Arc<Registry>,
    limits: Limits,
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
    ping: Option<PingResponder>,
    tls: Option<ServerTls>,
    /// Trusted sources of PROXY protocol headers, when the server is behind balancers.
    proxy: Option<ProxyPolicy>,
    clients: Mutex<HashMap<ClientId, ClientHandle>>,
    next_id: AtomicU64,
    slots: Arc<Semaphore>,
    /// Refusals waiting for their peer to read the closeconn (see [`refuse_full`]).
    lingering: Arc<Semaphore>,
    /// The connection cap in force: `Limits::max_connections`, lowered to fit the
    /// open-file limit.
    max_connections: usize,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    local_addr: SocketAddr,
    stats: Stats,
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

async fn accept_loop<H: Handler>(listener: TcpListener, shared: Arc<Shared>, handler: Arc<H>) {
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

use crate::deadline::after;

/// What reading a connection's PROXY header decided.
enum Proxied {
    /// Serve it as coming from this address (holding its per-address slot, if capped).
    Serve(SocketAddr, Option<AddrSlot>),
    /// Refused (logged and counted); closes it.
    Refused,
    /// Refused by the per-address cap: tell it `serverfull`.
    Full,
}

/// Reads the PROXY header of a connection from a trusted source and takes the
/// per-address slot of the client it names.
async fn proxied(
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

/// How long a TLS server waits for a new connection's first bytes before it concludes that
/// the peer is a plain client waiting for a hello (a TLS client sends its ClientHello at
/// once) and answers with a plain closeconn `tlsrequired`; the handshake timeout instead,
/// when that is shorter.
pub const TLS_GRACE: Duration = Duration::from_millis(750);

/// Whether a connection to a TLS server starts with a TLS record: `Some(false)` if its
/// first bytes are something else or it stays silent until `until`, `None` if it closed.
async fn first_bytes_tls(tcp: &TcpStream, until: Instant) -> Option<bool> {
    let mut first = [0u8; 2];
    match timeout_at(until, tcp.peek(&mut first)).await {
        Err(_) => Some(false),
        Ok(Ok(0)) | Ok(Err(_)) => None,
        Ok(Ok(n)) => crate::sniff::client_speaks_tls(&first[..n]),
    }
}

/// Tells a connection we refuse why (in plain, before any TLS), then closes it; drains
/// what the peer sent so that the closeconn is not destroyed by a reset. Bounded by
/// `within`.
/// Refusals at the accept loop that may wait at once for their peer to read the
/// `serverfull` (up to 1 s each). Each holds a file descriptor outside the connection cap:
/// without a bound, a flood of refused connections took every descriptor and the server
/// could accept no one else.
const MAX_LINGERING_REFUSALS: usize = 64;

/// Tells a connection the accept loop will not serve that the server is full. While few
/// refusals linger, it waits (briefly) for the peer to read the closeconn before closing;
/// past [`MAX_LINGERING_REFUSALS`] the closeconn is put in the new socket's empty send
/// buffer without waiting and the socket closed at once. A TLS client could not read a
/// plain closeconn: it is simply closed.
fn refuse_full(shared: &Shared, stream: TcpStream) {
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

async fn refuse(mut stream: TcpStream, reason: CloseReason, within: Duration) {
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

/// What wakes a connection's loop.
enum Woken {
    Command(Command),
    Frame(Option<Result<Frame, FrameError>>),
    Timer,
}

/// Per-connection state the task needs besides the protocol.
struct Conn<H: Handler> {
    framed: Framed<Stream, ObservedCodec<ServerCodec>>,
    protocol: ServerProtocol,
    handle: ClientHandle,
    state: H::State,
    shared: Arc<Shared>,
    handler: Arc<H>,
    /// Handshake (or first ping) done: the idle timeout applies instead of the handshake
    /// deadline.
    settled: bool,
    /// Why we are refusing the peer (a limit or a protocol violation), logged once with
    /// its address when the connection closes.
    refusal: Option<String>,
    /// A write timed out: the peer does not read, so nothing more is sent to it.
    unwritable: bool,
    /// The connection type, once the peer chose it (for the observer and the idle timeout).
    conntype: Option<ConnType>,
    /// The commands from the connection's handles, and the connection's one timer, for
    /// every deadline: handshake, idle, a frame that started arriving, and a write the
    /// socket does not take at once.
    inbox: Inbox<Command>,
}

async fn connection<H: Handler>(
    tcp: TcpStream,
    addr: SocketAddr,
    shared: Arc<Shared>,
    handler: Arc<H>,
) {
    // The handshake deadline counts from the accept, PROXY header and TLS handshake
    // included.
    let handshake_deadline = after(shared.limits.handshake_timeout);
    // The plain path in place; the PROXY header and the TLS handshake in a task of
    // their own on the heap, so that their futures do not make every connection's
    // larger (they are not kept once the connection is established).
    let (stream, addr, _slot) = if shared.proxy.is_none() && shared.tls.is_none() {
        (Stream::Plain(tcp), addr, None)
    } else {
        match Box::pin(establish(tcp, addr, &shared, handshake_deadline)).await {
            Some(established) => established,
            None => return,
        }
    };
    let security = stream.security(false);
    let id = ClientId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    let mailbox = Mailbox::new();
    let inbox = Inbox::new(mailbox.clone(), handshake_deadline);
    let handle = ClientHandle {
        id,
        addr,
        mailbox,
        max_queued: shared.limits.max_queued_bytes,
        registry: shared.registry.clone(),
        security,
    };
    shared.clients().insert(id, handle.clone());
    if shared.shutdown.is_cancelled() {
        // Registered after `shutdown` told the others.
        let _ = handle.mailbox.push(Command::Shutdown);
    }
    shared.stats.connected.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(peer = %addr, client = %id, "connection opened");
    let (state, created) = match guarded(addr, "new_state", || handler.new_state(&handle)) {
        Ok(state) => (state, Ok(())),
        Err(closed) => (H::State::default(), Err(closed)),
    };
    let mut conn = Conn {
        framed: small_framed(
            stream,
            ServerCodec::new(
                shared.phase_limits.clone(),
                shared.compression,
                shared.budget.clone(),
            ),
            shared.observer.clone(),
        ),
        protocol: ServerProtocol::new(shared.setup.clone()),
        handle,
        state,
        shared: shared.clone(),
        handler,
        settled: false,
        refusal: None,
        unwritable: false,
        conntype: None,
        inbox,
    };
    let connected = created.and_then(|()| {
        let (handler, handle, state) = (&conn.handler, &conn.handle, &mut conn.state);
        guarded(addr, "on_connect", || handler.on_connect(handle, state))
    });
    let closed = match connected {
        Ok(()) => conn.run(handshake_deadline).await,
        Err(closed) => closed,
    };
    match &closed {
        Closed::ByUs(reason) => {
            // Exactly one line per refusal, with the peer's address and the reason.
            match (&conn.refusal, reason) {
                (Some(why), _) => {
                    tracing::info!(peer = %addr, client = %id, %reason, "refused: {why}")
                }
                (None, CloseReason::ServerShutdown | CloseReason::PingComplete) => {
                    tracing::debug!(peer = %addr, client = %id, "closing: {reason}")
                }
                (None, _) => tracing::info!(peer = %addr, client = %id, "closing: {reason}"),
            }
            conn.close_gracefully(reason).await;
        }
        Closed::ByPeer(reason) => {
            match reason {
                None | Some(CloseReason::PingComplete | CloseReason::SocketClose) => {
                    let reason = reason
                        .as_ref()
                        .map_or("no reason given", CloseReason::as_str);
                    tracing::debug!(peer = %addr, client = %id, "peer closed the connection: {reason}")
                }
                // Once, and through Display: the peer chose this text, which escapes
                // it and cuts it short (no forged lines, no flooded log).
                Some(reason) => {
                    tracing::info!(peer = %addr, client = %id, "peer closed the connection: {reason}")
                }
            }
            // Bounded: a TLS close_notify cannot be sent to a peer that does not read.
            let write_timeout = shared.limits.write_timeout;
            let _ = timeout(write_timeout, conn.framed.get_mut().shutdown()).await;
        }
        Closed::SocketClosed => tracing::debug!(peer = %addr, client = %id, "socket closed"),
    }
    shared.clients().remove(&id);
    shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
    if let Some(observer) = &shared.observer {
        observer.closed(conn.conntype.as_ref(), &closed);
    }
    let (handler, handle, state) = (&conn.handler, &conn.handle, &mut conn.state);
    let _ = guarded(addr, "on_close", || {
        handler.on_close(handle, state, &closed)
    });
}

/// A pong sent by [`send_pong`].
struct Sent {
    /// Bytes of the frame.
    length: usize,
    /// Some of it waits in the write buffer, to be flushed.
    buffered: bool,
}

/// Frames a pong and sends it. When nothing else waits to be written or handled (a ping
/// answered as it came: the usual case), the frame is built in a buffer this thread keeps
/// and handed to a plain TCP socket from there. At 1,000 connections a connection's own
/// write buffer is cold memory, and framing the pong into it cost about three cache
/// misses per ping (BENCHMARKS.md, "Cache lines per ping"). What the socket does not take
/// at once, a pong behind other bytes, and every pong under TLS go through the write
/// buffer, in order.
fn send_pong(
    framed: &mut Framed<Stream, ObservedCodec<ServerCodec>>,
    encoder: &FrameCodec,
    body: &[u8],
) -> Result<Sent, FrameError> {
    thread_local! {
        static WIRE: std::cell::RefCell<bytes::BytesMut> =
            std::cell::RefCell::new(bytes::BytesMut::new());
    }
    /// Largest wire buffer a thread keeps.
    const KEEP: usize = 64 << 10;
    let alone = framed.write_buffer().is_empty() && framed.read_buffer().is_empty();
    if alone {
        // `None` under TLS: the pong then goes through the write buffer below.
        let direct = WIRE.with(|wire| {
            let mut wire = wire.try_borrow_mut().ok()?;
            let tcp = framed.get_ref().plain()?;
            wire.clear();
            if let Err(e) = encoder.encode_body(ids::PONG, body, &mut wire) {
                return Some(Err(e));
            }
            // An error is left to the write buffer's flush, which meets it again and
            // closes the connection as every failed write does.
            let taken = tcp.try_write(&wire).unwrap_or(0);
            let length = wire.len();
            if taken < length {
                framed.write_buffer_mut().extend_from_slice(&wire[taken..]);
            }
            if wire.capacity() > KEEP {
                *wire = bytes::BytesMut::new();
            }
            Some(Ok(Sent {
                length,
                buffered: taken < length,
            }))
        });
        if let Some(sent) = direct {
            return sent;
        }
    }
    let dst = framed.write_buffer_mut();
    let before = dst.len();
    encoder.encode_body(ids::PONG, body, dst)?;
    Ok(Sent {
        length: dst.len() - before,
        buffered: true,
    })
}

/// Runs `f` with an empty buffer this thread keeps for pongs (a fresh one if a ping data
/// provider, running inside, answers a ping itself).
fn with_pong_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static PONG: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// Largest pong buffer a thread keeps.
    const KEEP: usize = 64 << 10;
    PONG.with(|pong| match pong.try_borrow_mut() {
        Ok(mut pong) => {
            pong.clear();
            let result = f(&mut pong);
            if pong.capacity() > KEEP {
                *pong = Vec::new();
            }
            result
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// What comes before the protocol on a server behind balancers or with TLS: the PROXY
/// header (naming the client) and the TLS handshake. `None` when the connection is done
/// with (refused, failed or shut down: logged and counted here).
async fn establish(
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

/// Runs application code (a [`Handler`] hook, a ping data provider) so that a panic in it
/// costs only this connection: the panic is logged once with the peer's address and the
/// connection is closed with `internalerror`; the client still leaves `clients()` and the
/// counters, and `on_close` still runs.
fn guarded<R>(peer: SocketAddr, what: &str, f: impl FnOnce() -> R) -> Result<R, Closed> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        tracing::error!(%peer, "{what} panicked: {message}; closing the connection with internalerror");
        Closed::ByUs(CloseReason::InternalError)
    })
}

/// Initial capacity of a connection's read buffer. Our frames are small (a ping is about
/// 40 bytes); larger ones make the decoder reserve what they need, and the buffer gives
/// that capacity back once the frame is consumed (see [`shrink_read_buffer`]).
const READ_BUFFER: usize = 512;

/// A read buffer holding more capacity than this after a frame is replaced by a small one.
const KEEP_READ_CAPACITY: usize = 16 << 10;

/// Gives back the capacity a large frame made the read buffer grow to: the frame's bytes
/// were split off the same allocation, which stays alive as long as the buffer does.
fn shrink_read_buffer(buf: &mut bytes::BytesMut) {
    if buf.capacity() > KEEP_READ_CAPACITY && buf.len() <= KEEP_READ_CAPACITY / 2 {
        let mut small = bytes::BytesMut::with_capacity(READ_BUFFER.max(buf.len()));
        small.extend_from_slice(buf);
        *buf = small;
    }
}

/// A [`Framed`] with small buffers. `Framed::new` gives every connection 8 KiB for
/// reading and 8 KiB for writing (and `from_parts` raises smaller buffers to that), which
/// made half of what an idle connection costs: 15.9 KiB resident per idle connection with
/// them, 8.5 KiB with these (BENCHMARKS.md). `Framed::with_capacity` would also lower the
/// write back-pressure boundary; here it stays at 8 KiB. The write buffer starts empty:
/// the encoder reserves what each frame needs, and the buffer keeps that capacity.
fn small_framed(
    stream: Stream,
    codec: ServerCodec,
    observer: Option<Arc<dyn ServerObserver>>,
) -> Framed<Stream, ObservedCodec<ServerCodec>> {
    let codec = ObservedCodec { codec, observer };
    let mut framed = Framed::new(stream, codec);
    *framed.read_buffer_mut() = bytes::BytesMut::with_capacity(READ_BUFFER);
    *framed.write_buffer_mut() = bytes::BytesMut::new();
    framed
}

impl<H: Handler> Conn<H> {
    async fn run(&mut self, handshake_deadline: Instant) -> Closed {
        // Read from the server's settings where used, not copied: a copy here was 184
        // bytes of every connection's task, and a cold cache line per ping.
        if let Err(closed) = self.write(hello_frame()).await {
            return closed;
        }
        let mut idle_deadline = after(self.idle_timeout());
        // One timer for the whole connection, not one per frame (the profile showed it on
        // every packet): moved only when it would fire late (the idle deadline moves with
        // every frame; the timer lags behind and catches up when it fires early). The
        // shutdown comes as a command.
        loop {
            let deadline = if self.settled {
                idle_deadline
            } else {
                handshake_deadline
            };
            let deadline = match self.framed.codec().codec.frame_deadline() {
                Some(frame_deadline) => deadline.min(frame_deadline),
                None => deadline,
            };
            if self.inbox.deadline() > deadline {
                self.inbox.reset(deadline);
            }
            match self.next_wake().await {
                Woken::Command(command) => match command {
                    Command::Shutdown => {
                        if let Some(closed) = self.answer_buffered().await {
                            return closed;
                        }
                        return Closed::ByUs(CloseReason::ServerShutdown);
                    }
                    Command::Send(frame) => {
                        self.handle
                            .mailbox
                            .queued
                            .fetch_sub(frame.body.len() + QUEUE_OVERHEAD, Ordering::AcqRel);
                        if let Err(closed) = self.write(frame).await {
                            return closed;
                        }
                    }
                    Command::Close(reason) => {
                        if reason == CloseReason::SendQueueFull {
                            self.refusal = Some(format!(
                                "more than {} bytes queued",
                                self.shared.limits.max_queued_bytes
                            ));
                        }
                        return Closed::ByUs(reason);
                    }
                },
                Woken::Frame(incoming) => {
                    match incoming {
                        None => return Closed::SocketClosed,
                        Some(Err(e)) => return self.frame_error(e),
                        Some(Ok(frame)) => {
                            // The decoder's clock reading, not a second one.
                            let read_at = self.framed.codec().codec.read_at();
                            idle_deadline = crate::deadline::at(read_at, self.idle_timeout());
                            let closed = self.on_frame(frame).await;
                            shrink_read_buffer(self.framed.read_buffer_mut());
                            if let Some(closed) = closed {
                                return closed;
                            }
                        }
                    }
                }
                Woken::Timer => {
                    let now = Instant::now();
                    let codec = &self.framed.codec().codec;
                    if codec.frame_deadline().is_some_and(|d| now >= d) {
                        self.refusal = Some(format!(
                            "frame not completed within {:?}",
                            codec.frame_timeout()
                        ));
                        return Closed::ByUs(CloseReason::Timeout);
                    }
                    // A frame that starts arriving while we wait is only seen here: wake
                    // at least every frame timeout to check it.
                    let check = codec
                        .frame_deadline()
                        .unwrap_or_else(|| crate::deadline::at(now, codec.frame_timeout()));
                    let deadline = if self.settled {
                        idle_deadline
                    } else {
                        handshake_deadline
                    };
                    if now < deadline {
                        self.inbox.reset(deadline.min(check));
                        continue;
                    }
                    self.refusal = Some(if self.settled {
                        format!("idle for {:?}", self.idle_timeout())
                    } else {
                        format!(
                            "handshake not done within {:?}",
                            self.shared.limits.handshake_timeout
                        )
                    });
                    return Closed::ByUs(CloseReason::Timeout);
                }
            }
        }
    }

    /// How long this connection may stay silent once established: ping connections
    /// have their own, shorter, limit.
    fn idle_timeout(&self) -> Duration {
        match self.conntype {
            Some(ConnType::Ping) => self.shared.limits.ping_idle_timeout,
            _ => self.shared.limits.idle_timeout,
        }
    }

    /// What wakes the loop of [`Conn::run`], in this order: a command, a frame (or the
    /// stream's end), the timer.
    fn next_wake(&mut self) -> impl std::future::Future<Output = Woken> + '_ {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(command) = self.inbox.poll_recv(cx) {
                return Poll::Ready(Woken::Command(command));
            }
            if let Poll::Ready(incoming) = self.framed.poll_next_unpin(cx) {
                return Poll::Ready(Woken::Frame(incoming));
            }
            if let Poll::Ready(()) = self.inbox.poll_timer(cx) {
                return Poll::Ready(Woken::Timer);
            }
            Poll::Pending
        })
    }

    /// At shutdown: handles the frames already read from the socket and waiting in the
    /// read buffer, so that every ping the server read before the shutdown gets its pong
    /// before the closeconn. Nothing more is read from the socket.
    async fn answer_buffered(&mut self) -> Option<Closed> {
        let mut buffered = std::mem::take(self.framed.read_buffer_mut());
        loop {
            match self.framed.codec_mut().decode(&mut buffered) {
                Ok(Some(frame)) => {
                    if let Some(closed) = self.on_frame(frame).await {
                        return Some(closed);
                    }
                }
                // A partial frame, or none: the rest was not read before the shutdown.
                Ok(None) => return None,
                Err(e) => return Some(self.frame_error(e)),
            }
        }
    }

    fn frame_error(&mut self, e: FrameError) -> Closed {
        if matches!(e, FrameError::BudgetExhausted { .. }) {
            self.shared
                .stats
                .budget_refused
                .fetch_add(1, Ordering::Relaxed);
        }
        match e.close_reason() {
            Some(reason) => {
                self.refusal = Some(match e {
                    FrameError::TooLarge { length, .. }
                        if crate::sniff::length_is_tls_record(length) =>
                    {
                        "the client speaks TLS (it sent a TLS ClientHello), but this server \
                         does not use TLS"
                            .to_owned()
                    }
                    e => e.to_string(),
                });
                Closed::ByUs(reason)
            }
            None => Closed::SocketClosed,
        }
    }

    /// Handles one frame and writes out what it made us send.
    async fn on_frame(&mut self, frame: Frame) -> Option<Closed> {
        match self.handle_frame(frame) {
            Ok(true) => self.flush().await.err(),
            Ok(false) => None,
            Err(closed) => Some(closed),
        }
    }

    /// Handles one frame, without waiting: what it makes us send (a handshake, a pong) is
    /// put in the write buffer; returns whether something was. Apart from `on_frame`'s
    /// `await` so that nothing of a frame's handling (the ping, its request, the
    /// timestamps) is kept in the connection's future while the pong is written.
    fn handle_frame(&mut self, frame: Frame) -> Result<bool, Closed> {
        let frame_id = frame.id;
        let step = self.protocol.handle(frame);
        let mut buffered = false;
        if let Some(out) = step.send {
            self.buffer(out)?;
            buffered = true;
        }
        let Some(event) = step.event else {
            return Ok(buffered);
        };
        match event {
            Event::Established(conntype) => {
                if conntype != ConnType::Ping {
                    self.settled = true;
                    self.framed.codec_mut().codec.set_phase(Phase::Established);
                } else {
                    self.framed.codec_mut().codec.set_phase(Phase::Ping);
                }
                if let Some(observer) = &self.shared.observer {
                    observer.established(&conntype);
                }
                // Kept for the observer's close and for the idle timeout of the type.
                self.conntype = Some(conntype);
                let (handler, handle, state) = (&self.handler, &self.handle, &mut self.state);
                guarded(handle.addr, "on_established", || {
                    handler.on_established(handle, state)
                })?;
            }
            Event::Packet(packet) => {
                let (handler, handle, state) = (&self.handler, &self.handle, &mut self.state);
                guarded(handle.addr, "on_packet", || {
                    handler.on_packet(handle, state, packet)
                })?;
            }
            Event::Ping(message) => {
                self.settled = true;
                let Some(responder) = self.shared.ping.as_ref() else {
                    return Ok(buffered);
                };
                let (handle, stats) = (&self.handle, &self.shared.stats);
                let request = PingRequest::new(&message, handle.id, handle.addr, stats);
                stats.pings.fetch_add(1, Ordering::Relaxed);
                let max_echo = self.shared.limits.max_echo_bytes;
                // Two clock readings per ping, one per frame: the decoder's when the ping
                // was read, and this one for the pong (both put on the wall clock without
                // reading it, see `wall_clock`).
                let read_at = self.framed.codec().codec.read_at();
                let sent_at = Instant::now();
                let (received, sent) = wall_times(read_at, sent_at);
                let timing = ServerTiming { received, sent };
                // The pong is written into a buffer this thread keeps, then framed and sent
                // (see `send_pong`): no allocation per ping.
                let (encoder, framed) = (&self.shared.encoder, &mut self.framed);
                let pong = guarded(handle.addr, "the ping data provider", || {
                    with_pong_buffer(|pong| {
                        responder.encode_pong_into(&request, max_echo, timing, pong);
                        send_pong(framed, encoder, pong)
                    })
                });
                let written = match pong {
                    Ok(Ok(Sent {
                        length,
                        buffered: pending,
                    })) => {
                        buffered |= pending;
                        length
                    }
                    Ok(Err(e)) => return Err(self.cannot_send(e)),
                    Err(closed) => return Err(closed),
                };
                if let Some(observer) = &self.shared.observer {
                    observer.bytes_written(written as u64);
                    observer.ping_answered(Instant::now().saturating_duration_since(read_at));
                }
            }
            Event::Pong(_) => {}
            Event::Close(reason) => {
                self.refusal = Some(format!("protocol violation in packet id {frame_id}"));
                return Err(Closed::ByUs(reason));
            }
            Event::PeerClosed(reason) => return Err(Closed::ByPeer(reason)),
        }
        Ok(buffered)
    }

    /// Writes and flushes one frame (see [`flush`](Self::flush)).
    async fn write(&mut self, frame: Frame) -> Result<(), Closed> {
        self.buffer(frame)?;
        self.flush().await
    }

    /// Puts one frame in the write buffer.
    fn buffer(&mut self, frame: Frame) -> Result<(), Closed> {
        let dst = self.framed.write_buffer_mut();
        let before = dst.len();
        if let Err(e) = self.shared.encoder.encode_body(frame.id, &frame.body, dst) {
            return Err(self.cannot_send(e));
        }
        if let Some(observer) = &self.shared.observer {
            observer.bytes_written((self.framed.write_buffer().len() - before) as u64);
        }
        Ok(())
    }

    /// A frame that cannot be encoded (larger than the protocol's 4 GiB): logged, and
    /// the connection dropped.
    fn cannot_send(&self, e: FrameError) -> Closed {
        tracing::error!(peer = %self.handle.addr, client = %self.handle.id, "cannot send: {e}");
        Closed::SocketClosed
    }

    /// Writes out the write buffer, bounded by the write timeout: a peer that does not
    /// read cannot hold the task (or our memory) forever. It is closed with reason
    /// `timeout`, without a closeconn (it would not read that either).
    ///
    /// The deadline is set only when the socket does not take the bytes at once: the
    /// usual write completes on its first poll, and a timer per write (a clock read, a
    /// timer entry built and dropped) was a tenth of a ping's cost (BENCHMARKS.md). It
    /// moves the connection's one timer, which the loop in [`Conn::run`] moves back.
    async fn flush(&mut self) -> Result<(), Closed> {
        let write_timeout = self.shared.limits.write_timeout;
        let mut flush = SinkExt::<Frame>::flush(&mut self.framed);
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(Pin::new(&mut flush), cx))
        })
        .await;
        let result = match first {
            std::task::Poll::Ready(done) => Ok(done),
            std::task::Poll::Pending => {
                self.inbox.reset(after(write_timeout));
                tokio::select! {
                    biased;
                    done = &mut flush => Ok(done),
                    _ = self.inbox.timer() => Err(()),
                }
            }
        };
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(FrameError::Io(_))) => Err(Closed::SocketClosed),
            Ok(Err(e)) => Err(self.cannot_send(e)),
            Err(_) => {
                self.unwritable = true;
                self.refusal = Some(format!("peer did not read for {write_timeout:?}"));
                Err(Closed::ByUs(CloseReason::Timeout))
            }
        }
    }

    /// Flushes what is queued, sends closeconn, half-closes, and lingers for the peer's
    /// end of stream so that our last bytes are not destroyed by a reset.
    ///
    /// Bounded: the flush and the closeconn together get one write timeout, the linger
    /// `close_linger`, whatever the peer does.
    async fn close_gracefully(&mut self, reason: &CloseReason) {
        self.protocol.close();
        let queued = self.inbox.close();
        if self.unwritable {
            return;
        }
        let framed = &mut self.framed;
        let flushed = timeout(self.shared.limits.write_timeout, async {
            for command in queued {
                if let Command::Send(frame) = command {
                    framed.feed(frame).await?;
                }
            }
            framed.feed(closeconn_frame(Some(reason))).await?;
            framed.flush().await
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.handle.addr, client = %self.handle.id, "closing: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.handle.addr, client = %self.handle.id, "closing: flush timed out");
                return;
            }
        }
        let linger = self.shared.limits.close_linger;
        let stream = self.framed.get_mut();
        let _ = timeout(linger, async {
            stream.shutdown().await?;
            // On the heap: an array here would make every connection's task 4 KiB larger
            // for its whole life (resident memory per idle connection, and a 4 KiB copy at
            // every spawn), though only closing connections use it.
            let mut sink = vec![0u8; 4096];
            // Bounded in bytes too: a refused flooder's stray body is not worth reading
            // (2,000 of them sending 1 MB each cost a second of CPU).
            let mut left = LINGER_MAX_BYTES;
            while left > 0 {
                let n = stream.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n);
            }
            Ok::<(), io::Error>(())
        })
        .await;
    }
}
