//! [`Output`]: the bus's sink (stdout for the CLI), written by a task of its own.
//!
//! Each event's line (serialised by its producer, see `lines`) is copied into the bus's
//! buffer. The buffer is handed over whenever the bus has nothing else to do, or when it
//! passes [`WRITE_AT`] bytes: it joins what the writer task has not taken yet, and the writer
//! takes everything handed over since its last write in one `write_all` and one flush, while
//! the bus goes on numbering, storing and buffering the next events. So a burst of events
//! costs one write and one flush, no line waits for a later event, the time a write takes
//! (a hand-off to tokio's blocking pool for stdout or a file) is no longer time the bus
//! stands still, and while a write is under way the bursts that end meanwhile wait for the
//! next write instead of each costing a write (and a wake-up of the writer) of its own.
//!
//! The reply to the message that ended a burst travels with its lines and is sent by the
//! writer once they are written: as before, a producer that waits for the last reply of a
//! burst knows its lines are out (or that the sink failed). Replies to the earlier messages
//! of a burst go at once, as they always did.
//!
//! Lines handed over and not taken by the writer are bounded: once they pass [`WRITE_AT`]
//! the bus waits for the writer to take them (a stalled reader stalls the bus, and with it
//! the producers: memory stays flat and nothing is dropped). Three buffers go round (the
//! bus's, the one handed over, the one being written), each about [`WRITE_AT`] (twice that
//! at most for the one handed over). A failed write or flush drops the sink: the writer
//! records the error, answers every reply it carries with it, and every later event reports
//! the same error; nothing is written again.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use kameo::reply::ReplySender;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, oneshot};

use super::{BusError, Sink};
use crate::schema::Event;

/// Buffered bytes past which the buffer is handed over without waiting for the bus to be
/// idle, and handed-over bytes past which the bus waits for the writer. Bounds the memory a
/// burst and a stalled reader hold; larger writes cost fewer system calls.
pub(super) const WRITE_AT: usize = 256 * 1024;

/// The reply of the message that ended a burst, sent once the burst's lines are written.
pub(super) type Reply = ReplySender<Result<u64, BusError>>;

/// The bus's side: the buffer being filled and the way to the writer.
pub(super) struct Output {
    /// Lines not handed over yet.
    buf: Vec<u8>,
    /// `None` when there is no sink.
    writer: Option<Writer>,
}

/// The way to the writer task. Dropped with the bus: the writer then writes what it was
/// handed and drops the sink.
struct Writer {
    shared: Arc<Shared>,
}

/// What the bus and the writer share.
struct Shared {
    handed: Mutex<Handed>,
    /// Wakes the writer: something was handed over, or the bus is gone.
    work: Notify,
    /// Wakes the bus: the writer took what was handed over.
    room: Notify,
    /// The sink's failure, recorded once by the writer (kind and message: `io::Error` is not
    /// `Clone`).
    failure: OnceLock<(io::ErrorKind, String)>,
}

/// Handed over by the bus and not taken by the writer yet.
#[derive(Default)]
struct Handed {
    /// Lines, in order.
    bytes: Vec<u8>,
    /// The replies of the messages that ended bursts, with the results they get once `bytes`
    /// are written.
    replies: Vec<(Reply, Result<u64, BusError>)>,
    /// Told once `bytes` are written and flushed ([`Output::flush`]).
    flushed: Vec<oneshot::Sender<()>>,
    /// The bus is gone: the writer writes what is here and ends.
    closed: bool,
    /// The writer ended (its task was dropped with the runtime): nothing is written any more.
    writer_gone: bool,
}

impl Shared {
    fn handed(&self) -> MutexGuard<'_, Handed> {
        self.handed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sink's failure, if it failed.
    fn failed(&self) -> Option<io::Error> {
        let (kind, message) = self.failure.get()?;
        Some(io::Error::new(*kind, message.clone()))
    }

    /// `result`, or the sink's error when the sink failed and `result` is a success.
    fn with_failure(&self, result: Result<u64, BusError>) -> Result<u64, BusError> {
        match (self.failed(), result) {
            (Some(e), Ok(_)) => Err(BusError::Sink(e)),
            (_, result) => result,
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.handed().closed = true;
        self.shared.work.notify_one();
    }
}

impl Output {
    /// The output for `sink`; spawns the writer task (call inside the runtime).
    pub(super) fn new(sink: Option<Sink>) -> Self {
        let writer = sink.map(|sink| {
            let shared = Arc::new(Shared {
                handed: Mutex::new(Handed {
                    bytes: Vec::with_capacity(buffer_size()),
                    ..Handed::default()
                }),
                work: Notify::new(),
                room: Notify::new(),
                failure: OnceLock::new(),
            });
            tokio::spawn(write_loop(sink, shared.clone()));
            Writer { shared }
        });
        Output {
            buf: Vec::with_capacity(if writer.is_some() { buffer_size() } else { 0 }),
            writer,
        }
    }

    /// The sink's failure, if it failed.
    pub(super) fn failed(&self) -> Option<io::Error> {
        self.writer.as_ref()?.shared.failed()
    }

    /// Append `event`'s JSON line (Perstack's form): `line`, as its producer serialised it,
    /// or serialised here when it did not; or the earlier failure of the sink.
    pub(super) fn push(&mut self, event: &Event, line: Option<&[u8]>) -> io::Result<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        if self.writer.is_none() {
            return Ok(());
        }
        match line {
            Some(line) => self.buf.extend_from_slice(line),
            None => {
                let start = self.buf.len();
                match serde_json::to_writer(&mut self.buf, event) {
                    Ok(()) => self.buf.push(b'\n'),
                    // Never for the engine's types (no maps with non-string keys); no half line.
                    Err(e) => {
                        self.buf.truncate(start);
                        tracing::warn!(error = %e, kind = event.kind(), "could not serialise event");
                    }
                }
            }
        }
        Ok(())
    }

    /// Hand the buffer to the writer if it passed [`WRITE_AT`].
    pub(super) async fn write_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= WRITE_AT {
            self.hand_over(None, None).await;
        }
        self.failed().map_or(Ok(()), Err)
    }

    /// The bus is idle: hand what is buffered to the writer. `reply` (the message that ended
    /// the burst) is answered with `result` once those lines are written, or with the sink's
    /// error; at once when there is nothing to write.
    pub(super) async fn write_out(&mut self, reply: Option<Reply>, result: Result<u64, BusError>) {
        if self.buf.is_empty() || self.failed().is_some() {
            self.buf.clear();
            if let Some(reply) = reply {
                reply.send(self.with_failure(result));
            }
            return;
        }
        self.hand_over(reply.map(|r| (r, result)), None).await;
    }

    /// Write out everything buffered and wait until the writer has written and flushed it
    /// (at shutdown).
    pub(super) async fn flush(&mut self) {
        let (tx, rx) = oneshot::channel();
        if self.hand_over(None, Some(tx)).await {
            let _ = rx.await;
        }
    }

    /// `result`, or the sink's error when the sink failed and `result` is a success.
    fn with_failure(&self, result: Result<u64, BusError>) -> Result<u64, BusError> {
        match &self.writer {
            Some(writer) => writer.shared.with_failure(result),
            None => result,
        }
    }

    /// Hand the buffer (possibly empty) over to the writer, after what it has not taken yet,
    /// first waiting while that passes [`WRITE_AT`]; whether the writer has it. Without a
    /// writer, or with one that is gone, the reply is answered here.
    async fn hand_over(
        &mut self,
        reply: Option<(Reply, Result<u64, BusError>)>,
        flushed: Option<oneshot::Sender<()>>,
    ) -> bool {
        let Some(writer) = self.writer.as_ref() else {
            if let Some((reply, result)) = reply {
                reply.send(result);
            }
            return false;
        };
        let shared = &writer.shared;
        loop {
            // Made before looking, so that a `notify_one` in between is not missed.
            let room = shared.room.notified();
            {
                let mut handed = shared.handed();
                if handed.writer_gone {
                    drop(handed);
                    self.buf.clear();
                    if let Some((reply, result)) = reply {
                        reply.send(result);
                    }
                    return false;
                }
                if handed.bytes.len() < WRITE_AT {
                    if handed.bytes.is_empty() {
                        std::mem::swap(&mut handed.bytes, &mut self.buf);
                    } else {
                        handed.bytes.extend_from_slice(&self.buf);
                        self.buf.clear();
                    }
                    handed.replies.extend(reply);
                    handed.flushed.extend(flushed);
                    drop(handed);
                    shared.work.notify_one();
                    return true;
                }
            }
            room.await;
        }
    }
}

/// A buffer's capacity: [`WRITE_AT`] and room for the event that passes it.
fn buffer_size() -> usize {
    WRITE_AT + 4096
}

/// The writer task: everything handed over since its last write, in one write and one
/// flush, then the replies that came with it. After a failure it only answers (with the
/// failure) until the bus is gone.
async fn write_loop(sink: Sink, shared: Arc<Shared>) {
    let gone = WriterGone(shared.clone());
    let mut sink = Some(sink);
    let mut bytes = Vec::with_capacity(buffer_size());
    loop {
        // Made before looking, so that a `notify_one` in between is not missed.
        let work = shared.work.notified();
        let taken = {
            let mut handed = shared.handed();
            if !handed.bytes.is_empty() || !handed.replies.is_empty() || !handed.flushed.is_empty()
            {
                std::mem::swap(&mut handed.bytes, &mut bytes);
                Some((
                    std::mem::take(&mut handed.replies),
                    std::mem::take(&mut handed.flushed),
                ))
            } else if handed.closed {
                break;
            } else {
                None
            }
        };
        let Some((replies, flushed)) = taken else {
            work.await;
            continue;
        };
        shared.room.notify_one();
        if let Some(s) = sink.as_mut() {
            let mut written = Ok(());
            if !bytes.is_empty() {
                written = s.write_all(&bytes).await;
            }
            if written.is_ok() {
                written = s.flush().await;
            }
            if let Err(e) = written {
                tracing::warn!(error = %e, "the event output failed; no more events are written to it");
                let _ = shared.failure.set((e.kind(), e.to_string()));
                sink = None;
            }
        }
        bytes.clear();
        for (reply, result) in replies {
            reply.send(shared.with_failure(result));
        }
        for tx in flushed {
            let _ = tx.send(());
        }
    }
    drop(gone);
}

/// Marks the writer gone when its task ends, however it ends (also when it is dropped with
/// the runtime): the bus then answers replies itself and no longer waits for the writer.
struct WriterGone(Arc<Shared>);

impl Drop for WriterGone {
    fn drop(&mut self) {
        let mut handed = self.0.handed();
        handed.writer_gone = true;
        // Dropped unanswered: their producers see the bus gone, as with a stopped actor.
        handed.replies.clear();
        handed.flushed.clear();
        drop(handed);
        self.0.room.notify_one();
    }
}
