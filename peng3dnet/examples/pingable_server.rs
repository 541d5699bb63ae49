//! A pingable server with static and dynamic data, and a ping of it.
//!
//! Run with `cargo run --example pingable_server`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use peng3dnet::ping::{ping_server, PingOptions};
use peng3dnet::value::{map, Value};
use peng3dnet::{PingResponder, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Dynamic data is computed per ping: here, how many pings this server answered.
    let answered = Arc::new(AtomicU64::new(0));
    let counter = answered.clone();
    let responder = PingResponder::new()
        .with_static_data(map([
            ("name", "example server".into()),
            ("motd", "Welcome!".into()),
        ]))
        .with_dynamic(move |request| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            map([
                ("pings_answered", n.into()),
                ("your_address", request.peer_addr.to_string().into()),
            ])
        });
    let server = Server::builder()
        .pingable(responder)
        .bind("127.0.0.1:0")
        .await?;
    println!("serving on {}", server.local_addr());

    let options = PingOptions {
        data: map([("client", "example".into())]),
        ..PingOptions::default()
    };
    for _ in 0..3 {
        let reply = ping_server(&server.local_addr().to_string(), &options).await?;
        println!(
            "{} answered in {:.3} ms (server busy {:?}): {}",
            reply.peer,
            reply.delay.as_secs_f64() * 1e3,
            reply.timings.server,
            reply.server_data()
        );
        assert_eq!(
            reply.get("name").and_then(Value::as_str),
            Some("example server")
        );
    }
    server.shutdown().await;
    Ok(())
}
