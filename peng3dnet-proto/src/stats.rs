//! What a server knows about its connections that pong building needs: the id it gives
//! each connection and its counters.
//!
//! They live in the protocol crate because a ping data provider
//! ([`crate::pong::PingRequest`]) sees them, whatever runs the server.

use std::fmt;
use std::sync::atomic::AtomicU64;

/// The id a server gives each connection, unique for the server's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Counters a server keeps (for status pages and the CLI's dynamic ping data).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused with `serverfull` (server full, or too many from one address).
    pub refused: AtomicU64,
    /// Frames refused because the server's budget for incoming frames
    /// (`Limits::frame_budget`) was spent.
    pub budget_refused: AtomicU64,
    /// Pings answered.
    pub pings: AtomicU64,
    /// Connections open now (what the server's `client_count` returns, without taking the
    /// clients lock: ping data providers read it on every ping).
    pub connected: AtomicU64,
}
