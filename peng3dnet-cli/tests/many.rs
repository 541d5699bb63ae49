//! `ping` and `status` over lists of targets, run as a process: target files and stdin,
//! fping-style output (-a, -u, -C, prefixed reply lines, summaries at the end), the status
//! table and its sorting, the file-descriptor limit, a mixed list of live, closed and
//! silent targets, iputils' -c/-w rule, SIGQUIT, and arguments a newcomer gets wrong.
//!
//! Servers are started by the tests (`peng3dnet serve`, whose `listening on ADDR` line
//! gives the port). Nothing sleeps to synchronise: the tests wait for lines or exits,
//! each bounded by a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::Command;

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");
const LIMIT: Duration = Duration::from_secs(30);

fn cmd() -> Command {
    let mut c = Command::cargo_bin("peng3dnet").unwrap();
    c.timeout(LIMIT);
    c
}

/// Lines of a child's stream, read on a thread.
fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line that satisfies `pred`, returning it.
fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no matching line: {e}"),
        }
    }
}

/// A child killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `peng3dnet serve --bind BIND EXTRA...` and the port it listens on. Without the
/// per-address cap: every list here is one server behind many loopback addresses, pinged
/// from 127.0.0.1 hundreds at a time.
fn serve(bind: &str, extra: &[&str]) -> (Proc, u16) {
    let mut child = StdCommand::new(BIN)
        .args(["serve", "--bind", bind, "--max-connections-per-addr", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    let line = wait_line(&rx, |l| l.starts_with("listening on "));
    let port = line.rsplit(':').next().unwrap().parse().unwrap();
    (Proc(child), port)
}

/// A port on which nothing listens (on any 127.x address).
fn closed_port() -> u16 {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    l.local_addr().unwrap().port()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn assert_clean_stderr(stderr: &str) {
    for bad in ["panicked", "backtrace", "Error {", "Os {", "kind:"] {
        assert!(!stderr.contains(bad), "stderr has {bad:?}: {stderr}");
    }
}

#[test]
fn ping_reads_targets_from_a_file_and_stdin_and_prints_summaries_at_the_end() {
    let (_server, port) = serve("127.0.0.1:0", &[]);
    let closed = closed_port();
    let dir = std::env::temp_dir().join(format!("peng3dnet-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("targets.txt");
    let live = format!("127.0.0.1:{port}");
    let dead = format!("127.0.0.1:{closed}");
    std::fs::write(&file, format!("# fleet\n{live}  # lobby\n\n{dead}\n")).unwrap();

    for (args, stdin) in [
        (
            vec!["ping", "-c", "2", "-i", "0.1", "-f", file.to_str().unwrap()],
            None,
        ),
        (
            vec!["ping", "-c", "2", "-i", "0.1", "-f", "-"],
            Some(std::fs::read(&file).unwrap()),
        ),
    ] {
        let mut c = cmd();
        c.args(&args);
        if let Some(input) = stdin {
            c.write_stdin(input);
        }
        let out = c.output().unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        // Reply lines start with the target as given, fping style.
        let replies: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains("reply from"))
            .collect();
        assert_eq!(replies.len(), 2, "{stdout}");
        for r in &replies {
            assert!(
                r.starts_with(&format!("{live} : reply from {live}: seq=")),
                "{r}"
            );
        }
        // Every summary comes after every reply line, in the order of the list.
        let last_reply = stdout.rfind("reply from").unwrap();
        let live_summary = stdout
            .find(&format!("--- {live} ping statistics ---"))
            .unwrap();
        let dead_summary = stdout
            .find(&format!("--- {dead} ping statistics ---"))
            .unwrap();
        assert!(
            last_reply < live_summary && live_summary < dead_summary,
            "{stdout}"
        );
        assert!(stdout.contains("2 packets transmitted, 2 received, 0% packet loss"));
        assert!(stdout.contains("2 packets transmitted, 0 received, +2 errors, 100% packet loss"));
        assert!(stderr.contains("connection refused"), "{stderr}");
        assert_clean_stderr(&stderr);
    }

    let out = cmd()
        .args([
            "ping",
            "-c",
            "1",
            "-f",
            dir.join("none.txt").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn alive_unreachable_and_the_grid_of_times() {
    let (_server, port) = serve("127.0.0.1:0", &[]);
    let live = format!("127.0.0.1:{port}");
    let dead = format!("127.0.0.1:{}", closed_port());
    let run = |flags: &[&str]| {
        let out = cmd()
            .args(["ping", "-i", "0.05"])
            .args(flags)
            .args([&live, &dead])
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout))
    };
    assert_eq!(run(&["-c", "1", "-a"]), (Some(1), format!("{live}\n")));
    assert_eq!(run(&["-c", "1", "-u"]), (Some(1), format!("{dead}\n")));
    let (code, grid) = run(&["-C", "3"]);
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = grid.lines().collect();
    assert_eq!(lines.len(), 2, "{grid}");
    assert_eq!(lines[1], format!("{dead} : - - -"));
    let times: Vec<&str> = lines[0]
        .strip_prefix(&format!("{live} : "))
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(times.len(), 3, "{grid}");
    for t in times {
        assert!(t.parse::<f64>().is_ok_and(|ms| ms >= 0.0), "{grid}");
    }
}

#[test]
fn status_of_several_servers_is_one_table_sorted_and_json_records() {
    let (_a, port_a) = serve(
        "127.0.0.1:0",
        &[
            "--data",
            "name=alpha",
            "--data",
            "motd=hello",
            "--data",
            "maxclients=16",
        ],
    );
    let (_b, port_b) = serve(
        "127.0.0.1:0",
        &["--data", "name=beta", "--data", "version=\"2.0\""],
    );
    let a = format!("127.0.0.1:{port_a}");
    let b = format!("127.0.0.1:{port_b}");
    let dead = format!("127.0.0.1:{}", closed_port());
    let out = cmd()
        .args(["status", &dead, &b, &a, "--sort", "name"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for col in [
        "SERVER", "NAME", "MOTD", "CLIENTS", "VERSION", "LATENCY", "STATE",
    ] {
        assert!(lines[0].contains(col), "{stdout}");
    }
    // By name: alpha, beta, then the one that did not answer (no name).
    assert!(
        lines[1].starts_with(&a) && lines[1].contains("alpha"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("hello") && lines[1].contains("/16"),
        "{stdout}"
    );
    assert!(lines[2].starts_with(&b) && lines[2].contains("beta") && lines[2].contains("2.0"));
    assert!(lines[3].starts_with(&dead) && lines[3].contains("connection refused"));
    assert!(
        lines[1].ends_with(" ok") && lines[2].ends_with(" ok"),
        "{stdout}"
    );

    // By latency (the default): the answering servers first, the dead one last.
    let out = cmd().args(["status", &dead, &b, &a]).output().unwrap();
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[3].starts_with(&dead), "{stdout}");
    let ms = |l: &str| -> f64 {
        let cell = l
            .split("  ")
            .map(str::trim)
            .find(|c| c.ends_with(" ms"))
            .unwrap();
        cell.trim_end_matches(" ms").parse().unwrap()
    };
    assert!(ms(lines[1]) <= ms(lines[2]), "{stdout}");

    let out = cmd()
        .args(["status", "--json", &a, &dead])
        .output()
        .unwrap();
    let records: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["type"], "status");
    assert_eq!(records[0]["target"], a.as_str());
    assert_eq!(records[0]["data"]["name"], "alpha");
    assert_eq!(records[1]["type"], "error");
    assert_eq!(records[1]["kind"], "refused");
}

/// A list of distinct 127.x addresses of one server bound to 0.0.0.0.
fn loopback_list(port: u16, n: usize) -> String {
    (0..n)
        .map(|i| format!("127.0.{}.{}:{port}\n", i / 250, 1 + i % 250))
        .collect()
}

#[test]
fn a_low_fd_limit_is_backpressure_not_false_downs() {
    let (_server, port) = serve("0.0.0.0:0", &[]);
    let n = 400;
    let list = loopback_list(port, n);
    // The default concurrency from the (lowered) limit, and a concurrency far above it:
    // connects that fail with EMFILE wait and are made again.
    for extra in ["", "--concurrency 1000"] {
        let script = format!("ulimit -n 64; exec {BIN} ping -c 1 -W 5 -a {extra} -f -");
        let mut child = StdCommand::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = list.clone();
        let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{extra}: {} alive of {n}; stderr: {}",
            stdout.lines().count(),
            stderr.lines().take(5).collect::<Vec<_>>().join("\n")
        );
        assert_eq!(stdout.lines().count(), n, "{extra}");
        assert!(!stderr.contains("Too many open files"), "{stderr}");
    }
}

#[test]
fn a_mixed_list_finishes_within_the_timeout_each_dead_target_with_its_reason() {
    let (_server, port) = serve("0.0.0.0:0", &[]);
    let closed = closed_port();
    // Listeners that never answer: the kernel accepts, nobody says hello.
    let silent: Vec<TcpListener> = (0..10)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut list = loopback_list(port, 70);
    for i in 0..20 {
        list.push_str(&format!("127.0.9.{}:{closed}\n", 1 + i));
    }
    for l in &silent {
        list.push_str(&format!("{}\n", l.local_addr().unwrap()));
    }
    let started = Instant::now();
    let out = cmd()
        .args(["ping", "-c", "1", "-W", "1", "-q", "-f", "-"])
        .write_stdin(list)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        elapsed < Duration::from_secs(2) + Duration::from_millis(500),
        "took {elapsed:?}"
    );
    assert_eq!(
        stdout.matches("1 packets transmitted, 1 received").count(),
        70,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("1 packets transmitted, 0 received").count(),
        30,
        "{stdout}"
    );
    // -q: no per-ping lines; each dead target's reason with the JSON records instead.
    let out = cmd()
        .args(["ping", "-c", "1", "-W", "1", "--json", "-f", "-"])
        .write_stdin(
            (0..3)
                .map(|i| format!("127.0.9.{}:{closed}\n", 1 + i))
                .chain(
                    silent
                        .iter()
                        .take(2)
                        .map(|l| format!("{}\n", l.local_addr().unwrap())),
                )
                .collect::<String>(),
        )
        .output()
        .unwrap();
    let kinds: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "error")
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "refused").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "timeout").count(),
        2,
        "{kinds:?}"
    );
    assert_clean_stderr(&stderr);
}

#[test]
fn count_and_deadline_follow_iputils() {
    let (_server, port) = serve("127.0.0.1:0", &[]);
    let live = format!("127.0.0.1:{port}");
    // Count met before the deadline: status 0, as soon as the count is met.
    let started = Instant::now();
    let out = cmd()
        .args(["ping", "-c", "2", "-w", "10", "-i", "0.05", &live])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Count not met by the deadline: status 1, though every ping was answered.
    let out = cmd()
        .args(["ping", "-c", "100", "-w", "0.3", "-i", "0.05", &live])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(", 0% packet loss"), "{stdout}");
}

#[test]
fn ctrl_c_during_one_ping_of_each_target_ends_every_target_with_its_summary() {
    let (_server, port) = serve("127.0.0.1:0", &[]);
    let live = format!("127.0.0.1:{port}");
    // The kernel accepts, nobody says hello: its ping waits for the whole -W.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let mut child = StdCommand::new(BIN)
        .args(["ping", "-c", "1", "-W", "60", "--json", &silent, &live])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let out = lines_of(child.stdout.take().unwrap());
    let mut child = Proc(child);
    let started = Instant::now();
    // Both pings start together: the live target's reply means the silent one is waiting.
    wait_line(&out, |l| l.contains("\"type\":\"reply\""));
    assert!(StdCommand::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.0.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "waited for -W");
    assert_eq!(status.code(), Some(1), "the silent target did not answer");
    let summary = |target: &str| {
        let line = wait_line(&out, |l| {
            l.contains("\"type\":\"summary\"") && l.contains(&format!("\"target\":\"{target}\""))
        });
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        (record["transmitted"].as_u64(), record["received"].as_u64())
    };
    assert_eq!(summary(&silent), (Some(1), Some(0)));
    assert_eq!(summary(&live), (Some(1), Some(1)));
}

#[test]
fn sigquit_prints_the_statistics_so_far_and_goes_on() {
    let (_server, port) = serve("127.0.0.1:0", &[]);
    let live = format!("127.0.0.1:{port}");
    let mut child = StdCommand::new(BIN)
        .args(["ping", "-c", "1000", "-i", "0.05", &live])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    let child = Proc(child);
    wait_line(&out, |l| l.contains("seq=1 "));
    assert!(StdCommand::new("kill")
        .args(["-QUIT", &pid])
        .status()
        .unwrap()
        .success());
    let stats = wait_line(&err, |l| l.contains("packets"));
    assert!(stats.starts_with(&format!("{live}: ")), "{stats}");
    assert!(stats.contains("% loss"), "{stats}");
    // Still running: more replies come after the statistics.
    let after: u64 = {
        let line = wait_line(&out, |l| l.contains("reply from"));
        line.split("seq=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let more = wait_line(&out, |l| l.contains(&format!("seq={} ", after + 1)));
    assert!(more.contains("reply from"));
    assert!(StdCommand::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    wait_line(&out, |l| l.contains("ping statistics"));
    let mut child = child;
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn arguments_a_newcomer_gets_wrong_are_answered_plainly() {
    let case = |args: &[&str], says: &str| {
        let out = cmd().args(args).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("'-- -1'"), "{stderr}");
    };
    case(&["ping", "host:99999"], "port 99999 is out of range");
    case(&["status", "[::1]:70000"], "port 70000 is out of range");
    case(&["ping", "host:0"], "port 0");
    case(
        &["ping", "-i", "-1", "host"],
        "must be a positive number of seconds",
    );
    case(
        &["ping", "-W", "-2", "host"],
        "must be a positive number of seconds",
    );
    case(&["serve", "--bind", "99999"], "port 99999 is out of range");
    case(&["ping"], "TARGET");

    // A bare port to --bind listens on every IPv4 interface.
    let port = closed_port().to_string();
    let mut child = StdCommand::new(BIN)
        .args(["serve", "--bind", &port])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let _child = Proc(child);
    let line = wait_line(&out, |l| l.starts_with("listening on "));
    assert_eq!(line, format!("listening on 0.0.0.0:{port}"));
}

/// How to make a name resolve to `::1` first, then 127.0.0.1, for the CLI: `localhost`
/// where this machine's resolver already answers so, else a hosts file bind-mounted over
/// /etc/hosts in a private mount namespace (`unshare`). Returns the name and the command
/// line prefix to run the CLI with, or why neither is possible.
fn v6_first_name(dir: &std::path::Path) -> Result<(String, Vec<String>), String> {
    let first = |out: std::process::Output| {
        text(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned)
    };
    if let Ok(out) = StdCommand::new("getent")
        .args(["ahosts", "localhost"])
        .output()
    {
        if first(out).as_deref() == Some("::1") {
            return Ok(("localhost".into(), vec![BIN.into()]));
        }
    }
    let name = "p3d-dual.test";
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("::1 {name}\n127.0.0.1 {name}\n")).unwrap();
    let mut tried = Vec::new();
    // As root a mount namespace is enough; otherwise a user namespace maps us to root.
    for flags in ["-m", "-rm"] {
        let script = format!("mount --bind {} /etc/hosts && exec \"$@\"", hosts.display());
        let prefix: Vec<String> = ["unshare", flags, "sh", "-c", &script, "sh"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let probe = StdCommand::new(&prefix[0])
            .args(&prefix[1..])
            .args(["getent", "ahosts", name])
            .output();
        match probe {
            Ok(out) if out.status.success() => match first(out) {
                Some(addr) if addr == "::1" => {
                    let mut prefix = prefix;
                    prefix.push(BIN.into());
                    return Ok((name.into(), prefix));
                }
                other => tried.push(format!(
                    "unshare {flags}: {name} resolves to {other:?} first"
                )),
            },
            Ok(out) => tried.push(format!("unshare {flags}: {}", text(&out.stderr).trim())),
            Err(e) => tried.push(format!("unshare {flags}: {e}")),
        }
    }
    Err(tried.join("; "))
}

#[test]
fn a_name_resolving_to_v6_first_reaches_a_server_on_127_0_0_1_only() {
    let (_server, port) = serve("127.0.0.1:0", &[]);
    let dir = std::env::temp_dir().join(format!("p3d-v6-first-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let found = v6_first_name(&dir);
    let (name, prefix) = match found {
        Ok(found) => found,
        // CI must run it: there a missing namespace is a failure, not a skip.
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("cannot make a name resolve to ::1 first: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: cannot make a name resolve to ::1 first: {why}");
            return;
        }
    };
    let target = format!("{name}:{port}");
    let out = StdCommand::new(&prefix[0])
        .args(&prefix[1..])
        .args(["ping", "-c", "1", "-W", "5", &target])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The first address is ::1 (nothing listens there), the reply comes from 127.0.0.1.
    assert!(
        stdout.starts_with(&format!("PING {target} ([::1]:{port})")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("reply from 127.0.0.1:{port}: seq=0")),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 packets transmitted, 1 received"),
        "{stdout}"
    );
    assert_clean_stderr(&stderr);
}

#[test]
fn session_connections_are_bounded_by_the_concurrency() {
    let (_server, port) = serve("0.0.0.0:0", &[]);
    // Four targets, two sessions: two targets keep their connection (a later ping has no
    // connect time), the other two connect for each ping; every ping is answered.
    let out = cmd()
        .args([
            "ping",
            "--session",
            "-c",
            "3",
            "-i",
            "0.05",
            "--concurrency",
            "2",
            "--json",
            "-f",
            "-",
        ])
        .write_stdin(loopback_list(port, 4))
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let replies: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["type"] == "reply").collect();
    assert_eq!(replies.len(), 12, "{stdout}");
    let mut kept: Vec<&str> = replies
        .iter()
        .filter(|r| r["seq"] != 0 && r["connect_ms"].as_f64() == Some(0.0))
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    kept.sort();
    kept.dedup();
    assert_eq!(kept.len(), 2, "{stdout}");
    let reconnected = replies
        .iter()
        .filter(|r| r["seq"] != 0 && r["connect_ms"].as_f64().unwrap() > 0.0)
        .count();
    assert_eq!(reconnected, 4, "{stdout}");
    assert_clean_stderr(&stderr);
}
