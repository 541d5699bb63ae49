//! The PROXY protocol on the server (behind a load balancer), and connecting from a
//! chosen source address, on loopback. A small relay in this file plays the balancer:
//! it accepts a client, connects to the server from 127.0.0.1, writes a header naming the
//! client and copies bytes both ways. (peng3dnet-cli/tests/haproxy.rs does the same with
//! a real HAProxy.)

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peng3dnet::config::Config;
use peng3dnet::ping::{ping_server, PingError, PingOptions, PingSession};
use peng3dnet::server::{ClientHandle, Handler, Server};
use peng3dnet::tls::{ClientCertPolicy, ClientTls, ServerTls};
use peng3dnet::value::{get, map, Value};
use peng3dnet::PingResponder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Records the address of every client that connects.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SocketAddr>>>);

impl Handler for Seen {
    type State = ();
    fn on_connect(&self, client: &ClientHandle, _: &mut ()) {
        self.0.lock().unwrap().push(client.addr());
    }
}

impl Seen {
    fn all(&self) -> Vec<SocketAddr> {
        self.0.lock().unwrap().clone()
    }
}

fn config() -> Config {
    let mut config = Config::default();
    config.limits.handshake_timeout = Duration::from_millis(800);
    config
}

/// A pingable server behind balancers on 127.0.0.1, whose pongs carry `peer`: the
/// address `PingRequest::peer_addr` names.
async fn server(config: Config, tls: Option<ServerTls>) -> (Server, Seen) {
    let seen = Seen::default();
    let responder = PingResponder::new()
        .with_dynamic(|request| map([("peer", Value::from(request.peer_addr.to_string()))]));
    let builder = Server::builder()
        .config(config)
        .handler(seen.clone())
        .pingable(responder)
        .proxy_protocol("127.0.0.1".parse().unwrap());
    let builder = match tls {
        Some(tls) => builder.tls(tls),
        None => builder,
    };
    (builder.bind("127.0.0.1:0").await.unwrap(), seen)
}

fn v2_header(client: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match (client, dst) {
        (SocketAddr::V4(c), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]);
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(c), SocketAddr::V6(d)) => {
            out.extend_from_slice(&[0x21, 0x21, 0, 36]);
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("mixed families"),
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

fn v1_header(client: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        client.ip(),
        dst.ip(),
        client.port(),
        dst.port()
    )
    .into_bytes()
}

type MakeHeader = fn(SocketAddr, SocketAddr) -> Vec<u8>;

/// A balancer on 127.0.0.1: each client gets a connection to `server` that starts with
/// the header `make` builds for it.
async fn relay(server: SocketAddr, make: MakeHeader) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, client_addr)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(server).await else {
                    return;
                };
                if upstream.write_all(&make(client_addr, addr)).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    addr
}

fn from(ip: &str) -> PingOptions {
    PingOptions {
        timeout: Duration::from_secs(5),
        local_addr: Some(ip.parse().unwrap()),
        ..PingOptions::default()
    }
}

fn peer_in(data: &Value) -> SocketAddr {
    get(data, "peer")
        .and_then(Value::as_str)
        .expect("pong has peer")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn v1_and_v2_headers_name_the_client_in_pongs_and_handles() {
    let (server, seen) = server(config(), None).await;
    for (make, source) in [
        (v2_header as MakeHeader, "127.0.0.2"),
        (v1_header as MakeHeader, "127.0.0.3"),
    ] {
        let balancer = relay(server.local_addr(), make).await;
        let reply = ping_server(&balancer.to_string(), &from(source))
            .await
            .unwrap();
        let peer = peer_in(reply.data());
        assert_eq!(peer.ip(), source.parse::<IpAddr>().unwrap());
        assert!(seen.all().contains(&peer), "{peer} not in {:?}", seen.all());
    }
    assert_eq!(server.stats().proxy.accepted.load(Ordering::Relaxed), 2);
    // Never the balancer's own address.
    assert!(seen.all().iter().all(|a| a.ip().to_string() != "127.0.0.1"));
    server.shutdown().await;
}

#[tokio::test]
async fn ipv6_client_behind_an_ipv4_balancer() {
    let (server, seen) = server(config(), None).await;
    let client: SocketAddr = "[2001:db8::7]:4242".parse().unwrap();
    let dst: SocketAddr = "[2001:db8::1]:8080".parse().unwrap();
    for header in [v2_header(client, dst), v1_header(client, dst)] {
        let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        assert_hello(&mut tcp).await;
    }
    assert_eq!(seen.all(), vec![client, client]);
    server.shutdown().await;
}

/// Reads the server's hello: the header was accepted.
async fn assert_hello(tcp: &mut TcpStream) {
    let mut first = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut first))
        .await
        .expect("hello in time")
        .expect("hello, not a close");
}

/// Waits for the server to close the connection without a byte (no hello).
async fn assert_closed_silently(tcp: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("expected a close, got {:?}", &buf[..n]),
        Err(_) => panic!("not closed within 5 s"),
    }
}

/// Polls a counter until it reaches `want`, with a deadline.
async fn until(counter: &AtomicU64, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counter.load(Ordering::Relaxed) < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter stuck at {}",
            counter.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(counter.load(Ordering::Relaxed), want);
}

#[tokio::test]
async fn headers_split_across_writes_at_every_byte() {
    let (server, seen) = server(config(), None).await;
    let client: SocketAddr = "192.0.2.7:51234".parse().unwrap();
    let dst: SocketAddr = "10.0.0.2:8080".parse().unwrap();
    let mut expected = 0;
    for header in [v2_header(client, dst), v1_header(client, dst)] {
        for cut in 1..header.len() {
            let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tcp.write_all(&header[..cut]).await.unwrap();
            // Not synchronisation: gives the first part a chance to arrive alone, so
            // the server sees the header in two reads (it must accept it either way).
            tokio::time::sleep(Duration::from_millis(2)).await;
            tcp.write_all(&header[cut..]).await.unwrap();
            assert_hello(&mut tcp).await;
            expected += 1;
        }
    }
    until(&server.stats().proxy.accepted, expected).await;
    assert!(seen.all().iter().all(|a| *a == client));
    assert_eq!(server.stats().proxy.partial.load(Ordering::Relaxed), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn local_command_is_served_with_the_connections_own_address() {
    let (server, seen) = server(config(), None).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let own = tcp.local_addr().unwrap();
    // v2 LOCAL, AF_UNSPEC: a balancer's health check.
    tcp.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .await
        .unwrap();
    assert_hello(&mut tcp).await;
    // v1 UNKNOWN: the same.
    let mut tcp2 = TcpStream::connect(server.local_addr()).await.unwrap();
    let own2 = tcp2.local_addr().unwrap();
    tcp2.write_all(b"PROXY UNKNOWN\r\n").await.unwrap();
    assert_hello(&mut tcp2).await;
    until(&server.stats().proxy.local, 2).await;
    assert_eq!(seen.all(), vec![own, own2]);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_headers_are_refused_and_counted_by_reason() {
    let (server, seen) = server(config(), None).await;
    let stats = &server.stats().proxy;
    let cases: [(&[u8], bool, &AtomicU64, &str); 6] = [
        // Not a header: a peng3dnet frame, as a client sends when it skips the balancer.
        (
            b"\x00\x00\x00\x0c\x00\x01",
            false,
            &stats.missing,
            "missing",
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            false,
            &stats.malformed,
            "malformed",
        ),
        // v2, unknown address family 0x4.
        (
            b"\r\n\r\n\0\r\nQUIT\n\x21\x41\x00\x0c",
            false,
            &stats.malformed,
            "family",
        ),
        // v2 announcing 60,000 bytes.
        (
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xea\x60",
            false,
            &stats.oversized,
            "oversized",
        ),
        // Half a header, then the client stops sending.
        (b"PROXY TCP4 1.2.3.", true, &stats.partial, "partial"),
        (b"\r\n\r\n\0\r\nQU", true, &stats.partial, "partial v2"),
    ];
    for (bytes, half_close, counter, what) in cases {
        let before = counter.load(Ordering::Relaxed);
        let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        if half_close {
            tcp.shutdown().await.unwrap();
        }
        assert_closed_silently(&mut tcp).await;
        until(counter, before + 1).await;
        eprintln!("{what}: refused");
    }
    assert!(seen.all().is_empty(), "{:?}", seen.all());
    server.shutdown().await;
}

#[tokio::test]
async fn silence_and_a_stalled_header_are_refused_within_the_handshake_timeout() {
    let (server, _) = server(config(), None).await;
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut stalled = TcpStream::connect(server.local_addr()).await.unwrap();
    stalled
        .write_all(b"\r\n\r\n\0\r\nQUIT\n\x21")
        .await
        .unwrap();
    assert_closed_silently(&mut silent).await;
    assert_closed_silently(&mut stalled).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    until(&server.stats().proxy.missing, 1).await;
    until(&server.stats().proxy.partial, 1).await;
    server.shutdown().await;
}

#[tokio::test]
async fn untrusted_sources_are_refused_even_with_a_header() {
    let (server, seen) = server(config(), None).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
    let mut tcp = socket.connect(server.local_addr()).await.unwrap();
    let _ = tcp
        .write_all(&v2_header(
            "203.0.113.5:1".parse().unwrap(),
            server.local_addr(),
        ))
        .await;
    assert_closed_silently(&mut tcp).await;
    until(&server.stats().proxy.untrusted, 1).await;
    // And through a trusted balancer, a client from 127.0.0.9 is served.
    let balancer = relay(server.local_addr(), v2_header).await;
    let reply = ping_server(&balancer.to_string(), &from("127.0.0.9"))
        .await
        .unwrap();
    assert_eq!(peer_in(reply.data()).ip().to_string(), "127.0.0.9");
    assert_eq!(seen.all().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn the_per_address_cap_counts_the_clients_real_address() {
    let mut config = config();
    config.limits.max_connections_per_addr = 1;
    let (server, _) = server(config, None).await;
    let balancer = relay(server.local_addr(), v2_header).await;
    let target = balancer.to_string();
    let mut first = PingSession::connect(&target, &from("127.0.0.2"))
        .await
        .unwrap();
    first.ping().await.unwrap();
    // A second from the same client is refused, though the balancer's address is the same.
    match PingSession::connect(&target, &from("127.0.0.2")).await {
        Err(PingError::ClosedByPeer(Some(reason))) => {
            assert_eq!(reason.to_string(), "serverfull")
        }
        Err(e) => panic!("expected closeconn serverfull, got {e}"),
        Ok(_) => panic!("a second connection from 127.0.0.2 was served"),
    }
    // Another client is not.
    let mut other = PingSession::connect(&target, &from("127.0.0.3"))
        .await
        .unwrap();
    other.ping().await.unwrap();
    first.close().await;
    other.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_header_comes_before_tls() {
    let pki = common::pki::Pki::new("proxy-tls");
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let tls = ServerTls::from_pem_files(&cert, &key, ClientCertPolicy::None).unwrap();
    let (server, _) = server(config(), Some(tls)).await;
    let balancer = relay(server.local_addr(), v2_header).await;
    let options = PingOptions {
        tls: Some(
            ClientTls::with_ca_file(&ca_file)
                .unwrap()
                .with_server_name("localhost"),
        ),
        ..from("127.0.0.4")
    };
    let reply = ping_server(&balancer.to_string(), &options).await.unwrap();
    assert_eq!(peer_in(reply.data()).ip().to_string(), "127.0.0.4");
    server.shutdown().await;
}

/// Without the PROXY protocol: the server sees the chosen source address directly.
#[tokio::test]
async fn ping_from_a_chosen_source_address() {
    let responder = PingResponder::new()
        .with_dynamic(|request| map([("peer", Value::from(request.peer_addr.to_string()))]));
    let server = Server::builder()
        .pingable(responder)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let target = server.local_addr().to_string();
    let reply = ping_server(&target, &from("127.0.0.5")).await.unwrap();
    assert_eq!(peer_in(reply.data()).ip().to_string(), "127.0.0.5");
    // The blocking client too.
    let options = from("127.0.0.6");
    let reply = tokio::task::spawn_blocking(move || {
        peng3dnet::blocking::ping_server(target.as_str(), &options)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(peer_in(reply.data()).ip().to_string(), "127.0.0.6");
    // A source of the other family is a clear error, not a hang.
    let err = ping_server(&server.local_addr().to_string(), &from("::1"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("source address ::1 is IPv6"),
        "{err}"
    );
    // And a source address this host does not have.
    let err = ping_server(&server.local_addr().to_string(), &from("192.0.2.1"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot use source address 192.0.2.1"),
        "{err}"
    );
    server.shutdown().await;
}

/// The id of the first frame the server sends on `tcp`: a hello (served) or a closeconn
/// (refused).
async fn first_frame_id(tcp: &mut TcpStream) -> u32 {
    let mut head = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head))
        .await
        .expect("a frame in time")
        .expect("a frame, not a close");
    u32::from_be_bytes([head[4], head[5], head[6], head[7]])
}

/// A connection from the trusted balancer whose v1 header names `client`.
async fn proxied_from(server: SocketAddr, client: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(server).await.unwrap();
    let proto = if client.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if client.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    let header = format!("PROXY {proto} {client} {dst} 40000 8080\r\n");
    tcp.write_all(header.as_bytes()).await.unwrap();
    tcp
}

/// The attack of the third audit: 200 addresses of one IPv6 /64 were all served under a
/// cap of 2, and an IPv4 address and its `::ffff:` form counted apart. A /64 is one
/// source by default, and a mapped address is its IPv4 address.
#[tokio::test]
async fn the_per_address_cap_counts_an_ipv6_slash_64_and_a_mapped_ipv4_as_one_source() {
    use peng3dnet::protocol::ids;
    let mut config = config();
    config.limits.max_connections_per_addr = 2;
    let (server, _) = server(config, None).await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    let mut served = 0;
    for i in 1..=200 {
        let mut tcp = proxied_from(addr, &format!("2001:db8:5:6:{i:x}::{i:x}")).await;
        match first_frame_id(&mut tcp).await {
            ids::HELLO => served += 1,
            ids::CLOSECONN => {}
            other => panic!("frame {other}"),
        }
        held.push(tcp);
    }
    assert_eq!(
        served, 2,
        "connections served from one /64 under a cap of 2"
    );
    // Another /64 is another source.
    let mut other = proxied_from(addr, "2001:db8:5:7::1").await;
    assert_eq!(first_frame_id(&mut other).await, ids::HELLO);

    let mut v4 = proxied_from(addr, "192.0.2.1").await;
    assert_eq!(first_frame_id(&mut v4).await, ids::HELLO);
    let mut mapped = proxied_from(addr, "::ffff:192.0.2.1").await;
    assert_eq!(first_frame_id(&mut mapped).await, ids::HELLO);
    let mut third = proxied_from(addr, "::ffff:192.0.2.1").await;
    assert_eq!(
        first_frame_id(&mut third).await,
        ids::CLOSECONN,
        "a mapped address counts with its IPv4 form"
    );
    drop((held, other, v4, mapped, third));
    server.shutdown().await;
}
