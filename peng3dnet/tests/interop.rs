//! Interoperability with the real Python reference (peng3dnet 0.1.3a0), both directions.
//!
//! The reference runs from the venv that `scripts/test.sh` creates; its interpreter comes
//! from `PENG3DNET_REF_PYTHON`. These tests never skip: without the reference they fail
//! and say how to get it.

mod common;

use std::time::Duration;

use common::{ref_client, registry, RefServer, PEER_TIMEOUT};
use peng3dnet::ping::{ping_server, PingOptions, PingSession};
use peng3dnet::server::{ClientHandle, Closed, Handler, Server};
use peng3dnet::value::{encode, get, map, Value};
use peng3dnet::{client::Client, CloseReason, Packet, PingResponder};
use tokio::sync::mpsc;
use tokio::time::timeout;

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
                    get(req.message(), "x").cloned().unwrap_or(Value::Nil),
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

/// The blocking client (std::net, no runtime) against the Python server: one ping and a
/// session, called from inside a runtime's worker (where the old runtime-backed blocking
/// call could not be used) and from a plain thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_pings_the_python_server() {
    use peng3dnet::blocking;
    let server = RefServer::start().await;
    let addr = server.addr();
    let options = PingOptions {
        data: map([("who", "blocking".into())]),
        ..PingOptions::default()
    };
    // Inside the runtime, on this very task.
    let reply = blocking::ping_server(&addr, &options).unwrap();
    assert_eq!(
        reply.get("name").and_then(Value::as_str),
        Some("ref-server")
    );
    assert_eq!(
        reply
            .echo()
            .and_then(|m| get(m, "who"))
            .and_then(Value::as_str),
        Some("blocking")
    );
    // A session of three pings on a plain thread.
    let seqs = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut session =
                blocking::PingSession::connect(&addr, &PingOptions::default()).unwrap();
            let seqs: Vec<u64> = (0..3).map(|_| session.ping().unwrap().seq).collect();
            session.close();
            seqs
        }
    })
    .join()
    .unwrap();
    assert_eq!(seqs, [0, 1, 2]);
    server.stop().await;
}
