//! What the application sees of a server: its hooks ([`Handler`]), a connected client
//! ([`ClientHandle`]), how a connection ended ([`Closed`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::RegistryError;
use crate::frame::Frame;
use crate::protocol::{CloseReason, Packet};
use crate::registry::Registry;
use crate::security::InsufficientSecurity;
use crate::stats::ClientId;
use crate::tls::SecurityLevel;
use crate::value::{self, Value};

use super::mailbox::Mailbox;

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
pub(super) const LINGER_MAX_BYTES: usize = 64 << 10;

/// Bytes a queued message is charged besides its body: its frame header, its queue
/// node and its allocation.
pub(super) const QUEUE_OVERHEAD: usize = 64;

pub(super) enum Command {
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
    pub(super) id: ClientId,
    /// Peer address.
    pub(super) addr: SocketAddr,
    /// Commands to the connection task, with the bytes they queue.
    pub(super) mailbox: Arc<Mailbox<Command>>,
    /// Cap on the mailbox's queued bytes.
    pub(super) max_queued: usize,
    /// The server's registry, to name packets.
    pub(super) registry: Arc<Registry>,
    /// How secure the connection is (TLS, client certificate).
    pub(super) security: SecurityLevel,
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
    /// protocol ([`ServerBuilder::proxy_protocol`](super::ServerBuilder::proxy_protocol)), the client's its header names.
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
