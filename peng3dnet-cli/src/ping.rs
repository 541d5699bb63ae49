//! `ping` and `status`: pinging servers and reporting what they answer.

use peng3dnet::tls::ClientTls;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peng3dnet::error::Phase;
use peng3dnet::many::Limiter;
use peng3dnet::ping::{ping_addrs, PingError, PingOptions, PingReply, PingSession};
use peng3dnet::target::{Family, Target};
use peng3dnet::{CloseReason, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::output::{
    self, ErrorRecord, Out, ReplyRecord, Sink, StatusRecord, SummaryRecord, Tally, SCHEMA_VERSION,
};
use super::{error, Exit, PingArgs, StatusArgs};
use crate::batched::Batched;
use crate::targets::resolve;

/// How to ping, for every target of a run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Pings per target; `None` until interrupted or the deadline.
    pub count: Option<u64>,
    /// Time between pings of one target.
    pub interval: Duration,
    /// Time allowed for each ping.
    pub timeout: Duration,
    /// End of the whole run.
    pub deadline: Option<Instant>,
    /// Summaries only.
    pub quiet: bool,
    /// One connection per target.
    pub session: bool,
    /// JSON records instead of text.
    pub json: bool,
    /// Phase timings and percentiles.
    pub verbose: bool,
    /// Ping data.
    pub data: Value,
    /// Address family.
    pub family: Family,
    /// TLS, if asked for.
    pub tls: Option<ClientTls>,
    /// Local address to connect from (`--source`).
    pub source: Option<std::net::IpAddr>,
    /// Largest reply accepted (`--max-pong-bytes`).
    pub max_pong_bytes: usize,
    /// What to print for a list of targets, and how hard to push.
    pub list: ListSettings,
}

/// What `ping` prints at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Report {
    /// Reply lines, then a summary per target.
    #[default]
    Summaries,
    /// Only the targets that answered (fping -a).
    Alive,
    /// Only the targets that did not (fping -u).
    Unreachable,
    /// One line per target with each ping's time (fping -C).
    Grid,
}

/// Options of a run over a list of targets.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListSettings {
    /// What to print at the end.
    pub report: Report,
    /// Targets pinged at once; `None`: from the open-files limit.
    pub concurrency: Option<usize>,
    /// New connections per second at most.
    pub rate: Option<f64>,
}

impl Settings {
    /// Options for pinging `target`'s resolved address: a TLS certificate is still checked
    /// against the name the user gave.
    fn options(&self, target: &Target) -> PingOptions {
        PingOptions {
            data: self.data.clone(),
            timeout: self.timeout,
            // Targets are resolved once, with the family, before pinging.
            family: Family::Any,
            tls: self.tls.clone().map(|t| t.with_server_name(&target.host)),
            local_addr: self.source,
            max_pong_bytes: self.max_pong_bytes,
            ..PingOptions::default()
        }
    }
}

/// The TLS set-up of the arguments; prints the problem on error.
fn client_tls(args: &super::ClientArgs) -> Result<Option<ClientTls>, Exit> {
    args.tls().map_err(|e| {
        error(format!("TLS: {e}"));
        Exit::Usage
    })
}

/// A target as given and as parsed.
pub(crate) struct Named {
    /// As given (what output lines start with).
    pub name: String,
    /// Its host and port.
    pub target: Target,
}

/// Parses every target, once for the run; prints the problem of the first bad one and
/// returns `None`.
pub(crate) fn parse_targets(names: Vec<String>) -> Option<Vec<Named>> {
    names
        .into_iter()
        .map(|name| match Target::parse_default(&name) {
            Ok(target) => Some(Named { name, target }),
            Err(e) => {
                error(e);
                None
            }
        })
        .collect()
}

/// Checks the syntax of targets; prints the problem and returns `false` on a bad one.
fn targets_valid(targets: &[String]) -> bool {
    parse_targets(targets.to_vec()).is_some()
}

/// `peng3dnet ping`.
pub(crate) async fn run_ping(mut args: PingArgs) -> Exit {
    if let Err(exit) = crate::master_args::add_listed(&mut args.targets, &args.list.master).await {
        return exit;
    }
    let targets = match args.list.gather(&args.targets) {
        Ok(targets) => targets,
        Err(message) => {
            error(message);
            return Exit::Usage;
        }
    };
    let Some(targets) = parse_targets(targets) else {
        return Exit::Usage;
    };
    let report = if args.alive {
        Report::Alive
    } else if args.unreachable {
        Report::Unreachable
    } else if args.vcount.is_some() {
        Report::Grid
    } else {
        Report::Summaries
    };
    let tls = match client_tls(&args.client) {
        Ok(tls) => tls,
        Err(exit) => return exit,
    };
    let settings = Settings {
        count: args.vcount.or(args.count),
        interval: args.interval,
        timeout: args.client.timeout,
        deadline: args.deadline.map(|d| Instant::now() + d),
        quiet: args.quiet,
        session: args.session,
        json: args.client.json,
        verbose: args.client.verbose,
        data: args.client.data_map(),
        family: args.client.family(),
        tls,
        source: args.client.source,
        max_pong_bytes: args.client.max_pong_bytes,
        list: ListSettings {
            report,
            concurrency: args.list.concurrency.map(|n| n as usize),
            rate: args.list.rate,
        },
    };
    // On a worker thread: the targets' tasks are then spawned onto its own queue, not
    // through the runtime's shared queue with a worker woken for each.
    match tokio::spawn(run_targets(targets, settings)).await {
        Ok(exit) => exit,
        Err(e) => {
            error(task_failure(&e));
            Exit::System
        }
    }
}

/// Pings every target concurrently until each is done, the deadline, or Ctrl-C/SIGTERM;
/// prints the summaries (or what `-a`, `-u`, `-C` ask for) of all targets together at the
/// end, in the order given, and returns the worst exit status. SIGQUIT (Ctrl-\\) prints
/// the statistics so far on stderr and goes on, as iputils ping and fping do.
///
/// At most `concurrency` pings run at once (a [`Limiter`] shared by every target, also
/// capping the rate of new connections), never two of one target, so a list of thousands
/// neither runs out of file descriptors nor hammers a server.
pub(crate) async fn run_targets(targets: Vec<Named>, settings: Settings) -> Exit {
    let (stop_tx, stop) = watch::channel(false);
    let signals = tokio::spawn(async move {
        super::interrupted().await;
        let _ = stop_tx.send(true);
        // Keep the sender alive so receivers see the value, not a closed channel.
        std::future::pending::<()>().await;
    });
    let concurrency = settings
        .list
        .concurrency
        .unwrap_or_else(peng3dnet::many::default_concurrency);
    // Two pings of one address at least this far apart (never further than the interval).
    let spacing = settings.interval.min(Duration::from_millis(50));
    let limiter = Arc::new(Limiter::new(concurrency, settings.list.rate, spacing));
    let sessions = Arc::new(Semaphore::new(concurrency));
    let settings = Arc::new(settings);
    let tallies: Arc<Vec<Mutex<Tally>>> = Arc::new(
        targets
            .iter()
            .map(|_| Mutex::new(Tally::default()))
            .collect(),
    );
    // The names, for the end of the run and for SIGQUIT's statistics.
    let names: Arc<[String]> = targets.iter().map(|t| t.name.clone()).collect();
    let quit = tokio::spawn(print_on_sigquit(names.clone(), tallies.clone()));
    let (out, writer) = Batched::start(std::io::stdout());
    let prefix = targets.len() > 1;
    let mut tasks = JoinSet::new();
    let mut done: Vec<Option<Done>> = targets.iter().map(|_| None).collect();
    let mut exit = Exit::Ok;
    // One ping per target (-c 1, a fleet check): a target's task starts when there is
    // room for its ping, as ping_many's do, not all at once (ten thousand tasks polled up
    // front hold the first pings back). Once stopped or past the deadline, the rest start
    // at once and end there, each with its summary.
    let gate = (settings.count == Some(1)).then(|| Arc::new(Semaphore::new(concurrency)));
    let mut gating = gate.is_some();
    let mut stop_gate = stop.clone();
    for (index, Named { name, target }) in targets.into_iter().enumerate() {
        let slot = match &gate {
            Some(gate) if gating => {
                let deadline = async {
                    match settings.deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    permit = gate.clone().acquire_owned() => permit.ok(),
                    _ = stop_gate.wait_for(|v| *v) => {
                        gating = false;
                        None
                    }
                    _ = deadline => {
                        gating = false;
                        None
                    }
                }
            }
            _ => None,
        };
        let run = TargetRun {
            index,
            name,
            target,
            prefix,
            s: settings.clone(),
            limiter: limiter.clone(),
            sessions: sessions.clone(),
            tallies: tallies.clone(),
            out: out.clone(),
            _slot: slot,
        };
        // Boxed: a task's future is copied whole when spawned and at each change of its
        // stage, and a target's is a kilobyte or more.
        tasks.spawn(Box::pin(run_target(run, stop.clone())));
        // The tasks that ended are taken as the list goes on: a task's memory (sized for
        // its whole ping) is then freed and reused, not held for every target of the list
        // until the last has started.
        while let Some(joined) = tasks.try_join_next() {
            take_joined(joined, &mut done, &mut exit);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        take_joined(joined, &mut done, &mut exit);
    }
    signals.abort();
    quit.abort();
    // The reply lines first, then the ends of the targets.
    if writer.finish(&out).await.is_err() {
        return Exit::System;
    }
    // The ends of all targets, written a block at a time rather than a write per target.
    let mut text = Vec::new();
    for (name, d) in names.iter().zip(done) {
        let Some(d) = d else { continue };
        exit = exit.max(d.exit);
        let unresolved = d.exit == Exit::Unresolved && settings.list.report == Report::Summaries;
        if d.exit == Exit::Usage || d.exit == Exit::System || unresolved {
            continue;
        }
        end_text(&mut text, &settings, name, &d, &lock(&tallies[d.index]));
        if text.len() >= END_BLOCK && Out.print_bytes(&std::mem::take(&mut text)).is_err() {
            return Exit::System;
        }
    }
    if !text.is_empty() && Out.print_bytes(&text).is_err() {
        return Exit::System;
    }
    exit
}

/// Takes a target's ended task into `done`; a task that failed is an error the user sees.
fn take_joined(
    joined: Result<Done, tokio::task::JoinError>,
    done: &mut [Option<Done>],
    exit: &mut Exit,
) {
    match joined {
        Ok(d) => {
            let i = d.index;
            done[i] = Some(d);
        }
        Err(e) => {
            error(task_failure(&e));
            *exit = Exit::System;
        }
    }
}

/// Size of the blocks the end of a run is written in.
const END_BLOCK: usize = 64 * 1024;

/// What a target's task hands back.
struct Done {
    index: usize,
    exit: Exit,
    /// The address pinged (the last that answered), once resolved.
    addr: Option<SocketAddr>,
    /// Each ping's round trip in ms, `None` for a lost one (for `-C`).
    times: Vec<Option<f64>>,
}

/// One target's part of a run.
struct TargetRun {
    index: usize,
    name: String,
    target: Target,
    /// Reply lines start with the target (several targets, as fping's).
    prefix: bool,
    s: Arc<Settings>,
    limiter: Arc<Limiter>,
    /// With `--session`: one slot per target that keeps its connection (and descriptor)
    /// between pings, `concurrency` in all.
    sessions: Arc<Semaphore>,
    tallies: Arc<Vec<Mutex<Tally>>>,
    /// Where reply lines and error records go.
    out: Arc<Batched>,
    /// With -c 1: the place the task started in, held until it ends.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

fn lock(m: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Appends a target's end of run to `text`: its summary, or its name (`-a`, `-u`), or its
/// times (`-C`).
fn end_text(text: &mut Vec<u8>, s: &Settings, name: &str, d: &Done, tally: &Tally) {
    let answered = tally.received > 0;
    let line = |text: &mut Vec<u8>, line: &str| {
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    };
    match s.list.report {
        Report::Alive if answered => line(text, name),
        Report::Unreachable if !answered => line(text, name),
        Report::Alive | Report::Unreachable => {}
        Report::Grid => {
            let times: Vec<String> = d
                .times
                .iter()
                .map(|t| t.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.3}")))
                .collect();
            line(text, &format!("{name} : {}", times.join(" ")));
        }
        Report::Summaries if s.json => {
            let record = SummaryRecord::new(name, d.addr.map(output::addr_text), tally);
            record.write_json(text);
            text.push(b'\n');
        }
        Report::Summaries => {
            text.extend_from_slice(output::summary_text(name, tally, s.verbose).as_bytes());
        }
    }
}

/// On SIGQUIT (Ctrl-\\), prints every target's statistics so far on stderr, one line each
/// (`TARGET: 3/3 packets, 0% loss, min/avg/max = 0.041/0.052/0.070 ms`), and goes on.
async fn print_on_sigquit(targets: Arc<[String]>, tallies: Arc<Vec<Mutex<Tally>>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut quit) = signal(SignalKind::quit()) else {
            return;
        };
        while quit.recv().await.is_some() {
            let mut text = String::new();
            for (name, tally) in targets.iter().zip(tallies.iter()) {
                let t = lock(tally).clone();
                text.push_str(&format!(
                    "{name}: {}/{} packets, {}% loss",
                    t.received,
                    t.transmitted,
                    output::loss_percent(t.transmitted, t.received)
                ));
                if let Some(rtt) = output::Rtt::of(&t.rtts_ms) {
                    text.push_str(&format!(
                        ", min/avg/max = {:.3}/{:.3}/{:.3} ms",
                        rtt.min, rtt.avg, rtt.max
                    ));
                }
                text.push('\n');
            }
            use std::io::Write;
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (targets, tallies);
    }
}

/// What a ping task hands back: its sequence number, the result, and the session to
/// reuse (session mode, still usable).
type Outcome = (u64, Result<PingReply, PingError>, Option<PingSession>);

/// Pings one target; prints its replies and errors as they come.
///
/// With both a count and a deadline (`-c N -w S`), pings go on until N replies came or the
/// deadline, and the target fails (status 1) unless N replies came: iputils ping's rule.
async fn run_target(run: TargetRun, mut stop: watch::Receiver<bool>) -> Done {
    let out = &*run.out;
    let s = &run.s;
    let name = &run.name;
    let mut done = Done {
        index: run.index,
        exit: Exit::Ok,
        addr: None,
        times: Vec::new(),
    };
    let target = &run.target;
    let addrs = tokio::select! {
        r = Box::pin(resolve(target, name, s.family, s.timeout)) => r,
        _ = stop.wait_for(|v| *v) => {
            done.exit = Exit::NoAnswer;
            return done;
        }
    };
    let addrs = match addrs {
        Ok(addrs) => addrs,
        Err(message) => {
            report(s, out, name, None, None, "resolve", &message);
            done.exit = Exit::Unresolved;
            return done;
        }
    };
    let mut addr = addrs[0];
    done.addr = Some(addr);
    let announce = !s.json && s.list.report == Report::Summaries;
    if announce && out.line(&format!("PING {name} ({addr})")).is_err() {
        done.exit = Exit::System;
        return done;
    }
    let addrs: Arc<[SocketAddr]> = addrs.into();
    let tally = &run.tallies[run.index];
    // --session keeps a connection per target for the whole run: the first `concurrency`
    // targets to get here keep one, the others (a list longer than the open-files limit
    // allows) connect for each ping, so the descriptors stay bounded.
    let session_slot = if s.session {
        run.sessions.clone().try_acquire_owned().ok()
    } else {
        None
    };

    let start = Instant::now();
    let deadline = async {
        match s.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut inflight: JoinSet<Outcome> = JoinSet::new();
    // Boxed: a target without --session should not carry a session's room.
    let mut idle_session: Option<Box<PingSession>> = None;
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut broken_pipe = false;
    let mut failed_task = false;
    // iputils: with a deadline, the count is of replies, not of pings sent.
    let count_replies = s.deadline.is_some();

    // One ping and no session (`-c 1` without `-w`, a fleet check): pinged here rather
    // than in a task of its own, with no ticker; stopped the same way.
    let single = s.count == Some(1) && !count_replies && session_slot.is_none();
    if single {
        lock(tally).transmitted += 1;
        let options = s.options(target);
        let limiter = &run.limiter;
        // Boxed once its turn comes, as the pings of the loop below are.
        let ping = Box::pin(async {
            let _permit = limiter.permit().await;
            limiter.ping_resolved(&addrs, &target.host, &options).await
        });
        tokio::select! {
            biased;
            Ok(_) = stop.wait_for(|v| *v) => {}
            _ = &mut deadline => {}
            result = ping => match take_result(&run, &mut done, &mut addr, 0, result) {
                Ok(replied) => received += u64::from(replied),
                Err(_) => broken_pipe = true,
            },
        }
    } else {
        let mut ticker = tokio::time::interval(s.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let more = match s.count {
                None => true,
                Some(c) if count_replies => received + (inflight.len() as u64) < c,
                Some(c) => sent < c,
            };
            // One ping of a target at a time: never two outstanding.
            let can_send = more && inflight.is_empty();
            if !more && inflight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Ok(_) = stop.wait_for(|v| *v) => break,
                _ = &mut deadline => break,
                Some(joined) = inflight.join_next() => {
                    let (seq, result, session) = match joined {
                        Ok(outcome) => outcome,
                        Err(e) => {
                            // A ping task that failed is an error the user sees, never a
                            // silent loss.
                            lock(tally).errors += 1;
                            failed_task = true;
                            done.times.push(None);
                            report(s, out, name, Some(addr), None, "internal", &task_failure(&e));
                            continue;
                        }
                    };
                    idle_session = session.map(Box::new);
                    match take_result(&run, &mut done, &mut addr, seq, result) {
                        Ok(replied) => received += u64::from(replied),
                        Err(_) => {
                            broken_pipe = true;
                            break;
                        }
                    }
                }
                _ = ticker.tick(), if can_send => {
                    let seq = sent;
                    sent += 1;
                    lock(tally).transmitted += 1;
                    let options = s.options(target);
                    let limiter = run.limiter.clone();
                    let addrs = addrs.clone();
                    let host = target.host.clone();
                    // The ping's state is boxed once its turn comes: thousands of targets
                    // waiting for a turn then cost a few bytes each, not a whole ping's.
                    if session_slot.is_some() {
                        let session = idle_session.take().map(|s| *s);
                        inflight.spawn(async move {
                            let _permit = limiter.permit().await;
                            Box::pin(ping_in_session(seq, &addrs, &host, session, options)).await
                        });
                    } else {
                        inflight.spawn(async move {
                            let _permit = limiter.permit().await;
                            let reply = Box::pin(limiter.ping_resolved(&addrs, &host, &options)).await;
                            (seq, reply, None)
                        });
                    }
                }
            }
        }
    }
    lock(tally).elapsed = start.elapsed();
    inflight.abort_all();
    if let Some(session) = idle_session.take() {
        let _ = timeout(Duration::from_secs(1), Box::pin((*session).close())).await;
    }
    drop(session_slot);
    done.exit = if broken_pipe || failed_task {
        Exit::System
    } else if received == 0 || (count_replies && s.count.is_some_and(|c| received < c)) {
        Exit::NoAnswer
    } else {
        Exit::Ok
    };
    done
}

/// Takes a ping's result into the target's tally and `done`, and shows it (a reply line or
/// record, or the error); whether it was a reply, or `Err` when stdout is gone.
fn take_result(
    run: &TargetRun,
    done: &mut Done,
    addr: &mut SocketAddr,
    seq: u64,
    result: Result<PingReply, PingError>,
) -> std::io::Result<bool> {
    let (s, name, tally) = (&run.s, &run.name, &run.tallies[run.index]);
    match result {
        Ok(reply) => {
            *addr = reply.peer;
            done.addr = Some(reply.peer);
            let ms = output::ms(reply.delay);
            done.times.push(Some(ms));
            {
                let mut t = lock(tally);
                t.received += 1;
                t.rtts_ms.push(ms);
            }
            let prefix = run.prefix.then_some(name.as_str());
            show_reply(s, &*run.out, prefix, name, seq, &reply).map(|()| true)
        }
        Err(e) => {
            done.times.push(None);
            if !e.is_timeout() {
                lock(tally).errors += 1;
            }
            if s.quiet || s.list.report != Report::Summaries {
                Ok(false)
            } else {
                report_ping_error(s, &*run.out, name, *addr, seq, &e).map(|()| false)
            }
        }
    }
}

/// A one-line message for a ping task that panicked or was cancelled.
fn task_failure(e: &tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "internal error: a ping task was cancelled".to_owned();
    }
    format!("internal error: a ping task failed ({e})")
}

/// One ping over the target's session, connecting it first if there is none. Hands the
/// session back unless it broke.
async fn ping_in_session(
    seq: u64,
    addrs: &[SocketAddr],
    host: &str,
    session: Option<PingSession>,
    options: PingOptions,
) -> Outcome {
    let mut session = match session {
        Some(session) => session,
        None => match PingSession::connect_addrs(addrs, host, &options).await {
            Ok(session) => session,
            Err(e) => return (seq, Err(e), None),
        },
    };
    session.set_timeout(options.timeout);
    let result = session.ping().await;
    // After a timeout the session stays usable: a late pong is skipped by its seq.
    let keep = match &result {
        Ok(_) => true,
        Err(e) => e.is_timeout(),
    };
    (seq, result, keep.then_some(session))
}

/// Prints a reply line (or record); with `prefix`, the line starts with the target, as
/// fping's do.
fn show_reply(
    s: &Settings,
    out: &impl Sink,
    prefix: Option<&str>,
    name: &str,
    seq: u64,
    reply: &PingReply,
) -> std::io::Result<()> {
    if s.quiet || s.list.report != Report::Summaries {
        return Ok(());
    }
    let t = &reply.timings;
    if s.json {
        let record = ReplyRecord {
            schema_version: SCHEMA_VERSION,
            kind: "reply",
            target: name,
            addr: output::addr_text(reply.peer),
            seq,
            time_ms: output::ms(reply.delay),
            connect_ms: output::ms(t.connect + t.hello),
            total_ms: output::ms(t.total),
            server_ms: t.server.map(output::ms),
        };
        return out.line_with(|line| record.write_json(line));
    }
    let mut line = output::reply_line(&output::addr_text(reply.peer), seq, reply.delay);
    if let Some(target) = prefix {
        line = format!("{target} : {line}");
    }
    if s.verbose {
        line.push_str(&timings_text(reply));
    }
    out.line(&line)
}

/// ` (connect 0.101 ms, total 0.523 ms, server 0.012 ms)`
fn timings_text(reply: &PingReply) -> String {
    let t = &reply.timings;
    let mut parts = Vec::new();
    if !(t.connect + t.hello).is_zero() {
        parts.push(format!(
            "connect {} ms",
            output::format_rtt(t.connect + t.hello)
        ));
    }
    parts.push(format!("total {} ms", output::format_rtt(t.total)));
    if let Some(server) = t.server {
        parts.push(format!("server {} ms", output::format_rtt(server)));
    }
    format!(" ({})", parts.join(", "))
}

fn report_ping_error(
    s: &Settings,
    out: &impl Sink,
    name: &str,
    addr: SocketAddr,
    seq: u64,
    e: &PingError,
) -> std::io::Result<()> {
    let (kind, message) = describe(e, s.timeout);
    if s.json {
        out.json(&ErrorRecord {
            schema_version: SCHEMA_VERSION,
            kind: "error",
            target: name,
            addr: Some(output::addr_text(addr)),
            seq: Some(seq),
            error_kind: kind,
            message,
        })
    } else {
        error(format!("{name}: seq={seq}: {message}"));
        Ok(())
    }
}

/// Reports an error that is not about one ping (resolution): a JSON record or a line on
/// stderr.
fn report(
    s: &Settings,
    out: &impl Sink,
    name: &str,
    addr: Option<SocketAddr>,
    seq: Option<u64>,
    kind: &'static str,
    message: &str,
) {
    if s.json {
        let _ = out.json(&ErrorRecord {
            schema_version: SCHEMA_VERSION,
            kind: "error",
            target: name,
            addr: addr.map(output::addr_text),
            seq,
            error_kind: kind,
            message: message.to_owned(),
        });
    } else {
        error(message);
    }
}

/// The kind (for JSON, the library's [`ErrorKind`](peng3dnet::ErrorKind) word) and a
/// one-line message of a ping error, with the CLI's advice.
pub(crate) fn describe(e: &PingError, allowed: Duration) -> (&'static str, String) {
    (e.kind().as_str(), message(e, allowed))
}

/// The one-line message of [`describe`].
fn message(e: &PingError, allowed: Duration) -> String {
    match e {
        PingError::Resolve { .. } => e.to_string(),
        PingError::Connect { addr, source } => {
            format!("cannot connect to {addr}: {}", io_text(source))
        }
        PingError::ConnectEach(failures) => {
            let each: Vec<String> = failures
                .iter()
                .map(|(addr, source)| format!("{addr}: {}", io_text(source)))
                .collect();
            format!("cannot connect to any address: {}", each.join("; "))
        }
        PingError::Timeout {
            phase: Phase::WaitingForHello,
            ..
        } => format!(
            "timed out waiting for hello (timeout {}s): the server accepted the connection \
                 but sent nothing; it may use TLS (try --tls), not be a peng3dnet server, or be \
                 overloaded",
            allowed.as_secs_f64()
        ),
        PingError::Timeout { phase, .. } => {
            format!("timed out {phase} (timeout {}s)", allowed.as_secs_f64())
        }
        PingError::TlsRequired => "the server requires TLS: add --tls".into(),
        PingError::NotPeng3dnet(m) => format!("not a peng3dnet server: {m}"),
        PingError::ProtocolMismatch => {
            "protocol version mismatch: the server speaks another peng3dnet protocol version".into()
        }
        PingError::ClosedByPeer(Some(CloseReason::UnknownConnType)) => {
            "the server is not pingable (it closed the connection with unknownconntype)".into()
        }
        PingError::ClosedByPeer(Some(reason)) => {
            format!("the server closed the connection: {reason}")
        }
        PingError::ClosedByPeer(None) => {
            "the server closed the connection without an answer".into()
        }
        PingError::Protocol(CloseReason::PacketTooLarge) => {
            "the server's reply is larger than this client accepts (raise --max-pong-bytes)".into()
        }
        PingError::Protocol(reason) => format!("protocol violation by the server ({reason})"),
        PingError::Io(e) => format!("connection lost: {}", io_text(e)),
        PingError::Frame(peng3dnet::FrameError::Io(e)) => {
            format!("connection lost: {}", io_text(e))
        }
        PingError::Tls(io) if peng3dnet::tls::peer_is_not_tls(io) => {
            "the server does not use TLS (its answer is not a TLS record): drop --tls".into()
        }
        other => other.to_string(),
    }
}

/// An I/O error in plain words, without the `(os error N)` suffix.
fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "connection timed out".into(),
        AddrNotAvailable => "address not available".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_owned(),
                None => text,
            }
        }
    }
}

/// `peng3dnet status`.
pub(crate) async fn run_status(mut args: StatusArgs) -> Exit {
    if let Err(exit) = crate::master_args::add_listed(&mut args.targets, &args.list.master).await {
        return exit;
    }
    let targets = match args.list.gather(&args.targets) {
        Ok(targets) => targets,
        Err(message) => {
            error(message);
            return Exit::Usage;
        }
    };
    if !targets_valid(&targets) {
        return Exit::Usage;
    }
    let c = &args.client;
    let tls = match client_tls(c) {
        Ok(tls) => tls,
        Err(exit) => return exit,
    };
    let settings = Settings {
        count: Some(1),
        interval: Duration::from_secs(1),
        timeout: c.timeout,
        deadline: None,
        quiet: false,
        session: false,
        json: c.json,
        verbose: c.verbose,
        data: c.data_map(),
        family: c.family(),
        tls,
        source: c.source,
        max_pong_bytes: c.max_pong_bytes,
        list: ListSettings {
            report: Report::Summaries,
            concurrency: args.list.concurrency.map(|n| n as usize),
            rate: args.list.rate,
        },
    };
    if targets.len() == 1
        && args.list.file.is_none()
        && args.list.master.master.is_none()
        && args.tries == 1
    {
        status(&targets[0], &settings).await
    } else {
        super::status::table(targets, &settings, args.sort, args.tries).await
    }
}

/// Pings `target` once and prints the server's data.
pub(crate) async fn status(target: &str, s: &Settings) -> Exit {
    let out = Out;
    let Ok(parsed) = Target::parse_default(target) else {
        return Exit::Usage;
    };
    let reply = tokio::select! {
        r = async {
            let addrs = resolve(&parsed, target, s.family, s.timeout)
                .await
                .map_err(|m| ("resolve", m))?;
            ping_addrs(&addrs, &parsed.host, &s.options(&parsed)).await.map_err(|e| {
                let (kind, message) = describe(&e, s.timeout);
                (kind, format!("{target}: {message}"))
            })
        } => r,
        _ = super::interrupted() => return Exit::NoAnswer,
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err((kind, message)) => {
            report(s, &out, target, None, None, kind, &message);
            return if kind == "resolve" {
                Exit::Unresolved
            } else {
                Exit::NoAnswer
            };
        }
    };
    let data = reply.server_data();
    let printed = if s.json {
        out.json(&StatusRecord {
            schema_version: SCHEMA_VERSION,
            kind: "status",
            target,
            addr: reply.peer.to_string(),
            time_ms: output::ms(reply.delay),
            data: output::to_json(&data),
        })
    } else {
        let mut text = format!(
            "target: {target}\naddress: {}\nlatency: {} ms\n",
            reply.peer,
            output::format_rtt(reply.delay)
        );
        if s.verbose {
            let t = &reply.timings;
            text.push_str(&format!(
                "timings: resolve {} ms, connect {} ms, hello {} ms, ping {} ms, total {} ms",
                output::format_rtt(t.resolve),
                output::format_rtt(t.connect),
                output::format_rtt(t.hello),
                output::format_rtt(t.ping),
                output::format_rtt(t.total),
            ));
            if let Some(server) = t.server {
                text.push_str(&format!(", server {} ms", output::format_rtt(server)));
            }
            text.push('\n');
        }
        text.push_str("data:\n");
        text.push_str(&output::pretty(&data, 2));
        out.print(&text)
    };
    if printed.is_err() {
        Exit::System
    } else {
        Exit::Ok
    }
}
