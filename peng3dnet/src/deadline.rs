//! Deadlines that cannot overflow: a time allowance too large to represent (a caller's
//! `Duration::MAX` as "no limit", or `ping -W 1e19`) becomes a deadline a year away
//! instead of a panic in `Instant + Duration`.

use std::time::Duration;

/// How far away "no limit" lies.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `start + d`, saturating at a year from `start` (tokio's clock).
pub(crate) fn at(start: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

/// `start + d`, saturating at a year from `start` (the standard clock).
pub(crate) fn at_std(start: std::time::Instant, d: Duration) -> std::time::Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

/// `d` from now on tokio's clock.
pub(crate) fn after(d: Duration) -> tokio::time::Instant {
    at(tokio::time::Instant::now(), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_allowances_do_not_overflow() {
        let now = std::time::Instant::now();
        assert!(at_std(now, Duration::MAX) > now + Duration::from_secs(3600));
        assert_eq!(
            at_std(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
