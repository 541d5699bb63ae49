//! Security levels of a connection: the reference's `SSLSEC_*`.
//!
//! The level is a fact about the transport (plain TCP, TLS, which side proved its
//! identity), decided by the I/O layer; the protocol layer only compares it against a
//! packet's minimum ([`crate::Registry::set_min_security`]).

/// How secure a connection is: the reference's `SSLSEC_*` levels, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityLevel {
    /// `SSLSEC_NONE`: plain TCP.
    #[default]
    None = 0,
    /// `SSLSEC_WRAPPED`: inside TLS without encryption (never produced by this crate).
    Wrapped = 1,
    /// `SSLSEC_ENCRYPTED`: encrypted, but the server was not verified (client with
    /// `ClientTls::dangerous_no_verification` in the `peng3dnet` crate).
    Encrypted = 2,
    /// `SSLSEC_SERVERAUTH`: encrypted and the server proved its identity.
    ServerAuthenticated = 3,
    /// `SSLSEC_BOTHAUTH`: both sides proved their identity (client certificate verified).
    BothAuthenticated = 4,
}

/// A packet that needs a more secure connection than the one it would be sent on (the
/// reference's `min_sslsec_level`, set with [`crate::Registry::set_min_security`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packet {name} needs security level {required:?}, the connection has {actual:?}")]
pub struct InsufficientSecurity {
    /// Packet name.
    pub name: String,
    /// Level the packet requires.
    pub required: SecurityLevel,
    /// Level of the connection.
    pub actual: SecurityLevel,
}

impl InsufficientSecurity {
    /// Checks `level` against what the packet `name` requires in `registry`.
    pub fn check(
        registry: &crate::Registry,
        name: &str,
        level: SecurityLevel,
    ) -> Result<(), InsufficientSecurity> {
        let required = registry.min_security(name);
        if required > level {
            return Err(InsufficientSecurity {
                name: name.to_owned(),
                required,
                actual: level,
            });
        }
        Ok(())
    }
}
