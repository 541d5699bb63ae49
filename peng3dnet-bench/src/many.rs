//! `peng3dnet-bench many`: a list of distinct targets pinged once each, the way a server
//! browser or a fleet check does it, through the library's `ping_many` (in this process)
//! or through the `peng3dnet` CLI (`--cli PATH`: `ping -c 1 --json -f LIST`, its output to a
//! file, both in the temporary directory). Prints the wall
//! time, targets per second, peak RSS, and how each kind of target was reported.
//!
//! Targets are distinct loopback addresses 127.a.b.c of the server's port (the server must
//! listen on 0.0.0.0); with `--closed-percent` some are on a port where nothing listens,
//! and with `--silent-percent` some are on a listener of ours that accepts (in the kernel)
//! but never says hello.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use peng3dnet::many::{ping_many, ManyOptions};
use peng3dnet_cli::{error, parse_seconds, Exit};
use tokio::net::TcpSocket;

/// `many` arguments.
#[derive(Debug, Args)]
pub struct ManyArgs {
    /// Port of the live server (listening on 0.0.0.0).
    #[arg(long, value_name = "PORT")]
    pub port: u16,
    /// Number of targets.
    #[arg(short = 'n', long = "targets", default_value = "10000", value_parser = clap::value_parser!(u64).range(1..=4_000_000))]
    pub targets: u64,
    /// Percent of the targets on a closed port.
    #[arg(long, default_value = "0", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub closed_percent: u8,
    /// Percent of the targets on a listener that never answers.
    #[arg(long, default_value = "0", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub silent_percent: u8,
    /// Time allowed per target.
    #[arg(short = 'W', long = "timeout", value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// Targets at once (default: the library's, from the open-files limit).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Index of the first target's address (127.0.0.1 is 0), for runs on addresses no run
    /// has used lately. The kernel keeps state per destination for a while (TIME_WAIT
    /// entries, TCP metrics), and a run on fresh addresses costs more than one on the
    /// addresses of a run a moment before (BENCHMARKS.md, "Many targets at once").
    #[arg(long, value_name = "N", default_value = "0", value_parser = clap::value_parser!(u64).range(0..=12_000_000))]
    pub first: u64,
    /// Run this `peng3dnet` binary (`ping -c 1 --json -f LIST`) instead of the library in
    /// process.
    #[arg(long, value_name = "PATH")]
    pub cli: Option<String>,
}

/// What a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Live,
    Closed,
    Silent,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Live => "live",
            Kind::Closed => "closed",
            Kind::Silent => "silent",
        }
    }
}

/// The i-th distinct loopback address (127.0.0.1 onwards, skipping .0 and .255).
fn loopback(i: u64) -> String {
    let n = i / 254;
    format!("127.{}.{}.{}", (n / 256) % 256, n % 256, 1 + i % 254)
}

/// Peak resident set size: of this process (`VmHWM`), in KiB.
fn own_peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak RSS of the largest child waited for, in KiB.
fn children_peak_rss_kib() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes only the struct passed.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
            return None;
        }
        u64::try_from(usage.ru_maxrss).ok()
    }
    #[cfg(not(unix))]
    None
}

/// `peng3dnet-bench many`.
pub(crate) async fn run(args: ManyArgs) -> Exit {
    let n = args.targets;
    let want_silent = args.silent_percent > 0;
    // A closed port: bound then dropped. The silent listener: a big backlog, never accepted.
    let closed_port = match std::net::TcpListener::bind("0.0.0.0:0") {
        Ok(l) => l.local_addr().map(|a| a.port()).unwrap_or(1),
        Err(e) => {
            error(format!("cannot find a free port: {e}"));
            return Exit::System;
        }
    };
    let silent = if want_silent {
        let listener = TcpSocket::new_v4().and_then(|s| {
            s.bind(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))?;
            s.listen(65535)
        });
        match listener {
            Ok(l) => Some(l),
            Err(e) => {
                error(format!("cannot open the silent listener: {e}"));
                return Exit::System;
            }
        }
    } else {
        None
    };
    let silent_port = silent
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    // Spread the kinds over the list: of every 100 targets, the first closed_percent are
    // closed, the last silent_percent silent.
    let mut kinds = Vec::with_capacity(n as usize);
    let mut targets = Vec::with_capacity(n as usize);
    for i in 0..n {
        let r = i % 100;
        let kind = if r < u64::from(args.closed_percent) {
            Kind::Closed
        } else if r >= 100 - u64::from(args.silent_percent).min(100) {
            Kind::Silent
        } else {
            Kind::Live
        };
        let port = match kind {
            Kind::Live => args.port,
            Kind::Closed => closed_port,
            Kind::Silent => silent_port,
        };
        targets.push(format!("{}:{port}", loopback(args.first + i)));
        kinds.push(kind);
    }
    let count = |k: Kind| kinds.iter().filter(|x| **x == k).count() as u64;
    let (closed_n, silent_n) = (count(Kind::Closed), count(Kind::Silent));
    // The CLI's input, made before the clock starts (a user has the file already).
    let list: String = targets.iter().map(|t| format!("{t}\n")).collect();
    // The wall time: from the start of `ping_many` to its last result (library), or from
    // the CLI's start to its exit; the bench's own writing of the list and reading of the
    // output are not the CLI's time.
    let wall;
    // Per kind: reason -> count ("ok" for a reply).
    let mut outcome: BTreeMap<Kind, BTreeMap<String, u64>> = BTreeMap::new();
    let rss_kib;
    match &args.cli {
        None => {
            let started = Instant::now();
            let mut options = ManyOptions {
                concurrency: args.concurrency,
                spacing: Duration::ZERO,
                ..ManyOptions::default()
            };
            options.ping.timeout = args.timeout;
            // The results are read in a task, as the `many` docs advise: read on the
            // `block_on` thread, every result would wake that thread from another.
            let mut results = ping_many(targets.clone(), options);
            let reading = tokio::spawn(async move {
                let mut reasons = Vec::with_capacity(n as usize);
                while let Some(done) = results.next().await {
                    let reason = match &done.result {
                        Ok(_) => "ok".to_owned(),
                        Err(e) if e.is_refused() => "refused".to_owned(),
                        Err(peng3dnet::PingError::Timeout { phase, .. }) => {
                            format!("timeout {phase}")
                        }
                        Err(e) => e.to_string(),
                    };
                    reasons.push((done.index, reason));
                }
                reasons
            });
            let Ok(reasons) = reading.await else {
                error("the task reading the results failed");
                return Exit::System;
            };
            wall = started.elapsed();
            for (index, reason) in reasons {
                *outcome
                    .entry(kinds[index])
                    .or_default()
                    .entry(reason)
                    .or_default() += 1;
            }
            rss_kib = own_peak_rss_kib();
        }
        Some(cli) => {
            // The list and the output are files, as for a cron job's run: a reader of the
            // output on the other end of a pipe would take CPU from the run it measures
            // (two cores here), and the CLI would wait for it when the pipe is full.
            let dir = std::env::temp_dir();
            let stem = format!("peng3dnet-bench-many-{}", std::process::id());
            let list_path = dir.join(format!("{stem}.list"));
            let out_path = dir.join(format!("{stem}.json"));
            let files = std::fs::write(&list_path, list.as_bytes())
                .and_then(|()| std::fs::File::create(&out_path));
            let out_file = match files {
                Ok(file) => file,
                Err(e) => {
                    error(format!(
                        "cannot write the list or the output in {}: {e}",
                        dir.display()
                    ));
                    return Exit::System;
                }
            };
            let mut command = Command::new(cli);
            command.args(["ping", "-c", "1", "--json", "-f"]);
            command.arg(&list_path);
            command.arg("-W");
            command.arg(args.timeout.as_secs_f64().to_string());
            if let Some(c) = args.concurrency {
                command.args(["--concurrency", &c.to_string()]);
            }
            command
                .stdin(Stdio::null())
                .stdout(out_file)
                .stderr(Stdio::null());
            let started = Instant::now();
            let status = tokio::task::spawn_blocking(move || command.status()).await;
            wall = started.elapsed();
            let output = std::fs::read(&out_path);
            let _ = std::fs::remove_file(&list_path);
            let _ = std::fs::remove_file(&out_path);
            let output = match (status, output) {
                (Ok(Ok(_)), Ok(output)) => output,
                (Ok(Err(e)), _) => {
                    error(format!("cannot run {cli}: {e}"));
                    return Exit::System;
                }
                _ => {
                    error("the CLI did not finish, or its output could not be read");
                    return Exit::System;
                }
            };
            let index: std::collections::HashMap<&str, usize> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| (t.as_str(), i))
                .collect();
            // One error record per failed ping (with its kind), one summary per target.
            let mut reasons: std::collections::HashMap<usize, String> = Default::default();
            for line in String::from_utf8_lossy(&output).lines() {
                let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let Some(&i) = record["target"].as_str().and_then(|t| index.get(t)) else {
                    continue;
                };
                match record["type"].as_str() {
                    Some("error") => {
                        let kind = record["kind"].as_str().unwrap_or("?").to_owned();
                        reasons.insert(i, kind);
                    }
                    Some("summary") if record["received"].as_u64() == Some(1) => {
                        reasons.insert(i, "ok".into());
                    }
                    Some("summary") => {
                        reasons.entry(i).or_insert_with(|| "lost".into());
                    }
                    _ => {}
                }
            }
            for (i, kind) in kinds.iter().enumerate() {
                let reason = reasons.remove(&i).unwrap_or_else(|| "missing".into());
                *outcome.entry(*kind).or_default().entry(reason).or_default() += 1;
            }
            rss_kib = children_peak_rss_kib();
        }
    }
    drop(silent);
    let mut text = format!(
        "targets {n} ({} live, {closed_n} closed, {silent_n} silent), timeout {} s\n\
         wall {:.3} s, {:.0} targets/s, peak RSS {}\n",
        n - closed_n - silent_n,
        args.timeout.as_secs_f64(),
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        rss_kib.map_or_else(
            || "unknown".into(),
            |k| format!("{:.1} MiB", k as f64 / 1024.0)
        ),
    );
    let mut live_down = 0;
    for (kind, reasons) in &outcome {
        let parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{r} {c}")).collect();
        text.push_str(&format!("{}: {}\n", kind.name(), parts.join(", ")));
        if *kind == Kind::Live {
            live_down = reasons
                .iter()
                .filter(|(r, _)| *r != "ok")
                .map(|(_, c)| c)
                .sum();
        }
    }
    text.push_str(&format!("live targets reported down: {live_down}\n"));
    print!("{text}");
    if live_down == 0 {
        Exit::Ok
    } else {
        Exit::NoAnswer
    }
}
