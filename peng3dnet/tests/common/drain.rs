//! Ping clients that keep pings in flight until the server shuts down, and account for
//! every pong: the graceful-shutdown stress tests of the library and of `serve`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peng3dnet::codec::Codec;
use peng3dnet::frame::Frame;
use peng3dnet::protocol::{ids, settype_frame};
use peng3dnet::value::{self, get, map};
use peng3dnet::ConnType;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_util::codec::Framed;

/// Bound on any single wait of a pinger; a healthy run is far quicker.
const STEP: Duration = Duration::from_secs(30);

/// Pings kept in flight per client once it runs.
const IN_FLIGHT: usize = 3;

/// A raw ping session on a plain socket.
pub struct Pinger {
    framed: Framed<TcpStream, Codec>,
    next_seq: u64,
    pongs: u64,
    max_counted: u64,
}

/// How a pinger's session ended, when it ended well: the server's closeconn after all of
/// its pongs, then end of stream.
#[derive(Debug)]
pub struct Drained {
    /// Pongs received.
    pub pongs: u64,
    /// The highest `pings` counter the server reported in a pong (the CLI's built-in
    /// dynamic data), 0 if it reports none.
    pub max_counted: u64,
    /// The closeconn reason.
    pub reason: String,
}

impl Pinger {
    /// Connects, reads the hello, sets the type to `ping`, sends `IN_FLIGHT` pings and
    /// waits for the first pong: the session is established and counted by the server.
    pub async fn connect(addr: SocketAddr, source: IpAddr) -> Result<Pinger, String> {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let tcp = timeout(STEP, socket.connect(addr))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        let mut pinger = Pinger {
            framed: Framed::new(tcp, Codec::default()),
            next_seq: 0,
            pongs: 0,
            max_counted: 0,
        };
        let hello = pinger.next().await?.ok_or("closed before hello")?;
        if hello.id != ids::HELLO {
            return Err(format!("first frame has id {}", hello.id));
        }
        pinger.send(settype_frame(&ConnType::Ping)).await?;
        for _ in 0..IN_FLIGHT {
            pinger.ping().await?;
        }
        let first = pinger.next().await?.ok_or("closed before the first pong")?;
        pinger.account(&first)?;
        Ok(pinger)
    }

    /// Keeps `IN_FLIGHT` pings in flight (a new ping for every pong) until the server's
    /// closeconn, then expects end of stream and closes.
    pub async fn run_until_close(mut self) -> Result<Drained, String> {
        loop {
            let frame = self.next().await?.ok_or(format!(
                "end of stream without closeconn after {} pongs",
                self.pongs
            ))?;
            if frame.id == ids::CLOSECONN {
                let body = value::decode(&frame.body, 16).map_err(|e| e.to_string())?;
                let reason = get(&body, "reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("(none)")
                    .to_owned();
                if let Some(extra) = self.next().await? {
                    return Err(format!("frame {} after closeconn", extra.id));
                }
                return Ok(Drained {
                    pongs: self.pongs,
                    max_counted: self.max_counted,
                    reason,
                });
            }
            self.account(&frame)?;
            self.ping().await?;
        }
    }

    fn account(&mut self, frame: &Frame) -> Result<(), String> {
        if frame.id != ids::PONG {
            return Err(format!("frame {} where a pong was due", frame.id));
        }
        self.pongs += 1;
        let body = value::decode(&frame.body, 16).map_err(|e| e.to_string())?;
        if let Some(n) = get(&body, "pings").and_then(|n| n.as_u64()) {
            self.max_counted = self.max_counted.max(n);
        }
        Ok(())
    }

    async fn ping(&mut self) -> Result<(), String> {
        let message = map([("seq", self.next_seq.into())]);
        self.next_seq += 1;
        self.send(Frame::new(ids::PING, value::encode(&message)))
            .await
    }

    async fn send(&mut self, frame: Frame) -> Result<(), String> {
        timeout(STEP, self.framed.send(frame))
            .await
            .map_err(|_| "send timed out".to_owned())?
            .map_err(|e| format!("send: {e}"))
    }

    async fn next(&mut self) -> Result<Option<Frame>, String> {
        match timeout(STEP, self.framed.next()).await {
            Err(_) => Err(format!("nothing received for {STEP:?}")),
            Ok(None) => Ok(None),
            Ok(Some(Ok(frame))) => Ok(Some(frame)),
            Ok(Some(Err(e))) => Err(format!("receive: {e}")),
        }
    }
}

/// Loopback addresses the pingers come from: as many clients as these, not one host
/// holding a thousand connections, which the default per-address cap refuses.
const SOURCES: u8 = 32;

/// Connects `n` pingers concurrently, from [`SOURCES`] loopback addresses in turn.
pub async fn connect_many(addr: SocketAddr, n: usize) -> Vec<Pinger> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let source = IpAddr::from([127, 0, 0, 1 + (i % usize::from(SOURCES)) as u8]);
        tasks.spawn(Pinger::connect(addr, source));
    }
    let mut pingers = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        pingers.push(joined.unwrap().expect("pinger connects"));
    }
    pingers
}

/// Runs every pinger until the server closes it; returns the outcomes.
pub fn run_all(pingers: Vec<Pinger>) -> tokio::task::JoinSet<Result<Drained, String>> {
    let mut tasks = tokio::task::JoinSet::new();
    for pinger in pingers {
        tasks.spawn(pinger.run_until_close());
    }
    tasks
}

/// Collects the outcomes: the total of pongs, the highest server counter seen, and one
/// line per client that lost something (no closeconn, another reason, an error).
pub async fn tally(
    mut tasks: tokio::task::JoinSet<Result<Drained, String>>,
) -> (u64, u64, Vec<String>) {
    let (mut pongs, mut max_counted, mut lost) = (0, 0, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(d) if d.reason == "servershutdown" => {
                pongs += d.pongs;
                max_counted = max_counted.max(d.max_counted);
            }
            Ok(d) => lost.push(format!("closed with {} after {} pongs", d.reason, d.pongs)),
            Err(e) => lost.push(e),
        }
    }
    (pongs, max_counted, lost)
}
