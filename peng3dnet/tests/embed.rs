//! The library as embedders use it: per-client state built from the connection, a
//! client split into halves.

mod common;

use std::net::SocketAddr;

use peng3dnet::server::{ClientHandle, Closed, Handler, Server};
use peng3dnet::value::{get, map, Value};
use peng3dnet::{client::Client, CloseReason, ConnectionError, Packet, Registry};
use tokio::sync::mpsc;

fn registry() -> Registry {
    common::registry_of(&["test:echo", "test:other"])
}

/// State that knows its client from the start.
#[derive(Default)]
struct Player {
    addr: Option<SocketAddr>,
    id: u64,
}

/// Answers every packet with the state `new_state` built; reports the state at close.
struct Greeter {
    closed: mpsc::UnboundedSender<(Option<SocketAddr>, Closed)>,
    panic_on_new: bool,
}

impl Handler for Greeter {
    type State = Player;
    fn new_state(&self, client: &ClientHandle) -> Player {
        if self.panic_on_new {
            panic!("cannot build the state");
        }
        Player {
            addr: Some(client.addr()),
            id: client.id().0,
        }
    }
    fn on_packet(&self, client: &ClientHandle, player: &mut Player, _packet: Packet) {
        let addr = player.addr.map(|a| a.to_string()).unwrap_or_default();
        let reply = map([("addr", addr.into()), ("id", player.id.into())]);
        client.send("test:echo", &reply).unwrap();
    }
    fn on_close(&self, _client: &ClientHandle, player: &mut Player, closed: &Closed) {
        let _ = self.closed.send((player.addr, closed.clone()));
    }
}

async fn greeter(
    panic_on_new: bool,
) -> (
    Server,
    mpsc::UnboundedReceiver<(Option<SocketAddr>, Closed)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .registry(registry())
        .handler(Greeter {
            closed: tx,
            panic_on_new,
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    (server, rx)
}

/// Per-client state used to come only from `Default`; `new_state` builds it
/// from the connection (here its address and id), before any hook runs.
#[tokio::test]
async fn new_state_builds_the_state_from_the_connection() {
    let (server, mut closed) = greeter(false).await;
    let mut client = Client::builder()
        .registry(registry())
        .connect(&server.local_addr().to_string())
        .await
        .unwrap();
    client.send("test:other", &map([])).await.unwrap();
    let reply = client.recv().await.unwrap();
    let id = server.clients()[0].id().0;
    let addr = server.clients()[0].addr();
    assert_eq!(
        get(&reply.body, "addr"),
        Some(&Value::from(addr.to_string()))
    );
    assert_eq!(get(&reply.body, "id"), Some(&Value::from(id)));
    client.close("bye").await.unwrap();
    let (seen, _) = closed.recv().await.unwrap();
    assert_eq!(seen, Some(addr));
    server.shutdown().await;
}

/// A `new_state` that panics costs only that connection: closed with `internalerror`,
/// and `on_close` runs with `State::default()`.
#[tokio::test]
async fn a_panicking_new_state_closes_the_connection_with_internalerror() {
    let (server, mut closed) = greeter(true).await;
    let result = Client::builder()
        .registry(registry())
        .connect(&server.local_addr().to_string())
        .await;
    match result {
        Err(ConnectionError::ClosedByPeer(Some(CloseReason::InternalError))) => {}
        other => panic!("expected closeconn internalerror, got {other:?}"),
    }
    assert_eq!(
        closed.recv().await,
        Some((None, Closed::ByUs(CloseReason::InternalError)))
    );
    server.shutdown().await;
}

/// Echoes every packet back with its body.
struct Echo;

impl Handler for Echo {
    type State = ();
    fn on_packet(&self, client: &ClientHandle, _state: &mut (), packet: Packet) {
        let _ = client.send("test:echo", &packet.body);
    }
}

/// An echoing server and a classic client connected to it.
async fn echo_server_and_client() -> (Server, Client) {
    let server = Server::builder()
        .registry(registry())
        .handler(Echo)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Client::builder()
        .registry(registry())
        .connect(&server.local_addr().to_string())
        .await
        .unwrap();
    (server, client)
}

/// A `Client` is `&mut` for both `send` and `recv`, so one task could not wait
/// for packets while another sends. Split, the reader waits in a spawned task (already
/// blocked in `recv` before anything is sent) while the writer sends from this one.
#[tokio::test]
async fn a_split_client_receives_in_one_task_while_another_sends() {
    let (server, client) = echo_server_and_client().await;
    let (mut reader, mut writer) = client.split();
    const N: u64 = 200;
    let receiving = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < N as usize {
            let packet = reader.recv().await.unwrap();
            seen.push(get(&packet.body, "n").cloned().unwrap());
        }
        (reader, seen)
    });
    // The test runtime has one thread: yielding runs the reader until it waits in `recv`.
    tokio::task::yield_now().await;
    for n in 0..N {
        writer
            .send("test:other", &map([("n", n.into())]))
            .await
            .unwrap();
    }
    let (mut reader, seen) = tokio::time::timeout(std::time::Duration::from_secs(5), receiving)
        .await
        .expect("every echo arrives")
        .unwrap();
    writer.close("bye").await.unwrap();
    match reader.recv().await {
        Err(ConnectionError::ClosedByPeer(_)) => {}
        other => panic!("expected the server's close, got {other:?}"),
    }
    let expected: Vec<Value> = (0..N).map(Value::from).collect();
    assert_eq!(seen, expected);
    server.shutdown().await;
}

/// After the server closes, the writer refuses to send instead of writing into a closed
/// socket.
#[tokio::test]
async fn the_writer_of_a_split_client_stops_when_the_server_closes() {
    let (server, client) = echo_server_and_client().await;
    let (mut reader, mut writer) = client.split();
    server.clients()[0].close("kicked");
    match reader.recv().await {
        Err(ConnectionError::ClosedByPeer(Some(reason))) => assert_eq!(reason.as_str(), "kicked"),
        other => panic!("expected closeconn kicked, got {other:?}"),
    }
    match writer.send("test:other", &map([])).await {
        Err(ConnectionError::State(_)) => {}
        other => panic!("expected a closed connection, got {other:?}"),
    }
    server.shutdown().await;
}

/// Answers `test:other` after a pause, on the connection's own task.
struct Slow;

impl Handler for Slow {
    type State = ();
    fn on_packet(&self, client: &ClientHandle, _state: &mut (), packet: Packet) {
        let client = client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let _ = client.send("test:echo", &packet.body);
        });
    }
}

/// `Client::recv` and `PingSession::wait_for_pong` are documented cancel-safe: dropped
/// again and again by `select!` (against a `yield_now`, which wins whenever nothing was
/// read) while the answer is on its way, no packet or pong is
/// lost, and the pong's delay still counts from its send.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recv_and_wait_for_pong_lose_nothing_when_cancelled() {
    use peng3dnet::ping::{PingOptions, PingSession};
    use peng3dnet::PingResponder;
    use std::time::Duration;

    let responder = PingResponder::new().with_dynamic(|_: &peng3dnet::PingRequest<'_>| {
        std::thread::sleep(Duration::from_millis(100));
        map([])
    });
    let server = Server::builder()
        .registry(registry())
        .handler(Slow)
        .pingable(responder)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();

    let mut client = Client::builder()
        .registry(registry())
        .connect(&addr)
        .await
        .unwrap();
    client
        .send("test:other", &map([("n", 7u64.into())]))
        .await
        .unwrap();
    let mut cancelled = 0;
    let packet = loop {
        tokio::select! {
            packet = client.recv() => break packet.unwrap(),
            _ = tokio::task::yield_now() => cancelled += 1,
        }
    };
    assert!(cancelled > 3, "recv was cancelled {cancelled} times");
    assert_eq!(get(&packet.body, "n"), Some(&Value::from(7u64)));

    let mut session = PingSession::connect(addr.as_str(), &PingOptions::default())
        .await
        .unwrap();
    session.send_ping().await.unwrap();
    let mut cancelled = 0;
    let reply = loop {
        tokio::select! {
            reply = session.wait_for_pong(Duration::from_secs(5)) => break reply.unwrap(),
            _ = tokio::task::yield_now() => cancelled += 1,
        }
    };
    assert!(
        cancelled > 3,
        "wait_for_pong was cancelled {cancelled} times"
    );
    assert!(
        reply.delay >= Duration::from_millis(100),
        "{:?}",
        reply.delay
    );
    session.close().await;
    client.close("bye").await.unwrap();
    server.shutdown().await;
}

/// A bind error used to say "cannot listen: Address already in use" without
/// the address; it names it now.
#[tokio::test]
async fn a_bind_error_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Server::builder()
        .bind(addr)
        .await
        .expect_err("the port is taken");
    let text = err.to_string();
    assert!(text.starts_with(&format!("cannot bind {addr}: ")), "{text}");
    assert!(
        matches!(err, peng3dnet::server::ServerError::Bind(ref e) if e.kind() == std::io::ErrorKind::AddrInUse),
        "{err:?}"
    );
}
