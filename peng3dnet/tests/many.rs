//! Many targets at once: Happy Eyeballs (RFC 8305) connects, and the many-target ping
//! (`peng3dnet::many`): bounded concurrency, retries, deadlines, file-descriptor shortage.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peng3dnet::happy_eyeballs;
use peng3dnet::ping::{PingOptions, PingSession};
use peng3dnet::value::map;
use peng3dnet::{ConnectionError, PingResponder, Server};

async fn pingable(bind: &str) -> Server {
    Server::builder()
        .pingable(PingResponder::new().with_static_data(map([("name", "many".into())])))
        .bind(bind)
        .await
        .unwrap()
}

/// A port on which nothing listens on 127.0.0.1 nor on ::1: bound, then closed.
async fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("[::]:0")
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn happy_eyeballs_falls_back_from_refused_v6_to_live_v4() {
    let server = pingable("127.0.0.1:0").await;
    let port = server.local_addr().port();
    // Nothing listens on [::1]:port (the server is bound to 127.0.0.1 only).
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let addrs = [v6, server.local_addr()];
    let started = Instant::now();
    let stream = happy_eyeballs::connect(&addrs, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(stream.peer_addr().unwrap(), server.local_addr());
    // A refusal starts the next attempt at once, without the 250 ms attempt delay.
    assert!(started.elapsed() < happy_eyeballs::CONNECTION_ATTEMPT_DELAY);
    drop(stream);

    let mut session = PingSession::connect_addrs(&addrs, "localhost", &PingOptions::default())
        .await
        .unwrap();
    assert_eq!(session.peer_addr(), server.local_addr());
    let reply = session.ping().await.unwrap();
    assert_eq!(reply.get("name").and_then(|v| v.as_str()), Some("many"));
    session.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn happy_eyeballs_reports_each_address_when_all_fail() {
    let port = refused_port().await;
    let addrs: Vec<SocketAddr> = [format!("[::1]:{port}"), format!("127.0.0.1:{port}")]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let err = happy_eyeballs::connect(&addrs, Duration::from_secs(5))
        .await
        .unwrap_err();
    match &err {
        ConnectionError::ConnectEach(failures) => {
            let tried: Vec<SocketAddr> = failures.iter().map(|(a, _)| *a).collect();
            assert_eq!(tried, addrs);
        }
        other => panic!("expected ConnectEach, got {other}"),
    }
    assert!(err.is_refused());
    assert!(!err.is_local_exhaustion());
    let text = err.to_string();
    assert!(text.contains(&format!("[::1]:{port}")), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
}
