//! Reply lines of a `ping` run, written to stdout a batch at a time.
//!
//! A list of thousands of targets produces a reply line per target within a fraction of a
//! second. Written one `write(2)` each (as [`Out`] does), the lines cost a system call per
//! target, and a reader on the other end of a pipe wakes once per line: on a loaded machine,
//! a tenth of the run. [`Batched`] gathers the lines instead and a writer task writes them:
//! it wakes when the first line comes into an empty batch, lets every other task that is
//! ready run first ([`tokio::task::yield_now`]), then writes whatever has gathered in one
//! call. When the runtime is idle (one target, a ping a second) a line is written as soon as
//! it comes; when it is busy, the lines of one turn of the runtime share a write. No timer
//! is involved, so nothing waits for one.
//!
//! The batch is bounded: a line that takes it past [`BATCH_LIMIT`] writes it out itself,
//! waiting as a direct write would for a reader that does not read (`ping ... | less`), so
//! a stalled stdout holds the pings up rather than growing the batch without end.
//!
//! Lines keep the order they were added in: every write takes the batch and writes it under
//! one lock. A failed write (a closed pipe) is reported to every later caller, so targets
//! stop as they would with [`Out`].

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[cfg(doc)]
use crate::output::Out;
use crate::output::Sink;

/// Lines gathered for stdout; see the [module docs](self).
pub(crate) struct Batched {
    pending: Mutex<Pending>,
    /// Notified when a line comes into an empty batch, and when the run ends.
    ready: Notify,
    /// Where batches go, and the emptied buffer of the last one (the two buffers trade
    /// places, so that neither the lines nor the writes allocate once warm). Held for the
    /// whole of a write: batches are taken and written in one order.
    sink: Mutex<(Box<dyn Write + Send>, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// A write failed (the kind of its error): later lines fail the same way.
    broken: Option<io::ErrorKind>,
    /// No more lines come: the writer writes what is left and ends.
    closed: bool,
}

/// Bytes a batch holds at most before the line that takes it past this writes it out.
pub(crate) const BATCH_LIMIT: usize = 1024 * 1024;

impl Batched {
    /// An empty batch and its writer task, which writes to `sink` (stdout, in the tool).
    pub(crate) fn start<W: Write + Send + 'static>(sink: W) -> (Arc<Batched>, Writer) {
        let batched = Arc::new(Batched {
            pending: Mutex::default(),
            ready: Notify::new(),
            sink: Mutex::new((Box::new(sink), Vec::new())),
        });
        let task = tokio::spawn(write_batches(batched.clone()));
        (batched, Writer { task })
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds to the batch what `fill` appends to its bytes (one or more whole lines).
    fn add(&self, fill: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<()> {
        let mut pending = self.lock();
        if let Some(kind) = pending.broken {
            return Err(io::Error::from(kind));
        }
        if pending.closed {
            return Err(io::Error::other("a line came after the end of the run"));
        }
        let was_empty = pending.bytes.is_empty();
        let before = pending.bytes.len();
        if let Err(e) = fill(&mut pending.bytes) {
            pending.bytes.truncate(before);
            return Err(e);
        }
        let full = pending.bytes.len() >= BATCH_LIMIT;
        drop(pending);
        if full {
            return self.write_out();
        }
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Takes the batch and writes it, after any write under way; the error of this write or
    /// of an earlier one.
    fn write_out(&self) -> io::Result<()> {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        let (out, spare) = &mut *sink;
        {
            let mut pending = self.lock();
            if let Some(kind) = pending.broken {
                return Err(io::Error::from(kind));
            }
            std::mem::swap(&mut pending.bytes, spare);
        }
        if spare.is_empty() {
            return Ok(());
        }
        let written = out.write_all(spare).and_then(|()| out.flush());
        spare.clear();
        if let Err(e) = written {
            crate::output::write_error(&e);
            self.lock().broken = Some(e.kind());
            return Err(e);
        }
        Ok(())
    }
}

impl Sink for Batched {
    fn line_with(&self, fill: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        self.add(|bytes| {
            fill(bytes);
            bytes.push(b'\n');
            Ok(())
        })
    }

    fn line(&self, line: &str) -> io::Result<()> {
        self.add(|bytes| {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            Ok(())
        })
    }

    fn json<T: Serialize>(&self, record: &T) -> io::Result<()> {
        // Serialized straight into the batch: no buffer of its own, no copy.
        self.add(|bytes| {
            serde_json::to_writer(&mut *bytes, record).map_err(io::Error::other)?;
            bytes.push(b'\n');
            Ok(())
        })
    }
}

/// The writer task of a [`Batched`]; [`Writer::finish`] waits until every line is written.
#[derive(Debug)]
pub(crate) struct Writer {
    task: JoinHandle<()>,
}

impl Writer {
    /// Ends the batch: the lines still gathered are written, then the task ends. Lines
    /// added after this fail. Returns an error if a write failed (now or before).
    pub(crate) async fn finish(self, batched: &Batched) -> io::Result<()> {
        batched.lock().closed = true;
        batched.ready.notify_one();
        // The task only ends by returning (a panic in a write is the only other way).
        let _ = self.task.await;
        match batched.lock().broken {
            Some(kind) => Err(io::Error::from(kind)),
            None => Ok(()),
        }
    }
}

/// The writer task: waits for lines, lets the other ready tasks add theirs, writes them all
/// in one call; until closed and empty, or a write fails.
async fn write_batches(batched: Arc<Batched>) {
    loop {
        batched.ready.notified().await;
        tokio::task::yield_now().await;
        let closed = batched.lock().closed;
        // A blocking write, as a direct one would be: stdout is a terminal, a file or a
        // pipe, none of which tokio can wait for without a thread of its own.
        if batched.write_out().is_err() {
            return;
        }
        // Lines are refused once closed, so what came before the close is written now.
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records each write, so batching is visible; fails once `fail_after`
    /// writes have been made.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        fail_after: Option<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut writes = self.writes.lock().unwrap();
            if self.fail_after.is_some_and(|n| writes.len() >= n) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            writes.push(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(self.writes.lock().unwrap().concat()).unwrap()
        }
    }

    #[tokio::test]
    async fn lines_of_one_turn_share_a_write_and_keep_their_order() {
        let sink = Recorder::default();
        let (out, writer) = Batched::start(sink.clone());
        // All added before the writer task runs: one batch.
        for i in 0..100 {
            out.line(&format!("line {i}")).unwrap();
        }
        out.json(&serde_json::json!({"seq": 100})).unwrap();
        writer.finish(&out).await.unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(sink.text(), format!("{expected}{{\"seq\":100}}\n"));
        assert_eq!(
            sink.writes.lock().unwrap().len(),
            1,
            "one write for the batch"
        );
    }

    #[tokio::test]
    async fn a_line_added_while_idle_is_written_without_waiting_for_the_end() {
        let sink = Recorder::default();
        let (out, writer) = Batched::start(sink.clone());
        out.line("first").unwrap();
        // The writer writes it on its own: poll until it has (bounded by the test's runtime
        // turns, not by a clock).
        while sink.writes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        out.line("second").unwrap();
        writer.finish(&out).await.unwrap();
        assert_eq!(sink.text(), "first\nsecond\n");
        assert_eq!(sink.writes.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_failed_write_fails_later_lines_and_the_finish() {
        let sink = Recorder {
            fail_after: Some(0),
            ..Recorder::default()
        };
        let (out, writer) = Batched::start(sink.clone());
        out.line("lost").unwrap();
        // Until the writer has failed, lines are still taken.
        while out.line("more").is_ok() {
            tokio::task::yield_now().await;
        }
        let e = out.line("after").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let e = writer.finish(&out).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn a_line_that_fills_the_batch_writes_it_itself() {
        let sink = Recorder::default();
        let (out, writer) = Batched::start(sink.clone());
        let line = "x".repeat(999);
        let lines = 3 * BATCH_LIMIT / 1000;
        // The writer task never runs in between (one thread, no await): only the lines
        // that fill the batch write it, so it never holds more than its limit and a line.
        for _ in 0..lines {
            out.line(&line).unwrap();
            assert!(out.lock().bytes.len() < BATCH_LIMIT + 1000);
        }
        let writes = sink.writes.lock().unwrap().len();
        assert!(
            (2..=3).contains(&writes),
            "{writes} writes for three batches' worth"
        );
        writer.finish(&out).await.unwrap();
        assert_eq!(sink.text().len(), lines * 1000);
        assert!(sink.text().lines().all(|l| l == line));
    }

    #[tokio::test]
    async fn lines_after_the_finish_are_refused() {
        let (out, writer) = Batched::start(Recorder::default());
        writer.finish(&out).await.unwrap();
        assert!(out.line("late").is_err());
    }
}
