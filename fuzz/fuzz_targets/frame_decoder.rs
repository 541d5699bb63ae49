//! FrameCodec::decode over arbitrary bytes, fed in chunks of a size the input chooses.
//!
//! Errors are fine; panics, hangs and allocations past the limits are not (libFuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb` catch the latter). Every frame that does decode
//! must survive an encode/decode round trip unchanged.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use peng3dnet_proto::config::{Compression, FrameLimits};
use peng3dnet_proto::frame::FrameCodec;

const LIMITS: FrameLimits = FrameLimits {
    max_frame_length: 1 << 17,
    max_inflated_size: 1 << 16,
    max_inflate_ratio: 100,
    allow_compressed: true,
};

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    // Chunk sizes 1..=64: splits land everywhere, including inside the length prefix.
    let chunk = usize::from(control & 0x3f) + 1;
    let compression = Compression {
        enabled: control & 0x40 != 0,
        threshold: 16,
        level: 6,
    };
    let mut codec = FrameCodec::new(LIMITS, compression);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    'feed: for part in wire.chunks(chunk) {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.body.len() <= LIMITS.max_inflated_size);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        // What is buffered never exceeds one frame plus the part just added.
        assert!(buf.len() <= 4 + LIMITS.max_frame_length + chunk);
    }
    let _ = codec.decode_eof(&mut buf);
    for frame in frames {
        let mut wire = BytesMut::new();
        codec.encode(frame.clone(), &mut wire).expect("encode");
        assert_eq!(codec.decode(&mut wire).expect("decode"), Some(frame));
        assert!(wire.is_empty());
    }
});
