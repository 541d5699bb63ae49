//! Adversarial suite: hostile or broken peers against a real in-process server, and
//! malicious fake servers against our clients.
//!
//! Server side: a pingable server with small limits (so attacks are cheap) is attacked by
//! raw-socket peers while a well-behaved client (the "canary") keeps pinging it; every
//! canary ping must get its pong within [`PROMPT`]. Each attacker must get closeconn with
//! the right reason (or, for a peer that never reads, be dropped with `timeout`), the
//! server's hook must see the same, the server must log the refusal exactly once with the
//! attacker's address, and the process's resident memory must grow by less than
//! [`MEMORY_BOUND`] over the whole attack (the server runs in this process).
//!
//! Client side: fake servers send oversized frames, zlib bombs, garbage, nothing at all,
//! or never close; our clients must fail with a typed error, within their timeout, with
//! bounded memory.
//!
//! File descriptors: the thousand-connection attack needs two descriptors per connection
//! (ours and the server's). It uses up to 1000 connections, fewer if the soft
//! `RLIMIT_NOFILE` (read from /proc/self/limits) is too low for that, and says so.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use peng3dnet::client::Client;
use peng3dnet::config::{Compression, Config, FrameLimits};
use peng3dnet::frame::{Frame, FrameCodec, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use peng3dnet::ping::{ping_server, PingError, PingOptions};
use peng3dnet::protocol::{closeconn_frame, hello_frame, ids, settype_frame};
use peng3dnet::server::{ClientHandle, Closed, Handler, Server};
use peng3dnet::value::{self, get, map, Value};
use peng3dnet::{CloseReason, ConnType, ConnectionError, PingResponder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

/// A well-behaved ping must get its pong within this, whatever else is going on.
const PROMPT: Duration = Duration::from_secs(1);
/// Most the process's resident memory may grow over the server attack.
const MEMORY_BOUND: u64 = 64 << 20;
/// Limits of the attacked server.
const MAX_FRAME: usize = 64 << 10;
const MAX_INFLATED: usize = 256 << 10;
const MAX_ITEMS: usize = 4096;
const HANDSHAKE: Duration = Duration::from_millis(500);
const IDLE: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_ECHO: usize = 4 << 10;
/// Slack on every timing assertion (a debug build on two busy cores).
const SLACK: Duration = Duration::from_millis(600);

fn limited_config(max_connections: usize) -> Config {
    let mut config = Config::default();
    config.limits.frame = FrameLimits {
        max_frame_length: MAX_FRAME,
        max_inflated_size: MAX_INFLATED,
        ..FrameLimits::default()
    };
    config.limits.max_items = MAX_ITEMS;
    config.limits.handshake_timeout = HANDSHAKE;
    config.limits.idle_timeout = IDLE;
    config.limits.ping_idle_timeout = IDLE;
    config.limits.write_timeout = WRITE_TIMEOUT;
    config.limits.max_connections = max_connections;
    // Every attack comes from 127.0.0.1, a thousand connections at once: the per-address
    // cap is tested on its own.
    config.limits.max_connections_per_addr = 0;
    config.limits.max_queued_bytes = 64 << 10;
    config.limits.max_echo_bytes = MAX_ECHO;
    config.limits.close_linger = Duration::from_millis(300);
    config
}

// ---------------------------------------------------------------------------------------
// What the server saw: its close hook and its log.

/// Every connection the server closed, by peer address, as its `on_close` hook saw it.
#[derive(Default)]
struct CloseLog {
    closed: Mutex<HashMap<SocketAddr, Closed>>,
    changed: Notify,
}

impl CloseLog {
    /// How the server closed `peer`, waiting up to `within` for it to happen.
    async fn wait(&self, peer: SocketAddr, within: Duration) -> Option<Closed> {
        let deadline = Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(c) = self.closed.lock().unwrap().get(&peer) {
                return Some(c.clone());
            }
            if timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

struct Recorder(Arc<CloseLog>);

impl Handler for Recorder {
    type State = ();
    fn on_close(&self, client: &ClientHandle, _: &mut (), closed: &Closed) {
        // The canary's pings end this way and no attack does: with thousands of
        // connections in the suite, a canary ping may reuse an attacker's port after the
        // attacker is closed, and must not overwrite what the attacker got.
        if *closed == Closed::ByPeer(Some(CloseReason::PingComplete)) {
            return;
        }
        self.0
            .closed
            .lock()
            .unwrap()
            .insert(client.addr(), closed.clone());
        self.0.changed.notify_waiters();
    }
}

/// The log lines (INFO and up) of every server in this process, captured once.
fn captured_log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(sink.clone()))
            .init();
        log
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The tests that run a server run one at a time: ephemeral ports are reused, so a peer
/// address names one connection only within one test's log; and memory is measured
/// without another server's load.
async fn one_server_at_a_time() -> (tokio::sync::MutexGuard<'static, ()>, usize) {
    static SERVER_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = SERVER_TESTS.lock().await;
    let mark = captured_log().lock().unwrap().len();
    (guard, mark)
}

/// The captured log lines since `mark` that name each peer address (`peer=ip:port`).
fn log_lines_by_peer(mark: usize) -> HashMap<SocketAddr, Vec<String>> {
    let text = String::from_utf8_lossy(&captured_log().lock().unwrap()[mark..]).into_owned();
    let mut by_peer: HashMap<SocketAddr, Vec<String>> = HashMap::new();
    for line in text.lines() {
        for token in line.split_whitespace() {
            if let Some(addr) = token.strip_prefix("peer=") {
                if let Ok(addr) = addr.parse() {
                    by_peer.entry(addr).or_default().push(line.to_owned());
                }
            }
        }
    }
    by_peer
}

async fn pingable_server(config: Config) -> (Server, Arc<CloseLog>) {
    captured_log();
    let log = Arc::new(CloseLog::default());
    let server = Server::builder()
        .config(config)
        .handler(Recorder(log.clone()))
        .pingable(PingResponder::new().with_static_data(map([("name", "target".into())])))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    (server, log)
}

// ---------------------------------------------------------------------------------------
// Raw-socket attackers.

/// A frame as raw bytes, with any flags (the codec would refuse to make some of these).
fn raw_frame(id: u32, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + body.len());
    out.extend_from_slice(&(6 + body.len() as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn wire(frames: &[Frame]) -> Vec<u8> {
    let codec = FrameCodec::default();
    let mut out = BytesMut::new();
    for f in frames {
        codec.encode(f.clone(), &mut out).unwrap();
    }
    out.to_vec()
}

/// A compressed frame whose body inflates to `inflated` (at level 9: about a thousandth
/// of that on the wire).
fn compressed_frame(id: u32, inflated: Vec<u8>) -> Vec<u8> {
    let codec = FrameCodec::new(
        FrameLimits::default(),
        Compression {
            enabled: true,
            threshold: 0,
            level: 9,
        },
    );
    let mut out = BytesMut::new();
    codec.encode(Frame::new(id, inflated), &mut out).unwrap();
    assert_eq!(u16::from_be_bytes([out[8], out[9]]), FLAG_COMPRESSED);
    out.to_vec()
}

/// msgpack bin32 of `n` zero bytes: a valid body, if it were not too large.
fn zero_bin(n: usize) -> Vec<u8> {
    let mut body = vec![0xc6];
    body.extend_from_slice(&(n as u32).to_be_bytes());
    body.resize(5 + n, 0);
    body
}

/// msgpack array32 of `n` empty arrays: one byte each on the wire, 40 each decoded.
fn wide_array(n: usize) -> Vec<u8> {
    let mut body = vec![0xdd];
    body.extend_from_slice(&(n as u32).to_be_bytes());
    body.resize(5 + n, 0x90);
    body
}

/// `[[[[...nil...]]]]`, `depth` levels.
fn deep_array(depth: usize) -> Vec<u8> {
    let mut body = vec![0x91; depth];
    body.push(0xc0);
    body
}

fn ping_body(extra: &[(&str, Value)]) -> Vec<u8> {
    let mut m = vec![("time", Value::F64(1.5))];
    m.extend(extra.iter().cloned());
    value::encode(&map(m)).to_vec()
}

fn settype_ping() -> Vec<u8> {
    wire(&[settype_frame(&ConnType::Ping)])
}

/// One attacking connection: raw bytes out, frames in.
struct Attacker {
    stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
    local: SocketAddr,
}

impl Attacker {
    async fn connect(addr: SocketAddr) -> Attacker {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let local = stream.local_addr().unwrap();
        Attacker {
            stream,
            codec: FrameCodec::default(),
            buf: BytesMut::new(),
            local,
        }
    }

    /// Connects and reads the server's hello.
    async fn connect_hello(addr: SocketAddr) -> Attacker {
        let mut a = Attacker::connect(addr).await;
        let hello = a.next_frame(Duration::from_secs(5)).await.unwrap();
        assert_eq!(hello.map(|f| f.id), Some(ids::HELLO));
        a
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed: what it said is read afterwards.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame, `None` at end of stream.
    async fn next_frame(&mut self, within: Duration) -> Result<Option<Frame>, String> {
        let deadline = Instant::now() + within;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => return Err(format!("server sent a bad frame: {e}")),
            }
            match timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(format!("no frame within {within:?}")),
                Ok(Err(e)) => return Err(format!("read failed: {e}")),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads (skipping pongs and the like) until closeconn, and returns its reason.
    async fn close_reason(&mut self, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await? {
                None => return Err("end of stream without closeconn".into()),
                Some(f) if f.id == ids::CLOSECONN => {
                    let body = value::decode(&f.body, 64).map_err(|e| e.to_string())?;
                    return match get(&body, "reason") {
                        Some(Value::String(s)) => Ok(s.as_str().unwrap_or("").to_owned()),
                        other => Err(format!("closeconn without a reason: {other:?}")),
                    };
                }
                Some(_) => {}
            }
        }
    }
}

/// What one attack did and what it got.
struct Outcome {
    name: String,
    peer: SocketAddr,
    expected: CloseReason,
    /// The closeconn reason the attacker read (`None`: not checked, the attacker never
    /// reads).
    received: Option<Result<String, String>>,
}

/// Connects, reads hello, sends `payload`, and reads the closeconn.
async fn simple_attack(
    addr: SocketAddr,
    name: &str,
    payload: Vec<u8>,
    expected: CloseReason,
) -> Outcome {
    let mut a = Attacker::connect_hello(addr).await;
    a.send(&payload).await;
    let received = a.close_reason(Duration::from_secs(3)).await;
    Outcome {
        name: name.into(),
        peer: a.local,
        expected,
        received: Some(received),
    }
}

/// Sends `payload` one byte at a time, every `pace`, until the server closes; checks the
/// close comes `after` (measured from `since`) give or take the slack.
async fn drip(a: &mut Attacker, payload: &[u8], pace: Duration) -> Result<String, String> {
    let mut tick = tokio::time::interval(pace);
    let mut bytes = payload.iter();
    loop {
        tokio::select! {
            frame = a.next_frame(Duration::from_secs(10)) => match frame? {
                Some(f) if f.id == ids::CLOSECONN => {
                    let body = value::decode(&f.body, 64).map_err(|e| e.to_string())?;
                    return Ok(get(&body, "reason").and_then(Value::as_str).unwrap_or("").into());
                }
                Some(_) => {}
                None => return Err("end of stream without closeconn".into()),
            },
            _ = tick.tick() => match bytes.next() {
                Some(b) => a.send(&[*b]).await,
                None => return Err("the whole payload went through".into()),
            },
        }
    }
}

/// A peer that sends its handshake one byte at a time: closed at the handshake deadline.
async fn slow_loris_handshake(addr: SocketAddr) -> Outcome {
    let started = Instant::now();
    let mut a = Attacker::connect_hello(addr).await;
    let mut payload = settype_ping();
    payload.extend(raw_frame(ids::PING, 0, &ping_body(&[])));
    let received = drip(&mut a, &payload, Duration::from_millis(25)).await;
    let took = started.elapsed();
    assert!(
        took >= HANDSHAKE - Duration::from_millis(50) && took < HANDSHAKE + SLACK,
        "slow loris closed after {took:?}, handshake timeout {HANDSHAKE:?}"
    );
    Outcome {
        name: "slow loris before the handshake".into(),
        peer: a.local,
        expected: CloseReason::Timeout,
        received: Some(received),
    }
}

/// A peer that pings once, then sends its next frame one byte at a time: a frame that
/// never completes does not reset the idle timer.
async fn slow_loris_idle(addr: SocketAddr) -> Outcome {
    let mut a = Attacker::connect_hello(addr).await;
    let mut first = settype_ping();
    first.extend(raw_frame(ids::PING, 0, &ping_body(&[])));
    a.send(&first).await;
    let pong = a.next_frame(Duration::from_secs(3)).await.unwrap().unwrap();
    assert_eq!(pong.id, ids::PONG);
    let settled = Instant::now();
    let payload = raw_frame(ids::PING, 0, &ping_body(&[("pad", "x".repeat(40).into())]));
    let received = drip(&mut a, &payload, Duration::from_millis(50)).await;
    let took = settled.elapsed();
    assert!(
        took >= IDLE - Duration::from_millis(100) && took < IDLE + SLACK,
        "idle slow loris closed after {took:?}, idle timeout {IDLE:?}"
    );
    Outcome {
        name: "slow loris after the handshake".into(),
        peer: a.local,
        expected: CloseReason::Timeout,
        received: Some(received),
    }
}

/// A peer that pings with write-back as fast as it can and never reads: the server's
/// write times out and it drops the peer (no closeconn: it would not be read).
async fn never_reads(addr: SocketAddr) -> Outcome {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let ping = raw_frame(
        ids::PING,
        0,
        &ping_body(&[("pad", Value::Binary(vec![7; MAX_ECHO - 100]))]),
    );
    stream.write_all(&settype_ping()).await.unwrap();
    let started = Instant::now();
    let mut sent = 0usize;
    // Until the server stops reading (a write that does not complete) or drops us.
    loop {
        match timeout(Duration::from_millis(300), stream.write_all(&ping)).await {
            Ok(Ok(())) => sent += ping.len(),
            Ok(Err(_)) | Err(_) => break,
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server kept reading {sent} bytes of pings without their pongs being read"
        );
    }
    // Keep the socket open (still not reading) until the test is done with it.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(stream);
    });
    Outcome {
        name: format!("never reads (sent {} KiB of pings)", sent >> 10),
        peer: local,
        expected: CloseReason::Timeout,
        received: None,
    }
}

/// `n` connections that never say anything: every one is closed with `timeout`.
async fn half_open(addr: SocketAddr, n: usize) -> Vec<Outcome> {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        tasks.spawn(async move {
            let mut a = Attacker::connect(addr).await;
            let received = a.close_reason(HANDSHAKE + Duration::from_secs(5)).await;
            Outcome {
                name: "never finishes the handshake".into(),
                peer: a.local,
                expected: CloseReason::Timeout,
                received: Some(received),
            }
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(outcome) = tasks.join_next().await {
        out.push(outcome.unwrap());
    }
    out
}

/// The soft file-descriptor limit of this process.
fn fd_soft_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(1024)
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

// ---------------------------------------------------------------------------------------
// The canary: a well-behaved client pinging throughout.

struct Canary {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(usize, Duration, Vec<String>)>,
}

impl Canary {
    fn start(addr: SocketAddr) -> Canary {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let options = PingOptions {
                data: map([("canary", true.into())]),
                timeout: PROMPT * 3,
                ..PingOptions::default()
            };
            let (mut count, mut slowest, mut failures) = (0, Duration::ZERO, Vec::new());
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            while !token.is_cancelled() {
                pace.tick().await;
                let started = Instant::now();
                match ping_server(&addr.to_string(), &options).await {
                    Ok(reply) => {
                        let took = started.elapsed();
                        slowest = slowest.max(took);
                        if took > PROMPT {
                            failures.push(format!("ping #{count} took {took:?}"));
                        }
                        assert_eq!(reply.get("name"), Some(&Value::from("target")));
                    }
                    Err(e) => failures.push(format!("ping #{count} failed: {e}")),
                }
                count += 1;
            }
            (count, slowest, failures)
        });
        Canary { stop, task }
    }

    /// Stops pinging; asserts at least `min` pings went through, each promptly.
    async fn finish(self, min: usize) -> (usize, Duration) {
        self.stop.cancel();
        let (count, slowest, failures) = self.task.await.unwrap();
        assert!(failures.is_empty(), "canary failures: {failures:#?}");
        assert!(
            count >= min,
            "the canary got only {count} pings through (wanted {min})"
        );
        (count, slowest)
    }
}

type Attack = std::pin::Pin<Box<dyn Future<Output = Vec<Outcome>> + Send>>;

/// Runs attacks concurrently.
async fn all(attacks: Vec<Attack>) -> Vec<Outcome> {
    let mut set = JoinSet::new();
    for a in attacks {
        set.spawn(a);
    }
    let mut out = Vec::new();
    while let Some(o) = set.join_next().await {
        out.extend(o.unwrap());
    }
    out
}

fn one(f: impl Future<Output = Outcome> + Send + 'static) -> Attack {
    Box::pin(async move { vec![f.await] })
}

/// Checks every outcome: the reason the attacker read, how the server's hook saw the
/// close, and exactly one log line naming the attacker.
async fn check_outcomes(outcomes: &[Outcome], closes: &CloseLog, mark: usize) {
    let mut problems = Vec::new();
    for o in outcomes {
        if let Some(received) = &o.received {
            if received.as_deref() != Ok(o.expected.as_str()) {
                problems.push(format!(
                    "{} ({}): expected closeconn {}, got {received:?}",
                    o.name, o.peer, o.expected
                ));
            }
        }
        let seen = closes.wait(o.peer, WRITE_TIMEOUT + SLACK * 2).await;
        if seen.as_ref() != Some(&Closed::ByUs(o.expected.clone())) {
            problems.push(format!(
                "{} ({}): server hook saw {seen:?}, expected ByUs({})",
                o.name, o.peer, o.expected
            ));
        }
    }
    let logs = log_lines_by_peer(mark);
    for o in outcomes {
        let lines = logs.get(&o.peer).map(Vec::as_slice).unwrap_or_default();
        let reason = format!("reason={}", o.expected);
        if lines.len() != 1 || !lines[0].contains(&reason) || !lines[0].contains("INFO") {
            problems.push(format!(
                "{} ({}): expected one INFO log line with {reason}, got {lines:#?}",
                o.name, o.peer
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// The server under attack.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_survives_every_attack_while_serving_pings_promptly() {
    let (_serial, mark) = one_server_at_a_time().await;
    let budget = (fd_soft_limit().saturating_sub(300)) / 2;
    let thousand = budget.min(1000);
    if thousand < 1000 {
        eprintln!(
            "note: RLIMIT_NOFILE soft limit {} allows only {thousand} half-open connections",
            fd_soft_limit()
        );
    }
    let (server, closes) = pingable_server(limited_config(thousand + 100)).await;
    let addr = server.local_addr();
    let before = rss();
    let canary = Canary::start(addr);

    let accept_first = raw_frame(
        ids::HANDSHAKE_ACCEPT,
        0,
        &value::encode(&map([("success", true.into())])),
    );
    let established = |then: Vec<u8>| {
        let mut w = settype_ping();
        w.extend(then);
        w
    };
    let attacks: Vec<Attack> = vec![
        one(simple_attack(
            addr,
            "length prefix of 4 GiB",
            b"\xff\xff\xff\xff\x00\x00\x00\x02\x00\x00".to_vec(),
            CloseReason::PacketTooLarge,
        )),
        one(simple_attack(
            addr,
            "length prefix one over the limit",
            ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec(),
            CloseReason::PacketTooLarge,
        )),
        one(simple_attack(
            addr,
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            CloseReason::PacketTooLarge,
        )),
        one(simple_attack(
            addr,
            "zlib bomb (16 MiB) as settype",
            compressed_frame(ids::SETTYPE, zero_bin(16 << 20)),
            CloseReason::PacketTooLarge,
        )),
        one(simple_attack(
            addr,
            "zlib bomb (16 MiB) as a ping",
            established(compressed_frame(ids::PING, zero_bin(16 << 20))),
            CloseReason::PacketTooLarge,
        )),
        one(simple_attack(
            addr,
            "item bomb (200k empty arrays, compressed)",
            established(compressed_frame(ids::PING, wide_array(200_000))),
            CloseReason::PacketTooLarge,
        )),
        one(simple_attack(
            addr,
            "garbage msgpack",
            raw_frame(ids::SETTYPE, 0, b"\xc1\xc1 not msgpack"),
            CloseReason::InvalidPacket,
        )),
        one(simple_attack(
            addr,
            "truncated msgpack",
            raw_frame(ids::SETTYPE, 0, b"\x81\xa8conntype\xa4pi"),
            CloseReason::InvalidPacket,
        )),
        one(simple_attack(
            addr,
            "truncated msgpack claiming 4 billion items",
            established(raw_frame(ids::PING, 0, b"\xdd\xff\xff\xff\xff\xc0")),
            CloseReason::InvalidPacket,
        )),
        one(simple_attack(
            addr,
            "length shorter than the header",
            b"\x00\x00\x00\x03\x00\x00\x00".to_vec(),
            CloseReason::InvalidPacket,
        )),
        one(simple_attack(
            addr,
            "compressed flag on a body that is not zlib",
            raw_frame(ids::SETTYPE, FLAG_COMPRESSED, b"this is not zlib"),
            CloseReason::InvalidPacket,
        )),
        one(simple_attack(
            addr,
            "deeply nested settype",
            // Within the 4 KiB limit before settype, far deeper than max_depth.
            raw_frame(ids::SETTYPE, 0, &deep_array(3000)),
            CloseReason::InvalidPacket,
        )),
        one(simple_attack(
            addr,
            "deeply nested ping",
            established(raw_frame(ids::PING, 0, &deep_array(60_000))),
            CloseReason::InvalidPacket,
        )),
        one(simple_attack(
            addr,
            "encryption flag",
            raw_frame(ids::SETTYPE, FLAG_ENCRYPTED, b"\x80"),
            CloseReason::EncryptionUnsupported,
        )),
        one(simple_attack(
            addr,
            "accept before settype",
            accept_first,
            CloseReason::SmartPacketInvalid,
        )),
        one(simple_attack(
            addr,
            "handshake sent to the server",
            raw_frame(ids::HANDSHAKE, 0, b"\x80"),
            CloseReason::SmartPacketInvalid,
        )),
        one(simple_attack(
            addr,
            "pong sent to the server",
            established(raw_frame(ids::PONG, 0, &ping_body(&[]))),
            CloseReason::PingInvalidSide,
        )),
        one(simple_attack(
            addr,
            "id 70 on a ping connection",
            established(raw_frame(70, 0, b"\x80")),
            CloseReason::InvalidPingPacket,
        )),
        one(simple_attack(
            addr,
            "unknown connection type",
            wire(&[settype_frame(&ConnType::Custom("nope".into()))]),
            CloseReason::UnknownConnType,
        )),
        one(slow_loris_handshake(addr)),
        one(slow_loris_idle(addr)),
        one(never_reads(addr)),
        Box::pin(half_open(addr, thousand)),
    ];
    let outcomes = all(attacks).await;
    let (pings, slowest) = canary.finish(10).await;
    check_outcomes(&outcomes, &closes, mark).await;

    let grown = rss().saturating_sub(before);
    eprintln!(
        "{} attackers refused; canary: {pings} pings, slowest {slowest:?}; RSS grew {} KiB",
        outcomes.len(),
        grown >> 10
    );
    assert!(
        grown < MEMORY_BOUND,
        "resident memory grew by {} MiB (bound {} MiB)",
        grown >> 20,
        MEMORY_BOUND >> 20
    );
    // Everyone is gone, and the server still answers.
    let reply = ping_server(&addr.to_string(), &PingOptions::default()).await;
    assert!(reply.is_ok(), "{reply:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_max_connections_is_refused_with_serverfull_and_accept_goes_on() {
    const SLOTS: usize = 8;
    const FLOOD: usize = 200;
    let (_serial, mark) = one_server_at_a_time().await;
    let mut config = limited_config(SLOTS);
    // The holders must outlast the flood without pinging.
    config.limits.handshake_timeout = Duration::from_secs(20);
    let (server, closes) = pingable_server(config).await;
    let addr = server.local_addr();

    // Fill every slot; each holder read its hello, so it holds a slot.
    let mut holders = Vec::new();
    for _ in 0..SLOTS {
        holders.push(Attacker::connect_hello(addr).await);
    }
    // Flood: every extra connection is told why, at once, without a hello.
    let mut tasks = JoinSet::new();
    for _ in 0..FLOOD {
        tasks.spawn(async move {
            let mut a = Attacker::connect(addr).await;
            let first = a.next_frame(Duration::from_secs(5)).await;
            let reason = match first {
                Ok(Some(ref f)) if f.id == ids::CLOSECONN => value::decode(&f.body, 64)
                    .ok()
                    .and_then(|b| get(&b, "reason").and_then(Value::as_str).map(str::to_owned)),
                _ => None,
            };
            (a.local, reason, first.map(|f| f.map(|f| f.id)))
        });
    }
    // A well-behaved ping during the flood is refused promptly, with a typed error.
    let started = Instant::now();
    let refused = ping_server(&addr.to_string(), &PingOptions::default()).await;
    assert!(
        matches!(
            refused,
            Err(PingError::ClosedByPeer(Some(CloseReason::ServerFull)))
        ),
        "{refused:?}"
    );
    assert!(started.elapsed() < PROMPT);

    let mut flooders = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (peer, reason, first) = result.unwrap();
        assert_eq!(reason.as_deref(), Some("serverfull"), "{peer}: {first:?}");
        flooders.push(peer);
    }
    assert!(
        server
            .stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            > FLOOD as u64
    );
    let logs = log_lines_by_peer(mark);
    for peer in &flooders {
        let lines = logs.get(peer).map(Vec::as_slice).unwrap_or_default();
        assert!(
            lines.len() == 1 && lines[0].contains("server full"),
            "{peer}: {lines:#?}"
        );
    }

    // The flood subsides: the holders leave, and a ping works again.
    let holder_addrs: Vec<SocketAddr> = holders.iter().map(|h| h.local).collect();
    drop(holders);
    for peer in holder_addrs {
        assert!(closes.wait(peer, Duration::from_secs(3)).await.is_some());
    }
    // A slot is released just after the close hook runs: retry a few times, bounded.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let started = Instant::now();
        match ping_server(&addr.to_string(), &PingOptions::default()).await {
            Ok(_) => {
                assert!(started.elapsed() < PROMPT);
                break;
            }
            Err(PingError::ClosedByPeer(Some(CloseReason::ServerFull)))
                if Instant::now() < deadline =>
            {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("ping after the flood: {e}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_what_is_queued_within_a_bound_even_with_a_slow_reader() {
    // More than the kernel buffers between the server and the slow reader hold (the
    // server's send buffer autotunes up to tcp_wmem's 4 MiB), so its queue is still full
    // when the shutdown starts.
    const PACKETS: usize = 6000;
    const LINGER: Duration = Duration::from_millis(300);
    let _serial = one_server_at_a_time().await;
    /// Queues `PACKETS` packets of 1 KiB for every client as soon as it is established.
    struct Chatty(Arc<Notify>);
    impl Handler for Chatty {
        type State = ();
        fn on_established(&self, client: &ClientHandle, _: &mut ()) {
            for _ in 0..PACKETS {
                client.send_id(64, &Value::Binary(vec![1; 1024])).unwrap();
            }
            self.0.notify_one();
        }
    }
    let queued = Arc::new(Notify::new());
    let mut config = limited_config(16);
    config.limits.idle_timeout = Duration::from_secs(30);
    config.limits.handshake_timeout = Duration::from_secs(30);
    config.limits.max_queued_bytes = 16 << 20;
    config.limits.close_linger = LINGER;
    let server = Server::builder()
        .config(config)
        .conntype("raw")
        .handler(Chatty(queued.clone()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let settype_raw = wire(&[settype_frame(&ConnType::Custom("raw".into()))]);

    // A slow reader: 512 bytes every 50 ms, so it would need minutes for its queue.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    slow.write_all(&settype_raw).await.unwrap();
    timeout(Duration::from_secs(3), queued.notified())
        .await
        .unwrap();
    let slow_reader = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        let mut chunk = [0u8; 512];
        let mut total = 0usize;
        loop {
            pace.tick().await;
            match slow.read(&mut chunk).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    // A reader that takes everything.
    let mut reader = Attacker::connect_hello(addr).await;
    reader.send(&settype_raw).await;
    timeout(Duration::from_secs(3), queued.notified())
        .await
        .unwrap();

    let started = Instant::now();
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    // Nothing queued is lost: all the packets, then closeconn servershutdown.
    let mut packets = 0;
    loop {
        match reader.next_frame(Duration::from_secs(3)).await.unwrap() {
            Some(f) if f.id == 64 => packets += 1,
            Some(f) if f.id == ids::CLOSECONN => {
                let body = value::decode(&f.body, 64).unwrap();
                assert_eq!(get(&body, "reason"), Some(&Value::from("servershutdown")));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(packets, PACKETS);
    drop(reader);
    // The slow reader does not hold the shutdown: one write timeout for its flush, then
    // the linger at most.
    let bound = WRITE_TIMEOUT + LINGER + SLACK;
    timeout(bound, shutdown)
        .await
        .expect("shutdown took too long")
        .unwrap();
    let took = started.elapsed();
    assert!(took < bound, "shutdown took {took:?}");
    slow_reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_keep_up_is_closed_with_sendqueuefull() {
    /// Sends 1 KiB packets until the queue is full; reports how many went in.
    struct Firehose(tokio::sync::mpsc::UnboundedSender<usize>);
    impl Handler for Firehose {
        type State = ();
        fn on_established(&self, client: &ClientHandle, _: &mut ()) {
            let mut sent = 0;
            for _ in 0..10_000 {
                match client.send_id(64, &Value::Binary(vec![1; 1024])) {
                    Ok(()) => sent += 1,
                    Err(peng3dnet::server::SendError::QueueFull(_)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let _ = self.0.send(sent);
        }
    }
    let (_serial, mark) = one_server_at_a_time().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::builder()
        .config(limited_config(16))
        .conntype("raw")
        .handler(Firehose(tx))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut peer = Attacker::connect_hello(server.local_addr()).await;
    peer.send(&wire(&[settype_frame(&ConnType::Custom("raw".into()))]))
        .await;
    let sent = timeout(Duration::from_secs(3), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(sent > 0 && sent < 64, "{sent} KiB queued past a 64 KiB cap");
    // What was queued still arrives, then the reason.
    let mut packets = 0;
    let reason = loop {
        match peer.next_frame(Duration::from_secs(3)).await.unwrap() {
            Some(f) if f.id == 64 => packets += 1,
            Some(f) if f.id == ids::CLOSECONN => break value::decode(&f.body, 64).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(packets, sent);
    assert_eq!(get(&reason, "reason"), Some(&Value::from("sendqueuefull")));
    let logs = log_lines_by_peer(mark);
    let lines = logs.get(&peer.local).map(Vec::as_slice).unwrap_or_default();
    assert!(
        lines.len() == 1 && lines[0].contains("reason=sendqueuefull"),
        "{lines:#?}"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Malicious servers against our clients.

/// A fake server: accepts one connection and runs `script` on it; returns its address and
/// the script's result.
async fn fake_server<F, Fut, T>(script: F) -> (SocketAddr, tokio::task::JoinHandle<T>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        script(stream).await
    });
    (addr, task)
}

fn hello_bytes() -> Vec<u8> {
    wire(&[hello_frame()])
}

/// The server end of a fake server's connection, with the attacker's helpers.
fn as_peer(stream: TcpStream) -> Attacker {
    Attacker {
        local: stream.local_addr().unwrap(),
        stream,
        codec: FrameCodec::default(),
        buf: BytesMut::new(),
    }
}

fn ping_options(timeout: Duration) -> PingOptions {
    PingOptions {
        timeout,
        ..PingOptions::default()
    }
}

/// Pings `addr` with `limit` as timeout and returns the error, checking it came in time.
async fn ping_fails(addr: SocketAddr, limit: Duration) -> PingError {
    let started = Instant::now();
    let result = ping_server(&addr.to_string(), &ping_options(limit)).await;
    let took = started.elapsed();
    assert!(
        took < limit + Duration::from_millis(250),
        "took {took:?}, timeout {limit:?}"
    );
    result.expect_err("a malicious server must not produce a pong")
}

#[tokio::test]
async fn client_times_out_on_a_server_that_never_says_hello() {
    let (addr, server) = fake_server(|mut s: TcpStream| async move {
        let mut sink = [0u8; 64];
        while s.read(&mut sink).await.unwrap_or(0) > 0 {}
    })
    .await;
    let err = ping_fails(addr, Duration::from_millis(400)).await;
    assert!(err.is_timeout(), "{err}");
    server.abort();

    let (addr, server) = fake_server(|mut s: TcpStream| async move {
        let mut sink = [0u8; 64];
        while s.read(&mut sink).await.unwrap_or(0) > 0 {}
    })
    .await;
    classic_connect_times_out(addr, Duration::from_millis(400)).await;
    server.abort();
}

/// A classic client connecting to `addr` fails with a timeout, and within its timeout plus
/// a margin far below the 2 s close linger that once made it overrun.
async fn classic_connect_times_out(addr: SocketAddr, limit: Duration) {
    let started = Instant::now();
    let err = Client::builder()
        .timeout(limit)
        .connect_addr(addr)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectionError::Timeout { .. }), "{err}");
    let took = started.elapsed();
    assert!(took < limit + Duration::from_millis(800), "{took:?}");
}

#[tokio::test]
async fn client_times_out_on_a_server_that_says_hello_then_nothing() {
    // It never closes either: the client must not linger past its own timeout.
    let silent = |mut s: TcpStream| async move {
        s.write_all(&hello_bytes()).await.unwrap();
        let mut sink = [0u8; 64];
        let _ = timeout(Duration::from_secs(10), async {
            loop {
                if s.read(&mut sink).await.unwrap_or(0) == 0 {
                    // Half-closed by the client: stay open regardless.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
    };
    let (addr, server) = fake_server(silent).await;
    let err = ping_fails(addr, Duration::from_millis(400)).await;
    assert!(err.is_timeout(), "{err}");
    server.abort();

    let (addr, server) = fake_server(silent).await;
    classic_connect_times_out(addr, Duration::from_millis(400)).await;
    server.abort();
}

#[tokio::test]
async fn ping_server_returns_within_its_timeout_when_the_server_never_closes() {
    let (addr, server) = fake_server(|mut s: TcpStream| async move {
        s.write_all(&hello_bytes()).await.unwrap();
        let pong = wire(&[Frame::new(
            ids::PONG,
            value::encode(&map([("name", "never closes".into())])),
        )]);
        s.write_all(&pong).await.unwrap();
        // Never reads, never closes.
        std::future::pending::<()>().await;
    })
    .await;
    let limit = Duration::from_millis(500);
    let started = Instant::now();
    let reply = ping_server(&addr.to_string(), &ping_options(limit))
        .await
        .unwrap();
    assert_eq!(reply.get("name"), Some(&Value::from("never closes")));
    assert!(started.elapsed() < limit + Duration::from_millis(800));
    server.abort();
}

/// Client-side attacks that end in closeconn from the client: the typed error, the
/// reason the fake server got, and the time it took.
async fn client_refuses(payload: Vec<u8>, expected: CloseReason) {
    let (addr, server) = fake_server(move |s: TcpStream| async move {
        let mut peer = as_peer(s);
        peer.send(&hello_bytes()).await;
        // Read the settype and the ping first, so that the payload answers the ping.
        for expected in [ids::SETTYPE, ids::PING] {
            let f = peer
                .next_frame(Duration::from_secs(3))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(f.id, expected);
        }
        peer.send(&payload).await;
        peer.close_reason(Duration::from_secs(5)).await.ok()
    })
    .await;
    let before = rss();
    let err = ping_fails(addr, Duration::from_secs(3)).await;
    let grown = rss().saturating_sub(before);
    assert!(
        matches!(&err, PingError::Protocol(r) if r == &expected),
        "expected Protocol({expected}), got {err:?}"
    );
    assert_eq!(
        server.await.unwrap().as_deref(),
        Some(expected.as_str()),
        "the fake server should be told why"
    );
    assert!(grown < 48 << 20, "client memory grew {} MiB", grown >> 20);
}

#[tokio::test]
async fn client_refuses_an_oversized_frame() {
    client_refuses(
        b"\xff\xff\xff\xff\x00\x00\x00\x41\x00\x00".to_vec(),
        CloseReason::PacketTooLarge,
    )
    .await;
}

/// The third audit: each hostile target could make the client buffer an 8 MiB pong (256
/// of them took 1.3 GB). A pong of 1 MB, far over a real one, is refused by default
/// before it is read.
#[tokio::test]
async fn client_refuses_a_pong_over_its_default_cap_unread() {
    let huge_pong = raw_frame(
        ids::PONG,
        0,
        &value::encode(&map([("motd", Value::Binary(vec![b'x'; 1 << 20]))])),
    );
    client_refuses(huge_pong[..64 << 10].to_vec(), CloseReason::PacketTooLarge).await;
    assert_eq!(
        PingOptions::default().max_pong_bytes,
        peng3dnet::ping::DEFAULT_MAX_PONG_BYTES
    );
    const { assert!(peng3dnet::ping::DEFAULT_MAX_PONG_BYTES <= 256 << 10) };
}

#[tokio::test]
async fn client_refuses_a_zlib_bomb() {
    // 64 MiB inflated (the client's default cap is 8 MiB), about 64 KiB on the wire.
    client_refuses(
        compressed_frame(ids::PONG, zero_bin(64 << 20)),
        CloseReason::PacketTooLarge,
    )
    .await;
}

#[tokio::test]
async fn client_refuses_an_item_bomb() {
    // 6 million empty arrays: 6 MiB inflated (under the 8 MiB cap), 240 MiB if decoded.
    client_refuses(
        compressed_frame(ids::PONG, wide_array(6_000_000)),
        CloseReason::PacketTooLarge,
    )
    .await;
}

#[tokio::test]
async fn client_refuses_garbage_and_deep_nesting() {
    client_refuses(
        raw_frame(ids::PONG, 0, b"\xc1 garbage"),
        CloseReason::InvalidPacket,
    )
    .await;
    client_refuses(
        // Under the default pong cap (64 KiB), so the nesting is what is refused.
        raw_frame(ids::PONG, 0, &deep_array(60_000)),
        CloseReason::InvalidPacket,
    )
    .await;
    client_refuses(
        raw_frame(ids::PONG, FLAG_ENCRYPTED, b"\x80"),
        CloseReason::EncryptionUnsupported,
    )
    .await;
    client_refuses(
        raw_frame(ids::PING, 0, b"\x80"),
        CloseReason::PingInvalidSide,
    )
    .await;
}

#[tokio::test]
async fn client_refuses_a_server_that_is_not_peng3dnet() {
    for greeting in [
        b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
        raw_frame(ids::HELLO, 0, b"\xc1"),
        raw_frame(ids::PONG, 0, b"\x80"),
        raw_frame(ids::HELLO, 0, &deep_array(10_000)),
    ] {
        let (addr, server) = fake_server(move |mut s: TcpStream| async move {
            let _ = s.write_all(&greeting).await;
            let mut sink = [0u8; 256];
            let _ = timeout(Duration::from_secs(5), async {
                while s.read(&mut sink).await.unwrap_or(0) > 0 {}
            })
            .await;
        })
        .await;
        let err = ping_fails(addr, Duration::from_secs(3)).await;
        assert!(matches!(err, PingError::NotPeng3dnet(_)), "{err:?}");
        server.abort();
    }
}

#[tokio::test]
async fn client_times_out_on_a_server_that_streams_frames_forever() {
    let (addr, server) = fake_server(|mut s: TcpStream| async move {
        s.write_all(&hello_bytes()).await.unwrap();
        // Frames a ping client ignores (a second hello), as fast as it can, forever.
        let junk = hello_bytes().repeat(256);
        while s.write_all(&junk).await.is_ok() {}
    })
    .await;
    let err = ping_fails(addr, Duration::from_millis(500)).await;
    assert!(err.is_timeout(), "{err}");
    server.abort();

    // A classic client waiting for its handshake is bounded the same way.
    let (addr, server) = fake_server(|mut s: TcpStream| async move {
        s.write_all(&hello_bytes()).await.unwrap();
        let junk = hello_bytes().repeat(256);
        while s.write_all(&junk).await.is_ok() {}
    })
    .await;
    classic_connect_times_out(addr, Duration::from_millis(500)).await;
    server.abort();
}

#[tokio::test]
async fn closeconn_from_a_malicious_server_is_reported_not_trusted() {
    // A closeconn whose reason is not a string, then one with a huge reason: both are
    // typed errors, neither panics.
    for body in [
        value::encode(&map([("reason", Value::from(5))])).to_vec(),
        value::encode(&map([("reason", "x".repeat(60_000).into())])).to_vec(),
        closeconn_frame(None).body.to_vec(),
    ] {
        let (addr, server) = fake_server(move |mut s: TcpStream| async move {
            s.write_all(&hello_bytes()).await.unwrap();
            s.write_all(&raw_frame(ids::CLOSECONN, 0, &body))
                .await
                .unwrap();
            let mut sink = [0u8; 256];
            let _ = timeout(Duration::from_secs(5), async {
                while s.read(&mut sink).await.unwrap_or(0) > 0 {}
            })
            .await;
        })
        .await;
        let err = ping_fails(addr, Duration::from_secs(3)).await;
        assert!(matches!(err, PingError::ClosedByPeer(_)), "{err:?}");
        server.abort();
    }
}

#[test]
fn payload_helpers_build_what_they_claim() {
    let mut c = FrameCodec::default();
    let mut buf = BytesMut::from(&compressed_frame(64, zero_bin(1000))[..]);
    assert_eq!(c.decode(&mut buf).unwrap().unwrap().body.len(), 1005);
    assert_eq!(
        value::decode(&wide_array(10), 64).unwrap(),
        Value::Array(vec![Value::Array(vec![]); 10])
    );
    assert!(value::decode(&deep_array(10), 64).is_ok());
    let mut b = BytesMut::new();
    b.put_slice(&raw_frame(70, 0, b"\x80"));
    assert_eq!(
        c.decode(&mut b).unwrap(),
        Some(Frame::new(70, &b"\x80"[..]))
    );
}

// ---------------------------------------------------------------------------------------
// The read path: frame limits by state, the frame deadline, the server-wide budget, the
// per-address cap, and buffers given back.

/// The header of an 8,000,000-byte frame and 200 KB of its body, no hello (2,000 of them
/// held 400 MB of server memory before the small limit before settype).
fn big_partial_frame() -> Vec<u8> {
    let mut w = 8_000_000u32.to_be_bytes().to_vec();
    w.extend_from_slice(&64u32.to_be_bytes());
    w.extend_from_slice(&0u16.to_be_bytes());
    w.resize(w.len() + 200_000, 0);
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_before_settype_is_refused_at_once_with_default_limits() {
    let (_guard, _mark) = one_server_at_a_time().await;
    let (server, _closes) = pingable_server(Config::default()).await;
    let mut a = Attacker::connect_hello(server.local_addr()).await;
    a.send(&big_partial_frame()).await;
    assert_eq!(
        a.close_reason(Duration::from_secs(3)).await,
        Ok("packettoolarge".into())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_frames_before_settype_are_refused() {
    let (_guard, _mark) = one_server_at_a_time().await;
    let (server, _closes) = pingable_server(Config::default()).await;
    let settype = value::encode(&map([("conntype", "ping".into())])).to_vec();
    let mut a = Attacker::connect_hello(server.local_addr()).await;
    a.send(&compressed_frame(ids::SETTYPE, settype)).await;
    assert_eq!(
        a.close_reason(Duration::from_secs(3)).await,
        Ok("invalidpacket".into())
    );
    server.shutdown().await;
}

/// A ping connection that has had its first pong.
async fn settled_pinger(addr: SocketAddr) -> Attacker {
    let mut a = Attacker::connect_hello(addr).await;
    let mut w = settype_ping();
    w.extend(wire(&[Frame::new(ids::PING, ping_body(&[]))]));
    a.send(&w).await;
    let pong = a.next_frame(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(pong.id, ids::PONG);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_completes_is_closed_at_the_frame_deadline_not_the_idle_timeout() {
    let (_guard, _mark) = one_server_at_a_time().await;
    let mut config = Config::default();
    config.limits.idle_timeout = Duration::from_secs(60);
    config.limits.frame_timeout = Duration::from_millis(300);
    let (server, _closes) = pingable_server(config).await;
    let mut a = settled_pinger(server.local_addr()).await;
    let started = Instant::now();
    // The first 20 bytes of a 1000-byte ping, then nothing.
    a.send(&raw_frame(ids::PING, 0, &[0; 994])[..20]).await;
    assert_eq!(
        a.close_reason(Duration::from_secs(10)).await,
        Ok("timeout".into())
    );
    let took = started.elapsed();
    assert!(
        took < 2 * Duration::from_millis(300) + SLACK,
        "closed after {took:?}"
    );
    server.shutdown().await;
}

/// A ping whose body is a map with a `time` and a bin of `n` bytes.
fn big_ping(n: usize) -> Vec<u8> {
    raw_frame(
        ids::PING,
        0,
        &ping_body(&[("blob", Value::Binary(vec![7; n]))]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_partial_frames_past_the_server_budget_are_refused_with_serverfull() {
    let (_guard, _mark) = one_server_at_a_time().await;
    let mut config = Config::default();
    config.limits.ping_frame_length = 1 << 20;
    config.limits.frame_budget = 1_500_000;
    let (server, _closes) = pingable_server(config).await;
    let ping = big_ping(1_000_000);
    let (mut a, mut b) = (
        settled_pinger(server.local_addr()).await,
        settled_pinger(server.local_addr()).await,
    );
    // Both send 800 KB of a 1 MB ping; together they hold more than the budget.
    a.send(&ping[..800_000]).await;
    b.send(&ping[..800_000]).await;
    // Exactly one is refused (whichever came second); the other completes its ping.
    let a_refused = tokio::select! {
        r = a.close_reason(Duration::from_secs(5)) => {
            assert_eq!(r, Ok("serverfull".into()));
            true
        }
        r = b.close_reason(Duration::from_secs(5)) => {
            assert_eq!(r, Ok("serverfull".into()));
            false
        }
    };
    let kept = if a_refused { &mut b } else { &mut a };
    kept.send(&ping[800_000..]).await;
    let pong = kept
        .next_frame(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong.id, ids::PONG);
    assert_eq!(
        server
            .stats()
            .budget_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    server.shutdown().await;
}

/// The attack of the third audit: frame headers that announce large frames and send
/// nothing more took the whole budget (it was charged on the announced length), after
/// which every compressed ping was refused `serverfull`. Charged on what arrives, they
/// take next to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_but_unsent_frames_do_not_take_the_budget_from_compressed_pings() {
    let (_guard, _mark) = one_server_at_a_time().await;
    const ANNOUNCED: u32 = 8_000_000;
    let mut config = Config::default();
    config.limits.ping_frame_length = 8 << 20;
    config.limits.max_echo_bytes = 8 << 20;
    // Exactly what two announced frames would take if charged on their headers.
    config.limits.frame_budget = 2 * (ANNOUNCED as usize + 4);
    let (server, _closes) = pingable_server(config).await;
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut a = settled_pinger(server.local_addr()).await;
        // A ping's header announcing 8 MB (10 bytes), and nothing of its body.
        let mut header = ANNOUNCED.to_be_bytes().to_vec();
        header.extend_from_slice(&ids::PING.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        a.send(&header).await;
        holders.push(a);
    }
    // Both partial frames are charged before the ping below is sent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.budget_held() < 2 * 10 {
        assert!(
            Instant::now() < deadline,
            "the partial frames were never charged"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        server.budget_held() < 1 << 20,
        "{} bytes charged for 20 bytes buffered",
        server.budget_held()
    );
    let mut pinger = settled_pinger(server.local_addr()).await;
    pinger
        .send(&compressed_frame(ids::PING, ping_body(&[])))
        .await;
    let pong = pinger
        .next_frame(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong.id, ids::PONG, "the compressed ping was refused");
    drop(holders);
    server.shutdown().await;
}

/// The attack of the third audit: with the old defaults (no per-address cap, idle ping
/// connections kept 300 s) one host filled all 16,384 slots in 6.7 s. With the default
/// limits one host holds 64, a host beside it is still served, and a silent ping
/// connection goes at the ping idle timeout, not the classic one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_default_limits_one_host_cannot_take_the_server() {
    let (_guard, _mark) = one_server_at_a_time().await;
    let defaults = Config::default().limits;
    assert_eq!(defaults.max_connections_per_addr, 64);
    assert!(defaults.ping_idle_timeout <= Duration::from_secs(60));
    let (server, _closes) = pingable_server(Config::default()).await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(Attacker::connect_hello(addr).await);
    }
    let mut refused = Attacker::connect(addr).await;
    assert_eq!(
        refused.close_reason(Duration::from_secs(3)).await,
        Ok("serverfull".into())
    );
    let options = PingOptions {
        local_addr: Some("127.0.0.2".parse().unwrap()),
        ..ping_options(Duration::from_secs(5))
    };
    ping_server(&addr.to_string(), &options)
        .await
        .expect("another host is served");
    drop(held);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_ping_connection_is_closed_at_the_ping_idle_timeout() {
    let (_guard, _mark) = one_server_at_a_time().await;
    let mut config = Config::default();
    config.limits.ping_idle_timeout = Duration::from_millis(300);
    let (server, _closes) = pingable_server(config).await;
    let started = Instant::now();
    let mut a = settled_pinger(server.local_addr()).await;
    assert_eq!(
        a.close_reason(Duration::from_secs(10)).await,
        Ok("timeout".into())
    );
    // Far below the classic idle timeout (300 s), which would have kept it.
    assert!(started.elapsed() < Duration::from_secs(10));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_cap_are_refused_with_serverfull() {
    let (_guard, _mark) = one_server_at_a_time().await;
    let mut config = Config::default();
    config.limits.max_connections_per_addr = 2;
    let (server, _closes) = pingable_server(config).await;
    let addr = server.local_addr();
    let (a, b) = (
        Attacker::connect_hello(addr).await,
        Attacker::connect_hello(addr).await,
    );
    let mut c = Attacker::connect(addr).await;
    assert_eq!(
        c.close_reason(Duration::from_secs(3)).await,
        Ok("serverfull".into())
    );
    // A slot given back is free again: once b's connection is gone, a new one is served
    // (retried: the slot is given back just after the socket closes).
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = Attacker::connect(addr).await;
        let first = d.next_frame(Duration::from_secs(5)).await.unwrap().unwrap();
        if first.id == ids::HELLO {
            break;
        }
        assert_eq!(first.id, ids::CLOSECONN);
        assert!(Instant::now() < deadline, "the slot was never given back");
    }
    drop(a);
    server.shutdown().await;
}

/// On establishment, sends tiny messages until the queue is full, from the connection's
/// own task (so nothing drains meanwhile), and records how many went in and how a send of
/// a secured packet by id fared.
struct Flooder {
    queued: Arc<std::sync::atomic::AtomicUsize>,
    secured: Arc<Mutex<Option<String>>>,
    done: Arc<Notify>,
}

impl Handler for Flooder {
    type State = ();
    fn on_established(&self, client: &ClientHandle, _: &mut ()) {
        let secured = client.send_id(64, &Value::Nil);
        *self.secured.lock().unwrap() = Some(match secured {
            Ok(()) => "sent".into(),
            Err(e) => e.to_string(),
        });
        let mut n = 0;
        while client.send_id(65, &Value::Nil).is_ok() {
            n += 1;
        }
        self.queued.store(n, std::sync::atomic::Ordering::SeqCst);
        self.done.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_messages_are_bounded_by_the_send_queue_and_send_id_checks_security() {
    let (_guard, _mark) = one_server_at_a_time().await;
    let mut config = Config::default();
    config.limits.max_queued_bytes = 64 << 10;
    let mut registry = peng3dnet::Registry::new();
    registry.register("test:secret").unwrap();
    registry.register("test:tiny").unwrap();
    registry
        .set_min_security("test:secret", peng3dnet::SecurityLevel::Encrypted)
        .unwrap();
    let flooder = Flooder {
        queued: Default::default(),
        secured: Default::default(),
        done: Default::default(),
    };
    let (queued, secured, done) = (
        flooder.queued.clone(),
        flooder.secured.clone(),
        flooder.done.clone(),
    );
    let server = Server::builder()
        .config(config)
        .registry(registry)
        .conntype("raw")
        .handler(flooder)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut a = Attacker::connect_hello(server.local_addr()).await;
    a.send(&wire(&[settype_frame(&ConnType::from_name("raw"))]))
        .await;
    timeout(Duration::from_secs(5), done.notified())
        .await
        .unwrap();
    let n = queued.load(std::sync::atomic::Ordering::SeqCst);
    // One-byte bodies: 65,536 of them fit a 64 KiB cap counted in body bytes only.
    assert!(n > 0 && n < 2048, "{n} one-byte messages queued");
    let secured = secured.lock().unwrap().clone().unwrap();
    assert!(
        secured.contains("test:secret"),
        "send_id of a secured packet: {secured}"
    );
    server.shutdown().await;
}

/// Pings `addr` one after another until stopped; returns every round trip.
fn pinger(addr: SocketAddr, stop: CancellationToken) -> tokio::task::JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let options = PingOptions {
            timeout: Duration::from_secs(5),
            ..PingOptions::default()
        };
        let mut rtts = Vec::new();
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        while !stop.is_cancelled() {
            pace.tick().await;
            let started = Instant::now();
            ping_server(&addr.to_string(), &options).await.unwrap();
            rtts.push(started.elapsed());
        }
        rtts
    })
}

fn p99(mut rtts: Vec<Duration>) -> Duration {
    assert!(!rtts.is_empty());
    rtts.sort();
    rtts[(rtts.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_half_sent_8mb_frames_before_the_handshake_hold_little_memory() {
    let (_guard, _mark) = one_server_at_a_time().await;
    if fd_soft_limit() < 4400 {
        panic!(
            "this test needs 4,400 descriptors; the soft limit is {}",
            fd_soft_limit()
        );
    }
    // The default limits but the per-address cap: 2,000 connections from 127.0.0.1.
    let mut config = Config::default();
    config.limits.max_connections_per_addr = 0;
    let (server, _closes) = pingable_server(config).await;
    let addr = server.local_addr();
    let before = rss();
    let stop = CancellationToken::new();
    let canary = pinger(addr, stop.clone());
    let mut held = JoinSet::new();
    let all_sent = Arc::new(tokio::sync::Semaphore::new(0));
    // 50 attackers connecting and sending at a time (this process is both the attacker
    // and the server, on two threads); every one then stays connected.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(50));
    for _ in 0..2000 {
        let all_sent = all_sent.clone();
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        held.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let _ = stream.write_all(&big_partial_frame()).await;
            drop(permit);
            all_sent.add_permits(1);
            // Held open (and not read) until the test ends.
            std::future::pending::<()>().await;
        });
    }
    let _ = timeout(Duration::from_secs(60), all_sent.acquire_many(2000))
        .await
        .unwrap();
    let grown = rss().saturating_sub(before);
    stop.cancel();
    let rtts = canary.await.unwrap();
    held.abort_all();
    let p99 = p99(rtts);
    assert!(grown < 256 << 20, "RSS grew {} MiB", grown >> 20);
    // The 100 ms target is for a release build with the attackers in another process
    // (`peng3dnet-bench flood`, BENCHMARKS.md); here, a debug build shares two threads
    // with 2,000 attackers, so the bound is the suite's PROMPT.
    assert!(p99 < PROMPT, "pinger p99 {p99:?}");
    server.shutdown().await;
}

/// Counts application packets.
struct Counter(Arc<tokio::sync::Semaphore>);

impl Handler for Counter {
    type State = ();
    fn on_packet(&self, _: &ClientHandle, _: &mut (), _: peng3dnet::Packet) {
        self.0.add_permits(1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_frames_once_consumed_give_their_buffers_back() {
    let (_guard, _mark) = one_server_at_a_time().await;
    let seen = Arc::new(tokio::sync::Semaphore::new(0));
    let server = Server::builder()
        .conntype("bulk")
        .handler(Counter(seen.clone()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut frame = wire(&[settype_frame(&ConnType::from_name("bulk"))]);
    frame.extend(raw_frame(64, 0, &zero_bin(4 << 20)));
    let before = rss();
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut a = Attacker::connect_hello(addr).await;
        a.send(&frame).await;
        conns.push(a);
    }
    drop(frame);
    let _ = timeout(Duration::from_secs(30), seen.acquire_many(20))
        .await
        .unwrap();
    let grown = rss().saturating_sub(before);
    // Before: each connection kept its 4 MiB read buffer, 80 MiB in all.
    assert!(grown < 40 << 20, "RSS grew {} MiB", grown >> 20);
    drop(conns);
    server.shutdown().await;
}
