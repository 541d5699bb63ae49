//! The web page in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core (tests/browser/page.mjs): the page lists the servers, sorting and a
//! filter work, a server that stops turns down on the page without a reload. Screenshots
//! (desktop and phone widths) are saved under target/artifacts/.
//!
//! `.ci/run` installs chromium and the script's npm package. Without them the test is
//! skipped with a message, except under CI=true, where it fails.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

fn missing(what: &str) -> bool {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is missing (CI=true): .ci/run installs it"
    );
    eprintln!("skipped: {what} is missing");
    true
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the browser script said nothing for 60 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium_sorts_filters_and_shows_a_server_going_down() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() && missing("chromium (Debian package chromium)") {
        return;
    }
    if Command::new("node").arg("--version").output().is_err() && missing("node") {
        return;
    }
    if !here.join("node_modules/playwright-core").exists()
        && missing("playwright-core (npm ci in peng3dnet-master/tests/browser)")
    {
        return;
    }
    let dir = TempDir::new("browser");
    // Down after two failed pings (about a second), dropped only long after: the page,
    // reading the list every 3 s, must catch the row in its down state.
    let s = peng3dnet_master::settings::Settings {
        drop_after: Duration::from_secs(60),
        ..settings(&dir)
    };
    let running = peng3dnet_master::start(s).await.unwrap();
    let master = running.local_addr();
    let names = ["alpha", "bravo", "charlie", "delta", "echo"];
    let mut fleet = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let s = server(ip(&format!("127.0.10.{}", i + 1)), name).await;
        let a = announce(
            s.local_addr().ip(),
            master,
            json!({ "port": s.local_addr().port(), "tags": ["web"] }),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.text());
        fleet.push(s);
    }

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot: PathBuf = artifacts.join("master-page.png");
    let mut node = Command::new("node")
        .arg(here.join("page.mjs"))
        .arg(format!("http://{master}/"))
        .arg(&shot)
        .args(names)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot run node");
    let mut stdin = node.stdin.take().unwrap();
    let stdout = node.stdout.take().unwrap();
    // The script's lines, read off the runtime.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = next(&mut rx)
        .await
        .expect("the browser script ended early (see its stderr)");
    let address = line
        .strip_prefix("STOP ")
        .unwrap_or_else(|| panic!("unexpected: {line}"));
    let victim = fleet
        .iter()
        .position(|s| s.local_addr().to_string() == address)
        .unwrap();
    fleet.remove(victim).shutdown().await;
    writeln!(stdin, "stopped").unwrap();
    let line = next(&mut rx)
        .await
        .expect("the browser script ended early (see its stderr)");
    assert_eq!(line, "OK");
    let status = node.wait().unwrap();
    assert!(status.success());
    assert!(shot.exists());
    eprintln!("screenshots: {} and -phone.png", shot.display());
    running.shutdown().await;
    for s in fleet {
        s.shutdown().await;
    }
}
