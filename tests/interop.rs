//! Interoperability with the real Python reference (peng3dnet 0.1.3a0), both directions.
//!
//! The reference runs from the venv that `scripts/test.sh` creates; its interpreter comes
//! from `PENG3DNET_REF_PYTHON`. These tests never skip: without the reference they fail
//! and say how to get it.

use std::process::Stdio;
use std::time::Duration;

use peng3dnet::ping::{ping_server, PingOptions, PingSession};
use peng3dnet::server::{ClientHandle, Closed, Handler, Server};
use peng3dnet::value::{encode, get, map, Value};
use peng3dnet::{client::Client, CloseReason, Packet, PingResponder, Registry};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

const PEER_TIMEOUT: Duration = Duration::from_secs(30);

fn ref_python() -> String {
    match std::env::var("PENG3DNET_REF_PYTHON") {
        Ok(p) if std::path::Path::new(&p).exists() => p,
        Ok(p) => panic!("PENG3DNET_REF_PYTHON={p} does not exist; run `bash scripts/test.sh`, which creates the reference venv"),
        Err(_) => panic!(
            "PENG3DNET_REF_PYTHON is not set: the interoperability tests need the Python reference. \
             Run the tests with `bash scripts/test.sh`, which installs it into .venv-ref"
        ),
    }
}

fn script(name: &str) -> String {
    format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("interop:msg").unwrap();
    r.register("interop:big").unwrap();
    r
}

/// The Python reference server, stopped (stdin closed, then killed if need be) on drop.
struct RefServer {
    child: Child,
    port: u16,
}

impl RefServer {
    async fn start() -> RefServer {
        let mut child = Command::new(ref_python())
            .arg(script("ref_server.py"))
            .args(["--port", "0"])
            .env("PYGLET_SHADOW_WINDOW", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the Python reference server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = timeout(PEER_TIMEOUT, lines.next_line())
            .await
            .expect("reference server did not print READY in time")
            .unwrap()
            .expect("reference server exited before READY");
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected line from reference server: {line:?}"));
        RefServer { child, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = timeout(PEER_TIMEOUT, self.child.wait()).await;
        assert!(
            matches!(status, Ok(Ok(s)) if s.success()),
            "reference server did not exit cleanly: {status:?}"
        );
    }
}

/// Runs the reference client against `port`; returns its JSON line.
async fn ref_client(port: u16, mode: &str) -> serde_json::Value {
    let out = timeout(
        PEER_TIMEOUT,
        Command::new(ref_python())
            .arg(script("ref_client.py"))
            .args(["--port", &port.to_string(), "--mode", mode])
            .env("PYGLET_SHADOW_WINDOW", "0")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("reference client did not finish in time")
    .expect("cannot run the reference client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "reference client printed no JSON ({e}): stdout {stdout:?} stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "reference client failed: {json} stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    json
}

fn sample_message() -> Value {
    map([
        ("n", 1.into()),
        ("s", "héllo".into()),
        ("b", Value::Binary(vec![0, 1, 255])),
        ("f", Value::F64(1.5)),
        ("l", Value::Array(vec![1.into(), 2.into(), 3.into()])),
        ("m", map([("k", Value::Nil)])),
        ("t", true.into()),
    ])
}

fn blob() -> Vec<u8> {
    (0..64).flat_map(|_| 0..=255u8).collect()
}

#[tokio::test]
async fn our_classic_client_with_the_python_server() {
    let server = RefServer::start().await;
    let mut client = Client::builder()
        .registry(registry())
        .connect(&server.addr())
        .await
        .expect("classic handshake with the reference");

    let msg = sample_message();
    client.send("interop:msg", &msg).await.unwrap();
    let reply = client.recv().await.unwrap();
    assert_eq!(reply.name.as_deref(), Some("interop:msg"));
    assert_eq!(get(&reply.body, "echo"), Some(&msg));
    // Python re-packs what it decoded: byte for byte what we sent.
    assert_eq!(
        get(&reply.body, "repacked"),
        Some(&Value::Binary(encode(&msg).to_vec()))
    );
    let types = get(&reply.body, "types").unwrap();
    for (key, ty) in [
        ("n", "int"),
        ("s", "str"),
        ("b", "bytes"),
        ("f", "float"),
        ("l", "list"),
        ("m", "dict"),
        ("t", "bool"),
    ] {
        assert_eq!(
            get(types, key).and_then(Value::as_str),
            Some(ty),
            "Python type of {key}"
        );
    }

    // Over 8 KiB both ways: compressed by us, inflated by Python, and back.
    let big = map([("n", 2.into()), ("blob", Value::Binary(blob()))]);
    assert!(encode(&big).len() > 8192);
    client.send("interop:big", &big).await.unwrap();
    let reply = client.recv().await.unwrap();
    assert_eq!(reply.name.as_deref(), Some("interop:big"));
    assert_eq!(get(&reply.body, "echo"), Some(&big));
    assert_eq!(
        get(&reply.body, "repacked"),
        Some(&Value::Binary(encode(&big).to_vec()))
    );
    assert_eq!(get(&reply.body, "blob"), Some(&Value::Binary(blob())));
    assert_eq!(
        get(&reply.body, "text").and_then(Value::as_str),
        Some("y".repeat(10000).as_str())
    );

    client.close("done").await.unwrap();
    server.stop().await;
}

/// Answers `{"echo": msg, "from": "rust"}` on the packet's own name; reports closes.
struct Echo(mpsc::UnboundedSender<Closed>);

impl Handler for Echo {
    type State = ();
    fn on_packet(&self, client: &ClientHandle, _: &mut (), packet: Packet) {
        let reply = map([("echo", packet.body), ("from", "rust".into())]);
        client
            .send(packet.name.as_deref().unwrap(), &reply)
            .unwrap();
    }
    fn on_close(&self, _: &ClientHandle, _: &mut (), closed: &Closed) {
        let _ = self.0.send(closed.clone());
    }
}

#[tokio::test]
async fn the_python_classic_client_with_our_server() {
    let (tx, mut closed) = mpsc::unbounded_channel();
    let server = Server::builder()
        .registry(registry())
        .handler(Echo(tx))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let result = ref_client(server.local_addr().port(), "classic").await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["replies"], 2);
    let how = timeout(PEER_TIMEOUT, closed.recv()).await.unwrap().unwrap();
    assert_eq!(how, Closed::ByPeer(Some(CloseReason::Other("done".into()))));
    server.shutdown().await;
}

#[tokio::test]
async fn our_ping_of_the_python_server() {
    let server = RefServer::start().await;
    let options = PingOptions {
        data: map([("x", 7.into())]),
        ..PingOptions::default()
    };
    let reply = ping_server(&server.addr(), &options)
        .await
        .expect("ping the reference");
    assert_eq!(
        reply.get("name").and_then(Value::as_str),
        Some("ref-server")
    );
    assert_eq!(reply.get("motd").and_then(Value::as_str), Some("hello"));
    assert_eq!(reply.get("clients").and_then(Value::as_u64), Some(1));
    assert_eq!(reply.get("echo_x").and_then(Value::as_u64), Some(7));
    let version = reply.get("peng3dnet").unwrap();
    assert_eq!(
        get(version, "version").and_then(Value::as_str),
        Some("0.1.3a0")
    );
    assert_eq!(
        get(version, "protoversion").and_then(Value::as_u64),
        Some(2)
    );
    assert_eq!(
        get(reply.echo().unwrap(), "x").and_then(Value::as_u64),
        Some(7)
    );
    assert!(reply.delay > Duration::ZERO);
    let delay = reply.get("delay").and_then(Value::as_f64).unwrap();
    assert!(delay > 0.0 && delay < 30.0);
    assert_eq!(
        reply.timings.server, None,
        "the reference sends no timestamps of its own"
    );
    server.stop().await;
}

#[tokio::test]
async fn session_pings_against_the_python_server() {
    let server = RefServer::start().await;
    let mut session = PingSession::connect(&server.addr(), &PingOptions::default())
        .await
        .unwrap();
    for seq in 0..5 {
        let reply = session
            .ping()
            .await
            .expect("the reference answers every ping on a connection");
        assert_eq!(reply.seq, seq);
        assert_eq!(
            get(reply.echo().unwrap(), "seq").and_then(Value::as_u64),
            Some(seq)
        );
        assert!(reply.delay > Duration::ZERO);
    }
    session.close().await;
    server.stop().await;
}

#[tokio::test]
async fn the_python_ping_of_our_server() {
    let responder = PingResponder::new()
        .with_static_data(map([("name", "rust-server".into()), ("motd", "hi".into())]))
        .with_dynamic(|req| {
            map([
                ("clients", 1.into()),
                (
                    "echo_x",
                    get(req.message, "x").cloned().unwrap_or(Value::Nil),
                ),
            ])
        });
    let server = Server::builder()
        .pingable(responder)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let reply = ref_client(server.local_addr().port(), "ping").await;
    assert_eq!(reply["name"], "rust-server", "{reply}");
    assert_eq!(reply["motd"], "hi");
    assert_eq!(reply["clients"], 1);
    assert_eq!(reply["echo_x"], 7);
    assert_eq!(reply["oldmsg"]["x"], 7);
    assert_eq!(reply["oldmsg"]["who"], "python");
    assert_eq!(reply["peng3dnet"]["version"], "0.1.3a0");
    assert_eq!(reply["peng3dnet"]["release"], "0.1.3");
    assert_eq!(reply["peng3dnet"]["protoversion"], 2);
    let delay = reply["delay"].as_f64().unwrap();
    assert!(delay > 0.0 && delay < 30.0, "delay {delay}");
    assert!(
        reply["servertiming"]["sendtime"].as_f64().unwrap()
            >= reply["servertiming"]["recvtime"].as_f64().unwrap()
    );
    server.shutdown().await;
}

/// Runs the `peng3dnet` binary with `args`, bounded in time.
async fn cli(args: &[&str]) -> std::process::Output {
    timeout(
        PEER_TIMEOUT,
        Command::new(env!("CARGO_BIN_EXE_peng3dnet"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the CLI did not finish in time")
    .expect("cannot run the CLI")
}

#[tokio::test]
async fn the_cli_pings_and_shows_the_python_server() {
    let server = RefServer::start().await;
    let addr = server.addr();
    for mode in [&[][..], &["--session"][..]] {
        let mut args = vec!["ping", "-c", "3", "-i", "0.2"];
        args.extend_from_slice(mode);
        args.push(&addr);
        let out = cli(&args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.matches(&format!("reply from {addr}: seq=")).count(),
            3,
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("--- {addr} ping statistics ---")),
            "{stdout}"
        );
        assert!(
            stdout.contains("3 packets transmitted, 3 received, 0% packet loss"),
            "{stdout}"
        );
    }
    let out = cli(&["status", "--json", &addr]).await;
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["type"], "status");
    assert_eq!(status["data"]["name"], "ref-server");
    assert_eq!(status["data"]["motd"], "hello");
    server.stop().await;
}
