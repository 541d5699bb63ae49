//! The wall-clock time of a monotonic instant, without reading the wall clock per ping.
//!
//! A pong carries the server's wall-clock times (`servertiming`). The connection already
//! reads the monotonic clock once per frame (for its deadlines); the wall-clock time of
//! that instant is derived from an anchor, a (monotonic, wall) pair read back to back
//! and renewed every second, per thread. Both clocks are slewed alike by NTP, so the
//! derived time drifts from a fresh reading only when the wall clock is stepped, and then
//! for at most a second.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// How long an anchor is used.
const RENEW: Duration = Duration::from_secs(1);

thread_local! {
    static ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
}

/// The wall-clock times at `first` and at `second` (not before `first`): one anchor
/// lookup for the two timestamps of a pong.
pub(crate) fn wall_times(first: Instant, second: Instant) -> (SystemTime, SystemTime) {
    let first_wall = wall_time(first);
    (
        first_wall,
        first_wall + second.saturating_duration_since(first),
    )
}

/// The wall-clock time at `at`.
pub(crate) fn wall_time(at: Instant) -> SystemTime {
    ANCHOR.with(|anchor| {
        if let Some((instant, wall)) = anchor.get() {
            // One subtraction in the usual case: `at` in the anchor's second. An instant
            // before the anchor (read just before another task renewed it) renews it too.
            if let Some(since) = at.checked_duration_since(instant) {
                if since < RENEW {
                    return wall + since;
                }
            }
        }
        let (instant, wall) = (Instant::now(), SystemTime::now());
        anchor.set(Some((instant, wall)));
        match at.checked_duration_since(instant) {
            Some(since) => wall + since,
            None => wall.checked_sub(instant - at).unwrap_or(wall),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_times_follow_the_wall_clock() {
        let before = SystemTime::now();
        let derived = wall_time(Instant::now());
        let after = SystemTime::now();
        assert!(before <= derived && derived <= after + Duration::from_millis(1));
        // An instant a little in the past maps to a wall time as far in the past.
        let now = Instant::now();
        let earlier = now - Duration::from_millis(5);
        let (first, second) = wall_times(earlier, now);
        assert_eq!(
            second.duration_since(first).unwrap(),
            Duration::from_millis(5)
        );
        let gap = wall_time(now).duration_since(wall_time(earlier)).unwrap();
        assert!(gap.abs_diff(Duration::from_millis(5)) < Duration::from_millis(1));
    }
}
