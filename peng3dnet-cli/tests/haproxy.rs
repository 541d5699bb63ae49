//! `peng3dnet serve --proxy-protocol` behind a real HAProxy, on loopback only.
//!
//! HAProxy (Debian package `haproxy`; `.ci/run` installs it) runs in TCP mode with a
//! config this test writes to a temporary directory, on ports the test picks free, as
//! `haproxy -f CFG -db`, a child process killed on drop. It balances three `serve`
//! processes round robin with `send-proxy-v2`, checking them every 100 ms with
//! `check-send-proxy`. Clients ping through it from distinct source addresses
//! (`status --source 127.0.0.N`), and every server must name them, not HAProxy.
//!
//! Without haproxy the test is skipped, except under `CI=true`, where it fails.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");
#[path = "support/proc.rs"]
mod proc;
use proc::{Proc, LIMIT};

/// The haproxy binary, or `None` (test skipped) when it is not installed outside CI.
fn haproxy() -> Option<PathBuf> {
    for candidate in ["haproxy", "/usr/sbin/haproxy"] {
        if let Ok(out) = Command::new(candidate).arg("-v").output() {
            if out.status.success() {
                return Some(PathBuf::from(candidate));
            }
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "haproxy is not installed; CI must install it \
             (bash scripts/ensure-debian-packages.sh haproxy, run by .ci/run)"
        );
    }
    eprintln!("skipped: haproxy is not installed (apt-get install haproxy)");
    None
}

/// `peng3dnet serve` behind balancers on 127.0.0.1, with its address.
fn backend(name: &str) -> (Proc, SocketAddr) {
    let args = [
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--proxy-trusted",
        "127.0.0.1",
        "--data",
        &format!("name={name}"),
        "-v",
    ];
    let proc = Proc::spawn(BIN, &args);
    let addr = proc.line("listening on ").parse().unwrap();
    (proc, addr)
}

/// A port free now (HAProxy binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy's configuration: TCP mode, round robin over `backends`, PROXY v2 to each,
/// health checks every 100 ms that also send the header.
fn haproxy_config(front: u16, backends: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "global\n    maxconn 1000\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         frontend front\n    bind 127.0.0.1:{front}\n    default_backend servers\n\
         backend servers\n    balance roundrobin\n"
    );
    for (i, addr) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "    server s{i} {addr} send-proxy-v2 check check-send-proxy inter 100ms fall 1 rise 1\n"
        ));
    }
    cfg
}

/// `peng3dnet status --json --source SOURCE TARGET`: the server's data, or the error.
fn status_from(source: &str, target: &str) -> Result<serde_json::Value, String> {
    let out = Command::new(BIN)
        .args(["status", "--json", "-W", "3", "--source", source, target])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let record: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            format!(
                "no JSON record: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    if out.status.success() && record["type"] == "status" {
        Ok(record["data"].clone())
    } else {
        Err(record.to_string())
    }
}

fn str_of<'a>(data: &'a serde_json::Value, key: &str) -> &'a str {
    data[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {data}"))
}

#[test]
fn three_servers_behind_haproxy_see_each_clients_real_address() {
    let Some(haproxy) = haproxy() else { return };
    let mut backends: Vec<(Proc, SocketAddr)> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|name| backend(name))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|(_, a)| *a).collect();
    let dir = std::env::temp_dir().join(format!("peng3dnet-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("haproxy.cfg");
    let front = free_port();
    std::fs::File::create(&cfg_path)
        .unwrap()
        .write_all(haproxy_config(front, &addrs).as_bytes())
        .unwrap();
    let balancer = Proc::spawn(&haproxy, &["-f", cfg_path.to_str().unwrap(), "-db"]);
    let target = format!("127.0.0.1:{front}");
    // Ready when it accepts on the front end.
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(&target).is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy did not listen on {target}; stderr: {}",
            balancer.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Its health checks reach every server as LOCAL headers, served with HAProxy's own
    // address (logged at debug).
    for (proc, _) in &backends {
        proc.wait_for_log("for a LOCAL health check", |l| {
            l.contains("LOCAL (a health check)")
        });
    }

    // Six clients from six source addresses: every ping answered, round robin over the
    // three servers, each naming its client.
    let sources: Vec<String> = (2..=7).map(|n| format!("127.0.0.{n}")).collect();
    let mut served_by = std::collections::BTreeMap::<String, Vec<String>>::new();
    for source in &sources {
        let data = status_from(source, &target)
            .unwrap_or_else(|e| panic!("ping from {source} failed: {e}"));
        let client: SocketAddr = str_of(&data, "client_addr").parse().unwrap();
        assert_eq!(client.ip().to_string(), *source, "{data}");
        served_by
            .entry(str_of(&data, "name").to_owned())
            .or_default()
            .push(client.to_string());
    }
    assert_eq!(
        served_by.keys().collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"],
        "round robin over all three: {served_by:?}"
    );
    // Each server's log names the clients it served (serve -v), never HAProxy for them.
    for (i, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        for client in &served_by[*name] {
            let line = backends[i]
                .0
                .wait_for_log(&format!("naming {client}"), |l| {
                    l.contains("PROXY protocol v2 header") && l.contains(&format!("peer={client}"))
                });
            assert!(line.contains("via=127.0.0.1:"), "{line}");
            backends[i]
                .0
                .wait_for_log(&format!("closing {client}"), |l| {
                    l.contains(&format!("peer={client}")) && !l.contains("PROXY protocol")
                });
        }
    }

    // A PROXY header from a source that is not trusted is refused, unread.
    let refused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(untrusted_header(addrs[0]));
    assert!(refused, "an untrusted source got a reply");
    backends[0].0.wait_for_log("refusing 127.0.0.9", |l| {
        l.contains("refused") && l.contains("peer=127.0.0.9:") && l.contains("not trusted")
    });

    // One server dies mid-run: after HAProxy's check interval every ping succeeds again
    // (polled, with a deadline), answered by the two left.
    let (mut dead, _) = backends.remove(1);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let deadline = Instant::now() + LIMIT;
    let mut streak = 0;
    let mut names = std::collections::BTreeSet::new();
    let mut n = 0;
    while streak < 6 {
        assert!(
            Instant::now() < deadline,
            "pings still failing {LIMIT:?} after a server died; haproxy: {}",
            balancer.stderr()
        );
        let source = &sources[n % sources.len()];
        n += 1;
        match status_from(source, &target) {
            Ok(data) => {
                assert_eq!(
                    str_of(&data, "client_addr")
                        .parse::<SocketAddr>()
                        .unwrap()
                        .ip()
                        .to_string(),
                    *source
                );
                names.insert(str_of(&data, "name").to_owned());
                streak += 1;
            }
            Err(_) => {
                streak = 0;
                names.clear();
            }
        }
    }
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["alpha", "gamma"]);
    drop(balancer);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Connects to `server` from 127.0.0.9 (not trusted), sends a v2 header claiming
/// 203.0.113.5, and tells whether the server closed without a byte.
async fn untrusted_header(server: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
    let mut tcp = socket.connect(server).await.unwrap();
    let _ = tcp
        .write_all(
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x05\x7f\x00\x00\x01\x00\x01\x1f\x90",
        )
        .await;
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(LIMIT, tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// The new flags are checked before anything starts (exit status 3, a clear message).
#[test]
fn proxy_and_source_flags_are_checked() {
    for (args, says) in [
        (&["serve", "--proxy-protocol"][..], "--proxy-trusted"),
        (
            &[
                "serve",
                "--proxy-protocol",
                "--proxy-trusted",
                "10.0.0.0/33",
            ],
            "not an IP network",
        ),
        (
            &["serve", "--proxy-trusted", "10.0.0.1"],
            "--proxy-protocol",
        ),
        (
            &["ping", "--source", "nope", "127.0.0.1"],
            "not an IP address",
        ),
    ] {
        let out = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
