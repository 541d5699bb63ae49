//! `status` of several servers: a server browser's table, one row per server, sorted
//! (by latency unless `--sort` says otherwise), or with `--json` one record per server.
//! The targets are pinged with the library's [`peng3dnet::many::ping_many`].

use std::cmp::Ordering;
use std::time::Duration;

use peng3dnet::many::{ping_many, ManyOptions};
use peng3dnet::ping::PingReply;
use peng3dnet::target::Target;
use peng3dnet::Value;

use super::output::{self, ErrorRecord, Out, StatusRecord, SCHEMA_VERSION};
use super::ping::{describe, Settings};
use super::{Exit, SortField};

/// One server's row.
struct Row {
    /// The target as given.
    target: String,
    /// The reply, or the error's kind and message.
    result: Result<PingReply, (&'static str, String)>,
}

impl Row {
    fn data(&self, key: &str) -> Option<&Value> {
        self.result.as_ref().ok().and_then(|r| r.get(key))
    }

    fn text(&self, key: &str) -> String {
        match self.data(key) {
            None | Some(Value::Nil) => String::new(),
            Some(Value::String(s)) => clean(s.as_str().unwrap_or("")),
            Some(v) => clean(&output::to_json(v).to_string()),
        }
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.data(key).and_then(Value::as_u64)
    }

    /// `clients/max` when the server says both, `clients` when it says only that.
    fn clients(&self) -> String {
        let max = peng3dnet::ping::MAX_CLIENTS_KEYS
            .iter()
            .find_map(|k| self.number(k));
        match (self.number("clients"), max) {
            (Some(c), Some(m)) => format!("{c}/{m}"),
            (Some(c), None) => c.to_string(),
            _ => String::new(),
        }
    }

    /// The server's `version`, else the peng3dnet version it reports.
    fn version(&self) -> String {
        let own = self.text("version");
        if !own.is_empty() {
            return own;
        }
        match self
            .data("peng3dnet")
            .and_then(|p| peng3dnet::value::get(p, "version"))
        {
            Some(Value::String(s)) => clean(s.as_str().unwrap_or("")),
            _ => String::new(),
        }
    }

    fn latency(&self) -> Option<Duration> {
        self.result.as_ref().ok().map(|r| r.delay)
    }

    fn state(&self) -> String {
        match &self.result {
            Ok(_) => "ok".into(),
            Err((_, message)) => clean(message),
        }
    }
}

/// A server's string for one table cell, escaped as all text output is
/// ([`crate::output::escape_text`]): a server cannot draw on the terminal or break the
/// table's lines.
fn clean(s: &str) -> String {
    crate::output::escape_text(s)
}

/// The order of two rows under `field` (servers that did not answer last, except by
/// `server` and `state`); ties by latency, then by the target as given.
fn compare(a: &Row, b: &Row, field: SortField) -> Ordering {
    let answered = |r: &Row| r.result.is_err();
    let by_latency = |a: &Row, b: &Row| a.latency().cmp(&b.latency());
    let primary = match field {
        SortField::Server => a.target.cmp(&b.target),
        SortField::Latency => answered(a).cmp(&answered(b)).then(by_latency(a, b)),
        SortField::Name => answered(a)
            .cmp(&answered(b))
            .then(a.text("name").cmp(&b.text("name"))),
        SortField::Version => answered(a)
            .cmp(&answered(b))
            .then(a.version().cmp(&b.version())),
        SortField::Clients => answered(a)
            .cmp(&answered(b))
            .then(b.number("clients").cmp(&a.number("clients"))),
        SortField::State => {
            let kind = |r: &Row| r.result.as_ref().err().map(|(k, _)| *k);
            kind(a).cmp(&kind(b))
        }
    };
    primary
        .then(answered(a).cmp(&answered(b)))
        .then(by_latency(a, b))
        .then(a.target.cmp(&b.target))
}

/// The table: a header and one line per row, columns padded to their widest cell (in
/// characters).
fn render(rows: &[Row]) -> String {
    let header = [
        "SERVER", "NAME", "MOTD", "CLIENTS", "VERSION", "LATENCY", "STATE",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                clean(&r.target),
                r.text("name"),
                r.text("motd"),
                r.clients(),
                r.version(),
                r.latency()
                    .map(|d| format!("{} ms", output::format_rtt(d)))
                    .unwrap_or_else(|| "-".into()),
                r.state(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                s.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut text = line(&header.map(String::from));
    for row in &cells {
        text.push_str(&line(row));
    }
    text
}

/// `peng3dnet status` of several targets.
pub(crate) async fn table(targets: Vec<String>, s: &Settings, sort: SortField, tries: u32) -> Exit {
    let mut options = ManyOptions {
        concurrency: s.list.concurrency,
        rate: s.list.rate,
        tries,
        ..ManyOptions::default()
    };
    options.ping.timeout = s.timeout;
    options.ping.family = s.family;
    options.ping.data = s.data.clone();
    // A certificate is checked against each target's own name.
    let tls = s.tls.clone();
    let given: Vec<(String, Target)> = targets
        .iter()
        .filter_map(|t| Target::parse_default(t).ok().map(|p| (t.clone(), p)))
        .collect();
    let mut rows: Vec<Row> = Vec::with_capacity(given.len());
    let mut exit = Exit::Ok;
    let run = async {
        if tls.is_none() {
            let mut results = ping_many(
                given.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(),
                options,
            );
            while let Some(done) = results.next().await {
                rows.push(row(&given[done.index].0, done.result, s.timeout));
            }
        } else {
            // TLS names differ per target: one run per target, all at once.
            let mut results = futures_util::stream::iter(given.iter().map(|(name, t)| {
                let mut options = options.clone();
                options.ping.tls = tls.clone().map(|c| c.with_server_name(&t.host));
                let t = t.clone();
                async move {
                    let mut one = ping_many([t], options);
                    (name.clone(), one.next().await)
                }
            }))
            .buffer_unordered(s.list.concurrency.unwrap_or(256));
            use futures_util::StreamExt;
            while let Some((name, done)) = results.next().await {
                if let Some(done) = done {
                    rows.push(row(&name, done.result, s.timeout));
                }
            }
        }
    };
    tokio::select! {
        _ = run => {}
        _ = super::interrupted() => return Exit::NoAnswer,
    }
    rows.sort_by(|a, b| compare(a, b, sort));
    for r in &rows {
        exit = exit.max(match &r.result {
            Ok(_) => Exit::Ok,
            Err(("resolve", _)) => Exit::Unresolved,
            Err(_) => Exit::NoAnswer,
        });
    }
    let out = Out;
    let printed = if s.json {
        rows.iter().try_for_each(|r| match &r.result {
            Ok(reply) => out.json(&StatusRecord {
                schema_version: SCHEMA_VERSION,
                kind: "status",
                target: &r.target,
                addr: reply.peer.to_string(),
                time_ms: output::ms(reply.delay),
                data: output::to_json(&reply.server_data()),
            }),
            Err((kind, message)) => out.json(&ErrorRecord {
                schema_version: SCHEMA_VERSION,
                kind: "error",
                target: &r.target,
                addr: None,
                seq: None,
                error_kind: kind,
                message: message.clone(),
            }),
        })
    } else {
        out.print(&render(&rows))
    };
    if printed.is_err() {
        Exit::System
    } else {
        exit
    }
}

fn row(target: &str, result: Result<PingReply, peng3dnet::PingError>, allowed: Duration) -> Row {
    Row {
        target: target.to_owned(),
        result: result.map_err(|e| describe(&e, allowed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_escape_control_characters() {
        assert_eq!(clean("a\x1b[31mb\nc"), "a\\x1b[31mb\\x0ac");
    }
}
