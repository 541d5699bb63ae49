//! TLS: certificates generated at test time with rcgen, for every case of issue 7.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use peng3dnet::client::Client;
use peng3dnet::config::Config;
use peng3dnet::ping::{ping_server, PingError, PingOptions};
use peng3dnet::server::{ClientHandle, Handler, Server};
use peng3dnet::tls::{ClientCertPolicy, ClientTls, SecurityLevel, ServerTls};
use peng3dnet::{ConnectionError, PingResponder, Registry};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// A directory of PEM files for one test.
struct Pki {
    dir: PathBuf,
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "peng3dnet-tls-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn ca(&self, name: &str) -> (Ca, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let path = self.write(&format!("{name}.pem"), &cert.pem());
        (Ca { cert, key }, path)
    }

    /// A leaf certificate for `names`, signed by `ca`; returns (cert file, key file).
    fn leaf(&self, file: &str, ca: &Ca, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        (
            self.write(&format!("{file}.crt"), &cert.pem()),
            self.write(&format!("{file}.key"), &key.serialize_pem()),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config() -> Config {
    let mut config = Config::default();
    config.limits.handshake_timeout = Duration::from_millis(500);
    config
}

async fn tls_server(tls: ServerTls) -> Server {
    Server::builder()
        .config(config())
        .pingable(PingResponder::new())
        .tls(tls)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

/// A pingable TLS server whose certificate for `names` is signed by a fresh CA; returns the
/// server and the CA file.
async fn server_signed_for(pki: &Pki, names: &[&str], expired: bool) -> (Server, PathBuf) {
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, names, expired);
    let tls = ServerTls::from_pem_files(&cert, &key, ClientCertPolicy::None).unwrap();
    (tls_server(tls).await, ca_file)
}

/// Pings `server` as `localhost` and returns the TLS error's message.
async fn tls_failure(server: &Server, tls: ClientTls) -> String {
    match ping_server(&localhost(server), &options(tls)).await {
        Err(PingError::Tls(message)) => message,
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

fn options(tls: ClientTls) -> PingOptions {
    PingOptions {
        tls: Some(tls),
        timeout: Duration::from_secs(5),
        ..PingOptions::default()
    }
}

fn localhost(server: &Server) -> String {
    format!("localhost:{}", server.local_addr().port())
}

#[tokio::test]
async fn ping_over_tls_verified_against_a_ca_file() {
    let pki = Pki::new("ok");
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let server =
        tls_server(ServerTls::from_pem_files(&cert, &key, ClientCertPolicy::None).unwrap()).await;
    let reply = ping_server(
        &localhost(&server),
        &options(ClientTls::with_ca_file(&ca_file).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(reply.security, SecurityLevel::ServerAuthenticated);
    assert!(reply.timings.tls > Duration::ZERO);
    assert!(reply.get("peng3dnet").is_some());
    server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_rejected() {
    let pki = Pki::new("wrongca");
    let (server, _) = server_signed_for(&pki, &["localhost"], false).await;
    let (_, other_ca_file) = pki.ca("other");
    let message = tls_failure(&server, ClientTls::with_ca_file(&other_ca_file).unwrap()).await;
    assert!(message.contains("UnknownIssuer"), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_rejected() {
    let pki = Pki::new("wrongname");
    let (server, ca_file) = server_signed_for(&pki, &["other.example"], false).await;
    let message = tls_failure(&server, ClientTls::with_ca_file(&ca_file).unwrap()).await;
    assert!(message.contains("NotValidForName"), "{message}");
    // ... unless the client is told which name to expect.
    let named = ClientTls::with_ca_file(&ca_file)
        .unwrap()
        .with_server_name("other.example");
    assert!(ping_server(&localhost(&server), &options(named))
        .await
        .is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_certificate_is_rejected() {
    let pki = Pki::new("expired");
    let (server, ca_file) = server_signed_for(&pki, &["localhost"], true).await;
    let message = tls_failure(&server, ClientTls::with_ca_file(&ca_file).unwrap()).await;
    assert!(message.contains("Expired"), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn self_signed_servers_need_the_explicit_insecure_opt_out() {
    let pki = Pki::new("insecure");
    let (ca, _) = pki.ca("selfsigned");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let server =
        tls_server(ServerTls::from_pem_files(&cert, &key, ClientCertPolicy::None).unwrap()).await;
    let reply = ping_server(
        &localhost(&server),
        &options(ClientTls::dangerous_no_verification()),
    )
    .await
    .unwrap();
    assert_eq!(reply.security, SecurityLevel::Encrypted);
    server.shutdown().await;
}

#[tokio::test]
async fn a_plain_client_at_a_tls_server_is_bounded_by_the_handshake_timeout() {
    let pki = Pki::new("plainclient");
    let (ca, _) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let server =
        tls_server(ServerTls::from_pem_files(&cert, &key, ClientCertPolicy::None).unwrap()).await;
    let started = std::time::Instant::now();
    let err = ping_server(
        &localhost(&server),
        &PingOptions {
            timeout: Duration::from_secs(5),
            ..PingOptions::default()
        },
    )
    .await
    .unwrap_err();
    // The server waits for a ClientHello, the client for a hello: the server's handshake
    // timeout (500 ms here) ends it, long before the client's 5 s.
    assert!(
        matches!(err, PingError::Closed(None) | PingError::Io(_)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));

    // A peer that opens TCP and says nothing is closed at the deadline too.
    let mut raw = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(4), raw.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_at_a_plain_server_says_so() {
    let server = Server::builder()
        .pingable(PingResponder::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let err = ping_server(
        &localhost(&server),
        &options(ClientTls::dangerous_no_verification()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, PingError::Tls(m) if m.contains("does not seem to speak TLS")),
        "{err}"
    );
    server.shutdown().await;
}

/// Reports each client's security level when established.
struct Levels(mpsc::UnboundedSender<SecurityLevel>);

impl Handler for Levels {
    type State = ();
    fn on_established(&self, client: &ClientHandle, _: &mut ()) {
        let _ = self.0.send(client.security());
    }
}

fn secret_registry() -> Registry {
    let mut r = Registry::new();
    r.register("app:data.secret").unwrap();
    r.set_min_security("app:data.secret", SecurityLevel::ServerAuthenticated)
        .unwrap();
    r
}

#[tokio::test]
async fn client_certificates_are_required_and_reach_both_authenticated() {
    let pki = Pki::new("clientcert");
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let (client_cert, client_key) = pki.leaf("client", &ca, &["client"], false);
    let (tx, mut levels) = mpsc::unbounded_channel();
    let tls = ServerTls::from_pem_files(&cert, &key, ClientCertPolicy::Required(ca_file.clone()))
        .unwrap();
    let server = Server::builder()
        .config(config())
        .registry(secret_registry())
        .handler(Levels(tx))
        .tls(tls)
        .bind("127.0.0.1:0")
        .await
        .unwrap();

    let without = Client::builder()
        .registry(secret_registry())
        .tls(ClientTls::with_ca_file(&ca_file).unwrap())
        .timeout(Duration::from_secs(5))
        .connect(&localhost(&server))
        .await;
    assert!(
        without.is_err(),
        "a client without certificate must be refused"
    );

    let mut with = Client::builder()
        .registry(secret_registry())
        .tls(ClientTls::with_ca_file_and_client_cert(&ca_file, &client_cert, &client_key).unwrap())
        .connect(&localhost(&server))
        .await
        .unwrap();
    assert_eq!(with.security(), SecurityLevel::ServerAuthenticated);
    assert_eq!(levels.recv().await, Some(SecurityLevel::BothAuthenticated));
    with.send("app:data.secret", &"ok".into()).await.unwrap();
    with.close("done").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn packets_with_a_minimum_security_level_are_refused_on_plain_connections() {
    let server = Server::builder()
        .registry(secret_registry())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut client = Client::builder()
        .registry(secret_registry())
        .connect(&localhost(&server))
        .await
        .unwrap();
    assert_eq!(client.security(), SecurityLevel::None);
    let err = client
        .send("app:data.secret", &"no".into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectionError::InsufficientSecurity { .. }),
        "{err}"
    );
    let handle = server.clients().pop().unwrap();
    assert!(handle.send("app:data.secret", &"no".into()).is_err());
    client.close("done").await.unwrap();
    server.shutdown().await;
}

/// The binary's `serve` with TLS flags, stopped on drop.
struct ServeProcess(std::process::Child, u16);

impl ServeProcess {
    fn start(args: &[&std::ffi::OsStr]) -> ServeProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_peng3dnet"))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected serve output {line:?}"));
        ServeProcess(child, port)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli_ping(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_peng3dnet"))
        .args(["ping", "-c", "1", "-W", "3"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_cli_serves_and_pings_over_tls() {
    let pki = Pki::new("cli");
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let serve = ServeProcess::start(&[
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ]);
    let target = format!("localhost:{}", serve.1);

    let verified = cli_ping(&["--ca".as_ref(), ca_file.as_os_str(), target.as_ref()]);
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        stdout.contains("1 packets transmitted, 1 received"),
        "{stdout}"
    );

    let insecure = cli_ping(&["--insecure".as_ref(), target.as_ref()]);
    assert_eq!(insecure.status.code(), Some(0));

    // Verification against the system roots fails for a private CA, with a clear line.
    let system = cli_ping(&["--tls".as_ref(), target.as_ref()]);
    assert_eq!(system.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&system.stderr);
    assert!(
        stderr.contains("certificate") || stderr.contains("root certificates"),
        "{stderr}"
    );
}
