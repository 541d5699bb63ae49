//! Pings a server of its own, through the library's async and blocking APIs, with TLS
//! types in reach: what a dependent compiles.

use peng3dnet::ping::{ping_server, PingOptions};
use peng3dnet::value::map;
use peng3dnet::{PingResponder, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .pingable(PingResponder::new().with_static_data(map([("name", "downstream".into())])))
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    let reply = ping_server(addr, &PingOptions::default()).await?;
    let blocking = tokio::task::spawn_blocking(move || {
        peng3dnet::blocking::ping_server(addr, &PingOptions::default())
    })
    .await??;
    let _tls: Option<peng3dnet::tls::ClientTls> = None;
    println!(
        "{} answered in {:?} (blocking: {:?})",
        reply.name().unwrap_or("?"),
        reply.delay,
        blocking.delay
    );
    server.shutdown().await;
    Ok(())
}
