//! Watching a server from outside: the events a metrics exporter counts.
//!
//! A [`ServerObserver`] given to [`ServerBuilder::observer`](crate::server::ServerBuilder::observer)
//! is told about every connection's life (accepted, connection type set, closed), every
//! refusal, every failed TLS handshake, every ping answered (with its handling time) and
//! the bytes read and written. Every method has a default that does nothing; the calls
//! happen on the connection's task, so keep them short (an atomic increment).
//!
//! The server's own [`Stats`](crate::stats::Stats) counters need no observer; this is
//! for what they do not count.

use std::time::Duration;

use bytes::BytesMut;
use std::sync::Arc;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::Codec;
use crate::error::FrameError;
use crate::frame::Frame;
use crate::protocol::ConnType;
use crate::server::Closed;

/// Events of a server, for metrics. See the [module documentation](self).
pub trait ServerObserver: Send + Sync + 'static {
    /// A TCP connection was accepted (it has no connection type yet).
    fn accepted(&self) {}

    /// A connection was refused at accept (the server holds its maximum number of
    /// connections): `reason` is the closeconn reason sent, `serverfull`.
    fn refused(&self, _reason: &str) {}

    /// A TLS handshake failed or timed out; the connection is dropped.
    fn tls_handshake_failed(&self) {}

    /// The peer chose its connection type (classic after the handshake, ping, custom).
    fn established(&self, _conntype: &ConnType) {}

    /// A connection ended: its type if it had chosen one, and how it ended.
    fn closed(&self, _conntype: Option<&ConnType>, _closed: &Closed) {}

    /// A ping was answered; `handling` is the time from its arrival to its pong being
    /// encoded (the server's own work, not the network's).
    fn ping_answered(&self, _handling: Duration) {}

    /// Bytes of frames read from peers (after TLS).
    fn bytes_read(&self, _bytes: u64) {}

    /// Bytes of frames written to peers (before TLS).
    fn bytes_written(&self, _bytes: u64) {}
}

/// The frame codec with byte counting for an observer (the server's connections use it).
pub(crate) struct ObservedCodec<C = Codec> {
    pub(crate) codec: C,
    pub(crate) observer: Option<Arc<dyn ServerObserver>>,
}

impl<C: Decoder<Item = Frame, Error = FrameError>> Decoder for ObservedCodec<C> {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let before = src.len();
        let frame = self.codec.decode(src)?;
        if let (Some(observer), Some(_)) = (&self.observer, &frame) {
            observer.bytes_read((before - src.len()) as u64);
        }
        Ok(frame)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let before = src.len();
        let frame = self.codec.decode_eof(src)?;
        if let (Some(observer), Some(_)) = (&self.observer, &frame) {
            observer.bytes_read((before - src.len()) as u64);
        }
        Ok(frame)
    }
}

impl<C: Encoder<Frame, Error = FrameError>> Encoder<Frame> for ObservedCodec<C> {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let before = dst.len();
        self.codec.encode(frame, dst)?;
        if let Some(observer) = &self.observer {
            observer.bytes_written((dst.len() - before) as u64);
        }
        Ok(())
    }
}
