//! The pong's fast path, apart: framing and sending a pong from a buffer each thread
//! keeps, without allocating (its figures are in BENCHMARKS.md). Kept alone so that a change
//! to it is seen, and measured.

use tokio_util::codec::Framed;

use super::read::ServerCodec;
use crate::error::FrameError;
use crate::frame::FrameCodec;
use crate::observe::ObservedCodec;
use crate::protocol::ids;
use crate::transport::Stream;

/// A pong sent by [`send_pong`].
pub(super) struct Sent {
    /// Bytes of the frame.
    pub(super) length: usize,
    /// Some of it waits in the write buffer, to be flushed.
    pub(super) buffered: bool,
}

/// Frames a pong and sends it. When nothing else waits to be written or handled (a ping
/// answered as it came: the usual case), the frame is built in a buffer this thread keeps
/// and handed to a plain TCP socket from there. At 1,000 connections a connection's own
/// write buffer is cold memory, and framing the pong into it cost about three cache
/// misses per ping (BENCHMARKS.md, "Cache lines per ping"). What the socket does not take
/// at once, a pong behind other bytes, and every pong under TLS go through the write
/// buffer, in order.
pub(super) fn send_pong(
    framed: &mut Framed<Stream, ObservedCodec<ServerCodec>>,
    encoder: &FrameCodec,
    body: &[u8],
) -> Result<Sent, FrameError> {
    thread_local! {
        static WIRE: std::cell::RefCell<bytes::BytesMut> =
            std::cell::RefCell::new(bytes::BytesMut::new());
    }
    /// Largest wire buffer a thread keeps.
    const KEEP: usize = 64 << 10;
    let alone = framed.write_buffer().is_empty() && framed.read_buffer().is_empty();
    if alone {
        // `None` under TLS: the pong then goes through the write buffer below.
        let direct = WIRE.with(|wire| {
            let mut wire = wire.try_borrow_mut().ok()?;
            let tcp = framed.get_ref().plain()?;
            wire.clear();
            if let Err(e) = encoder.encode_body(ids::PONG, body, &mut wire) {
                return Some(Err(e));
            }
            // An error is left to the write buffer's flush, which meets it again and
            // closes the connection as every failed write does.
            let taken = tcp.try_write(&wire).unwrap_or(0);
            let length = wire.len();
            if taken < length {
                framed.write_buffer_mut().extend_from_slice(&wire[taken..]);
            }
            if wire.capacity() > KEEP {
                *wire = bytes::BytesMut::new();
            }
            Some(Ok(Sent {
                length,
                buffered: taken < length,
            }))
        });
        if let Some(sent) = direct {
            return sent;
        }
    }
    let dst = framed.write_buffer_mut();
    let before = dst.len();
    encoder.encode_body(ids::PONG, body, dst)?;
    Ok(Sent {
        length: dst.len() - before,
        buffered: true,
    })
}

/// Runs `f` with an empty buffer this thread keeps for pongs (a fresh one if a ping data
/// provider, running inside, answers a ping itself).
pub(super) fn with_pong_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static PONG: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// Largest pong buffer a thread keeps.
    const KEEP: usize = 64 << 10;
    PONG.with(|pong| match pong.try_borrow_mut() {
        Ok(mut pong) => {
            pong.clear();
            let result = f(&mut pong);
            if pong.capacity() > KEEP {
                *pong = Vec::new();
            }
            result
        }
        Err(_) => f(&mut Vec::new()),
    })
}
