//! # peng3dnet
//!
//! The peng3dnet network protocol (version 2) and its ping extension on tokio,
//! byte-compatible with the Python `peng3dnet` 0.1.3a0: a pingable [`Server`], a classic
//! [`client::Client`], a ping client ([`ping_server`], [`PingSession`]), many targets at
//! once ([`many`]), TLS ([`tls`]), and the same ping client and server for synchronous code
//! ([`blocking`]); with the `master` feature, a master server's client (`master`).
//!
//! A ping answers "are you there, how far away are you, and what are you?" in one short
//! connection: the client sends a map with its clock in it, the server answers with a map
//! of its own data (name, message of the day, user count) plus the echo of the ping, and
//! the client measures the round trip. The wire format, byte by byte, is
//! `docs/PROTOCOL.md` in the repository; how the crates and modules fit together is
//! `docs/ARCHITECTURE.md`.
//!
//! ## A pingable server and a ping of it
//!
//! The server's pong merges the ping's echo, the dynamic data (made per ping), the static
//! data and the library's version block, in that order; the static data wins a key both
//! have.
//!
//! ```
//! use peng3dnet::ping::{ping_server, PingOptions};
//! use peng3dnet::value::{get, map};
//! use peng3dnet::{PingResponder, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let responder = PingResponder::new()
//!     .with_static_data(map([("name", "my server".into()), ("motd", "hello".into())]))
//!     .with_dynamic(|request| map([("you_are", request.peer_addr.to_string().into())]));
//! let server = Server::builder().pingable(responder).bind("127.0.0.1:0").await?;
//!
//! let reply = ping_server(server.local_addr(), &PingOptions::default()).await?;
//! assert_eq!(get(reply.data(), "name").and_then(|v| v.as_str()), Some("my server"));
//! println!("{:?}: {}", reply.delay, reply.server_data());
//!
//! server.shutdown().await; // every client is told closeconn "servershutdown"
//! # Ok(()) }
//! ```
//!
//! [`PingSession`] keeps one connection open for a series of pings, each with a sequence
//! number; [`many::ping_many`] pings thousands of targets with bounded concurrency and
//! yields each result as it comes.
//!
//! ## From synchronous code
//!
//! [`blocking`] needs no runtime of the caller's: its server owns one, its client runs on
//! `std::net`.
//!
//! ```
//! use peng3dnet::ping::PingOptions;
//! use peng3dnet::value::map;
//! use peng3dnet::{blocking, PingResponder, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let responder = PingResponder::new().with_static_data(map([("name", "arena".into())]));
//! let server = blocking::Server::bind(Server::builder().pingable(responder.clone()), "127.0.0.1:0")?;
//! responder.set("players", 3.into()); // from a game loop, any thread: the next pong has it
//!
//! let mut session = blocking::PingSession::connect(server.local_addr(), &PingOptions::default())?;
//! let reply = session.ping()?;
//! assert_eq!(reply.seq, 0);
//! assert_eq!(peng3dnet::value::get(reply.data(), "players").and_then(|v| v.as_u64()), Some(3));
//! session.close();
//! server.shutdown();
//! # Ok(()) }
//! ```
//!
//! ## Errors
//!
//! Every failure a peer causes is refused with a specific closeconn reason
//! ([`CloseReason`]) and reported as a typed error ([`PingError`], [`ConnectionError`]):
//! a timeout names its target and what it was waiting for, a server that is not peng3dnet
//! (SSH, HTTP, TLS) is recognised from its first bytes. The server's limits (frame sizes,
//! nesting, timeouts, connection caps, send queues) are [`Limits`], each with its default.
//!
//! ## Features
//!
//! - `tls` (default): TLS with rustls, [`tls::ClientTls`] and [`tls::ServerTls`]. Without
//!   it the TLS types have no values, so the calls that take them keep their shape and
//!   every connection is plain TCP.
//! - `aws-lc` (default) or `ring`: rustls' crypto provider.
//! - `master` (default): [`master`], a master server's client (the list of servers, and
//!   announcing to it), on hyper's HTTP/1.1 client.
//!
//! ## Crate layout
//!
//! The protocol itself, without I/O, is the `peng3dnet-proto` crate, re-exported here
//! module by module so that one path names each item. This crate adds the I/O:
//!
//! | module | layer |
//! |---|---|
//! | [`frame`], [`value`], [`registry`], [`protocol`], [`pong`], [`config`], [`proxy`], [`sniff`], [`stats`], [`security`], [`text`] | the protocol (from `peng3dnet-proto`) |
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
pub mod error;
pub mod many;
#[cfg(feature = "master")]
pub mod master;
mod net;
pub mod observe;
pub mod ping;
mod proxy_header;
pub mod server;

mod wall_clock;

/// The README's examples, compiled and run as doc-tests; not part of the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub use config::{Config, Limits};
pub use error::{ConnectionError, ErrorKind, FrameError, RegistryError, ValueError};
pub(crate) use net::{connect, deadline, fdlimit};
pub use net::{happy_eyeballs, target, tls, transport};
pub use peng3dnet_proto::CloseReason;
pub use ping::{ping_addrs, ping_server, PingError, PingOptions, PingReply, PingSession};
pub use pong::{MapWriter, PingMessage, PingRequest, PingResponder};
pub use protocol::{ConnType, Packet};
pub use registry::Registry;
pub use security::SecurityLevel;
pub use server::Server;
pub use stats::{ClientId, Stats, StatsSnapshot};
pub use value::Value;
