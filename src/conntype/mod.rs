//! Connection types: what happens on a connection once settype chose its type.
//!
//! - `classic` needs nothing beyond [`crate::protocol`]: the registry handshake, then
//!   application packets handed to the server's [`crate::server::Handler`] or read with
//!   [`crate::client::Client::recv`].
//! - `ping` ([`ping`]): the server answers each ping with a pong built by
//!   [`ping::PingResponder`].
//! - Custom types (the reference's `addConnType`): a server offers them with
//!   [`crate::server::ServerBuilder::conntype`], a client asks for one with
//!   [`crate::client::ClientBuilder::conntype`]; frames of id 64 and up then reach the
//!   application unchanged, without any registry.

pub mod ping;
