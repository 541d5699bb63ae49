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

//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the messages: [`PingMessage`], [`PongMessage`], [`PingRequest`] |
//! | `responder.rs` | [`PingResponder`]: the data sources and their merge, the pong's fast path |
//! | `map_writer.rs` | [`MapWriter`] (dynamic entries written straight as msgpack) and [`ServerTiming`] |

mod map_writer;
mod responder;

pub use map_writer::{MapWriter, ServerTiming};
pub use responder::PingResponder;

use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use std::time::SystemTime;

use crate::error::ValueError;
use crate::stats::{ClientId, Stats};
use crate::value::{self, map, Value, MAX_DEPTH_CLAMP};
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
    use crate::value::{get, insert};

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
