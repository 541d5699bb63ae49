//! Ping handling micro-benchmarks: msgpack encode and decode of a typical pong, and what a
//! server does for one ping frame (`ServerProtocol::handle` decoding it, then
//! `PingResponder::encode_pong` writing the pong, then framing it), with and without
//! compression of a large ping's echo; and the general merge (`PingResponder::respond`
//! plus encoding) that `encode_pong` avoids when keys do not collide; a provider writing
//! its entries (`with_dynamic_entries`) beside one returning a map.
//!
//! Run with `cargo bench -p peng3dnet-proto --bench pong`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use peng3dnet_proto::frame::{Frame, FrameCodec};
use peng3dnet_proto::pong::ServerTiming;
use peng3dnet_proto::protocol::{ids, settype_frame, ConnType, Event, ServerProtocol, ServerSetup};
use peng3dnet_proto::value::{self, map, Value};
use peng3dnet_proto::{ClientId, Stats};
use peng3dnet_proto::{PingMessage, PingRequest};
use peng3dnet_proto::{PingResponder, Registry};

fn responder() -> PingResponder {
    PingResponder::new()
        .with_static_data(map([
            ("name", "bench server".into()),
            ("motd", "hello".into()),
        ]))
        .with_dynamic(|_| {
            map([
                ("clients", Value::from(16)),
                ("uptime", Value::F64(12.345)),
                ("pings", Value::from(123_456)),
            ])
        })
}

/// [`responder`] with the same dynamic entries written by an entries provider (what
/// `peng3dnet serve` uses) instead of returned as a map.
fn entries_responder() -> PingResponder {
    responder().with_dynamic_entries(|_, out| {
        out.uint("clients", 16);
        out.f64("uptime", 12.345);
        out.uint("pings", 123_456);
    })
}

/// A ping request from client 1, as the server builds it.
fn request<'a>(message: &'a PingMessage, stats: &'a Stats) -> PingRequest<'a> {
    PingRequest::new(message, ClientId(1), "127.0.0.1:1".parse().unwrap(), stats)
}

fn established() -> ServerProtocol {
    let setup = Arc::new(ServerSetup::new(
        Arc::new(Registry::new()),
        [ConnType::Ping],
        64,
    ));
    let mut protocol = ServerProtocol::new(setup);
    protocol.handle(settype_frame(&ConnType::Ping));
    protocol
}

fn ping_frame(extra: Option<Value>) -> Frame {
    let mut entries = vec![("time", Value::F64(1.7e9)), ("x", Value::from(1))];
    if let Some(extra) = extra {
        entries.push(("blob", extra));
    }
    Frame::new(ids::PING, value::encode(&map(entries)))
}

/// What the server does for one ping frame: decode, write the pong, frame it into the
/// write buffer.
fn handle(
    protocol: &mut ServerProtocol,
    responder: &PingResponder,
    codec: &mut FrameCodec,
    frame: Frame,
    out: &mut BytesMut,
) -> usize {
    let step = protocol.handle(frame);
    let Some(Event::Ping(message)) = step.event else {
        panic!("not a ping");
    };
    let stats = Stats::default();
    let pong = responder.encode_pong(
        &request(&message, &stats),
        64 << 10,
        ServerTiming::at(SystemTime::now()),
    );
    out.clear();
    codec.encode(Frame::new(ids::PONG, pong), out).unwrap();
    out.len()
}

fn ping(c: &mut Criterion) {
    let responder = responder();
    let small = ping_frame(None);
    let message = PingMessage::decode(small.body.clone(), 64, 1000).unwrap();
    let stats = Stats::default();
    let pong = responder.respond(
        &request(&message, &stats),
        64 << 10,
        ServerTiming::at(SystemTime::now()),
    );
    let pong_bytes = value::encode(&pong);

    let mut group = c.benchmark_group("msgpack");
    group.bench_function(format!("encode pong ({} B)", pong_bytes.len()), |b| {
        b.iter(|| black_box(value::encode(black_box(&pong))))
    });
    group.bench_function(format!("decode pong ({} B)", pong_bytes.len()), |b| {
        b.iter(|| black_box(value::decode(black_box(&pong_bytes), 64).unwrap()))
    });
    group.finish();

    let mut group = c.benchmark_group("ping");
    let mut protocol = established();
    let mut codec = FrameCodec::default();
    let mut out = BytesMut::with_capacity(64 << 10);
    group.bench_function("merge + encode (small ping, the general path)", |b| {
        b.iter(|| {
            let pong = responder.respond(
                &request(black_box(&message), &stats),
                64 << 10,
                ServerTiming::at(SystemTime::now()),
            );
            black_box(value::encode(&pong))
        })
    });
    group.bench_function("encode_pong (small ping, the server's path)", |b| {
        b.iter(|| {
            black_box(responder.encode_pong(
                &request(black_box(&message), &stats),
                64 << 10,
                ServerTiming::at(SystemTime::now()),
            ))
        })
    });
    let entries = entries_responder();
    group.bench_function("encode_pong (small ping, entries provider)", |b| {
        b.iter(|| {
            black_box(entries.encode_pong(
                &request(black_box(&message), &stats),
                64 << 10,
                ServerTiming::at(SystemTime::now()),
            ))
        })
    });
    group.bench_function("handle (small ping: checked, not decoded)", |b| {
        b.iter(|| black_box(protocol.handle(black_box(small.clone()))))
    });
    group.bench_function("handle + encode_pong + frame (small ping)", |b| {
        b.iter(|| {
            handle(
                &mut protocol,
                &responder,
                &mut codec,
                small.clone(),
                &mut out,
            )
        })
    });
    // A 12 KiB ping: its echo makes the pong cross the 8 KiB threshold, so the pong is
    // compressed (and with the ping sent compressed, inflated first).
    let big = ping_frame(Some(Value::Binary(
        (0..12 * 1024).map(|i| (i % 251) as u8).collect(),
    )));
    group.bench_function(
        "handle + encode_pong + frame (12 KiB ping, zlib pong)",
        |b| b.iter(|| handle(&mut protocol, &responder, &mut codec, big.clone(), &mut out)),
    );
    let plain = FrameCodec::new(
        Default::default(),
        peng3dnet_proto::config::Compression {
            enabled: false,
            ..Default::default()
        },
    );
    let mut plain_codec = plain;
    group.bench_function(
        "handle + encode_pong + frame (12 KiB ping, no compression)",
        |b| {
            b.iter(|| {
                handle(
                    &mut protocol,
                    &responder,
                    &mut plain_codec,
                    big.clone(),
                    &mut out,
                )
            })
        },
    );
    group.finish();
}

criterion_group!(benches, ping);
criterion_main!(benches);
