//! The exporter's TLS modules (`--config`) against `serve` over TLS with client
//! certificates: a module's CA, client certificate and server name are used, and every
//! failure reason names the module setting to change, never a `peng3dnet ping` flag.

#[path = "../../peng3dnet/tests/common/mod.rs"]
mod common;
#[path = "support/proc.rs"]
mod proc;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::pki::Pki;
use proc::{Proc, LIMIT};

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");

/// HTTP GET: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

#[test]
fn tls_modules_use_their_files_and_name_them_when_a_probe_fails() {
    let pki = Pki::new("exporter");
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let (clients, clients_file) = pki.ca("clients");
    let (client_cert, client_key) = pki.leaf("prober", &clients, &["prober"], false);
    let server = Proc::spawn(
        BIN,
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-client-ca",
            clients_file.to_str().unwrap(),
        ],
    );
    let port = server.line("listening on 127.0.0.1:");
    let (ca, cert, key) = (
        ca_file.display(),
        client_cert.display(),
        client_key.display(),
    );
    let config = pki.write(
        "exporter.toml",
        &format!(
            "[modules.mtls]\ntls-ca-file = \"{ca}\"\ntls-cert-file = \"{cert}\"\n\
             tls-key-file = \"{key}\"\n\
             [modules.no-client-cert]\ntls-ca-file = \"{ca}\"\n\
             [modules.other-name]\ntls-ca-file = \"{ca}\"\ntls-cert-file = \"{cert}\"\n\
             tls-key-file = \"{key}\"\ntls-server-name = \"other.example\"\n\
             [modules.system-roots]\ntls = true\n"
        ),
    );
    let exporter = Proc::spawn(
        BIN,
        &[
            "exporter",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let exporter_addr = exporter.line("listening on ");
    let probe = |module: &str| {
        let (status, body) = get(
            &exporter_addr,
            &format!("/probe?target=localhost:{port}&module={module}&timeout=5"),
        );
        assert_eq!(status, 200, "{module}: {body}");
        body
    };
    let ok = probe("mtls");
    assert!(ok.contains("\nprobe_success 1\n"), "{ok}");
    for (module, setting) in [
        ("no-client-cert", "tls-cert-file"),
        ("other-name", "tls-server-name"),
        ("system-roots", "tls-ca-file"),
    ] {
        let body = probe(module);
        assert!(body.contains("\nprobe_success 0\n"), "{module}: {body}");
        let failure = body
            .lines()
            .find(|l| l.starts_with("probe_peng3dnet_failure_info{"))
            .unwrap_or_else(|| panic!("{module}: {body}"));
        assert!(failure.contains(setting), "{module}: {failure}");
        assert!(!failure.contains("--"), "{module}: {failure}");
    }
}
