//! A client connection: connect, handshake, send and receive packets, close.
//!
//! [`Client`] owns its socket and reads only when asked ([`Client::recv`]), like
//! mini-redis's client: no background task, no hidden buffering. Use `tokio::select!` to
//! read while doing other work. Pinging has its own client in [`crate::ping`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use peng3dnet_proto::sniff::{server_greeting, Greeting};
use std::net::IpAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::{Framed, FramedParts};

use crate::codec::Codec;
use crate::config::Config;
use crate::deadline::Clock;
use crate::error::{closed_at_hello, greeting_error, ConnectionError, FrameError, Phase};
use crate::frame::Frame;
use crate::protocol::{
    closeconn_frame, ClientProtocol, ClientState, CloseReason, ConnType, Event, Packet,
};
use crate::registry::Registry;
use crate::security::InsufficientSecurity;
use crate::target::{Family, ToTarget};
use crate::tls::{ClientTls, SecurityLevel};
use crate::transport::Stream;
use crate::value::{self, Value};

/// Builds and connects a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    config: Config,
    registry: Registry,
    conntype: ConnType,
    timeout: Duration,
    family: Family,
    tls: Option<ClientTls>,
    local_addr: Option<IpAddr>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            config: Config::default(),
            registry: Registry::new(),
            conntype: ConnType::Classic,
            timeout: Duration::from_secs(10),
            family: Family::Any,
            tls: None,
            local_addr: None,
        }
    }
}

impl ClientBuilder {
    /// Uses this configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Uses this registry; on a classic handshake it adopts the server's ids.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Asks for this connection type (default `classic`).
    pub fn conntype(mut self, conntype: ConnType) -> Self {
        self.conntype = conntype;
        self
    }

    /// Time allowed for resolving, connecting and the handshake together (default 10 s):
    /// the reference's `wait_for_connection(timeout)`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects over TLS, verifying the server as `tls` says (see [`ClientTls`]); the
    /// TLS handshake counts against the [`timeout`](Self::timeout).
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Address family to use.
    pub fn family(mut self, family: Family) -> Self {
        self.family = family;
        self
    }

    /// Connects from this local address (port chosen by the system): for hosts with
    /// several addresses, as iputils' `ping -I` and fping's `-S`. Only server addresses of
    /// the same family are tried.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), peng3dnet::ConnectionError> {
    /// use peng3dnet::client::Client;
    /// let client = Client::builder()
    ///     .local_addr("127.0.0.2".parse().unwrap())
    ///     .connect("127.0.0.1:8080")
    ///     .await?;
    /// assert_eq!(client.local_addr()?.ip().to_string(), "127.0.0.2");
    /// # Ok(()) }
    /// ```
    pub fn local_addr(mut self, ip: IpAddr) -> Self {
        self.local_addr = Some(ip);
        self
    }

    /// Connects to a target (`host`, `host:port`, `[v6]:port` with the config's default
    /// port, 8080; or a `SocketAddr`, a `(host, port)` pair, a parsed `Target`: anything
    /// [`ToTarget`], as the ping functions take) and completes
    /// the handshake.
    pub async fn connect(self, target: impl ToTarget) -> Result<Client, ConnectionError> {
        crate::error::require_runtime()?;
        let target = target.to_target(self.config.client_port)?;
        let deadline = crate::deadline::at(Instant::now(), self.timeout);
        let addrs = timeout_at(deadline, target.resolve(self.family))
            .await
            .map_err(|_| ConnectionError::Timeout {
                phase: Phase::Resolving,
                after: self.timeout,
                target: Some(target.to_string()),
            })?
            .map_err(|source| ConnectionError::Resolve {
                target: target.to_string(),
                source,
            })?;
        let (stream, _, _) = open(
            &addrs,
            &target.host,
            self.tls.as_ref(),
            self.local_addr,
            deadline,
        )
        .await
        .map_err(|e| e.with_target(&target))?;
        self.handshake(stream, deadline)
            .await
            .map_err(|e| e.with_target(&target))
    }

    /// Connects to a socket address and completes the handshake.
    pub async fn connect_addr(self, addr: SocketAddr) -> Result<Client, ConnectionError> {
        crate::error::require_runtime()?;
        let deadline = crate::deadline::at(Instant::now(), self.timeout);
        let host = addr.ip().to_string();
        let (stream, _, _) = open(&[addr], &host, self.tls.as_ref(), self.local_addr, deadline)
            .await
            .map_err(|e| e.with_target(addr))?;
        self.handshake(stream, deadline)
            .await
            .map_err(|e| e.with_target(addr))
    }

    async fn handshake(
        self,
        mut stream: Stream,
        deadline: Instant,
    ) -> Result<Client, ConnectionError> {
        let peer = stream.peer_addr()?;
        let greeting = read_greeting(&mut stream, deadline, self.timeout).await?;
        let security = stream.security(self.tls.as_ref().is_some_and(ClientTls::verifies));
        let codec = Codec::new(self.config.limits.frame, self.config.compression);
        let protocol = ClientProtocol::new(
            self.conntype,
            self.registry,
            self.config.registry_sync,
            self.config.limits.max_depth,
        )
        .with_max_items(self.config.limits.max_items);
        let mut client = Client {
            framed: framed_with(stream, codec, greeting),
            protocol,
            config: self.config,
            peer,
            pending: Vec::new(),
            security,
        };
        match timeout_at(deadline, client.until_established()).await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // The deadline is the caller's: send closeconn if the socket takes it at
                // once, but do not linger past it.
                client.protocol.close();
                let _ =
                    close_stream(&mut client.framed, &CloseReason::Timeout, Duration::ZERO).await;
                Err(ConnectionError::Timeout {
                    phase: Phase::WaitingForHandshake,
                    after: self.timeout,
                    target: None,
                })
            }
        }
    }
}

/// Connects to the first address that accepts, then runs the TLS handshake if asked (checking
/// the certificate against `host`), all before `deadline`. Returns the stream, the time
/// the TLS handshake took and the address that accepted. With `local`, connects from that
/// address.
pub(crate) async fn open(
    addrs: &[SocketAddr],
    host: &str,
    tls: Option<&ClientTls>,
    local: Option<IpAddr>,
    deadline: Instant,
) -> Result<(Stream, Duration, SocketAddr), ConnectionError> {
    let (tcp, peer) = connect_any(addrs, local, deadline).await?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok((Stream::Plain(tcp), Duration::ZERO, peer));
    };
    let started = Instant::now();
    // Boxed: the handshake's state is large, and a plain connection should not carry
    // room for it.
    match timeout_at(deadline, Box::pin(tls.connect(host, tcp))).await {
        Ok(Ok(stream)) => Ok((stream, started.elapsed(), peer)),
        Ok(Err(e)) => Err(ConnectionError::Tls(e)),
        Err(_) => Err(ConnectionError::Timeout {
            phase: Phase::TlsHandshake,
            after: started.elapsed(),
            target: None,
        }),
    }
}

/// Reads a server's first bytes until they tell what the server is, no later than
/// `deadline`, and fails at once if it is not a peng3dnet server (a TLS server, SSH, HTTP,
/// bytes that cannot start a frame). Returns the bytes read, to be decoded as frames.
pub(crate) async fn read_greeting(
    stream: &mut Stream,
    deadline: Instant,
    allowance: Duration,
) -> Result<BytesMut, ConnectionError> {
    let sleep = std::pin::pin!(tokio::time::sleep_until(deadline));
    let mut clock: Clock<'_> = Clock::new(sleep, deadline, None);
    read_greeting_by(stream, &mut clock, allowance).await
}

/// [`read_greeting`] within `clock`'s deadline.
pub(crate) async fn read_greeting_by<H>(
    stream: &mut Stream,
    clock: &mut Clock<'_, H>,
    allowance: Duration,
) -> Result<BytesMut, ConnectionError> {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        let complete = match clock.within(stream.read_buf(&mut buf)).await {
            None if buf.is_empty() => {
                return Err(ConnectionError::Timeout {
                    phase: Phase::WaitingForHello,
                    after: allowance,
                    target: None,
                })
            }
            None => true,
            Some(Ok(n)) => n == 0,
            Some(Err(e)) => return Err(ConnectionError::from_read(e)),
        };
        if complete && buf.is_empty() {
            return Err(ConnectionError::ClosedByPeer(None));
        }
        match server_greeting(&buf, complete) {
            Greeting::Peng3dnet => return Ok(buf),
            Greeting::Incomplete if !complete => continue,
            other => {
                return Err(greeting_error(other)
                    .unwrap_or_else(|| ConnectionError::NotPeng3dnet("no hello".into())))
            }
        }
    }
}

/// A [`Framed`] whose read buffer starts with `read` (bytes already taken from `stream`).
pub(crate) fn framed_with(stream: Stream, codec: Codec, read: BytesMut) -> Framed<Stream, Codec> {
    let mut parts = FramedParts::new::<Frame>(stream, codec);
    parts.read_buf = read;
    Framed::from_parts(parts)
}

/// Connects to the first address that accepts, before `deadline` (from `local`, if
/// given), trying them all as RFC 8305 describes ([`crate::happy_eyeballs`]); also
/// returns the address that accepted.
pub(crate) async fn connect_any(
    addrs: &[SocketAddr],
    local: Option<IpAddr>,
    deadline: Instant,
) -> Result<(TcpStream, SocketAddr), ConnectionError> {
    crate::happy_eyeballs::connect_by(addrs, local, deadline).await
}

/// A connected client (classic or custom connection type).
///
/// ```no_run
/// # async fn run() -> Result<(), peng3dnet::ConnectionError> {
/// use peng3dnet::{client::Client, value::map, Registry};
///
/// let mut registry = Registry::new();
/// registry.register("chat:msg.say")?;
/// let mut client = Client::builder().registry(registry).connect("localhost:8080").await?;
/// client.send("chat:msg.say", &map([("text", "hi".into())])).await?;
/// let reply = client.recv().await?;
/// println!("{:?}: {}", reply.name, reply.body);
/// client.close("bye").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client {
    /// The socket with its frame codec.
    framed: Framed<Stream, Codec>,
    /// Handshake state and registry.
    protocol: ClientProtocol,
    /// Limits and options.
    config: Config,
    /// Server address.
    peer: SocketAddr,
    /// Packets that arrived while waiting for the handshake (a server may send right
    /// after accepting), handed out first by `recv`.
    pending: Vec<Packet>,
    /// How secure the connection is.
    security: SecurityLevel,
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// This end's address (see [`ClientBuilder::local_addr`]).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.framed.get_ref().tcp().local_addr()
    }

    /// How secure the connection is.
    pub fn security(&self) -> SecurityLevel {
        self.security
    }

    /// The registry, with the server's ids after the handshake.
    pub fn registry(&self) -> &Registry {
        self.protocol.registry()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    async fn until_established(&mut self) -> Result<(), ConnectionError> {
        loop {
            let frame = self.next_frame().await?;
            let step = self.protocol.handle(frame);
            if let Some(out) = step.send {
                self.framed.send(out).await?;
            }
            match step.event {
                Some(Event::Established(_)) => return Ok(()),
                Some(Event::Close(reason)) => return Err(self.fail(reason).await),
                Some(Event::PeerClosed(reason)) => return Err(closed_at_hello(reason)),
                Some(Event::Packet(p)) => self.pending.push(p),
                Some(Event::Ping(_) | Event::Pong(_)) | None => {}
            }
        }
    }

    async fn next_frame(&mut self) -> Result<Frame, ConnectionError> {
        match self.framed.next().await {
            Some(Ok(frame)) => Ok(frame),
            Some(Err(e)) => Err(match e.close_reason() {
                Some(reason) => self.fail(reason).await,
                None => e.into(),
            }),
            None => Err(ConnectionError::ClosedByPeer(None)),
        }
    }

    /// Closes because the server broke the protocol, and returns the error to report.
    async fn fail(&mut self, reason: CloseReason) -> ConnectionError {
        let linger = self.config.limits.close_linger;
        let _ = close_stream(&mut self.framed, &reason, linger).await;
        self.protocol.close();
        ConnectionError::Protocol(reason)
    }

    /// Sends a registered packet.
    pub async fn send(&mut self, name: &str, body: &Value) -> Result<(), ConnectionError> {
        let id = self
            .protocol
            .registry()
            .id(name)
            .ok_or_else(|| crate::RegistryError::UnknownName(name.to_owned()))?;
        InsufficientSecurity::check(self.protocol.registry(), name, self.security)?;
        self.send_id(id, body).await
    }

    /// Sends a packet by id (custom connection types use ids without names).
    pub async fn send_id(&mut self, id: u32, body: &Value) -> Result<(), ConnectionError> {
        if *self.protocol.state() != ClientState::Established {
            return Err(ConnectionError::State("the connection is closed"));
        }
        let frame = Frame::new(id, value::encode(body));
        // Bounded: a server that does not read cannot block us forever.
        match timeout(self.config.limits.write_timeout, self.framed.send(frame)).await {
            Ok(sent) => Ok(sent?),
            Err(_) => Err(ConnectionError::Timeout {
                phase: Phase::Sending,
                after: self.config.limits.write_timeout,
                target: Some(self.peer.to_string()),
            }),
        }
    }

    /// Waits for the next application packet. A closeconn from the server ends the wait
    /// with [`ConnectionError::ClosedByPeer`].
    ///
    /// Cancel safety: `recv` is cancel-safe, so it can be a branch of `tokio::select!`.
    /// Bytes read are kept in the client's buffer until they form a whole frame, and a
    /// packet is handed out in the same poll that decodes it, so a `recv` dropped at an
    /// `.await` (another branch won, a timeout) loses no packet: the next `recv` returns
    /// it. The only work a dropped `recv` can leave undone is closing: dropped while it
    /// answers a protocol violation with closeconn, or shuts down after the server's
    /// closeconn, the next call reports the connection closed
    /// ([`ConnectionError::State`]) instead of the reason.
    ///
    /// ```no_run
    /// # async fn run(mut client: peng3dnet::client::Client) -> Result<(), peng3dnet::ConnectionError> {
    /// use std::time::Duration;
    ///
    /// let mut tick = tokio::time::interval(Duration::from_millis(50));
    /// loop {
    ///     tokio::select! {
    ///         packet = client.recv() => println!("{:?}", packet?.name),
    ///         _ = tick.tick() => { /* a game tick; no packet is lost */ }
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Result<Packet, ConnectionError> {
        if !self.pending.is_empty() {
            return Ok(self.pending.remove(0));
        }
        loop {
            if *self.protocol.state() == ClientState::Closed {
                return Err(ConnectionError::State("the connection is closed"));
            }
            let frame = self.next_frame().await?;
            let step = self.protocol.handle(frame);
            if let Some(out) = step.send {
                self.framed.send(out).await?;
            }
            match step.event {
                Some(Event::Packet(p)) => return Ok(p),
                Some(Event::Close(reason)) => return Err(self.fail(reason).await),
                Some(Event::PeerClosed(reason)) => {
                    let _ = self.framed.get_mut().shutdown().await;
                    return Err(ConnectionError::ClosedByPeer(reason));
                }
                _ => {}
            }
        }
    }

    /// Waits up to `wait` for the server to close the connection, discarding packets, and
    /// returns its reason (the reference's `wait_for_close`).
    pub async fn wait_for_close(
        mut self,
        wait: Duration,
    ) -> Result<Option<CloseReason>, ConnectionError> {
        match timeout(wait, async {
            loop {
                match self.recv().await {
                    Ok(_) => continue,
                    Err(ConnectionError::ClosedByPeer(reason)) => return Ok(reason),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ConnectionError::Timeout {
                phase: Phase::Closing,
                after: wait,
                target: Some(self.peer.to_string()),
            }),
        }
    }

    /// Splits the client into a half that receives and a half that sends, so that one
    /// task can wait for packets while another sends (as `Framed::split`).
    ///
    /// The halves share the socket (each takes a short lock on the write side, which the
    /// reader needs only to answer a protocol violation with closeconn); the registry is
    /// the one the handshake settled. [`ClientReader::recv`] is cancel-safe as
    /// [`Client::recv`] is.
    ///
    /// ```no_run
    /// # async fn run(client: peng3dnet::client::Client) -> Result<(), peng3dnet::ConnectionError> {
    /// use peng3dnet::value::map;
    ///
    /// let (mut reader, mut writer) = client.split();
    /// let receiving = tokio::spawn(async move {
    ///     while let Ok(packet) = reader.recv().await {
    ///         println!("{:?}: {}", packet.name, packet.body);
    ///     }
    /// });
    /// writer.send("chat:msg.say", &map([("text", "hi".into())])).await?;
    /// writer.close("bye").await?;
    /// let _ = receiving.await;
    /// # Ok(()) }
    /// ```
    pub fn split(self) -> (ClientReader, ClientWriter) {
        let (sink, stream) = self.framed.split();
        let shared = Arc::new(Halves {
            sink: tokio::sync::Mutex::new(sink),
            closed: AtomicBool::new(*self.protocol.state() == ClientState::Closed),
            config: self.config,
        });
        let writer = ClientWriter {
            registry: self.protocol.registry().clone(),
            security: self.security,
            peer: self.peer,
            shared: shared.clone(),
        };
        let reader = ClientReader {
            stream,
            protocol: self.protocol,
            pending: self.pending,
            peer: self.peer,
            shared,
        };
        (reader, writer)
    }

    /// Closes the connection with a reason: sends closeconn, flushes, and waits (up to the
    /// configured linger) for the server to close its side.
    pub async fn close(mut self, reason: impl Into<CloseReason>) -> Result<(), ConnectionError> {
        let linger = self.config.limits.close_linger;
        self.protocol.close();
        close_stream(&mut self.framed, &reason.into(), linger).await
    }
}

/// What the halves of a split [`Client`] share.
#[derive(Debug)]
struct Halves {
    /// The write side of the socket.
    sink: tokio::sync::Mutex<SplitSink<Framed<Stream, Codec>, Frame>>,
    /// Closeconn was sent or received: nothing more is sent.
    closed: AtomicBool,
    /// Limits and options.
    config: Config,
}

impl Halves {
    /// Sends closeconn (once) and shuts the write side down, within `linger`.
    async fn close(&self, reason: &CloseReason, linger: Duration) -> Result<(), ConnectionError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = timeout(linger, async {
            let mut sink = self.sink.lock().await;
            sink.send(closeconn_frame(Some(reason))).await?;
            sink.close().await
        })
        .await;
        match result {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(FrameError::Io(e))) if is_disconnect(&e) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }
}

/// The receiving half of a [`Client`] (see [`Client::split`]).
#[derive(Debug)]
pub struct ClientReader {
    stream: SplitStream<Framed<Stream, Codec>>,
    protocol: ClientProtocol,
    pending: Vec<Packet>,
    peer: SocketAddr,
    shared: Arc<Halves>,
}

impl ClientReader {
    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Waits for the next application packet, as [`Client::recv`] does (and as
    /// cancel-safe). A closeconn from the server ends the wait with
    /// [`ConnectionError::ClosedByPeer`] and stops the writer.
    pub async fn recv(&mut self) -> Result<Packet, ConnectionError> {
        if !self.pending.is_empty() {
            return Ok(self.pending.remove(0));
        }
        loop {
            if *self.protocol.state() == ClientState::Closed {
                return Err(ConnectionError::State("the connection is closed"));
            }
            let frame = match self.stream.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    return Err(match e.close_reason() {
                        Some(reason) => self.fail(reason).await,
                        None => e.into(),
                    })
                }
                None => {
                    self.protocol.close();
                    self.shared.closed.store(true, Ordering::Release);
                    return Err(ConnectionError::ClosedByPeer(None));
                }
            };
            let step = self.protocol.handle(frame);
            match step.event {
                Some(Event::Packet(p)) => return Ok(p),
                Some(Event::Close(reason)) => return Err(self.fail(reason).await),
                Some(Event::PeerClosed(reason)) => {
                    self.protocol.close();
                    let linger = self.shared.config.limits.close_linger;
                    if !self.shared.closed.swap(true, Ordering::AcqRel) {
                        let _ = timeout(linger, async {
                            self.shared.sink.lock().await.close().await
                        })
                        .await;
                    }
                    return Err(ConnectionError::ClosedByPeer(reason));
                }
                _ => {}
            }
        }
    }

    /// Closes because the server broke the protocol, and returns the error to report.
    async fn fail(&mut self, reason: CloseReason) -> ConnectionError {
        self.protocol.close();
        let linger = self.shared.config.limits.close_linger;
        let _ = self.shared.close(&reason, linger).await;
        ConnectionError::Protocol(reason)
    }
}

/// The sending half of a [`Client`] (see [`Client::split`]).
#[derive(Debug)]
pub struct ClientWriter {
    registry: Registry,
    security: SecurityLevel,
    peer: SocketAddr,
    shared: Arc<Halves>,
}

impl ClientWriter {
    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Sends a registered packet, as [`Client::send`] does.
    pub async fn send(&mut self, name: &str, body: &Value) -> Result<(), ConnectionError> {
        let id = self
            .registry
            .id(name)
            .ok_or_else(|| crate::RegistryError::UnknownName(name.to_owned()))?;
        InsufficientSecurity::check(&self.registry, name, self.security)?;
        self.send_id(id, body).await
    }

    /// Sends a packet by id, as [`Client::send_id`] does.
    pub async fn send_id(&mut self, id: u32, body: &Value) -> Result<(), ConnectionError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(ConnectionError::State("the connection is closed"));
        }
        let frame = Frame::new(id, value::encode(body));
        let write_timeout = self.shared.config.limits.write_timeout;
        match timeout(write_timeout, async {
            self.shared.sink.lock().await.send(frame).await
        })
        .await
        {
            Ok(sent) => Ok(sent?),
            Err(_) => Err(ConnectionError::Timeout {
                phase: Phase::Sending,
                after: write_timeout,
                target: Some(self.peer.to_string()),
            }),
        }
    }

    /// Sends closeconn with a reason and shuts the write side down (within the configured
    /// linger). The reader then sees the server's end: its `recv` ends with
    /// [`ConnectionError::ClosedByPeer`].
    pub async fn close(self, reason: impl Into<CloseReason>) -> Result<(), ConnectionError> {
        let linger = self.shared.config.limits.close_linger;
        self.shared.close(&reason.into(), linger).await
    }
}

/// Sends closeconn, half-closes, and drains until the peer's end of stream or `linger`.
pub(crate) async fn close_stream(
    framed: &mut Framed<Stream, Codec>,
    reason: &CloseReason,
    linger: Duration,
) -> Result<(), ConnectionError> {
    let result = timeout(linger, async {
        framed.send(closeconn_frame(Some(reason))).await?;
        let stream = framed.get_mut();
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), FrameError>(())
    })
    .await;
    match result {
        Ok(Ok(())) | Err(_) => Ok(()),
        Ok(Err(FrameError::Io(e))) if is_disconnect(&e) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
    }
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | BrokenPipe | NotConnected | UnexpectedEof
    )
}
