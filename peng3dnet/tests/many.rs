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

/// Listeners that accept connections (the kernel does) but never say hello.
fn silent_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

#[tokio::test]
async fn ping_many_reports_every_target_with_its_own_reason_within_the_timeout() {
    use peng3dnet::many::{ping_many, ManyOptions};
    let server = pingable("127.0.0.1:0").await;
    let live = server.local_addr();
    let closed = refused_port().await;
    let silent: Vec<_> = (0..3).map(|_| silent_listener()).collect();
    let mut targets = Vec::new();
    for i in 0..20u8 {
        // Distinct addresses of one live server (it listens on 127.0.0.1 only, so the
        // other loopback addresses are refused: the "closed ports" of the list).
        targets.push(format!("127.0.0.1:{}", live.port()));
        targets.push(format!("127.0.0.{}:{}", 2 + i, closed));
    }
    for s in &silent {
        targets.push(s.local_addr().unwrap().to_string());
    }
    targets.push("name.invalid:1".to_owned());
    let timeout = Duration::from_millis(800);
    let mut options = ManyOptions::default();
    options.ping.timeout = timeout;
    options.concurrency = Some(8);
    options.spacing = Duration::ZERO;
    let started = Instant::now();
    let mut results = ping_many(targets.clone(), options);
    let mut seen = vec![false; targets.len()];
    let (mut ok, mut refused, mut timed_out, mut unresolved) = (0, 0, 0, 0);
    while let Some(done) = results.next().await {
        assert_eq!(targets[done.index], done.target);
        assert!(!seen[done.index], "target {} reported twice", done.index);
        seen[done.index] = true;
        match &done.result {
            Ok(reply) => {
                assert_eq!(reply.peer, live);
                ok += 1;
            }
            Err(e) if e.is_refused() => refused += 1,
            Err(ConnectionError::Timeout {
                phase: peng3dnet::error::Phase::WaitingForHello,
                ..
            }) => timed_out += 1,
            Err(ConnectionError::Resolve { .. }) => unresolved += 1,
            Err(e) => panic!("{}: unexpected error {e}", done.target),
        }
    }
    assert!(seen.iter().all(|s| *s), "every target is reported");
    assert_eq!((ok, refused, timed_out, unresolved), (20, 20, 3, 1));
    assert!(
        started.elapsed() < timeout + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn silent_targets_give_their_fresh_places_up_so_a_live_one_behind_them_is_not_held() {
    use peng3dnet::many::{ping_many, ManyOptions, FRESH_HOLD, FRESH_PINGS};
    let server = pingable("127.0.0.1:0").await;
    let live = server.local_addr();
    // A listener on every loopback address that never says hello.
    let silent = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // More silent targets than there are fresh places, each on its own address (one
    // address is pinged once at a time), then the live one.
    let mut targets: Vec<String> = (0..FRESH_PINGS + 8)
        .map(|i| format!("127.0.{}.{}:{port}", 1 + i / 250, 1 + i % 250))
        .collect();
    targets.push(live.to_string());
    let timeout = Duration::from_secs(20);
    let mut options = ManyOptions::default();
    options.ping.timeout = timeout;
    options.concurrency = Some(FRESH_PINGS + 16);
    options.spacing = Duration::ZERO;
    let started = Instant::now();
    let mut results = ping_many(targets.clone(), options);
    let live_index = targets.len() - 1;
    let took = loop {
        let done = results.next().await.expect("the live target is reported");
        if done.index == live_index {
            assert!(done.result.is_ok(), "{:?}", done.result.err());
            break started.elapsed();
        }
    };
    // Without giving the places up it would wait for a silent target's whole time-out.
    assert!(
        took < FRESH_HOLD * 50 && took < timeout / 4,
        "the live target took {took:?}"
    );
    drop(results);
    server.shutdown().await;
}

#[tokio::test]
async fn ping_many_retries_and_keeps_to_one_ping_per_address_at_a_time() {
    use peng3dnet::many::{ping_many, ManyOptions};
    let closed = refused_port().await;
    let mut options = ManyOptions {
        tries: 3,
        ..ManyOptions::default()
    };
    options.ping.timeout = Duration::from_secs(2);
    let mut results = ping_many([format!("127.0.0.1:{closed}")], options);
    let done = results.next().await.unwrap();
    assert_eq!(done.tries, 3);
    assert!(done.result.unwrap_err().is_refused());
    assert!(results.next().await.is_none());

    // The same address three times, 100 ms spacing: the last starts at least 200 ms after
    // the first, with room for all three at once (each waits for the one before) and one
    // at a time (each ping is over before the next starts, which still waits).
    let server = pingable("127.0.0.1:0").await;
    for concurrency in [3, 1] {
        let options = ManyOptions {
            spacing: Duration::from_millis(100),
            concurrency: Some(concurrency),
            ..ManyOptions::default()
        };
        let started = Instant::now();
        let mut results = ping_many([server.local_addr(); 3], options);
        let mut n = 0;
        while let Some(done) = results.next().await {
            done.result.unwrap();
            n += 1;
        }
        assert_eq!(n, 3);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "concurrency {concurrency}: {:?}",
            started.elapsed()
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn ping_many_stops_at_the_total_deadline_and_on_cancel() {
    use peng3dnet::many::{ping_many, ManyOptions};
    let silent: Vec<_> = (0..4).map(|_| silent_listener()).collect();
    let addrs: Vec<SocketAddr> = silent.iter().map(|s| s.local_addr().unwrap()).collect();
    let mut options = ManyOptions::default();
    options.ping.timeout = Duration::from_secs(30);
    options.deadline = Some(Duration::from_millis(300));
    options.concurrency = Some(2);
    let started = Instant::now();
    let mut results = ping_many(addrs.clone(), options);
    let mut n = 0;
    while let Some(done) = results.next().await {
        assert!(done.result.unwrap_err().is_timeout());
        n += 1;
    }
    // Two were running at the deadline; the other two never started.
    assert_eq!(n, 2);
    assert!(started.elapsed() < Duration::from_secs(5));

    let options = ManyOptions::default();
    let cancel = options.cancel.clone();
    let mut results = ping_many(addrs, options);
    cancel.cancel();
    assert!(tokio::time::timeout(Duration::from_secs(5), results.next())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn ping_many_reads_targets_from_a_stream() {
    use peng3dnet::many::{ping_many_stream, ManyOptions};
    let server = pingable("127.0.0.1:0").await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let input =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) });
    let mut results = ping_many_stream(input, ManyOptions::default());
    tx.send(server.local_addr().to_string()).unwrap();
    // The first result comes while the input is still open.
    let first = results.next().await.unwrap();
    assert_eq!(first.index, 0);
    first.result.unwrap();
    tx.send(server.local_addr().to_string()).unwrap();
    drop(tx);
    assert_eq!(results.next().await.unwrap().index, 1);
    assert!(results.next().await.is_none());
    server.shutdown().await;
}

/// Two silent servers on one host: each timeout names its own port (it named the host
/// only, so a browser of many ports on one host could not tell which failed), and a run
/// whose deadline cuts the pings short says they were waiting for the hello, of which
/// target (it said "timed out connecting", naming none).
#[tokio::test]
async fn timeouts_of_many_name_the_port_and_the_phase_the_deadline_cut() {
    use peng3dnet::error::Phase;
    use peng3dnet::many::{ping_many, ManyOptions};
    // Listeners that accept (the kernel's backlog) and never say hello.
    let silent: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let targets: Vec<String> = silent
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    for (timeout, deadline) in [
        (Duration::from_millis(300), None),
        (Duration::from_secs(10), Some(Duration::from_millis(300))),
    ] {
        let options = ManyOptions {
            ping: PingOptions {
                timeout,
                ..PingOptions::default()
            },
            deadline,
            ..ManyOptions::default()
        };
        let mut results = ping_many(targets.clone(), options);
        let mut named = Vec::new();
        while let Some(done) = results.next().await {
            let error = done.result.unwrap_err();
            match &error {
                ConnectionError::Timeout {
                    phase,
                    target: Some(target),
                    ..
                } => {
                    assert_eq!(*phase, Phase::WaitingForHello, "{error}");
                    assert_eq!(target, &done.target, "{error}");
                    assert!(error.to_string().starts_with(&done.target), "{error}");
                }
                other => panic!("expected a timeout naming its target, got {other}"),
            }
            named.push(done.target);
        }
        named.sort();
        let mut want = targets.clone();
        want.sort();
        assert_eq!(named, want, "deadline {deadline:?}");
    }
}
