//! `peng3dnet exporter` under attack, on loopback (the third security audit's findings on it):
//! scrapes that ask for year-long probes of silent ports, scrapers that leave mid-probe,
//! targets outside `--allow`, foreign services' banners, a certificate store read on every
//! probe, and a target whose pong is megabytes. Nothing sleeps to synchronise: each wait
//! polls with a deadline.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");
#[path = "support/proc.rs"]
mod proc;
use proc::{Proc, LIMIT};

#[path = "support/tempdir.rs"]
mod tempdir;
use tempdir::TempDir;

/// HTTP GET with a test's plain client: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("no answer to {path} within {LIMIT:?}: {e}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of an unlabelled sample in a text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `peng3dnet exporter` on a free loopback port with `args`; its address.
fn exporter(args: &[&str]) -> (Proc, String) {
    let mut all = vec!["exporter", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let proc = Proc::spawn(BIN, &all);
    let addr = proc.line("listening on ");
    (proc, addr)
}

/// `peng3dnet serve` on a free loopback port with `args`; its address.
fn serve(args: &[&str]) -> (Proc, String) {
    let mut all = vec!["serve", "--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let proc = Proc::spawn(BIN, &all);
    let addr = proc.line("listening on ");
    (proc, addr)
}

/// A listener that accepts every connection and keeps it, writing `greeting` first (a
/// silent port when it is empty); the connections it holds.
fn holding_listener(greeting: &'static [u8]) -> (String, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            if !greeting.is_empty() {
                let _ = stream.write_all(greeting);
            }
            keep.lock().unwrap().push(stream);
        }
    });
    (addr, held)
}

/// Polls `what` until it holds, for at most [`LIMIT`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "not within {LIMIT:?}: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Finding 2: `timeout=31536000` held a probe slot for a year, so as many requests as
/// slots to a silent port made every other probe fail "no free probe slot". With
/// `--max-timeout 1` each ends within a second, and the slots are free again.
#[test]
fn year_long_probes_of_a_silent_port_end_at_the_maximum_timeout() {
    let (silent, _held) = holding_listener(b"");
    let (_server, real) = serve(&[]);
    let (_exporter, addr) = exporter(&["--max-concurrent", "2", "--max-timeout", "1"]);
    let started = Instant::now();
    let attacks: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            let path = format!("/probe?target={silent}&timeout=31536000");
            thread::spawn(move || get(&addr, &path))
        })
        .collect();
    for attack in attacks {
        let (status, body) = attack.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(sample(&body, "probe_success"), Some(0.0), "{body}");
        assert!(body.contains("kind=\"timeout\""), "{body}");
        let took = sample(&body, "probe_duration_seconds").unwrap();
        assert!((0.9..3.0).contains(&took), "{took} s: {body}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The slots are free: a real server's probe runs at once.
    let (status, body) = get(&addr, &format!("/probe?target={real}&timeout=5"));
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "probe_success"), Some(1.0), "{body}");
}

/// Finding 2: a scraper that leaves mid-probe made hyper drop the probe, and the
/// in-flight gauge kept counting it for good.
#[test]
fn scrapers_that_leave_take_their_probes_out_of_the_in_flight_gauge() {
    let (silent, held) = holding_listener(b"");
    let (_exporter, addr) = exporter(&[]);
    let path = format!("/probe?target={silent}&timeout=25");
    let scrapers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    let in_flight = || {
        let (_, own) = get(&addr, "/metrics");
        sample(&own, "peng3dnet_exporter_probes_in_flight")
    };
    wait_until("4 probes in flight", || in_flight() == Some(4.0));
    wait_until("4 connections to the silent port", || {
        held.lock().unwrap().len() == 4
    });
    drop(scrapers);
    wait_until("the gauge back at 0", || in_flight() == Some(0.0));
    // The abandoned probes closed their connections to the target too.
    for mut stream in held.lock().unwrap().drain(..) {
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(stream.read(&mut buf), Ok(0) | Err(_)));
    }
}

/// A listener that counts (by accepting without blocking) connections made to it.
struct Counting(TcpListener);

impl Counting {
    fn new() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Counting(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// Connections made so far: the kernel completes a connect before the connecting
    /// side learns of it, so any connection the exporter made before answering is here.
    fn connections(&self) -> usize {
        std::iter::from_fn(|| self.0.accept().ok()).count()
    }
}

/// Finding 9: the exporter probed whatever a scraper named (an internal service, a cloud
/// metadata address). With `--allow`, a target outside every rule is answered 403 and
/// never connected to, whether named by address or by a name that resolves outside.
#[test]
fn targets_outside_allow_get_403_and_are_never_connected_to() {
    let listener = Counting::new();
    let port = listener.port();
    let (_exporter, addr) = exporter(&["--allow", "192.0.2.0/24", "--allow", "*.example.org"]);
    for target in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        let (status, body) = get(&addr, &format!("/probe?target={target}&timeout=2"));
        assert_eq!(status, 403, "{target}: {body}");
        assert!(
            body.contains("outside the exporter's --allow rules; it was not probed"),
            "{body}"
        );
    }
    assert_eq!(
        listener.connections(),
        0,
        "a refused target was connected to"
    );
    let (_, own) = get(&addr, "/metrics");
    assert!(
        own.contains("peng3dnet_exporter_probes_total{result=\"forbidden\"} 3"),
        "{own}"
    );

    // Targets inside the rules are probed as before, by address or by a name that
    // resolves inside (localhost: its 127.0.0.1 only, not its ::1).
    let (_server, real) = serve(&[]);
    let real_port = real.rsplit(':').next().unwrap();
    let (_allowed, addr) = exporter(&["--allow", "127.0.0.0/8"]);
    for target in [real.clone(), format!("localhost:{real_port}")] {
        let (status, body) = get(&addr, &format!("/probe?target={target}&timeout=5"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            sample(&body, "probe_success"),
            Some(1.0),
            "{target}: {body}"
        );
    }
    // A bad rule is refused at start, in a sentence.
    let out = std::process::Command::new(BIN)
        .args(["exporter", "--allow", "10.0.0.0/40"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a network"), "{stderr}");
}

/// Finding 9: a probe of an SSH port returned the whole `SSH-2.0-OpenSSH_...` banner, so
/// the exporter told whoever could reach it which software ran where. Now the reason
/// shows the first 8 bytes, enough to name the protocol.
#[test]
fn a_foreign_banner_is_shown_by_a_short_escaped_prefix_only() {
    static BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n\
        tail-tail-tail-tail-tail-tail-tail-tail-tail-tail-tail-tail-tail-tail-tail-tail\r\n\
        \x1b[2J\"} 1\nforged_metric 1\n";
    let (ssh, _held) = holding_listener(BANNER);
    let (_exporter, addr) = exporter(&[]);
    let (status, body) = get(&addr, &format!("/probe?target={ssh}&timeout=5"));
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "probe_success"), Some(0.0), "{body}");
    assert!(
        body.contains(
            "probe_peng3dnet_failure_info{kind=\"not_peng3dnet\",reason=\"not a peng3dnet \
             server: it sent 'SSH-2.0-...', an SSH banner\"} 1"
        ),
        "{body}"
    );
    for leak in ["OpenSSH", "Debian", "tail", "forged_metric", "\x1b"] {
        assert!(!body.contains(leak), "{leak:?} in {body}");
    }
}

/// A CA and a certificate for `localhost` signed by it: (CA file, cert file, key file).
fn pki(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "exporter attacks CA");
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (
        dir.write("ca.pem", &ca.pem()),
        dir.write("server.crt", &leaf.pem()),
        dir.write("server.key", &key.serialize_pem()),
    )
}

/// Finding 10: `tls=1` read and parsed the system's certificate store again for every
/// probe (2.5 ms of CPU each). The store (here `SSL_CERT_FILE`) is now read once: after
/// the file is emptied, probes still verify against what was read, where they failed
/// "no usable system root certificates" when each probe read it.
#[test]
fn tls_probes_read_the_system_roots_once() {
    let dir = TempDir::new("roots");
    let (ca, cert, key) = pki(&dir);
    let (_server, real) = serve(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let port = real.rsplit(':').next().unwrap();
    let ssl_cert_file = format!("SSL_CERT_FILE={}", ca.display());
    let exporter = Proc::spawn(
        "env",
        &[&ssl_cert_file, BIN, "exporter", "--listen", "127.0.0.1:0"],
    );
    let addr = exporter.line("listening on ");
    let path = format!("/probe?target=localhost:{port}&tls=1&timeout=5");
    let (status, body) = get(&addr, &path);
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "probe_success"), Some(1.0), "{body}");
    std::fs::write(&ca, "").unwrap();
    for _ in 0..3 {
        let (status, body) = get(&addr, &path);
        assert_eq!(status, 200, "the store was read again: {body}");
        assert_eq!(sample(&body, "probe_success"), Some(1.0), "{body}");
    }
}

/// Finding 11: a probe buffered whatever pong a target sent, up to the library's 8 MiB
/// (270 MiB at 32 probes at once). A probe now refuses a reply over 64 KiB at its
/// header, and fails with a reason that says so.
#[test]
fn a_pong_of_megabytes_fails_the_probe() {
    let dir = TempDir::new("huge-pong");
    // 4 MiB of hex digits from a small generator: compression halves it at best.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let pad: String = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x & 15) as u32, 16).unwrap()
        })
        .collect();
    let data = dir.write("big.json", &format!("{{\"pad\": \"{pad}\"}}"));
    drop(pad);
    let (_hostile, huge) = serve(&["--data-file", data.to_str().unwrap()]);
    let (_small, real) = serve(&["--data", "name=lobby"]);
    let (_exporter, addr) = exporter(&[]);
    let (status, body) = get(&addr, &format!("/probe?target={huge}&timeout=10"));
    assert_eq!(status, 200);
    assert_eq!(
        sample(&body, "probe_success"),
        Some(0.0),
        "{}",
        &body[..body.len().min(2000)]
    );
    assert!(
        body.contains(
            "kind=\"protocol\",reason=\"the server's reply is larger than a probe accepts (64 KiB"
        ),
        "{}",
        &body[..body.len().min(2000)]
    );
    // A real server's pong fits.
    let (_, body) = get(&addr, &format!("/probe?target={real}&timeout=5"));
    assert_eq!(sample(&body, "probe_success"), Some(1.0), "{body}");
    assert!(
        body.contains("probe_peng3dnet_data_info{name=\"lobby\"} 1"),
        "{body}"
    );
}
