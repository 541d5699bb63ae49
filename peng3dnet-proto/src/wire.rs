//! The wire's fixed numbers: the versions a peer announces and the packet ids whose meaning
//! the protocol fixes (docs/PROTOCOL.md, "Packet ids"). Every layer needs them (frames,
//! the registry, the state machine, the pong), so they live here, below all of them, and
//! no module has to import another one's internals for a constant.

/// The reference version this implementation speaks as.
pub const VERSION: &str = "0.1.3a0";
/// The reference release string sent in pongs.
pub const RELEASE: &str = "0.1.3";
/// Protocol version; peers with another one are refused.
pub const PROTOVERSION: u64 = 2;

/// Packet ids with a fixed meaning.
pub mod ids {
    /// `peng3dnet:internal.hello`, server to client.
    pub const HELLO: u32 = 1;
    /// `peng3dnet:internal.settype`, client to server.
    pub const SETTYPE: u32 = 2;
    /// `peng3dnet:internal.handshake`, server to client.
    pub const HANDSHAKE: u32 = 3;
    /// `peng3dnet:internal.handshake.accept`, client to server.
    pub const HANDSHAKE_ACCEPT: u32 = 4;
    /// `peng3dnet:internal.closeconn`, either way.
    pub const CLOSECONN: u32 = 16;
    /// The ping, client to server, on ping connections.
    pub const PING: u32 = 64;
    /// The pong, server to client, on ping connections.
    pub const PONG: u32 = 65;
}
