//! Shared by the master's tests: a temporary directory, a master on loopback, a small
//! HTTP client that connects from a chosen loopback address (the master lists the
//! address an announce comes from), and polling with a deadline.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use peng3dnet::value::map;
use peng3dnet::{PingResponder, Server};
use peng3dnet_master::settings::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "peng3dnet-master-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings for a test master: SQLite in `dir`, a free loopback port, short intervals.
pub fn settings(dir: &TempDir) -> Settings {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Settings {
        listen: "127.0.0.1:0".into(),
        db: format!("sqlite:{}", dir.0.join("master.db").display())
            .parse()
            .unwrap(),
        refresh: Duration::from_millis(500),
        drop_after: Duration::from_secs(2),
        down_after: 2,
        ping_timeout: Duration::from_secs(1),
        ping_spacing: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        master_id: "test".into(),
        ..Settings::default()
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request over its own connection (`Connection: close`) from `source`.
pub async fn request(
    source: IpAddr,
    master: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(master))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {master}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    // A refusal may come (and the connection close) before all is written: the answer
    // is what counts.
    let _ = stream.write_all(&all).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("answer timed out")
        .expect("reading the answer failed");
    parse_answer(&raw)
}

pub fn parse_answer(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Answer {
        status,
        headers,
        body,
    }
}

/// GET from 127.0.0.1.
pub async fn get(master: SocketAddr, path: &str) -> Answer {
    request(ip("127.0.0.1"), master, "GET", path, &[], b"").await
}

/// POST /announce of `port` from `source`.
pub async fn announce(source: IpAddr, master: SocketAddr, body: serde_json::Value) -> Answer {
    request(
        source,
        master,
        "POST",
        "/announce",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A library server on `ip`, port 0, with a name.
pub async fn server(ip: IpAddr, name: &str) -> Server {
    Server::builder()
        .pingable(PingResponder::new().with_static_data(map([
            ("name", name.into()),
            ("motd", format!("motd of {name}").into()),
            ("maxclients", 10u32.into()),
            ("clients", 3u32.into()),
            ("version", "test-1".into()),
        ])))
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap()
}

/// Polls `check` until it gives `Some`, or panics after `within` naming `what`.
pub async fn until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The servers of `GET /servers` (all of them).
pub async fn servers(master: SocketAddr) -> Vec<serde_json::Value> {
    let answer = get(master, "/servers?limit=10000").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["servers"].as_array().unwrap().clone()
}
