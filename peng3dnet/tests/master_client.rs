//! The master client (`peng3dnet::master`) against real HTTP servers on loopback: a small
//! master speaking the API (tests/common/fake_master.rs) with real pingable servers behind
//! it, and raw sockets that misbehave (silent, not HTTP, endless, huge, wrong JSON).
#![cfg(feature = "master")]

mod common;
#[path = "common/fake_master.rs"]
mod fake_master;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_master::{wait_for, FakeMaster};
use peng3dnet::master::{
    self, AnnounceOptions, AnnounceState, Announcement, Announcer, FetchOptions, MasterError, Query,
};
use peng3dnet::value::map;
use peng3dnet::{PingResponder, Server, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bound of every wait; the tests finish far sooner.
const LIMIT: Duration = Duration::from_secs(20);

/// A pingable server on `ip` (a free port) with this static data.
async fn pingable(ip: &str, data: Value) -> Server {
    Server::builder()
        .pingable(PingResponder::new().with_static_data(data))
        .bind(format!("{ip}:0"))
        .await
        .unwrap()
}

fn from(ip: &str) -> FetchOptions {
    FetchOptions {
        source: Some(ip.parse().unwrap()),
        ..FetchOptions::default()
    }
}

fn tagged(port: u16, tags: &[&str]) -> Announcement {
    Announcement {
        port,
        host: None,
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

#[tokio::test]
async fn announced_servers_are_listed_with_their_pong_data_and_filters_apply() {
    let master = FakeMaster::start(60).await;
    let lobby = pingable(
        "127.0.0.11",
        map([
            ("name", "EU Lobby".into()),
            ("clients", 3u64.into()),
            ("max_clients", 10u64.into()),
        ]),
    )
    .await;
    let full = pingable(
        "127.0.0.12",
        map([
            ("name", "eu arena".into()),
            ("clients", 8u64.into()),
            ("max_clients", 8u64.into()),
        ]),
    )
    .await;
    let us = pingable("127.0.0.13", map([("name", "US lobby".into())])).await;
    for (server, ip, tags) in [
        (&lobby, "127.0.0.11", &["eu", "pvp"][..]),
        (&full, "127.0.0.12", &["eu"][..]),
        (&us, "127.0.0.13", &["us"][..]),
    ] {
        let announced = master::announce(
            &master.url,
            &tagged(server.local_addr().port(), tags),
            &from(ip),
        )
        .await
        .unwrap();
        assert_eq!(announced.address, server.local_addr().to_string());
        assert_eq!(announced.reannounce_after, Some(Duration::from_secs(60)));
    }

    let all = master::fetch(&master.url, &Query::new()).await.unwrap();
    assert_eq!(all.len(), 3);
    let first = all
        .iter()
        .find(|s| s.address == lobby.local_addr().to_string())
        .unwrap();
    assert_eq!(first.name.as_deref(), Some("EU Lobby"));
    assert_eq!((first.clients, first.max_clients), (Some(3), Some(10)));
    assert_eq!(first.tags, ["eu", "pvp"]);
    assert_eq!(first.port, lobby.local_addr().port());
    assert!(first.up);
    assert!(first.latency_ms.is_some_and(|ms| ms >= 0.0));
    assert_eq!(first.data["name"], "EU Lobby");
    assert_eq!(first.history.len(), 1);

    let addresses = |servers: Vec<master::ListedServer>| {
        let mut a: Vec<String> = servers.into_iter().map(|s| s.address).collect();
        a.sort();
        a
    };
    let mut events = master.events();
    let eu = master::fetch(&master.url, &Query::new().tag("eu"))
        .await
        .unwrap();
    assert_eq!(
        addresses(eu),
        [
            lobby.local_addr().to_string(),
            full.local_addr().to_string()
        ]
    );
    let sent = wait_for(&mut events, LIMIT, "GET /servers", |e| e.method == "GET").await;
    assert_eq!(sent.query, "tag=eu&limit=1000&offset=0");
    let eu_pvp = Query::new().tag("eu").tag("pvp");
    let got = master::fetch(&master.url, &eu_pvp).await.unwrap();
    assert_eq!(addresses(got), [lobby.local_addr().to_string()]);
    let lobbies = master::fetch(&master.url, &Query::new().name("LOBBY"))
        .await
        .unwrap();
    assert_eq!(
        addresses(lobbies),
        [lobby.local_addr().to_string(), us.local_addr().to_string()]
    );
    let free = master::fetch(&master.url, &Query::new().tag("eu").free())
        .await
        .unwrap();
    assert_eq!(addresses(free), [lobby.local_addr().to_string()]);
    master.mark_down(&us.local_addr().to_string());
    let up = master::fetch(&master.url, &Query::new().up())
        .await
        .unwrap();
    assert_eq!(up.len(), 2);
    assert!(up.iter().all(|s| s.up));
}

#[tokio::test]
async fn fetch_reads_every_page_and_a_limit_reads_one() {
    let master = FakeMaster::start(60).await;
    let mut servers = Vec::new();
    for i in 0..5 {
        let ip = format!("127.0.0.{}", 21 + i);
        let server = pingable(&ip, map([])).await;
        master::announce(
            &master.url,
            &Announcement::port(server.local_addr().port()),
            &from(&ip),
        )
        .await
        .unwrap();
        servers.push(server);
    }
    let mut events = master.events();
    let options = FetchOptions {
        page_size: 2,
        ..FetchOptions::default()
    };
    let all = master::fetch_with(&master.url, &Query::new(), &options)
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    let mut queries = Vec::new();
    for _ in 0..3 {
        let e = wait_for(&mut events, LIMIT, "a page request", |e| e.method == "GET").await;
        queries.push(e.query);
    }
    assert_eq!(
        queries,
        ["limit=2&offset=0", "limit=2&offset=2", "limit=2&offset=4"]
    );
    let one = master::fetch(&master.url, &Query::new().limit(2).offset(1))
        .await
        .unwrap();
    assert_eq!(one.len(), 2);
    assert_eq!(one[0].address, all[1].address);
    let page = master::fetch_page(&master.url, &Query::new().limit(1), &options)
        .await
        .unwrap();
    assert_eq!((page.total, page.servers.len()), (5, 1));

    // The same page again, sent with its ETag: unchanged, so no body.
    let etag = page.etag.clone().expect("an ETag");
    let again = master::fetch_page_if_changed(&master.url, &Query::new().limit(1), &options, &etag)
        .await
        .unwrap();
    assert_eq!(again, None);
    let other = master::fetch_page_if_changed(&master.url, &Query::new().limit(2), &options, &etag)
        .await
        .unwrap()
        .expect("another page, changed");
    assert_eq!(other.servers.len(), 2);
    assert_ne!(other.etag, Some(etag));

    // More servers than allowed: refused, not truncated.
    let small = FetchOptions {
        page_size: 2,
        max_servers: 3,
        ..FetchOptions::default()
    };
    let e = master::fetch_with(&master.url, &Query::new(), &small)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "too_large", "{e}");
    assert!(e.to_string().contains("more than 3 servers"), "{e}");
}

/// A server that answers every connection by reading the request head and then doing
/// `then` with the socket.
async fn raw_server<F, Fut>(then: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let then = Arc::new(then);
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            let then = then.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                then(tcp).await;
            });
        }
    });
    url
}

/// A server that answers every request with these bytes and closes.
async fn answering(bytes: impl Into<Vec<u8>>) -> String {
    let bytes: Arc<[u8]> = bytes.into().into();
    raw_server(move |mut tcp| {
        let bytes = bytes.clone();
        async move {
            let _ = tcp.write_all(&bytes).await;
            let _ = tcp.shutdown().await;
        }
    })
    .await
}

/// An HTTP/1.1 answer with this status line, extra headers and body (its length given).
fn http(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn fetch_error(url: &str, options: &FetchOptions) -> MasterError {
    master::fetch_with(url, &Query::new(), options)
        .await
        .expect_err("the fetch should fail")
}

#[tokio::test]
async fn each_failure_has_its_kind_and_says_what_happened() {
    let quick = FetchOptions {
        timeout: Duration::from_millis(500),
        max_response_bytes: 64 << 10,
        ..FetchOptions::default()
    };

    // Nothing listens.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let e = fetch_error(&refused, &quick).await;
    assert_eq!(e.kind(), "connect", "{e}");
    assert!(
        e.to_string()
            .starts_with("cannot connect to the master 127.0.0.1:"),
        "{e}"
    );
    assert!(
        e.to_string().ends_with(": Connection refused"),
        "said once: {e}"
    );

    // A listener that never answers: the deadline, not a hang.
    let silent = raw_server(|tcp| async move {
        let _keep = tcp;
        std::future::pending::<()>().await;
    })
    .await;
    let started = Instant::now();
    let e = fetch_error(&silent, &quick).await;
    assert_eq!(e.kind(), "timeout", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains("did not answer within 0.5 s"), "{e}");

    // Not HTTP at all.
    let ssh = answering(&b"SSH-2.0-OpenSSH_9.6\r\n"[..]).await;
    let e = fetch_error(&ssh, &quick).await;
    assert_eq!(e.kind(), "http", "{e}");

    // A declared body over the limit is refused before it is read.
    let huge = answering(
        &b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 999999999\r\n\r\n{"
            [..],
    )
    .await;
    let e = fetch_error(&huge, &quick).await;
    assert_eq!(e.kind(), "too_large", "{e}");
    assert!(e.to_string().contains("999999999 bytes"), "{e}");

    // An endless chunked body is cut at the limit: bounded memory, an answer in time.
    let endless = raw_server(|mut tcp| async move {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if tcp.write_all(head).await.is_err() {
            return;
        }
        let chunk = format!("1000\r\n{}\r\n", " ".repeat(0x1000));
        while tcp.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    let e = fetch_error(&endless, &quick).await;
    assert_eq!(e.kind(), "too_large", "{e}");

    // 2xx, but not the list.
    let html = answering(http("200 OK", "", "<html></html>")).await;
    let e = fetch_error(&html, &quick).await;
    assert_eq!(e.kind(), "bad_response", "{e}");
    let v2 = answering(http(
        "200 OK",
        "",
        r#"{"schema": 2, "total": 0, "servers": []}"#,
    ))
    .await;
    let e = fetch_error(&v2, &quick).await;
    assert_eq!(e.kind(), "bad_response", "{e}");
    assert!(e.to_string().contains("schema version 2"), "{e}");
    let wrong_type = answering(http(
        "200 OK",
        "",
        r#"{"schema": 1, "total": 1, "servers": [{"address": "a:1", "up": 3}]}"#,
    ))
    .await;
    let e = fetch_error(&wrong_type, &quick).await;
    assert_eq!(e.kind(), "bad_response", "{e}");
    assert!(e.to_string().contains("server 0"), "{e}");

    // The master's own refusal: status, kind and message.
    let refusing = answering(http(
        "503 Service Unavailable",
        "content-type: application/json\r\n",
        r#"{"error": "internal", "message": "database down"}"#,
    ))
    .await;
    let e = fetch_error(&refusing, &quick).await;
    assert_eq!(e.kind(), "refused", "{e}");
    assert_eq!(e.status(), Some(503));
    assert_eq!(e.master_error(), Some("internal"));
    assert!(
        e.to_string()
            .ends_with("(HTTP 503 internal): database down"),
        "{e}"
    );

    // A redirect is not followed.
    let moved = answering(http(
        "301 Moved Permanently",
        "location: http://elsewhere.example/\r\n",
        "",
    ))
    .await;
    let e = fetch_error(&moved, &quick).await;
    assert_eq!(e.kind(), "http", "{e}");
    assert!(
        e.to_string()
            .contains("redirect to http://elsewhere.example/"),
        "{e}"
    );

    // Bad URLs, before anything is sent.
    for url in [
        "ftp://127.0.0.1",
        "127.0.0.1:8090",
        "http://127.0.0.1:8090/?tag=eu",
    ] {
        assert_eq!(fetch_error(url, &quick).await.kind(), "bad_url", "{url}");
    }
}

#[test]
fn blocking_fetch_works_outside_and_inside_a_runtime() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (master, server) = runtime.block_on(async {
        let master = FakeMaster::start(60).await;
        let server = pingable("127.0.0.31", map([("name", "blocking".into())])).await;
        (master, server)
    });
    let port = server.local_addr().port();
    let announced =
        master::blocking::announce(&master.url, &Announcement::port(port), &from("127.0.0.31"))
            .unwrap();
    assert_eq!(announced.address, format!("127.0.0.31:{port}"));
    // Outside any runtime.
    let servers = master::blocking::fetch(&master.url, &Query::new()).unwrap();
    assert_eq!(servers[0].name.as_deref(), Some("blocking"));
    // Inside one (a thread that entered it, as a sync callback of an async program).
    let _inside = runtime.enter();
    let servers = master::blocking::fetch(&master.url, &Query::new().name("block")).unwrap();
    assert_eq!(servers.len(), 1);
    assert!(
        master::blocking::unlist(&master.url, &Announcement::port(port), &from("127.0.0.31"))
            .unwrap()
    );
    assert!(
        !master::blocking::unlist(&master.url, &Announcement::port(port), &from("127.0.0.31"))
            .unwrap()
    );
    assert!(master::blocking::fetch(&master.url, &Query::new())
        .unwrap()
        .is_empty());
}

/// Waits until the announcer's state satisfies `pred`.
async fn state_until(
    announcer: &Announcer,
    what: &str,
    pred: impl Fn(&AnnounceState) -> bool,
) -> AnnounceState {
    let mut states = announcer.subscribe();
    let found = tokio::time::timeout(LIMIT, states.wait_for(|s| pred(s)))
        .await
        .unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}: {:?}", announcer.state()));
    let state: AnnounceState = found.unwrap().clone();
    drop(states);
    state
}

#[tokio::test]
async fn an_announcer_retries_with_backoff_reannounces_and_unlists_on_stop() {
    let master = FakeMaster::start(1).await;
    let server = pingable("127.0.0.41", map([])).await;
    let port = server.local_addr().port();
    master.refuse_next(&[(503, "internal"), (503, "internal")]);
    let mut events = master.events();
    let options = AnnounceOptions {
        tags: vec!["eu".into()],
        min_backoff: Duration::from_millis(50),
        http: from("127.0.0.41"),
        ..AnnounceOptions::default()
    };
    let announcer = Announcer::start(&master.url, port, options).unwrap();
    let address = tokio::time::timeout(LIMIT, announcer.listed())
        .await
        .unwrap();
    assert_eq!(address, format!("127.0.0.41:{port}"));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let e = wait_for(&mut events, LIMIT, "an announce", |e| e.method == "POST").await;
        assert_eq!(e.body["port"], u64::from(port));
        assert_eq!(e.body["tags"][0], "eu");
        statuses.push(e.status);
    }
    assert_eq!(statuses, [503, 503, 200]);
    assert_eq!(master.listed(), std::slice::from_ref(&address));

    // The master asked for a refresh every second: a second announce comes.
    let refreshed = state_until(&announcer, "a refresh", |s| {
        matches!(s, AnnounceState::Listed { announces: 2, .. })
    })
    .await;
    assert!(
        matches!(refreshed, AnnounceState::Listed { next_in, .. } if next_in == Duration::from_secs(1))
    );

    let last = tokio::time::timeout(LIMIT, announcer.stop()).await.unwrap();
    assert!(matches!(last, AnnounceState::Unlisted), "{last:?}");
    let e = wait_for(&mut events, LIMIT, "the unlisting", |e| {
        e.method == "DELETE"
    })
    .await;
    assert_eq!(
        (e.status, e.body["port"].as_u64()),
        (200, Some(u64::from(port)))
    );
    assert!(master.listed().is_empty());
}

#[tokio::test]
async fn an_announcer_waits_as_long_as_a_rate_limit_asks() {
    let master = FakeMaster::start(60).await;
    let server = pingable("127.0.0.42", map([])).await;
    master.rate_limit_next(1);
    let options = AnnounceOptions {
        min_backoff: Duration::from_millis(10),
        http: from("127.0.0.42"),
        ..AnnounceOptions::default()
    };
    let started = Instant::now();
    let announcer = Announcer::start(&master.url, server.local_addr().port(), options).unwrap();
    let failed = state_until(&announcer, "the refusal", |s| {
        matches!(s, AnnounceState::Failed { .. }) || s.is_listed()
    })
    .await;
    match failed {
        AnnounceState::Failed {
            error,
            attempts,
            retry_in,
        } => {
            assert_eq!((attempts, retry_in), (1, Duration::from_secs(1)));
            assert_eq!(error.master_error(), Some("rate_limited"));
        }
        other => panic!("listed without the refusal: {other:?}"),
    }
    tokio::time::timeout(LIMIT, announcer.listed())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_master_is_retried_and_stopping_still_ends() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let options = AnnounceOptions {
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..AnnounceOptions::default()
    };
    let announcer = Announcer::start(&url, 7000, options).unwrap();
    let state = state_until(
        &announcer,
        "three failures",
        |s| matches!(s, AnnounceState::Failed { attempts, .. } if *attempts >= 3),
    )
    .await;
    let AnnounceState::Failed { error, .. } = state else {
        unreachable!()
    };
    assert_eq!(error.kind(), "connect", "{error}");
    // No announce reached it: nothing to unlist, and stopping does not wait for it.
    let last = tokio::time::timeout(LIMIT, announcer.stop()).await.unwrap();
    assert!(matches!(last, AnnounceState::Unlisted), "{last:?}");
}

#[tokio::test]
async fn announcer_arguments_are_checked_before_anything_is_sent() {
    let e = Announcer::start("http://127.0.0.1:1", 0, AnnounceOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "bad_request");
    let many = AnnounceOptions {
        tags: (0..17).map(|i| format!("t{i}")).collect(),
        ..AnnounceOptions::default()
    };
    let e = Announcer::start("http://127.0.0.1:1", 7000, many).unwrap_err();
    assert!(e.to_string().contains("at most 16"), "{e}");
    let spaced = AnnounceOptions {
        tags: vec!["two words".into()],
        ..AnnounceOptions::default()
    };
    let e = Announcer::start("http://127.0.0.1:1", 7000, spaced).unwrap_err();
    assert_eq!(e.kind(), "bad_request");
    let e = Announcer::start("gopher://x", 7000, AnnounceOptions::default()).unwrap_err();
    assert_eq!(e.kind(), "bad_url");
}

#[tokio::test]
async fn server_announce_lists_the_servers_own_address_and_unlists_at_shutdown() {
    let master = FakeMaster::start(60).await;
    let server = pingable("127.0.0.51", map([("name", "announced".into())])).await;
    let mut events = master.events();
    let announcer = server.announce(&master.url).unwrap();
    let address = tokio::time::timeout(LIMIT, announcer.listed())
        .await
        .unwrap();
    // Announced from the address it is bound to: the master pinged that and lists it.
    assert_eq!(address, server.local_addr().to_string());
    let listed = master::fetch(&master.url, &Query::new()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name.as_deref(), Some("announced"));
    let posted = wait_for(&mut events, LIMIT, "the announce", |e| e.method == "POST").await;
    assert_eq!(posted.peer.ip(), "127.0.0.51".parse::<IpAddr>().unwrap());

    server.shutdown().await;
    let e = wait_for(&mut events, LIMIT, "the unlisting", |e| {
        e.method == "DELETE"
    })
    .await;
    assert_eq!(e.status, 200);
    let last = state_until(&announcer, "the end", AnnounceState::is_stopped).await;
    assert!(matches!(last, AnnounceState::Unlisted), "{last:?}");
    assert!(master::fetch(&master.url, &Query::new())
        .await
        .unwrap()
        .is_empty());
}

/// A TLS front for `backend` (plain TCP), with the certificate of `cert`/`key`.
async fn tls_front(
    backend: SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> SocketAddr {
    let certs = peng3dnet::tls::load_certs(cert).unwrap();
    let key = peng3dnet::tls::load_key(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_https_master_is_verified_with_the_librarys_tls() {
    let master = FakeMaster::start(60).await;
    let server = pingable("127.0.0.61", map([("name", "over tls".into())])).await;
    master::announce(
        &master.url,
        &Announcement::port(server.local_addr().port()),
        &from("127.0.0.61"),
    )
    .await
    .unwrap();
    let pki = common::pki::Pki::new("master-https");
    let (ca, ca_file) = pki.ca("master-ca");
    let (cert, key) = pki.leaf("master", &ca, &["localhost"], false);
    let front = tls_front(master.addr, &cert, &key).await;
    let url = format!("https://localhost:{}", front.port());

    let trusted = FetchOptions {
        tls: Some(peng3dnet::tls::ClientTls::with_ca_file(&ca_file).unwrap()),
        ..FetchOptions::default()
    };
    let servers = master::fetch_with(&url, &Query::new(), &trusted)
        .await
        .unwrap();
    assert_eq!(servers[0].name.as_deref(), Some("over tls"));

    // A certificate of an unknown CA is refused, saying so.
    let other = common::pki::Pki::new("master-https-other");
    let (_, other_ca) = other.ca("other-ca");
    let untrusted = FetchOptions {
        tls: Some(peng3dnet::tls::ClientTls::with_ca_file(&other_ca).unwrap()),
        ..FetchOptions::default()
    };
    let e = fetch_error(&url, &untrusted).await;
    assert_eq!(e.kind(), "tls", "{e}");

    // Plain HTTP to the TLS port: an HTTP error, not a hang.
    let plain = FetchOptions {
        timeout: Duration::from_secs(2),
        ..FetchOptions::default()
    };
    let e = fetch_error(&format!("http://localhost:{}", front.port()), &plain).await;
    assert!(matches!(e.kind(), "http" | "timeout"), "{e}");
}
