//! The network below the protocol: connecting (from a chosen source, racing a name's
//! addresses as RFC 8305 describes), targets and their resolution, the byte stream
//! (plain or TLS), and deadlines that cannot overflow.
//!
//! | file | what it holds |
//! |---|---|
//! | `connect.rs` | one TCP connection from a source address (tokio and blocking), local shortages |
//! | `happy_eyeballs.rs` | racing the addresses of a name ([`happy_eyeballs`]) |
//! | `target.rs` | `host:port` targets and their resolution ([`target`]) |
//! | `transport.rs` | the byte stream, plain or TLS ([`transport`]) |
//! | `tls.rs`, `tls_off.rs` | TLS set-up for clients and servers, or its absence ([`tls`]) |
//! | `deadline.rs` | deadlines that cannot overflow, one timer for a run of steps |
//! | `fdlimit.rs` | the open-file limit, and raising it |
//!
//! Nothing here reaches back into the clients or the server: they use it.

pub(crate) mod connect;
pub(crate) mod deadline;
pub(crate) mod fdlimit;
pub mod happy_eyeballs;
pub mod target;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
pub mod tls;
pub mod transport;
