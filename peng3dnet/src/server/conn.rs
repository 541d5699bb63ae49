//! One connection's task: its loop (commands, frames, the one timer), what each frame
//! makes it do, writes bounded by the write timeout, and the graceful close.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_util::codec::{Decoder, Framed};

use super::establish::establish;
use super::handler::{ClientHandle, Closed, Command, Handler, LINGER_MAX_BYTES, QUEUE_OVERHEAD};
use super::mailbox::{Inbox, Mailbox};
use super::pong_path::{send_pong, with_pong_buffer, Sent};
use super::read::{Phase, ServerCodec};
use super::Shared;
use crate::error::FrameError;
use crate::frame::Frame;
use crate::observe::{ObservedCodec, ServerObserver};
use crate::pong::{PingRequest, ServerTiming};
use crate::protocol::{closeconn_frame, hello_frame, CloseReason, ConnType, Event, ServerProtocol};
use crate::stats::ClientId;
use crate::transport::Stream;
use crate::wall_clock::wall_times;
use peng3dnet_proto::deadlines::{Deadlines, Expired};

/// What wakes a connection's loop.
pub(super) enum Woken {
    Command(Command),
    Frame(Option<Result<Frame, FrameError>>),
    Timer,
}

/// Per-connection state the task needs besides the protocol.
pub(super) struct Conn<H: Handler> {
    framed: Framed<Stream, ObservedCodec<ServerCodec>>,
    protocol: ServerProtocol,
    handle: ClientHandle,
    state: H::State,
    shared: Arc<Shared>,
    handler: Arc<H>,
    /// The handshake, idle, frame and write deadlines (the proto crate's rules; this loop
    /// only arms the timer where they say).
    deadlines: Deadlines,
    /// Why we are refusing the peer (a limit or a protocol violation), logged once with
    /// its address when the connection closes.
    refusal: Option<String>,
    /// A write timed out: the peer does not read, so nothing more is sent to it.
    unwritable: bool,
    /// The connection type, once the peer chose it (for the observer and the idle timeout).
    conntype: Option<ConnType>,
    /// The commands from the connection's handles, and the connection's one timer, for
    /// every deadline: handshake, idle, a frame that started arriving, and a write the
    /// socket does not take at once.
    inbox: Inbox<Command>,
}

pub(super) async fn connection<H: Handler>(
    tcp: TcpStream,
    addr: SocketAddr,
    shared: Arc<Shared>,
    handler: Arc<H>,
) {
    // The handshake deadline counts from the accept, PROXY header and TLS handshake
    // included.
    let accepted = Instant::now();
    let deadlines = Deadlines::new(&shared.timeouts, accepted.into_std());
    let handshake_deadline = crate::deadline::at(accepted, shared.limits.handshake_timeout);
    // The plain path in place; the PROXY header and the TLS handshake in a task of
    // their own on the heap, so that their futures do not make every connection's
    // larger (they are not kept once the connection is established).
    let (stream, addr, _slot) = if shared.proxy.is_none() && shared.tls.is_none() {
        (Stream::Plain(tcp), addr, None)
    } else {
        match Box::pin(establish(tcp, addr, &shared, handshake_deadline)).await {
            Some(established) => established,
            None => return,
        }
    };
    let security = stream.security(false);
    let id = ClientId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    let mailbox = Mailbox::new();
    let inbox = Inbox::new(mailbox.clone(), handshake_deadline);
    let handle = ClientHandle {
        id,
        addr,
        mailbox,
        max_queued: shared.limits.max_queued_bytes,
        registry: shared.registry.clone(),
        security,
    };
    shared.clients().insert(id, handle.clone());
    if shared.shutdown.is_cancelled() {
        // Registered after `shutdown` told the others.
        let _ = handle.mailbox.push(Command::Shutdown);
    }
    shared.stats.connected.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(peer = %addr, client = %id, "connection opened");
    let (state, created) = match guarded(addr, "new_state", || handler.new_state(&handle)) {
        Ok(state) => (state, Ok(())),
        Err(closed) => (H::State::default(), Err(closed)),
    };
    let mut conn = Conn {
        framed: small_framed(
            stream,
            ServerCodec::new(
                shared.phase_limits.clone(),
                shared.compression,
                shared.budget.clone(),
            ),
            shared.observer.clone(),
        ),
        protocol: ServerProtocol::new(shared.setup.clone()),
        handle,
        state,
        shared: shared.clone(),
        handler,
        deadlines,
        refusal: None,
        unwritable: false,
        conntype: None,
        inbox,
    };
    let connected = created.and_then(|()| {
        let (handler, handle, state) = (&conn.handler, &conn.handle, &mut conn.state);
        guarded(addr, "on_connect", || handler.on_connect(handle, state))
    });
    let closed = match connected {
        Ok(()) => conn.run().await,
        Err(closed) => closed,
    };
    match &closed {
        Closed::ByUs(reason) => {
            // Exactly one line per refusal, with the peer's address and the reason.
            match (&conn.refusal, reason) {
                (Some(why), _) => {
                    tracing::info!(peer = %addr, client = %id, %reason, "refused: {why}")
                }
                (None, CloseReason::ServerShutdown | CloseReason::PingComplete) => {
                    tracing::debug!(peer = %addr, client = %id, "closing: {reason}")
                }
                (None, _) => tracing::info!(peer = %addr, client = %id, "closing: {reason}"),
            }
            conn.close_gracefully(reason).await;
        }
        Closed::ByPeer(reason) => {
            match reason {
                None | Some(CloseReason::PingComplete | CloseReason::SocketClose) => {
                    let reason = reason
                        .as_ref()
                        .map_or("no reason given", CloseReason::as_str);
                    tracing::debug!(peer = %addr, client = %id, "peer closed the connection: {reason}")
                }
                // Once, and through Display: the peer chose this text, which escapes
                // it and cuts it short (no forged lines, no flooded log).
                Some(reason) => {
                    tracing::info!(peer = %addr, client = %id, "peer closed the connection: {reason}")
                }
            }
            // Bounded: a TLS close_notify cannot be sent to a peer that does not read.
            let write_timeout = shared.limits.write_timeout;
            let _ = timeout(write_timeout, conn.framed.get_mut().shutdown()).await;
        }
        Closed::SocketClosed => tracing::debug!(peer = %addr, client = %id, "socket closed"),
    }
    shared.clients().remove(&id);
    shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
    if let Some(observer) = &shared.observer {
        observer.closed(conn.conntype.as_ref(), &closed);
    }
    let (handler, handle, state) = (&conn.handler, &conn.handle, &mut conn.state);
    let _ = guarded(addr, "on_close", || {
        handler.on_close(handle, state, &closed)
    });
}

/// Runs application code (a [`Handler`] hook, a ping data provider) so that a panic in it
/// costs only this connection: the panic is logged once with the peer's address and the
/// connection is closed with `internalerror`; the client still leaves `clients()` and the
/// counters, and `on_close` still runs.
pub(super) fn guarded<R>(peer: SocketAddr, what: &str, f: impl FnOnce() -> R) -> Result<R, Closed> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        tracing::error!(%peer, "{what} panicked: {message}; closing the connection with internalerror");
        Closed::ByUs(CloseReason::InternalError)
    })
}

/// Initial capacity of a connection's read buffer. Our frames are small (a ping is about
/// 40 bytes); larger ones make the decoder reserve what they need, and the buffer gives
/// that capacity back once the frame is consumed (see [`shrink_read_buffer`]).
pub(super) const READ_BUFFER: usize = 512;

/// A read buffer holding more capacity than this after a frame is replaced by a small one.
pub(super) const KEEP_READ_CAPACITY: usize = 16 << 10;

/// Gives back the capacity a large frame made the read buffer grow to: the frame's bytes
/// were split off the same allocation, which stays alive as long as the buffer does.
pub(super) fn shrink_read_buffer(buf: &mut bytes::BytesMut) {
    if buf.capacity() > KEEP_READ_CAPACITY && buf.len() <= KEEP_READ_CAPACITY / 2 {
        let mut small = bytes::BytesMut::with_capacity(READ_BUFFER.max(buf.len()));
        small.extend_from_slice(buf);
        *buf = small;
    }
}

/// A [`Framed`] with small buffers. `Framed::new` gives every connection 8 KiB for
/// reading and 8 KiB for writing (and `from_parts` raises smaller buffers to that), which
/// made half of what an idle connection costs: 15.9 KiB resident per idle connection with
/// them, 8.5 KiB with these (BENCHMARKS.md). `Framed::with_capacity` would also lower the
/// write back-pressure boundary; here it stays at 8 KiB. The write buffer starts empty:
/// the encoder reserves what each frame needs, and the buffer keeps that capacity.
pub(super) fn small_framed(
    stream: Stream,
    codec: ServerCodec,
    observer: Option<Arc<dyn ServerObserver>>,
) -> Framed<Stream, ObservedCodec<ServerCodec>> {
    let codec = ObservedCodec { codec, observer };
    let mut framed = Framed::new(stream, codec);
    *framed.read_buffer_mut() = bytes::BytesMut::with_capacity(READ_BUFFER);
    *framed.write_buffer_mut() = bytes::BytesMut::new();
    framed
}

impl<H: Handler> Conn<H> {
    async fn run(&mut self) -> Closed {
        // Read from the server's settings where used, not copied: a copy here was 184
        // bytes of every connection's task, and a cold cache line per ping.
        if let Err(closed) = self.write(hello_frame()).await {
            return closed;
        }
        // One timer for the whole connection, not one per frame (the profile showed it on
        // every packet), set where the deadlines say: moved only when it would fire late
        // (the idle deadline moves with every frame; the timer lags behind and catches up
        // when it fires early). The shutdown comes as a command.
        loop {
            let next = Instant::from_std(
                self.deadlines
                    .poll_timeout(&self.shared.timeouts, self.frame_started()),
            );
            if self.inbox.deadline() > next {
                self.inbox.reset(next);
            }
            match self.next_wake().await {
                Woken::Command(command) => match command {
                    Command::Shutdown => {
                        if let Some(closed) = self.answer_buffered().await {
                            return closed;
                        }
                        return Closed::ByUs(CloseReason::ServerShutdown);
                    }
                    Command::Send(frame) => {
                        self.handle
                            .mailbox
                            .queued
                            .fetch_sub(frame.body.len() + QUEUE_OVERHEAD, Ordering::AcqRel);
                        if let Err(closed) = self.write(frame).await {
                            return closed;
                        }
                    }
                    Command::Close(reason) => {
                        if reason == CloseReason::SendQueueFull {
                            self.refusal = Some(format!(
                                "more than {} bytes queued",
                                self.shared.limits.max_queued_bytes
                            ));
                        }
                        return Closed::ByUs(reason);
                    }
                },
                Woken::Frame(incoming) => {
                    match incoming {
                        None => return Closed::SocketClosed,
                        Some(Err(e)) => return self.frame_error(e),
                        Some(Ok(frame)) => {
                            // The decoder's clock reading, not a second one.
                            let read_at = self.framed.codec().codec.read_at();
                            self.deadlines
                                .on_frame(&self.shared.timeouts, read_at.into_std());
                            let closed = self.on_frame(frame).await;
                            shrink_read_buffer(self.framed.read_buffer_mut());
                            if let Some(closed) = closed {
                                return closed;
                            }
                        }
                    }
                }
                Woken::Timer => {
                    let now = Instant::now().into_std();
                    let started = self.frame_started();
                    let timeouts = &self.shared.timeouts;
                    if let Some(expired) = self.deadlines.handle_timeout(timeouts, now, started) {
                        self.refusal = Some(expired.to_string());
                        return Closed::ByUs(CloseReason::Timeout);
                    }
                    let next = self.deadlines.poll_timeout(timeouts, started);
                    self.inbox.reset(Instant::from_std(next));
                }
            }
        }
    }

    /// When the partial frame now buffered started arriving, on the standard clock.
    fn frame_started(&self) -> Option<std::time::Instant> {
        self.framed
            .codec()
            .codec
            .frame_started()
            .map(Instant::into_std)
    }

    /// What wakes the loop of [`Conn::run`], in this order: a command, a frame (or the
    /// stream's end), the timer.
    fn next_wake(&mut self) -> impl std::future::Future<Output = Woken> + '_ {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(command) = self.inbox.poll_recv(cx) {
                return Poll::Ready(Woken::Command(command));
            }
            if let Poll::Ready(incoming) = self.framed.poll_next_unpin(cx) {
                return Poll::Ready(Woken::Frame(incoming));
            }
            if let Poll::Ready(()) = self.inbox.poll_timer(cx) {
                return Poll::Ready(Woken::Timer);
            }
            Poll::Pending
        })
    }

    /// At shutdown: handles the frames already read from the socket and waiting in the
    /// read buffer, so that every ping the server read before the shutdown gets its pong
    /// before the closeconn. Nothing more is read from the socket.
    async fn answer_buffered(&mut self) -> Option<Closed> {
        let mut buffered = std::mem::take(self.framed.read_buffer_mut());
        loop {
            match self.framed.codec_mut().decode(&mut buffered) {
                Ok(Some(frame)) => {
                    if let Some(closed) = self.on_frame(frame).await {
                        return Some(closed);
                    }
                }
                // A partial frame, or none: the rest was not read before the shutdown.
                Ok(None) => return None,
                Err(e) => return Some(self.frame_error(e)),
            }
        }
    }

    fn frame_error(&mut self, e: FrameError) -> Closed {
        if matches!(e, FrameError::BudgetExhausted { .. }) {
            self.shared
                .stats
                .budget_refused
                .fetch_add(1, Ordering::Relaxed);
        }
        match e.close_reason() {
            Some(reason) => {
                self.refusal = Some(match e {
                    FrameError::TooLarge { length, .. }
                        if crate::sniff::length_is_tls_record(length) =>
                    {
                        "the client speaks TLS (it sent a TLS ClientHello), but this server \
                         does not use TLS"
                            .to_owned()
                    }
                    e => e.to_string(),
                });
                Closed::ByUs(reason)
            }
            None => Closed::SocketClosed,
        }
    }

    /// Handles one frame and writes out what it made us send.
    async fn on_frame(&mut self, frame: Frame) -> Option<Closed> {
        match self.handle_frame(frame) {
            Ok(true) => self.flush().await.err(),
            Ok(false) => None,
            Err(closed) => Some(closed),
        }
    }

    /// Handles one frame, without waiting: what it makes us send (a handshake, a pong) is
    /// put in the write buffer; returns whether something was. Apart from `on_frame`'s
    /// `await` so that nothing of a frame's handling (the ping, its request, the
    /// timestamps) is kept in the connection's future while the pong is written.
    fn handle_frame(&mut self, frame: Frame) -> Result<bool, Closed> {
        let frame_id = frame.id;
        let step = self.protocol.handle(frame);
        let mut buffered = false;
        if let Some(out) = step.send {
            self.buffer(out)?;
            buffered = true;
        }
        let Some(event) = step.event else {
            return Ok(buffered);
        };
        match event {
            Event::Established(conntype) => {
                let read_at = self.framed.codec().codec.read_at().into_std();
                if conntype != ConnType::Ping {
                    self.deadlines.settle(&self.shared.timeouts, read_at);
                    self.framed.codec_mut().codec.set_phase(Phase::Established);
                } else {
                    self.deadlines.on_ping_connection();
                    self.framed.codec_mut().codec.set_phase(Phase::Ping);
                }
                if let Some(observer) = &self.shared.observer {
                    observer.established(&conntype);
                }
                // Kept for the observer's close and for the idle timeout of the type.
                self.conntype = Some(conntype);
                let (handler, handle, state) = (&self.handler, &self.handle, &mut self.state);
                guarded(handle.addr, "on_established", || {
                    handler.on_established(handle, state)
                })?;
            }
            Event::Packet(packet) => {
                let (handler, handle, state) = (&self.handler, &self.handle, &mut self.state);
                guarded(handle.addr, "on_packet", || {
                    handler.on_packet(handle, state, packet)
                })?;
            }
            Event::Ping(message) => {
                if !self.deadlines.is_settled() {
                    let read_at = self.framed.codec().codec.read_at().into_std();
                    self.deadlines.settle(&self.shared.timeouts, read_at);
                }
                let Some(responder) = self.shared.ping.as_ref() else {
                    return Ok(buffered);
                };
                let (handle, stats) = (&self.handle, &self.shared.stats);
                let request = PingRequest::new(&message, handle.id, handle.addr, stats);
                stats.pings.fetch_add(1, Ordering::Relaxed);
                let max_echo = self.shared.limits.max_echo_bytes;
                // Two clock readings per ping, one per frame: the decoder's when the ping
                // was read, and this one for the pong (both put on the wall clock without
                // reading it, see `wall_clock`).
                let read_at = self.framed.codec().codec.read_at();
                let sent_at = Instant::now();
                let (received, sent) = wall_times(read_at, sent_at);
                let timing = ServerTiming { received, sent };
                // The pong is written into a buffer this thread keeps, then framed and sent
                // (see `send_pong`): no allocation per ping.
                let (encoder, framed) = (&self.shared.encoder, &mut self.framed);
                let pong = guarded(handle.addr, "the ping data provider", || {
                    with_pong_buffer(|pong| {
                        responder.encode_pong_into(&request, max_echo, timing, pong);
                        send_pong(framed, encoder, pong)
                    })
                });
                let written = match pong {
                    Ok(Ok(Sent {
                        length,
                        buffered: pending,
                    })) => {
                        buffered |= pending;
                        length
                    }
                    Ok(Err(e)) => return Err(self.cannot_send(e)),
                    Err(closed) => return Err(closed),
                };
                if let Some(observer) = &self.shared.observer {
                    observer.bytes_written(written as u64);
                    observer.ping_answered(Instant::now().saturating_duration_since(read_at));
                }
            }
            Event::Pong(_) => {}
            Event::Close(reason) => {
                self.refusal = Some(format!("protocol violation in packet id {frame_id}"));
                return Err(Closed::ByUs(reason));
            }
            Event::PeerClosed(reason) => return Err(Closed::ByPeer(reason)),
        }
        Ok(buffered)
    }

    /// Writes and flushes one frame (see [`flush`](Self::flush)).
    async fn write(&mut self, frame: Frame) -> Result<(), Closed> {
        self.buffer(frame)?;
        self.flush().await
    }

    /// Puts one frame in the write buffer.
    fn buffer(&mut self, frame: Frame) -> Result<(), Closed> {
        let dst = self.framed.write_buffer_mut();
        let before = dst.len();
        if let Err(e) = self.shared.encoder.encode_body(frame.id, &frame.body, dst) {
            return Err(self.cannot_send(e));
        }
        if let Some(observer) = &self.shared.observer {
            observer.bytes_written((self.framed.write_buffer().len() - before) as u64);
        }
        Ok(())
    }

    /// A frame that cannot be encoded (larger than the protocol's 4 GiB): logged, and
    /// the connection dropped.
    fn cannot_send(&self, e: FrameError) -> Closed {
        tracing::error!(peer = %self.handle.addr, client = %self.handle.id, "cannot send: {e}");
        Closed::SocketClosed
    }

    /// Writes out the write buffer, bounded by the write timeout: a peer that does not
    /// read cannot hold the task (or our memory) forever. It is closed with reason
    /// `timeout`, without a closeconn (it would not read that either).
    ///
    /// The deadline is set only when the socket does not take the bytes at once: the
    /// usual write completes on its first poll, and a timer per write (a clock read, a
    /// timer entry built and dropped) was a tenth of a ping's cost (BENCHMARKS.md). It
    /// moves the connection's one timer, which the loop in [`Conn::run`] moves back.
    async fn flush(&mut self) -> Result<(), Closed> {
        let mut flush = SinkExt::<Frame>::flush(&mut self.framed);
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(Pin::new(&mut flush), cx))
        })
        .await;
        let result = match first {
            std::task::Poll::Ready(done) => Ok(done),
            std::task::Poll::Pending => {
                let now = Instant::now().into_std();
                let until = self.deadlines.write_blocked(&self.shared.timeouts, now);
                self.inbox.reset(Instant::from_std(until));
                tokio::select! {
                    biased;
                    done = &mut flush => Ok(done),
                    _ = self.inbox.timer() => Err(()),
                }
            }
        };
        self.deadlines.write_done();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(FrameError::Io(_))) => Err(Closed::SocketClosed),
            Ok(Err(e)) => Err(self.cannot_send(e)),
            Err(_) => {
                self.unwritable = true;
                let expired = Expired::Write(self.shared.timeouts.write);
                self.refusal = Some(expired.to_string());
                Err(Closed::ByUs(CloseReason::Timeout))
            }
        }
    }

    /// Flushes what is queued, sends closeconn, half-closes, and lingers for the peer's
    /// end of stream so that our last bytes are not destroyed by a reset.
    ///
    /// Bounded: the flush and the closeconn together get one write timeout, the linger
    /// `close_linger`, whatever the peer does.
    async fn close_gracefully(&mut self, reason: &CloseReason) {
        self.protocol.close();
        let queued = self.inbox.close();
        if self.unwritable {
            return;
        }
        let framed = &mut self.framed;
        let flushed = timeout(self.shared.limits.write_timeout, async {
            for command in queued {
                if let Command::Send(frame) = command {
                    framed.feed(frame).await?;
                }
            }
            framed.feed(closeconn_frame(Some(reason))).await?;
            framed.flush().await
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.handle.addr, client = %self.handle.id, "closing: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.handle.addr, client = %self.handle.id, "closing: flush timed out");
                return;
            }
        }
        let linger = self.shared.limits.close_linger;
        let stream = self.framed.get_mut();
        let _ = timeout(linger, async {
            stream.shutdown().await?;
            // On the heap: an array here would make every connection's task 4 KiB larger
            // for its whole life (resident memory per idle connection, and a 4 KiB copy at
            // every spawn), though only closing connections use it.
            let mut sink = vec![0u8; 4096];
            // Bounded in bytes too: a refused flooder's stray body is not worth reading
            // (2,000 of them sending 1 MB each cost a second of CPU).
            let mut left = LINGER_MAX_BYTES;
            while left > 0 {
                let n = stream.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n);
            }
            Ok::<(), io::Error>(())
        })
        .await;
    }
}
