//! The packet registry: packet names (`namespace:category.name`) to ids and back.
//!
//! Ids below 64 belong to the protocol; application packets get ids from 64 upward in
//! registration order, unless an id is forced. On a classic handshake the server sends its
//! whole registry and the client adopts the server's ids name by name
//! ([`Registry::sync_with`]), so both sides may register in any order.

use std::collections::{BTreeMap, HashMap};

use crate::config::{MissingPacketAction, RegistrySync};
use crate::error::RegistryError;
use crate::security::SecurityLevel;
use crate::value::Value;
use crate::wire::ids;

/// First id handed out automatically.
pub const FIRST_APP_ID: u32 = 64;

/// Names of the protocol's own packets, with their fixed ids.
pub const INTERNAL_PACKETS: [(&str, u32); 5] = [
    ("peng3dnet:internal.hello", ids::HELLO),
    ("peng3dnet:internal.settype", ids::SETTYPE),
    ("peng3dnet:internal.handshake", ids::HANDSHAKE),
    ("peng3dnet:internal.handshake.accept", ids::HANDSHAKE_ACCEPT),
    ("peng3dnet:internal.closeconn", ids::CLOSECONN),
];

/// A bidirectional map of packet names and ids.
///
/// ```
/// use peng3dnet_proto::Registry;
/// let mut reg = Registry::new();
/// assert_eq!(reg.register("chat:msg.say").unwrap(), 64);
/// assert_eq!(reg.register("chat:msg.join").unwrap(), 65);
/// assert!(reg.register("chat:msg.say").is_err());
/// assert_eq!(reg.name(65), Some("chat:msg.join"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// Name to id, for sending.
    by_name: HashMap<String, u32>,
    /// Id to name, ordered so the handshake lists packets in id order.
    by_id: BTreeMap<u32, String>,
    /// Next automatic id.
    next_id: u32,
    /// Minimum connection security a packet needs to be sent (by name, so it survives
    /// a registry sync); absent means [`SecurityLevel::None`].
    min_security: HashMap<String, SecurityLevel>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry holding the protocol's own packets and nothing else.
    pub fn new() -> Self {
        let mut reg = Registry {
            by_name: HashMap::new(),
            by_id: BTreeMap::new(),
            next_id: FIRST_APP_ID,
            min_security: HashMap::new(),
        };
        for (name, id) in INTERNAL_PACKETS {
            reg.insert(name, id);
        }
        reg
    }

    /// The registry of [`new`](Self::new), built once per process and shared: what a
    /// connection that never registers packets (a ping) needs, without building its own.
    ///
    /// ```
    /// use peng3dnet_proto::Registry;
    /// assert_eq!(*Registry::shared_internal(), Registry::new());
    /// ```
    pub fn shared_internal() -> std::sync::Arc<Registry> {
        static INTERNAL: std::sync::LazyLock<std::sync::Arc<Registry>> =
            std::sync::LazyLock::new(|| std::sync::Arc::new(Registry::new()));
        INTERNAL.clone()
    }

    /// Registers an application packet with the next free id (64 and up).
    pub fn register(&mut self, name: &str) -> Result<u32, RegistryError> {
        self.check_new_name(name)?;
        while self.by_id.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.insert(name, id);
        Ok(id)
    }

    /// Registers an application packet with a forced id (64 and up).
    pub fn register_with_id(&mut self, name: &str, id: u32) -> Result<u32, RegistryError> {
        self.check_new_name(name)?;
        if id < FIRST_APP_ID {
            return Err(RegistryError::Reserved(id));
        }
        if let Some(holder) = self.by_id.get(&id) {
            return Err(RegistryError::IdTaken {
                id,
                name: holder.clone(),
            });
        }
        self.insert(name, id);
        Ok(id)
    }

    fn check_new_name(&self, name: &str) -> Result<(), RegistryError> {
        let well_formed = name
            .split_once(':')
            .is_some_and(|(ns, rest)| !ns.is_empty() && !rest.is_empty());
        if !well_formed {
            return Err(RegistryError::BadName(name.into()));
        }
        if self.by_name.contains_key(name) {
            return Err(RegistryError::NameTaken(name.into()));
        }
        Ok(())
    }

    fn insert(&mut self, name: &str, id: u32) {
        self.by_name.insert(name.to_owned(), id);
        self.by_id.insert(id, name.to_owned());
    }

    /// Requires a minimum connection security for sending a packet (the reference's
    /// `min_sslsec_level`): sending it on a less secure connection is refused.
    pub fn set_min_security(
        &mut self,
        name: &str,
        level: SecurityLevel,
    ) -> Result<(), RegistryError> {
        if !self.by_name.contains_key(name) {
            return Err(RegistryError::UnknownName(name.to_owned()));
        }
        self.min_security.insert(name.to_owned(), level);
        Ok(())
    }

    /// The minimum connection security a packet needs.
    pub fn min_security(&self, name: &str) -> SecurityLevel {
        self.min_security.get(name).copied().unwrap_or_default()
    }

    /// The id of a name.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name of an id.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    /// Every `(name, id)`, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.by_id.iter().map(|(id, name)| (name.as_str(), *id))
    }

    /// Number of registered packets, the protocol's own included.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Never true: the protocol's packets are always there. Present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The registry as the handshake carries it: a map of name to id.
    pub fn to_value(&self) -> Value {
        Value::Map(
            self.iter()
                .map(|(name, id)| (Value::from(name), Value::from(id)))
                .collect(),
        )
    }

    /// Adopts a server's registry (a handshake's `registry` map), as a client does.
    ///
    /// If the name sets differ and the action is [`MissingPacketAction::CloseConnection`],
    /// returns `Err(())` and changes nothing (the caller closes with `packetregmismatch`).
    /// Otherwise every name both sides know takes the server's id; names only we know keep
    /// theirs unless the server uses that id for something else, in which case they are
    /// dropped (they could never be told apart on the wire).
    pub fn sync_with(&mut self, server: &Value, sync: RegistrySync) -> Result<(), SyncMismatch> {
        if !sync.autosync {
            return Ok(());
        }
        let mut theirs: HashMap<&str, u32> = HashMap::new();
        for (k, v) in server.as_map().ok_or(SyncMismatch)? {
            let name = k.as_str().ok_or(SyncMismatch)?;
            let id = v
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or(SyncMismatch)?;
            theirs.insert(name, id);
        }
        let same = theirs.len() == self.by_name.len()
            && theirs.keys().all(|n| self.by_name.contains_key(*n));
        if !same && sync.missing_packet_action == MissingPacketAction::CloseConnection {
            return Err(SyncMismatch);
        }
        let mut next = Registry {
            by_name: HashMap::new(),
            by_id: BTreeMap::new(),
            next_id: self.next_id,
            min_security: std::mem::take(&mut self.min_security),
        };
        for (name, _) in self.by_name.iter() {
            if let Some(&id) = theirs.get(name.as_str()) {
                if !next.by_id.contains_key(&id) {
                    next.insert(name, id);
                }
            }
        }
        let used_by_server: std::collections::HashSet<u32> = theirs.values().copied().collect();
        for (name, &id) in self.by_name.iter() {
            if !theirs.contains_key(name.as_str())
                && !used_by_server.contains(&id)
                && !next.by_id.contains_key(&id)
            {
                next.insert(name, id);
            }
        }
        *self = next;
        Ok(())
    }
}

/// The server's registry does not match ours and the configuration says to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncMismatch;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::map;

    #[test]
    fn internal_packets_are_always_present() {
        let reg = Registry::new();
        assert_eq!(reg.id("peng3dnet:internal.closeconn"), Some(16));
        assert_eq!(reg.len(), 5);
    }

    #[test]
    fn automatic_ids_start_at_64_and_skip_forced_ones() {
        let mut reg = Registry::new();
        assert_eq!(reg.register_with_id("a:b.forced", 65).unwrap(), 65);
        assert_eq!(reg.register("a:b.one").unwrap(), 64);
        assert_eq!(reg.register("a:b.two").unwrap(), 66);
    }

    #[test]
    fn registration_errors() {
        let mut reg = Registry::new();
        reg.register("a:b.one").unwrap();
        assert_eq!(
            reg.register("a:b.one"),
            Err(RegistryError::NameTaken("a:b.one".into()))
        );
        assert_eq!(
            reg.register_with_id("a:b.x", 10),
            Err(RegistryError::Reserved(10))
        );
        assert!(matches!(
            reg.register_with_id("a:b.y", 64),
            Err(RegistryError::IdTaken { id: 64, .. })
        ));
        assert!(matches!(
            reg.register("nonamespace"),
            Err(RegistryError::BadName(_))
        ));
    }

    #[test]
    fn sync_adopts_the_servers_ids() {
        let mut server = Registry::new();
        server.register("app:p.b").unwrap();
        server.register("app:p.a").unwrap();
        let mut client = Registry::new();
        client.register("app:p.a").unwrap();
        client.register("app:p.b").unwrap();
        client
            .sync_with(&server.to_value(), RegistrySync::default())
            .unwrap();
        assert_eq!(client.id("app:p.a"), Some(65));
        assert_eq!(client.id("app:p.b"), Some(64));
        assert_eq!(
            client,
            Registry {
                next_id: client.next_id,
                ..server
            }
        );
    }

    #[test]
    fn sync_mismatch_closes_or_is_ignored_per_config() {
        let mut server = Registry::new();
        server.register("app:p.only_server").unwrap();
        server.register("app:p.both").unwrap();
        let mut client = Registry::new();
        client.register("app:p.both").unwrap();
        client.register("app:p.only_client").unwrap();
        let before = client.clone();
        assert_eq!(
            client.sync_with(&server.to_value(), RegistrySync::default()),
            Err(SyncMismatch)
        );
        assert_eq!(client, before);
        let ignore = RegistrySync {
            missing_packet_action: MissingPacketAction::Ignore,
            ..RegistrySync::default()
        };
        client.sync_with(&server.to_value(), ignore).unwrap();
        assert_eq!(client.id("app:p.both"), Some(65));
        // only_client had 65 on our side, which the server uses for app:p.both: dropped.
        assert_eq!(client.id("app:p.only_client"), None);
    }

    #[test]
    fn sync_off_keeps_our_ids() {
        let mut client = Registry::new();
        client.register("app:p.a").unwrap();
        let off = RegistrySync {
            autosync: false,
            ..RegistrySync::default()
        };
        client.sync_with(&map([]), off).unwrap();
        assert_eq!(client.id("app:p.a"), Some(64));
    }
}
