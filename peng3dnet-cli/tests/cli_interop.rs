//! The CLI against the real Python reference (peng3dnet 0.1.3a0).

#[path = "../../peng3dnet/tests/common/mod.rs"]
mod common;

use common::{RefServer, PEER_TIMEOUT};
use tokio::process::Command;
use tokio::time::timeout;

/// Runs the `peng3dnet` binary with `args`, bounded in time.
async fn cli(args: &[&str]) -> std::process::Output {
    timeout(
        PEER_TIMEOUT,
        Command::new(env!("CARGO_BIN_EXE_peng3dnet"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the CLI did not finish in time")
    .expect("cannot run the CLI")
}

#[tokio::test]
async fn the_cli_pings_and_shows_the_python_server() {
    let server = RefServer::start().await;
    let addr = server.addr();
    for mode in [&[][..], &["--session"][..]] {
        let mut args = vec!["ping", "-c", "3", "-i", "0.2"];
        args.extend_from_slice(mode);
        args.push(&addr);
        let out = cli(&args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.matches(&format!("reply from {addr}: seq=")).count(),
            3,
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("--- {addr} ping statistics ---")),
            "{stdout}"
        );
        assert!(
            stdout.contains("3 packets transmitted, 3 received, 0% packet loss"),
            "{stdout}"
        );
    }
    let out = cli(&["status", "--json", &addr]).await;
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["type"], "status");
    assert_eq!(status["data"]["name"], "ref-server");
    assert_eq!(status["data"]["motd"], "hello");
    server.stop().await;
}
