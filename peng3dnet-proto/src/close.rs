//! Close reasons: the `reason` of a closeconn packet, as a type.
//!
//! The reference sends reasons as plain strings; [`CloseReason`] names the ones the
//! protocol and this implementation use and keeps any other as [`CloseReason::Other`], so a
//! reason round-trips unchanged whatever a peer sent.

use std::fmt;

/// Why a connection was closed: the `reason` of a closeconn packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// `pingcomplete`: the client got its pong.
    PingComplete,
    /// `servershutdown`: the server is stopping.
    ServerShutdown,
    /// `protoversionmismatch`: the peers speak different protocol versions.
    ProtoVersionMismatch,
    /// `unknownconntype`: the server does not offer the requested connection type.
    UnknownConnType,
    /// `packetregmismatch`: client and server registries differ.
    PacketRegMismatch,
    /// `smartpacketinvalid`: a handshake packet in the wrong state or at the wrong side.
    SmartPacketInvalid,
    /// `invalidpingpacket`: a ping connection carried an id other than 64 or 65.
    InvalidPingPacket,
    /// `pinginvalidside`: a ping reached a client or a pong reached a server.
    PingInvalidSide,
    /// `socketclose`: the peer vanished without a closeconn.
    SocketClose,
    /// `packettoolarge`: a frame or inflated body over the limit (ours, not the reference's).
    PacketTooLarge,
    /// `invalidpacket`: a body that is not valid msgpack or not the expected shape.
    InvalidPacket,
    /// `encryptionunsupported`: the reserved encryption flag was set.
    EncryptionUnsupported,
    /// `timeout`: the peer was too slow (handshake, idle or write).
    Timeout,
    /// `serverfull`: the server holds its maximum number of connections.
    ServerFull,
    /// `sendqueuefull`: the peer did not read and too much was queued for it.
    SendQueueFull,
    /// `internalerror`: the server's own code failed while handling this connection (a
    /// panic in an application hook or ping data provider); ours, not the reference's.
    InternalError,
    /// `tlsrequired`: a TLS server got a connection that does not start a TLS handshake
    /// (ours, not the reference's; sent in plain so that a plain client can read it).
    TlsRequired,
    /// Any other reason an application chose.
    Other(String),
}

impl CloseReason {
    /// The reason as it travels on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            CloseReason::Other(s) => s,
            known => known.metric_label(),
        }
    }

    /// The reason as a metric label or any other bounded key: the wire name of a reason of
    /// the protocol, `other` for any other. A peer chooses the reason of its closeconn, so
    /// a label made of it verbatim would let any client add a series per connection (and,
    /// unescaped, forge lines of the exposition).
    ///
    /// ```
    /// use peng3dnet_proto::CloseReason;
    ///
    /// assert_eq!(CloseReason::Timeout.metric_label(), "timeout");
    /// assert_eq!(CloseReason::from("x\"} 1").metric_label(), "other");
    /// ```
    pub fn metric_label(&self) -> &'static str {
        match self {
            CloseReason::PingComplete => "pingcomplete",
            CloseReason::ServerShutdown => "servershutdown",
            CloseReason::ProtoVersionMismatch => "protoversionmismatch",
            CloseReason::UnknownConnType => "unknownconntype",
            CloseReason::PacketRegMismatch => "packetregmismatch",
            CloseReason::SmartPacketInvalid => "smartpacketinvalid",
            CloseReason::InvalidPingPacket => "invalidpingpacket",
            CloseReason::PingInvalidSide => "pinginvalidside",
            CloseReason::SocketClose => "socketclose",
            CloseReason::PacketTooLarge => "packettoolarge",
            CloseReason::InvalidPacket => "invalidpacket",
            CloseReason::EncryptionUnsupported => "encryptionunsupported",
            CloseReason::Timeout => "timeout",
            CloseReason::ServerFull => "serverfull",
            CloseReason::SendQueueFull => "sendqueuefull",
            CloseReason::InternalError => "internalerror",
            CloseReason::TlsRequired => "tlsrequired",
            CloseReason::Other(_) => "other",
        }
    }
}

impl From<&str> for CloseReason {
    fn from(s: &str) -> Self {
        match s {
            "pingcomplete" => CloseReason::PingComplete,
            "servershutdown" => CloseReason::ServerShutdown,
            "protoversionmismatch" => CloseReason::ProtoVersionMismatch,
            "unknownconntype" => CloseReason::UnknownConnType,
            "packetregmismatch" => CloseReason::PacketRegMismatch,
            "smartpacketinvalid" => CloseReason::SmartPacketInvalid,
            "invalidpingpacket" => CloseReason::InvalidPingPacket,
            "pinginvalidside" => CloseReason::PingInvalidSide,
            "socketclose" => CloseReason::SocketClose,
            "packettoolarge" => CloseReason::PacketTooLarge,
            "invalidpacket" => CloseReason::InvalidPacket,
            "encryptionunsupported" => CloseReason::EncryptionUnsupported,
            "timeout" => CloseReason::Timeout,
            "serverfull" => CloseReason::ServerFull,
            "sendqueuefull" => CloseReason::SendQueueFull,
            "internalerror" => CloseReason::InternalError,
            "tlsrequired" => CloseReason::TlsRequired,
            other => CloseReason::Other(other.to_owned()),
        }
    }
}

impl From<String> for CloseReason {
    fn from(s: String) -> Self {
        CloseReason::from(s.as_str())
    }
}

/// The reason for people and logs: a reason of the protocol as its wire name, any other
/// [escaped and cut short](crate::text::Shown), since a peer chooses it (a newline in it
/// would forge a log line, a 4 MiB one flood the log). [`CloseReason::as_str`] gives the
/// reason exactly as it travels.
///
/// ```
/// use peng3dnet_proto::CloseReason;
///
/// assert_eq!(CloseReason::ServerFull.to_string(), "serverfull");
/// let forged = CloseReason::from("bye\nINFO forged line");
/// assert_eq!(forged.to_string(), "bye\\x0aINFO forged line");
/// ```
impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Other(reason) => crate::text::Shown(reason).fmt(f),
            known => f.write_str(known.as_str()),
        }
    }
}
