//! `peng3dnet watch`, run as a user would: inside a real terminal (a detached `tmux`
//! session) against a `peng3dnet serve` started by the test on 127.0.0.1. The screen is
//! read with `capture-pane` and keys are typed with `send-keys`. After watch, the pane's
//! shell prints the terminal's modes and watch's exit status and stays, so that the
//! terminal's state (alternate screen, cursor) can be asked of tmux.
//!
//! Nothing sleeps to synchronise: each step polls the screen (or the pane's state) until
//! what it waits for appears, within a generous deadline, and then asserts.
//!
//! tmux comes from Debian's `tmux` package; `.ci/run` installs it when missing
//! (`scripts/ensure-debian-packages.sh`). Without tmux these tests fail under CI (`CI`
//! set) and are skipped, saying so, elsewhere.

#[path = "../../peng3dnet/tests/common/fake_master.rs"]
mod fake_master;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_peng3dnet");
/// Deadline of each waiting step; a step normally takes well under a second.
const DEADLINE: Duration = Duration::from_secs(20);
/// Between two looks at the screen while polling.
const POLL: Duration = Duration::from_millis(50);

/// Whether tmux can be run. Missing under CI is a failure: CI must install it.
fn have_tmux() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        found || !ci,
        "tmux is needed for the watch tests: install it (Debian: apt-get install tmux; \
         .ci/run does it with scripts/ensure-debian-packages.sh tmux)"
    );
    if !found {
        eprintln!("SKIPPED: tmux is not installed (it is required when CI is set)");
    }
    found
}

/// A `peng3dnet serve` on 127.0.0.1 (a free port); killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data: &[&str]) -> Server {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
        for d in data {
            args.extend(["--data", d]);
        }
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start peng3dnet serve");
        // `serve` prints this one line on stdout once bound (reading blocks until then;
        // it prints the line or exits, which ends the loop).
        let stdout = child.stdout.take().unwrap();
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("listening on "));
        let Some(line) = line else {
            let _ = child.kill();
            panic!("serve did not print its address");
        };
        let addr = line["listening on ".len()..].to_owned();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on which nothing listens.
fn refused_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A fresh directory for a test's files; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("peng3dnet-watch-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Single-quotes a word for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A private tmux server (its own socket) running one command in a 100x30 window; the
/// server is killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `watch ARGS` in the pane, then, once it ended, prints the terminal's
    /// `icanon`/`echo` modes (raw mode turns both off) and the exit status, and keeps the
    /// pane open (reading the terminal until the tmux server is killed).
    fn watch(dir: &TempDir, args: &[&str]) -> Tmux {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "peng3dnet-watch-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let conf = dir.path("tmux.conf");
        std::fs::write(&conf, "set -g status off\n").unwrap();
        let mut command = quote(BIN);
        command.push_str(" watch");
        for a in args {
            command.push(' ');
            command.push_str(&quote(a));
        }
        command.push_str(
            "; s=$?; echo; echo \"modes: $(stty -a | tr ' ;' '\\n\\n' \
             | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' ')\"; echo \"watch-exit=$s\"; exec cat >/dev/null",
        );
        let tmux = Tmux { socket };
        let conf = conf.to_str().unwrap();
        let out = tmux.run(&[
            "-f",
            conf,
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            "100",
            "-y",
            "30",
            "sh",
            "-c",
            &command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            text(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run tmux")
    }

    /// The visible screen of the pane.
    fn screen(&self) -> String {
        text(&self.run(&["capture-pane", "-p", "-t", "w"]).stdout)
    }

    /// A tmux format of the pane (`#{pane_dead}`...).
    fn format(&self, format: &str) -> String {
        text(
            &self
                .run(&["display-message", "-p", "-t", "w", format])
                .stdout,
        )
        .trim()
        .to_owned()
    }

    /// Types keys (tmux key names: `q`, `Enter`, `Up`, `Escape`...).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "w"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "send-keys: {}", text(&out.stderr));
    }

    /// Resizes the window (as a terminal emulator's window would be).
    fn resize(&self, width: u16, height: u16) {
        let (w, h) = (width.to_string(), height.to_string());
        let out = self.run(&["resize-window", "-t", "w", "-x", &w, "-y", &h]);
        assert!(out.status.success(), "resize-window: {}", text(&out.stderr));
    }

    /// Polls the screen until `pred` holds; returns that screen.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not on the screen after {DEADLINE:?}:\n{screen}"
            );
            thread::sleep(POLL);
        }
    }

    /// Waits for watch to end; its exit status (as the shell saw it) and the screen.
    fn wait_exit(&self) -> (i32, String) {
        let screen = self.wait_for("the exit status", |s| s.contains("watch-exit="));
        let status = screen
            .lines()
            .find_map(|l| l.trim().strip_prefix("watch-exit="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exit status in:\n{screen}"));
        (status, screen)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The screen's line that contains `needle`, if any.
fn line_with<'a>(screen: &'a str, needle: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.contains(needle))
}

/// A latency figure: a decimal number such as `0.123` or `1.20`.
fn has_latency(line: &str) -> bool {
    line.split_whitespace()
        .any(|w| w.contains('.') && w.parse::<f64>().is_ok_and(|x| x > 0.0))
}

/// What a restored terminal shows after watch ended.
fn assert_restored(tmux: &Tmux, screen: &str) {
    // Cooked mode again: neither `-icanon` nor `-echo`.
    let modes = line_with(screen, "modes:").unwrap_or_default();
    assert_eq!(modes.trim(), "modes: icanon echo", "{screen}");
    // Off the alternate screen: the view is gone from the screen.
    assert_eq!(tmux.format("#{alternate_on}"), "0");
    assert!(
        !screen.contains("q quit"),
        "the view is still shown:\n{screen}"
    );
    // The cursor is visible (tmux may bring it back on leaving the alternate screen
    // by itself: this checks what the user gets, not how).
    assert_eq!(tmux.format("#{cursor_flag}"), "1");
}

#[test]
fn graph_shows_latency_and_q_restores_the_terminal() {
    if !have_tmux() {
        return;
    }
    let server = Server::start(&["name=graph-test"]);
    let dir = TempDir::new("graph");
    let record = dir.path("record.ndjson");
    let tmux = Tmux::watch(
        &dir,
        &[
            "-i",
            "0.2",
            "--record",
            record.to_str().unwrap(),
            &server.addr,
        ],
    );
    let needle = format!("━━ {}", server.addr);
    let screen = tmux.wait_for("the target's stats row with a latency and no loss", |s| {
        line_with(s, &needle).is_some_and(|l| has_latency(l) && l.trim_end().ends_with(" 0.0%"))
    });
    assert!(
        screen.contains("peng3dnet watch  1 target, 1 up, every 0.2s"),
        "{screen}"
    );
    assert!(screen.contains("last ms"), "{screen}");

    // Resizing redraws: the time axis's `now` moves to the new right edge, and a tiny
    // window gets a message.
    tmux.resize(50, 16);
    tmux.wait_for("the graph redrawn 50 columns wide", |s| {
        s.lines()
            .any(|l| l.trim_end().ends_with("now") && l.trim_end().chars().count() == 50)
    });
    tmux.resize(20, 4);
    tmux.wait_for("the too-small message", |s| {
        s.contains("terminal too small")
    });
    tmux.resize(100, 30);
    tmux.wait_for("the graph again", |s| {
        line_with(s, &needle).is_some_and(has_latency)
    });

    // p pauses, p resumes.
    tmux.keys(&["p"]);
    tmux.wait_for("PAUSED", |s| s.contains("PAUSED"));
    tmux.keys(&["p"]);
    tmux.wait_for("the resumed view", |s| !s.contains("PAUSED"));

    tmux.keys(&["q"]);
    let (status, screen) = tmux.wait_exit();
    assert_eq!(status, 0, "{screen}");
    assert_restored(&tmux, &screen);
    // The summary is printed on the normal screen.
    assert!(
        screen.contains(&format!("--- {} ping statistics ---", server.addr)),
        "{screen}"
    );

    // The record: `ping --json` records, replies then the summary.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    let (summary, replies) = lines.split_last().unwrap();
    for (seq, r) in replies.iter().enumerate() {
        assert_eq!(r["schema_version"], 1, "{r}");
        assert_eq!(r["type"], "reply", "{r}");
        assert_eq!(r["target"], server.addr.as_str());
        assert_eq!(r["addr"], server.addr.as_str());
        assert_eq!(r["seq"], seq as u64);
        assert!(r["time_ms"].as_f64().is_some_and(|t| t > 0.0), "{r}");
    }
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["transmitted"], replies.len() as u64);
    assert_eq!(summary["received"], replies.len() as u64);
}

#[test]
fn browser_sorts_shows_details_and_escapes_what_servers_send() {
    if !have_tmux() {
        return;
    }
    // A motd trying to set the window title and clear the screen.
    let server = Server::start(&[
        "name=browser-test",
        r#"motd="hi\u001b]0;pwned\u0007\u001b[2J""#,
        "maxplayers=8",
    ]);
    let refused = refused_addr();
    let dir = TempDir::new("browser");
    let file = dir.path("servers.txt");
    // The refused target first: it must sort below the answering one.
    std::fs::write(
        &file,
        format!("# test servers\n{refused}\n\n{}\n", server.addr),
    )
    .unwrap();
    let tmux = Tmux::watch(&dir, &["-i", "0.2", "-f", file.to_str().unwrap()]);
    let screen = tmux.wait_for("both rows, one up with a latency, one refused", |s| {
        line_with(s, &server.addr).is_some_and(|l| l.contains(" ms") && l.contains("up"))
            && line_with(s, &refused).is_some_and(|l| l.contains("refused"))
    });
    let row = |needle: &str| screen.lines().position(|l| l.contains(needle)).unwrap();
    assert!(
        row(&server.addr) < row(&refused),
        "not sorted by latency:\n{screen}"
    );
    let up = line_with(&screen, &server.addr).unwrap();
    assert!(up.contains("browser-test") && up.contains("/8"), "{up}");
    assert!(up.contains(r"hi\x1b]0;pwned"), "motd not escaped: {up}");

    // The selection starts on the first target given (the refused one, last row): Up
    // moves it to the server, Enter shows its data.
    tmux.keys(&["Up"]);
    tmux.keys(&["Enter"]);
    // A frame may be caught half drawn: wait for all of it.
    let want = [
        format!("address: {}", server.addr),
        "name: browser-test".to_owned(),
        r"motd: hi\x1b]0;pwned\x07\x1b[2J".to_owned(),
        "version: 0.1.3a0".to_owned(),
    ];
    tmux.wait_for("the server's details", |s| {
        want.iter().all(|w| s.contains(w))
    });

    // Esc closes the details, a second Esc quits.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the list again", |s| !s.contains("address:"));
    tmux.keys(&["Escape"]);
    let (status, screen) = tmux.wait_exit();
    assert_eq!(status, 0, "{screen}");
    assert_restored(&tmux, &screen);
    assert!(
        screen.contains(&format!("--- {refused} ping statistics ---")),
        "{screen}"
    );
}

#[test]
fn an_error_while_watching_restores_the_terminal_and_exits_4() {
    if !have_tmux() {
        return;
    }
    let full = Path::new("/dev/full");
    assert!(
        full.exists(),
        "/dev/full is needed (a device whose writes fail)"
    );
    let server = Server::start(&[]);
    let dir = TempDir::new("error");
    // Opening succeeds, the first record's write fails (no space left on device).
    let tmux = Tmux::watch(&dir, &["--record", "/dev/full", &server.addr]);
    let (status, screen) = tmux.wait_exit();
    assert_eq!(status, 4, "{screen}");
    assert_eq!(
        screen.matches("peng3dnet: cannot write the record").count(),
        1,
        "{screen}"
    );
    assert_restored(&tmux, &screen);
}

#[test]
fn without_a_terminal_watch_points_to_ping() {
    let out = Command::new(BIN)
        .args(["watch", "127.0.0.1:1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("needs a terminal"), "{stderr}");
    assert!(
        stderr.contains("peng3dnet ping") && stderr.contains("--json"),
        "{stderr}"
    );
}

/// A target file that cannot be read or a malformed target is a usage error (status 3),
/// reported before the terminal is taken over. Checked in a terminal, because without one
/// watch stops earlier.
#[test]
fn bad_targets_are_usage_errors_in_a_terminal() {
    if !have_tmux() {
        return;
    }
    let dir = TempDir::new("usage");
    let missing: &Path = &dir.path("missing.txt");
    let tmux = Tmux::watch(&dir, &["-f", missing.to_str().unwrap()]);
    let (status, screen) = tmux.wait_exit();
    assert_eq!(status, 3, "{screen}");
    assert!(screen.contains("cannot read"), "{screen}");
    let tmux = Tmux::watch(&dir, &["host:notaport"]);
    let (status, screen) = tmux.wait_exit();
    assert_eq!(status, 3, "{screen}");
    assert!(screen.contains("peng3dnet:"), "{screen}");
}

#[test]
fn watch_master_browses_the_servers_a_master_lists() {
    if !have_tmux() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let master = rt.block_on(fake_master::FakeMaster::start(60));
    let lobby = Server::start(&["name=listed-lobby", "maxplayers=8"]);
    let arena = Server::start(&["name=listed-arena"]);
    let unlisted = Server::start(&["name=not-listed"]);
    let announce = |server: &Server, tag: &str| {
        let port = server.addr.rsplit_once(':').unwrap().1.parse().unwrap();
        let what = peng3dnet::master::Announcement {
            port,
            host: None,
            tags: vec![tag.into()],
        };
        rt.block_on(peng3dnet::master::announce(
            &master.url,
            &what,
            &Default::default(),
        ))
        .unwrap();
    };
    for (server, tag) in [(&lobby, "eu"), (&arena, "eu"), (&unlisted, "us")] {
        announce(server, tag);
    }
    let dir = TempDir::new("master");
    let tmux = Tmux::watch(
        &dir,
        &[
            "-i",
            "0.2",
            "--master",
            &master.url,
            "--tag",
            "eu",
            "--master-refresh",
            "0.3",
        ],
    );
    // The browser (not the graph), a row per listed server of the tag, each pinged from
    // here: up, with a latency.
    let screen = tmux.wait_for("both listed servers up with a latency", |s| {
        [&lobby.addr, &arena.addr]
            .iter()
            .all(|addr| line_with(s, addr).is_some_and(|l| l.contains("up") && has_latency(l)))
    });
    assert!(
        line_with(&screen, "listed-lobby").is_some_and(|l| l.contains("/8")),
        "{screen}"
    );
    assert!(!screen.contains(&unlisted.addr), "{screen}");
    // A server listed later joins the browser at the next read of the list.
    let late = Server::start(&["name=listed-late"]);
    announce(&late, "eu");
    tmux.wait_for("the server listed later, up", |s| {
        line_with(s, &late.addr).is_some_and(|l| l.contains("listed-late") && has_latency(l))
    });
    tmux.keys(&["q"]);
    let (status, screen) = tmux.wait_exit();
    assert_eq!(status, 0, "{screen}");
    assert_restored(&tmux, &screen);
}
