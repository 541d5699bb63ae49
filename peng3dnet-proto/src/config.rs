//! Configuration: the reference's options with its defaults, plus the limits it lacks.
//!
//! | reference key | here | default |
//! |---|---|---|
//! | `net.server.addr.host` / `.port` | [`Config::server_addr`] | `0.0.0.0:8080` |
//! | `net.client.addr.host` / `.port` | [`Config::client_host`], [`Config::client_port`] | `localhost`, `8080` |
//! | `net.compress.enabled` / `.threshold` / `.level` | [`Config::compression`] | `true`, `8192`, `6` |
//! | `net.registry.autosync` | [`RegistrySync::autosync`] | `true` |
//! | `net.registry.missingpacketaction` | [`RegistrySync::missing_packet_action`] | `closeconnection` |
//! | (none: the reference has no limits) | [`Config::limits`] | see [`Limits`] |

use std::net::SocketAddr;
use std::time::Duration;

/// The port peng3dnet uses when none is given.
pub const DEFAULT_PORT: u16 = 8080;

/// Everything a server or client can be configured with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where a server listens by default (`net.server.addr`).
    pub server_addr: SocketAddr,
    /// Host a client connects to when none is given (`net.client.addr.host`).
    pub client_host: String,
    /// Port a client uses when the target names none (`net.client.addr.port`).
    pub client_port: u16,
    /// How outgoing bodies are compressed (`net.compress.*`).
    pub compression: Compression,
    /// How a client adopts the server's registry (`net.registry.*`).
    pub registry_sync: RegistrySync,
    /// Limits on what a peer may make us do.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            client_host: "localhost".into(),
            client_port: DEFAULT_PORT,
            compression: Compression::default(),
            registry_sync: RegistrySync::default(),
            limits: Limits::default(),
        }
    }
}

/// Compression of outgoing bodies (`net.compress.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// Compress at all (`net.compress.enabled`, default `true`).
    pub enabled: bool,
    /// Bodies strictly longer than this many bytes are compressed
    /// (`net.compress.threshold`, default 8192).
    pub threshold: usize,
    /// zlib level 0 to 9 (`net.compress.level`, default 6).
    pub level: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: true,
            threshold: 8192,
            level: 6,
        }
    }
}

/// What a client does when the server's registry differs from its own
/// (`net.registry.missingpacketaction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingPacketAction {
    /// Close with reason `packetregmismatch` (the default).
    #[default]
    CloseConnection,
    /// Adopt the ids of the names both sides know and go on.
    Ignore,
}

/// Registry synchronisation on the classic handshake (`net.registry.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrySync {
    /// Adopt the server's ids name by name (`net.registry.autosync`, default `true`).
    pub autosync: bool,
    /// What to do when the name sets differ.
    pub missing_packet_action: MissingPacketAction,
}

impl Default for RegistrySync {
    fn default() -> Self {
        RegistrySync {
            autosync: true,
            missing_packet_action: MissingPacketAction::CloseConnection,
        }
    }
}

/// Limits on what a peer can make us do. The reference has none of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frame and inflated body a peer may send.
    pub frame: FrameLimits,
    /// Deepest msgpack nesting accepted (guards the decoder's stack). The decoder counts
    /// a container and its contents as a level each, so 64 allows about 30 nested arrays
    /// or maps.
    pub max_depth: usize,
    /// Most msgpack values (scalars and containers, each counted) one body may hold. A
    /// decoded value costs 40 bytes however small its encoding, so without this cap a body
    /// of one-byte items, or a small compressed body that inflates to one, would cost 40
    /// times its inflated size; with it, one body costs at most about
    /// `40 * max_items` bytes plus its own size. Refused with `packettoolarge`.
    pub max_items: usize,
    /// Time a peer has from connect until its handshake is complete (classic) or its
    /// connection type is set and its first ping arrived (ping).
    pub handshake_timeout: Duration,
    /// Time an established connection may stay silent before it is closed.
    pub idle_timeout: Duration,
    /// Time a write may wait for a peer that does not read.
    pub write_timeout: Duration,
    /// Most connections a server holds at once; more are refused with `serverfull`.
    pub max_connections: usize,
    /// Most bytes queued for one peer before it is closed as too slow.
    pub max_queued_bytes: usize,
    /// Largest ping (encoded msgpack) that a server echoes back under `oldmsg`; a larger
    /// one is echoed with its `time` key only, so the client can still time it.
    pub max_echo_bytes: usize,
    /// How long a closing connection waits for the peer to read its closeconn.
    pub close_linger: Duration,
    /// Largest frame (and inflated body) a peer may send before its connection type is
    /// set and, for classic connections, before the handshake is done (default 4 KiB:
    /// every handshake packet is far smaller). Compressed frames are refused until then.
    pub handshake_frame_length: usize,
    /// Largest frame (and inflated body) a peer may send on a ping connection (default
    /// 80 KiB: the default [`max_echo_bytes`](Self::max_echo_bytes) plus 16 KiB).
    pub ping_frame_length: usize,
    /// Time a frame that started arriving has to complete (default 30 s); a peer that
    /// dribbles a large frame is closed with `timeout`. Checked at least every
    /// `frame_timeout`, so a stalled frame is closed within twice this.
    pub frame_timeout: Duration,
    /// Bytes all connections of a server together may hold in partial frames and inflate
    /// buffers beyond the first 64 KiB of each (default 256 MiB). A partial frame is
    /// charged for what has arrived of it, not for the length its header announces, so
    /// the budget is taken only by peers that really send that much. A frame that would
    /// exceed it is refused with `serverfull`, counted in `Stats::budget_refused`.
    pub frame_budget: usize,
    /// Most connections one source may hold at once; more are refused with `serverfull`.
    /// A source is an IPv4 address, or an IPv6 prefix of
    /// [`per_addr_ipv6_prefix`](Self::per_addr_ipv6_prefix) bits. Default 64: without a
    /// cap one host could take every slot of a public server (the audit filled 16,384 in
    /// 7 s), and 64 is far above what one player, or a household behind one NAT address,
    /// holds at once (a ping takes its connection for milliseconds). 0 means no cap: for
    /// servers behind a proxy that does not send the PROXY protocol, where every
    /// connection seems to come from the proxy, and for load tests from one host.
    pub max_connections_per_addr: usize,
    /// How many leading bits of an IPv6 address make one source for
    /// [`max_connections_per_addr`](Self::max_connections_per_addr) (default 64: one host
    /// is commonly given a whole /64 and may use a new address per connection; 128 counts
    /// each address apart). IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub per_addr_ipv6_prefix: u8,
    /// Time an established ping connection may stay silent before it is closed (default
    /// 60 s; [`idle_timeout`](Self::idle_timeout) applies to the other types). A ping
    /// client pings and leaves, or pings again every few seconds; a ping connection held
    /// silent for minutes only holds a slot, as an attacker would.
    pub ping_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame: FrameLimits::default(),
            max_depth: 64,
            max_items: 1 << 18,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            max_queued_bytes: 4 << 20,
            max_echo_bytes: 64 << 10,
            close_linger: Duration::from_secs(2),
            handshake_frame_length: 4 << 10,
            ping_frame_length: (64 << 10) + (16 << 10),
            frame_timeout: Duration::from_secs(30),
            frame_budget: 256 << 20,
            max_connections_per_addr: 64,
            per_addr_ipv6_prefix: 64,
            ping_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Limits of the framing layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest length prefix accepted (id + flags + body), default 8 MiB.
    pub max_frame_length: usize,
    /// Largest body a compressed frame may inflate to, default 8 MiB.
    pub max_inflated_size: usize,
    /// Most a compressed body may grow when inflated, as a factor of its compressed size
    /// (default 100); every body may inflate to [`INFLATE_ALLOWANCE`] bytes whatever its
    /// ratio. Bounds the CPU a small compressed frame can cost. 0 means no ratio cap.
    pub max_inflate_ratio: usize,
    /// Whether compressed frames are accepted at all (default `true`). A server refuses
    /// them before a connection's type is set, where no packet is ever large.
    pub allow_compressed: bool,
}

/// Bytes any compressed body may inflate to, whatever its ratio (see
/// [`FrameLimits::max_inflate_ratio`]): more than every packet of the handshake and
/// every ordinary ping needs.
pub const INFLATE_ALLOWANCE: usize = 64 << 10;

impl FrameLimits {
    /// The most a compressed body of `compressed` bytes may inflate to under these limits.
    pub fn inflate_cap(&self, compressed: usize) -> usize {
        if self.max_inflate_ratio == 0 {
            return self.max_inflated_size;
        }
        compressed
            .saturating_mul(self.max_inflate_ratio)
            .saturating_add(INFLATE_ALLOWANCE)
            .min(self.max_inflated_size)
    }
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_frame_length: 8 << 20,
            max_inflated_size: 8 << 20,
            max_inflate_ratio: 100,
            allow_compressed: true,
        }
    }
}
