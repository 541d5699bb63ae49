//! The library from synchronous code (embedding): a server that owns its runtime, data
//! pushed from a game loop, the blocking client, and `bind` outside a runtime.

use std::future::Future;
use std::time::Duration;

use peng3dnet::blocking;
use peng3dnet::ping::PingOptions;
use peng3dnet::server::ServerError;
use peng3dnet::value::{get, map, Value};
use peng3dnet::{PingResponder, Server};

fn options() -> PingOptions {
    PingOptions {
        timeout: Duration::from_secs(5),
        ..PingOptions::default()
    }
}

/// A synchronous "game loop" publishes a key every tick; each ping sees the latest tick.
#[test]
fn a_blocking_server_serves_data_pushed_from_a_synchronous_loop() {
    let responder = PingResponder::new().with_static_data(map([("name", "arena".into())]));
    let server =
        blocking::Server::bind(Server::builder().pingable(responder.clone()), "127.0.0.1:0")
            .unwrap();
    let addr = server.local_addr().to_string();
    for tick in 0..5u64 {
        responder.set("tick", tick.into());
        let reply = blocking::ping_server(&addr, &options()).unwrap();
        assert_eq!(reply.get("tick").and_then(Value::as_u64), Some(tick));
        assert_eq!(reply.get("name").and_then(Value::as_str), Some("arena"));
    }
    // A session stays open across a shutdown and is told why it ends.
    let mut session = blocking::PingSession::connect(&addr, &options()).unwrap();
    session.ping().unwrap();
    // The one-off pings' connections close asynchronously: wait (bounded) until only the
    // session is left.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.client_count() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} clients connected, expected the session only",
            server.client_count()
        );
        std::thread::yield_now();
    }
    server.shutdown();
    match session.ping() {
        Err(peng3dnet::PingError::ClosedByPeer(Some(reason))) => {
            assert_eq!(reason.as_str(), "servershutdown")
        }
        other => panic!("expected servershutdown, got {other:?}"),
    }
}

/// Dropping the blocking server stops it: the port no longer answers.
#[test]
fn dropping_a_blocking_server_shuts_it_down() {
    let server = blocking::Server::bind(
        Server::builder().pingable(PingResponder::new()),
        "127.0.0.1:0",
    )
    .unwrap();
    let addr = server.local_addr().to_string();
    blocking::ping_server(&addr, &options()).unwrap();
    drop(server);
    assert!(matches!(
        blocking::ping_server(&addr, &options()),
        Err(peng3dnet::PingError::Connect { .. })
    ));
}

/// Inside a runtime (even a current-thread one), the blocking server and client work.
#[tokio::test(flavor = "current_thread")]
async fn the_blocking_server_works_inside_a_runtime_too() {
    let server = blocking::Server::bind(
        Server::builder().pingable(PingResponder::new().with_static_data(map([("k", 1.into())]))),
        "127.0.0.1:0",
    )
    .unwrap();
    let reply = blocking::ping_server(server.local_addr().to_string(), &options()).unwrap();
    assert_eq!(get(reply.data(), "k").and_then(Value::as_u64), Some(1));
    server.shutdown();
}

/// `bind` polled outside a tokio runtime used to panic ("there is no reactor running").
#[test]
fn bind_outside_a_runtime_is_an_error_not_a_panic() {
    let bind = Server::builder().bind("127.0.0.1:0");
    let mut bind = std::pin::pin!(bind);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match bind.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(e @ ServerError::NoRuntime)) => {
            assert!(e.to_string().contains("blocking::Server"), "{e}")
        }
        other => panic!("expected NoRuntime, got {:?}", other.map(|r| r.map(|_| ()))),
    }
}

/// A blocking ping of a server on the same `current_thread` runtime, from its thread, ran
/// to its whole timeout (the server could not run) and then blamed the server. It is
/// refused at once, saying why; from `spawn_blocking` the same ping works.
#[tokio::test(flavor = "current_thread")]
async fn a_blocking_ping_of_a_server_on_this_current_thread_runtime_is_refused_at_once() {
    let server = Server::builder()
        .pingable(PingResponder::new().with_static_data(map([("k", 2.into())])))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let started = std::time::Instant::now();
    let error = blocking::ping_server(addr, &options()).unwrap_err();
    assert!(
        matches!(error, peng3dnet::PingError::BlockingOnCurrentThreadRuntime),
        "{error}"
    );
    assert!(
        started.elapsed() < options().timeout / 5,
        "{:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("spawn_blocking"), "{error}");
    let reply = tokio::task::spawn_blocking(move || blocking::ping_server(addr, &options()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(get(reply.data(), "k").and_then(Value::as_u64), Some(2));
    server.shutdown().await;
}

/// Outside a tokio runtime every async entry point that connects fails with `NoRuntime`,
/// as `Server::bind` does (`ping_server` and `ping_many` panicked: "there is no reactor
/// running"), and `ping_many` reports each target with it.
#[test]
fn async_calls_outside_a_runtime_fail_with_no_runtime_not_a_panic() {
    use futures_util::FutureExt;
    use peng3dnet::PingError;
    fn no_runtime<T>(result: Result<T, PingError>) -> bool {
        matches!(result, Err(PingError::NoRuntime))
    }
    let options = options();
    assert!(no_runtime(
        peng3dnet::ping_server("127.0.0.1:1", &options)
            .now_or_never()
            .expect("answers at once")
    ));
    let session = peng3dnet::PingSession::connect("127.0.0.1:1", &options).now_or_never();
    assert!(no_runtime(session.expect("answers at once")));
    let client = peng3dnet::client::Client::builder()
        .connect("127.0.0.1:1")
        .now_or_never();
    assert!(no_runtime(client.expect("answers at once")));
    let mut many = peng3dnet::many::ping_many(
        ["127.0.0.1:1", "127.0.0.1:2"],
        peng3dnet::many::ManyOptions::default(),
    );
    for want in ["127.0.0.1:1", "127.0.0.1:2"] {
        let done = many
            .next()
            .now_or_never()
            .flatten()
            .expect("a result at once");
        assert_eq!(done.target, want);
        assert!(no_runtime(done.result));
    }
    assert!(many.next().now_or_never().flatten().is_none());
    assert!(PingError::NoRuntime
        .to_string()
        .contains("peng3dnet::blocking"));
}
