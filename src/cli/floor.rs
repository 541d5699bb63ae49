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

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use peng3dnet::frame::Frame;
use peng3dnet::protocol::{hello_frame, ids, settype_frame, ConnType, PROTOVERSION, VERSION};
use peng3dnet::server::{ClientHandle, Handler, Server};
use peng3dnet::value::{self, map, Value};
use peng3dnet::{Packet, PingResponder, Registry};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::bench::ReadBuf;
use super::output::Out;
use super::serve::init_logging;
use super::{error, Exit};

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
    let mut out = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut peng3dnet::frame::FrameCodec::default(),
        frame,
        &mut out,
    )
    .expect("small frames encode");
    out.to_vec()
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
    let listener = match TcpListener::bind(&args.bind).await {
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
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(floor_connection(stream, wire.clone()));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = super::interrupted() => {}
    }
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
    init_logging("warn");
    let slot: Arc<Mutex<Option<Server>>> = Arc::default();
    let started = Instant::now();
    let provider_slot = slot.clone();
    // The same dynamic data as `serve`'s.
    let responder = PingResponder::new().with_dynamic(move |_request| {
        let server = provider_slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (clients, pings) = server.map_or((0, 0), |s| {
            (
                s.client_count() as u64,
                s.stats().pings.load(Ordering::Relaxed),
            )
        });
        let uptime = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        map([
            ("clients", clients.into()),
            ("uptime", Value::F64(uptime)),
            ("pings", pings.into()),
        ])
    });
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
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(server.clone());
    if Out
        .line(&format!("listening on {}", server.local_addr()))
        .is_err()
    {
        return Exit::System;
    }
    super::interrupted().await;
    server.shutdown().await;
    slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    Exit::Ok
}
