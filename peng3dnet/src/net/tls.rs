//! TLS with rustls: certificates from PEM files, server verification with hostname
//! checking, optional client certificates, and the reference's security levels.
//!
//! The reference has TLS settings (`net.ssl.*`) but calls its TLS "not yet working"; this
//! is a TLS that works, between peers of this crate. A Python peer cannot speak it.
//!
//! | reference | here |
//! |---|---|
//! | `net.ssl.server.certfile` / `keyfile` | [`ServerTls::from_pem_files`] |
//! | `net.ssl.server.force_verify` | [`ClientCertPolicy::Required`] |
//! | `net.ssl.client.check_hostname`, `force_verify` | always on with [`ClientTls::with_system_roots`] / [`ClientTls::with_ca_file`]; off only with [`ClientTls::dangerous_no_verification`] |
//! | `SSLSEC_*` | [`SecurityLevel`] |
//! | `Packet.min_sslsec_level` | [`crate::Registry::set_min_security`] |

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;

use crate::transport::Stream;

pub use peng3dnet_proto::security::SecurityLevel;

/// TLS set-up errors (files, keys, certificates). Handshake failures are reported by the
/// connection as errors of their own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the configuration (for example a key that does not match).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The private key is not the certificate's.
    #[error(
        "the private key {} does not match the certificate {}: give the key the certificate \
         was made with",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A client-certificate verifier could not be built.
    #[error("client CA: {0}")]
    Verifier(String),
    /// The name to verify the server against is not a valid DNS name or IP address.
    #[error("'{0}' is not a valid server name for TLS (a DNS name or an IP address)")]
    ServerName(String),
}

/// The crypto provider, chosen by the crate's features: aws-lc-rs (the default), whose
/// key exchange prefers the post-quantum hybrid X25519MLKEM768, else ring, which has none
/// (and whose `default_provider` rustls deprecates for it: taken here on purpose, for the
/// targets aws-lc-rs does not build on).
#[cfg(feature = "aws-lc")]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[cfg(all(feature = "ring", not(feature = "aws-lc")))]
fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(not(any(feature = "aws-lc", feature = "ring")))]
compile_error!("peng3dnet's `tls` feature needs a crypto provider: enable `aws-lc` or `ring`");

fn file_error(path: &Path, message: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in PEM file"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

/// Whether a TLS server asks clients for certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertPolicy {
    /// No client certificates (the default).
    None,
    /// Clients may present a certificate signed by this CA; those that do reach
    /// [`SecurityLevel::BothAuthenticated`].
    Optional(PathBuf),
    /// Clients must present a certificate signed by this CA (the reference's
    /// `net.ssl.server.force_verify`).
    Required(PathBuf),
}

/// A server's TLS: its certificate chain and key, and its policy for client certificates.
#[derive(Clone)]
///
/// Clones share one configuration: [`ServerTls::replace`] on any clone (the one kept by
/// the program after handing another to the server) changes it for all of them, so a
/// running server can take a new certificate without a restart.
pub struct ServerTls {
    config: Arc<arc_swap::ArcSwap<ServerConfig>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// From a PEM certificate chain and PEM private key, with a client-certificate policy.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        clients: ClientCertPolicy,
    ) -> Result<Self, TlsError> {
        let key_path = key;
        let certs = load_certs(cert)?;
        let key = load_key(key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &clients {
            ClientCertPolicy::None => builder.with_no_client_auth(),
            ClientCertPolicy::Optional(ca) | ClientCertPolicy::Required(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(root_store(ca)?),
                    provider(),
                );
                let verifier = if matches!(clients, ClientCertPolicy::Optional(_)) {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| TlsError::Verifier(e.to_string()))?,
                )
            }
        };
        let config = builder.with_single_cert(certs, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key_path.to_owned(),
            },
            e => TlsError::Config(e),
        })?;
        Ok(Self::from_config(Arc::new(config)))
    }

    /// From a ready rustls configuration.
    pub fn from_config(config: Arc<ServerConfig>) -> Self {
        ServerTls {
            config: Arc::new(arc_swap::ArcSwap::new(config)),
        }
    }

    /// Uses `new`'s certificate, key and client-certificate policy for every handshake
    /// from now on, in this value and every clone of it (a server's included). Handshakes
    /// under way and established connections keep what they started with.
    pub fn replace(&self, new: &ServerTls) {
        self.config.store(new.config.load_full());
    }

    /// Runs the server side of the TLS handshake.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        let tls = acceptor.accept(tcp).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))))
    }
}

/// A client's TLS: how it verifies servers, and its certificate if it has one.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// Whether the server's certificate and name are checked.
    verifies: bool,
    /// Name to check the certificate against instead of the target's host.
    server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("verifies", &self.verifies)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Verifies servers against the system's root certificates, with hostname checking.
    ///
    /// The system's store (or `SSL_CERT_FILE` / `SSL_CERT_DIR`) is read once per process,
    /// by the first call that finds usable certificates; later calls share that
    /// configuration (reading and parsing the store costs milliseconds of CPU, too much
    /// for every ping of a prober). A changed store is seen after a restart. A call that
    /// finds none fails, and the next call reads the store again.
    pub fn with_system_roots() -> Result<Self, TlsError> {
        static SYSTEM: OnceLock<ClientTls> = OnceLock::new();
        if let Some(tls) = SYSTEM.get() {
            return Ok(tls.clone());
        }
        let tls = Self::read_system_roots()?;
        // Two first calls at once may both read the store; one configuration is kept.
        Ok(SYSTEM.get_or_init(|| tls).clone())
    }

    /// Reads the system's root certificates into a new configuration.
    fn read_system_roots() -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            let message = match found.errors.first() {
                Some(e) => format!(
                    "no usable system root certificates ({e}); install the system's CA \
                     certificates, or name a PEM file with SSL_CERT_FILE"
                ),
                None => "no usable system root certificates; install the system's CA \
                         certificates, or name a PEM file with SSL_CERT_FILE"
                    .into(),
            };
            return Err(TlsError::File {
                path: PathBuf::from("(system roots)"),
                message,
            });
        }
        Self::with_roots(roots, None)
    }

    /// Verifies servers against the CA certificates of a PEM file, with hostname checking.
    ///
    /// A certificate of the file that is exactly the server's certificate is accepted as
    /// *pinned*, as `curl --cacert` accepts a self-signed server whose certificate it was
    /// given: the certificate everyone makes first (`openssl req -x509 ... -subj
    /// /CN=localhost`, a CA certificate without subjectAltName) works when passed to both
    /// `serve --tls-cert` and `ping --ca`. A pinned certificate is trusted as it is: its
    /// names, CA flag and dates are not checked, since the file names that very
    /// certificate.
    pub fn with_ca_file(ca: &Path) -> Result<Self, TlsError> {
        Self::with_roots_pinning(ca, None)
    }

    /// Like [`with_ca_file`](Self::with_ca_file), presenting a client certificate.
    pub fn with_ca_file_and_client_cert(
        ca: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, TlsError> {
        Self::with_roots_pinning(ca, Some((load_certs(cert)?, load_key(key)?)))
    }

    fn with_roots_pinning(
        ca: &Path,
        client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, TlsError> {
        let pinned = load_certs(ca)?;
        let roots = Arc::new(root_store(ca)?);
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki { pinned, webpki }));
        let config = match client_cert {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            verifies: true,
            server_name: None,
        })
    }

    fn with_roots(
        roots: RootCertStore,
        client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match client_cert {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            verifies: true,
            server_name: None,
        })
    }

    /// **Accepts any server certificate, for any name.** The connection is encrypted but an
    /// attacker in the middle goes unnoticed; for self-signed test servers only.
    pub fn dangerous_no_verification() -> Self {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth();
        ClientTls {
            config: Arc::new(config),
            verifies: false,
            server_name: None,
        }
    }

    /// Checks the server's certificate against this name instead of the target's host.
    pub fn with_server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_owned());
        self
    }

    /// Whether this client verifies servers.
    pub fn verifies(&self) -> bool {
        self.verifies
    }

    /// The rustls configuration and the name to check the server's certificate against,
    /// for clients that drive rustls themselves (the blocking client).
    pub(crate) fn rustls_client(
        &self,
        host: &str,
    ) -> Result<(Arc<ClientConfig>, ServerName<'static>), io::Error> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                TlsError::ServerName(name.to_owned()),
            )
        })?;
        Ok((self.config.clone(), name))
    }

    /// Runs the client side of the TLS handshake over a connected socket, checking the
    /// certificate against `host` (or the name set with
    /// [`with_server_name`](Self::with_server_name)). The library's clients call it for
    /// you; it is public for tools that drive the wire themselves (the load generator).
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<Stream, io::Error> {
        let (config, name) = self.rustls_client(host)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = connector.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
    }
}

/// The verifier behind [`ClientTls::with_ca_file`]: a server certificate that is exactly
/// one of the file's certificates is pinned; any other is verified against the file's
/// certificates as CAs, with its name.
#[derive(Debug)]
struct PinnedOrWebPki {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The verifier behind [`ClientTls::dangerous_no_verification`]: accepts any certificate but
/// still checks handshake signatures, so the session keys are genuine.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls error inside a handshake failure, if it is one.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// Whether a TLS handshake failed because the peer's bytes are not TLS at all (a plain
/// peng3dnet server's hello, say).
pub fn peer_is_not_tls(e: &io::Error) -> bool {
    matches!(
        rustls_error(e),
        Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. })
    )
}

/// A short machine-readable kind for a handshake failure (the CLI's JSON `error_kind`):
/// `tls_not_used`, `tls_certificate`, `tls_client_certificate`, or `tls`.
pub fn handshake_error_kind(e: &io::Error) -> &'static str {
    use rustls::AlertDescription as A;
    match rustls_error(e) {
        _ if peer_is_not_tls(e) => "tls_not_used",
        Some(rustls::Error::InvalidCertificate(_)) => "tls_certificate",
        Some(rustls::Error::AlertReceived(
            A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::CertificateUnknown,
        )) => "tls_client_certificate",
        _ => "tls",
    }
}

/// A readable explanation of a TLS handshake failure, with the likely cause and the next
/// step: one sentence, never Rust Debug output.
pub fn describe_handshake_error(e: &io::Error) -> String {
    use rustls::AlertDescription as A;
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            format!("server certificate rejected: {}", describe_certificate_error(cert))
        }
        _ if peer_is_not_tls(e) => {
            "TLS handshake failed: the server does not use TLS (its answer is not a TLS record); connect without TLS".into()
        }
        Some(rustls::Error::AlertReceived(A::CertificateRequired)) => {
            "TLS handshake failed: the server requires a client certificate; give one (the CLI: --cert and --key)".into()
        }
        Some(rustls::Error::AlertReceived(A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::DecryptError)) => {
            "TLS handshake failed: the server refused our client certificate (not signed by a CA it trusts, or expired)".into()
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("TLS handshake failed: the server sent the alert '{}'", alert_text(*alert))
        }
        Some(rustls::Error::NoCertificatesPresented) => {
            "TLS handshake failed: the peer presented no certificate".into()
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::ConnectionReset => {
            "TLS handshake failed: the server closed the connection (it may require a client certificate, or not speak TLS)".into()
        }
        None => format!("TLS handshake failed: {e}"),
    }
}

/// An alert's name in lower case words ("certificate required").
fn alert_text(alert: rustls::AlertDescription) -> String {
    let name = format!("{alert:?}");
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A name rustls lists as presented by a certificate (`DnsName("a.example")`,
/// `IpAddress(127.0.0.1)`), as the bare name.
fn presented_name(presented: &str) -> String {
    match (presented.find('('), presented.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            presented[open + 1..close].trim_matches('"').to_owned()
        }
        _ => presented.to_owned(),
    }
}

/// Why a certificate was rejected, in plain words with the next step.
pub fn describe_certificate_error(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::Expired | C::ExpiredContext { .. } => {
            "it has expired; the server needs a renewed certificate".into()
        }
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "it is not valid yet (check the clocks of both machines)".into()
        }
        C::UnknownIssuer => {
            "it is not signed by a trusted CA; give the CA that signed it with --ca, or the \
             server's own certificate if it is self-signed"
                .into()
        }
        C::NotValidForName => {
            "it is not valid for this name; connect by a name it lists, or use --server-name".into()
        }
        C::NotValidForNameContext {
            expected,
            presented,
        } => {
            let expected = match expected {
                ServerName::DnsName(d) => d.as_ref().to_owned(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                _ => "the target".to_owned(),
            };
            if presented.is_empty() {
                format!(
                    "it is not valid for {expected}: it lists no names (no subjectAltName); \
                     make one with subjectAltName, or give it to --ca to pin it"
                )
            } else {
                format!(
                    "it is not valid for {expected}, only for {}; connect by one of those \
                     names, or use --server-name",
                    presented
                        .iter()
                        .map(|p| presented_name(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
        C::BadSignature | C::BadEncoding => "it is malformed or its signature is wrong".into(),
        C::Revoked => "it has been revoked".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "it is not meant for TLS servers (extended key usage)".into()
        }
        C::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
            "it is a CA certificate used as the server's own certificate; give that exact \
             certificate to --ca to pin it, or have the server use a certificate signed by the CA"
                .into()
        }
        C::UnhandledCriticalExtension => {
            "it has a critical extension this client does not understand".into()
        }
        C::UnknownRevocationStatus
        | C::ExpiredRevocationList
        | C::ExpiredRevocationListContext { .. } => {
            "its revocation status cannot be checked".into()
        }
        C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "it is signed with an algorithm this client does not support".into()
        }
        C::ApplicationVerificationFailure => "the application's own check refused it".into(),
        _ => "it failed verification".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the default provider, a handshake offers the post-quantum hybrid first.
    #[cfg(feature = "aws-lc")]
    #[test]
    fn the_default_provider_prefers_post_quantum_key_exchange() {
        let groups: Vec<_> = provider().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups.first(),
            Some(&rustls::NamedGroup::X25519MLKEM768),
            "{groups:?}"
        );
    }

    /// The system's store is read once: every later call shares the first configuration
    /// (it was read and parsed again on every call, 2.5 ms of CPU each).
    #[test]
    fn the_system_roots_are_read_once_per_process() {
        let (Ok(first), Ok(second)) = (
            ClientTls::with_system_roots(),
            ClientTls::with_system_roots(),
        ) else {
            // A machine without root certificates: nothing to cache.
            assert!(ClientTls::with_system_roots()
                .unwrap_err()
                .to_string()
                .contains("no usable system root certificates"));
            return;
        };
        assert!(Arc::ptr_eq(&first.config, &second.config));
        let named = second.with_server_name("example.org");
        assert!(Arc::ptr_eq(&first.config, &named.config));
        assert_eq!(first.server_name, None);
    }
}
