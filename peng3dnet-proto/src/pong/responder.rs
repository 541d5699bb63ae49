//! [`PingResponder`]: where a pong's data comes from, how the sources merge, and the
//! fast path that writes the pong from the ping's bytes and pre-encoded parts.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use bytes::Bytes;

use super::map_writer::{MapWriter, ServerTiming};
use super::{version_block, PingRequest, SERVER_TIMING_KEY};
use crate::value::{self, get, insert, map, update, Value};

pub(super) type DynamicData = dyn Fn(&PingRequest<'_>) -> Value + Send + Sync;
pub(super) type DynamicEntries = dyn Fn(&PingRequest<'_>, &mut MapWriter<'_>) + Send + Sync;

/// A dynamic data provider: one returning a map, or one writing its entries.
#[derive(Clone)]
pub(super) enum Dynamic {
    Map(Arc<DynamicData>),
    Entries(Arc<DynamicEntries>),
}

/// Answers pings: what a pingable server tells the world about itself.
///
/// The seed's `PingableServerMixin` (its `pingdata` and `getPingData`) and the module's
/// `WRITEBACK` switch, as one value that a server holds and that may be changed while the
/// server runs (it is cheap to clone; clones share the data).
///
/// ```
/// use peng3dnet_proto::pong::PingResponder;
/// use peng3dnet_proto::value::{get, map};
///
/// let responder = PingResponder::new()
///     .with_static_data(map([("name", "my server".into()), ("motd", "hello".into())]))
///     .with_dynamic(|req| map([("you_sent", req.message().clone())]));
/// responder.set_static_data(map([("name", "renamed".into())]));
/// assert_eq!(get(&responder.static_data(), "name").unwrap().as_str(), Some("renamed"));
/// ```
#[derive(Clone)]
pub struct PingResponder {
    /// Static data (the seed's `pingdata`) with its encoding, shared by every clone and
    /// every responder derived with the `with_*` methods, so that
    /// [`set_static_data`](Self::set_static_data) and [`set`](Self::set) on any of them
    /// reach the server. Swapped atomically: the ping path reads it without a lock.
    static_data: Arc<ArcSwap<StaticPart>>,
    /// Dynamic data (the seed's `getPingData`), kept by clones and derived responders.
    dynamic: Option<Dynamic>,
    /// Echo the ping under `oldmsg` (the seed's `WRITEBACK`).
    writeback: bool,
}

impl std::fmt::Debug for PingResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingResponder")
            .field("static_data", &self.static_data())
            .field("dynamic", &self.dynamic.is_some())
            .field("writeback", &self.writeback)
            .finish()
    }
}

impl Default for PingResponder {
    fn default() -> Self {
        Self::new()
    }
}

impl PingResponder {
    /// A responder with no data of its own and write-back on.
    pub fn new() -> Self {
        PingResponder {
            static_data: Arc::new(ArcSwap::from_pointee(StaticPart::new(map([])))),
            dynamic: None,
            writeback: true,
        }
    }

    /// Sets the static data (a map: name, message of the day and the like). The data is
    /// shared with every clone of this responder, as with
    /// [`set_static_data`](Self::set_static_data).
    pub fn with_static_data(self, data: Value) -> Self {
        self.set_static_data(data);
        self
    }

    /// Sets the dynamic data provider, called for every ping with the ping message, the
    /// client's id and address and the server's counters. It returns a map (user count and
    /// the like); it runs on the connection's task, so it should be quick.
    ///
    /// Merge order: the static data (and keys [`set`](Self::set) pushes) wins over the
    /// dynamic data when both have a key, as in the seed.
    pub fn with_dynamic(
        mut self,
        provider: impl Fn(&PingRequest<'_>) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.dynamic = Some(Dynamic::Map(Arc::new(provider)));
        self
    }

    /// Sets a dynamic data provider that writes its entries (key, value...) straight into
    /// the pong instead of returning a map: the same data as a
    /// [`with_dynamic`](Self::with_dynamic) provider returning those entries in that
    /// order, without building a map per ping. The merge order and the pong's bytes are
    /// the same.
    ///
    /// ```
    /// use peng3dnet_proto::pong::PingResponder;
    ///
    /// let responder = PingResponder::new().with_dynamic_entries(|req, out| {
    ///     out.uint("client", req.client_id.0);
    ///     out.display("client_addr", req.peer_addr);
    /// });
    /// # let _ = responder;
    /// ```
    pub fn with_dynamic_entries(
        mut self,
        provider: impl Fn(&PingRequest<'_>, &mut MapWriter<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.dynamic = Some(Dynamic::Entries(Arc::new(provider)));
        self
    }

    /// Turns write-back (echoing the ping under `oldmsg`) on or off. On by default. The
    /// returned responder keeps the data and the dynamic provider.
    pub fn with_writeback(mut self, on: bool) -> Self {
        self.writeback = on;
        self
    }

    /// Replaces the static data; later pongs carry the new data, whichever clone of this
    /// responder the server holds.
    pub fn set_static_data(&self, data: Value) {
        self.static_data.store(Arc::new(StaticPart::new(data)));
    }

    /// Sets one key of the static data (adding it, or replacing its value in place), from
    /// any thread: what a game loop calls every tick to publish its player count, without
    /// resending the whole map. The ping path never waits for it.
    ///
    /// ```
    /// use peng3dnet_proto::pong::PingResponder;
    /// use peng3dnet_proto::value::{get, map};
    ///
    /// let responder = PingResponder::new().with_static_data(map([("name", "arena".into())]));
    /// let for_the_game_loop = responder.clone();
    /// for_the_game_loop.set("players", 3.into());
    /// assert_eq!(get(&responder.static_data(), "players").unwrap().as_u64(), Some(3));
    /// ```
    pub fn set(&self, key: &str, value: Value) {
        self.static_data.rcu(|current| {
            let mut data = current.value.clone();
            value::insert(&mut data, key, value.clone());
            StaticPart::new(data)
        });
    }

    /// Removes one key of the static data; returns whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        let mut removed = false;
        self.static_data.rcu(|current| {
            let mut data = current.value.clone();
            removed = false;
            if let Value::Map(entries) = &mut data {
                let before = entries.len();
                entries.retain(|(k, _)| k.as_str() != Some(key));
                removed = entries.len() != before;
            }
            StaticPart::new(data)
        });
        removed
    }

    /// A copy of the current static data.
    pub fn static_data(&self) -> Value {
        self.static_part().value.clone()
    }

    /// Whether write-back is on.
    pub fn writeback(&self) -> bool {
        self.writeback
    }

    fn static_part(&self) -> Arc<StaticPart> {
        self.static_data.load_full()
    }

    /// Builds the pong for one ping.
    ///
    /// A ping larger than `max_echo_bytes` (encoded) is echoed with its `time` key only,
    /// so clients can still time it but a client cannot make the server send back
    /// megabytes.
    pub fn respond(
        &self,
        request: &PingRequest<'_>,
        max_echo_bytes: usize,
        timing: ServerTiming,
    ) -> Value {
        let dynamic = self.dynamic.as_ref().map(|d| match d {
            Dynamic::Map(d) => d(request),
            Dynamic::Entries(d) => {
                let mut entries = Vec::new();
                let mut writer = MapWriter::new(&mut entries);
                d(request, &mut writer);
                writer.into_value()
            }
        });
        let static_part = self.static_part();
        self.merge(
            request,
            dynamic.as_ref(),
            &static_part.value,
            max_echo_bytes,
            timing,
        )
    }

    /// The pong for one ping, encoded: the same map as [`respond`](Self::respond), byte for
    /// byte what encoding it would give (but for the echo, which is the ping's own bytes).
    ///
    /// This is the server's path. When no key of the dynamic data collides with another
    /// source's (the usual case), it writes the map straight from the ping's bytes and the
    /// static data's encoding, made once when it is set, instead of building the map as a
    /// tree of values: the pong is most of a ping's cost on the server (BENCHMARKS.md).
    /// Otherwise it merges as [`respond`](Self::respond) does and encodes the result.
    pub fn encode_pong(
        &self,
        request: &PingRequest<'_>,
        max_echo_bytes: usize,
        timing: ServerTiming,
    ) -> Bytes {
        let mut pong = Vec::new();
        self.encode_pong_into(request, max_echo_bytes, timing, &mut pong);
        Bytes::from(pong)
    }

    /// [`encode_pong`](Self::encode_pong), appended to `out`: a server that keeps a buffer
    /// for its pongs answers a ping without allocating.
    ///
    /// ```
    /// use peng3dnet_proto::pong::{PingMessage, PingRequest, PingResponder, ServerTiming};
    /// use peng3dnet_proto::value::{self, map, Value};
    /// use peng3dnet_proto::{ClientId, Stats};
    ///
    /// let responder = PingResponder::new().with_static_data(map([("name", "arena".into())]));
    /// let ping = PingMessage::from_value(&map([("time", Value::F64(1.7e9))]));
    /// let stats = Stats::default();
    /// let request = PingRequest::new(&ping, ClientId(1), "192.0.2.1:4000".parse().unwrap(), &stats);
    /// let timing = ServerTiming::at(std::time::SystemTime::now());
    /// let mut buffer = Vec::new();
    /// responder.encode_pong_into(&request, 1000, timing, &mut buffer);
    /// assert_eq!(buffer, responder.encode_pong(&request, 1000, timing));
    /// ```
    pub fn encode_pong_into(
        &self,
        request: &PingRequest<'_>,
        max_echo_bytes: usize,
        timing: ServerTiming,
        out: &mut Vec<u8>,
    ) {
        thread_local! {
            /// Where the dynamic entries are written before the pong's size is known.
            static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                self.encode_pong_with(&mut scratch, request, max_echo_bytes, timing, out);
                if scratch.capacity() > SCRATCH_KEEP {
                    *scratch = Vec::new();
                }
            }
            // A provider that builds a pong itself.
            Err(_) => self.encode_pong_with(&mut Vec::new(), request, max_echo_bytes, timing, out),
        })
    }

    /// [`encode_pong`](Self::encode_pong) with `scratch` (empty) for the dynamic entries.
    fn encode_pong_with(
        &self,
        scratch: &mut Vec<u8>,
        request: &PingRequest<'_>,
        max_echo_bytes: usize,
        timing: ServerTiming,
        out: &mut Vec<u8>,
    ) {
        let ping_body = request.ping().bytes();
        let mut writer = MapWriter::new(scratch);
        let mut dynamic_value = None;
        match &self.dynamic {
            Some(Dynamic::Map(d)) => {
                let value = d(request);
                if let Value::Map(entries) = &value {
                    for (k, v) in entries {
                        writer.entry(k, v);
                    }
                }
                dynamic_value = Some(value);
            }
            Some(Dynamic::Entries(d)) => d(request, &mut writer),
            None => {}
        }
        let static_part = self.static_part();
        if !(static_part.distinct && writer.distinct_from(&static_part.keys)) {
            let dynamic = match dynamic_value {
                Some(value) => value,
                None => writer.into_value(),
            };
            let pong = self.merge(
                request,
                Some(&dynamic),
                &static_part.value,
                max_echo_bytes,
                timing,
            );
            value::encode_into(out, &pong);
            return;
        }
        let dynamic_count = writer.count;
        let writeback = self.writeback;
        let entries = u32::from(writeback) + dynamic_count + static_part.count + 2;
        let fits = ping_body.len() <= max_echo_bytes;
        let echo = match (writeback, fits) {
            (true, false) => Some(value::encode(&time_only(request.message()))),
            _ => None,
        };
        let echo_bytes: &[u8] = match (&echo, writeback) {
            (Some(echo), _) => echo,
            (None, true) => ping_body,
            (None, false) => &[],
        };
        let header = match entries {
            0..=15 => 1,
            16..=0xffff => 3,
            _ => 5,
        };
        let size = header
            + if writeback { OLDMSG_KEY.len() } else { 0 }
            + echo_bytes.len()
            + scratch.len()
            + static_part.entries.len()
            + VERSION_ENTRY.len()
            + SERVER_TIMING_LEN;
        out.reserve(size);
        let start = out.len();
        write_map_len(out, entries);
        if writeback {
            out.extend_from_slice(OLDMSG_KEY);
            out.extend_from_slice(echo_bytes);
        }
        out.extend_from_slice(scratch);
        out.extend_from_slice(&static_part.entries);
        out.extend_from_slice(&VERSION_ENTRY);
        timing.write_entry(out);
        debug_assert_eq!(out.len() - start, size);
    }

    /// Merges the pong's sources in the protocol's order.
    fn merge(
        &self,
        request: &PingRequest<'_>,
        dynamic: Option<&Value>,
        static_data: &Value,
        max_echo_bytes: usize,
        timing: ServerTiming,
    ) -> Value {
        let mut pong = map([]);
        if self.writeback {
            let echo = if request.ping().bytes().len() <= max_echo_bytes {
                request.message().clone()
            } else {
                time_only(request.message())
            };
            insert(&mut pong, "oldmsg", echo);
        }
        if let Some(dynamic) = dynamic {
            update(&mut pong, dynamic);
        }
        update(&mut pong, static_data);
        insert(&mut pong, "peng3dnet", version_block());
        insert(&mut pong, SERVER_TIMING_KEY, timing.to_value());
        pong
    }
}

/// Largest scratch buffer a thread keeps between two pongs.
pub(super) const SCRATCH_KEEP: usize = 64 * 1024;

/// The `oldmsg` key, encoded.
pub(super) const OLDMSG_KEY: &[u8] = b"\xa6oldmsg";
/// The `servertiming` key and the header of its map, encoded.
pub(super) const SERVER_TIMING_HEAD: &[u8] = b"\xacservertiming\x82";
/// The `recvtime` key, encoded.
pub(super) const RECVTIME_KEY: &[u8] = b"\xa8recvtime";
/// The `sendtime` key, encoded.
pub(super) const SENDTIME_KEY: &[u8] = b"\xa8sendtime";
/// Size of the encoded `servertiming` entry (two float64s).
pub(super) const SERVER_TIMING_LEN: usize =
    SERVER_TIMING_HEAD.len() + RECVTIME_KEY.len() + SENDTIME_KEY.len() + 2 * 9;

/// Keys of the pong that come from the extension itself.
pub(super) const RESERVED_KEYS: [&str; 3] = ["oldmsg", "peng3dnet", SERVER_TIMING_KEY];

/// The `"peng3dnet": {...}` entry of every pong, encoded once.
pub(super) static VERSION_ENTRY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut out = Vec::new();
    value::encode_into(&mut out, &Value::from("peng3dnet"));
    value::encode_into(&mut out, &version_block());
    out
});

/// Static data with its encoding, made once per [`PingResponder::set_static_data`].
pub(super) struct StaticPart {
    /// The data as given.
    value: Value,
    /// Its entries, encoded back to back (key, value, key, value...).
    entries: Vec<u8>,
    /// Number of entries.
    count: u32,
    /// Its string keys.
    keys: KeySet,
    /// Every key is a string, none repeats and none is one of [`RESERVED_KEYS`]: the
    /// encoded entries can be spliced into a pong as they are.
    distinct: bool,
}

impl StaticPart {
    pub(super) fn new(value: Value) -> StaticPart {
        let pairs: &[(Value, Value)] = value.as_map().map_or(&[], Vec::as_slice);
        let mut entries = Vec::new();
        let mut keys = KeySet::default();
        let mut distinct = true;
        for (k, v) in pairs {
            value::encode_into(&mut entries, k);
            value::encode_into(&mut entries, v);
            match k.as_str() {
                Some(key) if !RESERVED_KEYS.contains(&key) => {
                    distinct &= keys.insert(key.as_bytes());
                }
                _ => distinct = false,
            }
        }
        StaticPart {
            count: pairs.len() as u32,
            value,
            entries,
            keys,
            distinct,
        }
    }
}

/// The string keys of the static data, looked up once per ping for every dynamic key: a
/// list compared byte for byte while it is short (the usual few keys: no hashing), a hash
/// set beyond that.
#[derive(Default)]
pub(super) struct KeySet {
    list: Vec<Box<[u8]>>,
    set: HashSet<Box<[u8]>>,
}

/// Keys a [`KeySet`] keeps in its list; more go to its hash set.
pub(super) const KEYS_LISTED: usize = 16;

impl KeySet {
    /// Adds `key`; false if it was there already.
    fn insert(&mut self, key: &[u8]) -> bool {
        if self.contains(key) {
            return false;
        }
        if self.list.len() < KEYS_LISTED {
            self.list.push(key.into());
        } else {
            self.set.insert(key.into());
        }
        true
    }

    pub(super) fn contains(&self, key: &[u8]) -> bool {
        self.list.iter().any(|k| **k == *key) || (!self.set.is_empty() && self.set.contains(key))
    }
}

/// A msgpack map header for `len` entries.
pub(super) fn write_map_len(out: &mut Vec<u8>, len: u32) {
    match len {
        0..=15 => out.push(0x80 | len as u8),
        16..=0xffff => {
            out.push(0xde);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdf);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// The echo of a ping too large to echo whole: its `time` only.
pub(super) fn time_only(message: &Value) -> Value {
    map(get(message, "time").map(|t| ("time", t.clone())))
}
