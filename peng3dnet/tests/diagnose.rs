//! Clients say what they reached: a TLS server without TLS, a plain server with TLS, an
//! SSH or HTTP server, bytes that cannot start a frame, or a silent server; and they say
//! it at once, not after the hello timeout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::pki::Pki;
use peng3dnet::client::Client;
use peng3dnet::ping::{ping_server, PingError, PingOptions};
use peng3dnet::tls::{ClientCertPolicy, ClientTls, ServerTls};
use peng3dnet::{PingResponder, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The clients' timeout: every diagnosis must come well before it.
const TIMEOUT: Duration = Duration::from_secs(8);
/// What "at once" means here: far below the timeout, with room for a busy machine.
const PROMPT: Duration = Duration::from_secs(4);

fn options(tls: Option<ClientTls>) -> PingOptions {
    PingOptions {
        timeout: TIMEOUT,
        tls,
        ..PingOptions::default()
    }
}

async fn tls_server(pki: &Pki) -> (Server, std::path::PathBuf) {
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost", "127.0.0.1"], false);
    let server = Server::builder()
        .pingable(PingResponder::new())
        .tls(ServerTls::from_pem_files(&cert, &key, ClientCertPolicy::None).unwrap())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    (server, ca_file)
}

/// A server that sends `greeting` to each connection, then reads until the client leaves.
async fn fake_server(greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(greeting).await;
                let mut sink = [0u8; 512];
                while s.read(&mut sink).await.unwrap_or(0) > 0 {}
            });
        }
    });
    addr
}

async fn ping_error(addr: SocketAddr, tls: Option<ClientTls>) -> (PingError, Duration) {
    let started = Instant::now();
    let err = ping_server(&addr.to_string(), &options(tls))
        .await
        .expect_err("the ping must fail");
    (err, started.elapsed())
}

fn blocking_error(addr: SocketAddr) -> PingError {
    peng3dnet::blocking::ping_server(addr.to_string(), &options(None))
        .expect_err("the ping must fail")
}

#[tokio::test]
async fn a_plain_client_of_a_tls_server_is_told_tls_is_required() {
    let pki = Pki::new("diagnose-plain-to-tls");
    let (server, _) = tls_server(&pki).await;
    let (err, took) = ping_error(server.local_addr(), None).await;
    assert!(matches!(err, PingError::TlsRequired), "{err}");
    assert_eq!(err.to_string(), "the server requires TLS");
    assert!(took < PROMPT, "{took:?}");

    let classic = Client::builder()
        .timeout(TIMEOUT)
        .connect_addr(server.local_addr())
        .await
        .expect_err("a plain classic client is refused");
    assert!(matches!(classic, PingError::TlsRequired), "{classic}");

    let addr = server.local_addr();
    let blocking = tokio::task::spawn_blocking(move || blocking_error(addr))
        .await
        .unwrap();
    assert!(matches!(blocking, PingError::TlsRequired), "{blocking}");
    server.shutdown().await;
}

#[tokio::test]
async fn tls_clients_of_a_tls_server_are_not_disturbed_by_the_plain_refusal() {
    let pki = Pki::new("diagnose-tls-ok");
    let (server, ca_file) = tls_server(&pki).await;
    let tls = ClientTls::with_ca_file(&ca_file)
        .unwrap()
        .with_server_name("localhost");
    for _ in 0..3 {
        ping_server(
            &server.local_addr().to_string(),
            &options(Some(tls.clone())),
        )
        .await
        .unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_of_a_plain_server_is_told_the_server_does_not_use_tls() {
    let pki = Pki::new("diagnose-tls-to-plain");
    let (_, ca_file) = pki.ca("ca");
    let server = Server::builder()
        .pingable(PingResponder::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let tls = ClientTls::with_ca_file(&ca_file).unwrap();
    let (err, took) = ping_error(server.local_addr(), Some(tls)).await;
    let PingError::Tls(io) = &err else {
        panic!("{err}")
    };
    assert!(peng3dnet::tls::peer_is_not_tls(io), "{err}");
    assert!(err.to_string().contains("does not use TLS"), "{err}");
    assert!(took < PROMPT, "{took:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn ssh_http_and_garbage_are_named_at_once() {
    for (greeting, expected) in [
        (
            &b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n"[..],
            "not a peng3dnet server: it sent 'SSH-2.0-OpenSSH_9.6p1 Ubuntu-3', an SSH banner",
        ),
        (
            &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..],
            "not a peng3dnet server: it sent 'HTTP/1.1 400 Bad Request', an HTTP response",
        ),
        (
            &b"\x7fELF\x02\x01\x01\x00garbage"[..],
            "not a peng3dnet server: its first bytes '\\x7fELF\\x02\\x01\\x01\\x00garbage' cannot \
             start a peng3dnet frame",
        ),
        (
            &b"\x16\x03\x03\x00\x02\x02\x28"[..],
            "the server requires TLS",
        ),
    ] {
        let addr = fake_server(greeting).await;
        let (err, took) = ping_error(addr, None).await;
        assert_eq!(err.to_string(), expected);
        assert!(took < PROMPT, "{took:?}");
        let classic = Client::builder()
            .timeout(TIMEOUT)
            .connect_addr(addr)
            .await
            .expect_err("refused");
        assert_eq!(classic.to_string(), expected);
        let blocking = tokio::task::spawn_blocking(move || blocking_error(addr))
            .await
            .unwrap();
        assert_eq!(blocking.to_string(), expected);
    }
}

#[tokio::test]
async fn a_silent_server_times_out_with_the_likely_causes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let options = PingOptions {
        timeout: Duration::from_millis(300),
        ..PingOptions::default()
    };
    let err = ping_server(&addr.to_string(), &options)
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err}");
    // The error names the target it timed out on.
    assert_eq!(
        err.to_string(),
        format!(
            "{addr}: timed out waiting for hello (after 0.3 s); the server accepted the \
             connection but sent nothing: it may use TLS, not be a peng3dnet server, or be \
             overloaded"
        )
    );
    silent.abort();
}

/// Error chains do not repeat themselves: no error's `source()` says what its `Display`
/// said already (chain printers such as anyhow's showed every cause twice, a bind error
/// three times).
#[tokio::test]
async fn error_chains_name_each_cause_once() {
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(cause) = next {
            out.push(cause.to_string());
            next = cause.source();
        }
        out
    }
    fn assert_no_repeat(e: &(dyn std::error::Error + 'static)) {
        let texts = chain(e);
        for pair in texts.windows(2) {
            assert!(
                !pair[0].contains(&pair[1]),
                "{:?} repeats its cause {:?}",
                pair[0],
                pair[1]
            );
        }
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = peng3dnet::Server::builder()
        .bind(taken.local_addr().unwrap())
        .await
        .unwrap_err();
    assert_no_repeat(&bind);
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let connect = peng3dnet::ping_server(refused, &options(None))
        .await
        .unwrap_err();
    assert_no_repeat(&connect);
    let resolve = peng3dnet::ping_server("no-such-host.invalid:1", &options(None))
        .await
        .unwrap_err();
    assert_no_repeat(&resolve);
    let io = peng3dnet::PingError::from(std::io::Error::other("disk on fire"));
    assert_no_repeat(&io);
    assert_eq!(chain(&io), ["i/o error: disk on fire"]);
}

#[test]
fn a_frame_errors_io_cause_is_named_once() {
    let e = peng3dnet::PingError::Frame(peng3dnet::FrameError::Io(std::io::Error::other("gone")));
    assert_eq!(e.to_string(), "i/o error: gone");
    assert!(std::error::Error::source(&e).is_none());
}
