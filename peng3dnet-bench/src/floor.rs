//! Hidden benchmark servers: `floor` and `echo-serve`.
//!
//! `floor` is the floor of the comparison: a minimal tokio server that does the same round
//! trips as a peng3dnet server with pre-encoded bytes and no protocol logic. It sends the
//! hello; for every frame it reads it looks at the id only: settype (id 2) gets the
//! classic handshake unless its body is exactly the `ping` settype; a frame of id 64 gets
//! a fixed pong (of about the size of ours) on a ping connection and is echoed back as it
//! is on a classic one; closeconn (id 16) closes. Nothing is decoded, nothing checked.
//! It runs on the same runtime as `serve` (the default multi-thread runtime).
//!
//! `echo-serve` is our real server as `serve` runs it (same ping responder, same
//! dynamic data), plus a handler that answers every classic packet `interop:msg` with its
//! own body, for the `classic` mode of `bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use peng3dnet::frame::Frame;
use peng3dnet::protocol::{hello_frame, ids, settype_frame, ConnType, PROTOVERSION, VERSION};
use peng3dnet::server::{ClientHandle, Handler, Server};
use peng3dnet::value::{self, map, Value};
use peng3dnet::{Packet, PingResponder, Registry};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::bench::ReadBuf;
use peng3dnet_cli::output::Out;
use peng3dnet_cli::serve::{builtin_dynamic_data, init_logging};
use peng3dnet_cli::{error, Exit};

/// Name of the packet the benchmark servers echo (as `tests/interop/ref_server.py` does).
pub(crate) const ECHO_PACKET: &str = "interop:msg";

/// `floor` and `echo-serve` arguments.
#[derive(Debug, Args)]
pub struct BenchServerArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub bind: String,
}

/// The floor's pre-encoded frames.
struct FloorWire {
    hello: Vec<u8>,
    handshake: Vec<u8>,
    pong: Vec<u8>,
    settype_ping_body: Vec<u8>,
}

fn encode(frame: Frame) -> Vec<u8> {
    peng3dnet::frame::FrameCodec::default()
        .to_bytes(frame)
        .expect("small frames encode")
        .to_vec()
}

impl FloorWire {
    fn new() -> Self {
        let mut registry = Registry::new();
        registry.register(ECHO_PACKET).expect("one name registers");
        let handshake = value::encode(&map([
            ("version", VERSION.into()),
            ("protoversion", PROTOVERSION.into()),
            ("registry", registry.to_value()),
        ]));
        // What our server answers to bench's ping, with fixed numbers.
        let pong = value::encode(&map([
            (
                "oldmsg",
                map([("time", Value::F64(1.7e9)), ("x", Value::from(1))]),
            ),
            ("clients", Value::from(16)),
            ("uptime", Value::F64(12.345)),
            ("pings", Value::from(123_456)),
            (
                "peng3dnet",
                map([
                    ("version", VERSION.into()),
                    ("release", "0.1.3".into()),
                    ("protoversion", PROTOVERSION.into()),
                ]),
            ),
            (
                "servertiming",
                map([
                    ("recvtime", Value::F64(1.7e9)),
                    ("sendtime", Value::F64(1.7e9)),
                ]),
            ),
        ]));
        FloorWire {
            hello: encode(hello_frame()),
            handshake: encode(Frame::new(ids::HANDSHAKE, handshake)),
            pong: encode(Frame::new(ids::PONG, pong)),
            settype_ping_body: settype_frame(&ConnType::Ping).body.to_vec(),
        }
    }
}

async fn floor_connection(mut stream: TcpStream, wire: Arc<FloorWire>) {
    let _ = stream.set_nodelay(true);
    if stream.write_all(&wire.hello).await.is_err() {
        return;
    }
    let mut buf = ReadBuf::new(1024);
    let mut out: Vec<u8> = Vec::new();
    let mut classic = false;
    loop {
        match buf.fill(&mut stream).await {
            Ok(true) => {}
            _ => return,
        }
        loop {
            let frame = match buf.next_buffered() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return,
            };
            match frame.id {
                ids::SETTYPE => {
                    classic = buf.bytes(frame.body) != &wire.settype_ping_body[..];
                    if classic {
                        out.extend_from_slice(&wire.handshake);
                    }
                }
                ids::PING if !classic => out.extend_from_slice(&wire.pong),
                id if id >= 64 => out.extend_from_slice(buf.bytes(frame.frame)),
                ids::CLOSECONN => {
                    if !out.is_empty() {
                        let _ = stream.write_all(&out).await;
                    }
                    return;
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// `peng3dnet floor` (hidden).
pub(crate) async fn run_floor(args: BenchServerArgs) -> Exit {
    let mut interrupts = peng3dnet_cli::Interrupts::install();
    let listener = match peng3dnet::server::listen(args.bind.as_str(), 16_384).await {
        Ok(l) => l,
        Err(e) => {
            error(format!("cannot listen on {}: {e}", args.bind));
            return Exit::System;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            error(format!("cannot listen on {}: {e}", args.bind));
            return Exit::System;
        }
    };
    if Out.line(&format!("listening on {addr}")).is_err() {
        return Exit::System;
    }
    let wire = Arc::new(FloorWire::new());
    // The accept loop runs on a worker thread, as our server's does, so that connection
    // tasks are spawned onto the local run queue and not injected from outside.
    let accept = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(floor_connection(stream, wire.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
    interrupts.wait().await;
    accept.abort();
    Exit::Ok
}

/// Answers `interop:msg` with its own body.
struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_packet(&self, client: &ClientHandle, _state: &mut (), packet: Packet) {
        if let Some(name) = &packet.name {
            let _ = client.send(name, &packet.body);
        }
    }
}

/// `peng3dnet echo-serve` (hidden): `serve`'s server plus an `interop:msg` echo.
pub(crate) async fn run_echo(args: BenchServerArgs) -> Exit {
    let mut interrupts = peng3dnet_cli::Interrupts::install();
    init_logging("warn");
    let responder = PingResponder::new().with_dynamic(builtin_dynamic_data(Instant::now()));
    let mut registry = Registry::new();
    registry.register(ECHO_PACKET).expect("one name registers");
    let server = match Server::builder()
        .registry(registry)
        .handler(Echo)
        .pingable(responder)
        .bind(&args.bind)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            error(format!("cannot listen on {}: {e}", args.bind));
            return Exit::System;
        }
    };
    if Out
        .line(&format!("listening on {}", server.local_addr()))
        .is_err()
    {
        return Exit::System;
    }
    interrupts.wait().await;
    server.shutdown().await;
    Exit::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{execute, BenchArgs};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    async fn bench(args: &[&str]) -> crate::bench::Report {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .expect("valid arguments");
        execute(&cli.bench).await.expect("the load ran")
    }

    /// The floor on a free port, with our accept loop's structure.
    async fn floor() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let wire = Arc::new(FloorWire::new());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(floor_connection(stream, wire.clone()));
            }
        });
        addr
    }

    /// Our server as `echo-serve` runs it.
    async fn ours() -> Server {
        let mut registry = Registry::new();
        registry.register(ECHO_PACKET).unwrap();
        Server::builder()
            .registry(registry)
            .handler(Echo)
            .pingable(PingResponder::new())
            .bind("127.0.0.1:0")
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_mode_runs_without_errors_against_our_server_and_the_floor() {
        let server = ours().await;
        let targets = [server.local_addr().to_string(), floor().await];
        for target in &targets {
            for mode in ["transaction", "session", "classic"] {
                for threads in ["1", "2"] {
                    let report = bench(&[
                        target, "--mode", mode, "-c", "4", "-t", threads, "-n", "200",
                    ])
                    .await;
                    assert_eq!(report.ops, 200, "{mode} against {target}");
                    assert_eq!(report.errors_total, 0, "{mode}: {:?}", report.errors);
                }
            }
            let report = bench(&[target, "--mode", "idle", "-c", "20", "-d", "0.3"]).await;
            assert_eq!(report.established, Some(20), "idle against {target}");
            assert_eq!(report.errors_total, 0, "{:?}", report.errors);
            let report = bench(&[target, "-c", "3", "-d", "0.3", "--warmup", "0.1"]).await;
            assert!(report.ops > 0);
            assert_eq!(report.errors_total, 0, "{:?}", report.errors);
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_server_that_never_answers_costs_errors_not_a_hang() {
        // Accepts and then says nothing: every transaction waits for a hello that never
        // comes, and is counted as stalled when the run ends.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let started = std::time::Instant::now();
        let report = bench(&[&addr, "-c", "2", "-d", "1.2", "-W", "5"]).await;
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(report.ops, 0);
        assert_eq!(
            report.errors.get("stalled_hello"),
            Some(&2),
            "{:?}",
            report.errors
        );
    }
}
