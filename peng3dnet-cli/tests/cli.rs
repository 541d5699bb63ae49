//! The `peng3dnet` command-line tool, run as a process: every subcommand, the output
//! formats, the exit statuses, Ctrl-C and graceful shutdown.
//!
//! Servers are started by the tests themselves (`peng3dnet serve --bind 127.0.0.1:0`,
//! whose `listening on ADDR` line gives the port). Nothing sleeps to synchronise: the
//! tests wait for output lines or process exits, each bounded by a timeout.

#[path = "../../peng3dnet/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command as StdCommand, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use peng3dnet::client::Client;
use peng3dnet::ping::{ping_server, PingOptions};
use peng3dnet::value::get;
use peng3dnet::{CloseReason, Value};
use predicates::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");
/// Upper bound for any single step; tests normally finish far sooner.
const LIMIT: Duration = Duration::from_secs(15);

fn cmd() -> Command {
    let mut c = Command::cargo_bin("peng3dnet").unwrap();
    c.timeout(LIMIT);
    c
}

/// Reads a child's stdout line by line on a thread.
struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    fn new(stdout: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// Lines up to and including the first that satisfies `pred`.
    fn until(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let done = pred(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("no matching line ({e}); got {seen:?}"),
            }
        }
    }

    /// Every remaining line, until the child closes its stdout.
    fn rest(&self) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return seen,
                Err(e) => panic!("stdout not closed ({e}); got {seen:?}"),
            }
        }
    }
}

/// A spawned child, killed on drop if still running.
struct Proc {
    child: Child,
    lines: Lines,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = StdCommand::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Lines::new(child.stdout.take().unwrap());
        Proc { child, lines }
    }

    fn signal(&self, sig: &str) {
        let ok = StdCommand::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut s).unwrap();
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `peng3dnet serve --bind 127.0.0.1:0 EXTRA...`, with its address.
fn serve(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let proc = Proc::spawn(&args);
    let lines = proc.lines.until(|l| l.starts_with("listening on "));
    let addr = lines.last().unwrap()["listening on ".len()..].to_owned();
    (proc, addr)
}

/// A port on which nothing listens.
fn refused_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// No panics, backtraces or Debug output on stderr.
fn assert_clean_stderr(stderr: &str) {
    for bad in ["panicked", "backtrace", "Error {", "Os {", "kind:"] {
        assert!(!stderr.contains(bad), "stderr has {bad:?}: {stderr}");
    }
}

/// Whether `text` matches the regular expression `re`.
fn matches(re: &str, text: &str) -> bool {
    predicate::str::is_match(re).unwrap().eval(text)
}

/// Regex escaping for the characters a target can hold.
fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '.' | '[' | ']' | ':' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

const REPLY: &str = r"^reply from 127\.0\.0\.1:\d+: seq=\d+ time=\d+(\.\d+)? ms( \(.*\))?$";

/// Sequence numbers of the reply lines, checking their format.
fn reply_seqs(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter(|l| l.starts_with("reply from"))
        .map(|l| {
            assert!(matches(REPLY, l), "bad reply line {l:?}");
            l.split("seq=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// Checks a target's summary block (with an rtt line and no loss) and returns
/// (transmitted, received).
fn assert_summary(text: &str, target: &str) -> (u64, u64) {
    let re = format!(
        r"(?m)^--- {} ping statistics ---\n\d+ packets transmitted, \d+ received, 0% packet loss, time \d+ms\nrtt min/avg/max/mdev = \d+\.\d{{3}}/\d+\.\d{{3}}/\d+\.\d{{3}}/\d+\.\d{{3}} ms$",
        escape(target)
    );
    assert!(matches(&re, text), "no summary for {target} in:\n{text}");
    let header = format!("--- {target} ping statistics ---\n");
    let counts = text.split(&header).nth(1).unwrap();
    let words: Vec<&str> = counts.split_whitespace().collect();
    (
        words[0].parse().unwrap(),
        words[3].trim_end_matches(',').parse().unwrap(),
    )
}

#[test]
fn version_and_help_of_every_subcommand() {
    cmd()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
    for sub in ["ping", "status", "serve", "demo"] {
        cmd()
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
    cmd().args(["ping", "--help"]).assert().success().stdout(
        predicate::str::contains("schema_version").and(predicate::str::contains("loss_percent")),
    );
}

#[test]
fn bad_arguments_exit_3() {
    let cases: &[&[&str]] = &[
        &[],
        &["--bogus"],
        &["ping"],
        &["ping", "-c", "0", "localhost"],
        &["ping", "-i", "abc", "localhost"],
        &["ping", "-W", "-1", "localhost"],
        &["ping", "-4", "-6", "localhost"],
        &["ping", "--data", "novalue", "localhost"],
        &["ping", "host:notaport"],
        &["status"],
        &["serve", "--data-file", "/nonexistent/data.json"],
        &["nosuchcommand"],
        // Durations past the cap are refused, not a panic on instant overflow.
        &["ping", "-w", "1e19", "localhost"],
        &["ping", "-c", "1", "-W", "1e19", "localhost"],
        &["status", "-W", "1e19", "localhost"],
        &["ping", "-i", "1e12", "localhost"],
    ];
    for args in cases {
        let out = cmd().args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr_of(&out));
        assert!(!stderr_of(&out).is_empty(), "{args:?}");
        assert_clean_stderr(&stderr_of(&out));
    }
}

#[test]
fn demo_works_alone() {
    let out = cmd().arg("demo").output().unwrap();
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", stderr_of(&out));
    assert!(stdout.contains("name: peng3dnet demo"), "{stdout}");
    assert_eq!(reply_seqs(&stdout), [0, 1, 2, 3, 4], "{stdout}");
    let target = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo server listening on "))
        .unwrap();
    assert_eq!(assert_summary(&stdout, target), (5, 5));
}

#[test]
fn ping_prints_replies_and_summary_like_ping() {
    let (_server, addr) = serve(&[]);
    let out = cmd()
        .args(["ping", "-c", "3", "-i", "0.1", &addr])
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", stderr_of(&out));
    assert_eq!(reply_seqs(&stdout), [0, 1, 2], "{stdout}");
    assert_eq!(assert_summary(&stdout, &addr), (3, 3));
    assert!(!stdout.contains("p50"), "percentiles only with -v");
}

#[test]
fn session_verbose_and_quiet() {
    let (_server, addr) = serve(&[]);
    let out = cmd()
        .args(["ping", "-c", "3", "-i", "0.1", "--session", "-v", &addr])
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(reply_seqs(&stdout), [0, 1, 2], "{stdout}");
    assert_eq!(assert_summary(&stdout, &addr), (3, 3));
    let p = r"(?m)^rtt p50/p90/p99 = \d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3} ms$";
    assert!(matches(p, &stdout), "{stdout}");

    let out = cmd()
        .args(["ping", "-c", "2", "-i", "0.1", "-q", &addr])
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(!stdout.contains("reply from"), "{stdout}");
    assert_eq!(assert_summary(&stdout, &addr), (2, 2));
}

#[test]
fn deadline_ends_the_run() {
    let (_server, addr) = serve(&[]);
    let out = cmd()
        .args(["ping", "-w", "0.5", "-i", "0.1", &addr])
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let (transmitted, received) = assert_summary(&stdout, &addr);
    assert!(
        (3..=7).contains(&transmitted) && received == transmitted,
        "{stdout}"
    );
}

#[test]
fn one_target_refused_exits_1() {
    let (_server, addr) = serve(&[]);
    let refused = refused_addr();
    let out = cmd()
        .args(["ping", "-c", "2", "-i", "0.1", &addr, &refused])
        .output()
        .unwrap();
    let (stdout, stderr) = (stdout_of(&out), stderr_of(&out));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(assert_summary(&stdout, &addr), (2, 2));
    let lost = format!(
        "--- {refused} ping statistics ---\n2 packets transmitted, 0 received, +2 errors, 100% packet loss, time "
    );
    assert!(stdout.contains(&lost), "{stdout}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        2,
        "one line per failed ping: {stderr}"
    );
    assert_clean_stderr(&stderr);
}

#[test]
fn unresolvable_name_exits_2() {
    let (_server, addr) = serve(&[]);
    let out = cmd()
        .args(["ping", "-c", "1", &addr, "nonexistent.invalid"])
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot resolve nonexistent.invalid"),
        "{stderr}"
    );
    assert_clean_stderr(&stderr);
    assert_eq!(assert_summary(&stdout_of(&out), &addr), (1, 1));

    cmd()
        .args(["status", "nonexistent.invalid"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot resolve"));
    // No IPv6 address for an IPv4 literal.
    cmd()
        .args(["ping", "-6", "-c", "1", &addr])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no IPv6 address"));
}

#[test]
fn bind_failure_exits_4() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = cmd().args(["serve", "--bind", &addr]).output().unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&format!("cannot bind {addr}")), "{stderr}");
    assert_clean_stderr(&stderr);
}

#[test]
fn json_output_parses_with_schema_version() {
    let (_server, addr) = serve(&["--data", "name=json-test"]);
    let refused = refused_addr();
    let out = cmd()
        .args([
            "ping", "-c", "2", "-i", "0.1", "--json", "--data", "who=me", &addr, &refused,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let records: Vec<serde_json::Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        records.iter().all(|r| r["schema_version"] == 1),
        "{records:?}"
    );
    let of = |t: &'static str| records.iter().filter(move |r| r["type"] == t);
    assert_eq!(of("reply").count(), 2);
    for r in of("reply") {
        assert_eq!(r["target"], addr.as_str());
        assert!(r["time_ms"].as_f64().unwrap() >= 0.0);
        assert!(r["seq"].is_u64() && r["connect_ms"].is_f64() && r["total_ms"].is_f64());
    }
    assert_eq!(of("error").count(), 2);
    for e in of("error") {
        assert_eq!(e["kind"], "refused");
        assert!(e["message"].as_str().unwrap().contains("refused"));
    }
    let summaries: Vec<_> = of("summary").collect();
    assert_eq!(summaries.len(), 2);
    let up = summaries
        .iter()
        .find(|s| s["target"] == addr.as_str())
        .unwrap();
    assert_eq!(
        (up["transmitted"].as_u64(), up["received"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(up["loss_percent"], 0);
    for key in ["min", "avg", "max", "mdev", "p50", "p90", "p99"] {
        assert!(up["rtt_ms"][key].is_number(), "{key}: {up}");
    }
    let down = summaries
        .iter()
        .find(|s| s["target"] == refused.as_str())
        .unwrap();
    assert_eq!(down["loss_percent"], 100);
    assert!(down["rtt_ms"].is_null());

    let out = cmd().args(["status", "--json", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_str(stdout_of(&out).trim()).unwrap();
    assert_eq!(status["schema_version"], 1);
    assert_eq!(status["type"], "status");
    assert_eq!(status["data"]["name"], "json-test");
    assert_eq!(status["data"]["peng3dnet"]["protoversion"], 2);
    assert!(status["data"].get("oldmsg").is_none());

    let out = cmd().args(["status", "--json", &refused]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_str(stdout_of(&out).trim()).unwrap();
    assert_eq!(
        (error["type"].as_str(), error["kind"].as_str()),
        (Some("error"), Some("refused"))
    );
}

#[test]
fn status_shows_data_readably() {
    let (_server, addr) = serve(&[
        "--data",
        "name=lobby",
        "--data",
        r#"limits={"players":16,"tags":["a","b"]}"#,
    ]);
    let out = cmd().args(["status", &addr]).output().unwrap();
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        matches(r"(?m)^latency: \d+(\.\d+)? ms$", &stdout),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("address: {addr}\n")), "{stdout}");
    assert!(stdout.contains("\n  name: lobby\n"), "{stdout}");
    assert!(
        stdout.contains("\n  limits:\n    players: 16\n    tags: [a, b]\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n  peng3dnet:\n    version: 0.1.3a0\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\n  clients: 1\n"), "{stdout}");
}

#[tokio::test]
async fn serve_data_files_dynamic_fields_and_no_writeback() {
    let dir = std::env::temp_dir().join(format!("peng3dnet-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("data.toml");
    std::fs::write(
        &toml,
        "name = \"from-file\"\nmotd = \"hi\"\n[nested]\nn = 1\n",
    )
    .unwrap();
    let json = dir.join("data.json");
    std::fs::write(&json, r#"{"name": "json-file", "list": [1, 2]}"#).unwrap();

    let (_server, addr) = serve(&[
        "--data-file",
        toml.to_str().unwrap(),
        "--data",
        "name=override",
        "--no-writeback",
    ]);
    let reply = ping_server(&addr, &PingOptions::default()).await.unwrap();
    assert_eq!(reply.get("name").and_then(Value::as_str), Some("override"));
    assert_eq!(reply.get("motd").and_then(Value::as_str), Some("hi"));
    assert_eq!(
        reply
            .get("nested")
            .and_then(|n| get(n, "n"))
            .and_then(Value::as_u64),
        Some(1)
    );
    assert_eq!(reply.get("clients").and_then(Value::as_u64), Some(1));
    assert!(reply.get("uptime").and_then(Value::as_f64).is_some());
    assert_eq!(reply.get("pings").and_then(Value::as_u64), Some(1));
    assert!(reply.echo().is_none(), "--no-writeback");
    let again = ping_server(&addr, &PingOptions::default()).await.unwrap();
    assert_eq!(again.get("pings").and_then(Value::as_u64), Some(2));

    let (_server2, addr2) = serve(&["--data-file", json.to_str().unwrap()]);
    let reply = ping_server(&addr2, &PingOptions::default()).await.unwrap();
    assert_eq!(reply.get("name").and_then(Value::as_str), Some("json-file"));
    assert!(reply.echo().is_some(), "write-back is on by default");

    let bad = dir.join("data.yaml");
    std::fs::write(&bad, "name: x\n").unwrap();
    cmd()
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--data-file",
            bad.to_str().unwrap(),
        ])
        .assert()
        .code(3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_prints_the_summary() {
    let (_server, addr) = serve(&[]);
    let mut ping = Proc::spawn(&["ping", "-c", "100", "-i", "0.2", &addr]);
    let mut seen = ping.lines.until(|l| l.starts_with("reply from"));
    ping.signal("-INT");
    let status = ping.wait();
    seen.extend(ping.lines.rest());
    let stdout = seen.join("\n");
    assert_eq!(status.code(), Some(0), "{stdout}\n{}", ping.stderr());
    let (transmitted, received) = assert_summary(&stdout, &addr);
    assert!(
        (1..100).contains(&transmitted) && received >= 1,
        "interrupted early: {stdout}"
    );
}

#[tokio::test]
async fn sigterm_shuts_serve_down_gracefully() {
    let (mut server, addr) = serve(&[]);
    let client = Client::builder().connect(&addr).await.unwrap();
    server.signal("-TERM");
    let reason = client.wait_for_close(LIMIT).await.unwrap();
    assert_eq!(reason, Some(CloseReason::ServerShutdown));
    // Nothing else runs on this runtime now: a blocking wait is fine.
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
}

/// SIGTERM with a thousand clients connected and pings in flight: every client gets
/// closeconn `servershutdown` after the pongs of every ping the server counted (the
/// built-in `pings` counter), and the process exits within its drain bound (write timeout
/// plus close linger, 12 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_thousand_pinging_clients_loses_nothing() {
    const CLIENTS: usize = 1000;
    let (mut server, addr) = serve(&[]);
    let pingers = common::drain::connect_many(addr.parse().unwrap(), CLIENTS).await;
    let outcomes = common::drain::run_all(pingers);
    let signalled = Instant::now();
    server.signal("-TERM");
    let (pongs, max_counted, lost) = common::drain::tally(outcomes).await;
    assert!(
        lost.is_empty(),
        "{} of {CLIENTS} lost: {lost:?}",
        lost.len()
    );
    // The counter is taken before each pong is written: a pong lost after it was counted
    // leaves the total of pongs below the highest count seen.
    assert_eq!(pongs, max_counted);
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait();
        (status, server.stderr())
    });
    let (status, stderr) = status.await.unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        signalled.elapsed() < Duration::from_secs(12),
        "{:?}",
        signalled.elapsed()
    );
}

/// A TLS client at a plain server: the server logs that the client speaks TLS (instead of
/// refusing "a frame of 369295616 bytes"), and the client is told to drop --tls.
#[test]
fn a_plain_serve_recognises_a_tls_client() {
    let pki = common::pki::Pki::new("cli-clienthello");
    let (ca, _) = pki.ca("ca");
    let (cert, _) = pki.leaf("server", &ca, &["localhost"], false);
    let (mut server, addr) = serve(&[]);
    let out = cmd()
        .args(["ping", "-c", "1", "-W", "5", "--ca"])
        .arg(&cert)
        .arg(&addr)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("the server does not use TLS (its answer is not a TLS record): drop --tls"),
        "{stderr}"
    );
    assert_clean_stderr(&stderr);
    server.signal("-TERM");
    assert_eq!(server.wait().code(), Some(0));
    let log = server.stderr();
    assert!(
        log.contains(
            "the client speaks TLS (it sent a TLS ClientHello), but this server does not use TLS"
        ),
        "{log}"
    );
    assert!(!log.contains("369295616"), "{log}");
}

/// Terminal controls a hostile server may put in its strings: retitle, clear, CSI (C1).
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J\u{9b}2J\x7f";

fn assert_no_terminal_controls(text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| c != '\n' && matches!(c as u32, 0..=0x1f | 0x7f..=0x9f)),
        "terminal controls in output: {text:?}"
    );
}

#[test]
fn status_escapes_a_hostile_servers_keys_and_values() {
    let data = format!("{HOSTILE}key={HOSTILE}value");
    let (_server, addr) = serve(&["--data", &data]);
    let out = cmd().args(["status", &addr]).output().unwrap();
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_no_terminal_controls(&stdout);
    assert!(
        stdout.contains(r"\x1b]0;pwned\x07\x1b[2J\u{9b}2J\x7fkey: "),
        "{stdout}"
    );
    assert!(
        stdout.contains(r"\x1b]0;pwned\x07\x1b[2J\u{9b}2J\x7fvalue"),
        "{stdout}"
    );
}

/// A server that says hello, then closes every connection with a hostile reason.
fn hostile_closer() -> String {
    use peng3dnet::frame::FrameCodec;
    use peng3dnet::protocol::{closeconn_frame, hello_frame};
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let codec = FrameCodec::default();
    let mut wire = codec.to_bytes(hello_frame()).unwrap().to_vec();
    let reason = CloseReason::from(HOSTILE);
    wire.extend_from_slice(&codec.to_bytes(closeconn_frame(Some(&reason))).unwrap());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let wire = wire.clone();
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(LIMIT));
                let _ = stream.write_all(&wire);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let _ = std::io::copy(&mut stream, &mut std::io::sink());
            });
        }
    });
    addr
}

#[test]
fn close_reasons_from_a_hostile_server_are_escaped() {
    let addr = hostile_closer();
    for args in [&["ping", "-c", "1", &addr][..], &["status", &addr][..]] {
        let out = cmd().args(args).output().unwrap();
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_no_terminal_controls(&stderr);
        assert_no_terminal_controls(&stdout_of(&out));
        assert!(stderr.contains(r"\x1b]0;pwned\x07"), "{args:?}: {stderr}");
        assert_clean_stderr(&stderr);
    }
}

/// A reader that goes away (`ping ... | head -1`) ends an endless ping: the next batch of
/// reply lines fails to write and the tool exits with status 4, not pinging on unread.
#[test]
fn a_closed_stdout_ends_an_endless_ping() {
    let (_server, addr) = serve(&[]);
    let mut child = StdCommand::new(BIN)
        .args(["ping", "-i", "0.05", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("reply from") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "stdout closed early"
        );
    }
    drop(stdout);
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("ping went on with nobody reading");
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(4));
}
