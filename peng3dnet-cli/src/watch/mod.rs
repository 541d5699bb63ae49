//! `peng3dnet watch`: a live, full-screen view of servers' latency.
//!
//! - [`model`]: each target's recent results and their statistics (pure);
//! - [`view`]: the view's state and what each key does to it (pure);
//! - [`render`]: drawing the model and view with ratatui (pure, tested on `TestBackend`);
//! - [`terminal`]: taking the terminal over and restoring it (guard and panic hook);
//! - this module: the arguments and the event loop: a task per target pinging it every
//!   interval with one ping outstanding at a time, keys from crossterm's event stream,
//!   and a redraw on every tick, key and resize.

mod model;
mod render;
mod terminal;
mod view;

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use peng3dnet::ping::{ping_addrs, PingOptions, PingReply};
use peng3dnet::target::{Family, Target};
use peng3dnet::tls::ClientTls;
use peng3dnet::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use self::model::{Entry, Model, Outcome, Sample, Update};
use self::terminal::TerminalGuard;
use self::view::{Action, Mode, View};
use super::output::{self, ErrorRecord, ReplyRecord, SummaryRecord, Tally, SCHEMA_VERSION};
use super::{error, parse_key_value, parse_seconds, ClientArgs, Exit, TlsArgs};
use crate::targets::resolve;

/// More targets than this open the browser rather than the graph.
const GRAPH_MAX: usize = 6;
/// The graph shows this many intervals unless `--window` says otherwise.
const WINDOW_INTERVALS: u32 = 60;
/// How often the screen is redrawn while time moves.
const TICK: Duration = Duration::from_millis(200);

/// Help shown after `watch --help`.
pub const WATCH_AFTER: &str = "\
Examples:
  peng3dnet watch localhost                     a latency graph of localhost:8080
  peng3dnet watch -i 0.2 hostA hostB:9000       two targets, five pings a second each
  peng3dnet watch -f servers.txt                the server browser, one row per server
  peng3dnet watch --record log.ndjson localhost the graph, and every result saved
  peng3dnet watch --master http://master.example.org:8090 --tag eu
                                                the browser of a master's servers; servers
                                                it lists later join (--master-refresh)

The graph draws each target's round trips over the last 60 intervals (--window), in its
own colour; timeouts (×) and other failures (!) are marked on the time axis. The row of
each target gives the latest round trip and the minimum, mean, maximum, jitter (mean
difference between successive round trips) and 95th percentile in ms, and the loss, over
its last 3600 pings. With -f or more than 6 targets the browser lists the servers (their
name, motd and clients) sorted by latency; arrows select, Enter shows a server's data.

Keys: q, Esc or Ctrl-C quit (Esc first closes the details); p pauses; Tab switches graph
and browser.
One ping at a time per target: a ping that takes longer than -i delays the next.
--record FILE writes every result as `ping --json` does (one JSON object a line) and a
summary per target at the end; the summaries are also printed when watch ends.
watch needs a terminal; for output to a pipe or a file, use `peng3dnet ping` (--json).
Exit status: 0 when quit, 3 bad arguments or no terminal, 4 a system error (the terminal
or the record file).";

/// Which screen to start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ViewArg {
    /// The latency graph.
    Graph,
    /// The server browser.
    Browser,
}

/// `watch` arguments.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Servers: host, host:port or [v6]:port (default port 8080).
    #[arg(value_name = "TARGET", required_unless_present_any = ["file", "master"])]
    pub targets: Vec<String>,
    /// Read targets from FILE too, one a line (blank lines and `#` comments skipped);
    /// starts in the browser.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Seconds between pings of a target (fractions allowed, e.g. 0.2).
    #[arg(short = 'i', long = "interval", value_name = "SECONDS", default_value = "1", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub interval: Duration,
    /// Seconds of history the graph shows [default: 60 intervals].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub window: Option<Duration>,
    /// The screen to start with [default: graph for up to 6 targets, else browser].
    #[arg(long, value_enum)]
    pub view: Option<ViewArg>,
    /// Write every result to FILE as newline-delimited JSON (the `ping --json` records).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Use IPv4 addresses only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Use IPv6 addresses only.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Time to wait for each ping's pong (connecting included), in seconds.
    #[arg(short = 'W', long = "timeout", value_name = "SECONDS", default_value = "5", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub timeout: Duration,
    /// Add KEY=VALUE to the ping data (repeatable); VALUE is parsed as JSON if it parses,
    /// else taken as a string.
    #[arg(long = "data", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub data: Vec<(String, Value)>,
    /// TLS, as for `ping`.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Servers from a master server's list (starts in the browser).
    #[command(flatten)]
    pub master: crate::master_args::MasterArgs,
    /// With --master: read the master's list again every SECONDS; servers it lists anew
    /// join the browser.
    #[arg(long = "master-refresh", value_name = "SECONDS", default_value = "30", value_parser = parse_seconds, requires = "master")]
    pub master_refresh: Duration,
}

impl WatchArgs {
    /// The options `ping` and `status` share, from these.
    fn client(&self) -> ClientArgs {
        ClientArgs {
            ipv4: self.ipv4,
            ipv6: self.ipv6,
            timeout: self.timeout,
            data: self.data.clone(),
            json: false,
            verbose: false,
            tls: self.tls.clone(),
            source: None,
            max_pong_bytes: peng3dnet::ping::DEFAULT_MAX_PONG_BYTES,
        }
    }
}

/// How every target is pinged.
#[derive(Debug)]
struct Settings {
    /// Between pings of a target.
    interval: Duration,
    /// For each ping.
    timeout: Duration,
    /// Ping data.
    data: Value,
    /// Address family.
    family: Family,
    /// TLS, if asked for.
    tls: Option<ClientTls>,
}

impl Settings {
    /// Options for pinging `target`'s resolved address (a certificate is checked against
    /// the name given).
    fn options(&self, target: &Target) -> PingOptions {
        PingOptions {
            data: self.data.clone(),
            timeout: self.timeout,
            family: Family::Any,
            tls: self.tls.clone().map(|t| t.with_server_name(&target.host)),
            ..PingOptions::default()
        }
    }
}

/// One ping's result, from a target's task to the event loop.
#[derive(Debug)]
struct PingResult {
    /// Which target.
    index: usize,
    /// The target's ping count, from 0.
    seq: u64,
    /// When it was sent, seconds since the start.
    at: f64,
    /// The address pinged, once resolved.
    addr: Option<SocketAddr>,
    /// The pong, or the JSON error kind and a message.
    result: Result<PingReply, (&'static str, String)>,
}

/// The targets from the command line, then from the file.
fn gather_targets(args: &WatchArgs) -> Result<Vec<String>, String> {
    let mut targets = args.targets.clone();
    if let Some(path) = &args.file {
        targets.extend(crate::targets::read_target_file(path)?);
    }
    if targets.is_empty() {
        return Err("no targets (the file has none)".into());
    }
    for t in &targets {
        Target::parse_default(t).map_err(|e| e.to_string())?;
    }
    Ok(targets)
}

/// `peng3dnet watch`.
pub async fn run(mut args: WatchArgs) -> Exit {
    if !std::io::stdout().is_terminal() {
        error(
            "watch draws a live view and needs a terminal, but stdout is not one; \
             for output to a pipe or a file use `peng3dnet ping TARGET...` \
             (or `peng3dnet ping --json TARGET...` for JSON records)",
        );
        return Exit::Usage;
    }
    if let Err(exit) = crate::master_args::add_listed(&mut args.targets, &args.master).await {
        return exit;
    }
    let targets = match gather_targets(&args) {
        Ok(targets) => targets,
        Err(message) => {
            error(message);
            return Exit::Usage;
        }
    };
    let client = args.client();
    let tls = match client.tls() {
        Ok(tls) => tls,
        Err(e) => {
            error(format!("TLS: {e}"));
            return Exit::Usage;
        }
    };
    let recorder = match &args.record {
        Some(path) => match File::create(path) {
            Ok(file) => Some(BufWriter::new(file)),
            Err(e) => {
                error(format!("cannot write {}: {e}", path.display()));
                return Exit::System;
            }
        },
        None => None,
    };
    let settings = Settings {
        interval: args.interval,
        timeout: args.timeout,
        data: client.data_map(),
        family: client.family(),
        tls,
    };
    let mode = match args.view {
        Some(ViewArg::Graph) => Mode::Graph,
        Some(ViewArg::Browser) => Mode::Browser,
        None if args.file.is_some()
            || args.master.master.is_some()
            || targets.len() > GRAPH_MAX =>
        {
            Mode::Browser
        }
        None => Mode::Graph,
    };
    let window = args
        .window
        .unwrap_or(args.interval.saturating_mul(WINDOW_INTERVALS));
    let view = View::new(mode, args.interval.as_secs_f64(), window.as_secs_f64());

    let guard = match TerminalGuard::enter() {
        Ok(guard) => guard,
        Err(e) => {
            error(format!("cannot set up the terminal: {e}"));
            return Exit::System;
        }
    };
    let mut session = Session {
        model: Model::new(targets.iter().cloned()),
        view,
        tallies: vec![Tally::default(); targets.len()],
        recorder,
        start: Instant::now(),
        master: args
            .master
            .master
            .is_some()
            .then(|| (args.master.clone(), args.master_refresh)),
    };
    let ended = session.run(guard, Arc::new(settings)).await;
    // The guard is gone: the terminal is back to normal.
    let mut exit = match ended {
        Ok(()) => Exit::Ok,
        Err(message) => {
            error(message);
            Exit::System
        }
    };
    if let Err(message) = session.finish() {
        error(message);
        exit = Exit::System;
    }
    exit
}

/// A running watch: what is known, how it is shown, and what is written.
struct Session {
    /// Results and statistics.
    model: Model,
    /// Screen, selection, pause.
    view: View,
    /// Whole-run counts per target, for the summaries at the end.
    tallies: Vec<Tally>,
    /// `--record`: where the JSON records go.
    recorder: Option<BufWriter<File>>,
    /// When the watch started: the time axis's zero.
    start: Instant,
    /// `--master`: the list to read again, and how often.
    master: Option<(crate::master_args::MasterArgs, Duration)>,
}

impl Session {
    /// The event loop, until a quit key, a signal or an error; the terminal is restored
    /// when it returns (the guard is dropped).
    async fn run(
        &mut self,
        mut guard: TerminalGuard,
        settings: Arc<Settings>,
    ) -> Result<(), String> {
        let (results_tx, mut results) = mpsc::channel(256);
        let (pause_tx, pause_rx) = watch::channel(false);
        let mut pingers = JoinSet::new();
        for (index, entry) in self.model.entries.iter().enumerate() {
            pingers.spawn(pinger(
                index,
                entry.name.clone(),
                settings.clone(),
                self.start,
                pause_rx.clone(),
                results_tx.clone(),
            ));
        }
        // With --master, servers it lists later get pingers too.
        let (listed_tx, mut listed) = mpsc::channel(1);
        let results_tx = match self.master.clone() {
            Some((master, every)) => {
                pingers.spawn(crate::master_args::refresh_listing(
                    master, every, listed_tx,
                ));
                Some(results_tx)
            }
            None => None,
        };
        let mut events = EventStream::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let interrupted = super::interrupted();
        tokio::pin!(interrupted);
        // The time shown while paused.
        let mut paused_at: Option<f64> = None;
        // Draw now (a key, a resize), or at the next tick (new results).
        let mut draw_now = true;
        let mut stale = false;

        let ended = loop {
            if draw_now {
                let now = paused_at.unwrap_or_else(|| self.start.elapsed().as_secs_f64());
                let (model, view) = (&self.model, &self.view);
                if let Err(e) = guard
                    .terminal
                    .draw(|frame| render::draw(frame, model, view, now))
                {
                    break Err(format!("cannot draw on the terminal: {e}"));
                }
                draw_now = false;
                stale = false;
            }
            tokio::select! {
                Some(result) = results.recv() => {
                    if let Err(e) = self.take(result) {
                        break Err(e);
                    }
                    stale = true;
                }
                Some(names) = listed.recv() => {
                    let Some(results_tx) = &results_tx else { continue };
                    for name in names {
                        if self.model.entries.iter().any(|e| e.name == name) {
                            continue;
                        }
                        let index = self.model.entries.len();
                        self.model.entries.push(Entry::new(name.clone()));
                        self.tallies.push(Tally::default());
                        pingers.spawn(pinger(
                            index,
                            name,
                            settings.clone(),
                            self.start,
                            pause_rx.clone(),
                            results_tx.clone(),
                        ));
                    }
                    stale = true;
                }
                event = events.next() => match event {
                    Some(Ok(Event::Key(key))) => match self.view.on_key(key, &self.model) {
                        Action::Quit => break Ok(()),
                        Action::Pause => {
                            paused_at = self
                                .view
                                .paused
                                .then(|| self.start.elapsed().as_secs_f64());
                            let _ = pause_tx.send(self.view.paused);
                            draw_now = true;
                        }
                        Action::Redraw => draw_now = true,
                        Action::Nothing => {}
                    },
                    Some(Ok(Event::Resize(..))) => draw_now = true,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Err(format!("cannot read keys from the terminal: {e}")),
                    None => break Err("the terminal's input ended".into()),
                },
                // A pinger ends only by panicking (the panic hook has already given the
                // terminal back): stop rather than go on drawing on a cooked terminal.
                Some(Err(e)) = pingers.join_next() => {
                    break Err(format!("a ping task failed: {e}"));
                }
                _ = tick.tick() => draw_now = stale || paused_at.is_none(),
                _ = &mut interrupted => break Ok(()),
            }
        };
        pingers.abort_all();
        drop(guard);
        ended
    }

    /// Takes a ping's result into the model, the tallies and the record.
    fn take(&mut self, r: PingResult) -> Result<(), String> {
        let Some(entry) = self.model.entries.get(r.index) else {
            return Ok(());
        };
        let name = entry.name.clone();
        let tally = &mut self.tallies[r.index];
        tally.transmitted += 1;
        let (outcome, data, message) = match &r.result {
            Ok(reply) => {
                let rtt_ms = output::ms(reply.delay);
                tally.received += 1;
                tally.rtts_ms.push(rtt_ms);
                (Outcome::Reply { rtt_ms }, Some(reply.server_data()), None)
            }
            Err(("timeout", message)) => (Outcome::Timeout, None, Some(message.clone())),
            Err((kind, message)) => {
                tally.errors += 1;
                (Outcome::Error { kind }, None, Some(message.clone()))
            }
        };
        if let Some(out) = &mut self.recorder {
            if let Err(e) = record(out, &name, &r) {
                // No summaries either: the file is broken.
                self.recorder = None;
                return Err(format!("cannot write the record: {e}"));
            }
        }
        let addr = match &r.result {
            Ok(reply) => Some(reply.peer),
            Err(_) => r.addr,
        };
        self.model.push(Update {
            index: r.index,
            sample: Sample { at: r.at, outcome },
            addr,
            data,
            error: message,
        });
        Ok(())
    }

    /// After the terminal is restored: the summaries on stdout and, with `--record`, as
    /// the last records.
    fn finish(&mut self) -> Result<(), String> {
        let elapsed = self.start.elapsed();
        let mut text = String::new();
        let mut problem = None;
        for (entry, tally) in self.model.entries.iter().zip(&mut self.tallies) {
            tally.elapsed = elapsed;
            text.push_str(&output::summary_text(
                &model::clean(&entry.name, 200),
                tally,
                false,
            ));
            if let Some(out) = &mut self.recorder {
                let summary =
                    SummaryRecord::new(&entry.name, entry.addr.map(|a| a.to_string()), tally);
                if let Err(e) = write_record(out, &summary) {
                    problem.get_or_insert(format!("cannot write the record: {e}"));
                }
            }
        }
        // Nothing is lost if stdout is gone by now.
        let _ = output::Out.print(&text);
        problem.map_or(Ok(()), Err)
    }
}

/// Writes one record as a line and flushes it, so the file can be followed.
fn write_record<T: serde::Serialize>(out: &mut BufWriter<File>, record: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, record).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The `ping --json` record of a result.
fn record(out: &mut BufWriter<File>, name: &str, r: &PingResult) -> std::io::Result<()> {
    match &r.result {
        Ok(reply) => {
            let t = &reply.timings;
            write_record(
                out,
                &ReplyRecord {
                    schema_version: SCHEMA_VERSION,
                    kind: "reply",
                    target: name,
                    addr: reply.peer.to_string(),
                    seq: r.seq,
                    time_ms: output::ms(reply.delay),
                    connect_ms: output::ms(t.connect + t.hello),
                    total_ms: output::ms(t.total),
                    server_ms: t.server.map(output::ms),
                },
            )
        }
        Err((kind, message)) => write_record(
            out,
            &ErrorRecord {
                schema_version: SCHEMA_VERSION,
                kind: "error",
                target: name,
                addr: r.addr.map(|a| a.to_string()),
                seq: Some(r.seq),
                error_kind: kind,
                message: message.clone(),
            },
        ),
    }
}

/// Pings one target every interval, one ping at a time, while not paused; sends each
/// result to the event loop. Resolves the name until it resolves, then keeps the address.
async fn pinger(
    index: usize,
    name: String,
    settings: Arc<Settings>,
    start: Instant,
    mut paused: watch::Receiver<bool>,
    results: mpsc::Sender<PingResult>,
) {
    let Ok(target) = Target::parse_default(&name) else {
        return;
    };
    let options = settings.options(&target);
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut addr = None;
    let mut addrs = Vec::new();
    for seq in 0u64.. {
        ticker.tick().await;
        if *paused.borrow_and_update() {
            if paused.wait_for(|p| !p).await.is_err() {
                return;
            }
            ticker.reset_immediately();
            ticker.tick().await;
        }
        let at = start.elapsed().as_secs_f64();
        if addrs.is_empty() {
            match resolve(&target, &name, settings.family, settings.timeout).await {
                Ok(resolved) => {
                    addr = resolved.first().copied();
                    addrs = resolved;
                }
                Err(message) => {
                    let sent = results
                        .send(PingResult {
                            index,
                            seq,
                            at,
                            addr,
                            result: Err(("resolve", message)),
                        })
                        .await;
                    if sent.is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        // Every address is tried (RFC 8305); the one that answered is shown.
        let result = ping_addrs(&addrs, &target.host, &options)
            .await
            .map_err(|e| super::ping::describe(&e, settings.timeout));
        if let Ok(reply) = &result {
            addr = Some(reply.peer);
        }
        let sent = results
            .send(PingResult {
                index,
                seq,
                at,
                addr,
                result,
            })
            .await;
        if sent.is_err() {
            return;
        }
    }
}
