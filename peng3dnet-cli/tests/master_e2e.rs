//! The master clients against the real master: a `peng3dnet master` process (SQLite in a
//! temporary directory), `peng3dnet serve --announce` processes on 127.0.0.x listing
//! themselves on it, and `status`/`ping --master` fetching its list and pinging every
//! server from here. A server that stops with SIGTERM unlists itself (DELETE); one that
//! is killed is marked down by the master and left out by `--up`. At scale: 200 library
//! servers (`Server::announce`) on 127.0.x.y, 20 of them killed, and `status --master`
//! prints the 180 left with latencies measured here.

#[path = "support/proc.rs"]
mod proc;
#[path = "support/tempdir.rs"]
mod tempdir;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use peng3dnet::master::{self, Query};
use proc::{Proc, LIMIT};
use tempdir::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `status --json` records by address (the command must succeed).
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

/// A `peng3dnet master` on 127.0.0.1 (a free port) refreshing every second, one failed
/// ping marking a server down, a server silent for `drop_after` seconds dropped; its URL.
fn start_master(dir: &TempDir, drop_after: &str) -> (Proc, String) {
    let db = format!("sqlite:{}", dir.0.join("list.db").display());
    let master = Proc::spawn(
        BIN,
        &[
            "master",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db,
            "--refresh",
            "1",
            "--down-after",
            "1",
            "--drop-after",
            drop_after,
            "--ping-timeout",
            "1",
            "--ping-spacing",
            "1",
        ],
    );
    let addr = master.line("master on http://");
    let url = format!("http://{}", addr.trim_end_matches('/'));
    (master, url)
}

/// `serve --announce` on `ip`, named `name`, with `tags`; waits until the master listed
/// it (the serve's log says so) and returns it with its address.
fn serve_listed(url: &str, ip: &str, name: &str, tags: &[&str]) -> (Proc, String) {
    let bind = format!("{ip}:0");
    let data = format!("name={name}");
    let mut args = vec!["serve", "--bind", &bind, "--data", &data, "--announce", url];
    for tag in tags {
        args.extend(["--announce-tag", tag]);
    }
    let serve = Proc::spawn(BIN, &args);
    let addr = serve.line("listening on ");
    let listed = serve.wait_for_log("listed on the master", |l| {
        l.contains("listed on the master") && l.contains(&addr)
    });
    assert!(!listed.contains("WARN"), "{listed}");
    (serve, addr)
}

/// Reads the master's list (the library's client) until `pred` holds, within [`LIMIT`].
fn list_until(
    url: &str,
    query: &Query,
    what: &str,
    pred: impl Fn(&[master::ListedServer]) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let listed = master::blocking::fetch(url, query).unwrap();
        if pred(&listed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LIMIT:?}: {listed:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_announce_status_master_and_leaving_with_the_real_master() {
    let dir = TempDir::new("master-e2e");
    let (_master, url) = start_master(&dir, "60");
    let mut servers = Vec::new();
    for (i, tags) in [&["eu"][..], &["eu"], &["eu", "pvp"], &["us"], &["us"]]
        .iter()
        .enumerate()
    {
        let ip = format!("127.0.9.{}", i + 1);
        servers.push(serve_listed(&url, &ip, &format!("e2e-{i}"), tags));
    }
    let addrs: Vec<String> = servers.iter().map(|(_, a)| a.clone()).collect();

    // The list, each server pinged from here: its own pong data and our latency.
    let all = status_records(&run(&["status", "--master", &url, "--json"]));
    let mut expected = addrs.clone();
    expected.sort();
    assert_eq!(all.keys().cloned().collect::<Vec<_>>(), expected);
    for (i, addr) in addrs.iter().enumerate() {
        let record = &all[addr];
        assert_eq!(record["data"]["name"], format!("e2e-{i}"), "{record}");
        let ms = record["time_ms"].as_f64().unwrap();
        assert!(ms > 0.0 && ms < 5000.0, "{addr}: {ms}");
    }
    // The master's filters.
    let eu = status_records(&run(&["status", "--master", &url, "--tag", "eu", "--json"]));
    assert_eq!(eu.len(), 3);
    let pvp = status_records(&run(&[
        "status", "--master", &url, "--tag", "eu", "--tag", "pvp", "--json",
    ]));
    assert_eq!(pvp.keys().collect::<Vec<_>>(), [&addrs[2]]);
    let named = status_records(&run(&[
        "status", "--master", &url, "--name", "E2E-4", "--json",
    ]));
    assert_eq!(named.keys().collect::<Vec<_>>(), [&addrs[4]]);
    let ping = run(&["ping", "--master", &url, "--tag", "us", "-c", "1", "-q"]);
    assert!(ping.status.success(), "{}", text(&ping.stderr));
    for addr in &addrs[3..] {
        assert!(
            text(&ping.stdout).contains(&format!("--- {addr} ping statistics ---")),
            "{}",
            text(&ping.stdout)
        );
    }

    // SIGTERM: the server unlists itself before it stops; the list loses it at once.
    let (mut leaving, gone) = servers.remove(0);
    leaving.signal("-TERM");
    leaving.wait_for_log("unlisted", |l| {
        l.contains("unlisted from the master") && l.contains("was_listed=true")
    });
    let deadline = Instant::now() + LIMIT;
    while !leaving.exited() {
        assert!(Instant::now() < deadline, "serve did not exit");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(leaving.child.wait().unwrap().success());
    let left = status_records(&run(&["status", "--master", &url, "--json"]));
    assert!(!left.contains_key(&gone), "{left:?}");
    assert_eq!(left.len(), 4);

    // Killed (no DELETE): the master's own pings mark it down, and --up leaves it out
    // while it stays listed until --drop-after.
    let (mut killed, dead) = servers.remove(0);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    list_until(&url, &Query::new(), "the killed server marked down", |l| {
        l.iter().any(|s| s.address == dead && !s.up)
    });
    let up = status_records(&run(&["status", "--master", &url, "--up", "--json"]));
    assert_eq!(up.len(), 3);
    assert!(!up.contains_key(&dead));
}

#[test]
fn two_hundred_announce_twenty_die_and_status_master_prints_the_rest() {
    let dir = TempDir::new("master-e2e-200");
    let (_master, url) = start_master(&dir, "3");
    // 180 that live on, and 20 on a runtime of their own that is shut down without a word
    // (no unlisting: as a killed process).
    let live = tokio::runtime::Runtime::new().unwrap();
    let doomed = tokio::runtime::Runtime::new().unwrap();
    let start = |rt: &tokio::runtime::Runtime, i: usize| {
        rt.block_on(async {
            let ip = format!("127.0.{}.{}", 20 + i / 200, 1 + i % 200);
            let server =
                peng3dnet::Server::builder()
                    .pingable(peng3dnet::PingResponder::new().with_static_data(
                        peng3dnet::value::map([("name", format!("many-{i}").into())]),
                    ))
                    .bind(format!("{ip}:0"))
                    .await
                    .unwrap();
            let announcer = server.announce(&url).unwrap();
            (server, announcer)
        })
    };
    let mut kept = Vec::new();
    let mut killed = Vec::new();
    for i in 0..200 {
        if i % 10 == 3 {
            killed.push(start(&doomed, i));
        } else {
            kept.push(start(&live, i));
        }
    }
    // Every one listed (each announcer says when the master answered).
    for (servers, rt) in [(&kept, &live), (&killed, &doomed)] {
        for (_, announcer) in servers {
            rt.block_on(async { tokio::time::timeout(LIMIT, announcer.listed()).await })
                .expect("listed in time");
        }
    }
    list_until(&url, &Query::new(), "all 200 listed", |l| l.len() == 200);
    let dead: Vec<String> = killed
        .iter()
        .map(|(s, _)| s.local_addr().to_string())
        .collect();
    // Killed: the runtime's tasks are dropped, so their sockets close and their
    // announcers end without unlisting; the handles go after.
    doomed.shutdown_background();
    drop(killed);

    // Marked down by the master's refresh, then dropped after --drop-after.
    list_until(&url, &Query::new().up(), "the 20 marked down", |l| {
        l.len() == 180 && !l.iter().any(|s| dead.contains(&s.address))
    });
    let up = status_records(&run(&["status", "--master", &url, "--up", "--json"]));
    assert_eq!(up.len(), 180);
    list_until(&url, &Query::new(), "the 20 dropped", |l| l.len() == 180);
    let all = status_records(&run(&["status", "--master", &url, "--json"]));
    assert_eq!(all.len(), 180);
    for (server, _) in &kept {
        let addr = server.local_addr().to_string();
        let record = all.get(&addr).unwrap_or_else(|| panic!("{addr} missing"));
        let ms = record["time_ms"].as_f64().unwrap();
        assert!(ms > 0.0 && ms < 5000.0, "{addr}: {ms}");
        assert!(record["data"]["name"]
            .as_str()
            .unwrap()
            .starts_with("many-"));
    }
    assert!(dead.iter().all(|a| !all.contains_key(a)));
    // The table too: a header and 180 rows, each with a latency.
    let table = run(&["status", "--master", &url]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let lines: Vec<String> = text(&table.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 181);
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains(" ms") && l.ends_with("ok")),
        "{lines:?}"
    );
    drop(kept);
}
