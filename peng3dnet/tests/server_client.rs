//! The server, the classic client and the ping client against each other, in process, on
//! loopback.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use peng3dnet::config::Config;
use peng3dnet::ping::{ping_server, PingError, PingOptions, PingSession};
use peng3dnet::pong::PingRequest;
use peng3dnet::server::{ClientHandle, Closed, Handler, Server};
use peng3dnet::value::{get, map, Value};
use peng3dnet::{
    client::Client, CloseReason, ConnType, ConnectionError, Packet, PingResponder, Registry,
};
use tokio::sync::mpsc;

fn registry() -> Registry {
    common::registry_of(&["test:echo", "test:other"])
}

/// Echoes every packet back on the same name, counting per client, and reports closes.
struct Echo {
    closed: mpsc::UnboundedSender<Closed>,
}

impl Handler for Echo {
    type State = u64;
    fn on_packet(&self, client: &ClientHandle, count: &mut u64, packet: Packet) {
        *count += 1;
        let reply = map([("echo", packet.body), ("count", (*count).into())]);
        client
            .send(packet.name.as_deref().unwrap(), &reply)
            .unwrap();
    }
    fn on_close(&self, _client: &ClientHandle, _count: &mut u64, closed: &Closed) {
        let _ = self.closed.send(closed.clone());
    }
}

async fn echo_server(config: Config) -> (Server, mpsc::UnboundedReceiver<Closed>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .config(config)
        .registry(registry())
        .handler(Echo { closed: tx })
        .pingable(PingResponder::new().with_static_data(map([("name", "rust".into())])))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    (server, rx)
}

#[tokio::test]
async fn classic_exchange_with_per_client_state_and_compression() {
    let (server, mut closed) = echo_server(Config::default()).await;
    let mut client = Client::builder()
        .registry(registry())
        .connect(&server.local_addr().to_string())
        .await
        .unwrap();
    let big = Value::Binary(vec![7; 20_000]);
    client
        .send("test:echo", &map([("n", 1.into())]))
        .await
        .unwrap();
    client.send("test:other", &big).await.unwrap();
    let first = client.recv().await.unwrap();
    assert_eq!(first.name.as_deref(), Some("test:echo"));
    assert_eq!(get(&first.body, "echo"), Some(&map([("n", 1.into())])));
    assert_eq!(get(&first.body, "count"), Some(&Value::from(1)));
    let second = client.recv().await.unwrap();
    assert_eq!(second.name.as_deref(), Some("test:other"));
    assert_eq!(get(&second.body, "echo"), Some(&big));
    assert_eq!(get(&second.body, "count"), Some(&Value::from(2)));
    assert_eq!(server.client_count(), 1);
    client.close("done").await.unwrap();
    assert_eq!(
        closed.recv().await,
        Some(Closed::ByPeer(Some(CloseReason::Other("done".into()))))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn server_shutdown_flushes_queued_packets_then_sends_servershutdown() {
    let (server, _closed) = echo_server(Config::default()).await;
    let mut client = Client::builder()
        .registry(registry())
        .connect(server.local_addr()) // a SocketAddr: any ToTarget
        .await
        .unwrap();
    // wait until the server has registered the client as established
    client.send("test:echo", &Value::Nil).await.unwrap();
    client.recv().await.unwrap();
    let handle = server.clients().pop().unwrap();
    for i in 0..100 {
        handle.send("test:other", &Value::from(i)).unwrap();
    }
    server.shutdown().await;
    for i in 0..100 {
        assert_eq!(client.recv().await.unwrap().body, Value::from(i));
    }
    match client.recv().await {
        Err(ConnectionError::ClosedByPeer(Some(CloseReason::ServerShutdown))) => {}
        other => panic!("expected servershutdown, got {other:?}"),
    }
}

#[tokio::test]
async fn close_one_client_with_a_reason() {
    let (server, mut closed) = echo_server(Config::default()).await;
    let client = Client::builder()
        .registry(registry())
        .connect(("127.0.0.1", server.local_addr().port()))
        .await
        .unwrap();
    let id = server.clients()[0].id();
    server.close_client(id, "kicked").unwrap();
    assert_eq!(
        client.wait_for_close(Duration::from_secs(5)).await.unwrap(),
        Some(CloseReason::Other("kicked".into()))
    );
    assert_eq!(
        closed.recv().await,
        Some(Closed::ByUs(CloseReason::Other("kicked".into())))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn registry_mismatch_is_refused_by_the_client() {
    let (server, _closed) = echo_server(Config::default()).await;
    let mut other = Registry::new();
    other.register("test:unknown").unwrap();
    let err = Client::builder()
        .registry(other)
        .connect(&server.local_addr().to_string())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectionError::Protocol(CloseReason::PacketRegMismatch)
        ),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_conntype_is_refused_by_the_server() {
    let (server, _closed) = echo_server(Config::default()).await;
    let err = Client::builder()
        .conntype(ConnType::Custom("nosuch".into()))
        .connect(&server.local_addr().to_string())
        .await;
    // The custom type is "established" on the client side right after settype; the
    // server's refusal arrives as the next thing read.
    let mut client = err.unwrap();
    match client.recv().await {
        Err(ConnectionError::ClosedByPeer(Some(CloseReason::UnknownConnType))) => {}
        other => panic!("expected unknownconntype, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn custom_connection_types_carry_raw_ids() {
    struct Raw;
    impl Handler for Raw {
        type State = ();
        fn on_packet(&self, client: &ClientHandle, _: &mut (), packet: Packet) {
            assert_eq!(packet.name, None);
            client.send_id(packet.id + 1, &packet.body).unwrap();
        }
    }
    let server = Server::builder()
        .handler(Raw)
        .conntype("raw")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut client = Client::builder()
        .conntype(ConnType::Custom("raw".into()))
        .connect(&server.local_addr().to_string())
        .await
        .unwrap();
    client.send_id(100, &"x".into()).await.unwrap();
    let p = client.recv().await.unwrap();
    assert_eq!((p.id, p.body), (101, Value::from("x")));
    server.shutdown().await;
    assert!(Server::builder()
        .conntype("raw")
        .conntype("raw")
        .bind("127.0.0.1:0")
        .await
        .is_err());
}

#[tokio::test]
async fn ping_returns_server_data_delay_and_timings() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let responder = PingResponder::new()
        .with_static_data(map([("name", "rust".into()), ("motd", "hi".into())]))
        .with_dynamic(move |req: &PingRequest<'_>| {
            seen2
                .lock()
                .unwrap()
                .push((req.client_id, req.peer_addr, req.message().clone()));
            map([("clients", 1.into())])
        });
    let server = Server::builder()
        .pingable(responder.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let options = PingOptions {
        data: map([("x", 1.into())]),
        ..PingOptions::default()
    };
    let reply = ping_server(&server.local_addr().to_string(), &options)
        .await
        .unwrap();
    assert_eq!(
        reply.server_data(),
        map([
            ("clients", 1.into()),
            ("name", "rust".into()),
            ("motd", "hi".into()),
            (
                "peng3dnet",
                map([
                    ("version", "0.1.3a0".into()),
                    ("release", "0.1.3".into()),
                    ("protoversion", 2.into())
                ])
            ),
        ])
    );
    // The pong's bytes as the server sent them: its map, without the two keys the client
    // adds to `data()`.
    let sent = peng3dnet::value::decode(reply.pong_bytes(), 64).unwrap();
    assert_eq!(get(&sent, "name"), reply.get("name"));
    assert_eq!(get(&sent, "recvtime"), None);
    assert!(reply.get("recvtime").is_some());
    let echo = reply.echo().unwrap();
    assert_eq!(get(echo, "x"), Some(&Value::from(1)));
    assert!(get(echo, "time").unwrap().as_f64().unwrap() > 1.7e9);
    assert!(reply.delay > Duration::ZERO);
    assert_eq!(
        reply.get("delay").unwrap().as_f64().unwrap(),
        reply.delay.as_secs_f64()
    );
    assert!(
        reply.get("recvtime").unwrap().as_f64().unwrap()
            >= get(echo, "time").unwrap().as_f64().unwrap()
    );
    let t = reply.timings;
    assert!(
        t.connect > Duration::ZERO
            && t.ping == reply.delay
            && t.total >= t.resolve + t.connect + t.hello + t.ping
    );
    assert!(t.server.unwrap() < reply.delay);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(get(&seen[0].2, "x"), Some(&Value::from(1)));
        assert_eq!(seen[0].1.ip(), std::net::Ipv4Addr::LOCALHOST);
    }

    #[derive(serde::Deserialize)]
    struct Status {
        name: String,
        clients: u32,
    }
    let status: Status = reply.deserialize().unwrap();
    assert_eq!((status.name.as_str(), status.clients), ("rust", 1));

    // static data replaced while running
    responder.set_static_data(map([("name", "renamed".into())]));
    let reply = ping_server(&server.local_addr().to_string(), &options)
        .await
        .unwrap();
    assert_eq!(reply.get("name"), Some(&Value::from("renamed")));
    // The typed getters of the common keys.
    responder.set_static_data(map([
        ("name", "typed".into()),
        ("motd", "hi".into()),
        ("maxplayers", 16.into()),
        ("version", "1.2".into()),
    ]));
    let typed = ping_server(&server.local_addr().to_string(), &options)
        .await
        .unwrap();
    assert_eq!(
        (
            typed.name(),
            typed.motd(),
            typed.max_clients(),
            typed.version()
        ),
        (Some("typed"), Some("hi"), Some(16), Some("1.2"))
    );
    assert_eq!(
        server
            .stats()
            .pings
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    server.shutdown().await;
}

#[tokio::test]
async fn delay_is_right_without_writeback() {
    let server = Server::builder()
        .pingable(PingResponder::new().with_writeback(false))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let reply = ping_server(&server.local_addr().to_string(), &PingOptions::default())
        .await
        .unwrap();
    assert!(reply.echo().is_none());
    assert!(reply.delay > Duration::ZERO);
    server.shutdown().await;
}

#[tokio::test]
async fn session_pings_carry_sequence_numbers() {
    let server = Server::builder()
        .pingable(PingResponder::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut session =
        PingSession::connect(&server.local_addr().to_string(), &PingOptions::default())
            .await
            .unwrap();
    for seq in 0..5 {
        let reply = session.ping().await.unwrap();
        assert_eq!(reply.seq, seq);
        assert_eq!(get(reply.echo().unwrap(), "seq"), Some(&Value::from(seq)));
        if seq > 0 {
            assert_eq!(reply.timings.connect, Duration::ZERO);
        }
    }
    // wait_for_pong returns at once when the pong is already there
    let seq = session.send_ping().await.unwrap();
    let reply = session.wait_for_pong(Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply.seq, seq);
    session.close().await;
    server.shutdown().await;
}

/// Pongs larger than the socket takes at once (the server hands the socket what it takes
/// and buffers the rest) arrive whole and in order, each with its own echo: 12 MiB is
/// more than a socket's send buffer grows to (4 MiB by default), and the client's receive
/// buffer is small.
#[tokio::test]
async fn pongs_written_in_parts_arrive_whole_and_in_order() {
    use bytes::BytesMut;
    use peng3dnet::frame::{Frame, FrameCodec};
    use peng3dnet::protocol::{ids, settype_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Uncompressed both ways, so that every pong is as large as its ping.
    let uncompressed = peng3dnet::config::Compression {
        enabled: false,
        ..Default::default()
    };
    let mut config = Config::default();
    config.compression = uncompressed;
    config.limits.max_echo_bytes = 16 << 20;
    config.limits.frame.max_frame_length = 32 << 20;
    config.limits.frame.max_inflated_size = 32 << 20;
    let frame_limits = config.limits.frame;
    let server = Server::builder()
        .config(config)
        .pingable(PingResponder::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.local_addr()).await.unwrap();
    let codec = FrameCodec::new(frame_limits, uncompressed);
    let (mut decoder, mut buf) = (codec.clone(), BytesMut::new());
    let mut next_frame = async |stream: &mut tokio::net::TcpStream| loop {
        if let Some(frame) = decoder.decode(&mut buf).unwrap() {
            return frame;
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut buf));
        assert!(read.await.unwrap().unwrap() > 0, "the server closed");
    };
    assert_eq!(next_frame(&mut stream).await.id, ids::HELLO);
    let settype = codec.to_bytes(settype_frame(&ConnType::Ping)).unwrap();
    stream.write_all(&settype).await.unwrap();
    for seq in 0..4u64 {
        let pad = vec![seq as u8; 12 << 20];
        let ping = map([
            ("time", Value::F64(1.5)),
            ("seq", Value::from(seq)),
            ("pad", Value::Binary(pad.clone())),
        ]);
        let ping = Frame::new(ids::PING, peng3dnet::value::encode(&ping));
        stream
            .write_all(&codec.to_bytes(ping).unwrap())
            .await
            .unwrap();
        let pong = next_frame(&mut stream).await;
        let reason = peng3dnet::value::decode(&pong.body, 64);
        assert_eq!(pong.id, ids::PONG, "not a pong: {reason:?}");
        let pong = peng3dnet::value::decode(&pong.body, 64).unwrap();
        let echo = get(&pong, "oldmsg").unwrap();
        assert_eq!(get(echo, "seq"), Some(&Value::from(seq)));
        assert_eq!(get(echo, "pad"), Some(&Value::Binary(pad)));
    }
    drop(stream);
    server.shutdown().await;
}

#[tokio::test]
async fn pinging_a_server_that_is_not_pingable_is_refused_with_unknownconntype() {
    let server = Server::builder().bind("127.0.0.1:0").await.unwrap();
    match ping_server(&server.local_addr().to_string(), &PingOptions::default()).await {
        Err(PingError::ClosedByPeer(Some(CloseReason::UnknownConnType))) => {}
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn refused_port_and_unresolvable_name_are_distinct_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = ping_server(&format!("127.0.0.1:{port}"), &PingOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PingError::Connect { .. }), "{err}");
    let err = ping_server("nonexistent.invalid", &PingOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PingError::Resolve { .. }), "{err}");
}

#[tokio::test]
async fn a_silent_server_times_out_as_a_ping_failure() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move { listener.accept().await });
    let options = PingOptions {
        timeout: Duration::from_millis(300),
        ..PingOptions::default()
    };
    let err = ping_server(&addr.to_string(), &options).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    hold.abort();
}

#[test]
fn blocking_ping_works_without_a_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(
            Server::builder()
                .pingable(PingResponder::new())
                .bind("127.0.0.1:0"),
        )
        .unwrap();
    let reply =
        peng3dnet::blocking::ping_server(server.local_addr().to_string(), &PingOptions::default())
            .unwrap();
    assert!(reply.delay > Duration::ZERO);
    rt.block_on(server.shutdown());
}

/// Panics in application code on `test:other`, reports closes.
struct Panicky {
    closed: mpsc::UnboundedSender<Closed>,
}

impl Handler for Panicky {
    type State = ();
    fn on_packet(&self, _client: &ClientHandle, _state: &mut (), packet: Packet) {
        if packet.name.as_deref() == Some("test:other") {
            panic!("the application failed");
        }
    }
    fn on_close(&self, _client: &ClientHandle, _state: &mut (), closed: &Closed) {
        let _ = self.closed.send(closed.clone());
    }
}

/// A panic in `on_packet` or in a ping data provider used to close the client
/// without a reason and leave it in `clients()` and the counters for good, without
/// `on_close`. Now it costs only that connection: closed with `internalerror`, counted
/// out, `on_close` run; the server goes on serving others.
#[tokio::test]
async fn a_panic_in_application_code_closes_only_that_client_with_a_reason() {
    let (tx, mut closed) = mpsc::unbounded_channel();
    let responder = PingResponder::new().with_dynamic(|request: &PingRequest<'_>| {
        if get(request.message(), "boom").is_some() {
            panic!("the provider failed");
        }
        map([])
    });
    let server = Server::builder()
        .registry(registry())
        .handler(Panicky { closed: tx })
        .pingable(responder)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();

    let mut bystander = Client::builder()
        .registry(registry())
        .connect(&addr)
        .await
        .unwrap();
    let mut client = Client::builder()
        .registry(registry())
        .connect(&addr)
        .await
        .unwrap();
    client.send("test:other", &map([])).await.unwrap();
    match client.recv().await {
        Err(ConnectionError::ClosedByPeer(Some(CloseReason::InternalError))) => {}
        other => panic!("expected closeconn internalerror, got {other:?}"),
    }
    assert_eq!(
        closed.recv().await,
        Some(Closed::ByUs(CloseReason::InternalError))
    );
    assert_eq!(server.client_count(), 1, "only the bystander is left");

    let options = PingOptions {
        data: map([("boom", true.into())]),
        ..PingOptions::default()
    };
    match ping_server(&addr, &options).await {
        Err(PingError::ClosedByPeer(Some(CloseReason::InternalError))) => {}
        other => panic!("expected closeconn internalerror, got {other:?}"),
    }
    assert_eq!(
        closed.recv().await,
        Some(Closed::ByUs(CloseReason::InternalError))
    );
    assert_eq!(server.client_count(), 1);
    assert_eq!(
        server
            .stats()
            .connected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // The server still serves: the bystander's connection and a fresh ping.
    bystander.send("test:echo", &map([])).await.unwrap();
    assert!(ping_server(&addr, &PingOptions::default()).await.is_ok());
    bystander.close("done").await.unwrap();
    server.shutdown().await;
}

/// `ping_server` takes anything that names a server, as `bind` does.
#[tokio::test]
async fn ping_server_takes_a_string_an_address_or_a_host_port_pair() {
    let (server, _closed) = echo_server(Config::default()).await;
    let addr = server.local_addr();
    let options = PingOptions::default();
    for reply in [
        ping_server(addr.to_string(), &options).await,
        ping_server(addr, &options).await,
        ping_server(("127.0.0.1", addr.port()), &options).await,
        ping_server((addr.ip(), addr.port()), &options).await,
    ] {
        assert_eq!(reply.unwrap().peer, addr);
    }
    match ping_server("127.0.0.1:notaport", &options).await {
        Err(PingError::Resolve { target, .. }) => assert_eq!(target, "127.0.0.1:notaport"),
        other => panic!("expected a resolve error, got {other:?}"),
    }
    server.shutdown().await;
}
