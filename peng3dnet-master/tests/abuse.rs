//! Announces that must not list anything, floods, bad bodies and slow clients: each gets
//! a clear refusal, and the others are served meanwhile.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use peng3dnet::value::map;
use peng3dnet::{PingResponder, Server};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

fn message(a: &Answer) -> String {
    a.json()["message"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_of_what_is_not_a_peng3dnet_server_are_refused() {
    let dir = TempDir::new("not-servers");
    // A silent server's pings take the whole ping timeout (1 s): the grace time must
    // leave room for the two failures that mark it down first.
    let s = peng3dnet_master::settings::Settings {
        drop_after: Duration::from_secs(5),
        ..settings(&dir)
    };
    let running = peng3dnet_master::start(s).await.unwrap();
    let master = running.local_addr();

    // Nothing listens: refused at once, and the message says where and why.
    let closed = TcpListener::bind("127.0.2.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let a = announce(ip("127.0.2.1"), master, json!({ "port": port })).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert_eq!(a.json()["error"], "not_verified");
    assert!(
        message(&a).contains(&format!("127.0.2.1:{port}")),
        "{}",
        message(&a)
    );

    // A listener that speaks something else (an HTTP server's refusal).
    let other = TcpListener::bind("127.0.2.2:0").await.unwrap();
    let other_port = other.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = other.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let a = announce(ip("127.0.2.2"), master, json!({ "port": other_port })).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert_eq!(a.json()["error"], "not_verified");

    // A listener that accepts and never says a word: refused after the ping timeout.
    let silent = TcpListener::bind("127.0.2.3:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = silent.accept().await {
            keep.lock().await.push(s);
        }
    });
    let started = Instant::now();
    let a = announce(ip("127.0.2.3"), master, json!({ "port": silent_port })).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        message(&a).contains("timed out") || message(&a).contains("time"),
        "{}",
        message(&a)
    );

    // A server that answers once, then goes silent on the same address: listed, then
    // marked down, then dropped.
    let once = server(ip("127.0.2.4"), "once").await;
    let once_addr = once.local_addr();
    let a = announce(once_addr.ip(), master, json!({ "port": once_addr.port() })).await;
    assert_eq!(a.status, 200, "{}", a.text());
    once.shutdown().await;
    let mute = TcpListener::bind(once_addr).await.unwrap();
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = mute.accept().await {
            keep.lock().await.push(s);
        }
    });
    until(
        Duration::from_secs(10),
        "the silent server marked down",
        || async {
            let list = servers(master).await;
            list.iter()
                .any(|e| e["address"] == once_addr.to_string() && e["up"] == false)
                .then_some(())
        },
    )
    .await;
    until(
        Duration::from_secs(10),
        "the silent server dropped",
        || async { servers(master).await.is_empty().then_some(()) },
    )
    .await;

    let metrics = get(master, "/metrics").await.text();
    assert!(
        metrics.contains(r#"peng3dnet_master_announces_total{method="post",result="refused",reason="not_verified"} 3"#),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_rate_limited_and_pings_are_spaced() {
    let dir = TempDir::new("flood");
    let s = Settings {
        refresh: Duration::from_secs(60),
        drop_after: Duration::from_secs(600),
        ping_spacing: Duration::from_secs(30),
        announce_burst: 10,
        announce_rate: 6.0,
        max_connections_per_source: 64,
        ..settings(&dir)
    };
    use peng3dnet_master::settings::Settings;
    let running = peng3dnet_master::start(s).await.unwrap();
    let master = running.local_addr();

    // A server that counts the pings it answers.
    let pings = Arc::new(AtomicU64::new(0));
    let counter = pings.clone();
    let target = Server::builder()
        .pingable(
            PingResponder::new()
                .with_static_data(map([("name", "counted".into())]))
                .with_dynamic(move |_| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    map([])
                }),
        )
        .bind("127.0.3.1:0")
        .await
        .unwrap();
    let port = target.local_addr().port();

    // 50 announces at once from its address: the burst (10) goes through, answered by
    // one ping; the rest are told to wait.
    let answers =
        join_all((0..50).map(|_| announce(ip("127.0.3.1"), master, json!({ "port": port })))).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        ok,
        10,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(limited.len(), 40);
    for a in &limited {
        assert_eq!(a.json()["error"], "rate_limited");
        let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=10).contains(&retry), "{retry}");
    }
    assert_eq!(
        pings.load(Ordering::Relaxed),
        1,
        "one ping for ten announces"
    );

    // Another source is not affected.
    let other = server(ip("127.0.3.2"), "other").await;
    let a = announce(
        ip("127.0.3.2"),
        master,
        json!({ "port": other.local_addr().port() }),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());

    // A trusted announcer may list another address; an untrusted one may not.
    let a = announce(
        ip("127.0.3.3"),
        master,
        json!({ "port": port, "host": "127.0.3.1" }),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.text());
    assert_eq!(a.json()["error"], "forbidden");

    let metrics = get(master, "/metrics").await.text();
    assert!(
        metrics.contains(r#"peng3dnet_master_announces_total{method="post",result="refused",reason="rate_limited"} 40"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"peng3dnet_master_pings_total{kind="verify",result="ok"}"#));
    running.shutdown().await;
    target.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_huge_and_deep_bodies_get_clear_errors() {
    let dir = TempDir::new("bodies");
    let running = peng3dnet_master::start(settings(&dir)).await.unwrap();
    let master = running.local_addr();
    let src = ip("127.0.4.1");
    let post =
        |body: Vec<u8>| async move { request(src, master, "POST", "/announce", &[], &body).await };

    let cases: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (b"not json".to_vec(), 400, "bad_request", "not an announce"),
        (b"{}".to_vec(), 400, "bad_request", "port"),
        (br#"{"port": "x"}"#.to_vec(), 400, "bad_request", "port"),
        (
            br#"{"port": 0}"#.to_vec(),
            400,
            "bad_request",
            "out of range",
        ),
        (
            br#"{"port": 70000}"#.to_vec(),
            400,
            "bad_request",
            "out of range",
        ),
        (
            br#"{"port": 7, "tags": ["a b"]}"#.to_vec(),
            400,
            "bad_request",
            "tag",
        ),
        (
            br#"{"port": 7, "host": "example.org"}"#.to_vec(),
            400,
            "bad_request",
            "not an IP",
        ),
        (
            format!(
                r#"{{"port": 7, "x": {}{}}}"#,
                "[".repeat(5000),
                "]".repeat(5000)
            )
            .into_bytes(),
            400,
            "bad_request",
            "recursion limit",
        ),
        (vec![b' '; 1 << 20], 413, "too_large", "at most"),
    ];
    for (body, status, kind, words) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let a = post(body).await;
        assert_eq!(a.status, status, "{shown}: {}", a.text());
        assert_eq!(a.json()["error"], kind, "{shown}");
        assert!(message(&a).contains(words), "{shown}: {}", message(&a));
    }

    // A chunked body without a length, larger than the limit: cut at the limit.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.4.2:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(master).await.unwrap();
    s.write_all(b"POST /announce HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 4096, "a".repeat(4096));
    let mut refused_early = false;
    for _ in 0..64 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            refused_early = true;
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    let a = parse_answer(&raw);
    assert_eq!(
        a.status,
        413,
        "refused early: {refused_early}; {}",
        a.text()
    );

    // Paths and methods.
    let a = get(master, "/nope").await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (404, Some("not_found"))
    );
    let a = request(src, master, "PUT", "/servers", &[], b"").await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("GET, HEAD"));
    let a = get(master, "/servers?limit=0").await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (400, Some("bad_request"))
    );
    let a = get(master, "/servers?colour=red").await;
    assert!(message(&a).contains("colour"));
    let a = request(src, master, "DELETE", "/announce", &[], br#"{"port": 9}"#).await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (404, Some("not_found"))
    );

    // The master still serves, and its memory did not follow the bodies.
    let a = get(master, "/servers").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["total"], 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_others_served_meanwhile() {
    let dir = TempDir::new("slowloris");
    let s = peng3dnet_master::settings::Settings {
        request_timeout: Duration::from_secs(1),
        max_connections_per_source: 8,
        ..settings(&dir)
    };
    let running = peng3dnet_master::start(s).await.unwrap();
    let master = running.local_addr();

    // 20 connections from one address, each sending its headers a byte at a time.
    let slow = join_all((0..20).map(|_| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.5.1:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(master).await.unwrap();
        let started = Instant::now();
        let head =
            b"GET /servers HTTP/1.1\r\nHost: m\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head.iter().cycle().take(400) {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            // The slow client's own pace (what it does, not a wait for the master).
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => break, // an answer (408) then the close
                Err(_) => {}
            }
        }
        started.elapsed()
    }));
    let others = async {
        // Meanwhile a client from another address is answered at once, repeatedly.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..5 {
            let started = Instant::now();
            let a = request(ip("127.0.5.2"), master, "GET", "/servers", &[], b"").await;
            assert_eq!(a.status, 200);
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{:?}",
                started.elapsed()
            );
        }
    };
    let (durations, ()) = tokio::join!(slow, others);
    // Each slow connection was closed: the 12 over the per-source cap at once, the 8
    // others after the 1 s header timeout; none lasted its 40 s.
    assert!(
        durations.iter().all(|d| *d < Duration::from_secs(5)),
        "{durations:?}"
    );
    let quick = durations
        .iter()
        .filter(|d| **d < Duration::from_millis(900))
        .count();
    assert!(quick >= 12, "{durations:?}");
    let metrics = get(master, "/metrics").await.text();
    assert!(
        metrics
            .contains(r#"peng3dnet_master_http_connections_refused_total{reason="per_source"} 12"#),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_servers_behind_one_address_keep_reannouncing() {
    let dir = TempDir::new("reannounce");
    let s = peng3dnet_master::settings::Settings {
        refresh: Duration::from_secs(1),
        drop_after: Duration::from_secs(30),
        ping_spacing: Duration::from_millis(100),
        announce_burst: 10,
        announce_rate: 6.0,
        ..settings(&dir)
    };
    let running = peng3dnet_master::start(s).await.unwrap();
    let master = running.local_addr();
    let ip = ip("127.0.3.9");
    let fleet =
        join_all((0..20).map(|i| async move { server(ip, &format!("fleet-{i}")).await })).await;
    let ports: Vec<u16> = fleet.iter().map(|s| s.local_addr().port()).collect();

    // New listings from one address are limited: the burst lists 10 at once...
    let mut statuses = Vec::new();
    for port in &ports {
        statuses.push(announce(ip, master, json!({ "port": port })).await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    // ... and each listed server widens the allowance by its re-announces, so the rest
    // come in as the client retries.
    until(Duration::from_secs(15), "all 20 listed", || async {
        let listed: Vec<serde_json::Value> = servers(master).await;
        let missing = ports
            .iter()
            .filter(|p| !listed.iter().any(|e| e["port"] == **p))
            .collect::<Vec<_>>();
        for port in &missing {
            announce(ip, master, json!({ "port": port })).await;
        }
        missing.is_empty().then_some(())
    })
    .await;
    // Re-announcing every server once per refresh interval is never refused.
    for _ in 0..3 {
        // The announcers' own schedule: each re-announces `reannounce_after_s` (1 s)
        // after its last announce.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for port in &ports {
            let a = announce(ip, master, json!({ "port": port })).await;
            assert_eq!(a.status, 200, "{}", a.text());
        }
    }
    running.shutdown().await;
    for s in fleet {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_header_names_the_announcer_and_only_trusted_peers_may_send_one() {
    let dir = TempDir::new("proxy");
    let s = peng3dnet_master::settings::Settings {
        proxy_protocol: true,
        proxy_trusted: vec!["127.0.9.100".parse().unwrap()],
        ..settings(&dir)
    };
    let running = peng3dnet_master::start(s).await.unwrap();
    let master = running.local_addr();
    let game = server(ip("127.0.9.1"), "behind").await;
    let port = game.local_addr().port();
    let body = json!({ "port": port }).to_string();
    let raw = |from: &'static str, header: String| {
        let body = body.clone();
        async move {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
            let mut s = socket.connect(master).await.unwrap();
            let request = format!(
                "{header}POST /announce HTTP/1.1\r\nHost: m\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(request.as_bytes()).await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
            out
        }
    };
    // The balancer relays an announce from 127.0.9.1: that address is listed.
    let header = format!(
        "PROXY TCP4 127.0.9.1 {} 40000 {}\r\n",
        master.ip(),
        master.port()
    );
    let a = parse_answer(&raw("127.0.9.100", header.clone()).await);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["address"], game.local_addr().to_string());
    // The same header from a peer that is not a trusted balancer: closed unanswered.
    assert!(raw("127.0.9.2", header).await.is_empty());
    // The balancer without a header: closed unanswered.
    assert!(raw("127.0.9.100", String::new()).await.is_empty());
    let metrics = get_via_proxy(master).await;
    assert!(
        metrics.contains(r#"reason="untrusted_proxy"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reason="proxy_header"} 1"#), "{metrics}");
    running.shutdown().await;
    game.shutdown().await;
}

/// GET /metrics through a v2 LOCAL header (the balancer's own request, as health checks).
async fn get_via_proxy(master: std::net::SocketAddr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.9.100:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(master).await.unwrap();
    let mut request = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    request.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]); // v2, LOCAL, no addresses
    request.extend_from_slice(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n");
    s.write_all(&request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    parse_answer(&out).text()
}
