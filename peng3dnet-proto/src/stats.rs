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
    /// What the PROXY protocol did (all zero when it is off).
    pub proxy: ProxyStats,
}

/// Counters of the PROXY protocol (a server behind a load balancer): headers accepted,
/// and connections refused, by reason.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Headers that named a client, whose address the connection then took.
    pub accepted: AtomicU64,
    /// `LOCAL` headers (the balancer's health checks) and headers that name no client
    /// (v1 `UNKNOWN`, v2 `UNSPEC` or UNIX): served with the connection's own addresses.
    pub local: AtomicU64,
    /// Refused: the source is not trusted to send a header.
    pub untrusted: AtomicU64,
    /// Refused: no header (other bytes first, or none before the handshake timeout).
    pub missing: AtomicU64,
    /// Refused: closed, or timed out, in the middle of a header.
    pub partial: AtomicU64,
    /// Refused: a malformed header.
    pub malformed: AtomicU64,
    /// Refused: a header longer than `proxy::MAX_HEADER_LEN`.
    pub oversized: AtomicU64,
}

impl ProxyStats {
    /// The counter of one refusal reason.
    pub fn refused(&self, reason: crate::proxy::Refusal) -> &AtomicU64 {
        use crate::proxy::Refusal;
        match reason {
            Refusal::Untrusted => &self.untrusted,
            Refusal::Missing => &self.missing,
            Refusal::Partial => &self.partial,
            Refusal::Malformed => &self.malformed,
            Refusal::Oversized => &self.oversized,
        }
    }
}

/// The server's counters read at one moment, as plain numbers: what a status page, a
/// log line or a test wants, without `load(Ordering)` on each field. Each counter is read
/// on its own (they are not taken under one lock), so two of them may be a few events
/// apart.
///
/// ```
/// use peng3dnet_proto::Stats;
/// use std::sync::atomic::Ordering;
///
/// let stats = Stats::default();
/// stats.pings.fetch_add(3, Ordering::Relaxed);
/// let now = stats.snapshot();
/// assert_eq!((now.pings, now.connected), (3, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections refused with `serverfull`.
    pub refused: u64,
    /// Frames refused because the frame budget was spent.
    pub budget_refused: u64,
    /// Pings answered.
    pub pings: u64,
    /// Connections open now.
    pub connected: u64,
    /// PROXY protocol headers accepted (naming a client, or `LOCAL`/unnamed).
    pub proxy_accepted: u64,
    /// Connections refused by the PROXY protocol, all reasons.
    pub proxy_refused: u64,
}

impl Stats {
    /// The counters now, as plain numbers (see [`StatsSnapshot`]).
    pub fn snapshot(&self) -> StatsSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let p = &self.proxy;
        StatsSnapshot {
            accepted: self.accepted.load(Relaxed),
            refused: self.refused.load(Relaxed),
            budget_refused: self.budget_refused.load(Relaxed),
            pings: self.pings.load(Relaxed),
            connected: self.connected.load(Relaxed),
            proxy_accepted: p.accepted.load(Relaxed) + p.local.load(Relaxed),
            proxy_refused: [
                &p.untrusted,
                &p.missing,
                &p.partial,
                &p.malformed,
                &p.oversized,
            ]
            .iter()
            .map(|c| c.load(Relaxed))
            .sum(),
        }
    }
}
