//! Framing: bytes on the wire to [`Frame`]s and back.
//!
//! Every packet is `length: u32 BE | id: u32 BE | flags: u16 BE | body`, where `length`
//! counts the id, flags and body. This module knows nothing about packet meanings: it
//! checks the length against [`FrameLimits`], inflates compressed bodies with a hard cap,
//! refuses the never-implemented encryption flag, and compresses outgoing bodies above the
//! configured threshold exactly as the Python reference does (`len(body) > threshold`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress, Status};

use crate::config::{Compression, FrameLimits};
use crate::error::FrameError;

/// Bytes of the length prefix.
pub const LENGTH_BYTES: usize = 4;
/// Bytes of packet id plus flags, counted by the length prefix.
pub const HEADER_BYTES: usize = 6;
/// Flag bit: the body is a zlib (RFC 1950) stream.
pub const FLAG_COMPRESSED: u16 = 1 << 0;
/// Flag bit: the body is AES-encrypted. Reserved by the protocol, implemented by no one;
/// a receiver must refuse it.
pub const FLAG_ENCRYPTED: u16 = 1 << 1;

/// Bytes from the start of a frame to its body: length prefix, id and flags.
pub const PREFIX_BYTES: usize = LENGTH_BYTES + HEADER_BYTES;
/// Most [`FrameCodec`] reserves at once for a partial frame: a buffer grows with the bytes
/// that come, never to the length a header announces.
pub const RESERVE_STEP: usize = 64 << 10;

/// The fixed part of a frame on the wire, for tools that split a stream into frames
/// without decoding them (the load generator reads pongs in place this way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The length prefix: id, flags and body.
    pub length: usize,
    /// Packet id.
    pub id: u32,
    /// Flag bits ([`FLAG_COMPRESSED`], [`FLAG_ENCRYPTED`]).
    pub flags: u16,
}

impl FrameHeader {
    /// The length prefix at the front of `buf`, once its [`LENGTH_BYTES`] arrived.
    pub fn peek_length(buf: &[u8]) -> Option<usize> {
        let prefix: [u8; LENGTH_BYTES] = buf.get(..LENGTH_BYTES)?.try_into().ok()?;
        Some(u32::from_be_bytes(prefix) as usize)
    }

    /// The header at the front of `buf`, once its [`PREFIX_BYTES`] arrived.
    ///
    /// ```
    /// use peng3dnet_proto::frame::FrameHeader;
    /// let wire = b"\x00\x00\x00\x07\x00\x00\x00\x40\x00\x00\x80";
    /// let header = FrameHeader::parse(wire).unwrap();
    /// assert_eq!((header.length, header.id, header.flags), (7, 64, 0));
    /// assert_eq!(header.wire_len(), wire.len());
    /// ```
    pub fn parse(buf: &[u8]) -> Option<FrameHeader> {
        let length = Self::peek_length(buf)?;
        let rest = buf.get(LENGTH_BYTES..PREFIX_BYTES)?;
        Some(FrameHeader {
            length,
            id: u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            flags: u16::from_be_bytes([rest[4], rest[5]]),
        })
    }

    /// Bytes of the whole frame on the wire, prefix included.
    pub fn wire_len(&self) -> usize {
        LENGTH_BYTES + self.length
    }
}

/// One packet: its id and its plain (already inflated) msgpack body.
///
/// Compression is a property of the wire, not of the packet, so it does not appear here:
/// [`FrameCodec`] decides it when encoding and undoes it when decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Packet id: below 64 for the protocol's own packets, 64 and up for applications.
    pub id: u32,
    /// The msgpack document, uncompressed.
    pub body: Bytes,
}

impl Frame {
    /// A frame from an id and a ready msgpack body.
    pub fn new(id: u32, body: impl Into<Bytes>) -> Self {
        Frame {
            id,
            body: body.into(),
        }
    }
}

/// The frame codec: limits and zlib, over any byte buffer. It owns no socket; the
/// `peng3dnet` crate lends it tokio-util's codec traits (`peng3dnet::codec::Codec`).
///
/// ```
/// use bytes::BytesMut;
/// use peng3dnet_proto::frame::{Frame, FrameCodec};
///
/// let mut codec = FrameCodec::default();
/// let mut wire = BytesMut::new();
/// codec.encode(Frame::new(64, &b"\x80"[..]), &mut wire).unwrap();
/// assert_eq!(&wire[..], b"\x00\x00\x00\x07\x00\x00\x00\x40\x00\x00\x80");
/// assert_eq!(codec.decode(&mut wire).unwrap(), Some(Frame::new(64, &b"\x80"[..])));
/// ```
#[derive(Debug, Clone, Default)]
pub struct FrameCodec {
    /// What a peer may send us.
    limits: FrameLimits,
    /// How we compress what we send.
    compression: Compression,
}

impl FrameCodec {
    /// A codec with the given receive limits and send compression.
    pub fn new(limits: FrameLimits, compression: Compression) -> Self {
        FrameCodec {
            limits,
            compression,
        }
    }

    /// The receive limits in force.
    pub fn limits(&self) -> &FrameLimits {
        &self.limits
    }

    /// Changes the receive limits, from the next frame on (a server tightens them before
    /// a connection's type is set and loosens them once it is established).
    pub fn set_limits(&mut self, limits: FrameLimits) {
        self.limits = limits;
    }
}

impl FrameCodec {
    /// Takes one frame off the front of `src`, or returns `Ok(None)` when `src` does not
    /// hold a whole frame yet ("not enough data" is a normal state, not an error). The
    /// length is checked against the limits before anything is buffered for the body.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < LENGTH_BYTES {
            return Ok(None);
        }
        let length = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if length > self.limits.max_frame_length {
            return Err(FrameError::TooLarge {
                length,
                max: self.limits.max_frame_length,
            });
        }
        if length < HEADER_BYTES {
            return Err(FrameError::TooShort { length });
        }
        if src.len() < LENGTH_BYTES + length {
            // Reserve only what the checked length needs, in bounded steps, so a peer that
            // announces a large frame and then stalls does not make us allocate it up front.
            let missing = LENGTH_BYTES + length - src.len();
            src.reserve(missing.min(RESERVE_STEP));
            return Ok(None);
        }
        src.advance(LENGTH_BYTES);
        let mut packet = src.split_to(length);
        let id = packet.get_u32();
        let flags = packet.get_u16();
        if flags & FLAG_ENCRYPTED != 0 {
            return Err(FrameError::Encrypted);
        }
        let body = if flags & FLAG_COMPRESSED != 0 {
            if !self.limits.allow_compressed {
                return Err(FrameError::CompressedRefused);
            }
            let cap = self.limits.inflate_cap(packet.len());
            inflate(&packet, cap)?
        } else {
            packet.freeze()
        };
        Ok(Some(Frame { id, body }))
    }

    /// As [`decode`](Self::decode), at the end of the stream: bytes left that do not
    /// make a whole frame are [`FrameError::Truncated`].
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }

    /// Appends `frame` to `dst` as wire bytes, compressing its body when it is longer
    /// than the threshold.
    pub fn encode(&self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_body(frame.id, &frame.body, dst)
    }

    /// Appends a frame with packet id `id` and `body` to `dst`, as [`encode`](Self::encode)
    /// does, from a body the caller keeps: a server writes its pong straight from a
    /// reused buffer into the connection's write buffer, with no allocation per pong.
    pub fn encode_body(&self, id: u32, body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let compress = self.compression.enabled && body.len() > self.compression.threshold;
        let deflated;
        let (flags, body) = if compress {
            deflated = deflate(body, self.compression.level);
            (FLAG_COMPRESSED, &deflated[..])
        } else {
            (0, body)
        };
        let length = HEADER_BYTES + body.len();
        let length = u32::try_from(length).map_err(|_| FrameError::OutgoingTooLarge { length })?;
        dst.reserve(LENGTH_BYTES + length as usize);
        dst.put_u32(length);
        dst.put_u32(id);
        dst.put_u16(flags);
        dst.extend_from_slice(body);
        Ok(())
    }

    /// `frame` as wire bytes on its own (see [`encode`](Self::encode)).
    pub fn to_bytes(&self, frame: Frame) -> Result<Bytes, FrameError> {
        let mut wire = BytesMut::new();
        self.encode(frame, &mut wire)?;
        Ok(wire.freeze())
    }
}

/// Compresses `data` into a zlib stream, as Python's `zlib.compress(data, level)` does.
fn deflate(data: &[u8], level: u32) -> Bytes {
    let mut compress = Compress::new(Level::new(level.min(9)), true);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Finish)
            .expect("zlib compression of an in-memory buffer cannot fail");
        match status {
            Status::StreamEnd => return Bytes::from(out),
            _ => out.reserve(out.capacity().max(1024)),
        }
    }
}

/// Inflates a zlib stream, refusing to produce more than `max` bytes.
///
/// The cap is checked while inflating, chunk by chunk, so a zlib bomb costs at most `max`
/// bytes of memory, never its claimed size.
fn inflate(data: &[u8], max: usize) -> Result<Bytes, FrameError> {
    const CHUNK: usize = 16 * 1024;
    let mut decompress = Decompress::new(true);
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(2).clamp(64, max.max(64)));
    loop {
        if out.len() == out.capacity() {
            if out.len() > max {
                return Err(FrameError::InflatedTooLarge { max });
            }
            // Grow by at most one chunk past the cap, so overflow is detected without
            // allocating the claimed size.
            let room = max
                .saturating_add(1)
                .saturating_sub(out.len())
                .min(out.len().max(CHUNK));
            out.reserve_exact(room);
        }
        let consumed = decompress.total_in() as usize;
        let before = out.len();
        let status = decompress
            .decompress_vec(&data[consumed..], &mut out, FlushDecompress::None)
            .map_err(|e| FrameError::Inflate(e.to_string()))?;
        if out.len() > max {
            return Err(FrameError::InflatedTooLarge { max });
        }
        match status {
            Status::StreamEnd => {
                if (decompress.total_in() as usize) != data.len() {
                    return Err(FrameError::Inflate(
                        "trailing bytes after the zlib stream".into(),
                    ));
                }
                return Ok(Bytes::from(out));
            }
            Status::Ok | Status::BufError => {
                let stalled = out.len() == before && decompress.total_in() as usize == consumed;
                if stalled && out.len() < out.capacity() {
                    return Err(FrameError::Inflate("truncated zlib stream".into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::hex;
    use super::*;
    use crate::close::CloseReason;

    fn codec() -> FrameCodec {
        FrameCodec::default()
    }

    fn encode(codec: &mut FrameCodec, frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        codec.encode(frame, &mut buf).unwrap();
        buf
    }

    #[test]
    fn encodes_the_reference_hello_byte_for_byte() {
        let body = hex("82a776657273696f6ea7302e312e336130ac70726f746f76657273696f6e02");
        let wire = encode(&mut codec(), Frame::new(1, body));
        assert_eq!(
            wire[..],
            hex("00000025000000010000 82a776657273696f6ea7302e312e336130ac70726f746f76657273696f6e02")[..]
        );
    }

    #[test]
    fn bodies_at_the_threshold_stay_plain_and_above_it_are_compressed() {
        let mut c = codec();
        let at = encode(&mut c, Frame::new(64, vec![b'a'; 8192]));
        assert_eq!(u16::from_be_bytes([at[8], at[9]]), 0);
        let above = encode(&mut c, Frame::new(64, vec![b'a'; 8193]));
        assert_eq!(u16::from_be_bytes([above[8], above[9]]), FLAG_COMPRESSED);
        assert!(above.len() < 200);
        let mut above = above;
        assert_eq!(c.decode(&mut above).unwrap().unwrap().body.len(), 8193);
    }

    #[test]
    fn compression_output_matches_python_zlib_at_level_6() {
        // zlib.compress(b"a" * 9000, 6) in CPython 3.11
        let expected = hex("789cedc1010d000000c2a0acef5fc21e0e280000000000000000f837ace052ec");
        assert_eq!(deflate(&vec![b'a'; 9000], 6)[..], expected[..]);
    }

    #[test]
    fn compression_can_be_disabled() {
        let mut c = FrameCodec::new(
            FrameLimits::default(),
            Compression {
                enabled: false,
                ..Compression::default()
            },
        );
        let wire = encode(&mut c, Frame::new(64, vec![0; 100_000]));
        assert_eq!(wire.len(), 100_010);
    }

    #[test]
    fn decodes_frames_split_at_every_byte_boundary_and_several_in_one_read() {
        let mut c = codec();
        let frames = vec![
            Frame::new(1, &b"\x80"[..]),
            Frame::new(64, vec![7u8; 9000]),
            Frame::new(65, &b"\xc0"[..]),
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            c.encode(f.clone(), &mut wire).unwrap();
        }
        for split in 0..=wire.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(part);
                while let Some(f) = c.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "split at {split}");
            assert!(buf.is_empty());
        }
        // One byte at a time.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = c.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn refuses_a_length_over_the_limit_before_buffering_it() {
        let mut c = codec();
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
        let err = c.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                length: 0xffff_ffff,
                ..
            }
        ));
        assert_eq!(err.close_reason(), Some(CloseReason::PacketTooLarge));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn refuses_a_length_shorter_than_the_header() {
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x05\x00\x00\x00\x40\x00"[..]);
        let err = codec().decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooShort { length: 5 }));
        assert_eq!(err.close_reason(), Some(CloseReason::InvalidPacket));
    }

    #[test]
    fn refuses_the_encryption_flag() {
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x07\x00\x00\x00\x40\x00\x02\x80"[..]);
        let err = codec().decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Encrypted));
        assert_eq!(err.close_reason(), Some(CloseReason::EncryptionUnsupported));
    }

    #[test]
    fn a_zlib_bomb_is_stopped_at_the_inflate_cap() {
        let limits = FrameLimits {
            max_inflated_size: 1 << 20,
            max_inflate_ratio: 0,
            ..FrameLimits::default()
        };
        let mut c = FrameCodec::new(limits, Compression::default());
        let bomb = deflate(&vec![0u8; 64 << 20], 9);
        assert!(bomb.len() < 100 * 1024);
        let mut wire = BytesMut::new();
        wire.put_u32((HEADER_BYTES + bomb.len()) as u32);
        wire.put_u32(64);
        wire.put_u16(FLAG_COMPRESSED);
        wire.extend_from_slice(&bomb);
        let err = c.decode(&mut wire).unwrap_err();
        assert!(matches!(err, FrameError::InflatedTooLarge { max } if max == 1 << 20));
        assert_eq!(err.close_reason(), Some(CloseReason::PacketTooLarge));
    }

    fn compressed_wire(inflated: &[u8]) -> BytesMut {
        let body = deflate(inflated, 9);
        let mut wire = BytesMut::new();
        wire.put_u32((HEADER_BYTES + body.len()) as u32);
        wire.put_u32(64);
        wire.put_u16(FLAG_COMPRESSED);
        wire.extend_from_slice(&body);
        wire
    }

    #[test]
    fn the_inflate_ratio_is_capped_beyond_the_allowance() {
        let mut c = codec();
        // Highly compressible, but within the allowance: fine.
        let small = vec![0u8; crate::config::INFLATE_ALLOWANCE];
        assert_eq!(
            c.decode(&mut compressed_wire(&small))
                .unwrap()
                .unwrap()
                .body
                .len(),
            small.len()
        );
        // 8 MB of zeros from a few KiB: refused at about 100 times the compressed size.
        let mut bomb = compressed_wire(&vec![0u8; 8_000_000]);
        let compressed = bomb.len() - PREFIX_BYTES;
        let err = c.decode(&mut bomb).unwrap_err();
        assert!(
            matches!(err, FrameError::InflatedTooLarge { max } if max == compressed * 100 + crate::config::INFLATE_ALLOWANCE),
            "{err}"
        );
    }

    #[test]
    fn compressed_frames_can_be_refused_outright() {
        let mut c = FrameCodec::new(
            FrameLimits {
                allow_compressed: false,
                ..FrameLimits::default()
            },
            Compression::default(),
        );
        let err = c.decode(&mut compressed_wire(b"\x80")).unwrap_err();
        assert!(matches!(err, FrameError::CompressedRefused));
        assert_eq!(err.close_reason(), Some(CloseReason::InvalidPacket));
    }

    #[test]
    fn an_unbounded_inflate_cap_does_not_overflow() {
        let data = vec![5u8; 70_000];
        assert_eq!(
            inflate(&deflate(&data, 6), usize::MAX).unwrap()[..],
            data[..]
        );
        let mut c = FrameCodec::new(
            FrameLimits {
                max_inflated_size: usize::MAX,
                ..FrameLimits::default()
            },
            Compression::default(),
        );
        assert_eq!(
            c.decode(&mut compressed_wire(&data))
                .unwrap()
                .unwrap()
                .body
                .len(),
            70_000
        );
    }

    #[test]
    fn exactly_the_cap_inflates() {
        let data = vec![3u8; 100_000];
        assert_eq!(inflate(&deflate(&data, 6), 100_000).unwrap()[..], data[..]);
        assert!(inflate(&deflate(&data, 6), 99_999).is_err());
    }

    #[test]
    fn garbage_and_truncated_zlib_are_errors() {
        assert!(matches!(
            inflate(b"not zlib at all", 1000),
            Err(FrameError::Inflate(_))
        ));
        let good = deflate(&vec![1u8; 5000], 6);
        assert!(matches!(
            inflate(&good[..good.len() - 3], 10_000),
            Err(FrameError::Inflate(_))
        ));
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(matches!(
            inflate(&trailing, 10_000),
            Err(FrameError::Inflate(_))
        ));
    }

    #[test]
    fn end_of_stream_inside_a_frame_is_an_error_and_between_frames_is_not() {
        let mut c = codec();
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x07\x00\x00"[..]);
        assert!(matches!(
            c.decode_eof(&mut buf),
            Err(FrameError::Truncated { buffered: 6 })
        ));
        let mut empty = BytesMut::new();
        assert_eq!(c.decode_eof(&mut empty).unwrap(), None);
    }
}

/// Helpers shared by the crate's unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    /// Bytes from hex, ignoring whitespace.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
