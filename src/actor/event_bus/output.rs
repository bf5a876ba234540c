//! [`Output`]: the bus's sink (stdout for the CLI), written by a task of its own.
//!
//! Each event's line (serialised by its producer, see `lines`) is copied into the bus's
//! buffer. The buffer goes to the writer task whenever the bus has nothing else to do, or
//! when it passes [`WRITE_AT`] bytes; the writer writes it in one `write_all` and flushes,
//! while the bus goes on numbering, storing and buffering the next events in a spare buffer. So a burst of
//! events costs one write and one flush, no line waits for a later event, and the time a
//! write takes (a hand-off to tokio's blocking pool for stdout or a file) is no longer time
//! the bus stands still.
//!
//! The reply to the message that ended a burst travels with its buffer and is sent by the
//! writer once the bytes are written: as before, a producer that waits for the last reply
//! of a burst knows its lines are out (or that the sink failed). Replies to the earlier
//! messages of a burst go at once, as they always did.
//!
//! At most [`IN_FLIGHT`] buffers wait for the writer; past that the bus waits for it (a
//! stalled reader stalls the bus, and with it the producers: memory stays flat and nothing is
//! dropped). A failed write or flush drops the sink: the writer records the error, answers
//! every reply it carries with it, and every later event reports the same error; nothing is
//! written again.

use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use kameo::reply::ReplySender;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::{BusError, Sink};
use crate::schema::Event;

/// Buffered bytes past which the buffer goes to the writer without waiting for the bus to be
/// idle. Bounds the memory a burst holds; larger writes cost fewer system calls.
const WRITE_AT: usize = 256 * 1024;

/// Buffers handed to the writer and not written yet. At the limit the bus waits for the sink,
/// so a stalled reader holds at most this many buffers (plus the bus's own and the one being
/// written), never more.
const IN_FLIGHT: usize = 2;

/// The reply of the message that ended a burst, sent once the burst's lines are written.
pub(super) type Reply = ReplySender<Result<u64, BusError>>;

/// The sink's failure, recorded once by the writer (kind and message: `io::Error` is not
/// `Clone`).
type Failure = Arc<OnceLock<(io::ErrorKind, String)>>;

/// The bus's side: the buffer being filled and the way to the writer.
pub(super) struct Output {
    /// Lines not handed to the writer yet.
    buf: Vec<u8>,
    /// `None` when there is no sink.
    writer: Option<Writer>,
}

/// The way to the writer task.
struct Writer {
    /// Full buffers for the writer, bounded by [`IN_FLIGHT`] (the back-pressure of a slow
    /// reader). Closed when the bus stops: the writer then writes what it has and drops the
    /// sink.
    tx: mpsc::Sender<Chunk>,
    /// Set by the writer when the sink failed.
    failure: Failure,
    /// Emptied buffers, handed back by the writer for reuse (at most [`IN_FLIGHT`] + 1).
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// One buffer for the writer, and who waits for it.
struct Chunk {
    bytes: Vec<u8>,
    /// The reply of the message that ended the burst, with the result it gets when the write
    /// succeeds.
    reply: Option<(Reply, Result<u64, BusError>)>,
    /// Told when the bytes are written and flushed ([`Output::flush`]).
    flushed: Option<oneshot::Sender<()>>,
}

impl Output {
    /// The output for `sink`; spawns the writer task (call inside the runtime).
    pub(super) fn new(sink: Option<Sink>) -> Self {
        let writer = sink.map(|sink| {
            let (tx, rx) = mpsc::channel(IN_FLIGHT);
            let failure = Failure::default();
            let spare = Arc::new(Mutex::new(Vec::new()));
            tokio::spawn(write_loop(sink, rx, failure.clone(), spare.clone()));
            Writer { tx, failure, spare }
        });
        Output {
            buf: Vec::with_capacity(if writer.is_some() { buffer_size() } else { 0 }),
            writer,
        }
    }

    /// The sink's failure, if it failed.
    pub(super) fn failed(&self) -> Option<io::Error> {
        let (kind, message) = self.writer.as_ref()?.failure.get()?;
        Some(io::Error::new(*kind, message.clone()))
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
        match (self.failed(), result) {
            (Some(e), Ok(_)) => Err(BusError::Sink(e)),
            (_, result) => result,
        }
    }

    /// Send the buffer (possibly empty) to the writer, waiting for room; whether the writer
    /// took it. Without a writer, or with one that is gone, the reply is answered here.
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
        let next = writer
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(buffer_size()));
        let chunk = Chunk {
            bytes: std::mem::replace(&mut self.buf, next),
            reply,
            flushed,
        };
        match writer.tx.send(chunk).await {
            Ok(()) => true,
            // The writer ended (its task was dropped with the runtime): nothing is written.
            Err(mpsc::error::SendError(chunk)) => {
                if let Some((reply, result)) = chunk.reply {
                    reply.send(result);
                }
                false
            }
        }
    }
}

/// A buffer's capacity: [`WRITE_AT`] and room for the event that passes it.
fn buffer_size() -> usize {
    WRITE_AT + 4096
}

/// The writer task: each chunk in one write and one flush, then its reply. After a failure
/// it only answers (with the failure) and recycles until the bus closes the channel.
async fn write_loop(
    sink: Sink,
    mut rx: mpsc::Receiver<Chunk>,
    failure: Failure,
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut sink = Some(sink);
    while let Some(mut chunk) = rx.recv().await {
        if let Some(s) = sink.as_mut() {
            let mut written = Ok(());
            if !chunk.bytes.is_empty() {
                written = s.write_all(&chunk.bytes).await;
            }
            if written.is_ok() {
                written = s.flush().await;
            }
            if let Err(e) = written {
                tracing::warn!(error = %e, "the event output failed; no more events are written to it");
                let _ = failure.set((e.kind(), e.to_string()));
                sink = None;
            }
        }
        if let Some((reply, result)) = chunk.reply.take() {
            reply.send(match (failure.get(), result) {
                (Some((kind, message)), Ok(_)) => {
                    Err(BusError::Sink(io::Error::new(*kind, message.clone())))
                }
                (_, result) => result,
            });
        }
        if let Some(flushed) = chunk.flushed.take() {
            let _ = flushed.send(());
        }
        let mut bytes = chunk.bytes;
        bytes.clear();
        let mut spare = spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() <= IN_FLIGHT {
            spare.push(bytes);
        }
    }
}
