//! The server's observer hook (what metrics count) and swapping a running server's TLS
//! certificate.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peng3dnet::observe::ServerObserver;
use peng3dnet::ping::{ping_server, PingOptions, PingSession};
use peng3dnet::server::{Closed, Server};
use peng3dnet::tls::{ClientCertPolicy, ClientTls, ServerTls};
use peng3dnet::{ConnType, PingResponder};

use common::pki::Pki;

#[derive(Default)]
struct Recorder {
    accepted: AtomicU64,
    established: Mutex<Vec<String>>,
    closed: Mutex<Vec<(Option<String>, String)>>,
    pings: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
    tls_failures: AtomicU64,
}

impl ServerObserver for Recorder {
    fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
    }
    fn tls_handshake_failed(&self) {
        self.tls_failures.fetch_add(1, Ordering::SeqCst);
    }
    fn established(&self, conntype: &ConnType) {
        self.established
            .lock()
            .unwrap()
            .push(conntype.as_str().to_owned());
    }
    fn closed(&self, conntype: Option<&ConnType>, closed: &Closed) {
        let reason = closed.reason().map(|r| r.to_string()).unwrap_or_default();
        self.closed
            .lock()
            .unwrap()
            .push((conntype.map(|t| t.as_str().to_owned()), reason));
    }
    fn ping_answered(&self, handling: Duration) {
        assert!(handling < Duration::from_secs(5));
        self.pings.fetch_add(1, Ordering::SeqCst);
    }
    fn bytes_read(&self, bytes: u64) {
        self.read.fetch_add(bytes, Ordering::SeqCst);
    }
    fn bytes_written(&self, bytes: u64) {
        self.written.fetch_add(bytes, Ordering::SeqCst);
    }
}

/// Polls `check` until it holds or 5 s have passed.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn observer_sees_connections_pings_and_bytes() {
    let recorder = Arc::new(Recorder::default());
    let server = Server::builder()
        .pingable(PingResponder::new())
        .observer(recorder.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let target = server.local_addr().to_string();
    ping_server(&target, &PingOptions::default()).await.unwrap();
    let mut session = PingSession::connect(&target, &PingOptions::default())
        .await
        .unwrap();
    session.ping().await.unwrap();
    session.ping().await.unwrap();
    session.close().await;
    eventually("both connections closed", || {
        recorder.closed.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(recorder.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(recorder.pings.load(Ordering::SeqCst), 3);
    assert_eq!(
        *recorder.established.lock().unwrap(),
        vec!["ping".to_owned(), "ping".to_owned()]
    );
    for (conntype, _) in recorder.closed.lock().unwrap().iter() {
        assert_eq!(conntype.as_deref(), Some("ping"));
    }
    // Three pings and pongs at least, each more than a 4-byte length prefix.
    assert!(recorder.read.load(Ordering::SeqCst) > 3 * 8);
    assert!(recorder.written.load(Ordering::SeqCst) > recorder.read.load(Ordering::SeqCst));
    assert_eq!(recorder.tls_failures.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn replacing_the_tls_config_changes_the_certificate_of_new_handshakes() {
    let pki = Pki::new("replace");
    let (old_ca, old_ca_file) = pki.ca("old-ca");
    let (new_ca, new_ca_file) = pki.ca("new-ca");
    let (old_cert, old_key) = pki.leaf("old", &old_ca, &["localhost"], false);
    let (new_cert, new_key) = pki.leaf("new", &new_ca, &["localhost"], false);
    let tls = ServerTls::from_pem_files(&old_cert, &old_key, ClientCertPolicy::None).unwrap();
    let recorder = Arc::new(Recorder::default());
    let server = Server::builder()
        .pingable(PingResponder::new())
        .tls(tls.clone())
        .observer(recorder.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let target = format!("localhost:{}", server.local_addr().port());
    let trusting = |ca| PingOptions {
        tls: Some(ClientTls::with_ca_file(ca).unwrap()),
        ..PingOptions::default()
    };
    // A session opened before the swap stays up after it.
    let mut session = PingSession::connect(&target, &trusting(&old_ca_file))
        .await
        .unwrap();
    session.ping().await.unwrap();
    tls.replace(&ServerTls::from_pem_files(&new_cert, &new_key, ClientCertPolicy::None).unwrap());
    ping_server(&target, &trusting(&new_ca_file)).await.unwrap();
    assert!(ping_server(&target, &trusting(&old_ca_file)).await.is_err());
    session.ping().await.unwrap();
    session.close().await;
    eventually("the failed handshake is counted", || {
        recorder.tls_failures.load(Ordering::SeqCst) == 1
    })
    .await;
    server.shutdown().await;
}
