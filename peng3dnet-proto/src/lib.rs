//! # peng3dnet-proto
//!
//! The peng3dnet protocol (version 2) and its ping extension without I/O: bytes to frames,
//! frames to messages, the connection state machine and the pong, byte-compatible with the
//! Python `peng3dnet` 0.1.3a0. No sockets, no async runtime, no TLS, and no clock reads:
//! where time matters (the pong's timestamps) the caller passes it in. This is the crate for
//! a game engine with its own loop, a blocking tool or another runtime; the `peng3dnet`
//! crate wraps it in tokio.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`frame`] | bytes to frames: length prefix, id, flags, zlib, size limits |
//! | [`value`] | frames to messages: msgpack bodies as [`Value`]s or serde types |
//! | [`registry`] | packet names to ids, the classic handshake's registry sync |
//! | [`protocol`] | the connection state machine (hello, settype, handshake, closeconn) |
//! | [`close`] | close reasons |
//! | [`ping_client`] | the ping extension's client side: [`PingClient`] takes hellos and pongs |
//! | [`pong`] | the ping extension's server side: [`PingResponder`] builds pongs |
//! | [`proxy`] | the PROXY protocol (v1, v2) a load balancer starts connections with |
//! | [`stats`] | client ids and server counters that ping data providers see |
//! | [`security`] | security levels (the reference's `SSLSEC_*`) |
//! | [`deadlines`] | a server connection's handshake, idle, frame and write deadlines, on the caller's clock |
//! | [`config`] | every option and limit with its default |
//! | [`error`] | one error enum per layer |
//! | [`wire`] | the protocol's versions and fixed packet ids |
//!
//! ## A complete ping over `std::net`
//!
//! The client side of the ping extension, driven by hand over a blocking socket: read the
//! server's hello, send settype and a ping, read the pong, close with `pingcomplete`.
//! (The `peng3dnet` crate's `blocking` module does this with timeouts and error handling.)
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//!
//! use bytes::BytesMut;
//! use peng3dnet_proto::frame::{Frame, FrameCodec};
//! use peng3dnet_proto::protocol::{ids, ClientProtocol, ConnType, Event};
//! use peng3dnet_proto::value::{self, map};
//! use peng3dnet_proto::{CloseReason, Config, Registry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut socket = TcpStream::connect("127.0.0.1:8080")?;
//! let config = Config::default();
//! let mut codec = FrameCodec::new(config.limits.frame, config.compression);
//! let mut protocol = ClientProtocol::new(
//!     ConnType::Ping,
//!     Registry::new(),
//!     config.registry_sync,
//!     config.limits.max_depth,
//! );
//! let mut inbox = BytesMut::new();
//!
//! // Reads frames and feeds them to the state machine until it reports an event; what the
//! // state machine answers goes out at once.
//! fn next_event(
//!     socket: &mut TcpStream,
//!     inbox: &mut BytesMut,
//!     codec: &mut FrameCodec,
//!     protocol: &mut ClientProtocol,
//! ) -> Result<Event, Box<dyn std::error::Error>> {
//!     loop {
//!         while let Some(frame) = codec.decode(inbox)? {
//!             let step = protocol.handle(frame);
//!             if let Some(reply) = step.send {
//!                 socket.write_all(&codec.to_bytes(reply)?)?;
//!             }
//!             if let Some(event) = step.event {
//!                 return Ok(event);
//!             }
//!         }
//!         let mut chunk = [0u8; 4096];
//!         let n = socket.read(&mut chunk)?;
//!         if n == 0 {
//!             return Err("server closed the connection".into());
//!         }
//!         inbox.extend_from_slice(&chunk[..n]);
//!     }
//! }
//!
//! // The hello makes the state machine answer with settype; the connection is then ready.
//! let event = next_event(&mut socket, &mut inbox, &mut codec, &mut protocol)?;
//! assert!(matches!(event, Event::Established(ConnType::Ping)));
//! let ping = map([("time", 1_700_000_000.0.into())]);
//! socket.write_all(&codec.to_bytes(Frame::new(ids::PING, value::encode(&ping)))?)?;
//!
//! if let Event::Pong(pong) = next_event(&mut socket, &mut inbox, &mut codec, &mut protocol)? {
//!     let data = pong.to_map(0);
//!     println!("server says: {}", value::get(&data, "name").map_or("?".into(), |v| v.to_string()));
//! }
//! let close = peng3dnet_proto::protocol::closeconn_frame(Some(&CloseReason::PingComplete));
//! socket.write_all(&codec.to_bytes(close)?)?;
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod close;
pub mod config;
pub mod deadlines;
pub mod error;
pub mod frame;
pub mod ping_client;
pub mod pong;
pub mod protocol;
pub mod proxy;
pub mod registry;
pub mod security;
pub mod sniff;
pub mod stats;
pub mod text;
pub mod value;
pub mod wire;

pub use close::CloseReason;
pub use config::{Config, Limits};
pub use error::{FrameError, RegistryError, ValueError};
pub use frame::{Frame, FrameCodec};
pub use ping_client::PingClient;
pub use pong::{MapWriter, PingMessage, PingRequest, PingResponder};
pub use protocol::{ConnType, Packet};
pub use registry::Registry;
pub use security::SecurityLevel;
pub use stats::{ClientId, Stats, StatsSnapshot};
pub use value::Value;
