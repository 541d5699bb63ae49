//! Helpers shared by the integration tests of the workspace's crates (the CLI crate's
//! tests include this file by path): the Python reference peer, the test registry, and
//! throwaway certificates.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use peng3dnet::Registry;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

pub mod drain;
pub mod pki;

pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);

pub fn ref_python() -> String {
    match std::env::var("PENG3DNET_REF_PYTHON") {
        Ok(p) if std::path::Path::new(&p).exists() => p,
        Ok(p) => panic!("PENG3DNET_REF_PYTHON={p} does not exist; run `bash scripts/test.sh`, which creates the reference venv"),
        Err(_) => panic!(
            "PENG3DNET_REF_PYTHON is not set: the interoperability tests need the Python reference. \
             Run the tests with `bash scripts/test.sh`, which installs it into .venv-ref"
        ),
    }
}

/// A script of the interop peer, wherever the test crate lives in the workspace.
pub fn script(name: &str) -> String {
    format!(
        "{}/../peng3dnet/tests/interop/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A registry holding these packet names, in order (ids from 64).
pub fn registry_of(names: &[&str]) -> Registry {
    let mut r = Registry::new();
    for name in names {
        r.register(name).unwrap();
    }
    r
}

/// The registry the interop peers (tests/interop/*.py) register.
pub fn registry() -> Registry {
    registry_of(&["interop:msg", "interop:big"])
}

/// The Python reference server, stopped (stdin closed, then killed if need be) on drop.
pub struct RefServer {
    child: Child,
    port: u16,
}

impl RefServer {
    pub async fn start() -> RefServer {
        let mut child = Command::new(ref_python())
            .arg(script("ref_server.py"))
            .args(["--port", "0"])
            .env("PYGLET_SHADOW_WINDOW", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the Python reference server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = timeout(PEER_TIMEOUT, lines.next_line())
            .await
            .expect("reference server did not print READY in time")
            .unwrap()
            .expect("reference server exited before READY");
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected line from reference server: {line:?}"));
        RefServer { child, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = timeout(PEER_TIMEOUT, self.child.wait()).await;
        assert!(
            matches!(status, Ok(Ok(s)) if s.success()),
            "reference server did not exit cleanly: {status:?}"
        );
    }
}

/// Runs the reference client against `port`; returns its JSON line.
pub async fn ref_client(port: u16, mode: &str) -> serde_json::Value {
    let out = timeout(
        PEER_TIMEOUT,
        Command::new(ref_python())
            .arg(script("ref_client.py"))
            .args(["--port", &port.to_string(), "--mode", mode])
            .env("PYGLET_SHADOW_WINDOW", "0")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("reference client did not finish in time")
    .expect("cannot run the reference client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "reference client printed no JSON ({e}): stdout {stdout:?} stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "reference client failed: {json} stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    json
}
