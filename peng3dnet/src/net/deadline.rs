//! Deadlines that cannot overflow: a time allowance too large to represent (a caller's
//! `Duration::MAX` as "no limit", or `ping -W 1e19`) becomes a deadline a year away
//! instead of a panic in `Instant + Duration`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How far away "no limit" lies.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `start + d`, saturating at a year from `start` (tokio's clock).
pub(crate) fn at(start: Instant, d: Duration) -> Instant {
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
pub(crate) fn after(d: Duration) -> Instant {
    at(Instant::now(), d)
}

/// One deadline for a run of steps, on one timer: [`Clock::within`] bounds each step by
/// the same `Sleep`, so a ping that connects, reads, writes and closes registers one timer
/// instead of one per step (a `timeout_at` per step registers and clears its own).
///
/// It can also hold something until an earlier moment (`hold`, a place among
/// `many::Limiter`'s fresh pings): the timer first fires then, the held value is dropped,
/// and the timer is set again for the deadline.
pub(crate) struct Clock<'a, H = ()> {
    sleep: Pin<&'a mut Sleep>,
    deadline: Instant,
    hold: Option<H>,
}

impl<'a, H> Clock<'a, H> {
    /// A clock ending at `deadline` on `sleep` (created by the caller, pinned on its
    /// stack), holding `hold` until `release` if that comes first.
    pub(crate) fn new(
        mut sleep: Pin<&'a mut Sleep>,
        deadline: Instant,
        hold: Option<(H, Instant)>,
    ) -> Self {
        // A hold released at or after the deadline is kept until the clock is dropped.
        let (hold, first) = match hold {
            Some((h, release)) => (Some(h), release.min(deadline)),
            None => (None, deadline),
        };
        if sleep.deadline() != first {
            sleep.as_mut().reset(first);
        }
        Clock {
            sleep,
            deadline,
            hold,
        }
    }

    /// The deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline to `at` if that is earlier.
    pub(crate) fn cut(&mut self, at: Instant) {
        if at < self.deadline {
            self.deadline = at;
            if at < self.sleep.deadline() {
                self.sleep.as_mut().reset(at);
            }
        }
    }

    /// Runs `step` until it is done (`Some`) or the deadline passes (`None`). As
    /// `tokio::time::timeout_at`, the step is polled first: a step that is ready at once
    /// completes even after the deadline.
    pub(crate) fn within<F: Future>(&mut self, step: F) -> Within<'_, 'a, F, H> {
        Within { step, clock: self }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Clock::within`]: a named type rather than an `async fn`, whose
    /// state would hold the step twice (the argument and its pinned copy), and a ping's
    /// steps are most of its size.
    pub(crate) struct Within<'c, 'a, F, H> {
        #[pin]
        step: F,
        clock: &'c mut Clock<'a, H>,
    }
}

impl<F: Future, H> Future for Within<'_, '_, F, H> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.step.poll(cx) {
            return Poll::Ready(Some(out));
        }
        let clock = this.clock;
        loop {
            match clock.sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if clock.sleep.deadline() < clock.deadline => {
                    // The hold is over: give it up and wait on for the deadline.
                    clock.hold = None;
                    let deadline = clock.deadline;
                    clock.sleep.as_mut().reset(deadline);
                }
                Poll::Ready(()) => return Poll::Ready(None),
            }
        }
    }
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

#[cfg(test)]
mod clock_tests {
    use super::*;
    use tokio::sync::Semaphore;

    #[tokio::test]
    async fn a_step_past_the_deadline_is_cut_short() {
        let deadline = Instant::now() + Duration::from_millis(10);
        let sleep = std::pin::pin!(tokio::time::sleep_until(deadline));
        let mut clock: Clock<'_> = Clock::new(sleep, deadline, None);
        assert_eq!(clock.within(std::future::pending::<()>()).await, None);
        assert!(Instant::now() >= deadline);
        // Polled first: a step ready at once still completes after the deadline.
        assert_eq!(clock.within(async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn the_hold_is_given_up_at_its_time_and_the_deadline_stays() {
        let places = Semaphore::new(1);
        let held = places.acquire().await.ok();
        let start = Instant::now();
        let release = start + Duration::from_millis(10);
        let deadline = start + Duration::from_secs(60);
        let sleep = std::pin::pin!(tokio::time::sleep_until(deadline));
        let mut clock = Clock::new(sleep, deadline, held.map(|h| (h, release)));
        // The step needs the held place: it gets it when the hold ends, long before the
        // deadline.
        let got = clock.within(places.acquire()).await;
        assert!(matches!(got, Some(Ok(_))));
        assert!(Instant::now() >= release);
        assert_eq!(clock.deadline(), deadline);
    }

    #[tokio::test]
    async fn a_hold_past_the_deadline_is_kept_until_the_clock_goes() {
        let places = Semaphore::new(1);
        let held = places.acquire().await.ok();
        let deadline = Instant::now() + Duration::from_millis(10);
        let release = deadline + Duration::from_secs(60);
        let sleep = std::pin::pin!(tokio::time::sleep_until(deadline));
        let mut clock = Clock::new(sleep, deadline, held.map(|h| (h, release)));
        assert_eq!(clock.within(std::future::pending::<()>()).await, None);
        assert_eq!(places.available_permits(), 0, "held while the clock runs");
        drop(clock);
        assert_eq!(places.available_permits(), 1);
    }

    #[tokio::test]
    async fn cut_brings_the_deadline_forward_only() {
        let far = Instant::now() + Duration::from_secs(60);
        let sleep = std::pin::pin!(tokio::time::sleep_until(far));
        let mut clock: Clock<'_> = Clock::new(sleep, far, None);
        clock.cut(far + Duration::from_secs(1));
        assert_eq!(clock.deadline(), far);
        let near = Instant::now() + Duration::from_millis(5);
        clock.cut(near);
        assert_eq!(clock.deadline(), near);
        assert_eq!(clock.within(std::future::pending::<()>()).await, None);
    }
}
