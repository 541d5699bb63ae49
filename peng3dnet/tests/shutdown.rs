//! Graceful shutdown under load: with many clients connected and pings in flight,
//! [`Server::shutdown`] gives every client closeconn `servershutdown`, answers every ping
//! it read before, and returns within its drain bound.

mod common;

use std::time::Instant;

use common::drain::{connect_many, run_all, tally};
use peng3dnet::config::Config;
use peng3dnet::{PingResponder, Server};

const CLIENTS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_thousand_pinging_clients_loses_nothing() {
    let config = Config::default();
    let drain_bound = config.limits.write_timeout + config.limits.close_linger;
    let server = Server::builder()
        .config(config)
        .pingable(PingResponder::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let pingers = connect_many(server.local_addr(), CLIENTS).await;
    assert_eq!(server.client_count(), CLIENTS);
    let outcomes = run_all(pingers);
    let started = Instant::now();
    server.shutdown().await;
    let took = started.elapsed();
    let (pongs, _, lost) = tally(outcomes).await;
    assert!(
        lost.is_empty(),
        "{} of {CLIENTS} lost: {lost:?}",
        lost.len()
    );
    // Every ping the server answered (counted before its pong is written) reached its
    // client before the closeconn.
    assert_eq!(
        pongs,
        server
            .stats()
            .pings
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(pongs >= CLIENTS as u64);
    assert!(took < drain_bound, "shutdown took {took:?}");
    assert_eq!(server.client_count(), 0);
}
