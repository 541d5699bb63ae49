//! Throwaway PKIs for TLS tests: a CA and leaf certificates made with rcgen.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A directory of PEM files for one test.
pub struct Pki {
    dir: PathBuf,
}

pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "peng3dnet-tls-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    pub fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    pub fn ca(&self, name: &str) -> (Ca, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let path = self.write(&format!("{name}.pem"), &cert.pem());
        (Ca { cert, key }, path)
    }

    /// A leaf certificate for `names`, signed by `ca`; returns (cert file, key file).
    pub fn leaf(&self, file: &str, ca: &Ca, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
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

impl Pki {
    /// A self-signed certificate like `openssl req -x509 -newkey rsa:2048 -nodes -subj
    /// /CN=localhost` makes: a CA certificate whose only name is its CN (no
    /// subjectAltName); returns (cert file, key file).
    pub fn self_signed_cn_only(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (
            self.write(&format!("{file}.crt"), &cert.pem()),
            self.write(&format!("{file}.key"), &key.serialize_pem()),
        )
    }

    /// A leaf certificate for `names`, signed by `ca`, valid only from 2100 on.
    pub fn leaf_not_yet_valid(&self, file: &str, ca: &Ca, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2100, 1, 1);
        params.not_after = rcgen::date_time_ymd(2101, 1, 1);
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
