//! The CLI's master clients end to end: `serve --announce` processes list themselves on a
//! master (the API-speaking test master of tests/common/fake_master.rs, which pings each
//! back before listing it), `status --master`, `ping --master` fetch the list and ping
//! every server from here, and a server that stops leaves the list.

#[path = "../../peng3dnet/tests/common/fake_master.rs"]
mod fake_master;
#[path = "support/proc.rs"]
mod proc;
#[path = "support/tempdir.rs"]
mod tempdir;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fake_master::{wait_for, Event, FakeMaster};
use proc::Proc;
use tempdir::TempDir;
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");
const LIMIT: Duration = Duration::from_secs(20);

/// A latency the test master reports for every server: no loopback ping takes that long,
/// so a figure under it was measured by the CLI itself.
const MASTERS_LATENCY_MS: f64 = 12_345.0;

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `status --json` records by address.
fn status_records(out: &Output) -> BTreeMap<String, serde_json::Value> {
    assert!(
        out.status.success(),
        "status failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| {
            assert_eq!(r["type"], "status", "{r}");
            (r["addr"].as_str().unwrap().to_owned(), r)
        })
        .collect()
}

/// Starts `serve` announcing to `url`; returns it and its address once bound.
fn serve_announcing(url: &str, ip: &str, name: &str, extra: &[&str]) -> (Proc, String) {
    let bind = format!("{ip}:0");
    let data = format!("name={name}");
    let mut args = vec!["serve", "--bind", &bind, "--data", &data, "--announce", url];
    args.extend_from_slice(extra);
    let serve = Proc::spawn(BIN, &args);
    let addr = serve.line("listening on ");
    (serve, addr)
}

/// Waits, on the master's runtime, for an event.
fn wait(
    rt: &Runtime,
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    rt.block_on(wait_for(events, LIMIT, what, pred))
}

#[test]
fn announced_serves_are_listed_pinged_from_here_and_leave_at_shutdown() {
    let rt = Runtime::new().unwrap();
    let master = rt.block_on(FakeMaster::start(60));
    master.report_latency_ms(MASTERS_LATENCY_MS);
    let mut events = master.events();
    let url = master.url.clone();
    let (_alpha, alpha) = serve_announcing(
        &url,
        "127.0.0.71",
        "alpha",
        &[
            "--announce-tag",
            "eu",
            "--data",
            "clients=1",
            "--data",
            "max_clients=4",
        ],
    );
    let (_bravo, bravo) = serve_announcing(
        &url,
        "127.0.0.72",
        "bravo",
        &[
            "--announce-tag",
            "eu",
            "--data",
            "clients=4",
            "--data",
            "max_clients=4",
        ],
    );
    let (mut charlie, charlie_addr) =
        serve_announcing(&url, "127.0.0.73", "charlie", &["--announce-tag", "us"]);
    let mut announced = Vec::new();
    while announced.len() < 3 {
        let e = wait(&rt, &mut events, "three announces", |e| {
            e.method == "POST" && e.status == 200
        });
        announced.push(e.peer.ip().to_string());
    }
    announced.sort();
    assert_eq!(announced, ["127.0.0.71", "127.0.0.72", "127.0.0.73"]);

    // Every listed server, pinged from here: its own latency, not the master's.
    let all = status_records(&run(&["status", "--master", &url, "--json"]));
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        [&alpha, &bravo, &charlie_addr]
    );
    for (addr, record) in &all {
        let ms = record["time_ms"].as_f64().unwrap();
        assert!(ms > 0.0 && ms < MASTERS_LATENCY_MS, "{addr}: {ms}");
        assert_eq!(record["target"].as_str(), Some(addr.as_str()));
    }
    assert_eq!(all[&alpha]["data"]["name"], "alpha");

    // Filters: the master's, sent with the request.
    let eu_free = status_records(&run(&[
        "status", "--master", &url, "--tag", "eu", "--free", "--json",
    ]));
    assert_eq!(eu_free.keys().collect::<Vec<_>>(), [&alpha]);
    let table = run(&["status", "--master", &url, "--name", "CHAR"]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let lines: Vec<String> = text(&table.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("SERVER"), "{lines:?}");
    assert!(
        lines[1].starts_with(&charlie_addr)
            && lines[1].contains("charlie")
            && lines[1].contains(" ms"),
        "{lines:?}"
    );

    // ping --master: every listed server of the filter, a summary each.
    let ping = run(&["ping", "--master", &url, "--tag", "eu", "-c", "1", "-q"]);
    assert!(ping.status.success(), "{}", text(&ping.stderr));
    let out = text(&ping.stdout);
    for addr in [&alpha, &bravo] {
        assert!(
            out.contains(&format!("--- {addr} ping statistics ---")),
            "{out}"
        );
    }
    assert!(!out.contains(&charlie_addr), "{out}");

    // A server that stops unlists itself: the master hears DELETE, the list loses it.
    charlie.signal("-TERM");
    let deleted = wait(&rt, &mut events, "the unlisting", |e| e.method == "DELETE");
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.peer.ip().to_string(), "127.0.0.73");
    let started = Instant::now();
    while !charlie.exited() {
        assert!(started.elapsed() < LIMIT, "serve did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(charlie.child.wait().unwrap().success());
    let left = status_records(&run(&["status", "--master", &url, "--json"]));
    assert_eq!(left.keys().collect::<Vec<_>>(), [&alpha, &bravo]);
}

#[test]
fn announce_settings_come_from_the_config_file_too() {
    let rt = Runtime::new().unwrap();
    let master = rt.block_on(FakeMaster::start(60));
    let mut events = master.events();
    let dir = TempDir::new("announce-config");
    let config = dir.write(
        "serve.toml",
        &format!(
            "bind = \"127.0.0.75:0\"\nannounce = \"{}\"\nannounce-tags = [\"cfg\", \"eu\"]\n[data]\nname = \"configured\"\n",
            master.url
        ),
    );
    let config = config.to_str().unwrap();
    let check = run(&["serve", "--check-config", config]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let printed = text(&check.stdout);
    assert!(
        printed.contains(&format!("announce = \"{}\"", master.url)),
        "{printed}"
    );
    assert!(
        printed.contains("announce-tags = [\"cfg\", \"eu\"]"),
        "{printed}"
    );

    let serve = Proc::spawn(BIN, &["serve", "--config", config]);
    let addr = serve.line("listening on ");
    let posted = wait(&rt, &mut events, "the announce", |e| e.method == "POST");
    assert_eq!(posted.status, 200);
    assert_eq!(posted.body["tags"], serde_json::json!(["cfg", "eu"]));
    let listed = status_records(&run(&[
        "status",
        "--master",
        &master.url,
        "--tag",
        "cfg",
        "--json",
    ]));
    assert_eq!(listed.keys().collect::<Vec<_>>(), [&addr]);
    assert_eq!(listed[&addr]["data"]["name"], "configured");

    // Bad announce settings are refused before serving, named.
    let bad = dir.write("bad.toml", "announce = \"ftp://127.0.0.1\"\n");
    let out = run(&["serve", "--check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("announce: bad master URL \"ftp://127.0.0.1\""),
        "{}",
        text(&out.stderr)
    );
    let tags = dir.write(
        "tags.toml",
        &format!(
            "announce = \"{}\"\nannounce-tags = [\"two words\"]\n",
            master.url
        ),
    );
    let out = run(&["serve", "--check-config", tags.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("announce-tags: tag \"two words\""),
        "{}",
        text(&out.stderr)
    );
    // Tags without a master to announce to.
    let none = dir.write("none.toml", "");
    let out = run(&[
        "serve",
        "--announce-tag",
        "eu",
        "--check-config",
        none.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("used with announce"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn master_failures_are_clear_and_exit_as_documented() {
    let rt = Runtime::new().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let out = run(&["status", "--master", &refused]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "peng3dnet: cannot connect to the master {}: ",
            &refused["http://".len()..]
        )),
        "{stderr}"
    );

    let out = run(&["status", "--master", "127.0.0.1:8090"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("no scheme"),
        "{}",
        text(&out.stderr)
    );

    let master = rt.block_on(FakeMaster::start(60));
    let out = run(&["ping", "--master", &master.url, "-c", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("peng3dnet: the master at {} lists no servers", master.url)
    );
    let out = run(&["status", "--master", &master.url, "--tag", "eu"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("lists no servers matching the filters"));

    master.refuse_next(&[(503, "internal")]);
    let out = run(&["status", "--master", &master.url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refused (HTTP 503 internal): scripted refusal"),
        "{}",
        text(&out.stderr)
    );

    // Filters need --master.
    let out = run(&["status", "--tag", "eu", "localhost"]);
    assert_eq!(out.status.code(), Some(3));
}
