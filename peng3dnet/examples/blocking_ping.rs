//! Pings a server from synchronous code, without an async runtime: a launcher or a game's
//! main loop. One ping, then a session of three.
//!
//! Run with `cargo run --example blocking_ping -- HOST:PORT`.

use std::time::Duration;

use peng3dnet::blocking::{ping_server, PingSession};
use peng3dnet::ping::PingOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "localhost:8080".into());
    let options = PingOptions {
        timeout: Duration::from_secs(5),
        ..PingOptions::default()
    };
    let reply = ping_server(&target, &options)?;
    println!(
        "{target}: {:.3} ms, {}",
        reply.delay.as_secs_f64() * 1e3,
        reply.server_data()
    );
    let mut session = PingSession::connect(&target, &options)?;
    for _ in 0..3 {
        let reply = session.ping()?;
        println!(
            "seq={} {:.3} ms",
            reply.seq,
            reply.delay.as_secs_f64() * 1e3
        );
    }
    session.close();
    Ok(())
}
