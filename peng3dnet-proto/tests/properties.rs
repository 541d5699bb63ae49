//! Property tests: encode/decode round trips for arbitrary msgpack values and frames, and
//! decoding of any byte stream, split anywhere, never panics (in the frame codec or in the
//! connection state machines).

use std::sync::Arc;

use bytes::BytesMut;
use peng3dnet_proto::config::{Compression, FrameLimits, RegistrySync};
use peng3dnet_proto::frame::{Frame, FrameCodec, FLAG_COMPRESSED, LENGTH_BYTES};
use peng3dnet_proto::protocol::{
    closeconn_frame, hello_frame, ids, settype_frame, ClientProtocol, ClientState, CloseReason,
    ConnType, Event, ServerProtocol, ServerSetup, ServerState, Step,
};
use peng3dnet_proto::value::{self, map, Value};
use peng3dnet_proto::{Registry, ValueError};
use proptest::prelude::*;

/// Nesting of generated values: well inside the default depth limit.
const MAX_NESTING: u32 = 4;
/// The default msgpack depth limit.
const DEPTH: usize = 64;

/// Leaves: every scalar msgpack type the protocol uses; floats are never NaN so that
/// equality is meaningful.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::F64),
        ".{0,40}".prop_map(Value::from),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Value::Binary),
    ]
}

/// Any value: leaves, arrays and string-keyed maps, nested at most `MAX_NESTING` deep.
fn arb_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(MAX_NESTING, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{0,10}", inner), 0..8).prop_map(|entries| {
                Value::Map(
                    entries
                        .into_iter()
                        .map(|(k, v)| (Value::from(k), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// Frame bodies: random bytes, or runs of one byte so that compression has work to do.
fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        (any::<u8>(), 0usize..3000).prop_map(|(b, n)| vec![b; n]),
        arb_value().prop_map(|v| value::encode(&v).to_vec()),
    ]
}

/// Message bodies: random bytes, valid documents, and valid documents with a byte
/// flipped, cut short or one byte too many (near misses).
fn arb_bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        arb_value().prop_map(|v| value::encode(&v).to_vec()),
        (arb_value(), any::<usize>(), any::<u8>()).prop_map(|(v, at, b)| {
            let mut bytes = value::encode(&v).to_vec();
            let at = at % bytes.len();
            match b % 3 {
                0 => bytes[at] = b,
                1 => bytes.truncate(at),
                _ => bytes.push(b),
            }
            bytes
        }),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (any::<u32>(), arb_body()).prop_map(|(id, body)| Frame::new(id, body))
}

fn arb_compression() -> impl Strategy<Value = Compression> {
    (any::<bool>(), 0usize..64, 0u32..=9).prop_map(|(enabled, threshold, level)| Compression {
        enabled,
        threshold,
        level,
    })
}

/// Cut points for splitting a stream into chunks (sorted, deduplicated, within `len`).
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.iter().map(|c| c % (len + 1)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Feeds `wire` to a codec in the chunks given by `cuts`, decoding after each one; returns
/// the frames decoded and the close reason of the error that stopped decoding, if any
/// (`"truncated"` for a stream that ends inside a frame).
fn decode_chunked(
    codec: &mut FrameCodec,
    wire: &[u8],
    cuts: &[usize],
) -> (Vec<Frame>, Option<String>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for pair in cuts.windows(2) {
        buf.extend_from_slice(&wire[pair[0]..pair[1]]);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(reason_or(&e, "other"))),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(frame)) => {
            frames.push(frame);
            (frames, None)
        }
        Ok(None) => (frames, None),
        Err(e) => (frames, Some(reason_or(&e, "truncated"))),
    }
}

fn small_limits() -> FrameLimits {
    FrameLimits {
        max_frame_length: 4096,
        max_inflated_size: 8192,
        ..FrameLimits::default()
    }
}

/// The close reason a framing error earns, or `otherwise` when it earns none.
fn reason_or(e: &peng3dnet_proto::FrameError, otherwise: &str) -> String {
    e.close_reason()
        .map_or_else(|| otherwise.to_owned(), |r| r.to_string())
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("prop:t.a").unwrap();
    r.register("prop:t.b").unwrap();
    r
}

fn server() -> ServerProtocol {
    ServerProtocol::new(Arc::new(ServerSetup::new(
        Arc::new(registry()),
        [ConnType::Ping, ConnType::Custom("custom".into())],
        DEPTH,
    )))
}

/// Checks the invariants every step of either machine must keep, given whether the
/// machine had already closed; returns whether it is closed now.
fn check_step(step: &Step, was_closed: bool, allowed_sends: &[u32]) -> bool {
    if was_closed {
        assert_eq!(step, &Step::default(), "a closed machine stays silent");
    }
    if let Some(frame) = &step.send {
        assert!(allowed_sends.contains(&frame.id), "sent id {}", frame.id);
    }
    was_closed || matches!(step.event, Some(Event::Close(_) | Event::PeerClosed(_)))
}

/// Runs frames through a server machine (optionally established first) and through client
/// machines of each type (optionally after a valid hello): nothing may panic, and a closed
/// machine must stay closed and silent.
fn drive_state_machines(frames: &[Frame], prelude: u8) {
    let mut s = server();
    let mut closed = false;
    let lead: Vec<Frame> = match prelude % 4 {
        1 => vec![settype_frame(&ConnType::Ping)],
        2 => vec![
            settype_frame(&ConnType::Classic),
            Frame::new(
                ids::HANDSHAKE_ACCEPT,
                value::encode(&map([("success", true.into())])),
            ),
        ],
        3 => vec![settype_frame(&ConnType::Custom("custom".into()))],
        _ => vec![],
    };
    for f in lead.into_iter().chain(frames.iter().cloned()) {
        closed = check_step(&s.handle(f), closed, &[ids::HANDSHAKE]);
        assert_eq!(closed, s.state() == &ServerState::Closed);
    }
    for conntype in [
        ConnType::Ping,
        ConnType::Classic,
        ConnType::Custom("custom".into()),
    ] {
        let mut c = ClientProtocol::new(conntype, registry(), RegistrySync::default(), DEPTH);
        let mut closed = false;
        let lead = (prelude & 4 != 0).then(hello_frame);
        for f in lead.into_iter().chain(frames.iter().cloned()) {
            closed = check_step(&c.handle(f), closed, &[ids::SETTYPE, ids::HANDSHAKE_ACCEPT]);
            assert_eq!(closed, c.state() == &ClientState::Closed);
        }
    }
}

/// A valid client stream (settype ping, ping, closeconn) to mutate.
fn valid_ping_stream() -> Vec<u8> {
    let codec = FrameCodec::default();
    let mut wire = BytesMut::new();
    for f in [
        settype_frame(&ConnType::Ping),
        Frame::new(
            ids::PING,
            value::encode(&map([("time", Value::F64(1.5)), ("x", 1.into())])),
        ),
        Frame::new(
            ids::PING,
            value::encode(&map([("pad", vec![0u8; 300].into())])),
        ),
        closeconn_frame(Some(&CloseReason::PingComplete)),
    ] {
        codec.encode(f, &mut wire).unwrap();
    }
    wire.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_value_round_trips_through_msgpack(v in arb_value()) {
        let bytes = value::encode(&v);
        let back = value::decode(&bytes, DEPTH).unwrap();
        prop_assert_eq!(&back, &v);
        // Byte for byte too: decoding and re-encoding changes nothing.
        prop_assert_eq!(value::encode(&back), bytes);
    }

    #[test]
    fn any_frames_round_trip_through_the_codec_split_anywhere(
        frames in prop::collection::vec(arb_frame(), 1..5),
        compression in arb_compression(),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut codec = FrameCodec::new(FrameLimits::default(), compression);
        let mut wire = BytesMut::new();
        let mut offset = 0;
        for f in &frames {
            codec.encode(f.clone(), &mut wire).unwrap();
            let flags = u16::from_be_bytes([wire[offset + 8], wire[offset + 9]]);
            let compressed = compression.enabled && f.body.len() > compression.threshold;
            prop_assert_eq!(flags & FLAG_COMPRESSED != 0, compressed);
            let length = u32::from_be_bytes([
                wire[offset], wire[offset + 1], wire[offset + 2], wire[offset + 3],
            ]) as usize;
            offset += LENGTH_BYTES + length;
            prop_assert_eq!(offset, wire.len());
        }
        let cuts = cuts(wire.len(), &raw_cuts);
        let (decoded, error) = decode_chunked(&mut codec, &wire, &cuts);
        prop_assert_eq!(error, None);
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn random_bytes_split_anywhere_never_panic_and_splitting_changes_nothing(
        wire in prop::collection::vec(any::<u8>(), 0..2048),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let whole = decode_chunked(&mut FrameCodec::new(small_limits(), Compression::default()),
            &wire, &[0, wire.len()]);
        let split = decode_chunked(&mut FrameCodec::new(small_limits(), Compression::default()),
            &wire, &cuts(wire.len(), &raw_cuts));
        prop_assert_eq!(&whole, &split);
        for f in &whole.0 {
            prop_assert!(f.body.len() <= small_limits().max_inflated_size);
        }
        drive_state_machines(&whole.0, wire.first().copied().unwrap_or(0));
    }

    #[test]
    fn mutated_valid_streams_never_panic(
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        truncate in any::<usize>(),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..16),
        prelude in any::<u8>(),
    ) {
        let mut wire = valid_ping_stream();
        for (at, byte) in flips {
            let at = at % wire.len();
            wire[at] = byte;
        }
        wire.truncate(truncate % (wire.len() + 1));
        let (frames, _) = decode_chunked(
            &mut FrameCodec::new(small_limits(), Compression::default()),
            &wire,
            &cuts(wire.len(), &raw_cuts),
        );
        drive_state_machines(&frames, prelude);
    }

    #[test]
    fn random_frames_never_panic_the_state_machines(
        frames in prop::collection::vec(
            (prop::sample::select(vec![0u32, 1, 2, 3, 4, 16, 63, 64, 65, 66, 1000, u32::MAX]),
             prop_oneof![
                 prop::collection::vec(any::<u8>(), 0..40),
                 arb_value().prop_map(|v| value::encode(&v).to_vec()),
             ]).prop_map(|(id, body)| Frame::new(id, body)),
            0..12),
        prelude in any::<u8>(),
    ) {
        drive_state_machines(&frames, prelude);
    }

    #[test]
    fn the_state_machines_accept_exactly_the_bodies_the_decoder_accepts(
        bytes in arb_bodies(),
    ) {
        // An established custom connection hands every body on unchanged, so whatever it
        // refuses was refused by the body checks alone (the item walk, then the decoder).
        let mut s = server();
        s.handle(settype_frame(&ConnType::Custom("custom".into())));
        let step = s.handle(Frame::new(200, bytes.clone()));
        match value::decode(&bytes, DEPTH) {
            Ok(v) => match step.event {
                // Compared as bytes: a decoded NaN is not equal to itself.
                Some(Event::Packet(p)) => prop_assert_eq!(value::encode(&p.body), value::encode(&v)),
                other => prop_assert!(false, "decodable body refused: {:?}", other),
            },
            Err(_) => prop_assert_eq!(
                step.event, Some(Event::Close(CloseReason::InvalidPacket))
            ),
        }
        // A ping is checked without being decoded: the same verdict.
        let mut s = server();
        s.handle(settype_frame(&ConnType::Ping));
        let step = s.handle(Frame::new(ids::PING, bytes.clone()));
        match value::decode(&bytes, DEPTH) {
            Ok(v) => match step.event {
                Some(Event::Ping(ping)) => {
                    prop_assert_eq!(ping.bytes(), &bytes[..]);
                    prop_assert_eq!(value::encode(ping.value()), value::encode(&v));
                }
                other => prop_assert!(false, "decodable ping refused: {:?}", other),
            },
            Err(_) => prop_assert_eq!(
                step.event, Some(Event::Close(CloseReason::InvalidPacket))
            ),
        }
    }

    #[test]
    fn validate_refuses_exactly_what_decode_bounded_refuses(
        bytes in prop_oneof![
            arb_bodies(),
            // A leaf of every kind at every nesting around the depth limits below.
            (0usize..45, prop::sample::select(vec![
                Value::Nil, Value::from(7), Value::from("s"), Value::Binary(vec![1]),
                Value::Ext(3, vec![1, 2]), Value::Array(vec![]), Value::Map(vec![]),
            ]), any::<bool>()).prop_map(|(k, leaf, maps)| {
                let mut v = leaf;
                for _ in 0..k {
                    v = if maps { value::map([("k", v)]) } else { Value::Array(vec![v]) };
                }
                value::encode(&v).to_vec()
            }),
        ],
        depth in 0usize..90,
        items in prop_oneof![Just(usize::MAX), 0usize..64],
    ) {
        let decoded = value::decode_bounded(&bytes, depth, items);
        let validated = value::validate(&bytes, depth, items);
        prop_assert_eq!(
            decoded.as_ref().err().map(ValueError::close_reason),
            validated.as_ref().err().map(ValueError::close_reason),
            "decode {:?}, validate {:?}", decoded, validated
        );
    }

    #[test]
    fn lookup_finds_what_get_finds_in_the_built_map(
        entries in prop::collection::vec(("[a-c]{1,2}", arb_value()), 0..10),
        // Keys long enough for str8 and str16 headers, too.
        long in prop_oneof![Just(None), (32usize..300).prop_map(|n| Some("k".repeat(n)))],
        key in "[a-c]{1,2}",
    ) {
        let mut entries: Vec<(Value, Value)> =
            entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect();
        if let Some(long) = &long {
            entries.push((Value::from(long.as_str()), Value::from(1)));
        }
        // A key that is no string is skipped, as `get` skips it.
        entries.insert(0, (Value::from(3), Value::from("not a string key")));
        let built = Value::Map(entries);
        let body = value::encode(&built);
        for key in [Some(key.as_str()), long.as_deref()].into_iter().flatten() {
            let found = value::lookup(&body, key).map(|b| value::decode(b, DEPTH).unwrap());
            prop_assert_eq!(found.as_ref(), value::get(&built, key));
        }
    }

    #[test]
    fn lookup_never_panics_and_agrees_with_get_on_what_validates(
        bytes in arb_bodies(),
        key in "[a-z_]{0,3}",
    ) {
        let found = value::lookup(&bytes, &key);
        if value::validate(&bytes, DEPTH, usize::MAX).is_ok() {
            let built = value::decode(&bytes, DEPTH).unwrap();
            let found = found.map(|b| value::decode(b, DEPTH).unwrap());
            prop_assert_eq!(found.as_ref(), value::get(&built, &key));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_value_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        depth in 0usize..80,
    ) {
        let _ = value::decode(&bytes, depth);
    }

    /// Whatever the limits (an unbounded inflate cap included), a compressed frame never
    /// panics the decoder and never inflates past `inflate_cap` of its compressed size.
    #[test]
    fn compressed_frames_respect_the_inflate_cap_whatever_the_limits(
        inflated in 0usize..300_000,
        fill in any::<u8>(),
        max_inflated in prop_oneof![Just(usize::MAX), 0usize..400_000],
        ratio in prop_oneof![Just(0usize), Just(usize::MAX), 1usize..200],
        allow in any::<bool>(),
    ) {
        let limits = FrameLimits {
            max_inflated_size: max_inflated,
            max_inflate_ratio: ratio,
            allow_compressed: allow,
            ..FrameLimits::default()
        };
        let compression = Compression { enabled: true, threshold: 0, level: 6 };
        let mut wire = BytesMut::new();
        FrameCodec::new(FrameLimits::default(), compression)
            .encode(Frame::new(64, vec![fill; inflated]), &mut wire)
            .unwrap();
        let compressed = wire.len() - LENGTH_BYTES - 6;
        match FrameCodec::new(limits, compression).decode(&mut wire) {
            Ok(Some(frame)) => {
                prop_assert!(allow);
                prop_assert!(frame.body.len() <= limits.inflate_cap(compressed));
                prop_assert_eq!(frame.body.len(), inflated);
            }
            Ok(None) => prop_assert!(false, "a whole frame was not decoded"),
            Err(e) => {
                let reason = e.close_reason().map(|r| r.as_str().to_owned());
                if allow {
                    prop_assert_eq!(reason.as_deref(), Some("packettoolarge"));
                    prop_assert!(inflated > limits.inflate_cap(compressed));
                } else {
                    prop_assert_eq!(reason.as_deref(), Some("invalidpacket"));
                }
            }
        }
    }
}

#[test]
fn nesting_deeper_than_the_limit_is_an_error_not_a_crash() {
    for marker in [0x91u8, 0x81] {
        // [[[[...]]]] or {k: {k: ...}} a million levels deep.
        let mut deep = Vec::new();
        for _ in 0..1_000_000 {
            deep.push(marker);
            if marker == 0x81 {
                deep.push(0xc0); // nil key
            }
        }
        deep.push(0xc0);
        assert!(value::decode(&deep, DEPTH).is_err());
        let mut s = server();
        let step = s.handle(Frame::new(ids::SETTYPE, deep));
        assert_eq!(step.event, Some(Event::Close(CloseReason::InvalidPacket)));
    }
}
