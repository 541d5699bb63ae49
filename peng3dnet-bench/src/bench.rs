//! `bench`: a load generator for peng3dnet servers (ours, the Python reference, the floor).
//!
//! It is written straight on tokio sockets with pre-encoded frames, so that it costs less
//! per round trip than any server it measures: the packets it sends are encoded once at
//! start (only the 8 bytes of the ping's `time` are patched per ping), it reads frames
//! into one reusable buffer per connection and looks at their ids only (a body is decoded
//! only for the classic handshake's registry and for a closeconn's reason), and its
//! latencies go to a fixed log-linear histogram (no allocation per operation). Each load
//! thread runs a current-thread runtime with its share of the connections (`--threads`).
//!
//! Modes (each connection runs its own closed loop: one request outstanding at a time):
//! - `transaction`: complete ping transactions, each on a new connection: connect, hello,
//!   settype `ping` + ping, pong, closeconn `pingcomplete`, then (by default) wait for the
//!   server to close its side, so the TIME_WAIT state stays on the server's side and the
//!   client's ephemeral ports are not used up (`--close now` closes at once instead).
//!   The latency is the whole transaction, connect to close.
//! - `session`: one ping connection per client, many pings over it; latency ping to pong.
//! - `classic`: classic handshake once per connection (the registry must hold `--packet`),
//!   then application packets of that name, each answered by the server's echo.
//! - `idle`: establish `-c` ping connections (settype, one ping, pong), print
//!   `ESTABLISHED n FAILED m` on stderr once all are set up, then hold them idle until the
//!   duration ends (to measure a server's memory per connection).

use peng3dnet::tls::ClientTls;
use peng3dnet::transport::Stream;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncRead;

use clap::{Args, ValueEnum};
use peng3dnet::frame::{Frame, FrameCodec, FrameHeader, HEADER_BYTES, LENGTH_BYTES, PREFIX_BYTES};
use peng3dnet::pong::unix_seconds;
use peng3dnet::protocol::{closeconn_frame, ids, settype_frame, CloseReason, ConnType};
use peng3dnet::value::{self, get, map, Value};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use peng3dnet_cli::output::{Out, SCHEMA_VERSION};
use peng3dnet_cli::{error, parse_seconds, Exit};

const BENCH_AFTER: &str = "\
Examples:
  peng3dnet-bench load 127.0.0.1:8080                          transactions, 1 connection, 5 s
  peng3dnet-bench load -c 16 --mode session -d 10 127.0.0.1:8080
  peng3dnet-bench load -c 256 -n 100000 --json 127.0.0.1:8080
  peng3dnet-bench load -c 4 --mode classic --packet interop:msg 127.0.0.1:8080
  peng3dnet-bench load -c 10000 --mode idle -d 30 127.0.0.1:8080

Modes: transaction = connect, hello, settype+ping, pong, closeconn, close, on a new
connection each time (latency: the whole transaction); session = many pings over each
connection (latency: ping to pong); classic = classic handshake once, then application
packets (--packet) echoed by the server; idle = establish the connections (one ping
each), print `ESTABLISHED n FAILED m` on stderr, hold them idle until the end.
Only operations that start after the warm-up and end before the deadline are counted;
errors are counted over the whole run, warm-up included. Exit status 0 when no error
occurred, 1 otherwise.";

/// `bench` arguments.
#[derive(Debug, Args)]
#[command(after_help = BENCH_AFTER)]
pub struct BenchArgs {
    /// Server: host:port.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Concurrent connections, each running its own closed loop.
    #[arg(short = 'c', long = "connections", default_value = "1", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// What each connection does.
    #[arg(long, value_enum, default_value = "transaction")]
    pub mode: Mode,
    /// Measure for SECONDS (after the warm-up); default 5 unless --count is given.
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = parse_seconds, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// Stop after COUNT operations in all (transactions, pings or packets).
    #[arg(short = 'n', long = "count", value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Seconds of load before measuring starts (with --duration only).
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = parse_warmup)]
    pub warmup: Duration,
    /// Load threads, each a current-thread runtime with its share of the connections.
    #[arg(short = 't', long = "threads", default_value = "1", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// Time allowed for each operation (and for each connection's set-up).
    #[arg(short = 'W', long = "timeout", value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// Transaction mode: `wait` for the server to close after our closeconn, or close
    /// `now` (TIME_WAIT then piles up on the client's ephemeral ports).
    #[arg(long, value_enum, default_value = "wait")]
    pub close: CloseMode,
    /// Classic mode: the registered packet name to send (the server must echo it).
    #[arg(long, value_name = "NAME", default_value = "interop:msg")]
    pub packet: String,
    /// Most connections being set up at once (idle, session and classic modes).
    #[arg(long, value_name = "N", default_value = "256", value_parser = clap::value_parser!(u64).range(1..))]
    pub ramp: u64,
    /// Also report the CPU time of this process id (the server's, on this machine) over
    /// the measured window, per operation.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// One JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Connect with TLS, without verifying the server's certificate (benchmarking a
    /// server with a self-signed certificate).
    #[arg(long)]
    pub tls_insecure: bool,
}

fn parse_warmup(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        Ok(Duration::ZERO)
    } else {
        parse_seconds(s)
    }
}

/// What each connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A new connection per ping: connect, hello, settype, ping, pong, closeconn.
    Transaction,
    /// Many pings per connection.
    Session,
    /// Classic handshake once, then echoed application packets.
    Classic,
    /// Established ping connections held idle.
    Idle,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Transaction => "transaction",
            Mode::Session => "session",
            Mode::Classic => "classic",
            Mode::Idle => "idle",
        }
    }
}

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloseMode {
    /// Send closeconn, then wait for the server's end of stream.
    Wait,
    /// Send closeconn and close at once.
    Now,
}

// ---------------------------------------------------------------------------------------
// Latency histogram

/// Values below this are counted exactly (nanoseconds).
const LINEAR: u64 = 256;
/// Sub-buckets per power of two above [`LINEAR`] (relative error below 0.8 %).
const SUB_BITS: u32 = 7;
const BUCKETS: usize = LINEAR as usize + (64 - 8) * (1 << SUB_BITS);

/// A log-linear histogram of nanoseconds with a fixed size: recording never allocates.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            v as usize
        } else {
            let e = 63 - v.leading_zeros(); // >= 8
            let m = (v >> (e - SUB_BITS)) as usize; // in [128, 256)
            LINEAR as usize + (e as usize - 8) * (1 << SUB_BITS) + (m - (1 << SUB_BITS))
        }
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < LINEAR as usize {
            i as u64
        } else {
            let k = i - LINEAR as usize;
            let e = (k >> SUB_BITS) as u32 + 8;
            let m = (k & ((1 << SUB_BITS) - 1)) as u64 + (1 << SUB_BITS);
            let width = 1u64 << (e - SUB_BITS);
            (m << (e - SUB_BITS)) + width / 2
        }
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let v = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Nearest-rank percentile `p` (0 to 100) in nanoseconds; the maximum is exact.
    pub(crate) fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

// ---------------------------------------------------------------------------------------
// Wire: everything we send, encoded once

/// Pre-encoded frames.
struct Wire {
    /// settype `ping` immediately followed by a ping, as one write.
    settype_and_ping: Vec<u8>,
    /// Offset of the ping's `time` float (8 bytes, big-endian) in `settype_and_ping`.
    settype_and_ping_time: usize,
    /// settype `ping` alone.
    settype_ping: Vec<u8>,
    /// A ping alone.
    ping: Vec<u8>,
    /// Offset of the `time` float in `ping`.
    ping_time: usize,
    /// settype `classic`.
    settype_classic: Vec<u8>,
    /// handshake.accept `{"success": true}`.
    accept: Vec<u8>,
    /// closeconn `pingcomplete`.
    closeconn: Vec<u8>,
    /// Body of the classic application packet.
    app_body: bytes::Bytes,
}

/// A value whose float64 encoding does not occur elsewhere in our frames.
const TIME_SENTINEL: f64 = 1234567.890625;

fn encode_frame(frame: Frame) -> Vec<u8> {
    FrameCodec::default()
        .to_bytes(frame)
        .expect("small frames encode")
        .to_vec()
}

fn time_offset(wire: &[u8]) -> usize {
    let needle = TIME_SENTINEL.to_be_bytes();
    wire.windows(8)
        .position(|w| w == needle)
        .expect("the sentinel is in the ping")
}

impl Wire {
    fn new() -> Wire {
        let ping_body = value::encode(&map([
            ("time", Value::F64(TIME_SENTINEL)),
            ("x", Value::from(1)),
        ]));
        let ping = encode_frame(Frame::new(ids::PING, ping_body));
        let settype_ping = encode_frame(settype_frame(&ConnType::Ping));
        let mut settype_and_ping = settype_ping.clone();
        settype_and_ping.extend_from_slice(&ping);
        Wire {
            settype_and_ping_time: time_offset(&settype_and_ping),
            settype_and_ping,
            settype_ping,
            ping_time: time_offset(&ping),
            ping,
            settype_classic: encode_frame(settype_frame(&ConnType::Classic)),
            accept: encode_frame(Frame::new(
                ids::HANDSHAKE_ACCEPT,
                value::encode(&map([("success", Value::Boolean(true))])),
            )),
            closeconn: encode_frame(closeconn_frame(Some(&CloseReason::PingComplete))),
            app_body: value::encode(&map([("n", Value::from(1)), ("s", "hello".into())])),
        }
    }
}

fn patch_time(buf: &mut [u8], at: usize) {
    let now = unix_seconds(SystemTime::now());
    buf[at..at + 8].copy_from_slice(&now.to_be_bytes());
}

// ---------------------------------------------------------------------------------------
// Reading frames

/// Largest frame the load generator accepts (the servers measured send small ones).
const MAX_FRAME: usize = 16 << 20;
/// Initial read buffer of a connection.
const READ_BUF: usize = 4096;

/// A reusable read buffer that splits the stream into frames without copying them.
pub(crate) struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

/// Why reading a frame failed.
pub(crate) enum ReadError {
    /// End of stream (`true` if it cut a frame).
    Eof,
    /// A length prefix that is impossible.
    Invalid(usize),
    /// The socket failed.
    Io(io::Error),
}

impl ReadBuf {
    pub(crate) fn new(capacity: usize) -> Self {
        ReadBuf {
            data: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// Forgets buffered bytes (for a new connection).
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// A complete frame already buffered: (id, flags, whole frame range, body range).
    pub(crate) fn next_buffered(&mut self) -> Result<Option<BufferedFrame>, ReadError> {
        let buffered = &self.data[self.start..self.end];
        let Some(length) = FrameHeader::peek_length(buffered) else {
            return Ok(None);
        };
        if !(HEADER_BYTES..=MAX_FRAME).contains(&length) {
            return Err(ReadError::Invalid(length));
        }
        let total = LENGTH_BYTES + length;
        let Some(header) = FrameHeader::parse(buffered).filter(|_| buffered.len() >= total) else {
            if self.data.len() - self.start < total {
                // Make room: move the partial frame to the front, grow if it is larger
                // than the buffer.
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.data.len() < total {
                    self.data.resize(total, 0);
                }
            }
            return Ok(None);
        };
        let s = self.start;
        self.start += total;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(BufferedFrame {
            id: header.id,
            flags: header.flags,
            frame: s..s + total,
            body: s + PREFIX_BYTES..s + total,
        }))
    }

    /// Reads from `stream` until one more chunk arrived; `Ok(false)` at end of stream.
    pub(crate) async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> io::Result<bool> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.data.len();
                self.data.resize(len * 2, 0);
            }
        }
        let n = stream.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// The next frame, reading as needed.
    pub(crate) async fn frame<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<BufferedFrame, ReadError> {
        loop {
            if let Some(f) = self.next_buffered()? {
                return Ok(f);
            }
            match self.fill(stream).await {
                Ok(true) => {}
                Ok(false) => return Err(ReadError::Eof),
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Bytes of a range returned with a frame (valid until the next read).
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.data[range]
    }
}

/// Where a buffered frame lies in a [`ReadBuf`].
pub(crate) struct BufferedFrame {
    pub(crate) id: u32,
    pub(crate) flags: u16,
    pub(crate) frame: Range<usize>,
    pub(crate) body: Range<usize>,
}

// ---------------------------------------------------------------------------------------
// Failures

/// Where a connection was when something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Hello,
    Handshake,
    Reply,
    Close,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Hello => "hello",
            Phase::Handshake => "handshake",
            Phase::Reply => "reply",
            Phase::Close => "close",
        }
    }
}

/// Why an operation failed.
#[derive(Debug)]
enum Fail {
    Connect(io::Error),
    Timeout(Phase),
    Closed(Option<String>),
    Eof(Phase),
    Io(io::Error),
    Protocol(String),
}

impl Fail {
    /// The error kind as reported: `refused`, `connect_<kind>`, `timeout_<phase>`,
    /// `closed_<reason>`, `eof_<phase>`, `reset`, `io_<kind>`, `protocol`.
    fn kind(&self) -> String {
        match self {
            Fail::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused => "refused".into(),
            Fail::Connect(e) => format!("connect_{:?}", e.kind()).to_lowercase(),
            Fail::Timeout(p) => format!("timeout_{}", p.name()),
            Fail::Closed(r) => format!("closed_{}", r.as_deref().unwrap_or("noreason")),
            Fail::Eof(p) => format!("eof_{}", p.name()),
            Fail::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                "reset".into()
            }
            Fail::Io(e) => format!("io_{:?}", e.kind()).to_lowercase(),
            Fail::Protocol(_) => "protocol".into(),
        }
    }

    fn message(&self) -> String {
        match self {
            Fail::Connect(e) => format!("connect: {e}"),
            Fail::Timeout(p) => format!("timed out in phase {}", p.name()),
            Fail::Closed(r) => format!("server closed: {}", r.as_deref().unwrap_or("no reason")),
            Fail::Eof(p) => format!("end of stream in phase {}", p.name()),
            Fail::Io(e) => format!("socket: {e}"),
            Fail::Protocol(m) => m.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Statistics

/// One thread's tallies (merged at the end).
struct Tally {
    hist: Histogram,
    pub(crate) errors: BTreeMap<String, u64>,
    samples: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            hist: Histogram::new(),
            errors: BTreeMap::new(),
            samples: Vec::new(),
        }
    }

    fn error(&mut self, fail: &Fail) {
        *self.errors.entry(fail.kind()).or_default() += 1;
        if self.samples.len() < 5 {
            self.samples.push(fail.message());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.hist.merge(&other.hist);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for s in other.samples {
            if self.samples.len() < 5 {
                self.samples.push(s);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The plan every load thread follows

struct Plan {
    addr: SocketAddr,
    /// TLS (without verification), if asked for.
    tls: Option<ClientTls>,
    mode: Mode,
    connections: u64,
    timeout: Duration,
    close_wait: bool,
    packet: String,
    wire: Wire,
    /// Operations starting before this are not measured (the warm-up).
    measure_from: Instant,
    /// End of the measured window (duration mode).
    end: Option<Instant>,
    /// Operations left (count mode).
    remaining: Option<AtomicU64>,
    /// Set when a count-mode run is complete.
    done: AtomicBool,
    /// Connections being set up at once.
    ramp: Semaphore,
    /// Idle mode: connections established, and failed.
    established: AtomicUsize,
    failed: AtomicUsize,
}

impl Plan {
    /// Takes one operation, or says the run is over.
    fn claim(&self, now: Instant) -> bool {
        if let Some(end) = self.end {
            return now < end;
        }
        match &self.remaining {
            Some(left) => {
                let ok = left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok();
                if !ok {
                    self.done.store(true, Ordering::Relaxed);
                }
                ok
            }
            None => false,
        }
    }

    fn running(&self) -> bool {
        match self.end {
            Some(end) => Instant::now() < end,
            None => !self.done.load(Ordering::Relaxed),
        }
    }

    /// Records a successful operation if it lies in the measured window.
    fn record(&self, tally: &RefCell<Tally>, started: Instant, finished: Instant) {
        if started < self.measure_from {
            return;
        }
        if self.end.is_some_and(|end| finished > end) {
            return;
        }
        tally.borrow_mut().hist.record(finished - started);
    }

    /// Records a failure, unless it happened after the end of a timed run.
    fn fail(&self, tally: &RefCell<Tally>, fail: &Fail) {
        if self.end.is_some_and(|end| Instant::now() > end) {
            return;
        }
        tally.borrow_mut().error(fail);
    }
}

/// One connection of the load generator.
struct Conn<'a> {
    stream: Stream,
    buf: &'a mut ReadBuf,
}

impl<'a> Conn<'a> {
    async fn open(plan: &Plan, buf: &'a mut ReadBuf, phase: &Cell<Phase>) -> Result<Self, Fail> {
        phase.set(Phase::Connect);
        let tcp = TcpStream::connect(plan.addr).await.map_err(Fail::Connect)?;
        let _ = tcp.set_nodelay(true);
        let stream = match &plan.tls {
            None => Stream::Plain(tcp),
            Some(tls) => tls
                .connect(&plan.addr.ip().to_string(), tcp)
                .await
                .map_err(|e| Fail::Protocol(format!("TLS: {e}")))?,
        };
        buf.clear();
        let mut conn = Conn { stream, buf };
        phase.set(Phase::Hello);
        conn.expect(ids::HELLO, phase.get()).await?;
        Ok(conn)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        self.stream.write_all(bytes).await.map_err(Fail::Io)
    }

    /// The next frame, which must have id `want` (or any application id, for
    /// `want` = `u32::MAX`); returns its body's range.
    async fn expect(&mut self, want: u32, phase: Phase) -> Result<Range<usize>, Fail> {
        let f = self
            .buf
            .frame(&mut self.stream)
            .await
            .map_err(|e| match e {
                ReadError::Eof => Fail::Eof(phase),
                ReadError::Invalid(len) => Fail::Protocol(format!("invalid frame length {len}")),
                ReadError::Io(e) => Fail::Io(e),
            })?;
        if f.id == want || (want == u32::MAX && f.id >= 64) {
            return Ok(f.body);
        }
        if f.id == ids::CLOSECONN {
            let reason = decode_body(self.buf.bytes(f.body), f.flags)
                .ok()
                .and_then(|v| get(&v, "reason").and_then(Value::as_str).map(str::to_owned));
            return Err(Fail::Closed(reason));
        }
        Err(Fail::Protocol(format!(
            "got packet id {} in phase {}",
            f.id,
            phase.name()
        )))
    }

    /// Sends closeconn; with `wait`, reads until the server closes.
    async fn finish(mut self, plan: &Plan, phase: &Cell<Phase>) -> Result<(), Fail> {
        self.send(&plan.wire.closeconn).await?;
        if plan.close_wait {
            phase.set(Phase::Close);
            loop {
                match self.buf.fill(&mut self.stream).await {
                    Ok(true) => self.buf.clear(),
                    Ok(false) => return Ok(()),
                    Err(e) => return Err(Fail::Io(e)),
                }
            }
        }
        Ok(())
    }
}

fn decode_body(body: &[u8], flags: u16) -> Result<Value, String> {
    if flags != 0 {
        return Err("compressed or encrypted body".into());
    }
    value::decode(body, 64).map_err(|e| e.to_string())
}

/// One complete ping transaction on a new connection.
async fn transaction(
    plan: &Plan,
    buf: &mut ReadBuf,
    out: &mut [u8],
    phase: &Cell<Phase>,
) -> Result<(), Fail> {
    let mut conn = Conn::open(plan, buf, phase).await?;
    patch_time(out, plan.wire.settype_and_ping_time);
    conn.send(out).await?;
    phase.set(Phase::Reply);
    conn.expect(ids::PONG, Phase::Reply).await?;
    conn.finish(plan, phase).await
}

/// Opens a connection ready for repeated operations: for ping modes, type set; for
/// classic, handshake accepted. Returns the frame to send per operation.
async fn establish<'a>(
    plan: &Plan,
    buf: &'a mut ReadBuf,
    phase: &Cell<Phase>,
) -> Result<(Conn<'a>, Vec<u8>, usize), Fail> {
    let mut conn = Conn::open(plan, buf, phase).await?;
    if plan.mode == Mode::Classic {
        conn.send(&plan.wire.settype_classic).await?;
        phase.set(Phase::Handshake);
        let body = conn.expect(ids::HANDSHAKE, Phase::Handshake).await?;
        let handshake = decode_body(conn.buf.bytes(body), 0).map_err(Fail::Protocol)?;
        let id = get(&handshake, "registry")
            .and_then(|r| get(r, &plan.packet))
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                Fail::Protocol(format!(
                    "the server's registry has no packet {:?}",
                    plan.packet
                ))
            })?;
        conn.send(&plan.wire.accept).await?;
        let frame = encode_frame(Frame::new(id, plan.wire.app_body.clone()));
        Ok((conn, frame, usize::MAX))
    } else {
        conn.send(&plan.wire.settype_ping).await?;
        Ok((conn, plan.wire.ping.clone(), plan.wire.ping_time))
    }
}

async fn run_transactions(plan: &Plan, tally: &RefCell<Tally>, current: &Current) {
    let mut buf = ReadBuf::new(READ_BUF);
    let mut out = plan.wire.settype_and_ping.clone();
    let phase = &current.phase;
    loop {
        let started = Instant::now();
        if !plan.claim(started) {
            return;
        }
        current.started.set(Some(started));
        match timeout(plan.timeout, transaction(plan, &mut buf, &mut out, phase)).await {
            Ok(Ok(())) => plan.record(tally, started, Instant::now()),
            Ok(Err(fail)) => {
                plan.fail(tally, &fail);
                backoff(&fail).await;
            }
            Err(_) => plan.fail(tally, &Fail::Timeout(phase.get())),
        }
    }
}

/// After a refused connection, waits a little instead of spinning.
async fn backoff(fail: &Fail) {
    if matches!(fail, Fail::Connect(_)) {
        sleep(Duration::from_millis(10)).await;
    }
}

/// Session and classic modes: operations over one connection, reconnecting after errors.
async fn run_sessions(plan: &Plan, tally: &RefCell<Tally>, current: &Current) {
    let mut buf = ReadBuf::new(READ_BUF);
    let phase = &current.phase;
    let want = if plan.mode == Mode::Classic {
        u32::MAX
    } else {
        ids::PONG
    };
    while plan.running() {
        current.started.set(None);
        let permit = plan.ramp.acquire().await;
        current.started.set(Some(Instant::now()));
        let set_up = timeout(plan.timeout, establish(plan, &mut buf, phase)).await;
        drop(permit);
        let (mut conn, mut out, time_at) = match set_up {
            Ok(Ok(ok)) => ok,
            Ok(Err(fail)) => {
                plan.fail(tally, &fail);
                backoff(&fail).await;
                sleep(Duration::from_millis(1)).await;
                continue;
            }
            Err(_) => {
                plan.fail(tally, &Fail::Timeout(phase.get()));
                continue;
            }
        };
        loop {
            let started = Instant::now();
            if !plan.claim(started) {
                current.started.set(None);
                let _ = timeout(plan.timeout, conn.finish(plan, phase)).await;
                return;
            }
            current.started.set(Some(started));
            if time_at != usize::MAX {
                patch_time(&mut out, time_at);
            }
            phase.set(Phase::Reply);
            let op = async {
                conn.send(&out).await?;
                conn.expect(want, Phase::Reply).await
            };
            match timeout(plan.timeout, op).await {
                Ok(Ok(_)) => plan.record(tally, started, Instant::now()),
                Ok(Err(fail)) => {
                    plan.fail(tally, &fail);
                    break;
                }
                Err(_) => {
                    plan.fail(tally, &Fail::Timeout(Phase::Reply));
                    break;
                }
            }
        }
    }
}

/// Idle mode: establish, ping once, report, hold until the end.
async fn run_idle(plan: &Plan, tally: &RefCell<Tally>) {
    let mut buf = ReadBuf::new(256);
    let phase = Cell::new(Phase::Connect);
    let permit = plan.ramp.acquire().await;
    let started = Instant::now();
    let set_up = timeout(plan.timeout, async {
        let (mut conn, mut out, at) = establish(plan, &mut buf, &phase).await?;
        patch_time(&mut out, at);
        conn.send(&out).await?;
        phase.set(Phase::Reply);
        conn.expect(ids::PONG, Phase::Reply).await?;
        Ok::<_, Fail>(conn.stream)
    })
    .await;
    drop(permit);
    let stream = match set_up {
        Ok(Ok(stream)) => {
            plan.record(tally, started, Instant::now());
            plan.established.fetch_add(1, Ordering::Relaxed);
            Some(stream)
        }
        Ok(Err(fail)) => {
            plan.fail(tally, &fail);
            plan.failed.fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(_) => {
            plan.fail(tally, &Fail::Timeout(phase.get()));
            plan.failed.fetch_add(1, Ordering::Relaxed);
            None
        }
    };
    let established = plan.established.load(Ordering::Relaxed);
    let failed = plan.failed.load(Ordering::Relaxed);
    if (established + failed) as u64 == plan.connections {
        eprintln!("ESTABLISHED {established} FAILED {failed}");
    }
    if let (Some(mut stream), Some(end)) = (stream, plan.end) {
        // Hold the connection; it ends when the run does (or the server closes it).
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout_at(end, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        let _ = stream.write_all(&plan.wire.closeconn).await;
    }
}

/// An operation still waiting this long when a timed run ends is counted as an error
/// (`stalled_<phase>`): on loopback, nothing sane takes that long.
const STALLED: Duration = Duration::from_secs(1);

async fn connection_task(plan: Arc<Plan>, tally: Rc<RefCell<Tally>>) {
    let current = Current {
        started: Cell::new(None),
        phase: Cell::new(Phase::Connect),
    };
    let work = async {
        match plan.mode {
            Mode::Transaction => run_transactions(&plan, &tally, &current).await,
            Mode::Session | Mode::Classic => run_sessions(&plan, &tally, &current).await,
            Mode::Idle => run_idle(&plan, &tally).await,
        }
    };
    match plan.end {
        // A timed run stops every connection at the deadline, whatever it is waiting for;
        // an operation stuck since long before the deadline is a failure all the same.
        Some(end) if plan.mode != Mode::Idle => {
            tokio::select! {
                _ = work => {}
                _ = sleep_until(end) => {
                    if let Some(started) = current.started.get() {
                        let waited = end.saturating_duration_since(started);
                        if waited >= STALLED.min(plan.timeout) {
                            *tally
                                .borrow_mut()
                                .errors
                                .entry(format!("stalled_{}", current.phase.get().name()))
                                .or_default() += 1;
                        }
                    }
                }
            }
        }
        _ => work.await,
    }
}

/// What a connection is doing, for the end of a timed run.
struct Current {
    /// When the operation in progress (or the connection's set-up) started.
    started: Cell<Option<Instant>>,
    /// Where it is.
    phase: Cell<Phase>,
}

/// One load thread: a current-thread runtime running `connections` connection tasks.
fn load_thread(plan: Arc<Plan>, connections: u64) -> io::Result<Tally> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let tally = Rc::new(RefCell::new(Tally::new()));
    local.block_on(&runtime, async {
        let mut tasks = Vec::with_capacity(connections as usize);
        for _ in 0..connections {
            tasks.push(tokio::task::spawn_local(connection_task(
                plan.clone(),
                tally.clone(),
            )));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    drop(local);
    let tally = Rc::try_unwrap(tally)
        .map(RefCell::into_inner)
        .unwrap_or_else(|shared| {
            let mut copy = Tally::new();
            copy.hist = shared.borrow().hist.clone();
            copy.errors = shared.borrow().errors.clone();
            copy
        });
    Ok(tally)
}

// ---------------------------------------------------------------------------------------
// CPU time

/// User plus system CPU time of a process so far, from `/proc/PID/stat` (Linux; `None`
/// elsewhere). Clock ticks are assumed to be 100 per second, as on every Linux port.
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// CPU time of us and of the server over the measured window.
#[derive(Default)]
struct CpuWindow {
    ours: Option<Duration>,
    server: Option<Duration>,
}

async fn measure_cpu(
    from: Instant,
    to: Option<Instant>,
    server: Option<u32>,
    done: tokio::sync::oneshot::Receiver<()>,
) -> CpuWindow {
    sleep_until(from).await;
    let (ours0, server0) = (cpu_time(None), server.and_then(|p| cpu_time(Some(p))));
    match to {
        Some(to) => sleep_until(to).await,
        None => {
            let _ = done.await;
        }
    }
    let (ours1, server1) = (cpu_time(None), server.and_then(|p| cpu_time(Some(p))));
    CpuWindow {
        ours: ours0.zip(ours1).map(|(a, b)| b.saturating_sub(a)),
        server: server0.zip(server1).map(|(a, b)| b.saturating_sub(a)),
    }
}

// ---------------------------------------------------------------------------------------
// Report

#[derive(Debug, Serialize)]
struct LatencyMs {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    schema_version: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    target: String,
    addr: String,
    mode: &'static str,
    connections: u64,
    threads: u64,
    warmup_s: f64,
    duration_s: f64,
    pub(crate) ops: u64,
    ops_per_s: f64,
    latency_ms: Option<LatencyMs>,
    pub(crate) errors_total: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    pub(crate) established: Option<usize>,
    /// CPU seconds this load generator used in the measured window.
    client_cpu_s: Option<f64>,
    /// ... per operation, in microseconds.
    client_cpu_us_per_op: Option<f64>,
    /// CPU seconds the server (`--server-pid`) used in the measured window.
    server_cpu_s: Option<f64>,
    /// ... per operation, in microseconds.
    server_cpu_us_per_op: Option<f64>,
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e3).round() / 1e3
}

fn text_report(r: &Report) -> String {
    let what = match r.mode {
        "transaction" => "transactions",
        "session" => "pings",
        "classic" => "packets",
        _ => "connections set up",
    };
    let mut s = format!(
        "bench {} ({}): mode {}, {} connection{}, {} thread{}, {:.2} s measured{}\n",
        r.target,
        r.addr,
        r.mode,
        r.connections,
        if r.connections == 1 { "" } else { "s" },
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.duration_s,
        if r.warmup_s > 0.0 {
            format!(" after {:.2} s warm-up", r.warmup_s)
        } else {
            String::new()
        },
    );
    s += &format!("  {what}: {} ({:.1}/s)\n", r.ops, r.ops_per_s);
    if let Some(l) = &r.latency_ms {
        s += &format!(
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}\n",
            l.p50, l.p90, l.p99, l.max, l.mean
        );
    }
    if let Some(n) = r.established {
        s += &format!("  established: {n}\n");
    }
    let cpu = |who: &str, total: Option<f64>, per_op: Option<f64>| match (total, per_op) {
        (Some(t), Some(p)) => format!("  {who} cpu: {t:.2} s ({p:.1} us per op)\n"),
        (Some(t), None) => format!("  {who} cpu: {t:.2} s\n"),
        _ => String::new(),
    };
    s += &cpu("client", r.client_cpu_s, r.client_cpu_us_per_op);
    s += &cpu("server", r.server_cpu_s, r.server_cpu_us_per_op);
    if r.errors.is_empty() {
        s += "  errors: none\n";
    } else {
        let list: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s += &format!("  errors: {} ({})\n", r.errors_total, list.join(", "));
        for sample in &r.error_samples {
            s += &format!("    e.g. {sample}\n");
        }
    }
    s
}

/// Runs the load and returns the report (errors are printed; `Err` has the exit status).
pub(crate) async fn execute(args: &BenchArgs) -> Result<Report, Exit> {
    let addr = match tokio::net::lookup_host(&args.target).await {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => a,
            None => {
                error(format!("{}: no address", args.target));
                return Err(Exit::Unresolved);
            }
        },
        Err(e) => {
            error(format!("cannot resolve {}: {e}", args.target));
            return Err(Exit::Unresolved);
        }
    };
    let duration = match (args.duration, args.count) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(5)),
    };
    let warmup = if duration.is_some() {
        args.warmup
    } else {
        Duration::ZERO
    };
    let start = Instant::now();
    let measure_from = start + warmup;
    let plan = Arc::new(Plan {
        addr,
        tls: args
            .tls_insecure
            .then(peng3dnet::tls::ClientTls::dangerous_no_verification),
        mode: args.mode,
        connections: args.connections,
        timeout: args.timeout,
        close_wait: args.close == CloseMode::Wait,
        packet: args.packet.clone(),
        wire: Wire::new(),
        measure_from,
        end: duration.map(|d| measure_from + d),
        remaining: if duration.is_none() {
            args.count.map(AtomicU64::new)
        } else {
            None
        },
        done: AtomicBool::new(false),
        ramp: Semaphore::new(usize::try_from(args.ramp).unwrap_or(usize::MAX)),
        established: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let (cpu_done, cpu_done_rx) = tokio::sync::oneshot::channel();
    let cpu = tokio::spawn(measure_cpu(
        measure_from,
        plan.end,
        args.server_pid,
        cpu_done_rx,
    ));
    let threads = args.threads.min(args.connections);
    let mut handles = Vec::new();
    for t in 0..threads {
        let share = args.connections / threads + u64::from(t < args.connections % threads);
        let plan = plan.clone();
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || load_thread(plan, share));
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                error(format!("cannot start a load thread: {e}"));
                return Err(Exit::System);
            }
        }
    }
    let joined = tokio::task::spawn_blocking(move || {
        let mut total = Tally::new();
        let mut failure = None;
        for h in handles {
            match h.join() {
                Ok(Ok(t)) => total.merge(t),
                Ok(Err(e)) => failure = Some(e.to_string()),
                Err(_) => failure = Some("a load thread panicked".into()),
            }
        }
        (total, failure)
    })
    .await;
    let (tally, failure) = match joined {
        Ok(x) => x,
        Err(e) => {
            error(format!("load threads failed: {e}"));
            return Err(Exit::System);
        }
    };
    if let Some(f) = failure {
        error(format!("load thread failed: {f}"));
        return Err(Exit::System);
    }
    let _ = cpu_done.send(());
    let cpu = cpu.await.unwrap_or_default();
    let elapsed = match duration {
        Some(d) => d,
        None => start.elapsed(),
    };
    let hist = &tally.hist;
    let latency_ms = (hist.total > 0).then(|| LatencyMs {
        p50: ms(hist.percentile(50.0).unwrap_or(0)),
        p90: ms(hist.percentile(90.0).unwrap_or(0)),
        p99: ms(hist.percentile(99.0).unwrap_or(0)),
        max: ms(hist.max),
        mean: ms((hist.sum / u128::from(hist.total)) as u64),
    });
    let errors_total = tally.errors.values().sum();
    let report = Report {
        schema_version: SCHEMA_VERSION,
        kind: "bench",
        target: args.target.clone(),
        addr: addr.to_string(),
        mode: args.mode.name(),
        connections: args.connections,
        threads,
        warmup_s: warmup.as_secs_f64(),
        duration_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        ops: hist.total,
        ops_per_s: (hist.total as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0,
        latency_ms,
        errors_total,
        errors: tally.errors,
        error_samples: tally.samples,
        established: (args.mode == Mode::Idle).then(|| plan.established.load(Ordering::Relaxed)),
        client_cpu_s: cpu.ours.map(|d| d.as_secs_f64()),
        client_cpu_us_per_op: cpu
            .ours
            .filter(|_| hist.total > 0)
            .map(|d| (d.as_secs_f64() * 1e7 / hist.total as f64).round() / 10.0),
        server_cpu_s: cpu.server.map(|d| d.as_secs_f64()),
        server_cpu_us_per_op: cpu
            .server
            .filter(|_| hist.total > 0)
            .map(|d| (d.as_secs_f64() * 1e7 / hist.total as f64).round() / 10.0),
    };
    Ok(report)
}

/// `peng3dnet bench`.
pub(crate) async fn run(args: BenchArgs) -> Exit {
    let report = match execute(&args).await {
        Ok(report) => report,
        Err(exit) => return exit,
    };
    let printed = if args.json {
        Out.json(&report)
    } else {
        Out.print(&text_report(&report))
    };
    if printed.is_err() {
        return Exit::System;
    }
    if report.errors_total == 0 && report.ops > 0 {
        Exit::Ok
    } else {
        Exit::NoAnswer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_within_one_percent() {
        for v in [0u64, 1, 255, 256, 257, 1000, 123_456, 9_999_999, 1 << 40] {
            let mid = Histogram::value(Histogram::index(v));
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.01, "{v} -> {mid}");
        }
        assert!(Histogram::index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn histogram_percentiles_are_nearest_rank() {
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.percentile(50.0).unwrap() as f64 / 1e3;
        let p99 = h.percentile(99.0).unwrap() as f64 / 1e3;
        assert!((p50 - 50.0).abs() < 0.5, "{p50}");
        assert!((p99 - 99.0).abs() < 1.0, "{p99}");
        assert_eq!(h.percentile(100.0), Some(100_000));
        assert_eq!(Histogram::new().percentile(50.0), None);
    }

    #[test]
    fn the_ping_time_is_patched_in_place() {
        let wire = Wire::new();
        let mut out = wire.settype_and_ping.clone();
        patch_time(&mut out, wire.settype_and_ping_time);
        let mut rb = ReadBuf::new(8);
        rb.data = out.clone();
        rb.end = out.len();
        let settype = rb.next_buffered().ok().flatten().unwrap();
        assert_eq!(settype.id, ids::SETTYPE);
        let ping = rb.next_buffered().ok().flatten().unwrap();
        assert_eq!(ping.id, ids::PING);
        let v = value::decode(rb.bytes(ping.body), 8).unwrap();
        let t = get(&v, "time").unwrap().as_f64().unwrap();
        assert!(t > 1.7e9, "{t}");
    }
}
