//! Peng3dnet for synchronous code: a ping client on `std::net` (no async runtime of its
//! own and none needed, so it works inside or outside a tokio runtime, in a game's loop
//! or a plain program), and a [`Server`] that runs on threads of its own.
//!
//! It is the same client as [`crate::ping`] (the same messages, replies, errors and
//! deadlines), driven over a blocking socket: the protocol comes from `peng3dnet-proto`,
//! and each read waits no longer than what is left of the caller's deadline.
//!
//! ```no_run
//! use peng3dnet::blocking::{ping_server, PingSession};
//! use peng3dnet::ping::PingOptions;
//!
//! # fn main() -> Result<(), peng3dnet::PingError> {
//! let reply = ping_server("localhost:8080", &PingOptions::default())?;
//! println!("{} answered in {:?}: {}", reply.peer, reply.delay, reply.server_data());
//!
//! let mut session = PingSession::connect("localhost:8080", &PingOptions::default())?;
//! for _ in 0..3 {
//!     println!("seq={} time={:?}", session.ping()?.seq, session.ping()?.delay);
//! }
//! session.close();
//! # Ok(()) }
//! ```
//!
//! It blocks the thread it is called on. On a tokio `current_thread` runtime (the body of
//! `#[tokio::test]` or of `#[tokio::main(flavor = "current_thread")]`) that is the
//! runtime's only thread: a ping from there of a [`crate::Server`] running on that same
//! runtime is refused at once with [`PingError::BlockingOnCurrentThreadRuntime`], since the
//! server could never answer it. Use [`crate::ping`] there, or `spawn_blocking`.
//!
//! Name resolution uses the system resolver through `std`, which cannot be interrupted:
//! a resolver that hangs can make a call overrun its timeout (pass an address to avoid it).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;

use peng3dnet_proto::ping_client::Received;
use peng3dnet_proto::PingClient;

use crate::error::{greeting_error, FrameError, Phase, PingError};
use crate::frame::{Frame, FrameCodec};
use crate::ping::{finish_reply, on_read, PingOptions, PingReply, Timings};
use crate::pong::unix_seconds;
use crate::protocol::{closeconn_frame, ids};
use crate::security::SecurityLevel;
use crate::sniff::{server_greeting, Greeting};
use crate::target::ToTarget;
use crate::tls::ClientTls;
use crate::value::Value;
use crate::CloseReason;

/// A blocking socket, plain or TLS.
enum Socket {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Socket {
    fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(s) => s,
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.flush(),
        }
    }
}

/// An open ping connection over a blocking socket: [`crate::ping::PingSession`] for
/// synchronous code.
pub struct PingSession {
    socket: Socket,
    codec: FrameCodec,
    /// The protocol: hello, sequence numbers, the outstanding ping, closes.
    client: PingClient,
    /// Bytes read and not yet decoded.
    inbox: BytesMut,
    /// Ping data; `time` and `seq` are set per ping.
    data: Value,
    /// Time allowed for each ping after the first.
    timeout: Duration,
    /// Time a write may wait for a server that does not read.
    write_timeout: Duration,
    /// Connection set-up timings, charged to the first reply, and the start time.
    setup: Option<(Instant, Timings)>,
    peer: SocketAddr,
    security: SecurityLevel,
}

impl std::fmt::Debug for PingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingSession")
            .field("peer", &self.peer)
            .field("security", &self.security)
            .field("phase", &self.client.phase())
            .finish_non_exhaustive()
    }
}

impl PingSession {
    /// Connects to a target (`host`, `host:port`, `[v6]:port`), waits for the hello and
    /// sets the connection type to `ping`, all within `options.timeout`.
    pub fn connect(target: impl ToTarget, options: &PingOptions) -> Result<PingSession, PingError> {
        let start = Instant::now();
        let parsed = target
            .to_target(options.config.client_port)
            .map_err(PingError::from)?;
        let addrs: Vec<SocketAddr> = (parsed.host.as_str(), parsed.port)
            .to_socket_addrs()
            .map_err(|source| PingError::Resolve {
                target: parsed.to_string(),
                source,
            })?
            .filter(|a| options.family.admits(a))
            .collect();
        if addrs.is_empty() {
            return Err(PingError::Resolve {
                target: parsed.to_string(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no {} address for {}", options.family, parsed.host),
                ),
            });
        }
        Self::connect_resolved(&addrs, &parsed.host, options, start)
            .map_err(|e| e.with_target(&parsed))
    }

    /// Connects to a socket address directly (no name resolution).
    pub fn connect_addr(addr: SocketAddr, options: &PingOptions) -> Result<PingSession, PingError> {
        Self::connect_resolved(&[addr], &addr.ip().to_string(), options, Instant::now())
            .map_err(|e| e.with_target(addr))
    }

    fn connect_resolved(
        addrs: &[SocketAddr],
        host: &str,
        options: &PingOptions,
        start: Instant,
    ) -> Result<PingSession, PingError> {
        if crate::server::on_this_thread::served_here(addrs) {
            return Err(PingError::BlockingOnCurrentThreadRuntime);
        }
        let resolve = start.elapsed();
        let deadline = crate::deadline::at_std(start, options.timeout);
        let connect_start = Instant::now();
        let tcp = connect_any(addrs, options.local_addr, deadline, options.timeout)?;
        let _ = tcp.set_nodelay(true);
        let peer = tcp.peer_addr()?;
        let connected = Instant::now();
        let (socket, security) = match &options.tls {
            None => (Socket::Plain(tcp), SecurityLevel::None),
            Some(tls) => tls_handshake(tls, host, tcp, deadline, options.timeout)?,
        };
        let tls_time = connected.elapsed();
        let after_tls = Instant::now();
        let config = &options.config;
        let mut session = PingSession {
            socket,
            codec: FrameCodec::new(options.frame_limits(), config.compression),
            client: PingClient::new(config),
            inbox: BytesMut::with_capacity(4096),
            data: options.data.clone(),
            timeout: options.timeout,
            write_timeout: config.limits.write_timeout,
            setup: None,
            peer,
            security,
        };
        session.await_hello(deadline, options.timeout)?;
        session.setup = Some((
            start,
            Timings {
                resolve,
                connect: connected - connect_start,
                tls: if options.tls.is_some() {
                    tls_time
                } else {
                    Duration::ZERO
                },
                hello: after_tls.elapsed(),
                ..Timings::default()
            },
        ));
        Ok(session)
    }

    /// Reads the next frame (`None`: end of stream), waiting no later than `deadline`; what
    /// it reads, frame, framing error or end, is the ping client's to judge.
    fn read_frame(
        &mut self,
        deadline: Instant,
        phase: Phase,
        allowance: Duration,
    ) -> Result<Option<Result<Frame, FrameError>>, PingError> {
        loop {
            match self.codec.decode(&mut self.inbox) {
                Ok(Some(frame)) => return Ok(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => return Ok(Some(Err(e))),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PingError::Timeout {
                    phase,
                    after: allowance,
                    target: Some(self.peer.to_string()),
                });
            }
            self.socket.tcp().set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 8192];
            match self.socket.read(&mut chunk) {
                Ok(0) => return Ok(self.codec.decode_eof(&mut self.inbox).transpose()),
                Ok(n) => self.inbox.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Ok(Some(Err(FrameError::Io(e)))),
            }
        }
    }

    /// Hands a read to the ping client; on a stop, closes as it says and returns the error.
    fn take(&mut self, read: Option<Result<Frame, FrameError>>) -> Result<Received, PingError> {
        on_read(&mut self.client, read, Instant::now()).map_err(|stop| {
            if let Some(reason) = stop.close {
                self.abort(reason);
            }
            stop.error
        })
    }

    /// Sends a frame, waiting at most the write timeout for a server that does not read.
    fn write_frame(&mut self, frame: Frame) -> Result<(), PingError> {
        let wire = self.codec.to_bytes(frame)?;
        self.socket
            .tcp()
            .set_write_timeout(Some(self.write_timeout))?;
        match self
            .socket
            .write_all(&wire)
            .and_then(|()| self.socket.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if is_timeout(&e) => Err(PingError::Timeout {
                phase: Phase::Sending,
                after: self.write_timeout,
                target: Some(self.peer.to_string()),
            }),
            Err(e) => Err(PingError::Io(e)),
        }
    }

    /// Reads the server's first bytes into the inbox until they tell what the server is,
    /// and fails at once if it is not a peng3dnet server (see
    /// [`crate::sniff::server_greeting`]).
    fn read_greeting(&mut self, deadline: Instant, allowance: Duration) -> Result<(), PingError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let complete = if left.is_zero() {
                if self.inbox.is_empty() {
                    return Err(PingError::Timeout {
                        phase: Phase::WaitingForHello,
                        after: allowance,
                        target: None,
                    });
                }
                true
            } else {
                self.socket.tcp().set_read_timeout(Some(left))?;
                let mut chunk = [0u8; 512];
                match self.socket.read(&mut chunk) {
                    Ok(0) if self.inbox.is_empty() => return Err(PingError::ClosedByPeer(None)),
                    Ok(0) => true,
                    Ok(n) => {
                        self.inbox.extend_from_slice(&chunk[..n]);
                        false
                    }
                    Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(PingError::from_read(e)),
                }
            };
            match server_greeting(&self.inbox, complete) {
                Greeting::Peng3dnet => return Ok(()),
                Greeting::Incomplete if !complete => continue,
                other => {
                    return Err(greeting_error(other)
                        .unwrap_or_else(|| PingError::NotPeng3dnet("no hello".into())))
                }
            }
        }
    }

    fn await_hello(&mut self, deadline: Instant, allowance: Duration) -> Result<(), PingError> {
        self.read_greeting(deadline, allowance)?;
        let read = self.read_frame(deadline, Phase::WaitingForHello, allowance)?;
        match self.take(read)? {
            Received::Established(settype) => self.write_frame(settype),
            _ => Err(PingError::NotPeng3dnet("invalid hello".into())),
        }
    }

    /// The address that answered.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Replaces the data sent with later pings (the seed's `setPingData`).
    pub fn set_data(&mut self, data: Value) {
        self.data = data;
    }

    /// Sets the time allowed for each later ping's pong.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a ping now and returns its sequence number; collect the pong with
    /// [`wait_for_pong`](Self::wait_for_pong).
    pub fn send_ping(&mut self) -> Result<u64, PingError> {
        let mut body = Vec::with_capacity(64);
        let unix_time = unix_seconds(SystemTime::now());
        let seq = self
            .client
            .send_ping(&mut body, &self.data, unix_time, Instant::now())
            .map_err(|_| PingError::State("the session is closed"))?;
        self.write_frame(Frame::new(ids::PING, body))?;
        Ok(seq)
    }

    /// Waits up to `timeout` for the pong of the last ping (the seed's `wait_for_pong`); a
    /// late pong of an earlier ping is skipped.
    pub fn wait_for_pong(&mut self, timeout: Duration) -> Result<PingReply, PingError> {
        if self.client.outstanding().is_none() {
            return Err(PingError::State("no ping outstanding"));
        }
        let deadline = crate::deadline::at_std(Instant::now(), timeout);
        loop {
            let read = self.read_frame(deadline, Phase::WaitingForPong, timeout)?;
            let received = Instant::now();
            let recvtime = unix_seconds(SystemTime::now());
            let Received::Pong(pong) = self.take(read)? else {
                continue;
            };
            let timings = match self.setup.take() {
                Some((start, t)) => Timings {
                    total: received - start,
                    ..t
                },
                None => Timings {
                    total: pong.delay,
                    ..Timings::default()
                },
            };
            return Ok(finish_reply(
                pong.seq,
                pong.message,
                pong.delay,
                recvtime,
                timings,
                self.peer,
                self.security,
            ));
        }
    }

    /// Sends a ping and waits for its pong, within the session's timeout (the first ping
    /// shares the connection's deadline).
    pub fn ping(&mut self) -> Result<PingReply, PingError> {
        let deadline = match self.setup {
            Some((start, _)) => crate::deadline::at_std(start, self.timeout),
            None => crate::deadline::at_std(Instant::now(), self.timeout),
        };
        self.send_ping()?;
        self.wait_for_pong(deadline.saturating_duration_since(Instant::now()))
    }

    /// Closes with `pingcomplete`.
    pub fn close(mut self) {
        self.abort(CloseReason::PingComplete);
    }

    /// Sends closeconn if the socket takes it at once, then closes; never waits for the
    /// server.
    fn abort(&mut self, reason: CloseReason) {
        self.client.close();
        if let Ok(wire) = self.codec.to_bytes(closeconn_frame(Some(&reason))) {
            let _ = self
                .socket
                .tcp()
                .set_write_timeout(Some(Duration::from_millis(100)));
            let _ = self.socket.write_all(&wire);
            let _ = self.socket.flush();
        }
        #[cfg(feature = "tls")]
        if let Socket::Tls(tls) = &mut self.socket {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        let _ = self.socket.tcp().shutdown(Shutdown::Both);
    }
}

/// Pings a server once (the seed's `pingServer`), blocking: connects, pings, closes with
/// `pingcomplete`, all within `options.timeout`. Works inside a tokio runtime too (it
/// blocks that thread, so prefer [`crate::ping::ping_server`] there), except for a
/// server on the same `current_thread` runtime (see the module documentation).
pub fn ping_server(target: impl ToTarget, options: &PingOptions) -> Result<PingReply, PingError> {
    let mut session = PingSession::connect(target, options)?;
    let result = session.ping();
    match &result {
        Ok(_) => session.abort(CloseReason::PingComplete),
        Err(PingError::ClosedByPeer(_) | PingError::Protocol(_) | PingError::ProtocolMismatch) => {}
        Err(_) => session.abort(CloseReason::Timeout),
    }
    result
}

/// Connects to the first address that accepts before `deadline`, trying them all as
/// RFC 8305 describes ([`crate::happy_eyeballs`]).
fn connect_any(
    addrs: &[SocketAddr],
    local: Option<std::net::IpAddr>,
    deadline: Instant,
    allowance: Duration,
) -> Result<TcpStream, PingError> {
    crate::happy_eyeballs::connect_blocking(addrs, local, deadline, allowance)
}

/// Without the `tls` feature there is no [`ClientTls`] value to call this with.
#[cfg(not(feature = "tls"))]
fn tls_handshake(
    tls: &ClientTls,
    _host: &str,
    _tcp: TcpStream,
    _deadline: Instant,
    _allowance: Duration,
) -> Result<(Socket, SecurityLevel), PingError> {
    match *tls {}
}

/// Runs the TLS handshake to completion before `deadline`.
#[cfg(feature = "tls")]
fn tls_handshake(
    tls: &ClientTls,
    host: &str,
    tcp: TcpStream,
    deadline: Instant,
    allowance: Duration,
) -> Result<(Socket, SecurityLevel), PingError> {
    let (config, name) = tls.rustls_client(host).map_err(PingError::Tls)?;
    let mut conn = rustls::ClientConnection::new(config, name)
        .map_err(|e| PingError::Tls(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PingError::Timeout {
                phase: Phase::TlsHandshake,
                after: allowance,
                target: None,
            });
        }
        tcp.set_read_timeout(Some(left))?;
        tcp.set_write_timeout(Some(left))?;
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(PingError::Tls(e)),
        }
    }
    let level = if tls.verifies() {
        SecurityLevel::ServerAuthenticated
    } else {
        SecurityLevel::Encrypted
    };
    Ok((
        Socket::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))),
        level,
    ))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A server for synchronous code: it owns a small tokio runtime on threads of its own,
/// so a game loop or a plain `main` can start it, change its data and stop it without
/// async code (reqwest's `blocking` is the model). It works inside a tokio runtime too.
///
/// Dropping it shuts it down (every client gets `servershutdown`), unlike the async
/// [`crate::Server`], which keeps serving until told to stop.
///
/// ```no_run
/// use peng3dnet::blocking;
/// use peng3dnet::value::map;
/// use peng3dnet::PingResponder;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let responder = PingResponder::new().with_static_data(map([("name", "my game".into())]));
/// let server = blocking::Server::bind(
///     peng3dnet::Server::builder().pingable(responder.clone()),
///     "0.0.0.0:8080",
/// )?;
/// for tick in 0..100u64 {
///     // ... the game's own work ...
///     responder.set("tick", tick.into()); // the next pong carries it
///     # let _ = &server;
/// }
/// server.shutdown();
/// # Ok(()) }
/// ```
#[must_use = "dropping the server shuts it down"]
pub struct Server {
    /// The async server, driven by `runtime`.
    server: crate::Server,
    /// The runtime whose threads run the server; `None` once shut down.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Server")
            .field("local_addr", &self.server.local_addr())
            .finish()
    }
}

impl Server {
    /// Starts a runtime of its own (one worker thread), binds `addr` and serves.
    pub fn bind<H: crate::server::Handler>(
        builder: crate::server::ServerBuilder<H>,
        addr: impl tokio::net::ToSocketAddrs + Send + 'static,
    ) -> Result<Server, crate::server::ServerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("peng3dnet-server")
            .enable_all()
            .build()?;
        // Bind from a thread of our own: `block_on` may not run on a thread that is
        // already inside a runtime (the caller's, if it has one).
        let handle = runtime.handle().clone();
        let server = std::thread::scope(|scope| {
            scope
                .spawn(move || handle.block_on(builder.bind(addr)))
                .join()
        })
        .map_err(|_| {
            crate::server::ServerError::Bind(io::Error::other("the server's bind panicked"))
        })??;
        Ok(Server {
            server,
            runtime: Some(runtime),
        })
    }

    /// The async server underneath: its clients, counters, ping responder, and
    /// `send`/`close_client`, all of which work from any thread.
    pub fn server(&self) -> &crate::Server {
        &self.server
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.server.client_count()
    }

    /// Closes every client with `servershutdown`, waits until every connection is gone,
    /// and stops the runtime's threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let handle = runtime.handle().clone();
        let server = self.server.clone();
        let _ = std::thread::scope(|scope| {
            scope
                .spawn(move || handle.block_on(server.shutdown()))
                .join()
        });
        runtime.shutdown_background();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
