//! A connection task's mailbox: what the rest of the program hands the task (frames to
//! send, a close, the shutdown), and the note that the task's timer fired, behind one
//! word of flags that the task's loop reads when nothing else happened.
//!
//! Why not tokio's unbounded channel beside a `Sleep` in the loop's `select!`: the loop
//! turns once per ping, and with a thousand connections every line of a connection's
//! state has gone cold by the time its next ping comes. Asking the channel whether it was
//! empty touched four cold cache lines per ping and polling the timer one more; a
//! connection's state grew past what the cache holds for a thousand of them, and the
//! server's CPU per ping there was 1.5 times the floor's (cachegrind and the A/B runs are
//! in BENCHMARKS.md, "Cache lines per ping"). Here, while no command came and the timer has
//! not fired, the loop reads the flags and nothing else. A connection that never gets a
//! command also allocates no queue (the channel allocated a block of 32 slots).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use tokio::time::{Instant, Sleep};

/// A command is queued.
const MAIL: u8 = 1;
/// The timer fired (its waker, [`Mailbox`]'s [`Wake`], was called).
const TIMER: u8 = 2;

/// The sending side, shared by every handle to the connection, and the timer's waker.
pub(crate) struct Mailbox<T> {
    /// [`MAIL`] and [`TIMER`]: the only field the connection's loop reads while idle.
    flags: AtomicU8,
    /// Bytes of the queued commands that count against the connection's cap (kept by the
    /// senders: `ClientHandle::send_id`).
    pub(crate) queued: AtomicUsize,
    /// The queue overflowed and the close is queued (one close, however many sends fail).
    pub(crate) closing: AtomicBool,
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    queue: VecDeque<T>,
    /// The connection task's waker. Kept, not taken, by a wake: a task's waker stays the
    /// same for the task's life, so it is stored once and the loop needs no lock.
    waker: Option<Waker>,
    /// The connection is done with: nothing more is accepted.
    closed: bool,
}

impl<T> Mailbox<T> {
    /// An empty, open mailbox.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Mailbox {
            flags: AtomicU8::new(0),
            queued: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                waker: None,
                closed: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // A panic while holding the lock leaves the queue whole (every change under it is
        // one call), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` for the connection and wakes it; gives `item` back when the
    /// connection is closed.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(item);
        }
        inner.queue.push_back(item);
        // Under the lock, so that the receiver, which clears the flag under it when it
        // takes the last item, never clears it over an item it did not see.
        self.flags.fetch_or(MAIL, Ordering::Release);
        if let Some(waker) = &inner.waker {
            waker.wake_by_ref();
        }
        Ok(())
    }
}

/// The timer's waker: notes that the timer fired and wakes the connection task.
impl<T> Wake for Mailbox<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flags.fetch_or(TIMER, Ordering::Release);
        if let Some(waker) = &self.lock().waker {
            waker.wake_by_ref();
        }
    }
}

/// The connection task's side: takes the commands and owns the connection's one timer.
/// Dropping it closes the mailbox (senders then get their item back).
pub(crate) struct Inbox<T: Send + 'static> {
    mailbox: Arc<Mailbox<T>>,
    /// The task's waker is stored in the mailbox.
    registered: bool,
    timer: Pin<Box<Sleep>>,
    /// The timer's deadline, kept here so that comparing it does not touch the timer.
    timer_at: Instant,
    /// The timer was last polled with the mailbox as its waker and has not fired since:
    /// until the [`TIMER`] flag says so, polling it again would only say "not yet".
    timer_noted: bool,
    /// [`Mailbox`] as a [`Waker`], made once.
    timer_waker: Waker,
}

impl<T: Send + 'static> Inbox<T> {
    /// The receiving side of `mailbox`, with a timer set to `deadline`.
    pub(crate) fn new(mailbox: Arc<Mailbox<T>>, deadline: Instant) -> Self {
        Inbox {
            timer_waker: Waker::from(mailbox.clone()),
            mailbox,
            registered: false,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            timer_at: deadline,
            timer_noted: false,
        }
    }

    /// The next queued item. Reads only the flags while nothing was queued since the last
    /// poll that returned `Pending`.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        if self.registered && self.mailbox.flags.load(Ordering::Acquire) & MAIL == 0 {
            return Poll::Pending;
        }
        let mut inner = self.mailbox.lock();
        if let Some(item) = inner.queue.pop_front() {
            if inner.queue.is_empty() {
                self.mailbox.flags.fetch_and(!MAIL, Ordering::AcqRel);
            }
            return Poll::Ready(item);
        }
        self.mailbox.flags.fetch_and(!MAIL, Ordering::AcqRel);
        if !inner
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            inner.waker = Some(cx.waker().clone());
        }
        self.registered = true;
        Poll::Pending
    }

    /// The timer's deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.timer_at
    }

    /// Moves the timer to `deadline`.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        self.timer.as_mut().reset(deadline);
        self.timer_at = deadline;
        self.timer_noted = false;
    }

    /// Ready once the timer has fired. Touches the timer only when it has fired or was
    /// moved since the last poll: otherwise the flags say it has not. Call
    /// [`poll_recv`](Self::poll_recv) first in the same poll (it stores the task's waker,
    /// which the timer's note wakes).
    pub(crate) fn poll_timer(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        if self.timer_noted && self.mailbox.flags.load(Ordering::Acquire) & TIMER == 0 {
            return Poll::Pending;
        }
        self.mailbox.flags.fetch_and(!TIMER, Ordering::AcqRel);
        let mut noted = Context::from_waker(&self.timer_waker);
        let fired = std::future::Future::poll(self.timer.as_mut(), &mut noted);
        self.timer_noted = fired.is_pending();
        fired
    }

    /// The timer itself, for a `select!` of its own (a write that waits): it is then
    /// polled with that task's waker, so the loop's next [`poll_timer`](Self::poll_timer)
    /// polls it again with the mailbox's.
    pub(crate) fn timer(&mut self) -> Pin<&mut Sleep> {
        self.timer_noted = false;
        self.timer.as_mut()
    }

    /// Closes the mailbox and takes what was queued and not yet received.
    pub(crate) fn close(&mut self) -> VecDeque<T> {
        let mut inner = self.mailbox.lock();
        inner.closed = true;
        inner.waker = None;
        std::mem::take(&mut inner.queue)
    }
}

impl<T: Send + 'static> Drop for Inbox<T> {
    fn drop(&mut self) {
        drop(self.close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn a_push_wakes_the_waiting_task_and_is_received_in_order() {
        let mailbox = Mailbox::new();
        let mut inbox = Inbox::new(mailbox.clone(), far());
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(inbox.poll_recv(&mut cx).is_pending());
        mailbox.push(1).unwrap();
        mailbox.push(2).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(inbox.poll_recv(&mut cx), Poll::Ready(1));
        assert_eq!(inbox.poll_recv(&mut cx), Poll::Ready(2));
        assert!(inbox.poll_recv(&mut cx).is_pending());
        // Nothing new: no wake, and the next poll is still pending.
        assert!(inbox.poll_recv(&mut cx).is_pending());
        mailbox.push(3).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 3);
        assert_eq!(inbox.poll_recv(&mut cx), Poll::Ready(3));
    }

    #[tokio::test]
    async fn an_item_pushed_before_the_first_poll_is_received() {
        let mailbox = Mailbox::new();
        mailbox.push("early").unwrap();
        let mut inbox = Inbox::new(mailbox.clone(), far());
        let (_count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(inbox.poll_recv(&mut cx), Poll::Ready("early"));
    }

    #[tokio::test]
    async fn a_closed_mailbox_gives_the_item_back_and_the_queue_to_the_closer() {
        let mailbox = Mailbox::new();
        let mut inbox = Inbox::new(mailbox.clone(), far());
        mailbox.push(1).unwrap();
        assert_eq!(inbox.close(), VecDeque::from([1]));
        assert_eq!(mailbox.push(2), Err(2));
        let other = Mailbox::new();
        drop(Inbox::new(other.clone(), far()));
        assert_eq!(other.push(3), Err(3), "dropping the inbox closes it");
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_is_polled_again_only_once_it_fired_or_moved() {
        let mailbox = Mailbox::<()>::new();
        let start = Instant::now();
        let mut inbox = Inbox::new(mailbox.clone(), start + Duration::from_secs(1));
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(inbox.poll_recv(&mut cx).is_pending());
        assert!(inbox.poll_timer(&mut cx).is_pending());
        assert!(inbox.timer_noted);
        // Past the deadline: the timer's wake notes it and wakes the task.
        tokio::time::sleep_until(start + Duration::from_secs(2)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(inbox.poll_timer(&mut cx), Poll::Ready(()));
        // Moved: polled again (and registered) at the next poll.
        inbox.reset(start + Duration::from_secs(5));
        assert_eq!(inbox.deadline(), start + Duration::from_secs(5));
        assert!(inbox.poll_timer(&mut cx).is_pending());
        tokio::time::sleep_until(start + Duration::from_secs(6)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(inbox.poll_timer(&mut cx), Poll::Ready(()));
    }
}
