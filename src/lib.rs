//! # peng3dnet
//!
//! The peng3dnet network protocol (version 2) and its ping extension, byte-compatible with
//! the Python `peng3dnet` 0.1.3a0, on tokio.
//!
//! ## Layout
//!
//! Each module is one layer; every rule of the protocol lives in exactly one of them.
//!
//! | module | layer |
//! |---|---|
//! | [`frame`] | bytes to frames: length prefix, id, flags, zlib, limits |
//! | [`value`] | frames to messages: msgpack bodies as [`Value`]s or serde types |
//! | [`registry`] | packet names to ids |
//! | [`protocol`] | the connection state machine (hello, settype, handshake, closeconn), sans I/O |
//! | [`conntype`] | what each connection type does: the ping extension's pong building |
//! | [`server`] | listener, per-connection tasks, limits, graceful shutdown |
//! | [`client`] | a classic (or custom-type) client connection |
//! | [`ping`] | pinging a server: [`ping_server`], [`PingReply`], sessions |
//! | [`tls`], [`transport`] | TLS set-up and security levels; the plain-or-TLS stream |
//! | [`config`] | every option and limit with its default |
//! | [`error`] | one error enum per layer |
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod error;
pub mod frame;
pub mod ping;
pub mod protocol;
pub mod registry;
pub mod value;

pub use config::Config;
pub use error::{ConnectionError, FrameError, RegistryError, ValueError};
pub use protocol::{CloseReason, ConnType, Packet};
pub use registry::Registry;
pub use value::Value;
pub mod client;
pub mod conntype;
pub mod server;
pub mod target;
pub mod tls;
pub mod transport;

pub use conntype::ping::PingResponder;
pub use ping::{ping_server, ping_server_blocking, PingError, PingOptions, PingReply, PingSession};
pub use server::Server;

/// The README's examples, compiled as doc tests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
