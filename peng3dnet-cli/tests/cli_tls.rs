//! The CLI's TLS flags: `serve --tls-cert/--tls-key` and `ping --ca/--insecure/--tls`.

#[path = "../../peng3dnet/tests/common/mod.rs"]
mod common;

use common::pki::Pki;

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

/// The error record of a failed `ping -c 1 --json`.
fn json_error(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let mut all: Vec<&std::ffi::OsStr> = vec!["--json".as_ref()];
    all.extend_from_slice(args);
    let out = cli_ping(&all);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "error")
        .unwrap_or_else(|| panic!("no error record in {stdout}"))
}

#[test]
fn pinging_with_or_without_tls_by_mistake_says_what_to_change() {
    let pki = Pki::new("cli-mistake");
    let (ca, ca_file) = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost"], false);
    let tls = ServeProcess::start(&[
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ]);
    let plain = ServeProcess::start(&[]);

    let started = std::time::Instant::now();
    let e = json_error(&[format!("localhost:{}", tls.1).as_ref()]);
    assert_eq!(e["kind"], "tls_required", "{e}");
    assert_eq!(e["message"], "the server requires TLS: add --tls", "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));

    let e = json_error(&[
        "--ca".as_ref(),
        ca_file.as_os_str(),
        format!("localhost:{}", plain.1).as_ref(),
    ]);
    assert_eq!(e["kind"], "tls_not_used", "{e}");
    assert_eq!(
        e["message"], "the server does not use TLS (its answer is not a TLS record): drop --tls",
        "{e}"
    );
}

#[test]
fn the_certificate_everyone_makes_first_works_when_given_to_ca() {
    let pki = Pki::new("cli-openssl-like");
    let (cert, key) = pki.self_signed_cn_only("cert", "localhost");
    let serve = ServeProcess::start(&[
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ]);
    let out = cli_ping(&[
        "--tls".as_ref(),
        "--ca".as_ref(),
        cert.as_os_str(),
        format!("localhost:{}", serve.1).as_ref(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_names_a_key_that_does_not_match_its_certificate() {
    let pki = Pki::new("cli-keymismatch");
    let (cert, _) = pki.self_signed_cn_only("cert", "localhost");
    let (_, other_key) = pki.self_signed_cn_only("other", "localhost");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peng3dnet"))
        .args(["serve", "--bind", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&other_key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot serve over TLS: the private key {} does not match the certificate {}: give \
             the key the certificate was made with",
            other_key.display(),
            cert.display()
        )),
        "{stderr}"
    );
}
