//! Errors of the I/O layer: what a connection, a ping or a server reports to its user.
//!
//! The protocol's own errors (framing, msgpack, registry) come from `peng3dnet-proto` and
//! are kept as the [`std::error::Error::source`] of these.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub use peng3dnet_proto::error::{FrameError, RegistryError, ValueError};
use peng3dnet_proto::security::InsufficientSecurity;
use peng3dnet_proto::sniff::Greeting;
use peng3dnet_proto::CloseReason;

/// What a connection was doing when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Resolving the target's name.
    Resolving,
    /// Opening the TCP connection.
    Connecting,
    /// The TLS handshake.
    TlsHandshake,
    /// Waiting for the server's hello, its first packet.
    WaitingForHello,
    /// Waiting for the classic handshake to complete.
    WaitingForHandshake,
    /// Sending a packet to a peer that does not read.
    Sending,
    /// Waiting for a pong.
    WaitingForPong,
    /// Waiting for a packet.
    Receiving,
    /// Waiting for the peer to close after our closeconn.
    Closing,
}

impl Phase {
    /// The phase in words, as it follows "timed out".
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolving => "resolving",
            Phase::Connecting => "connecting",
            Phase::TlsHandshake => "in the TLS handshake",
            Phase::WaitingForHello => "waiting for hello",
            Phase::WaitingForHandshake => "waiting for the handshake",
            Phase::Sending => "sending",
            Phase::WaitingForPong => "waiting for pong",
            Phase::Receiving => "waiting for a packet",
            Phase::Closing => "waiting for the server to close",
        }
    }
}

impl Phase {
    /// The likely causes of a time-out in this phase, as a clause that follows the
    /// time-out ("; ..."), or nothing.
    pub fn hint(self) -> &'static str {
        match self {
            Phase::WaitingForHello => {
                "; the server accepted the connection but sent nothing: it may use TLS, \
                 not be a peng3dnet server, or be overloaded"
            }
            _ => "",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of a connection as seen by the library user: a classic client, a ping
/// ([`PingError`] is this type), or the server's per-client operations.
///
/// Each message is whole: it says the cause too ("cannot connect to 127.0.0.1:8080:
/// connection refused"), so [`std::error::Error::source`] does not return that cause again
/// (chain printers such as anyhow's showed it twice). The cause stays in the variant's
/// fields; the wrappers of a lower layer's error ([`Frame`](Self::Frame),
/// [`Value`](Self::Value), [`Registry`](Self::Registry),
/// [`InsufficientSecurity`](Self::InsufficientSecurity)) show its message and return its
/// own source.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The target could not be parsed or resolved.
    Resolve {
        /// What was asked for.
        target: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The TCP connection could not be made (refused, unreachable).
    Connect {
        /// Address tried last.
        addr: SocketAddr,
        /// Why it failed.
        source: io::Error,
    },
    /// Every address of the target failed (refused, unreachable): each with its last
    /// error, in the order tried. A target with one address fails with
    /// [`ConnectionError::Connect`] instead.
    ConnectEach(Vec<(SocketAddr, io::Error)>),
    /// The peer did not do what was expected in time: reached (or not, when `phase` is
    /// [`Phase::Resolving`] or [`Phase::Connecting`]) but silent.
    Timeout {
        /// What we were waiting for.
        phase: Phase,
        /// The time allowance that ran out.
        after: Duration,
        /// The target as it was asked for (`host:port`, or the address), when known: the
        /// library's connect and ping functions fill it in.
        target: Option<String>,
    },
    /// The peer closed the connection, with its closeconn reason if it sent one.
    ClosedByPeer(Option<CloseReason>),
    /// We closed the connection because the peer broke the protocol.
    Protocol(CloseReason),
    /// The peer does not speak peng3dnet (its first bytes are not a hello).
    NotPeng3dnet(String),
    /// The server uses TLS and this connection does not: its first bytes were a TLS
    /// record, or it closed with `tlsrequired`.
    TlsRequired,
    /// The server speaks another version of the protocol.
    ProtocolMismatch,
    /// Framing failed.
    Frame(FrameError),
    /// A body could not be decoded or converted.
    Value(ValueError),
    /// Registry problem (unknown packet name and the like).
    Registry(RegistryError),
    /// The TLS handshake failed (wrong CA, wrong name, expired certificate, a peer that
    /// does not speak TLS...).
    Tls(io::Error),
    /// The packet requires a more secure connection (the reference's `min_sslsec_level`).
    InsufficientSecurity(InsufficientSecurity),
    /// The connection is not in a state where this operation is allowed.
    State(&'static str),
    /// A blocking ping ([`crate::blocking`]) of a server that runs on the same tokio
    /// `current_thread` runtime, from that runtime's thread: it would hold the thread the
    /// server needs for the whole call, run to its timeout and blame the server. Refused
    /// at once instead.
    BlockingOnCurrentThreadRuntime,
    /// An async function of this crate was polled outside a tokio runtime (tokio's own
    /// sockets and timers would panic: "there is no reactor running"). Every async entry
    /// point that connects says so instead, as [`crate::server::ServerBuilder::bind`] does.
    NoRuntime,
    /// Socket error.
    Io(io::Error),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConnectionError::*;
        match self {
            Resolve { target, source } => write!(f, "cannot resolve {target}: {source}"),
            Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            ConnectEach(failures) => {
                write!(
                    f,
                    "cannot connect to any address: {}",
                    each_failure(failures)
                )
            }
            Timeout {
                phase,
                after,
                target,
            } => write!(
                f,
                "{}timed out {phase} (after {:.1} s){}",
                target_text(target),
                after.as_secs_f64(),
                phase.hint()
            ),
            ClosedByPeer(reason) => write!(f, "connection closed by peer: {}", reason_text(reason)),
            Protocol(reason) => {
                write!(
                    f,
                    "protocol violation, connection closed with reason {reason}"
                )
            }
            NotPeng3dnet(why) => write!(f, "not a peng3dnet server: {why}"),
            TlsRequired => f.write_str("the server requires TLS"),
            ProtocolMismatch => {
                f.write_str("the server speaks another protocol version (protoversionmismatch)")
            }
            Frame(e) => e.fmt(f),
            Value(e) => e.fmt(f),
            Registry(e) => e.fmt(f),
            Tls(e) => f.write_str(&crate::tls::describe_handshake_error(e)),
            InsufficientSecurity(e) => e.fmt(f),
            State(what) => write!(f, "not allowed in this connection state: {what}"),
            BlockingOnCurrentThreadRuntime => f.write_str(
                "the blocking client was called on the thread of the tokio current_thread \
                 runtime that runs this server, which could not answer while the call blocks \
                 it: use peng3dnet::ping (async) there, or call it from \
                 tokio::task::spawn_blocking or a thread of your own",
            ),
            NoRuntime => f.write_str(
                "no tokio runtime: call this inside one (#[tokio::main]), or use \
                 peng3dnet::blocking from synchronous code",
            ),
            Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for ConnectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Shown in full by Display: their own causes, not themselves.
            ConnectionError::Frame(e) => e.source(),
            ConnectionError::Value(e) => e.source(),
            ConnectionError::Registry(e) => e.source(),
            ConnectionError::InsufficientSecurity(e) => e.source(),
            // The others' messages include their cause already.
            _ => None,
        }
    }
}

impl From<FrameError> for ConnectionError {
    fn from(e: FrameError) -> Self {
        ConnectionError::Frame(e)
    }
}

impl From<ValueError> for ConnectionError {
    fn from(e: ValueError) -> Self {
        ConnectionError::Value(e)
    }
}

impl From<RegistryError> for ConnectionError {
    fn from(e: RegistryError) -> Self {
        ConnectionError::Registry(e)
    }
}

impl From<InsufficientSecurity> for ConnectionError {
    fn from(e: InsufficientSecurity) -> Self {
        ConnectionError::InsufficientSecurity(e)
    }
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io(e)
    }
}

/// [`ConnectionError::NoRuntime`] unless called inside a tokio runtime: the first check of
/// every async entry point that connects.
pub(crate) fn require_runtime() -> Result<(), ConnectionError> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(ConnectionError::NoRuntime),
    }
}

/// The error for a server greeting that is not a peng3dnet hello, or `None` if it is one
/// (or too short to tell).
pub(crate) fn greeting_error(greeting: Greeting) -> Option<ConnectionError> {
    Some(match greeting {
        Greeting::Incomplete | Greeting::Peng3dnet => return None,
        Greeting::Tls => ConnectionError::TlsRequired,
        Greeting::Ssh(line) => {
            ConnectionError::NotPeng3dnet(format!("it sent '{line}', an SSH banner"))
        }
        Greeting::Http(line) => {
            ConnectionError::NotPeng3dnet(format!("it sent '{line}', an HTTP response"))
        }
        Greeting::Other(bytes) => ConnectionError::NotPeng3dnet(format!(
            "its first bytes '{bytes}' cannot start a peng3dnet frame"
        )),
    })
}

/// The error for a closeconn received instead of (or as) the hello.
pub(crate) fn closed_at_hello(reason: Option<CloseReason>) -> ConnectionError {
    match reason {
        Some(CloseReason::TlsRequired) => ConnectionError::TlsRequired,
        other => ConnectionError::ClosedByPeer(other),
    }
}

fn each_failure(failures: &[(SocketAddr, io::Error)]) -> String {
    let parts: Vec<String> = failures.iter().map(|(a, e)| format!("{a}: {e}")).collect();
    parts.join("; ")
}

fn target_text(target: &Option<String>) -> String {
    match target {
        Some(t) => format!("{t}: "),
        None => String::new(),
    }
}

fn reason_text(reason: &Option<CloseReason>) -> String {
    match reason {
        Some(r) => r.to_string(),
        None => "no reason given".into(),
    }
}

impl ConnectionError {
    /// A read error: a TLS failure that surfaces after the handshake (TLS 1.3 reports a
    /// refused or missing client certificate with the first read) is [`Self::Tls`], any
    /// other [`Self::Io`].
    pub(crate) fn from_read(e: io::Error) -> Self {
        #[cfg(feature = "tls")]
        let tls = e.get_ref().is_some_and(|i| i.is::<rustls::Error>());
        #[cfg(not(feature = "tls"))]
        let tls = false;
        if tls {
            ConnectionError::Tls(e)
        } else {
            ConnectionError::Io(e)
        }
    }

    /// True if this error means the connection is gone (closed or broken), as opposed to a
    /// problem with one operation.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            ConnectionError::ClosedByPeer(_)
                | ConnectionError::Protocol(_)
                | ConnectionError::Io(_)
                | ConnectionError::Frame(_)
        )
    }
}

impl ConnectionError {
    /// True if the connection could not be made because this machine ran short of
    /// resources (too many open files, no buffer space, no memory): not the target's
    /// failure. A caller with many connections open should wait for some to end and try
    /// again ([`crate::many`] does).
    pub fn is_local_exhaustion(&self) -> bool {
        match self {
            ConnectionError::Connect { source, .. } | ConnectionError::Io(source) => {
                crate::connect::is_local_exhaustion(source)
            }
            ConnectionError::ConnectEach(failures) => failures
                .iter()
                .any(|(_, e)| crate::connect::is_local_exhaustion(e)),
            _ => false,
        }
    }

    /// True if the target refused the connection: every address tried answered with a
    /// reset (nothing listens on the port).
    pub fn is_refused(&self) -> bool {
        match self {
            ConnectionError::Connect { source, .. } => {
                source.kind() == io::ErrorKind::ConnectionRefused
            }
            ConnectionError::ConnectEach(failures) => failures
                .iter()
                .all(|(_, e)| e.kind() == io::ErrorKind::ConnectionRefused),
            _ => false,
        }
    }

    /// Names the target in a [`ConnectionError::Timeout`] that does not name one yet;
    /// other errors are returned as they are (they name their address already, or concern
    /// an established connection).
    ///
    /// ```
    /// use std::time::Duration;
    /// use peng3dnet::error::{ConnectionError, Phase};
    ///
    /// let e = ConnectionError::Timeout { phase: Phase::WaitingForPong, after: Duration::from_secs(2), target: None };
    /// assert_eq!(
    ///     e.with_target("example.com:8080").to_string(),
    ///     "example.com:8080: timed out waiting for pong (after 2.0 s)"
    /// );
    /// ```
    pub fn with_target(self, target: impl fmt::Display) -> Self {
        match self {
            ConnectionError::Timeout {
                phase,
                after,
                target: None,
            } => ConnectionError::Timeout {
                phase,
                after,
                target: Some(target.to_string()),
            },
            other => other,
        }
    }

    /// True if the server was reached but did not answer in time (a failed ping, as
    /// opposed to a refused or broken connection).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectionError::Timeout { .. })
    }
}

/// What kind of failure a [`ConnectionError`] is, in one stable word ([`as_str`]): the
/// `kind` of the CLI's JSON records, the exporter's `probe_peng3dnet_failure_info{kind}`,
/// the state `watch` shows and the `kind` attribute of the Python package's exceptions.
/// Made here, once, so that every surface says the same thing; the words never change
/// meaning (a new kind may be added).
///
/// ```
/// use std::time::Duration;
/// use peng3dnet::error::{ConnectionError, ErrorKind, Phase};
///
/// let e = ConnectionError::Timeout { phase: Phase::WaitingForPong, after: Duration::from_secs(1), target: None };
/// assert_eq!(e.kind(), ErrorKind::Timeout);
/// assert_eq!(e.kind().as_str(), "timeout");
/// ```
///
/// [`as_str`]: ErrorKind::as_str
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The target could not be parsed or resolved.
    Resolve,
    /// Nothing listens: every address answered the connection attempt with a reset.
    Refused,
    /// The connection could not be made otherwise (unreachable, no route, local limits).
    Connect,
    /// The target did not answer in time (in any phase).
    Timeout,
    /// The server uses TLS and the connection does not.
    TlsRequired,
    /// The connection uses TLS and the server does not.
    TlsNotUsed,
    /// The server's certificate was not accepted.
    TlsCertificate,
    /// The server refused our client certificate, or wants one.
    TlsClientCertificate,
    /// Another TLS handshake failure.
    Tls,
    /// The peer does not speak peng3dnet.
    NotPeng3dnet,
    /// The server speaks another protocol version.
    ProtocolMismatch,
    /// The server closed the connection (with its reason, if it gave one).
    Closed,
    /// The server broke the protocol (we closed with the reason).
    Protocol,
    /// The connection broke (reset, broken pipe).
    Io,
    /// Anything else: misuse of the API, an encoding error.
    Other,
}

impl ErrorKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::Resolve,
        ErrorKind::Refused,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::TlsRequired,
        ErrorKind::TlsNotUsed,
        ErrorKind::TlsCertificate,
        ErrorKind::TlsClientCertificate,
        ErrorKind::Tls,
        ErrorKind::NotPeng3dnet,
        ErrorKind::ProtocolMismatch,
        ErrorKind::Closed,
        ErrorKind::Protocol,
        ErrorKind::Io,
        ErrorKind::Other,
    ];

    /// The kind's word (snake case), as every surface shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Resolve => "resolve",
            ErrorKind::Refused => "refused",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::TlsRequired => "tls_required",
            ErrorKind::TlsNotUsed => "tls_not_used",
            ErrorKind::TlsCertificate => "tls_certificate",
            ErrorKind::TlsClientCertificate => "tls_client_certificate",
            ErrorKind::Tls => "tls",
            ErrorKind::NotPeng3dnet => "not_peng3dnet",
            ErrorKind::ProtocolMismatch => "protocol_mismatch",
            ErrorKind::Closed => "closed",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Io => "io",
            ErrorKind::Other => "other",
        }
    }

    /// The kind named by its word ([`as_str`](Self::as_str)), if there is one.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ConnectionError {
    /// The kind of failure, for code that reports or counts failures (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        use ConnectionError::*;
        match self {
            Resolve { .. } => ErrorKind::Resolve,
            Connect { .. } | ConnectEach(_) if self.is_refused() => ErrorKind::Refused,
            Connect { .. } | ConnectEach(_) => ErrorKind::Connect,
            Timeout { .. } => ErrorKind::Timeout,
            TlsRequired => ErrorKind::TlsRequired,
            Tls(e) => tls_kind(e),
            NotPeng3dnet(_) => ErrorKind::NotPeng3dnet,
            ProtocolMismatch => ErrorKind::ProtocolMismatch,
            ClosedByPeer(_) => ErrorKind::Closed,
            Protocol(_) => ErrorKind::Protocol,
            Io(_) | Frame(FrameError::Io(_)) => ErrorKind::Io,
            Frame(_)
            | Value(_)
            | Registry(_)
            | InsufficientSecurity(_)
            | State(_)
            | BlockingOnCurrentThreadRuntime
            | NoRuntime => ErrorKind::Other,
        }
    }
}

/// The kind of a TLS handshake failure.
#[cfg(feature = "tls")]
fn tls_kind(e: &io::Error) -> ErrorKind {
    let name = crate::tls::handshake_error_kind(e);
    ErrorKind::from_name(name).unwrap_or(ErrorKind::Tls)
}

/// Without TLS support there is no handshake to fail in detail.
#[cfg(not(feature = "tls"))]
fn tls_kind(_: &io::Error) -> ErrorKind {
    ErrorKind::Tls
}

/// Why a ping failed: the connection's error. Connection problems (refused, unreachable,
/// not peng3dnet) are kept apart from a server that was reached but did not answer in
/// time ([`ConnectionError::Timeout`]).
pub type PingError = ConnectionError;

impl From<crate::target::BadTarget> for ConnectionError {
    fn from(e: crate::target::BadTarget) -> Self {
        ConnectionError::Resolve {
            target: e.0.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        }
    }
}
