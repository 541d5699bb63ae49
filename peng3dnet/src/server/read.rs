//! The server's read side of a connection: the frame codec with limits that follow the
//! connection's state, a server-wide budget for large partial frames and inflate buffers,
//! and a deadline for a frame that started arriving.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

use crate::config::{Compression, FrameLimits, Limits};
use crate::error::FrameError;
use crate::frame::{
    Frame, FrameCodec, FrameHeader, FLAG_COMPRESSED, LENGTH_BYTES, PREFIX_BYTES, RESERVE_STEP,
};

/// Free space the read buffer has before every read (see [`ServerCodec::decode`]).
pub(crate) const READ_ROOM: usize = 256;

/// Every connection may hold this much of partial frame or inflate buffer without asking
/// the budget; only what it holds beyond is charged.
pub(crate) const UNBUDGETED: usize = 64 << 10;

/// The part of a connection's `bytes` of partial frame or inflate buffer that the budget
/// pays for: beyond the [`UNBUDGETED`] allowance every connection has.
pub(crate) fn over_allowance(bytes: usize) -> usize {
    bytes.saturating_sub(UNBUDGETED)
}

/// Bytes held across a server's connections in large partial frames and inflate buffers.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Bytes taken now.
    pub(crate) fn held(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` bytes, or none if that would pass the maximum.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The frame limits of each [`Phase`] and the frame timeout, worked out once per server
/// from its [`Limits`] and shared by its connections: a copy of the `Limits` in every
/// connection's codec made it 184 bytes larger, and its fields split the codec's few hot
/// ones across more cache lines (BENCHMARKS.md, "Cache lines per ping").
#[derive(Debug)]
pub(crate) struct PhaseLimits {
    handshake: FrameLimits,
    ping: FrameLimits,
    established: FrameLimits,
    frame_timeout: Duration,
}

impl PhaseLimits {
    pub(crate) fn new(limits: &Limits) -> PhaseLimits {
        let full = limits.frame;
        let small = |length: usize, compressed: bool| FrameLimits {
            max_frame_length: length.min(full.max_frame_length),
            max_inflated_size: length.min(full.max_inflated_size),
            allow_compressed: compressed && full.allow_compressed,
            ..full
        };
        PhaseLimits {
            handshake: small(limits.handshake_frame_length, false),
            // A raised echo cap raises the ping limit with it.
            ping: small(
                limits
                    .ping_frame_length
                    .max(limits.max_echo_bytes.saturating_add(16 << 10)),
                true,
            ),
            established: full,
            frame_timeout: limits.frame_timeout,
        }
    }

    fn of(&self, phase: Phase) -> FrameLimits {
        match phase {
            Phase::Handshake => self.handshake,
            Phase::Ping => self.ping,
            Phase::Established => self.established,
        }
    }
}

/// Which frame limits are in force on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before settype (and before the classic handshake is done): small, uncompressed.
    Handshake,
    /// An established ping connection: about the echo cap.
    Ping,
    /// An established classic or custom connection: the configured frame limits.
    Established,
}

/// The codec of a server connection (see the module documentation).
#[derive(Debug)]
pub(crate) struct ServerCodec {
    inner: FrameCodec,
    limits: Arc<PhaseLimits>,
    budget: Arc<Budget>,
    /// Bytes of `budget` this connection holds for its partial frame.
    held: usize,
    /// When the partial frame at the front of the buffer started arriving.
    started: Option<Instant>,
    /// When the last frame that came out was read: the connection's one clock reading per
    /// frame, which the connection reuses for its idle deadline and the pong's timing.
    read_at: Instant,
}

impl ServerCodec {
    pub(crate) fn new(
        limits: Arc<PhaseLimits>,
        compression: Compression,
        budget: Arc<Budget>,
    ) -> Self {
        ServerCodec {
            inner: FrameCodec::new(limits.of(Phase::Handshake), compression),
            limits,
            budget,
            held: 0,
            started: None,
            read_at: Instant::now(),
        }
    }

    /// Applies the limits of `phase` from the next frame on.
    pub(crate) fn set_phase(&mut self, phase: Phase) {
        self.inner.set_limits(self.limits.of(phase));
    }

    /// When the partial frame now buffered started arriving, if there is one.
    pub(crate) fn frame_started(&self) -> Option<Instant> {
        self.started
    }

    /// When the last frame that came out of the decoder was read (the clock as the
    /// decoder read it: no second reading per frame).
    pub(crate) fn read_at(&self) -> Instant {
        self.read_at
    }

    fn release(&mut self) {
        if self.held > 0 {
            self.budget.give_back(self.held);
            self.held = 0;
        }
    }

    /// Charges `n` bytes to the budget for the frame now buffered (what it holds already
    /// counts).
    fn charge(&mut self, n: usize) -> Result<(), FrameError> {
        if n <= self.held {
            return Ok(());
        }
        if !self.budget.try_take(n - self.held) {
            return Err(FrameError::BudgetExhausted { needed: n });
        }
        self.held = n;
        Ok(())
    }
}

impl Drop for ServerCodec {
    fn drop(&mut self) {
        self.release();
    }
}

impl Decoder for ServerCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.is_empty() {
            self.started = None;
            self.release();
            // Room for a whole small frame in the next read: a buffer whose space was used
            // up by the frames split off it would take a 40-byte ping in two reads (at
            // 1,000 connections, 5.6 % more reads than pongs). On an empty buffer whose
            // frames are gone this only moves its start back.
            if src.capacity() < READ_ROOM {
                src.reserve(READ_ROOM);
            }
            return Ok(None);
        }
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        if let Some(length) = FrameHeader::peek_length(src) {
            let limits = self.inner.limits();
            if length <= limits.max_frame_length {
                let wire = LENGTH_BYTES + length;
                if src.len() < wire {
                    // Partial: a large one is charged before the decoder reserves room
                    // for it, and it must complete in time.
                    if now.duration_since(started) > self.limits.frame_timeout {
                        return Err(FrameError::FrameTimeout(self.limits.frame_timeout));
                    }
                    // What the buffer holds (and the step the decoder reserves next),
                    // not what the header announces: 330 bytes announcing 8 MiB frames
                    // took the whole budget when the announced length was charged. A
                    // frame within the allowance (every ping) costs nothing to check.
                    if wire > UNBUDGETED {
                        let held = src.len().saturating_add(RESERVE_STEP).min(wire);
                        self.charge(over_allowance(held))?;
                    }
                } else if let Some(header) = FrameHeader::parse(src) {
                    // Complete: a compressed body needs room to inflate into.
                    if header.flags & FLAG_COMPRESSED != 0 && limits.allow_compressed {
                        let cap =
                            limits.inflate_cap(length.saturating_sub(PREFIX_BYTES - LENGTH_BYTES));
                        self.charge(over_allowance(cap.max(wire)))?;
                    }
                }
            }
        }
        let decoded = self.inner.decode(src);
        if !matches!(decoded, Ok(None)) {
            // A frame came out (or the connection is refused): the next one starts now.
            self.release();
            self.started = (!src.is_empty()).then_some(now);
            self.read_at = now;
        }
        decoded
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Frame> for ServerCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.inner.encode(frame, dst)
    }
}
