//! `serve` as a service: the settings file, SIGHUP reloads, `--metrics`, the `exporter`,
//! and a real Prometheus scraping both.
//!
//! promtool and prometheus come from Debian's package `prometheus` (`.ci/run` installs
//! it). Without them these tests are skipped with a message, except under CI=true, where
//! they fail. Nothing sleeps to synchronise: each wait polls with a deadline.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use peng3dnet::ping::{PingOptions, PingSession};

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");
#[path = "support/proc.rs"]
mod proc;
use proc::{Proc, LIMIT};

#[path = "support/tempdir.rs"]
mod tempdir;
use tempdir::TempDir;

/// A Debian tool the test needs: its path, or None (skip) outside CI. Under CI=true a
/// missing tool fails the test.
fn tool(name: &str) -> Option<String> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(path.to_string_lossy().into_owned()),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{name} not found under CI=true; install Debian's package prometheus \
             (bash scripts/ensure-debian-packages.sh promtool=prometheus prometheus)"
        ),
        None => {
            eprintln!("skipped: {name} not found (Debian package prometheus)");
            None
        }
    }
}

/// HTTP GET with a test's plain client: status and body.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// `promtool check metrics` on `text`.
fn promtool_check(promtool: &str, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\non:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port on which nothing listens.
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn check_config(file: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["serve", "--check-config", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn check_config_prints_the_effective_settings_flags_over_the_file() {
    let dir = TempDir::new("check");
    dir.write("data.json", "{\"motd\": \"hi\"}");
    let file = dir.write(
        "serve.toml",
        "bind = [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\nmetrics = \"127.0.0.1:9100\"\n\
         max-connections = 100\nidle-timeout = 30\ndata-file = \"data.json\"\n\
         log-format = \"json\"\n[data]\nname = \"lobby\"\n",
    );
    let out = check_config(&file, &["--max-connections", "7", "--write-timeout", "1.5"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "bind = [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]",
        "metrics = \"127.0.0.1:9100\"",
        "max-connections = 7",
        "idle-timeout = 30.0",
        "write-timeout = 1.5",
        "handshake-timeout = 10.0",
        "log-format = \"json\"",
        "[data]",
        "name = \"lobby\"",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing:\n{stdout}"
        );
    }
    // Relative paths are relative to the file.
    let data_file = dir.0.join("data.json");
    assert!(
        stdout.contains(&format!("data-file = \"{}\"", data_file.display())),
        "{stdout}"
    );
}

#[test]
fn bad_settings_files_name_file_line_and_key() {
    let dir = TempDir::new("bad");
    for (text, line, key, words) in [
        (
            "bind = \"127.0.0.1:0\"\n\nmax-conections = 5\n",
            3,
            "max-conections",
            "unknown field",
        ),
        (
            "idle-timeout = -1\n",
            1,
            "idle-timeout",
            "positive number of seconds",
        ),
        (
            "bind = \"127.0.0.1:0\"\nmax-connections = \"lots\"\n",
            2,
            "max-connections",
            "invalid type",
        ),
    ] {
        let file = dir.write("bad.toml", text);
        let out = check_config(&file, &[]);
        assert_eq!(out.status.code(), Some(3), "{text}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let expected = format!("{}:{line}: key `{key}`: ", file.display());
        assert!(stderr.contains(&expected), "{expected:?} not in {stderr}");
        assert!(stderr.contains(words), "{words:?} not in {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_data_file_into_a_session_that_stays_open() {
    let dir = TempDir::new("reload");
    let data = dir.write("data.json", "{\"motd\": \"first\"}");
    let settings = dir.write(
        "serve.toml",
        "bind = \"127.0.0.1:0\"\ndata-file = \"data.json\"\n",
    );
    let server = Proc::spawn(BIN, &["serve", "--config", settings.to_str().unwrap()]);
    let addr = server.line("listening on ");
    let mut session = PingSession::connect(&addr, &PingOptions::default())
        .await
        .unwrap();
    let motd = |reply: &peng3dnet::PingReply| {
        reply
            .get("motd")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        motd(&session.ping().await.unwrap()).as_deref(),
        Some("first")
    );

    std::fs::write(&data, "{\"motd\": \"second\"}").unwrap();
    server.signal("-HUP");
    let deadline = Instant::now() + LIMIT;
    loop {
        let reply = session.ping().await.unwrap();
        if motd(&reply).as_deref() == Some("second") {
            break;
        }
        assert!(Instant::now() < deadline, "the new data never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.wait_stderr("reloaded");

    // A broken file: the running data stays, and the log says why.
    std::fs::write(&data, "{\"motd\": ").unwrap();
    server.signal("-HUP");
    server.wait_stderr("reload failed, keeping the running settings");
    assert!(
        server.stderr().contains("invalid JSON"),
        "{}",
        server.stderr()
    );
    assert_eq!(
        motd(&session.ping().await.unwrap()).as_deref(),
        Some("second")
    );

    // A setting that cannot change live is named.
    std::fs::write(&data, "{\"motd\": \"third\"}").unwrap();
    std::fs::write(
        &settings,
        "bind = \"127.0.0.1:1\"\ndata-file = \"data.json\"\n",
    )
    .unwrap();
    server.signal("-HUP");
    server.wait_stderr("cannot change while running (restart to apply them): bind");
    // The warning is logged just before the new data is set: a ping right after it may
    // still get the old data.
    let deadline = Instant::now() + LIMIT;
    loop {
        let reply = session.ping().await.unwrap();
        if motd(&reply).as_deref() == Some("third") {
            break;
        }
        assert_eq!(motd(&reply).as_deref(), Some("second"));
        assert!(Instant::now() < deadline, "the new data never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    session.close().await;
    let mut server = server;
    assert!(!server.exited(), "SIGHUP must not stop the server");
}

#[test]
fn metrics_and_exporter_pass_promtool() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let server = Proc::spawn(
        BIN,
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--data",
            "name=lobby",
            "--data",
            "slots=8",
        ],
    );
    let addr = server.line("listening on ");
    let metrics = server.line("metrics on http://");
    let metrics = metrics.trim_end_matches("/metrics").to_owned();
    let exporter = Proc::spawn(BIN, &["exporter", "--listen", "127.0.0.1:0"]);
    let exporter_addr = exporter.line("listening on ");

    let (status, live) = get(&exporter_addr, &format!("/probe?target={addr}"), &[]);
    assert_eq!(status, 200);
    assert!(live.contains("\nprobe_success 1\n"), "{live}");
    assert!(live.contains("probe_peng3dnet_data_slots 8"), "{live}");
    assert!(
        live.contains("probe_peng3dnet_data_info{name=\"lobby\"} 1"),
        "{live}"
    );
    // The prober's own address (serve's client_addr) is not a label: it changes per probe.
    assert!(!live.contains("client_addr"), "{live}");
    assert!(
        live.contains("probe_peng3dnet_phase_duration_seconds{phase=\"hello\"}"),
        "{live}"
    );
    promtool_check(&promtool, &live);

    let dead = free_addr();
    let (status, failed) = get(
        &exporter_addr,
        &format!("/probe?target={dead}"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "2")],
    );
    assert_eq!(status, 200);
    assert!(failed.contains("\nprobe_success 0\n"), "{failed}");
    assert!(
        failed.contains("probe_peng3dnet_failure_info{kind=\"refused\""),
        "{failed}"
    );
    promtool_check(&promtool, &failed);

    let (status, own) = get(&exporter_addr, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        own.contains("peng3dnet_exporter_probes_total{result=\"failure\"} 1"),
        "{own}"
    );
    promtool_check(&promtool, &own);

    let (status, served) = get(&metrics, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(served.contains("peng3dnet_pings_total 1\n"), "{served}");
    assert!(
        served.contains("peng3dnet_closes_total{reason=\"pingcomplete\",by=\"peer\"} 1"),
        "{served}"
    );
    promtool_check(&promtool, &served);
    // What Prometheus itself asks for: OpenMetrics.
    let (_, openmetrics) = get(
        &metrics,
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    );
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
}

/// A Prometheus on a free loopback port (picked by binding port 0 and releasing it, so
/// retried when another process took it meanwhile).
fn start_prometheus(prometheus: &str, dir: &TempDir, config: &Path) -> (Proc, String) {
    for attempt in 0..5 {
        let addr = free_addr();
        let data = dir.0.join(format!("tsdb-{attempt}"));
        let mut proc = Proc::spawn(
            prometheus,
            &[
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", data.display()),
                &format!("--web.listen-address={addr}"),
            ],
        );
        let deadline = Instant::now() + LIMIT;
        loop {
            if proc.exited() {
                if proc.stderr().contains("address already in use") {
                    break;
                }
                panic!("prometheus exited: {}", proc.stderr());
            }
            if TcpStream::connect(&addr).is_ok() && get(&addr, "/-/ready", &[]).0 == 200 {
                return (proc, addr);
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                proc.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("no free port for prometheus after 5 attempts");
}

/// The result of an instant query: (labels, value) pairs.
fn query(prometheus: &str, expr: &str) -> Vec<(serde_json::Value, String)> {
    let (status, body) = get(prometheus, &format!("/api/v1/query?query={expr}"), &[]);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"].clone(),
                r["value"][1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_serve_and_the_exporter() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let dir = TempDir::new("prometheus");
    let server = Proc::spawn(
        BIN,
        &["serve", "--bind", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
    );
    let live = server.line("listening on ");
    let metrics = server.line("metrics on http://");
    let metrics = metrics.trim_end_matches("/metrics");
    let exporter = Proc::spawn(BIN, &["exporter", "--listen", "127.0.0.1:0"]);
    let exporter_addr = exporter.line("listening on ");
    let dead = free_addr();
    let config = dir.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: peng3dnet\n    static_configs:\n      - targets: ['{metrics}']\n\
             \x20 - job_name: peng3dnet-probe\n    metrics_path: /probe\n\
             \x20   static_configs:\n      - targets: ['{live}', '{dead}']\n\
             \x20   relabel_configs:\n\
             \x20     - source_labels: [__address__]\n        target_label: __param_target\n\
             \x20     - source_labels: [__param_target]\n        target_label: instance\n\
             \x20     - target_label: __address__\n        replacement: '{exporter_addr}'\n"
        ),
    );
    let (_prometheus, api) = start_prometheus(&prometheus, &dir, &config);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probes = query(&api, "probe_success");
        let value_of = |target: &str| {
            probes
                .iter()
                .find(|(labels, _)| labels["instance"] == target)
                .map(|(_, v)| v.clone())
        };
        let pings = query(&api, "peng3dnet_pings_total");
        let pinged = pings
            .first()
            .is_some_and(|(_, v)| v.parse::<f64>().unwrap_or(0.0) > 0.0);
        if value_of(&live).as_deref() == Some("1")
            && value_of(&dead).as_deref() == Some("0")
            && pinged
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw probe_success 1 and 0 and pings: {probes:?} {pings:?}"
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// The attack of the third security audit's high finding: clients close with reasons that
/// try to forge exposition lines (and an early `# EOF`), log lines, and to grow /metrics
/// and the server's memory with a new series per connection. The reasons must reach
/// neither the exposition nor the log as they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reasons_from_clients_cannot_forge_or_grow_the_metrics_or_the_log() {
    let server = Proc::spawn(
        BIN,
        &["serve", "--bind", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
    );
    let addr = server.line("listening on ");
    let metrics = server.line("metrics on http://");
    let metrics = metrics.trim_end_matches("/metrics").to_owned();
    let forged = "x\"} 1\npeng3dnet_connections_open{type=\"ping\"} 99999";
    // 1 MiB that does not compress (the client compresses it; a body that inflates a
    // hundredfold is refused before it is read).
    let mut seed = 0x2545_f491_u32;
    let huge: String = (0..1 << 20)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            char::from(b'a' + (seed >> 24) as u8 % 26)
        })
        .collect();
    let mut reasons = vec![
        forged.to_owned(),
        "bye\n# EOF\n".to_owned(),
        "x\nINFO forged log line".to_owned(),
        huge.clone(),
    ];
    reasons.extend((0..60).map(|i| format!("distinct-{i}")));
    for reason in &reasons {
        let client = peng3dnet::client::Client::builder()
            .connect(&addr)
            .await
            .unwrap();
        client.close(reason.as_str()).await.unwrap();
    }
    let want = format!(
        "peng3dnet_closes_total{{reason=\"other\",by=\"peer\"}} {}",
        reasons.len()
    );
    let deadline = Instant::now() + LIMIT;
    let served = loop {
        let metrics = metrics.clone();
        let (status, served) = tokio::task::spawn_blocking(move || get(&metrics, "/metrics", &[]))
            .await
            .unwrap();
        assert_eq!(status, 200);
        if served.lines().any(|l| l == want) {
            break served;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {want:?} in:\n{served}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !served.contains("99999") && !served.contains("distinct-") && !served.contains(&huge[..32]),
        "a client's reason reached the exposition:\n{served}"
    );
    assert_eq!(served.matches("# EOF").count(), 0, "{served}");
    assert!(served.len() < 8 * 1024, "{} bytes:\n{served}", served.len());
    if let Some(promtool) = tool("promtool") {
        promtool_check(&promtool, &served);
    }

    // The log: each reason once, escaped and cut short.
    let line = server.wait_for_log("with the forged reason", |l| {
        l.contains("peer closed the connection: x\\\"} 1")
            || l.contains("peer closed the connection: x\"} 1")
    });
    assert!(line.contains("\\x0apeng3dnet_connections_open"), "{line}");
    server.wait_for_log("with the huge reason, cut", |l| {
        l.contains("... (1048448 more bytes)")
    });
    let log = server.stderr();
    assert!(
        !log.lines()
            .any(|l| l.starts_with("peng3dnet_connections_open")
                || l.starts_with("INFO forged")
                || l.starts_with("# EOF")),
        "a forged line reached the log:\n{log}"
    );
    assert!(log.len() < 64 * 1024, "the log grew to {} bytes", log.len());
    assert!(
        !log.contains(&huge[128..160]),
        "the huge reason was not cut"
    );
    assert_eq!(
        log.matches("distinct-7").count(),
        1,
        "each reason is logged once:\n{log}"
    );
}

/// The third audit: a setting that a reload cannot apply (here the per-address cap) was
/// recorded as applied, so the next reload gave no warning while the cap was still not
/// enforced. Every reload that finds it changed must say so.
#[test]
fn a_setting_a_reload_cannot_apply_is_named_at_every_reload() {
    let dir = TempDir::new("fixed");
    let settings = dir.write("serve.toml", "bind = \"127.0.0.1:0\"\n");
    let server = Proc::spawn(BIN, &["serve", "--config", settings.to_str().unwrap()]);
    server.line("listening on ");
    std::fs::write(
        &settings,
        "bind = \"127.0.0.1:0\"\nmax-connections-per-addr = 2\n",
    )
    .unwrap();
    let warning = "cannot change while running (restart to apply them): limits";
    for reloads in 1..=2 {
        server.signal("-HUP");
        server.wait_for_log(&format!("reload {reloads} done"), |_| {
            server.stderr().matches("reloaded: static data").count() >= reloads
        });
        assert_eq!(
            server.stderr().matches(warning).count(),
            reloads,
            "{}",
            server.stderr()
        );
    }
}

/// The third audit: the settings were read on the loop that also waits for SIGTERM, so a
/// settings file that is a FIFO (or on a hung filesystem) blocked reloads and shutdown
/// alike. Read off the loop with a bound, SIGTERM still stops the server at once, and
/// pings are answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_hangs_on_its_file_blocks_neither_pings_nor_sigterm() {
    let dir = TempDir::new("fifo");
    let settings = dir.write("serve.toml", "bind = \"127.0.0.1:0\"\n");
    let mut server = Proc::spawn(BIN, &["serve", "--config", settings.to_str().unwrap()]);
    let addr = server.line("listening on ");
    std::fs::remove_file(&settings).unwrap();
    let made = Command::new("mkfifo").arg(&settings).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    server.signal("-HUP");
    server.wait_stderr("SIGHUP: reloading");
    peng3dnet::ping::ping_server(&addr, &PingOptions::default())
        .await
        .expect("pings are answered while a reload hangs");
    server.signal("-TERM");
    let deadline = Instant::now() + LIMIT;
    while !server.exited() {
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop a server whose reload hangs: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stderr().contains("stopped"), "{}", server.stderr());
}

/// The third audit: neither connections to `--metrics` nor refused connections were
/// bounded, and each refusal was held up to 1 s; under a 1,200-descriptor limit a flood
/// of both left a victim on 127.0.0.2 0 pings of 4. Under a 400-descriptor limit here,
/// floods of 600 of each leave descriptors for the victim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_http_and_refused_connections_leave_descriptors_for_other_players() {
    let Some(prlimit) = tool("prlimit") else {
        return;
    };
    let server = Proc::spawn(
        prlimit,
        &[
            "--nofile=400:400",
            BIN,
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let addr = server.line("listening on ");
    let metrics = server.line("metrics on http://");
    let metrics = metrics.trim_end_matches("/metrics").to_owned();
    let mut held = Vec::new();
    for _ in 0..600 {
        held.push(tokio::net::TcpStream::connect(&metrics).await.unwrap());
    }
    for _ in 0..600 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // At once, while the flood holds its connections: the metrics ones hold theirs for
    // the 10 s header timeout unless closed at the cap, the refused ones up to 1 s each
    // unless past the lingering cap.
    let victim = PingOptions {
        timeout: Duration::from_secs(3),
        local_addr: Some("127.0.0.2".parse().unwrap()),
        ..PingOptions::default()
    };
    for i in 0..4 {
        if let Err(e) = peng3dnet::ping::ping_server(&addr, &victim).await {
            panic!("the victim's ping {i} failed during the flood: {e}");
        }
    }
    drop(held);
    server.wait_for_log("of the refusals", |l| {
        l.contains("refused: more than 64 connections from this address")
    });
}
