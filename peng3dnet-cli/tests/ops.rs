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
            "unknown key; did you mean `max-connections`?",
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
            "invalid type: string \"lots\", expected a whole number (0 or more)",
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
    // A data file that is not TOML: one line with its file and line, no `\x0a` of the
    // TOML parser's quoted source.
    dir.write("data.toml", "name = \"x\"\n[broken\n");
    let file = dir.write("serve.toml", "data-file = \"data.toml\"\n");
    let out = check_config(&file, &[]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("\\x0a"), "{stderr}");
    assert!(stderr.contains("data.toml:2: "), "{stderr}");
}

/// A reload that fails on a broken TOML data file says so on one log line (it was five:
/// the parser's message and its quoted source).
#[test]
fn a_failed_reload_is_one_log_line() {
    let dir = TempDir::new("reload-line");
    let data = dir.write("data.toml", "name = \"x\"\n");
    let server = Proc::spawn(
        BIN,
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--data-file",
            data.to_str().unwrap(),
        ],
    );
    server.line("listening on ");
    std::fs::write(&data, "name = \"x\"\n[broken\nmore = 1\n").unwrap();
    server.signal("-HUP");
    let line = server.wait_for_log("reload failed", |l| l.contains("reload failed"));
    assert!(
        line.contains("invalid TOML: ") && line.contains("data.toml:2: "),
        "{line}"
    );
    // Let a later line (the server's next) not be needed: every line so far is a log
    // line with its level, none a continuation.
    let stderr = server.stderr();
    for l in stderr.lines() {
        assert!(
            [" INFO ", " WARN ", " ERROR ", " DEBUG "]
                .iter()
                .any(|level| l.contains(level)),
            "a continuation line {l:?} in:\n{stderr}"
        );
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
    // The standard process metrics, as every official client exports them.
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(
            own.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{own}"
        );
    }
    promtool_check(&promtool, &own);

    let (status, served) = get(&metrics, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(served.contains("peng3dnet_pings_total 1\n"), "{served}");
    assert!(
        served.contains("peng3dnet_closes_total{reason=\"pingcomplete\",by=\"peer\"} 1"),
        "{served}"
    );
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_max_fds ",
    ] {
        assert!(
            served.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{served}"
        );
    }
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

/// A server's own data broke the exporter's output: `info=5` made a second
/// `probe_peng3dnet_data_info` family (promtool: "second HELP line"), and keys that
/// sanitised alike lost all but the first.
#[test]
fn server_data_cannot_break_the_exporters_output() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let server = Proc::spawn(
        BIN,
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--data",
            "info=5",
            "--data",
            "max-players=1",
            "--data",
            "max_players=2",
            "--data",
            "maxPlayers=3",
            "--data",
            "uptime_ms=4",
            "--data",
            "名前=a",
            "--data",
            "ポート=b",
            "--data",
            "le=c",
        ],
    );
    let addr = server.line("listening on ");
    let exporter = Proc::spawn(BIN, &["exporter", "--listen", "127.0.0.1:0"]);
    let exporter_addr = exporter.line("listening on ");
    let (status, live) = get(&exporter_addr, &format!("/probe?target={addr}"), &[]);
    assert_eq!(status, 200);
    assert!(live.contains("\nprobe_success 1\n"), "{live}");
    for line in [
        "probe_peng3dnet_data_kinfo 5.0",
        "probe_peng3dnet_data_max_players 1.0",
        "probe_peng3dnet_data_max_players_2 2.0",
        "probe_peng3dnet_data_max_players_3 3.0",
        "probe_peng3dnet_data_uptimems 4.0",
    ] {
        assert!(live.lines().any(|l| l == line), "{line:?} missing:\n{live}");
    }
    let info = live
        .lines()
        .find(|l| l.starts_with("probe_peng3dnet_data_info{"))
        .unwrap_or_else(|| panic!("no info metric:\n{live}"));
    for label in ["key=\"a\"", "key_2=\"b\"", "kle=\"c\""] {
        assert!(info.contains(label), "{label} missing: {info}");
    }
    promtool_check(&promtool, &live);
}

/// A bad address exited 4 ("system error") where a bad argument is 3, and the exporter
/// refused a bare port that `serve` takes.
#[test]
fn bad_addresses_are_bad_arguments_and_a_bare_port_is_taken() {
    for args in [
        &["serve", "--bind", "junk"][..],
        &["serve", "--bind", "127.0.0.1:0", "--metrics", "junk"],
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:99999",
        ],
        &["exporter", "--listen", "junk"],
        &["exporter", "--listen", "127.0.0.1:99999"],
        &["exporter", "--listen", "no-such-host.invalid:9588"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("peng3dnet: ") || stderr.starts_with("error: "),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("\\x0a"), "{args:?}: {stderr}");
    }
    // A port in use is a system error (4), as for serve.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["exporter", "--listen", &taken])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exporter = Proc::spawn(BIN, &["exporter", "--listen", "0"]);
    let addr = exporter.line("listening on ");
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
}

/// The exporter died on SIGHUP (exit status 129); now it rereads `--config`: its modules,
/// picked by `module=`, as blackbox_exporter's. A broken file changes nothing and the log
/// says why on one line.
#[test]
fn the_exporter_reloads_its_modules_on_sighup() {
    let dir = TempDir::new("modules");
    let server = Proc::spawn(BIN, &["serve", "--bind", "127.0.0.1:0"]);
    let addr = server.line("listening on ");
    let config = dir.write("exporter.toml", "[modules.quick]\ntimeout = 2\n");
    let exporter = Proc::spawn(
        BIN,
        &[
            "exporter",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let exporter_addr = exporter.line("listening on ");
    // --check-config, as blackbox_exporter's --config.check: the modules, or exit 3.
    let check = |file: &Path| {
        Command::new(BIN)
            .args(["exporter", "--check-config", file.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = check(&config);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "module default: the built-in default: --timeout, no TLS\n\
         module quick: from --config, timeout=2s, no TLS\n"
    );
    let bad = dir.write("bad.toml", "[modules.x]\ntls = \"maybe\"\n");
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("bad.toml:2: key `tls`: "), "{stderr}");
    assert!(stderr.contains("is not a TLS mode"), "{stderr}");
    let probe = |module: &str| {
        get(
            &exporter_addr,
            &format!("/probe?target={addr}&module={module}"),
            &[],
        )
    };
    let (status, body) = probe("quick");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\nprobe_success 1\n"), "{body}");
    let (status, body) = probe("quik");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        "unknown module 'quik' (did you mean 'quick'? modules: default, quick)\n"
    );
    // A module that insists on TLS fails against a plain server, in the exporter's words.
    std::fs::write(
        &config,
        "[modules.quick]\ntimeout = 2\n[modules.secure]\ntls = \"insecure\"\n",
    )
    .unwrap();
    exporter.signal("-HUP");
    exporter.wait_stderr("reloaded");
    let (status, body) = probe("secure");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\nprobe_success 0\n"), "{body}");
    assert!(body.contains("kind=\"tls_not_used\""), "{body}");
    assert!(body.contains("without tls="), "{body}");
    assert!(!body.contains("--tls"), "{body}");

    // Broken: the modules stay, the log says why on one line, the metric says so.
    std::fs::write(&config, "[modules.quick]\ntimeuot = 2\n").unwrap();
    exporter.signal("-HUP");
    let line = exporter.wait_for_log("reload failed", |l| l.contains("reload failed"));
    assert!(
        line.contains("key `timeuot`: unknown key; did you mean `timeout`?"),
        "{line}"
    );
    assert_eq!(probe("secure").0, 200);
    let (_, own) = get(&exporter_addr, "/metrics", &[]);
    assert!(
        own.contains("peng3dnet_exporter_config_last_reload_successful 0\n"),
        "{own}"
    );
    let mut exporter = exporter;
    assert!(!exporter.exited(), "SIGHUP must not stop the exporter");

    // Without --config, SIGHUP changes nothing and kills nothing either.
    let plain = Proc::spawn(BIN, &["exporter", "--listen", "127.0.0.1:0"]);
    let plain_addr = plain.line("listening on ");
    plain.signal("-HUP");
    plain.wait_stderr("no --config to reread");
    assert_eq!(
        get(&plain_addr, &format!("/probe?target={addr}"), &[]).0,
        200
    );
}

/// blackbox_exporter's `debug=true`: the probe's log and the metrics it would answer;
/// the scrape-timeout header as documented, and a garbage one refused and logged.
#[test]
fn debug_shows_the_probes_log_and_a_garbage_timeout_header_is_refused() {
    let server = Proc::spawn(BIN, &["serve", "--bind", "127.0.0.1:0"]);
    let addr = server.line("listening on ");
    let exporter = Proc::spawn(BIN, &["exporter", "--listen", "127.0.0.1:0"]);
    let exporter_addr = exporter.line("listening on ");
    let (status, body) = get(
        &exporter_addr,
        &format!("/probe?target={addr}&debug=true&timeout=3"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "0.8")],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("Logs for the probe:\n"), "{body}");
    for part in [
        "timeout 3s from timeout=, cut to 0.4s by the scrape's timeout of 0.8s",
        "probe succeeded after ",
        "\nMetrics that would have been returned:\n",
        "\nprobe_success 1\n",
    ] {
        assert!(body.contains(part), "{part:?} missing:\n{body}");
    }
    let (status, body) = get(
        &exporter_addr,
        &format!("/probe?target={addr}"),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "soon")],
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("header 'soon' is not a positive number of seconds"),
        "{body}"
    );
    exporter
        .wait_stderr("bad probe request: the X-Prometheus-Scrape-Timeout-Seconds header 'soon'");
}

/// `serve` and `exporter` logs ignored `NO_COLOR` on a terminal. Each command here logs a
/// line and then fails to listen (the port is taken), under script(1)'s terminal.
#[test]
fn no_color_turns_the_colours_of_the_logs_off() {
    let Some(script) = tool_in_base_system("script") else {
        return;
    };
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let commands = [
        format!("{BIN} exporter --timeout 40 --max-timeout 30 --listen {taken}"),
        format!("{BIN} serve --proxy-protocol --proxy-trusted 127.0.0.1 --bind {taken}"),
    ];
    for command in &commands {
        let run = |env: &str| {
            let out = Command::new(&script)
                .args(["-qec", &format!("env {env} {command}"), "/dev/null"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let coloured = run("-u NO_COLOR");
        assert!(
            coloured.contains("\x1b["),
            "no colours on a terminal at all: {coloured:?}"
        );
        let plain = run("NO_COLOR=1");
        assert!(
            plain.contains("INFO") || plain.contains("WARN"),
            "{plain:?}"
        );
        assert!(
            !plain.contains('\x1b'),
            "colours despite NO_COLOR: {plain:?}"
        );
        // An empty NO_COLOR is not set (no-color.org).
        assert!(run("NO_COLOR=").contains("\x1b["));
    }
}

/// A program of Debian's base system (util-linux's script): its path; a missing one fails
/// under CI=true and skips elsewhere.
fn tool_in_base_system(name: &str) -> Option<String> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(path.to_string_lossy().into_owned()),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{name} not found under CI=true (Debian's util-linux/bsdutils)")
        }
        None => {
            eprintln!("skipped: {name} not found (util-linux)");
            None
        }
    }
}

/// The help named four commands of six, the exporter's printed `[default: text]` twice,
/// `ping -V` said `peng3dnet-ping`, and `-c -1` got clap's hint to write `-- -1`, which
/// makes `-1` a target.
#[test]
fn help_and_version_name_every_command_and_the_program() {
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let top = String::from_utf8(run(&["--help"]).stdout).unwrap();
    for command in ["ping", "status", "serve", "watch", "exporter", "demo"] {
        assert!(
            top.contains(&format!("peng3dnet {command}")),
            "{command}:\n{top}"
        );
    }
    assert!(top.contains("serve, watch, exporter and demo"), "{top}");
    let exporter = String::from_utf8(run(&["exporter", "--help"]).stdout).unwrap();
    assert_eq!(exporter.matches("[default: text]").count(), 1, "{exporter}");
    for args in [&["ping", "-V"][..], &["-V"], &["exporter", "--version"]] {
        let out = run(args);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("peng3dnet {}\n", env!("CARGO_PKG_VERSION")),
            "{args:?}"
        );
    }
    for args in [
        &["ping", "-c", "-1", "localhost"][..],
        &["ping", "-C", "-1", "localhost"],
        &["demo", "-c", "-1"],
    ] {
        let out = run(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(!stderr.contains("-- -1"), "{args:?}: {stderr}");
        assert!(stderr.contains("'-1'"), "{args:?}: {stderr}");
    }
    // The documented JSON kinds are all of those a ping can fail with.
    let long = String::from_utf8(run(&["ping", "--help"]).stdout).unwrap();
    for kind in [
        "tls_required",
        "tls_not_used",
        "tls_certificate",
        "tls_client_certificate",
    ] {
        assert!(long.contains(kind), "{kind} missing:\n{long}");
    }
}

/// A write to a full disk was silent (`ping > /dev/full` exited 4 without a word) or
/// ignored (`--help > /dev/full` exited 0); iputils says "ping: write error".
#[test]
fn write_errors_are_reported() {
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let server = Proc::spawn(BIN, &["serve", "--bind", "127.0.0.1:0"]);
    let addr = server.line("listening on ");
    for args in [
        &["--help"][..],
        &["ping", "--help"],
        &["-V"],
        &["ping", "-c", "1", &addr],
        &["ping", "-c", "1", "--json", &addr],
        &["status", &addr],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .stdout(full())
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert_eq!(
            stderr
                .matches("peng3dnet: write error: No space left on device\n")
                .count(),
            1,
            "{args:?}: {stderr}"
        );
    }
}
