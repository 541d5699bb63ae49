//! The protocol's frame codec as a tokio-util codec, so a socket becomes a stream and a
//! sink of frames (`Framed<Stream, Codec>`).
//!
//! The framing itself (limits, zlib, the wire layout) is [`peng3dnet_proto::frame`]; this
//! adapter only lends it tokio-util's `Decoder` and `Encoder` traits, which the
//! runtime-free protocol crate cannot depend on.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::config::{Compression, FrameLimits};
use crate::error::FrameError;
use crate::frame::{Frame, FrameCodec};

/// [`FrameCodec`] for `tokio_util::codec::Framed`.
///
/// ```
/// use bytes::BytesMut;
/// use peng3dnet::codec::Codec;
/// use peng3dnet::frame::Frame;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = Codec::default();
/// let mut wire = BytesMut::new();
/// codec.encode(Frame::new(64, &b"\x80"[..]), &mut wire).unwrap();
/// assert_eq!(codec.decode(&mut wire).unwrap(), Some(Frame::new(64, &b"\x80"[..])));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Codec(pub FrameCodec);

impl Codec {
    /// A codec with the given receive limits and send compression.
    pub fn new(limits: FrameLimits, compression: Compression) -> Self {
        Codec(FrameCodec::new(limits, compression))
    }
}

impl From<FrameCodec> for Codec {
    fn from(codec: FrameCodec) -> Self {
        Codec(codec)
    }
}

impl Decoder for Codec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.0.decode(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.0.decode_eof(src)
    }
}

impl Encoder<Frame> for Codec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.0.encode(frame, dst)
    }
}
