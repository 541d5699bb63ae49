//! Output of the command-line tool: the text lines, the summary arithmetic and the JSON
//! records, as pure functions (no I/O here except [`Out`]).
//!
//! # JSON output (`--json`, schema version 1)
//!
//! Newline-delimited JSON on stdout: one object per line. Every object has
//! `"schema_version": 1` and a `"type"`; the other fields by type are:
//!
//! | type | fields |
//! |---|---|
//! | `reply` | `target`, `addr`, `seq`, `time_ms`, `connect_ms`, `total_ms`, `server_ms` |
//! | `error` | `target`, `addr`, `seq`, `kind`, `message` |
//! | `summary` | `target`, `addr`, `transmitted`, `received`, `errors`, `loss_percent`, `time_ms`, `rtt_ms` |
//! | `status` | `target`, `addr`, `time_ms`, `data` |
//!
//! - `target` is the target as given on the command line; `addr` the socket address
//!   pinged (`null` when the name did not resolve).
//! - `seq` counts a target's pings from 0 (`null` for an error that is not about one ping).
//! - `time_ms` of a reply or status is the round trip of the ping message (from ping sent
//!   to pong received), in milliseconds with microsecond precision; `connect_ms` the TCP
//!   connect plus the wait for the server's hello (0 for later pings of a `--session`);
//!   `total_ms` everything from the start of the ping (resolving excluded) to the pong;
//!   `server_ms` the server's own processing time when it reports one, else `null`.
//! - `kind` of an error is one of `resolve`, `refused`, `connect`, `timeout`,
//!   `not_peng3dnet`, `protocol_mismatch`, `closed`, `protocol`, `io`, `other`.
//! - `loss_percent` and `time_ms` of a summary are integers, as ping prints them (loss
//!   truncated; `time_ms` the wall time of the target's run); `errors` counts failed pings
//!   that were not timeouts (refused, closed...); `rtt_ms` is `null` when nothing was
//!   received, else an object `{min, avg, max, mdev, p50, p90, p99}` in milliseconds.
//!   Percentiles are nearest-rank.
//! - `data` of a status is the server's data (the pong without `oldmsg`, the server's
//!   timestamps and the keys the client adds), converted from msgpack: binary strings
//!   become lowercase **hex** strings, map keys that are not strings are stringified
//!   (`1`, `true`, `null`, hex for binary, JSON text for arrays and maps), non-finite
//!   floats become `null`, extension values become `{"ext": type, "hex": "..."}`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use peng3dnet::Value;
use serde::Serialize;

/// The version of the JSON records; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Where lines go: stdout, one whole block per write so that concurrent targets do not
/// interleave inside a block. A failed write (a closed pipe) makes the caller stop.
#[derive(Debug, Clone, Copy, Default)]
pub struct Out;

/// Somewhere lines of output go: [`Out`] writes each at once; a `ping` run's reply lines
/// are gathered and written a batch at a time. The functions that print a reply or an
/// error take either.
///
/// ```no_run
/// use peng3dnet_cli::output::{Out, Sink};
///
/// fn announce(out: &impl Sink) -> std::io::Result<()> {
///     out.line("PING lobby.example (192.0.2.7:8080)")
/// }
/// announce(&Out)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Sink {
    /// Adds one line (without its newline).
    fn line(&self, line: &str) -> std::io::Result<()>;

    /// Adds one JSON record as a line.
    fn json<T: Serialize>(&self, record: &T) -> std::io::Result<()>;

    /// Adds the line that `fill` writes (without its newline), such as a record's
    /// `write_json`.
    fn line_with(&self, fill: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()>;
}

impl Sink for Out {
    fn line_with(&self, fill: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(256);
        fill(&mut line);
        line.push(b'\n');
        self.print_bytes(&line)
    }

    fn line(&self, line: &str) -> std::io::Result<()> {
        Out::line(self, line)
    }

    fn json<T: Serialize>(&self, record: &T) -> std::io::Result<()> {
        Out::json(self, record)
    }
}

/// Reports a failed write to stdout on stderr, once per process, as iputils' `ping:
/// write error` (a full disk, `> /dev/full`): the exit status alone (4) does not say
/// why. A closed pipe (`| head`) is not reported: the reader chose to stop.
pub fn write_error(e: &std::io::Error) {
    static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if e.kind() == std::io::ErrorKind::BrokenPipe
        || REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    let text = e.to_string();
    // "No space left on device (os error 28)": the words, not the number.
    let text = match text.rfind(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    crate::error(format!("write error: {text}"));
}

impl Out {
    /// Writes `text` (with its newlines) to stdout and flushes.
    pub fn print(&self, text: &str) -> std::io::Result<()> {
        self.print_bytes(text.as_bytes())
    }

    /// Writes `bytes` (whole lines) to stdout and flushes; a failure is reported once
    /// ([`write_error`]).
    pub fn print_bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        let written = stdout.write_all(bytes).and_then(|()| stdout.flush());
        if let Err(e) = &written {
            write_error(e);
        }
        written
    }

    /// Writes one line.
    pub fn line(&self, line: &str) -> std::io::Result<()> {
        self.print(&format!("{line}\n"))
    }

    /// Writes one JSON record as a line.
    pub fn json<T: Serialize>(&self, record: &T) -> std::io::Result<()> {
        // Room for a reply record at once: one allocation, no growing, no copy for the
        // newline.
        let mut line = Vec::with_capacity(256);
        serde_json::to_writer(&mut line, record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.print_bytes(&line)
    }
}

/// A duration in milliseconds, rounded to the microsecond.
pub fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// A socket address as text, as `Display` writes it (`127.0.0.1:8080`, `[::1]:8080`).
/// An IPv4 address is written digit by digit: `Display` costs about 2,000 instructions
/// (it allows for padding), and a list writes one or two for each target.
///
/// ```
/// use peng3dnet_cli::output::addr_text;
///
/// assert_eq!(addr_text("127.0.0.1:8080".parse().unwrap()), "127.0.0.1:8080");
/// assert_eq!(addr_text("[::1]:8080".parse().unwrap()), "[::1]:8080");
/// ```
pub fn addr_text(addr: SocketAddr) -> String {
    let SocketAddr::V4(v4) = addr else {
        return addr.to_string();
    };
    let mut text = String::with_capacity(21);
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_decimal(&mut text, u32::from(octet));
    }
    text.push(':');
    push_decimal(&mut text, u32::from(v4.port()));
    text
}

/// Appends `n` in decimal.
fn push_decimal(text: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        // A digit: always below 10.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        text.push(char::from(d));
    }
}

/// A round-trip time as iputils ping prints it after `time=`: three significant digits
/// (`0.412`, `1.23`, `12.3`, `123`).
pub fn format_rtt(d: Duration) -> String {
    let us = d.as_micros();
    if us >= 100_000 - 50 {
        format!("{}", (us + 500) / 1000)
    } else if us >= 10_000 - 5 {
        let t = (us + 50) / 100;
        format!("{}.{:01}", t / 10, t % 10)
    } else if us >= 1000 {
        let t = (us + 5) / 10;
        format!("{}.{:02}", t / 100, t % 100)
    } else {
        format!("{}.{:03}", us / 1000, us % 1000)
    }
}

/// A reply line: `reply from 127.0.0.1:8080: seq=0 time=0.412 ms`.
pub fn reply_line(addr: &str, seq: u64, rtt: Duration) -> String {
    format!("reply from {addr}: seq={seq} time={} ms", format_rtt(rtt))
}

/// Packet loss in percent as iputils ping prints it: an integer, truncated.
pub fn loss_percent(transmitted: u64, received: u64) -> u64 {
    (transmitted.saturating_sub(received) * 100)
        .checked_div(transmitted)
        .unwrap_or(0)
}

/// Mean deviation as iputils computes it: `sqrt(mean(x²) - mean(x)²)`.
pub fn mdev(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let mean_sq = samples.iter().map(|x| x * x).sum::<f64>() / n;
    (mean_sq - mean * mean).max(0.0).sqrt()
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted samples: the smallest sample with
/// at least `p`% of the samples at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Round-trip statistics, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rtt {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Slowest.
    pub max: f64,
    /// Mean deviation ([`mdev`]).
    pub mdev: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Rtt {
    /// Statistics of round trips in milliseconds; `None` when there are none.
    pub fn of(samples_ms: &[f64]) -> Option<Rtt> {
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        Some(Rtt {
            min: *sorted.first()?,
            max: *sorted.last()?,
            avg: sorted.iter().sum::<f64>() / n,
            mdev: mdev(&sorted),
            p50: percentile(&sorted, 50.0)?,
            p90: percentile(&sorted, 90.0)?,
            p99: percentile(&sorted, 99.0)?,
        })
    }
}

impl Rtt {
    /// Every figure rounded to the microsecond (three decimals of a millisecond).
    pub fn rounded(self) -> Rtt {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        Rtt {
            min: r(self.min),
            avg: r(self.avg),
            max: r(self.max),
            mdev: r(self.mdev),
            p50: r(self.p50),
            p90: r(self.p90),
            p99: r(self.p99),
        }
    }
}

/// What happened to one target's pings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Pings sent (or attempted).
    pub transmitted: u64,
    /// Pongs received.
    pub received: u64,
    /// Failed pings that were not timeouts.
    pub errors: u64,
    /// Round trips of the pongs, in milliseconds.
    pub rtts_ms: Vec<f64>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// The statistics block printed at the end, in iputils ping's words and layout
/// (with a leading empty line, as ping prints it). `verbose` adds the percentiles.
pub fn summary_text(target: &str, tally: &Tally, verbose: bool) -> String {
    let mut s = format!("\n--- {target} ping statistics ---\n");
    let _ = write!(
        s,
        "{} packets transmitted, {} received",
        tally.transmitted, tally.received
    );
    if tally.errors > 0 {
        let _ = write!(s, ", +{} errors", tally.errors);
    }
    if tally.transmitted > 0 {
        let _ = write!(
            s,
            ", {}% packet loss, time {}ms",
            loss_percent(tally.transmitted, tally.received),
            elapsed_ms(tally.elapsed)
        );
    }
    s.push('\n');
    if let Some(rtt) = Rtt::of(&tally.rtts_ms) {
        let _ = writeln!(
            s,
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            rtt.min, rtt.avg, rtt.max, rtt.mdev
        );
        if verbose {
            let _ = writeln!(
                s,
                "rtt p50/p90/p99 = {:.3}/{:.3}/{:.3} ms",
                rtt.p50, rtt.p90, rtt.p99
            );
        }
    }
    s
}

/// Elapsed wall time in whole milliseconds, rounded.
pub fn elapsed_ms(d: Duration) -> u64 {
    u64::try_from((d.as_micros() + 500) / 1000).unwrap_or(u64::MAX)
}

/// A `reply` record.
#[derive(Debug, Clone, Serialize)]
pub struct ReplyRecord<'a> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `"reply"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Target as given.
    pub target: &'a str,
    /// Address that answered.
    pub addr: String,
    /// Sequence number.
    pub seq: u64,
    /// Round trip of the ping, ms.
    pub time_ms: f64,
    /// Connect and hello, ms.
    pub connect_ms: f64,
    /// Whole ping, ms.
    pub total_ms: f64,
    /// Server's processing time, ms.
    pub server_ms: Option<f64>,
}

/// An `error` record.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord<'a> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `"error"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Target as given.
    pub target: &'a str,
    /// Address tried, if resolved.
    pub addr: Option<String>,
    /// Sequence number of the failed ping, if any.
    pub seq: Option<u64>,
    /// Error kind (see the module documentation).
    #[serde(rename = "kind")]
    pub error_kind: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// A `summary` record.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRecord<'a> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `"summary"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Target as given.
    pub target: &'a str,
    /// Address pinged.
    pub addr: Option<String>,
    /// Pings sent.
    pub transmitted: u64,
    /// Pongs received.
    pub received: u64,
    /// Failed pings other than timeouts.
    pub errors: u64,
    /// Loss, integer percent.
    pub loss_percent: u64,
    /// Wall time of the run, ms.
    pub time_ms: u64,
    /// Round-trip statistics, `None` if nothing was received.
    pub rtt_ms: Option<Rtt>,
}

impl<'a> SummaryRecord<'a> {
    /// The summary of a tally.
    pub fn new(target: &'a str, addr: Option<String>, tally: &Tally) -> Self {
        SummaryRecord {
            schema_version: SCHEMA_VERSION,
            kind: "summary",
            target,
            addr,
            transmitted: tally.transmitted,
            received: tally.received,
            errors: tally.errors,
            loss_percent: loss_percent(tally.transmitted, tally.received),
            time_ms: elapsed_ms(tally.elapsed),
            rtt_ms: Rtt::of(&tally.rtts_ms).map(Rtt::rounded),
        }
    }
}

// The two records a list of targets writes for each target (a reply and a summary) are
// written field by field: each key as the literal bytes serde_json writes for it, each value
// through serde_json (strings escaped, numbers as it prints them, a non-finite float as
// `null`). The line is serde_json's byte for byte (tested) without its per-key work: about
// a third of the instructions of the two records.

impl ReplyRecord<'_> {
    /// Appends the record as serde_json writes it (without a newline).
    ///
    /// ```
    /// use peng3dnet_cli::output::{ReplyRecord, SCHEMA_VERSION};
    ///
    /// let record = ReplyRecord {
    ///     schema_version: SCHEMA_VERSION,
    ///     kind: "reply",
    ///     target: "lobby.example",
    ///     addr: "192.0.2.7:8080".into(),
    ///     seq: 0,
    ///     time_ms: 0.412,
    ///     connect_ms: 0.1,
    ///     total_ms: 0.52,
    ///     server_ms: None,
    /// };
    /// let mut line = Vec::new();
    /// record.write_json(&mut line);
    /// assert_eq!(line, serde_json::to_vec(&record).unwrap());
    /// ```
    pub fn write_json(&self, out: &mut Vec<u8>) {
        json_head(out, self.schema_version, self.kind, self.target, &self.addr);
        out.extend_from_slice(b",\"seq\":");
        json_value(out, &self.seq);
        out.extend_from_slice(b",\"time_ms\":");
        json_value(out, &self.time_ms);
        out.extend_from_slice(b",\"connect_ms\":");
        json_value(out, &self.connect_ms);
        out.extend_from_slice(b",\"total_ms\":");
        json_value(out, &self.total_ms);
        out.extend_from_slice(b",\"server_ms\":");
        json_value(out, &self.server_ms);
        out.push(b'}');
    }
}

impl SummaryRecord<'_> {
    /// Appends the record as serde_json writes it (without a newline).
    ///
    /// ```
    /// use peng3dnet_cli::output::{SummaryRecord, Tally};
    ///
    /// let tally = Tally { transmitted: 2, received: 1, rtts_ms: vec![0.4], ..Tally::default() };
    /// let record = SummaryRecord::new("lobby.example", None, &tally);
    /// let mut line = Vec::new();
    /// record.write_json(&mut line);
    /// assert_eq!(line, serde_json::to_vec(&record).unwrap());
    /// ```
    pub fn write_json(&self, out: &mut Vec<u8>) {
        json_head(out, self.schema_version, self.kind, self.target, &self.addr);
        out.extend_from_slice(b",\"transmitted\":");
        json_value(out, &self.transmitted);
        out.extend_from_slice(b",\"received\":");
        json_value(out, &self.received);
        out.extend_from_slice(b",\"errors\":");
        json_value(out, &self.errors);
        out.extend_from_slice(b",\"loss_percent\":");
        json_value(out, &self.loss_percent);
        out.extend_from_slice(b",\"time_ms\":");
        json_value(out, &self.time_ms);
        out.extend_from_slice(b",\"rtt_ms\":");
        match &self.rtt_ms {
            None => out.extend_from_slice(b"null"),
            Some(rtt) => {
                let fields = [
                    (&b"{\"min\":"[..], rtt.min),
                    (b",\"avg\":", rtt.avg),
                    (b",\"max\":", rtt.max),
                    (b",\"mdev\":", rtt.mdev),
                    (b",\"p50\":", rtt.p50),
                    (b",\"p90\":", rtt.p90),
                    (b",\"p99\":", rtt.p99),
                ];
                for (key, value) in fields {
                    out.extend_from_slice(key);
                    json_value(out, &value);
                }
                out.push(b'}');
            }
        }
        out.push(b'}');
    }
}

/// Opens a record with the fields every record starts with (`schema_version`, `type`,
/// `target`, `addr`).
fn json_head(
    out: &mut Vec<u8>,
    schema_version: u32,
    kind: &str,
    target: &str,
    addr: &impl Serialize,
) {
    out.extend_from_slice(b"{\"schema_version\":");
    json_value(out, &schema_version);
    out.extend_from_slice(b",\"type\":");
    json_value(out, kind);
    out.extend_from_slice(b",\"target\":");
    json_value(out, target);
    out.extend_from_slice(b",\"addr\":");
    json_value(out, addr);
}

/// Appends one value as serde_json writes it. Writing into a `Vec` cannot fail, nor can
/// these values (strings, integers, floats and options of them).
fn json_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

/// A `status` record.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRecord<'a> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `"status"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Target as given.
    pub target: &'a str,
    /// Address that answered.
    pub addr: String,
    /// Round trip of the ping, ms.
    pub time_ms: f64,
    /// The server's data.
    pub data: serde_json::Value,
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Converts a msgpack value to JSON (see the module documentation for the rules).
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => J::from(u),
            (None, Some(s)) => J::from(s),
            _ => J::Null,
        },
        Value::F32(f) => float_json(f64::from(*f)),
        Value::F64(f) => float_json(*f),
        Value::String(s) => J::String(s.as_str().map_or_else(
            || String::from_utf8_lossy(s.as_bytes()).into_owned(),
            str::to_owned,
        )),
        Value::Binary(b) => J::String(hex(b)),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (key_string(k), to_json(v)))
                .collect(),
        ),
        Value::Ext(t, data) => serde_json::json!({ "ext": t, "hex": hex(data) }),
    }
}

fn float_json(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// A map key as text: strings as they are, everything else as its JSON text (binary as
/// hex).
pub fn key_string(k: &Value) -> String {
    match to_json(k) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Text from a peer, made safe for a terminal: C0 controls (newline and tab included),
/// DEL and C1 controls become `\xNN` (C0, DEL) or `\u{NN}` (C1) escapes, so a hostile
/// server cannot retitle, clear or otherwise drive the user's terminal, nor forge lines.
pub fn escape_text(s: &str) -> String {
    peng3dnet::text::escape(s).into_owned()
}

/// A map key for the human-readable display: [`key_string`], escaped.
fn key_text(k: &Value) -> String {
    escape_text(&key_string(k))
}

/// A scalar as text for the human-readable display: strings without quotes (escaped,
/// see [`escape_text`]), binary as `<N bytes: hex>`, others as JSON.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::Binary(b) => format!("<{} bytes: {}>", b.len(), hex(b)),
        other => match to_json(other) {
            serde_json::Value::String(s) => escape_text(&s),
            json => escape_text(&json.to_string()),
        },
    }
}

fn is_nested(v: &Value) -> bool {
    match v {
        Value::Map(m) => !m.is_empty(),
        Value::Array(a) => a
            .iter()
            .any(|x| matches!(x, Value::Map(_) | Value::Array(_))),
        _ => false,
    }
}

/// Pretty-prints a value as indented `key: value` lines: one key per line, nested maps
/// indented by two spaces under their key, arrays of scalars inline (`[1, 2]`), arrays
/// holding maps or arrays as `- item` lines. Each line ends with a newline.
pub fn pretty(v: &Value, indent: usize) -> String {
    let mut out = String::new();
    pretty_into(&mut out, v, indent);
    out
}

fn pretty_into(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Map(entries) => {
            for (k, val) in entries {
                let key = key_text(k);
                if is_nested(val) {
                    let _ = writeln!(out, "{pad}{key}:");
                    pretty_into(out, val, indent + 2);
                } else {
                    let _ = writeln!(out, "{pad}{key}: {}", inline(val));
                }
            }
        }
        Value::Array(items) if is_nested(v) => {
            for item in items {
                if is_nested(item) {
                    let _ = writeln!(out, "{pad}-");
                    pretty_into(out, item, indent + 2);
                } else {
                    let _ = writeln!(out, "{pad}- {}", inline(item));
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", inline(other));
        }
    }
}

/// A value that is not nested, on one line.
fn inline(v: &Value) -> String {
    match v {
        Value::Map(m) if m.is_empty() => "{}".into(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        other => scalar_text(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peng3dnet::text::is_control;

    #[test]
    fn reply_and_summary_records_are_written_as_serde_json_writes_them() {
        let names = [
            "a.example:9000",
            "quote \" back\\slash \u{1} tab\t é \u{2028}",
            "",
        ];
        let floats = [
            0.0,
            0.412,
            1.0e-7,
            123456.789,
            f64::NAN,
            f64::INFINITY,
            -0.0,
        ];
        for name in names {
            for (i, &x) in floats.iter().enumerate() {
                let reply = ReplyRecord {
                    schema_version: SCHEMA_VERSION,
                    kind: "reply",
                    target: name,
                    addr: format!("127.0.0.{i}:8080"),
                    seq: u64::MAX - i as u64,
                    time_ms: x,
                    connect_ms: -x,
                    total_ms: x * 3.0,
                    server_ms: (i % 2 == 0).then_some(x),
                };
                let mut written = Vec::new();
                reply.write_json(&mut written);
                assert_eq!(written, serde_json::to_vec(&reply).unwrap());

                let tally = Tally {
                    transmitted: 3 + i as u64,
                    received: i as u64,
                    errors: 1,
                    rtts_ms: floats[..i].to_vec(),
                    elapsed: Duration::from_micros(1_234_567 * i as u64),
                };
                let addr = (i % 2 == 1).then(|| name.to_owned());
                let summary = SummaryRecord::new(name, addr, &tally);
                let mut written = Vec::new();
                summary.write_json(&mut written);
                assert_eq!(written, serde_json::to_vec(&summary).unwrap());
            }
        }
    }

    #[test]
    fn addr_text_is_what_display_writes() {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for octet in 0..=255u8 {
            for port in [0, 1, 9, 10, 99, 100, 8080, 65535] {
                addrs.push(SocketAddr::from((
                    [octet, 255 - octet, octet / 10, 0],
                    port,
                )));
            }
        }
        addrs.push("[::1]:8080".parse().unwrap());
        addrs.push("[fe80::1%2]:1".parse().unwrap());
        addrs.push("[::ffff:127.0.0.1]:65535".parse().unwrap());
        for addr in addrs {
            assert_eq!(addr_text(addr), addr.to_string());
        }
    }
    use peng3dnet::value::map;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn mdev_is_sqrt_of_mean_square_minus_square_mean() {
        assert!(close(mdev(&[1.0, 1.0, 1.0]), 0.0));
        // mean 2, mean of squares 14/3: sqrt(14/3 - 4) = sqrt(2/3)
        assert!(close(mdev(&[1.0, 2.0, 3.0]), (2.0f64 / 3.0).sqrt()));
        assert!(close(mdev(&[0.101, 0.150]), 0.0245));
        assert!(close(mdev(&[]), 0.0));
        assert!(close(mdev(&[5.0]), 0.0));
    }

    #[test]
    fn loss_is_an_integer_percent_truncated_like_ping() {
        assert_eq!(loss_percent(3, 3), 0);
        assert_eq!(loss_percent(3, 2), 33);
        assert_eq!(loss_percent(3, 1), 66);
        assert_eq!(loss_percent(3, 0), 100);
        assert_eq!(loss_percent(0, 0), 0);
        assert_eq!(loss_percent(7, 6), 14);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&v, 90.0), Some(9.0));
        assert_eq!(percentile(&v, 99.0), Some(10.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[4.0], 99.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
    }

    #[test]
    fn rtt_statistics() {
        let r = Rtt::of(&[0.150, 0.101, 0.109]).unwrap();
        assert!(close(r.min, 0.101) && close(r.max, 0.150));
        assert!(close(r.avg, 0.12));
        assert!(close(r.p50, 0.109) && close(r.p99, 0.150));
        assert!(Rtt::of(&[]).is_none());
        let rounded = Rtt::of(&[0.1001, 0.2]).unwrap().rounded();
        assert_eq!((rounded.avg, rounded.mdev), (0.15, 0.05));
    }

    #[test]
    fn rtt_is_printed_like_iputils() {
        let us = Duration::from_micros;
        assert_eq!(format_rtt(us(412)), "0.412");
        assert_eq!(format_rtt(us(43)), "0.043");
        assert_eq!(format_rtt(us(1234)), "1.23");
        assert_eq!(format_rtt(us(12_345)), "12.3");
        assert_eq!(format_rtt(us(123_456)), "123");
        assert_eq!(
            reply_line("127.0.0.1:8080", 0, us(412)),
            "reply from 127.0.0.1:8080: seq=0 time=0.412 ms"
        );
    }

    #[test]
    fn summary_has_ping_words_and_layout() {
        let tally = Tally {
            transmitted: 3,
            received: 3,
            errors: 0,
            rtts_ms: vec![0.101, 0.109, 0.150],
            elapsed: Duration::from_micros(402_300),
        };
        assert_eq!(
            summary_text("localhost", &tally, false),
            "\n--- localhost ping statistics ---\n\
             3 packets transmitted, 3 received, 0% packet loss, time 402ms\n\
             rtt min/avg/max/mdev = 0.101/0.120/0.150/0.021 ms\n"
        );
        assert!(summary_text("localhost", &tally, true)
            .ends_with("rtt p50/p90/p99 = 0.109/0.150/0.150 ms\n"));
    }

    #[test]
    fn summary_without_replies_has_no_rtt_line() {
        let tally = Tally {
            transmitted: 2,
            received: 0,
            errors: 2,
            rtts_ms: vec![],
            elapsed: Duration::from_millis(1001),
        };
        assert_eq!(
            summary_text("h:1", &tally, true),
            "\n--- h:1 ping statistics ---\n\
             2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1001ms\n"
        );
        let none = summary_text("h", &Tally::default(), false);
        assert!(
            none.ends_with("0 packets transmitted, 0 received\n"),
            "{none}"
        );
    }

    #[test]
    fn msgpack_to_json() {
        let v = Value::Map(vec![
            (Value::from("s"), Value::from("x")),
            (Value::from("b"), Value::Binary(vec![0, 1, 255])),
            (Value::from(1), Value::from(-2)),
            (Value::Boolean(true), Value::F64(1.5)),
            (Value::from("nan"), Value::F64(f64::NAN)),
            (Value::from("big"), Value::from(u64::MAX)),
            (Value::Nil, Value::Array(vec![Value::Nil, Value::from(1)])),
            (Value::from("e"), Value::Ext(5, vec![0xab])),
        ]);
        let j = to_json(&v);
        assert_eq!(
            j,
            serde_json::json!({
                "s": "x", "b": "0001ff", "1": -2, "true": 1.5, "nan": null,
                "big": u64::MAX, "null": [null, 1], "e": {"ext": 5, "hex": "ab"}
            })
        );
    }

    #[test]
    fn terminal_controls_are_escaped_in_keys_and_values() {
        let hostile = "\x1b]0;pwned\x07\x1b[2J\u{9b}31m\x7f\nforged";
        let v = Value::Map(vec![
            (Value::from(hostile), Value::from(hostile)),
            (
                Value::from("list"),
                Value::Array(vec![Value::from(hostile)]),
            ),
        ]);
        let text = pretty(&v, 0);
        assert!(
            !text.chars().any(|c| is_control(c) && c != '\n'),
            "{text:?}"
        );
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(text.contains("\\x1b]0;pwned\\x07\\x1b[2J\\u{9b}31m\\x7f\\x0aforged"));
        assert_eq!(escape_text("plain ü"), "plain ü");
    }

    #[test]
    fn pretty_printing_indents_nested_maps() {
        let v = map([
            ("name", "demo".into()),
            ("clients", 2.into()),
            ("tags", Value::Array(vec!["a".into(), "b".into()])),
            (
                "peng3dnet",
                map([("version", "0.1.3a0".into()), ("protoversion", 2.into())]),
            ),
            ("empty", map([])),
            ("raw", Value::Binary(vec![1, 2])),
            (
                "list",
                Value::Array(vec![map([("k", 1.into())]), Value::from(3)]),
            ),
        ]);
        assert_eq!(
            pretty(&v, 0),
            "name: demo\nclients: 2\ntags: [a, b]\npeng3dnet:\n  version: 0.1.3a0\n  \
             protoversion: 2\nempty: {}\nraw: <2 bytes: 0102>\nlist:\n  -\n    k: 1\n  - 3\n"
        );
    }
}
