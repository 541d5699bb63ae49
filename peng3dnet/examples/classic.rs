//! A classic server and client exchanging application packets.
//!
//! Run with `cargo run --example classic`.

use peng3dnet::client::Client;
use peng3dnet::server::{ClientHandle, Handler, Server};
use peng3dnet::value::{get, map, Value};
use peng3dnet::{Packet, Registry};

/// Both sides register the same packet names; the handshake syncs their ids.
fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("chat:msg.say").expect("fresh registry");
    registry.register("chat:msg.said").expect("fresh registry");
    registry
}

/// Answers every `chat:msg.say` with `chat:msg.said`, numbering the client's messages.
struct Chat;

impl Handler for Chat {
    type State = u64; // messages from this client so far

    fn on_packet(&self, client: &ClientHandle, count: &mut u64, packet: Packet) {
        *count += 1;
        let text = get(&packet.body, "text").cloned().unwrap_or(Value::Nil);
        let reply = map([("n", (*count).into()), ("text", text)]);
        if let Err(e) = client.send("chat:msg.said", &reply) {
            eprintln!("cannot answer {}: {e}", client.addr());
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .registry(registry())
        .handler(Chat)
        .bind("127.0.0.1:0")
        .await?;

    let mut client = Client::builder()
        .registry(registry())
        .connect(&server.local_addr().to_string())
        .await?;
    for text in ["hello", "world"] {
        client
            .send("chat:msg.say", &map([("text", text.into())]))
            .await?;
        let reply = client.recv().await?;
        println!("{:?}: {}", reply.name, reply.body);
    }
    client.close("bye").await?;
    server.shutdown().await;
    Ok(())
}
