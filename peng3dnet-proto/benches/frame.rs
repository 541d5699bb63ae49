//! Frame codec micro-benchmarks: encoding and decoding a pong-sized frame (plain) and a
//! 10 KiB frame over the 8 KiB compression threshold (zlib level 6 out, inflate in), as
//! the server does them.
//!
//! Run with `cargo bench -p peng3dnet-proto --bench frame`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peng3dnet_proto::frame::{Frame, FrameCodec};
use peng3dnet_proto::value::{self, map, Value};

/// A pong as our server sends it to `peng3dnet bench` (about 200 bytes of msgpack).
fn pong_body() -> bytes::Bytes {
    value::encode(&map([
        (
            "oldmsg",
            map([("time", Value::F64(1.7e9)), ("x", Value::from(1))]),
        ),
        ("clients", Value::from(16)),
        ("uptime", Value::F64(12.345)),
        ("pings", Value::from(123_456)),
        (
            "peng3dnet",
            map([
                ("version", "0.1.3a0".into()),
                ("release", "0.1.3".into()),
                ("protoversion", 2.into()),
            ]),
        ),
        (
            "servertiming",
            map([
                ("recvtime", Value::F64(1.7e9)),
                ("sendtime", Value::F64(1.7e9)),
            ]),
        ),
    ]))
}

/// About 10 KiB of msgpack that compresses like real data (names and numbers).
fn big_body() -> bytes::Bytes {
    let entries: Vec<Value> = (0..400)
        .map(|i| {
            map([
                ("name", format!("player-{i}").into()),
                ("score", Value::from(i * 37 % 1000)),
            ])
        })
        .collect();
    value::encode(&Value::Array(entries))
}

fn bench_codec(c: &mut Criterion, name: &str, body: bytes::Bytes) {
    let frame = Frame::new(65, body.clone());
    let mut codec = FrameCodec::default();
    let mut wire = BytesMut::new();
    codec.encode(frame.clone(), &mut wire).unwrap();
    let compressed = wire[8..10] != [0, 0];

    let mut group = c.benchmark_group(format!("frame/{name}"));
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(
        format!(
            "encode ({} B body{})",
            body.len(),
            if compressed { ", zlib" } else { "" }
        ),
        |b| {
            let mut out = BytesMut::with_capacity(wire.len() * 2);
            b.iter(|| {
                out.clear();
                codec.encode(black_box(frame.clone()), &mut out).unwrap();
                black_box(out.len())
            })
        },
    );
    group.bench_function(
        format!(
            "decode ({} B on the wire{})",
            wire.len(),
            if compressed { ", inflate" } else { "" }
        ),
        |b| {
            let mut buf = BytesMut::with_capacity(wire.len() * 2);
            b.iter(|| {
                buf.extend_from_slice(&wire);
                let frame = codec.decode(&mut buf).unwrap().unwrap();
                black_box(frame.body.len())
            })
        },
    );
    group.finish();
}

fn frames(c: &mut Criterion) {
    bench_codec(c, "pong", pong_body());
    bench_codec(c, "big", big_body());
}

criterion_group!(benches, frames);
criterion_main!(benches);
