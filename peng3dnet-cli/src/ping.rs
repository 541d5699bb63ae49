//! `ping` and `status`: pinging servers and reporting what they answer.

use peng3dnet::tls::ClientTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peng3dnet::error::Phase;
use peng3dnet::ping::{ping_server, PingError, PingOptions, PingReply, PingSession};
use peng3dnet::target::{Family, Target};
use peng3dnet::{CloseReason, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::output::{
    self, ErrorRecord, Out, ReplyRecord, StatusRecord, SummaryRecord, Tally, SCHEMA_VERSION,
};
use super::{error, Exit, PingArgs, StatusArgs};

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

/// Checks the syntax of targets; prints the problem and returns `false` on a bad one.
fn targets_valid(targets: &[String]) -> bool {
    for t in targets {
        if let Err(e) = Target::parse_default(t) {
            error(e);
            return false;
        }
    }
    true
}

/// `peng3dnet ping`.
pub(crate) async fn run_ping(args: PingArgs) -> Exit {
    if !targets_valid(&args.targets) {
        return Exit::Usage;
    }
    let tls = match client_tls(&args.client) {
        Ok(tls) => tls,
        Err(exit) => return exit,
    };
    let settings = Settings {
        count: args.count,
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
    };
    run_targets(args.targets, settings).await
}

/// Pings every target concurrently until each is done, the deadline, or Ctrl-C/SIGTERM;
/// prints a summary per target and returns the worst exit status.
pub(crate) async fn run_targets(targets: Vec<String>, settings: Settings) -> Exit {
    let (stop_tx, stop) = watch::channel(false);
    let signals = tokio::spawn(async move {
        super::interrupted().await;
        let _ = stop_tx.send(true);
        // Keep the sender alive so receivers see the value, not a closed channel.
        std::future::pending::<()>().await;
    });
    let settings = Arc::new(settings);
    let mut tasks = JoinSet::new();
    for name in targets {
        tasks.spawn(run_target(name, settings.clone(), stop.clone()));
    }
    let mut exit = Exit::Ok;
    while let Some(joined) = tasks.join_next().await {
        exit = exit.max(joined.unwrap_or_else(|e| {
            error(task_failure(&e));
            Exit::System
        }));
    }
    signals.abort();
    exit
}

/// Resolves a target to its first address of the chosen family, within the timeout.
async fn resolve(target: &Target, name: &str, s: &Settings) -> Result<SocketAddr, String> {
    match timeout(s.timeout, target.resolve(s.family)).await {
        Ok(Ok(addrs)) => addrs
            .first()
            .copied()
            .ok_or_else(|| format!("cannot resolve {name}: no address")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound && s.family != Family::Any => {
            let family = if s.family == Family::V4 {
                "IPv4"
            } else {
                "IPv6"
            };
            Err(format!("cannot resolve {name}: no {family} address"))
        }
        Ok(Err(e)) => Err(format!("cannot resolve {name}: {e}")),
        Err(_) => Err(format!("cannot resolve {name}: timed out")),
    }
}

/// What a ping task hands back: its sequence number, the result, and the session to
/// reuse (session mode, still usable).
type Outcome = (u64, Result<PingReply, PingError>, Option<PingSession>);

/// Pings one target; prints its replies, errors and summary.
async fn run_target(name: String, s: Arc<Settings>, mut stop: watch::Receiver<bool>) -> Exit {
    let out = Out;
    let Ok(target) = Target::parse_default(&name) else {
        return Exit::Usage;
    };
    let addr = tokio::select! {
        r = resolve(&target, &name, &s) => r,
        _ = stop.wait_for(|v| *v) => return Exit::NoAnswer,
    };
    let addr = match addr {
        Ok(addr) => addr,
        Err(message) => {
            report(&s, &out, &name, None, None, "resolve", &message);
            return Exit::Unresolved;
        }
    };
    if !s.json && out.line(&format!("PING {name} ({addr})")).is_err() {
        return Exit::System;
    }

    let start = Instant::now();
    let mut ticker = tokio::time::interval(s.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = async {
        match s.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut inflight: JoinSet<Outcome> = JoinSet::new();
    let mut idle_session: Option<PingSession> = None;
    let mut tally = Tally::default();
    let mut sent = 0u64;
    let mut broken_pipe = false;
    let mut failed_task = false;

    loop {
        let more = s.count.is_none_or(|c| sent < c);
        // A session carries one ping at a time.
        let can_send = more && (!s.session || inflight.is_empty());
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
                        tally.errors += 1;
                        failed_task = true;
                        report(&s, &out, &name, Some(addr), None, "internal", &task_failure(&e));
                        continue;
                    }
                };
                idle_session = session;
                let shown = match result {
                    Ok(reply) => {
                        tally.received += 1;
                        tally.rtts_ms.push(output::ms(reply.delay));
                        show_reply(&s, &out, &name, seq, &reply)
                    }
                    Err(e) => {
                        if !e.is_timeout() {
                            tally.errors += 1;
                        }
                        if s.quiet {
                            Ok(())
                        } else {
                            report_ping_error(&s, &out, &name, addr, seq, &e)
                        }
                    }
                };
                if shown.is_err() {
                    broken_pipe = true;
                    break;
                }
            }
            _ = ticker.tick(), if can_send => {
                let seq = sent;
                sent += 1;
                tally.transmitted += 1;
                let options = s.options(&target);
                if s.session {
                    let session = idle_session.take();
                    inflight.spawn(ping_in_session(seq, addr, session, options));
                } else {
                    inflight.spawn(async move {
                        (seq, ping_server(&addr.to_string(), &options).await, None)
                    });
                }
            }
        }
    }
    tally.elapsed = start.elapsed();
    inflight.abort_all();
    if let Some(session) = idle_session.take() {
        let _ = timeout(Duration::from_secs(1), session.close()).await;
    }
    if broken_pipe {
        return Exit::System;
    }
    let printed = if s.json {
        out.json(&SummaryRecord::new(&name, Some(addr.to_string()), &tally))
    } else {
        out.print(&output::summary_text(&name, &tally, s.verbose))
    };
    if printed.is_err() || failed_task {
        Exit::System
    } else if tally.received > 0 {
        Exit::Ok
    } else {
        Exit::NoAnswer
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
    addr: SocketAddr,
    session: Option<PingSession>,
    options: PingOptions,
) -> Outcome {
    let mut session = match session {
        Some(session) => session,
        None => match PingSession::connect_addr(addr, &options).await {
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

fn show_reply(
    s: &Settings,
    out: &Out,
    name: &str,
    seq: u64,
    reply: &PingReply,
) -> std::io::Result<()> {
    if s.quiet {
        return Ok(());
    }
    let t = &reply.timings;
    if s.json {
        return out.json(&ReplyRecord {
            schema_version: SCHEMA_VERSION,
            kind: "reply",
            target: name,
            addr: reply.peer.to_string(),
            seq,
            time_ms: output::ms(reply.delay),
            connect_ms: output::ms(t.connect + t.hello),
            total_ms: output::ms(t.total),
            server_ms: t.server.map(output::ms),
        });
    }
    let mut line = output::reply_line(&reply.peer.to_string(), seq, reply.delay);
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
    out: &Out,
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
            addr: Some(addr.to_string()),
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
    out: &Out,
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
            addr: addr.map(|a| a.to_string()),
            seq,
            error_kind: kind,
            message: message.to_owned(),
        });
    } else {
        error(message);
    }
}

/// The kind (for JSON) and a one-line message of a ping error.
pub(crate) fn describe(e: &PingError, allowed: Duration) -> (&'static str, String) {
    match e {
        PingError::Resolve { .. } => ("resolve", e.to_string()),
        PingError::Connect { addr, source } => {
            let kind = if source.kind() == std::io::ErrorKind::ConnectionRefused {
                "refused"
            } else {
                "connect"
            };
            (
                kind,
                format!("cannot connect to {addr}: {}", io_text(source)),
            )
        }
        PingError::Timeout {
            phase: Phase::WaitingForHello,
            ..
        } => (
            "timeout",
            format!(
                "timed out waiting for hello (timeout {}s): the server accepted the connection \
                 but sent nothing; it may use TLS (try --tls), not be a peng3dnet server, or be \
                 overloaded",
                allowed.as_secs_f64()
            ),
        ),
        PingError::Timeout { phase, .. } => (
            "timeout",
            format!("timed out {phase} (timeout {}s)", allowed.as_secs_f64()),
        ),
        PingError::TlsRequired => ("tls_required", "the server requires TLS: add --tls".into()),
        PingError::NotPeng3dnet(m) => ("not_peng3dnet", format!("not a peng3dnet server: {m}")),
        PingError::ProtocolMismatch => (
            "protocol_mismatch",
            "protocol version mismatch: the server speaks another peng3dnet protocol version"
                .into(),
        ),
        PingError::ClosedByPeer(Some(CloseReason::UnknownConnType)) => (
            "closed",
            "the server is not pingable (it closed the connection with unknownconntype)".into(),
        ),
        PingError::ClosedByPeer(Some(reason)) => (
            "closed",
            format!("the server closed the connection: {reason}"),
        ),
        PingError::ClosedByPeer(None) => (
            "closed",
            "the server closed the connection without an answer".into(),
        ),
        PingError::Protocol(reason) => (
            "protocol",
            format!("protocol violation by the server ({reason})"),
        ),
        PingError::Io(e) => ("io", format!("connection lost: {}", io_text(e))),
        PingError::Frame(peng3dnet::FrameError::Io(e)) => {
            ("io", format!("connection lost: {}", io_text(e)))
        }
        PingError::Tls(io) if peng3dnet::tls::peer_is_not_tls(io) => (
            "tls_not_used",
            "the server does not use TLS (its answer is not a TLS record): drop --tls".into(),
        ),
        PingError::Tls(io) => (peng3dnet::tls::handshake_error_kind(io), e.to_string()),
        other => ("other", other.to_string()),
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
pub(crate) async fn run_status(args: StatusArgs) -> Exit {
    if !targets_valid(std::slice::from_ref(&args.target)) {
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
    };
    status(&args.target, &settings).await
}

/// Pings `target` once and prints the server's data.
pub(crate) async fn status(target: &str, s: &Settings) -> Exit {
    let out = Out;
    let Ok(parsed) = Target::parse_default(target) else {
        return Exit::Usage;
    };
    let reply = tokio::select! {
        r = async {
            let addr = resolve(&parsed, target, s).await.map_err(|m| ("resolve", m))?;
            ping_server(&addr.to_string(), &s.options(&parsed)).await.map_err(|e| {
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
