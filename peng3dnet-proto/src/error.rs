//! Errors, one enum per layer, each variant saying what went wrong in the peer's terms.
//!
//! Errors caused by a peer map to the close reason sent to it ([`FrameError::close_reason`],
//! [`ValueError::close_reason`]), so the peer learns what was refused and why.

use std::io;

use crate::close::CloseReason;

/// Framing errors: a frame that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than the configured maximum.
    #[error("frame of {length} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length (id + flags + body).
        length: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The length prefix is shorter than the 6-byte id and flags header.
    #[error("frame length {length} is shorter than the 6-byte header")]
    TooShort {
        /// Announced length.
        length: usize,
    },
    /// The AES flag is set; the protocol reserves it and nobody implements it.
    #[error("encrypted frames are not supported")]
    Encrypted,
    /// A compressed body inflates past the configured maximum.
    #[error("compressed body inflates past the limit of {max} bytes")]
    InflatedTooLarge {
        /// Configured maximum inflated size.
        max: usize,
    },
    /// A compressed frame where none is accepted (before the connection type is set).
    #[error("compressed frame refused before the connection type is set")]
    CompressedRefused,
    /// Too many bytes of partial frames and inflate buffers are held across the server;
    /// this peer's large frame is refused.
    #[error("server memory budget for incoming frames exhausted ({needed} bytes needed)")]
    BudgetExhausted {
        /// Bytes this frame needed.
        needed: usize,
    },
    /// A frame that started arriving did not complete in time.
    #[error("frame not completed within {0:?}")]
    FrameTimeout(std::time::Duration),
    /// A compressed body is not a valid zlib stream.
    #[error("invalid zlib body: {0}")]
    Inflate(String),
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the partial frame.
        buffered: usize,
    },
    /// We were asked to send a frame whose length does not fit the 32-bit prefix.
    #[error("outgoing frame of {length} bytes does not fit the 32-bit length prefix")]
    OutgoingTooLarge {
        /// Length that was asked for.
        length: usize,
    },
    /// The socket failed. Its message says the I/O error, so `source()` does not return it
    /// again.
    #[error("i/o error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

impl FrameError {
    /// The closeconn reason to send to the peer that caused this error, if the connection
    /// can still carry one.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self {
            FrameError::TooLarge { .. } | FrameError::InflatedTooLarge { .. } => {
                Some(CloseReason::PacketTooLarge)
            }
            FrameError::TooShort { .. }
            | FrameError::Inflate(_)
            | FrameError::CompressedRefused => Some(CloseReason::InvalidPacket),
            FrameError::BudgetExhausted { .. } => Some(CloseReason::ServerFull),
            FrameError::FrameTimeout(_) => Some(CloseReason::Timeout),
            FrameError::Encrypted => Some(CloseReason::EncryptionUnsupported),
            FrameError::Truncated { .. }
            | FrameError::OutgoingTooLarge { .. }
            | FrameError::Io(_) => None,
        }
    }
}

/// Errors decoding or converting a msgpack body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The body is not valid msgpack (or nests deeper than allowed).
    #[error("invalid msgpack body: {0}")]
    Decode(String),
    /// The body holds more msgpack values than allowed (decoding it would cost about 40
    /// bytes per value).
    #[error("more than {max} msgpack values in one body")]
    TooManyItems {
        /// Configured maximum (`Limits::max_items`).
        max: usize,
    },
    /// The body holds more bytes after one complete msgpack document.
    #[error("{0} trailing bytes after the msgpack body")]
    TrailingBytes(usize),
    /// A value does not have the shape a typed message needs.
    #[error("unexpected message shape: {0}")]
    Shape(String),
}

impl ValueError {
    /// The closeconn reason for a peer that sent such a body.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            ValueError::TooManyItems { .. } => CloseReason::PacketTooLarge,
            _ => CloseReason::InvalidPacket,
        }
    }
}

/// Errors from the packet registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The name is registered already.
    #[error("packet name {0:?} is already registered")]
    NameTaken(String),
    /// The id is taken by another name.
    #[error("packet id {id} is already used by {name:?}")]
    IdTaken {
        /// Requested id.
        id: u32,
        /// Name that holds it.
        name: String,
    },
    /// Ids below 64 belong to the protocol itself.
    #[error("packet id {0} is reserved for the protocol (ids below 64)")]
    Reserved(u32),
    /// The name is not `namespace:category.name`.
    #[error("packet name {0:?} is not of the form namespace:category.name")]
    BadName(String),
    /// No packet of that name is registered.
    #[error("no packet named {0:?} is registered")]
    UnknownName(String),
}
