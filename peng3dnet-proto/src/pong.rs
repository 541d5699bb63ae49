//! The ping connection type, server side: building the pong.
//!
//! The pong is a map merged from these sources, each later one overwriting the keys of the
//! earlier ones (docs/PROTOCOL.md, "The pong (id 65)"):
//! 1. `{"oldmsg": <the ping as received>}` when write-back is on;
//! 2. the dynamic data ([`PingResponder::with_dynamic`]);
//! 3. the static data ([`PingResponder::with_static_data`]);
//! 4. `{"peng3dnet": {"version", "release", "protoversion"}}`;
//! 5. ours: `{"servertiming": {"recvtime", "sendtime"}}`, the server's clock when the ping
//!    arrived and when the pong left, so a client can subtract the server's processing
//!    time. Python clients ignore keys they do not know.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use bytes::Bytes;
use std::time::SystemTime;

use crate::error::ValueError;
use crate::stats::{ClientId, Stats};
use crate::value::{self, get, insert, map, update, Value, MAX_DEPTH_CLAMP};
use crate::wire::{PROTOVERSION, RELEASE, VERSION};

/// Key of the server's timestamps in a pong.
pub const SERVER_TIMING_KEY: &str = "servertiming";

/// A ping as the server received it: its bytes, checked to be one msgpack document the
/// decoder accepts, and decoded only when something asks for the value.
///
/// The pong echoes the ping's own bytes under `oldmsg`, and most ping data providers never
/// look at the ping, so a server answers most pings without building the ping as a
/// [`Value`] at all (a tenth of a ping's cost on the server, BENCHMARKS.md).
///
/// ```
/// use peng3dnet_proto::pong::PingMessage;
/// use peng3dnet_proto::value::{self, get, map, Value};
///
/// let sent = map([("time", Value::F64(1.7e9))]);
/// let message = PingMessage::decode(value::encode(&sent), 64, 1000).unwrap();
/// assert_eq!(message.bytes(), &value::encode(&sent)[..]);
/// assert_eq!(get(message.value(), "time"), Some(&Value::F64(1.7e9)));
/// assert!(PingMessage::decode(&b"\x81"[..], 64, 1000).is_err(), "a map missing its entry");
/// ```
#[derive(Clone)]
pub struct PingMessage {
    /// One complete msgpack document, accepted by [`value::validate`].
    bytes: Bytes,
    /// The depth limit it was checked with (the decode uses the same).
    max_depth: usize,
    /// The decoded value, once asked for.
    value: OnceLock<Value>,
}

impl PingMessage {
    /// Checks `bytes` as the server checks every received body (nesting, item count,
    /// trailing bytes: [`value::validate`]) and keeps them; the value is decoded when
    /// first asked for.
    pub fn decode(
        bytes: impl Into<Bytes>,
        max_depth: usize,
        max_items: usize,
    ) -> Result<Self, ValueError> {
        let bytes = validated(bytes.into(), max_depth, max_items)?;
        Ok(PingMessage::checked(bytes, max_depth))
    }

    /// A ping from a value (encoded here): for tests and for servers that build pings.
    pub fn from_value(message: &Value) -> Self {
        PingMessage::checked(value::encode(message), MAX_DEPTH_CLAMP)
    }

    /// `bytes` already passed [`value::validate`] with `max_depth`.
    pub(crate) fn checked(bytes: Bytes, max_depth: usize) -> Self {
        PingMessage {
            bytes,
            max_depth,
            value: OnceLock::new(),
        }
    }

    /// The ping's bytes, exactly as received (what write-back echoes).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The ping, decoded on first use.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            // Cannot fail: the bytes passed `validate`, which refuses exactly what the
            // decoder refuses (property-tested). Nil rather than a panic if it ever did.
            value::decode(&self.bytes, self.max_depth).unwrap_or(Value::Nil)
        })
    }
}

impl PartialEq for PingMessage {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl std::fmt::Debug for PingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PingMessage").field(self.value()).finish()
    }
}

/// A pong as the client received it: its bytes, checked as every received body is
/// ([`value::validate`]), and built into a [`Value`] only when asked for.
///
/// A client that measures the round trip (`peng3dnet ping`) never looks at the server's
/// map, and building it, a string allocated per key and value, then dropping it, was a
/// third of the client's own work per ping (BENCHMARKS.md). What every client needs, the
/// sequence number the server echoed and the server's timing, is read from the bytes.
///
/// ```
/// use std::time::Duration;
/// use peng3dnet_proto::pong::{PongMessage, SERVER_TIMING_KEY};
/// use peng3dnet_proto::value::{self, get, map, Value};
///
/// let sent = map([
///     ("name", "lobby".into()),
///     ("oldmsg", map([("seq", Value::from(7))])),
///     (SERVER_TIMING_KEY, map([("recvtime", Value::F64(10.0)), ("sendtime", Value::F64(10.5))])),
/// ]);
/// let pong = PongMessage::decode(value::encode(&sent), 64, 1000).unwrap();
/// assert_eq!(pong.echoed_seq(), Some(7));
/// assert_eq!(pong.server_time(), Some(Duration::from_millis(500)));
/// assert_eq!(get(&pong.to_map(0), "name"), Some(&Value::from("lobby")));
/// assert!(PongMessage::decode(&b"\x81"[..], 64, 1000).is_err(), "a map missing its entry");
/// ```
#[derive(Clone, PartialEq)]
pub struct PongMessage {
    /// One complete msgpack document, accepted by [`value::validate`].
    bytes: Bytes,
    /// The depth limit it was checked with (the decode uses the same).
    max_depth: usize,
}

impl PongMessage {
    /// Checks `bytes` as the client checks every received body ([`value::validate`]) and
    /// keeps them.
    pub fn decode(
        bytes: impl Into<Bytes>,
        max_depth: usize,
        max_items: usize,
    ) -> Result<Self, ValueError> {
        let bytes = validated(bytes.into(), max_depth, max_items)?;
        Ok(PongMessage::checked(bytes, max_depth))
    }

    /// `bytes` already passed [`value::validate`] with `max_depth`.
    pub(crate) fn checked(bytes: Bytes, max_depth: usize) -> Self {
        PongMessage { bytes, max_depth }
    }

    /// The pong's bytes, exactly as received.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The server's map, built now (each call builds it anew), with room for `room` more
    /// entries; an empty map when the pong is not a map (the reference's client expects a
    /// dict).
    pub fn to_map(&self, room: usize) -> Value {
        // Cannot fail: the bytes passed `validate`, which refuses exactly what the decoder
        // refuses (property-tested). An empty map rather than a panic if it ever did.
        match value::decode_with_room(&self.bytes, self.max_depth, room) {
            Ok(data @ Value::Map(_)) => data,
            _ => map([]),
        }
    }

    /// The sequence number of the ping this pong answers, from the echo of the ping
    /// (`oldmsg.seq`) that a server with write-back on sends.
    pub fn echoed_seq(&self) -> Option<u64> {
        let oldmsg = value::lookup(&self.bytes, "oldmsg")?;
        scalar(value::lookup(oldmsg, "seq")?)?.as_u64()
    }

    /// The time the server took between the ping's arrival and the pong's departure, by
    /// its own clock ([`SERVER_TIMING_KEY`]), when it reports it.
    pub fn server_time(&self) -> Option<std::time::Duration> {
        let timing = value::lookup(&self.bytes, SERVER_TIMING_KEY)?;
        let at = |key| scalar(value::lookup(timing, key)?)?.as_f64();
        std::time::Duration::try_from_secs_f64(at("sendtime")? - at("recvtime")?).ok()
    }
}

/// `bytes`, once [`value::validate`] accepts them: what a received message keeps.
fn validated(bytes: Bytes, max_depth: usize, max_items: usize) -> Result<Bytes, ValueError> {
    value::validate(&bytes, max_depth, max_items)?;
    Ok(bytes)
}

/// A number (or other value without contents) read from its encoding: decoding it
/// allocates nothing.
fn scalar(encoded: &[u8]) -> Option<Value> {
    value::decode(encoded, 2).ok()
}

impl std::fmt::Debug for PongMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PongMessage").field(&self.to_map(0)).finish()
    }
}

/// One ping as the server sees it, given to the dynamic data provider.
#[derive(Debug, Clone, Copy)]
pub struct PingRequest<'a> {
    /// The ping.
    message: &'a PingMessage,
    /// The id the server gave this connection.
    pub client_id: ClientId,
    /// The client's address.
    pub peer_addr: SocketAddr,
    /// The server's counters (connections open, pings answered, this one included): what
    /// a status page's dynamic data usually reports.
    pub stats: &'a Stats,
}

impl<'a> PingRequest<'a> {
    /// The request for `message` from client `client_id` at `peer_addr`.
    pub fn new(
        message: &'a PingMessage,
        client_id: ClientId,
        peer_addr: SocketAddr,
        stats: &'a Stats,
    ) -> Self {
        PingRequest {
            message,
            client_id,
            peer_addr,
            stats,
        }
    }

    /// The ping map exactly as the client sent it (decoded when first asked for: a
    /// provider that does not look at it costs no decode).
    pub fn message(&self) -> &'a Value {
        self.message.value()
    }

    /// The ping as received, bytes and value.
    pub fn ping(&self) -> &'a PingMessage {
        self.message
    }
}

type DynamicData = dyn Fn(&PingRequest<'_>) -> Value + Send + Sync;
type DynamicEntries = dyn Fn(&PingRequest<'_>, &mut MapWriter<'_>) + Send + Sync;

/// A dynamic data provider: one returning a map, or one writing its entries.
#[derive(Clone)]
enum Dynamic {
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
const SCRATCH_KEEP: usize = 64 * 1024;

/// The `oldmsg` key, encoded.
const OLDMSG_KEY: &[u8] = b"\xa6oldmsg";
/// The `servertiming` key and the header of its map, encoded.
const SERVER_TIMING_HEAD: &[u8] = b"\xacservertiming\x82";
/// The `recvtime` key, encoded.
const RECVTIME_KEY: &[u8] = b"\xa8recvtime";
/// The `sendtime` key, encoded.
const SENDTIME_KEY: &[u8] = b"\xa8sendtime";
/// Size of the encoded `servertiming` entry (two float64s).
const SERVER_TIMING_LEN: usize =
    SERVER_TIMING_HEAD.len() + RECVTIME_KEY.len() + SENDTIME_KEY.len() + 2 * 9;

/// Keys of the pong that come from the extension itself.
const RESERVED_KEYS: [&str; 3] = ["oldmsg", "peng3dnet", SERVER_TIMING_KEY];

/// The `"peng3dnet": {...}` entry of every pong, encoded once.
static VERSION_ENTRY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut out = Vec::new();
    value::encode_into(&mut out, &Value::from("peng3dnet"));
    value::encode_into(&mut out, &version_block());
    out
});

/// Static data with its encoding, made once per [`PingResponder::set_static_data`].
struct StaticPart {
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
    fn new(value: Value) -> StaticPart {
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
struct KeySet {
    list: Vec<Box<[u8]>>,
    set: HashSet<Box<[u8]>>,
}

/// Keys a [`KeySet`] keeps in its list; more go to its hash set.
const KEYS_LISTED: usize = 16;

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

    fn contains(&self, key: &[u8]) -> bool {
        self.list.iter().any(|k| **k == *key) || (!self.set.is_empty() && self.set.contains(key))
    }
}

/// A msgpack map header for `len` entries.
fn write_map_len(out: &mut Vec<u8>, len: u32) {
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
fn time_only(message: &Value) -> Value {
    map(get(message, "time").map(|t| ("time", t.clone())))
}

/// The server's clock when a ping arrived and when its pong left: the pong's
/// `servertiming` entry. The caller reads the clock (this crate never does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTiming {
    /// When the ping was read.
    pub received: SystemTime,
    /// When the pong is sent.
    pub sent: SystemTime,
}

impl ServerTiming {
    /// Both timestamps at one instant: for a server that reads its clock once per ping.
    pub fn at(now: SystemTime) -> Self {
        ServerTiming {
            received: now,
            sent: now,
        }
    }

    /// Writes the `servertiming` entry (key and map), byte for byte the encoding of
    /// [`to_value`](Self::to_value) under its key.
    fn write_entry(self, out: &mut Vec<u8>) {
        out.extend_from_slice(SERVER_TIMING_HEAD);
        out.extend_from_slice(RECVTIME_KEY);
        out.push(0xcb);
        out.extend_from_slice(&unix_seconds(self.received).to_be_bytes());
        out.extend_from_slice(SENDTIME_KEY);
        out.push(0xcb);
        out.extend_from_slice(&unix_seconds(self.sent).to_be_bytes());
    }

    fn to_value(self) -> Value {
        map([
            ("recvtime", unix_seconds(self.received).into()),
            ("sendtime", unix_seconds(self.sent).into()),
        ])
    }
}

/// Writes the entries of a map (the dynamic data of a pong) straight as msgpack: what a
/// provider given to [`PingResponder::with_dynamic_entries`] writes into. Each method
/// appends one entry, encoded as the same key and value in a [`Value`] map would be.
pub struct MapWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Entries written.
    count: u32,
    /// Where the first [`KEYS_TRACKED`] keys' bytes are in `out` (start, end).
    keys: [(u32, u32); KEYS_TRACKED],
    /// Every key is a string and at most [`KEYS_TRACKED`] were written: the keys can be
    /// checked for collisions without decoding.
    plain: bool,
}

/// Writes `n` in decimal at the start of `out`; returns the length.
fn write_decimal(out: &mut [u8], n: u16) -> usize {
    let len = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    let mut n = n;
    for digit in out[..len].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    len
}

/// Keys a [`MapWriter`] remembers; more send the pong down the general merge.
const KEYS_TRACKED: usize = 32;

impl<'a> MapWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        MapWriter {
            out,
            count: 0,
            keys: [(0, 0); KEYS_TRACKED],
            plain: true,
        }
    }

    fn key(&mut self, key: &str) {
        value::write_str_header(self.out, key.len());
        let start = self.out.len();
        self.out.extend_from_slice(key.as_bytes());
        match self.keys.get_mut(self.count as usize) {
            Some(slot) => *slot = (start as u32, self.out.len() as u32),
            None => self.plain = false,
        }
        self.count += 1;
    }

    /// An entry with a string value.
    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        value::write_str(self.out, value);
    }

    /// An entry with an unsigned integer value.
    pub fn uint(&mut self, key: &str, value: u64) {
        self.key(key);
        value::write_uint(self.out, value);
    }

    /// An entry with a signed integer value.
    pub fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        match u64::try_from(value) {
            Ok(u) => value::write_uint(self.out, u),
            Err(_) => value::write_nint(self.out, value),
        }
    }

    /// An entry with a float64 value.
    pub fn f64(&mut self, key: &str, value: f64) {
        self.key(key);
        self.out.push(0xcb);
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    /// An entry with a boolean value.
    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push(if value { 0xc3 } else { 0xc2 });
    }

    /// An entry whose value is the string `value` formats to (an address, say), written
    /// without an intermediate `String`.
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) {
        use std::io::Write;
        self.key(key);
        let at = self.out.len();
        self.out.push(0xa0);
        let _ = write!(self.out, "{value}");
        let len = self.out.len() - at - 1;
        if len <= 31 {
            self.out[at] = 0xa0 | len as u8;
        } else {
            let mut header = Vec::with_capacity(5);
            value::write_str_header(&mut header, len);
            self.out.splice(at..at + 1, header);
        }
    }

    /// An entry whose value is a socket address as a string (`ip:port`, as its
    /// `Display` writes it), an IPv4 one formatted without the formatting machinery (most
    /// of the cost of the CLI's dynamic data, BENCHMARKS.md).
    pub fn socket_addr(&mut self, key: &str, addr: std::net::SocketAddr) {
        let std::net::SocketAddr::V4(v4) = addr else {
            return self.display(key, addr);
        };
        self.key(key);
        // At most "255.255.255.255:65535": 21 bytes, a fixstr, written on the stack first
        // (one copy into the pong instead of a capacity check per character).
        let mut text = [0u8; 21];
        let mut len = 0;
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                text[len] = b'.';
                len += 1;
            }
            len += write_decimal(&mut text[len..], u16::from(octet));
        }
        text[len] = b':';
        len += 1;
        len += write_decimal(&mut text[len..], v4.port());
        self.out.push(0xa0 | len as u8);
        self.out.extend_from_slice(&text[..len]);
    }

    /// An entry with any value.
    pub fn value(&mut self, key: &str, value: &Value) {
        self.key(key);
        value::encode_into(self.out, value);
    }

    /// An entry with any key and value (a key that is not a string is allowed, as in a
    /// [`Value`] map).
    pub fn entry(&mut self, key: &Value, value: &Value) {
        match key {
            Value::String(k) if k.as_str().is_some() => self.key(k.as_str().unwrap_or("")),
            _ => {
                value::encode_into(self.out, key);
                self.plain = false;
                self.count += 1;
            }
        }
        value::encode_into(self.out, value);
    }

    /// Whether no key repeats, none is one of [`RESERVED_KEYS`] and none is in `taken`:
    /// the entries can be spliced into a pong as they are.
    fn distinct_from(&self, taken: &KeySet) -> bool {
        if !self.plain {
            return false;
        }
        let keys = &self.keys[..self.count as usize];
        keys.iter().enumerate().all(|(i, &(start, end))| {
            let key = &self.out[start as usize..end as usize];
            !RESERVED_KEYS.iter().any(|r| r.as_bytes() == key)
                && !taken.contains(key)
                && !keys[..i]
                    .iter()
                    .any(|&(s, e)| &self.out[s as usize..e as usize] == key)
        })
    }

    /// The entries written, as a map.
    fn into_value(self) -> Value {
        let mut bytes = Vec::with_capacity(self.out.len() + 5);
        write_map_len(&mut bytes, self.count);
        bytes.extend_from_slice(self.out);
        value::decode(&bytes, MAX_DEPTH_CLAMP).unwrap_or_else(|_| map([]))
    }
}

/// The `peng3dnet` block every pong carries.
pub fn version_block() -> Value {
    map([
        ("version", VERSION.into()),
        ("release", RELEASE.into()),
        ("protoversion", PROTOVERSION.into()),
    ])
}

/// A wall-clock time as Unix seconds, as the protocol's `time` keys carry it.
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Encoded size of a value (used for the echo cap when the size is not known already).
pub fn encoded_len(v: &Value) -> usize {
    value::encode(v).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    static STATS: std::sync::LazyLock<Stats> = std::sync::LazyLock::new(Stats::default);

    fn request(msg: &PingMessage) -> PingRequest<'_> {
        PingRequest::new(msg, ClientId(7), "127.0.0.1:1".parse().unwrap(), &STATS)
    }

    fn message_of(msg: &Value) -> PingMessage {
        PingMessage::from_value(msg)
    }

    /// Regression: a clone turned into a responder without write-back lost the dynamic
    /// provider, and static data set on it no longer reached the original.
    #[test]
    fn derived_responders_keep_the_provider_and_share_the_data() {
        let original = PingResponder::new()
            .with_static_data(map([("name", "n".into())]))
            .with_dynamic(|_| map([("dyn", 1.into())]));
        let derived = original.clone().with_writeback(false);
        let ping = map([("time", 1.5.into())]);
        let now = ServerTiming::at(SystemTime::now());
        let pong = derived.respond(&request(&message_of(&ping)), 1000, now);
        assert_eq!(keys(&pong), ["dyn", "name", "peng3dnet", "servertiming"]);
        assert!(original.writeback(), "the original keeps its own setting");
        derived.set_static_data(map([("name", "renamed".into())]));
        assert_eq!(
            get(&original.static_data(), "name").and_then(Value::as_str),
            Some("renamed")
        );
        derived.set("players", 3.into());
        let pong = original.respond(&request(&message_of(&ping)), 1000, now);
        assert_eq!(get(&pong, "players").and_then(Value::as_u64), Some(3));
        assert!(original.remove("players"));
        assert!(!original.remove("players"));
        assert_eq!(get(&derived.static_data(), "players"), None);
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap())
            .collect()
    }

    #[test]
    fn merge_order_is_oldmsg_dynamic_static_version() {
        let r = PingResponder::new()
            .with_dynamic(|req| {
                map([
                    ("oldmsg", "dyn".into()),
                    ("clients", req.client_id.0.into()),
                    ("name", "dyn".into()),
                ])
            })
            .with_static_data(map([
                ("name", "static".into()),
                ("peng3dnet", "static".into()),
            ]));
        let ping = map([("time", Value::F64(1.5)), ("x", 1.into())]);
        let pong = r.respond(
            &request(&message_of(&ping)),
            1000,
            ServerTiming::at(SystemTime::now()),
        );
        assert_eq!(
            keys(&pong),
            ["oldmsg", "clients", "name", "peng3dnet", "servertiming"]
        );
        assert_eq!(
            get(&pong, "oldmsg"),
            Some(&Value::from("dyn")),
            "dynamic overwrites oldmsg"
        );
        assert_eq!(get(&pong, "clients"), Some(&Value::from(7)));
        assert_eq!(
            get(&pong, "name"),
            Some(&Value::from("static")),
            "static overwrites dynamic"
        );
        assert_eq!(
            get(&pong, "peng3dnet"),
            Some(&version_block()),
            "version block overwrites static"
        );
        let timing = get(&pong, SERVER_TIMING_KEY).unwrap();
        let recv = get(timing, "recvtime").unwrap().as_f64().unwrap();
        let send = get(timing, "sendtime").unwrap().as_f64().unwrap();
        assert!(send >= recv && recv > 1.7e9);
    }

    #[test]
    fn writeback_echoes_the_ping_and_can_be_turned_off() {
        let ping = map([("time", Value::F64(1.5)), ("x", 1.into())]);
        let on = PingResponder::new().respond(
            &request(&message_of(&ping)),
            1000,
            ServerTiming::at(SystemTime::now()),
        );
        assert_eq!(get(&on, "oldmsg"), Some(&ping));
        let off = PingResponder::new().with_writeback(false).respond(
            &request(&message_of(&ping)),
            1000,
            ServerTiming::at(SystemTime::now()),
        );
        assert_eq!(get(&off, "oldmsg"), None);
    }

    #[test]
    fn echo_over_the_cap_keeps_only_the_time() {
        let ping = map([
            ("time", Value::F64(1.5)),
            ("big", Value::Binary(vec![0; 5000])),
        ]);
        let pong = PingResponder::new().respond(
            &request(&message_of(&ping)),
            1000,
            ServerTiming::at(SystemTime::now()),
        );
        assert_eq!(
            get(&pong, "oldmsg"),
            Some(&map([("time", Value::F64(1.5))]))
        );
    }

    #[test]
    fn static_data_can_be_replaced_while_shared() {
        let r = PingResponder::new().with_static_data(map([("name", "a".into())]));
        let clone = r.clone();
        clone.set_static_data(map([("name", "b".into())]));
        let pong = r.respond(
            &request(&message_of(&map([]))),
            1000,
            ServerTiming::at(SystemTime::now()),
        );
        assert_eq!(get(&pong, "name"), Some(&Value::from("b")));
    }

    /// The map without the server's timestamps (which differ between two calls).
    fn untimed(mut pong: Value) -> Value {
        insert(&mut pong, SERVER_TIMING_KEY, Value::Nil);
        pong
    }

    #[test]
    fn encoded_pongs_equal_the_merged_map_in_every_case() {
        let ping = map([
            ("time", Value::F64(1.5)),
            ("x", 1.into()),
            ("seq", 3.into()),
        ]);
        let body = value::encode(&ping);
        let big = map([
            ("time", Value::F64(2.5)),
            ("blob", Value::Binary(vec![7; 3000])),
        ]);
        let big_body = value::encode(&big);
        let statics = [
            map([]),
            map([("name", "n".into()), ("motd", "m".into())]),
            map([("name", "n".into()), ("oldmsg", "static wins".into())]),
            map([("peng3dnet", "overwritten".into()), ("name", "n".into())]),
            Value::Map(vec![(Value::from(1), "int key".into())]),
        ];
        type Provider = fn(&PingRequest<'_>) -> Value;
        let dynamics: [Option<Provider>; 5] = [
            None,
            Some(|r| map([("clients", r.client_id.0.into())])),
            Some(|_| map([("name", "dynamic".into())])),
            Some(|_| map([("oldmsg", "dynamic".into()), ("a", 1.into())])),
            Some(|_| Value::from("not a map")),
        ];
        for writeback in [true, false] {
            for data in &statics {
                for dynamic in &dynamics {
                    let mut r = PingResponder::new()
                        .with_writeback(writeback)
                        .with_static_data(data.clone());
                    if let Some(d) = dynamic {
                        r = r.with_dynamic(*d);
                    }
                    for (message, bytes) in [(&ping, &body), (&big, &big_body)] {
                        assert_eq!(&value::encode(message), bytes);
                        let message = message_of(message);
                        let req = request(&message);
                        let now = ServerTiming::at(SystemTime::now());
                        let merged = r.respond(&req, 1000, now);
                        let encoded = r.encode_pong(&req, 1000, now);
                        let decoded = value::decode(&encoded, 64).unwrap();
                        assert_eq!(
                            untimed(decoded.clone()),
                            untimed(merged),
                            "writeback {writeback}, static {data}, message {}",
                            message.value()
                        );
                        let timing = get(&decoded, SERVER_TIMING_KEY).unwrap();
                        assert!(get(timing, "sendtime").unwrap().as_f64().unwrap() > 1.7e9);
                    }
                }
            }
        }
    }

    /// Providers that write their entries give the pong, byte for byte, that providers
    /// returning the same entries as a map give: in the fast path and in the merge (keys
    /// colliding with the static data, with the extension's keys, with each other, more
    /// keys than the writer tracks), with strings of every header size.
    #[test]
    fn entry_providers_write_the_pongs_of_map_providers() {
        type MapProvider = fn(&PingRequest<'_>) -> Value;
        type EntriesProvider = fn(&PingRequest<'_>, &mut MapWriter<'_>);
        let pairs: [(MapProvider, EntriesProvider); 6] = [
            (
                |r| {
                    map([
                        ("clients", r.client_id.0.into()),
                        ("uptime", Value::F64(1.25)),
                        ("neg", Value::from(-40)),
                        ("ok", true.into()),
                        ("client_addr", r.peer_addr.to_string().into()),
                    ])
                },
                |r, out| {
                    out.uint("clients", r.client_id.0);
                    out.f64("uptime", 1.25);
                    out.int("neg", -40);
                    out.bool("ok", true);
                    out.socket_addr("client_addr", r.peer_addr);
                },
            ),
            (
                |_| map([("name", "dynamic".into()), ("s", "x".repeat(40).into())]),
                |_, out| {
                    out.str("name", "dynamic");
                    out.display("s", "x".repeat(40));
                },
            ),
            (
                |_| map([("oldmsg", "dynamic".into()), ("a", map([("b", 1.into())]))]),
                |_, out| {
                    out.str("oldmsg", "dynamic");
                    out.value("a", &map([("b", 1.into())]));
                },
            ),
            (
                |_| {
                    map([
                        ("a", 1.into()),
                        ("a", 2.into()),
                        ("l", "y".repeat(300).into()),
                    ])
                },
                |_, out| {
                    out.uint("a", 1);
                    out.uint("a", 2);
                    out.display("l", "y".repeat(300));
                },
            ),
            (
                |_| {
                    Value::Map(
                        (0..40)
                            .map(|i| (Value::from(format!("k{i}")), Value::from(i)))
                            .collect(),
                    )
                },
                |_, out| {
                    for i in 0..40u64 {
                        out.uint(&format!("k{i}"), i);
                    }
                },
            ),
            (
                |_| {
                    Value::Map(vec![
                        (Value::from(1), "int key".into()),
                        ("b".into(), 2.into()),
                    ])
                },
                |_, out| {
                    out.entry(&Value::from(1), &"int key".into());
                    out.entry(&"b".into(), &2.into());
                },
            ),
        ];
        let statics = [
            map([]),
            map([("name", "n".into()), ("motd", "m".into())]),
            map([("peng3dnet", "overwritten".into())]),
        ];
        let ping = map([("time", Value::F64(1.5)), ("x", 1.into())]);
        let body = value::encode(&ping);
        let big = map([
            ("time", Value::F64(2.5)),
            ("blob", Value::Binary(vec![7; 3000])),
        ]);
        let big_body = value::encode(&big);
        let at = ServerTiming {
            received: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            sent: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_456),
        };
        for addr in [
            "127.0.0.1:1",
            "[2001:db8:1234:5678:9abc:def0:1234:5678]:65000",
        ] {
            for writeback in [true, false] {
                for data in &statics {
                    for (as_map, as_entries) in pairs {
                        let by_map = PingResponder::new()
                            .with_writeback(writeback)
                            .with_static_data(data.clone())
                            .with_dynamic(as_map);
                        let by_entries = by_map.clone().with_dynamic_entries(as_entries);
                        for (message, bytes) in [(&ping, &body), (&big, &big_body)] {
                            assert_eq!(&value::encode(message), bytes);
                            let message = message_of(message);
                            let mut req = request(&message);
                            req.peer_addr = addr.parse().unwrap();
                            let expected = value::encode(&by_map.respond(&req, 1000, at));
                            assert_eq!(by_map.encode_pong(&req, 1000, at), expected);
                            assert_eq!(
                                by_entries.encode_pong(&req, 1000, at),
                                expected,
                                "writeback {writeback}, static {data}, {addr}"
                            );
                            assert_eq!(
                                value::encode(&by_entries.respond(&req, 1000, at)),
                                expected
                            );
                        }
                    }
                }
            }
        }
    }
}
