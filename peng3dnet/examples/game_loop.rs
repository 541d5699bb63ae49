//! Embedding a pingable server in a synchronous game loop: 20 ticks per second, the
//! player count published every tick, a server browser's ping seeing it change.
//!
//! No async code: `blocking::Server` runs the server on a thread of its own, and
//! `PingResponder::set` publishes one key without locking the ping path. The "browser"
//! here is the blocking ping client on another thread.
//!
//! Run with `cargo run --example game_loop` (it stops by itself after 20 ticks).

use std::time::{Duration, Instant};

use peng3dnet::blocking;
use peng3dnet::ping::PingOptions;
use peng3dnet::value::{map, Value};
use peng3dnet::{PingResponder, Server};

const TICK: Duration = Duration::from_millis(50);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let responder = PingResponder::new().with_static_data(map([
        ("name", "example arena".into()),
        ("maxplayers", 16.into()),
    ]));
    let server =
        blocking::Server::bind(Server::builder().pingable(responder.clone()), "127.0.0.1:0")?;
    let target = server.local_addr().to_string();
    println!("serving on {target}");

    let mut players = 0u64;
    let mut next_tick = Instant::now();
    for tick in 0..20u64 {
        // The game's own work: players come and go.
        players = (players + tick % 3) % 16;
        responder.set("players", players.into());
        responder.set("tick", tick.into());

        // Every fifth tick, a "server browser" pings us from another thread.
        if tick % 5 == 0 {
            let target = target.clone();
            let reply =
                std::thread::spawn(move || blocking::ping_server(&target, &PingOptions::default()))
                    .join()
                    .expect("the browser thread")?;
            let seen = reply.get("players").and_then(Value::as_u64);
            println!(
                "tick {tick}: browser sees {seen:?} players in {:.3} ms",
                reply.delay.as_secs_f64() * 1e3
            );
            assert_eq!(seen, Some(players), "the pong carries this tick's data");
        }

        // Keep the tick rate: sleep until the next tick is due.
        next_tick += TICK;
        std::thread::sleep(next_tick.saturating_duration_since(Instant::now()));
    }
    server.shutdown();
    println!("stopped after 20 ticks");
    Ok(())
}
