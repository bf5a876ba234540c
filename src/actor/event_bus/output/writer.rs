//! The writer: takes everything the bus handed over since its last write, writes it in one
//! `write_all` and one flush, then tells the flushes that waited for it.
//!
//! Two kinds, which share what they hold and how they take and tell ([`Writer`]):
//! - [`write_task`], a tokio task for an [`AsyncWrite`](tokio::io::AsyncWrite) sink (an
//!   embedder's; `tokio::io::stdout()` and `tokio::fs::File` hand every write and flush to
//!   tokio's blocking pool: a thread wake-up and a task wake-up per write);
//! - [`write_thread`], an OS thread of its own for a blocking [`io::Write`] sink (the CLI's
//!   stdout, a pipe, a file): it sleeps on a condition variable, the bus wakes it only when it
//!   waits (`Handed::thread_waits`), and it writes with plain system calls.
//!
//! Either way, after a failed write or flush the sink is dropped: the failure is recorded once
//! (every later event the bus takes reports it), nothing is written again. When the writer
//! ends (the bus is gone, or the task was dropped with the runtime), `Gone` marks it so: the
//! bus then no longer hands anything over nor waits for it.

use std::io::{self, Write as _};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::{BlockingSink, Handed, Shared, Sink, Wake, buffer_size};

/// What one write takes from [`Handed`] besides the bytes: the flushes that wait for them.
struct Taken {
    flushed: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// What both kinds of writer hold between writes.
struct Writer {
    shared: Arc<Shared>,
    /// The bytes being written (swapped with the handed-over buffer: no copy).
    bytes: Vec<u8>,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Self {
        Writer {
            shared,
            bytes: Vec::with_capacity(buffer_size()),
        }
    }

    /// Swap the handed-over bytes in, when there is anything to do.
    fn take(&mut self, handed: &mut Handed) -> Option<Taken> {
        if handed.bytes.is_empty() && handed.flushed.is_empty() {
            return None;
        }
        std::mem::swap(&mut handed.bytes, &mut self.bytes);
        Some(Taken {
            flushed: std::mem::take(&mut handed.flushed),
        })
    }

    /// After a write: record its failure, tell the flushes that waited for it; whether it
    /// succeeded.
    fn written(&mut self, written: io::Result<()>, taken: Taken) -> bool {
        let ok = written.is_ok();
        if let Err(e) = written {
            tracing::warn!(error = %e, "the event output failed; no more events are written to it");
            let _ = self.shared.failure.set((e.kind(), e.to_string()));
        }
        self.bytes.clear();
        for tx in taken.flushed {
            let _ = tx.send(());
        }
        ok
    }
}

/// The writer task of an async sink. After a failure it only tells flushes until the bus is
/// gone.
pub(super) async fn write_task(sink: Sink, shared: Arc<Shared>) {
    let _gone = Gone(shared.clone());
    let Wake::Task(work) = &shared.wake else {
        return;
    };
    let mut sink = Some(sink);
    let mut writer = Writer::new(shared.clone());
    loop {
        // Made before looking, so that a `notify_one` in between is not missed.
        let notified = work.notified();
        let taken = {
            let mut handed = shared.handed();
            let taken = writer.take(&mut handed);
            if taken.is_none() && handed.closed {
                break;
            }
            taken
        };
        let Some(taken) = taken else {
            notified.await;
            continue;
        };
        shared.room.notify_one();
        let mut written = Ok(());
        if let Some(s) = sink.as_mut() {
            if !writer.bytes.is_empty() {
                written = s.write_all(&writer.bytes).await;
            }
            if written.is_ok() {
                written = s.flush().await;
            }
        }
        if !writer.written(written, taken) {
            sink = None;
        }
    }
}

/// The writer thread of a blocking sink: the same loop with blocking writes, asleep on the
/// condition variable while there is nothing to write.
pub(super) fn write_thread(sink: BlockingSink, shared: Arc<Shared>) {
    let _gone = Gone(shared.clone());
    let Wake::Thread(work) = &shared.wake else {
        return;
    };
    let mut sink = Some(sink);
    let mut writer = Writer::new(shared.clone());
    loop {
        let taken = {
            let mut handed = shared.handed();
            loop {
                if let Some(taken) = writer.take(&mut handed) {
                    break taken;
                }
                if handed.closed {
                    return;
                }
                // Cleared by the hand-over that wakes it (`Shared::wake_writer`).
                handed.thread_waits = true;
                handed = work
                    .wait(handed)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        shared.room.notify_one();
        let mut written = Ok(());
        if let Some(s) = sink.as_mut() {
            if !writer.bytes.is_empty() {
                written = s.write_all(&writer.bytes);
            }
            if written.is_ok() {
                written = s.flush();
            }
        }
        if !writer.written(written, taken) {
            sink = None;
        }
    }
}

/// Marks the writer gone when it ends, however it ends (also when its task is dropped with
/// the runtime): the bus then no longer hands anything over nor waits for it.
struct Gone(Arc<Shared>);

impl Drop for Gone {
    fn drop(&mut self) {
        let mut handed = self.0.handed();
        handed.writer_gone = true;
        // Dropped untold: their flushes end without waiting.
        handed.flushed.clear();
        drop(handed);
        self.0.room.notify_one();
    }
}
