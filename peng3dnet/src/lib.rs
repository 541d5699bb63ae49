#![doc = include_str!("../../README.md")]
//!
//! ## Crate layout
//!
//! The protocol itself, without I/O, is the `peng3dnet-proto` crate, re-exported here
//! module by module so that one path names each item. This crate adds the I/O:
//!
//! | module | layer |
//! |---|---|
//! | [`frame`], [`value`], [`registry`], [`protocol`], [`pong`], [`config`] | the protocol (from `peng3dnet-proto`) |
//! | [`codec`] | the frame codec as a tokio-util codec |
//! | [`transport`] | the plain-or-TLS stream |
//! | [`tls`] | TLS set-up with rustls; security levels |
//! | [`target`] | `host:port` targets and name resolution |
//! | [`server`] | listener, per-connection tasks, limits, graceful shutdown |
//! | [`observe`] | a server's events for metrics |
//! | [`client`] | a classic (or custom-type) client connection |
//! | [`happy_eyeballs`] | connecting to every address of a target, RFC 8305 style |
//! | [`ping`] | pinging a server: [`ping_server`], [`PingReply`], sessions |
//! | [`many`] | many targets at once: bounded, rate-capped, polite; results as they come |
//! | [`blocking`] | the same ping client for synchronous code, on `std::net` |
//! | [`master`] | a master server's list of servers, and announcing to it (feature `master`) |
//! | [`error`] | the errors this crate reports, keeping their causes |
#![warn(missing_docs, unreachable_pub)]

pub use peng3dnet_proto::{
    config, frame, pong, protocol, proxy, registry, security, sniff, stats, text, value,
};

pub mod blocking;
pub mod client;
pub mod codec;
mod deadline;
pub mod error;
mod fdlimit;
pub mod happy_eyeballs;
pub mod many;
#[cfg(feature = "master")]
pub mod master;
pub mod observe;
pub mod ping;
mod proxy_header;
pub mod server;

pub mod target;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
pub mod tls;
pub mod transport;
mod wall_clock;

pub use config::{Config, Limits};
pub use error::{ConnectionError, FrameError, RegistryError, ValueError};
pub use peng3dnet_proto::CloseReason;
pub use ping::{ping_addrs, ping_server, PingError, PingOptions, PingReply, PingSession};
pub use pong::{MapWriter, PingMessage, PingRequest, PingResponder};
pub use protocol::{ConnType, Packet};
pub use registry::Registry;
pub use security::SecurityLevel;
pub use server::Server;
pub use stats::{ClientId, Stats, StatsSnapshot};
pub use value::Value;
