//! A server connection's deadlines, sans I/O: the handshake, idle, frame and write
//! timeouts as state that the caller's clock drives.
//!
//! The connection loop of a server waits for one of three things: a command, a frame, or
//! its one timer. [`Deadlines`] says when that timer must fire ([`poll_timeout`]) and,
//! when it fires, whether a limit was passed and which ([`handle_timeout`]), as
//! quinn-proto's connections do. It reads no clock: every method takes `now`, so each
//! rule is tested here by stepping time by hand, and the tokio layer only arms its timer
//! at the instant it is told.
//!
//! The rules (the defaults are [`Limits`]'):
//! - until the connection is *settled* (a classic or custom handshake done, or a ping
//!   connection's first ping), it must get there within `handshake_timeout` of the accept;
//! - once settled, it may stay silent for `idle_timeout` (`ping_idle_timeout` on a ping
//!   connection) after its last frame;
//! - a frame that started arriving must be complete within `frame_timeout`; a partial
//!   frame the loop did not see start is found by looking again every `frame_timeout`;
//! - a write the peer does not take must complete within `write_timeout`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use peng3dnet_proto::deadlines::{Deadlines, Expired, Timeouts};
//! use peng3dnet_proto::Limits;
//!
//! let timeouts = Timeouts::from(&Limits::default());
//! let accepted = Instant::now();
//! let mut deadlines = Deadlines::new(&timeouts, accepted);
//! assert_eq!(deadlines.poll_timeout(&timeouts, None), accepted + Duration::from_secs(10));
//! // Nothing happened for 10 s: the handshake was not done in time.
//! let late = accepted + Duration::from_secs(10);
//! assert_eq!(
//!     deadlines.handle_timeout(&timeouts, late, None),
//!     Some(Expired::Handshake(Duration::from_secs(10)))
//! );
//! ```
//!
//! [`poll_timeout`]: Deadlines::poll_timeout
//! [`handle_timeout`]: Deadlines::handle_timeout

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::Limits;

/// How far away "no limit" lies: a timeout too large to add to an instant (a caller's
/// `Duration::MAX`) becomes a deadline a year away, not a panic.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `start + d`, saturating at a year from `start`.
fn at(start: Instant, d: Duration) -> Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

/// The time limits of a server's connections, worked out once per server from its
/// [`Limits`] and shared by its connections (each connection keeps only its instants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the accept to a settled connection.
    pub handshake: Duration,
    /// Silence allowed on a settled classic or custom connection.
    pub idle: Duration,
    /// Silence allowed on a settled ping connection.
    pub ping_idle: Duration,
    /// From a frame's first byte to its last.
    pub frame: Duration,
    /// For a write the peer does not take at once.
    pub write: Duration,
}

impl From<&Limits> for Timeouts {
    fn from(limits: &Limits) -> Timeouts {
        Timeouts {
            handshake: limits.handshake_timeout,
            idle: limits.idle_timeout,
            ping_idle: limits.ping_idle_timeout,
            frame: limits.frame_timeout,
            write: limits.write_timeout,
        }
    }
}

/// A limit a connection passed: each is closed with `timeout`, and the text says which
/// (for the server's log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Not settled within the handshake timeout.
    Handshake(Duration),
    /// Silent for the idle timeout of its type.
    Idle(Duration),
    /// A frame not completed within the frame timeout.
    Frame(Duration),
    /// The peer did not take our bytes within the write timeout: it does not read, so no
    /// closeconn is sent.
    Write(Duration),
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expired::Handshake(d) => write!(f, "handshake not done within {d:?}"),
            Expired::Idle(d) => write!(f, "idle for {d:?}"),
            Expired::Frame(d) => write!(f, "frame not completed within {d:?}"),
            Expired::Write(d) => write!(f, "peer did not read for {d:?}"),
        }
    }
}

/// Where the connection is, as far as time is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before settling: the handshake deadline applies.
    Handshake { until: Instant },
    /// Settled: the idle deadline applies, moved by every frame.
    Settled { idle_until: Instant },
}

/// One server connection's deadlines (see the [module](self) docs).
#[derive(Debug, Clone)]
pub struct Deadlines {
    stage: Stage,
    /// Whether the connection is a ping connection (its own idle timeout).
    ping: bool,
    /// When to look again for a partial frame the loop has not seen start.
    recheck_at: Instant,
    /// When a write the peer does not take times out, while one is pending.
    write_until: Option<Instant>,
}

impl Deadlines {
    /// The deadlines of a connection accepted at `accepted`.
    pub fn new(timeouts: &Timeouts, accepted: Instant) -> Deadlines {
        Deadlines {
            stage: Stage::Handshake {
                until: at(accepted, timeouts.handshake),
            },
            ping: false,
            recheck_at: at(accepted, timeouts.frame),
            write_until: None,
        }
    }

    /// Whether the connection is settled (the idle timeout applies).
    pub fn is_settled(&self) -> bool {
        matches!(self.stage, Stage::Settled { .. })
    }

    /// The idle timeout in force once settled.
    pub fn idle_timeout(&self, timeouts: &Timeouts) -> Duration {
        if self.ping {
            timeouts.ping_idle
        } else {
            timeouts.idle
        }
    }

    /// The connection became a ping connection (settype `ping`): it settles with its first
    /// ping, and its idle timeout is the ping one.
    pub fn on_ping_connection(&mut self) {
        self.ping = true;
    }

    /// The connection settled at `now` (handshake done, or a ping connection's first
    /// ping): from now on it may be idle, no longer waiting for a handshake.
    pub fn settle(&mut self, timeouts: &Timeouts, now: Instant) {
        if !self.is_settled() {
            self.stage = Stage::Settled {
                idle_until: at(now, self.idle_timeout(timeouts)),
            };
        }
    }

    /// A frame was read at `read_at`: a settled connection's idle time starts again.
    pub fn on_frame(&mut self, timeouts: &Timeouts, read_at: Instant) {
        let idle = self.idle_timeout(timeouts);
        if let Stage::Settled { idle_until } = &mut self.stage {
            *idle_until = at(read_at, idle);
        }
    }

    /// A write the socket did not take at once began at `now`; returns when it times out.
    pub fn write_blocked(&mut self, timeouts: &Timeouts, now: Instant) -> Instant {
        *self
            .write_until
            .get_or_insert_with(|| at(now, timeouts.write))
    }

    /// The pending write completed.
    pub fn write_done(&mut self) {
        self.write_until = None;
    }

    /// When the connection's timer must fire next, given when the partial frame now
    /// buffered (if any) started arriving.
    pub fn poll_timeout(&self, timeouts: &Timeouts, frame_started: Option<Instant>) -> Instant {
        let stage = match self.stage {
            Stage::Handshake { until } => until,
            Stage::Settled { idle_until } => idle_until,
        };
        let frame = match frame_started {
            Some(started) => at(started, timeouts.frame),
            None => self.recheck_at,
        };
        let mut next = stage.min(frame);
        if let Some(write) = self.write_until {
            next = next.min(write);
        }
        next
    }

    /// The timer fired at `now`: the limit passed, if one was (the connection is then
    /// closed with `timeout`), or `None`, and [`poll_timeout`](Self::poll_timeout) says
    /// when to look again. `frame_started` is when the partial frame now buffered began.
    pub fn handle_timeout(
        &mut self,
        timeouts: &Timeouts,
        now: Instant,
        frame_started: Option<Instant>,
    ) -> Option<Expired> {
        if self.write_until.is_some_and(|until| now >= until) {
            return Some(Expired::Write(timeouts.write));
        }
        if frame_started.is_some_and(|started| now >= at(started, timeouts.frame)) {
            return Some(Expired::Frame(timeouts.frame));
        }
        match self.stage {
            Stage::Handshake { until } if now >= until => {
                return Some(Expired::Handshake(timeouts.handshake))
            }
            Stage::Settled { idle_until } if now >= idle_until => {
                return Some(Expired::Idle(self.idle_timeout(timeouts)))
            }
            _ => {}
        }
        // Nothing passed: look again for a frame that starts arriving in the meantime no
        // later than a frame timeout from now.
        self.recheck_at = at(now, timeouts.frame);
        None
    }
}

#[cfg(test)]
mod tests {
    //! Every deadline, on a clock the tests step: no sleeps, no wall clock.

    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            ping_idle: Duration::from_secs(60),
            frame: Duration::from_secs(30),
            write: Duration::from_secs(5),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn an_unsettled_connection_times_out_at_the_handshake_deadline() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut d = Deadlines::new(&t, t0);
        assert_eq!(d.poll_timeout(&t, None), secs(t0, 10));
        assert_eq!(d.handle_timeout(&t, secs(t0, 9), None), None);
        // Frames before settling (a hello answered, a settype) do not move it.
        d.on_frame(&t, secs(t0, 9));
        assert_eq!(
            d.handle_timeout(&t, secs(t0, 10), None),
            Some(Expired::Handshake(Duration::from_secs(10)))
        );
    }

    #[test]
    fn a_settled_connection_may_be_idle_for_the_idle_timeout_after_its_last_frame() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut d = Deadlines::new(&t, t0);
        d.settle(&t, secs(t0, 2));
        assert_eq!(
            d.poll_timeout(&t, None),
            secs(t0, 30),
            "the frame recheck comes first"
        );
        assert_eq!(d.handle_timeout(&t, secs(t0, 30), None), None);
        d.on_frame(&t, secs(t0, 100));
        assert_eq!(d.handle_timeout(&t, secs(t0, 399), None), None);
        assert_eq!(
            d.handle_timeout(&t, secs(t0, 400), None),
            Some(Expired::Idle(Duration::from_secs(300)))
        );
    }

    #[test]
    fn a_ping_connection_has_its_own_shorter_idle_timeout() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut d = Deadlines::new(&t, t0);
        d.on_ping_connection();
        assert!(
            !d.is_settled(),
            "a ping connection settles with its first ping"
        );
        d.settle(&t, secs(t0, 1));
        assert_eq!(d.handle_timeout(&t, secs(t0, 60), None), None);
        assert_eq!(
            d.handle_timeout(&t, secs(t0, 61), None),
            Some(Expired::Idle(Duration::from_secs(60)))
        );
    }

    #[test]
    fn a_frame_that_started_must_complete_within_the_frame_timeout() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut d = Deadlines::new(&t, t0);
        d.settle(&t, t0);
        let started = secs(t0, 5);
        assert_eq!(d.handle_timeout(&t, secs(t0, 34), Some(started)), None);
        assert_eq!(d.poll_timeout(&t, Some(started)), secs(t0, 35));
        assert_eq!(
            d.handle_timeout(&t, secs(t0, 35), Some(started)),
            Some(Expired::Frame(Duration::from_secs(30)))
        );
    }

    #[test]
    fn a_partial_frame_the_loop_did_not_see_start_is_found_within_two_frame_timeouts() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut d = Deadlines::new(&t, t0);
        d.settle(&t, t0);
        // The first look, a frame timeout after the accept, finds nothing partial.
        let first = d.poll_timeout(&t, None);
        assert_eq!(first, secs(t0, 30));
        assert_eq!(d.handle_timeout(&t, first, None), None);
        // A frame starts arriving just after; the next look sees it and its deadline.
        let started = secs(t0, 31);
        let second = d.poll_timeout(&t, None);
        assert_eq!(second, secs(t0, 60));
        assert_eq!(d.handle_timeout(&t, second, Some(started)), None);
        let third = d.poll_timeout(&t, Some(started));
        assert_eq!(third, secs(t0, 61));
        assert_eq!(
            d.handle_timeout(&t, third, Some(started)),
            Some(Expired::Frame(Duration::from_secs(30)))
        );
    }

    #[test]
    fn a_write_the_peer_does_not_take_times_out_first_and_is_forgotten_when_done() {
        let (t, t0) = (timeouts(), Instant::now());
        let mut d = Deadlines::new(&t, t0);
        d.settle(&t, t0);
        assert_eq!(d.write_blocked(&t, secs(t0, 1)), secs(t0, 6));
        // A second blocked flush of the same write keeps the first deadline.
        assert_eq!(d.write_blocked(&t, secs(t0, 3)), secs(t0, 6));
        assert_eq!(d.poll_timeout(&t, None), secs(t0, 6));
        assert_eq!(
            d.handle_timeout(&t, secs(t0, 6), None),
            Some(Expired::Write(Duration::from_secs(5)))
        );
        d.write_done();
        assert_eq!(d.handle_timeout(&t, secs(t0, 6), None), None);
    }

    #[test]
    fn a_timeout_too_large_to_add_is_a_year_away_not_a_panic() {
        let t = Timeouts {
            idle: Duration::MAX,
            ..timeouts()
        };
        let t0 = Instant::now();
        let mut d = Deadlines::new(&t, t0);
        d.settle(&t, t0);
        d.on_frame(&t, t0);
        assert_eq!(d.handle_timeout(&t, secs(t0, 364 * 24 * 3600), None), None);
    }

    #[test]
    fn each_expiry_says_which_limit_in_the_log_line() {
        let d = Duration::from_secs(10);
        assert_eq!(
            Expired::Handshake(d).to_string(),
            "handshake not done within 10s"
        );
        assert_eq!(Expired::Idle(d).to_string(), "idle for 10s");
        assert_eq!(
            Expired::Frame(d).to_string(),
            "frame not completed within 10s"
        );
        assert_eq!(Expired::Write(d).to_string(), "peer did not read for 10s");
    }
}
