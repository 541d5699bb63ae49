//! What `watch` knows about its targets: each target's recent results and their
//! statistics. Pure data and arithmetic, no I/O and no clock (times are passed in as
//! seconds since the watch started).

use std::collections::VecDeque;
use std::net::SocketAddr;

use peng3dnet::Value;

use crate::output;

/// How many results each target keeps: statistics, graph and sparkline are computed over
/// these (an hour at one ping a second).
pub(crate) const HISTORY: usize = 3600;

/// What came of one ping.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// A pong, with the round trip of the ping message in milliseconds.
    Reply {
        /// Round trip, ms.
        rtt_ms: f64,
    },
    /// The server did not answer in time.
    Timeout,
    /// Anything else that failed: refused, closed, resolve...; `kind` is the JSON error
    /// kind of `ping --json`.
    Error {
        /// The JSON error kind.
        kind: &'static str,
    },
}

impl Outcome {
    /// The round trip, if this was a reply.
    pub(crate) fn rtt_ms(&self) -> Option<f64> {
        match self {
            Outcome::Reply { rtt_ms } => Some(*rtt_ms),
            _ => None,
        }
    }
}

/// One result on the time axis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// When the ping was sent, in seconds since the watch started.
    pub at: f64,
    /// What came of it.
    pub outcome: Outcome,
}

/// Statistics over a target's kept results. Round trips in milliseconds; `None` where
/// there was no reply to compute them from.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Stats {
    /// Results counted.
    pub sent: usize,
    /// Replies among them.
    pub received: usize,
    /// The latest reply's round trip.
    pub last: Option<f64>,
    /// Fastest.
    pub min: Option<f64>,
    /// Mean.
    pub avg: Option<f64>,
    /// Slowest.
    pub max: Option<f64>,
    /// Mean absolute difference between successive replies' round trips (RFC 3550's
    /// interarrival jitter without its smoothing); needs two replies.
    pub jitter: Option<f64>,
    /// 95th percentile, nearest-rank.
    pub p95: Option<f64>,
}

impl Stats {
    /// Statistics of results in the order they happened.
    pub(crate) fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Stats {
        let mut sent = 0;
        let mut rtts = Vec::new();
        for sample in samples {
            sent += 1;
            if let Some(rtt) = sample.outcome.rtt_ms() {
                rtts.push(rtt);
            }
        }
        let jitter = (rtts.len() >= 2).then(|| {
            let diffs: f64 = rtts.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
            diffs / (rtts.len() - 1) as f64
        });
        let last = rtts.last().copied();
        let mut sorted = rtts;
        sorted.sort_by(f64::total_cmp);
        let avg = (!sorted.is_empty()).then(|| sorted.iter().sum::<f64>() / sorted.len() as f64);
        Stats {
            sent,
            received: sorted.len(),
            last,
            min: sorted.first().copied(),
            avg,
            max: sorted.last().copied(),
            jitter,
            p95: output::percentile(&sorted, 95.0),
        }
    }

    /// Failed pings in percent of those counted (0 when none was counted).
    pub(crate) fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.sent - self.received) as f64 * 100.0 / self.sent as f64
        }
    }
}

/// A target's state, from its latest result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// No result yet.
    Waiting,
    /// The latest ping was answered.
    Up,
    /// The latest ping timed out.
    Timeout,
    /// The latest ping failed otherwise; the JSON error kind.
    Error(&'static str),
}

impl State {
    /// A short word for the state column.
    pub(crate) fn word(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Up => "up",
            State::Timeout => "timeout",
            State::Error(kind) => kind,
        }
    }
}

/// One watched target.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The target as given on the command line or in the file.
    pub name: String,
    /// The address pinged, once resolved.
    pub addr: Option<SocketAddr>,
    /// The latest results, oldest first, at most [`HISTORY`].
    pub samples: VecDeque<Sample>,
    /// Statistics of `samples`, updated on every push.
    pub stats: Stats,
    /// The server's data from the latest reply.
    pub data: Option<Value>,
    /// The message of the latest failure, for the details view.
    pub last_error: Option<String>,
}

impl Entry {
    /// A target with no results yet.
    pub(crate) fn new(name: impl Into<String>) -> Entry {
        Entry {
            name: name.into(),
            addr: None,
            samples: VecDeque::new(),
            stats: Stats::default(),
            data: None,
            last_error: None,
        }
    }

    /// The state from the latest result.
    pub(crate) fn state(&self) -> State {
        match self.samples.back().map(|s| &s.outcome) {
            None => State::Waiting,
            Some(Outcome::Reply { .. }) => State::Up,
            Some(Outcome::Timeout) => State::Timeout,
            Some(Outcome::Error { kind }) => State::Error(kind),
        }
    }

    /// The latest round trip if the latest ping was answered.
    pub(crate) fn current_rtt(&self) -> Option<f64> {
        self.samples.back().and_then(|s| s.outcome.rtt_ms())
    }

    /// A string field of the server's data (`name`, `motd`...), as text.
    pub(crate) fn field(&self, key: &str) -> Option<String> {
        let value = peng3dnet::value::get(self.data.as_ref()?, key)?;
        Some(match output::to_json(value) {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
    }
}

/// Everything watched, in the order the targets were given.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    /// The targets; an index into this is a target's identity.
    pub entries: Vec<Entry>,
}

/// The outcome of a ping with what came along with it.
#[derive(Debug, Clone)]
pub(crate) struct Update {
    /// Which target.
    pub index: usize,
    /// The result on the time axis.
    pub sample: Sample,
    /// The address pinged, if known.
    pub addr: Option<SocketAddr>,
    /// The server's data, for a reply.
    pub data: Option<Value>,
    /// The message, for a failure.
    pub error: Option<String>,
}

impl Model {
    /// A model of these targets, with no results yet.
    pub(crate) fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Model {
        Model {
            entries: names.into_iter().map(Entry::new).collect(),
        }
    }

    /// Records a result. An index out of range is ignored.
    pub(crate) fn push(&mut self, update: Update) {
        let Some(entry) = self.entries.get_mut(update.index) else {
            return;
        };
        if update.addr.is_some() {
            entry.addr = update.addr;
        }
        if update.data.is_some() {
            entry.data = update.data;
        }
        if update.error.is_some() {
            entry.last_error = update.error;
        }
        entry.samples.push_back(update.sample);
        while entry.samples.len() > HISTORY {
            entry.samples.pop_front();
        }
        entry.stats = Stats::of(&entry.samples);
    }

    /// Indices of the entries, by latency: answering targets by their latest round
    /// trip, fastest first, then targets not heard from yet, then failing ones; ties keep
    /// the order given.
    pub(crate) fn by_latency(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        let rank = |e: &Entry| match e.state() {
            State::Up => 0,
            State::Waiting => 1,
            State::Timeout | State::Error(_) => 2,
        };
        order.sort_by(|&a, &b| {
            let (a, b) = (&self.entries[a], &self.entries[b]);
            rank(a).cmp(&rank(b)).then_with(|| {
                let rtt = |e: &Entry| e.current_rtt().unwrap_or(0.0);
                rtt(a).total_cmp(&rtt(b))
            })
        });
        order
    }
}

/// Server-provided or user-provided text made safe to draw: escaped as all text output is
/// ([`crate::output::escape_text`]: C0, DEL, C1 and bidirectional controls), and cut after
/// `max` characters of the original (with `…`).
pub(crate) fn clean(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", crate::output::escape_text(&text[..cut])),
        None => crate::output::escape_text(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(at: f64, rtt_ms: f64) -> Sample {
        Sample {
            at,
            outcome: Outcome::Reply { rtt_ms },
        }
    }

    fn timeout(at: f64) -> Sample {
        Sample {
            at,
            outcome: Outcome::Timeout,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn stats_of_replies_and_failures() {
        let samples = [
            reply(0.0, 1.0),
            reply(1.0, 3.0),
            timeout(2.0),
            reply(3.0, 2.0),
            Sample {
                at: 4.0,
                outcome: Outcome::Error { kind: "refused" },
            },
        ];
        let s = Stats::of(&samples);
        assert_eq!((s.sent, s.received), (5, 3));
        assert!(close(s.last, 2.0), "{s:?}");
        assert!(close(s.min, 1.0) && close(s.max, 3.0) && close(s.avg, 2.0));
        // |3-1| and |2-3|: failures between replies do not break the succession.
        assert!(close(s.jitter, 1.5), "{s:?}");
        // Nearest rank of 95% of 3 samples is the third.
        assert!(close(s.p95, 3.0));
        assert!((s.loss_percent() - 40.0).abs() < 1e-9);
    }

    #[test]
    fn p95_is_nearest_rank_over_many() {
        let samples: Vec<Sample> = (1..=100)
            .map(|i| reply(f64::from(i), f64::from(i)))
            .collect();
        let s = Stats::of(&samples);
        assert!(close(s.p95, 95.0));
        assert!(close(s.jitter, 1.0));
        assert_eq!(s.loss_percent(), 0.0);
    }

    #[test]
    fn stats_without_replies_are_empty_but_count_loss() {
        let s = Stats::of(&[timeout(0.0), timeout(1.0)]);
        assert_eq!((s.sent, s.received), (2, 0));
        assert_eq!(
            (s.last, s.min, s.avg, s.max, s.jitter, s.p95),
            (None, None, None, None, None, None)
        );
        assert_eq!(s.loss_percent(), 100.0);
        let one = Stats::of(&[reply(0.0, 4.0)]);
        assert_eq!(one.jitter, None);
        assert!(close(one.p95, 4.0));
        assert_eq!(Stats::of(&[]).loss_percent(), 0.0);
    }

    #[test]
    fn push_keeps_a_bounded_history_and_the_latest_data() {
        let mut m = Model::new(["a"]);
        for i in 0..HISTORY + 10 {
            m.push(Update {
                index: 0,
                sample: reply(i as f64, 1.0),
                addr: None,
                data: (i == 3).then(|| Value::from("x")),
                error: None,
            });
        }
        let e = &m.entries[0];
        assert_eq!(e.samples.len(), HISTORY);
        assert_eq!(e.samples.front().map(|s| s.at), Some(10.0));
        assert_eq!(e.stats.sent, HISTORY);
        assert_eq!(
            e.data,
            Some(Value::from("x")),
            "a reply without data keeps the last"
        );
        // Out of range: ignored, no panic.
        m.push(Update {
            index: 7,
            sample: timeout(0.0),
            addr: None,
            data: None,
            error: None,
        });
    }

    #[test]
    fn latency_order_puts_fastest_first_and_failures_last() {
        let mut m = Model::new(["slow", "down", "new", "fast", "fast2"]);
        let push = |m: &mut Model, index, outcome| {
            m.push(Update {
                index,
                sample: Sample { at: 0.0, outcome },
                addr: None,
                data: None,
                error: None,
            })
        };
        push(&mut m, 0, Outcome::Reply { rtt_ms: 9.0 });
        push(&mut m, 1, Outcome::Reply { rtt_ms: 0.1 });
        push(&mut m, 1, Outcome::Timeout);
        push(&mut m, 3, Outcome::Reply { rtt_ms: 2.0 });
        push(&mut m, 4, Outcome::Reply { rtt_ms: 2.0 });
        assert_eq!(m.by_latency(), vec![3, 4, 0, 2, 1]);
        // Re-sorted as results come in.
        push(&mut m, 0, Outcome::Reply { rtt_ms: 1.0 });
        assert_eq!(m.by_latency(), vec![0, 3, 4, 2, 1]);
        assert_eq!(m.entries[1].state(), State::Timeout);
        assert_eq!(m.entries[2].state(), State::Waiting);
    }

    #[test]
    fn fields_of_the_server_data_as_text() {
        let mut e = Entry::new("t");
        assert_eq!(e.field("name"), None);
        e.data = Some(peng3dnet::value::map([
            ("name", "lobby".into()),
            ("clients", 3.into()),
        ]));
        assert_eq!(e.field("name").as_deref(), Some("lobby"));
        assert_eq!(e.field("clients").as_deref(), Some("3"));
        assert_eq!(e.field("motd"), None);
    }

    #[test]
    fn clean_escapes_terminal_controls() {
        assert_eq!(clean("plain ünïcode", 100), "plain ünïcode");
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\r\nx\u{202e}y";
        let cleaned = clean(hostile, 100);
        assert!(!cleaned.chars().any(|c| c.is_control()), "{cleaned:?}");
        assert_eq!(
            cleaned,
            "\\x1b]0;pwned\\x07\\x1b[2J\\u{9b}31m\\x0d\\x0ax\\u{202e}y"
        );
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("abc", 3), "abc");
    }
}
