//! TLS with the certificates people really make, and every TLS failure in plain words with
//! the next step, over real sockets: a pinned self-signed CN-only certificate (openssl's
//! first certificate), an unknown issuer, a certificate not valid yet, a client
//! certificate missing or refused, a key that does not match its certificate.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::Pki;
use peng3dnet::ping::{ping_server, PingError, PingOptions};
use peng3dnet::tls::{handshake_error_kind, ClientCertPolicy, ClientTls, ServerTls, TlsError};
use peng3dnet::{PingResponder, Server};

fn options(tls: ClientTls) -> PingOptions {
    PingOptions {
        timeout: Duration::from_secs(8),
        tls: Some(tls),
        ..PingOptions::default()
    }
}

async fn server(cert: &Path, key: &Path, clients: ClientCertPolicy) -> Server {
    Server::builder()
        .pingable(PingResponder::new())
        .tls(ServerTls::from_pem_files(cert, key, clients).unwrap())
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

fn target(server: &Server) -> String {
    format!("localhost:{}", server.local_addr().port())
}

/// The failure's message and JSON kind; the message must hold no Rust Debug output.
async fn failure(server: &Server, tls: ClientTls) -> (String, &'static str) {
    let err = ping_server(&target(server), &options(tls))
        .await
        .expect_err("the ping must fail");
    let PingError::Tls(io) = &err else {
        panic!("not a TLS error: {err}")
    };
    let message = err.to_string();
    for debug in ["Context", "DnsName(", "Other(", "{", "Error("] {
        assert!(!message.contains(debug), "{message}");
    }
    (message, handshake_error_kind(io))
}

#[tokio::test]
async fn a_self_signed_cn_only_certificate_given_to_ca_is_pinned() {
    let pki = Pki::new("pinned");
    let (cert, key) = pki.self_signed_cn_only("server", "localhost");
    let server = server(&cert, &key, ClientCertPolicy::None).await;
    let tls = ClientTls::with_ca_file(&cert).unwrap();
    ping_server(&target(&server), &options(tls.clone()))
        .await
        .unwrap();
    // By address too: the pinned certificate is trusted as it is, whatever its names.
    ping_server(&server.local_addr().to_string(), &options(tls.clone()))
        .await
        .unwrap();
    let addr = target(&server);
    tokio::task::spawn_blocking(move || {
        peng3dnet::blocking::ping_server(&addr, &options(tls)).unwrap();
    })
    .await
    .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn another_self_signed_certificate_is_explained_as_a_ca_used_as_server_certificate() {
    let pki = Pki::new("otherpin");
    let (cert, key) = pki.self_signed_cn_only("server", "localhost");
    let (other, _) = pki.self_signed_cn_only("other", "localhost");
    let server = server(&cert, &key, ClientCertPolicy::None).await;
    let (message, kind) = failure(&server, ClientTls::with_ca_file(&other).unwrap()).await;
    assert_eq!(
        message,
        "server certificate rejected: it is a CA certificate used as the server's own \
         certificate; give that exact certificate to --ca to pin it, or have the server use a \
         certificate signed by the CA"
    );
    assert_eq!(kind, "tls_certificate");
    server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_an_unknown_issuer() {
    let pki = Pki::new("unknownissuer");
    let (ca, _) = pki.ca("ca");
    let (_, other_ca_file) = pki.ca("other");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let server = server(&cert, &key, ClientCertPolicy::None).await;
    let (message, kind) = failure(&server, ClientTls::with_ca_file(&other_ca_file).unwrap()).await;
    assert_eq!(
        message,
        "server certificate rejected: it is not signed by a trusted CA; give the CA that \
         signed it with --ca, or the server's own certificate if it is self-signed"
    );
    assert_eq!(kind, "tls_certificate");
    server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_not_valid_yet_says_to_check_the_clocks() {
    let pki = Pki::new("notyet");
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf_not_yet_valid("server", &ca, &["localhost"]);
    let server = server(&cert, &key, ClientCertPolicy::None).await;
    let (message, _) = failure(&server, ClientTls::with_ca_file(&ca_file).unwrap()).await;
    assert_eq!(
        message,
        "server certificate rejected: it is not valid yet (check the clocks of both machines)"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_ca_signed_certificate_without_the_name_lists_its_names() {
    let pki = Pki::new("names");
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["a.example", "127.0.0.2"], false);
    let server = server(&cert, &key, ClientCertPolicy::None).await;
    let (message, _) = failure(&server, ClientTls::with_ca_file(&ca_file).unwrap()).await;
    assert_eq!(
        message,
        "server certificate rejected: it is not valid for localhost, only for a.example, \
         127.0.0.2; connect by one of those names, or use --server-name"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn client_certificates_missing_or_refused_are_told_apart() {
    let pki = Pki::new("clientcerts");
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let (other_ca, _) = pki.ca("other");
    let (stranger_cert, stranger_key) = pki.leaf("stranger", &other_ca, &["client"], false);
    let server = server(&cert, &key, ClientCertPolicy::Required(ca_file.clone())).await;

    let (message, kind) = failure(&server, ClientTls::with_ca_file(&ca_file).unwrap()).await;
    assert_eq!(
        message,
        "TLS handshake failed: the server requires a client certificate; give one \
         (the CLI: --cert and --key)"
    );
    assert_eq!(kind, "tls_client_certificate");

    let stranger =
        ClientTls::with_ca_file_and_client_cert(&ca_file, &stranger_cert, &stranger_key).unwrap();
    let (message, kind) = failure(&server, stranger).await;
    assert_eq!(
        message,
        "TLS handshake failed: the server refused our client certificate (not signed by a CA \
         it trusts, or expired)"
    );
    assert_eq!(kind, "tls_client_certificate");
    server.shutdown().await;
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_named() {
    let pki = Pki::new("keymismatch");
    let (cert, _) = pki.self_signed_cn_only("server", "localhost");
    let (_, other_key) = pki.self_signed_cn_only("other", "localhost");
    let err = ServerTls::from_pem_files(&cert, &other_key, ClientCertPolicy::None)
        .expect_err("mismatched key");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "the private key {} does not match the certificate {}: give the key the \
             certificate was made with",
            other_key.display(),
            cert.display()
        )
    );
}
