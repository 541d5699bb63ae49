//! `peng3dnet master` as a process: a `serve` process announces to it and is listed with
//! its pong data; SIGHUP rereads the settings file (a trusted announcer added); SIGTERM
//! stops it with status 0; bad settings exit 3 naming the setting.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");
#[path = "support/proc.rs"]
mod proc;
use proc::{Proc, LIMIT};

#[path = "support/tempdir.rs"]
mod tempdir;
use tempdir::TempDir;

/// One HTTP request from `source` (the master lists the address an announce comes from).
fn http(source: &str, master: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    let master: SocketAddr = master.parse().unwrap();
    socket.connect_timeout(&master.into(), LIMIT).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn a_served_server_announces_sighup_trusts_sigterm_stops() {
    let dir = TempDir::new("master");
    let config = dir.write(
        "master.toml",
        "refresh = 1\ndrop-after = 30\nlog-format = \"json\"\n",
    );
    let db = format!("sqlite:{}", dir.0.join("list.db").display());
    let mut master = Proc::spawn(
        BIN,
        &[
            "master",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db,
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let url = master.line("master on http://");
    let addr = url.trim_end_matches('/').to_owned();

    let server = Proc::spawn(
        BIN,
        &[
            "serve",
            "--bind",
            "127.0.6.1:0",
            "--data",
            "name=cli-listed",
        ],
    );
    let served = server.line("listening on ");
    let port: u16 = served.rsplit_once(':').unwrap().1.parse().unwrap();

    let (status, body) = http(
        "127.0.6.1",
        &addr,
        "POST",
        "/announce",
        &format!("{{\"port\": {port}}}"),
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["server"]["name"], "cli-listed");
    // serve counts the connection that pings it among its clients.
    assert_eq!(answer["server"]["clients"], 1, "{body}");
    assert_eq!(answer["server"]["data"]["pings"], 1, "{body}");
    assert_eq!(answer["reannounce_after_s"], 1);

    let (status, list) = http("127.0.0.1", &addr, "GET", "/servers.txt", "");
    assert_eq!((status, list.trim()), (200, served.as_str()));

    // An untrusted announcer may not name another host...
    let naming = format!("{{\"port\": {port}, \"host\": \"127.0.6.1\"}}");
    let (status, body) = http("127.0.6.2", &addr, "POST", "/announce", &naming);
    assert_eq!(status, 403, "{body}");
    // ... until the settings file trusts it and SIGHUP rereads it.
    std::fs::write(
        &config,
        "refresh = 1\ndrop-after = 30\nlog-format = \"json\"\ntrusted = [\"127.0.6.2\"]\n",
    )
    .unwrap();
    master.signal("-HUP");
    master.wait_stderr("settings reloaded");
    let (status, body) = http("127.0.6.2", &addr, "POST", "/announce", &naming);
    assert_eq!(status, 200, "{body}");
    // JSON logs: every stderr line is an object.
    for line in master.stderr().lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }

    master.signal("-TERM");
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = master.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not stop the master");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", master.stderr());
    assert!(dir.0.join("list.db").exists());
}

#[test]
fn bad_settings_exit_3_naming_the_setting() {
    let run = |args: &[&str]| Command::new(BIN).arg("master").args(args).output().unwrap();
    let out = run(&["--db", "mysql://h/db"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sqlite:PATH or postgres://"));
    let out = run(&[
        "--refresh",
        "10",
        "--drop-after",
        "5",
        "--db",
        "sqlite:/nonexistent/x.db",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("drop-after"));
    let dir = TempDir::new("bad-config");
    let config = dir.write("m.toml", "refrsh = 1\n");
    let out = run(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refrsh"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A database that cannot be opened is a system error (4), said in words.
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--db",
        "sqlite:/nonexistent/dir/x.db",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir/x.db"));
}
