//! [`Output`]: the bus's sink (stdout for the CLI), written by a writer of its own.
//!
//! Each event's line (serialised by its producer, see `lines`) is copied into the bus's
//! buffer. The buffer is handed over whenever the bus has nothing else to do, or when it
//! passes [`WRITE_AT`] bytes: it joins what the writer has not taken yet, and the writer
//! takes everything handed over since its last write in one `write_all` and one flush, while
//! the bus goes on numbering, storing and buffering the next events. So a burst of events
//! costs one write and one flush, no line waits for a later event, the time a write takes
//! is no longer time the bus stands still, and while a write is under way the bursts that end
//! meanwhile wait for the next write instead of each costing a write (and a wake-up of the
//! writer) of its own. The writer is a tokio task for an async [`Sink`], or an OS thread of its
//! own writing with blocking system calls for a [`BlockingSink`] (the CLI's stdout), which
//! spares every write the two wake-ups of a hand-off to tokio's blocking pool (see `writer`).
//!
//! The sink is fed in the bus's order, as the architecture's sinks are: a publish is answered
//! once its lines are handed over, not once they are written, so no producer waits for a
//! write and no reply has to come back from the writer's thread (a wake-up of a tokio worker
//! from outside the runtime per write: about a tenth of the CPU time per event of the T4
//! bench). [`Output::flush`] waits for the writes (the engine's shutdown).
//!
//! Lines handed over and not taken by the writer are bounded: once they pass [`WRITE_AT`]
//! the bus waits for the writer to take them (a stalled reader stalls the bus, and with it
//! the producers: memory stays flat and nothing is dropped). Three buffers go round (the
//! bus's, the one handed over, the one being written), each about [`WRITE_AT`] (twice that
//! at most for the one handed over). A failed write or flush drops the sink: the writer
//! records the error, and every event the bus takes after that reports it (the events
//! still are stored and delivered); nothing is written again.
//!
//! A sink given as a file descriptor that is a pipe (the CLI's stdout under `| jq`, a
//! supervisor's pipe) gets a kernel buffer of [`PIPE_BUFFER`] first ([`widen_pipe`]), so
//! that a write hands the reader several buffers' worth at once and writer and reader wake
//! each other less often.

mod writer;

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::{Notify, oneshot};

use super::{BlockingSink, Sink};
use crate::schema::Event;

/// Buffered bytes past which the buffer is handed over without waiting for the bus to be
/// idle, and handed-over bytes past which the bus waits for the writer. Bounds the memory a
/// burst and a stalled reader hold; larger writes cost fewer system calls.
pub(super) const WRITE_AT: usize = 256 * 1024;

/// The kernel buffer a pipe sink is given: 1 MiB, Linux's limit for an unprivileged process
/// (`/proc/sys/fs/pipe-max-size`), against the default 64 KiB, which a hand-over of
/// [`WRITE_AT`] already passes.
pub(crate) const PIPE_BUFFER: usize = 1 << 20;

/// Raises the kernel buffer of `fd` to [`PIPE_BUFFER`] when it is a pipe with a smaller one.
/// Anything else (a file, a terminal, a pipe the system will not let grow) is left as it is:
/// the buffer only changes how often writer and reader wake each other.
pub(crate) fn widen_pipe(fd: std::os::fd::BorrowedFd<'_>) {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{FcntlArg, fcntl};
        let Ok(size) = fcntl(fd, FcntlArg::F_GETPIPE_SZ) else {
            return; // not a pipe
        };
        let wanted = i32::try_from(PIPE_BUFFER).unwrap_or(i32::MAX);
        if size < wanted
            && let Err(e) = fcntl(fd, FcntlArg::F_SETPIPE_SZ(wanted))
        {
            tracing::debug!(error = %e, size, "the sink's pipe keeps its buffer");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// Where the bus writes its lines, and so what kind of writer it gets.
pub(crate) enum Destination {
    /// Written by a tokio task.
    Async(Sink),
    /// Written by an OS thread of its own, with blocking writes.
    Blocking(BlockingSink),
}

/// The bus's side: the buffer being filled and the way to the writer.
pub(super) struct Output {
    /// Lines not handed over yet.
    buf: Vec<u8>,
    /// `None` when there is no sink.
    writer: Option<ToWriter>,
}

/// The way to the writer. Dropped with the bus: the writer then writes what it was handed
/// and drops the sink.
struct ToWriter {
    shared: Arc<Shared>,
}

/// What the bus and the writer share.
struct Shared {
    handed: Mutex<Handed>,
    /// Wakes the writer: something was handed over, or the bus is gone.
    wake: Wake,
    /// Wakes the bus: the writer took what was handed over.
    room: Notify,
    /// The sink's failure, recorded once by the writer (kind and message: `io::Error` is not
    /// `Clone`).
    failure: OnceLock<(io::ErrorKind, String)>,
}

/// How the writer is woken.
enum Wake {
    /// The writer task waits on it.
    Task(Notify),
    /// The writer thread waits on it, with [`Handed::thread_waits`] set (and `Handed` locked).
    Thread(Condvar),
}

/// Handed over by the bus and not taken by the writer yet.
#[derive(Default)]
struct Handed {
    /// Lines, in order.
    bytes: Vec<u8>,
    /// Told once `bytes` are written and flushed ([`Output::flush`]).
    flushed: Vec<oneshot::Sender<()>>,
    /// The bus is gone: the writer writes what is here and ends.
    closed: bool,
    /// The writer ended (its task was dropped with the runtime): nothing is written any more.
    writer_gone: bool,
    /// The writer thread sleeps on [`Wake::Thread`] until woken: a hand-over that finds it
    /// writing needs no system call to wake it.
    thread_waits: bool,
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

    /// Wake the writer after a change to `handed`, which is unlocked here. A sleeping thread
    /// is marked awake at once, so that the next hand-over does not wake it again.
    fn wake_writer(&self, mut handed: MutexGuard<'_, Handed>) {
        let thread_waits = std::mem::take(&mut handed.thread_waits);
        drop(handed);
        match &self.wake {
            Wake::Task(work) => work.notify_one(),
            Wake::Thread(work) if thread_waits => work.notify_one(),
            Wake::Thread(_) => {}
        }
    }
}

impl Drop for ToWriter {
    fn drop(&mut self) {
        let mut handed = self.shared.handed();
        handed.closed = true;
        self.shared.wake_writer(handed);
    }
}

impl Output {
    /// The output for `sink`; spawns the writer task or thread (call inside the runtime). A
    /// thread that cannot be started is the sink's failure.
    pub(super) fn new(sink: Option<Destination>) -> Self {
        let writer = sink.map(|sink| {
            let shared = Arc::new(Shared {
                handed: Mutex::new(Handed {
                    bytes: Vec::with_capacity(buffer_size()),
                    ..Handed::default()
                }),
                wake: match &sink {
                    Destination::Async(_) => Wake::Task(Notify::new()),
                    Destination::Blocking(_) => Wake::Thread(Condvar::new()),
                },
                room: Notify::new(),
                failure: OnceLock::new(),
            });
            match sink {
                Destination::Async(sink) => {
                    tokio::spawn(writer::write_task(sink, shared.clone()));
                }
                Destination::Blocking(sink) => {
                    let thread = shared.clone();
                    let started = std::thread::Builder::new()
                        .name("perstack-output".into())
                        .spawn(move || writer::write_thread(sink, thread));
                    if let Err(e) = started {
                        let _ = shared.failure.set((e.kind(), e.to_string()));
                        shared.handed().writer_gone = true;
                    }
                }
            }
            ToWriter { shared }
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
            None => super::lines::append_line(&mut self.buf, event),
        }
        Ok(())
    }

    /// Hand the buffer to the writer if it passed [`WRITE_AT`].
    pub(super) async fn write_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= WRITE_AT {
            self.hand_over(None).await;
        }
        self.failed().map_or(Ok(()), Err)
    }

    /// Whether lines wait in the bus's buffer.
    pub(super) fn holds_lines(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The bus is idle: hand what is buffered to the writer.
    pub(super) async fn write_out(&mut self) {
        if self.buf.is_empty() || self.failed().is_some() {
            self.buf.clear();
            return;
        }
        self.hand_over(None).await;
    }

    /// Write out everything buffered and wait until the writer has written and flushed it
    /// (at shutdown).
    pub(super) async fn flush(&mut self) {
        let (tx, rx) = oneshot::channel();
        if self.hand_over(Some(tx)).await {
            let _ = rx.await;
        }
    }

    /// Hand the buffer (possibly empty) over to the writer, after what it has not taken yet,
    /// first waiting while that passes [`WRITE_AT`]; whether the writer has it (none, or one
    /// that is gone, has not).
    async fn hand_over(&mut self, flushed: Option<oneshot::Sender<()>>) -> bool {
        let Some(writer) = self.writer.as_ref() else {
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
                    return false;
                }
                if handed.bytes.len() < WRITE_AT {
                    if handed.bytes.is_empty() {
                        std::mem::swap(&mut handed.bytes, &mut self.buf);
                    } else {
                        handed.bytes.extend_from_slice(&self.buf);
                        self.buf.clear();
                    }
                    handed.flushed.extend(flushed);
                    shared.wake_writer(handed);
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
