//! The event bus: the one place events leave the engine.
//!
//! Every event (state, streaming, runtime) of every job goes through [`EventBus`]: it gives
//! the event its two sequence numbers (engine-wide, and the job's own, see [`jobs`]), makes a
//! carried checkpoint durable in storage, writes the compact JSON line to the sink (stdout
//! for the CLI, see [`output`]), stores run events, and hands the event to the listeners.
//! Because one actor does all of it, stdout lines are never interleaved and a checkpoint is
//! always durable before its event is visible.
//!
//! Producers publish through [`Bus`]: it serialises the events' lines on the producer's task
//! (the line depends on nothing the bus gives, see [`lines`]), then `ask`s the bus and waits
//! for the reply, so a slow sink or listener slows the producers down (backpressure);
//! nothing is dropped. A run publishes a machine output's events in one [`Publish`] (one
//! mailbox slot and one reply for all of them, in order), and a model call the streaming
//! events of each burst of its stream; runtime events come one at a time. The bus never
//! calls back into a run. The sink is written by a writer of the output's (a task, or a thread
//! of its own for a blocking sink such as the CLI's stdout), fed in the bus's order: an event
//! is visible once it is stored, delivered to the listeners and subscribers, and its line is
//! queued for the sink, so the bus numbers, stores and buffers the next events while the last
//! burst is being written, and a producer waits for a write only when the queue is full (see
//! [`output`]; the engine's shutdown waits for the last write).
//!
//! Two failures are reported to the producer as a [`BusError`], whose
//! [`BusError::run_failure`] decides what the run does: a checkpoint the store refuses (the
//! event is not shown, nor are the rest of its batch; a storage failure stops the job, whose
//! runs then end with a `stopRunByError` shown through [`Bus::publish_unstored`]), and a sink that
//! failed (a reader that closed stdout: reported by every publish after the write that found
//! it; the events are still stored and delivered, and the job is cancelled).
//!
//! | file | owns |
//! | --- | --- |
//! | this one | the actor, its messages, the producers' handle, the order of the steps for one event |
//! | `error` | [`BusError`] and its policy |
//! | `lines` | the lines of a publish, serialised by the producer |
//! | `output` | the sink: the bus's buffer, handed to a writer (task or thread) when full or idle |
//! | `jobs` | per job: its sequence number and its subscribers |

mod error;
mod jobs;
mod lines;
mod output;

use std::sync::Arc;

use kameo::prelude::*;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

pub use self::error::BusError;
use self::jobs::Jobs;
use self::lines::Lines;
use self::output::Output;
pub(crate) use self::output::{Destination, widen_pipe};
use crate::schema::{Event, EventPayload};
use crate::storage::Storage;

/// The mailbox size of the bus. Producers wait when it is full; a batch takes one slot.
pub(crate) const BUS_MAILBOX: usize = 1024;

/// An event as the bus delivered it.
#[derive(Debug, Clone)]
pub struct Sequenced {
    /// Position in the engine-wide order, from 1.
    pub seq: u64,
    /// The event; its [`Event::job_seq`] is set when its job is running on this engine.
    pub event: Arc<Event>,
}

impl Sequenced {
    /// The event's position in its job's history, from 1 (see [`Event::job_seq`]); `None`
    /// for an event of a job this engine is not running.
    pub fn job_seq(&self) -> Option<u64> {
        self.event.job_seq
    }
}

/// A synchronous listener, called on the bus task for every event; keep it cheap.
pub type Callback = Arc<dyn Fn(&Sequenced) + Send + Sync>;

/// Where serialised events go, written from a tokio task.
pub type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// Where serialised events go, written with blocking writes from a thread of the bus's own
/// (stdout for the CLI).
pub(crate) type BlockingSink = Box<dyn std::io::Write + Send>;

/// How many times a store the error of which [`StoreError::is_retryable`] is tried in all.
///
/// [`StoreError::is_retryable`]: crate::storage::StoreError::is_retryable
const STORE_ATTEMPTS: usize = 3;

/// The bus actor.
pub(crate) struct EventBus {
    output: Output,
    storage: Arc<dyn Storage>,
    callbacks: Vec<Callback>,
    jobs: Jobs,
    seq: u64,
}

/// What the bus starts with.
pub(crate) struct BusArgs {
    /// Where JSON lines go, if anywhere.
    pub sink: Option<Destination>,
    /// Checkpoints and run events are stored here.
    pub storage: Arc<dyn Storage>,
    /// Listeners for every event of every job.
    pub callbacks: Vec<Callback>,
}

impl Actor for EventBus {
    type Args = BusArgs;
    type Error = std::convert::Infallible;

    async fn on_start(args: BusArgs, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        Ok(EventBus {
            output: Output::new(args.sink),
            storage: args.storage,
            callbacks: args.callbacks,
            jobs: Jobs::default(),
            seq: 0,
        })
    }
}

/// The producers' way to the bus (the engine's and every job's): each publish serialises its
/// events' lines on the caller's task (see [`lines`]), then asks the bus once.
#[derive(Clone)]
pub(crate) struct Bus {
    actor: ActorRef<EventBus>,
    /// Whether the bus has a sink: without one nothing is serialised.
    prints: bool,
}

impl Bus {
    /// Start a bus (call inside the runtime).
    pub(crate) fn spawn(args: BusArgs) -> Bus {
        let prints = args.sink.is_some();
        let actor = EventBus::spawn_with_mailbox(args, kameo::mailbox::bounded(BUS_MAILBOX));
        Bus { actor, prints }
    }

    /// The actor, for the messages other than the publishes.
    pub(crate) fn actor(&self) -> &ActorRef<EventBus> {
        &self.actor
    }

    /// Publish one event; its sequence number once it is visible.
    pub(crate) async fn publish(&self, event: Event) -> Result<u64, BusError> {
        self.send(vec![event], true).await
    }

    /// Publish events in order, in one message (a machine output's); the last one's sequence
    /// number once all are visible. A checkpoint the store refuses stops the batch there
    /// (that event and the rest are not shown); a failed sink does not (every event is still
    /// stored and delivered). The error is the first failure.
    pub(crate) async fn publish_batch(&self, events: Vec<Event>) -> Result<u64, BusError> {
        self.send(events, true).await
    }

    /// Publish the terminal event of a run stopped by a storage failure without storing
    /// anything (its checkpoint could not be stored; see `RunFailure::is_visible_unstored`);
    /// its sequence number once it is visible.
    pub(crate) async fn publish_unstored(&self, event: Event) -> Result<u64, BusError> {
        self.send(vec![event], false).await
    }

    async fn send(&self, events: Vec<Event>, store: bool) -> Result<u64, BusError> {
        let lines = match self.prints {
            true => Lines::of(&events),
            false => Lines::none(),
        };
        self.actor
            .ask(Publish {
                events,
                lines,
                store,
            })
            .await
            .map_err(BusError::from_send)
    }
}

/// Publish events in order, with their lines when the producer serialised them (see
/// [`Bus::publish_batch`] and [`Bus::publish_unstored`] for what `store` and a failure
/// mean); replies with the last one's sequence number once all are visible.
#[derive(Debug)]
pub(crate) struct Publish {
    events: Vec<Event>,
    lines: Lines,
    /// Whether checkpoints and events are stored (all but `Bus::publish_unstored`).
    store: bool,
}

impl Message<Publish> for EventBus {
    type Reply = DelegatedReply<Result<u64, BusError>>;

    async fn handle(
        &mut self,
        Publish {
            events,
            lines,
            store,
        }: Publish,
        ctx: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let mut result = Ok(self.seq);
        for (i, event) in events.into_iter().enumerate() {
            match self.publish(event, lines.get(i), store).await {
                Ok(seq) => result = result.map(|_| seq),
                Err(e) => {
                    let stop = !e.event_was_stored();
                    if result.is_ok() {
                        result = Err(e);
                    }
                    if stop {
                        break;
                    }
                }
            }
        }
        // Answered before the hand-over: the producer can publish again while the bus lets
        // the ready tasks run, and join it (see `write_out_if_idle`).
        let (delegated, reply) = ctx.reply_sender();
        if let Some(reply) = reply {
            reply.send(result);
        }
        self.write_out_if_idle(ctx.actor_ref()).await;
        delegated
    }
}

/// A job starts (or is continued): its events are numbered from `last_seq + 1`, and go to
/// `events` as well when given.
#[derive(Debug)]
pub(crate) struct OpenJob {
    /// The job.
    pub job_id: String,
    /// The number of the job's last event so far (0 for a new job).
    pub last_seq: u64,
    /// Where the job's events go, besides the sink and the listeners.
    pub events: Option<mpsc::Sender<Sequenced>>,
}

impl Message<OpenJob> for EventBus {
    type Reply = ();

    async fn handle(&mut self, open: OpenJob, ctx: &mut Context<Self, Self::Reply>) {
        self.jobs.open(open.job_id, open.last_seq, open.events);
        self.write_out_if_idle(ctx.actor_ref()).await;
    }
}

/// A job ended: forget it and its subscribers; replies with the number of its last event.
#[derive(Debug)]
pub(crate) struct CloseJob(pub String);

impl Message<CloseJob> for EventBus {
    type Reply = u64;

    async fn handle(&mut self, CloseJob(job): CloseJob, ctx: &mut Context<Self, u64>) -> u64 {
        let last = self.jobs.close(&job);
        self.write_out_if_idle(ctx.actor_ref()).await;
        last
    }
}

/// How many jobs the bus has open (tests: a finished job must leave none behind).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct OpenJobs;

#[cfg(test)]
impl Message<OpenJobs> for EventBus {
    type Reply = usize;

    async fn handle(&mut self, _: OpenJobs, _: &mut Context<Self, usize>) -> usize {
        self.jobs.len()
    }
}

/// Flush the sink (at shutdown).
#[derive(Debug)]
pub(crate) struct Flush;

impl Message<Flush> for EventBus {
    type Reply = ();

    async fn handle(&mut self, _: Flush, _: &mut Context<Self, Self::Reply>) {
        self.output.flush().await;
    }
}

/// Store a checkpoint, trying again while the store says that could help.
async fn store_checkpoint(
    storage: &Arc<dyn Storage>,
    cp: &crate::schema::Checkpoint,
) -> Result<(), BusError> {
    let mut attempt = 1;
    loop {
        match storage.store_checkpoint(cp).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && attempt < STORE_ATTEMPTS => attempt += 1,
            Err(source) => {
                return Err(BusError::Checkpoint {
                    checkpoint_id: cp.id.clone(),
                    source,
                });
            }
        }
    }
}

impl EventBus {
    /// Number, store (a carried checkpoint first; the event itself when `store`), print
    /// (`line`, or the event serialised here when the producer did not) and hand out one
    /// event. A checkpoint the store refuses stops here: the event gets no number and is not
    /// shown. A failed sink does not stop the rest: the event is still stored and delivered,
    /// and the error is reported after.
    async fn publish(
        &mut self,
        mut event: Event,
        line: Option<&[u8]>,
        store: bool,
    ) -> Result<u64, BusError> {
        let EventBus {
            output,
            storage,
            callbacks,
            jobs,
            seq,
        } = self;
        let mut job = jobs.get(&event.job_id);
        let job_seq = job.as_ref().map(|j| j.last + 1);
        if let Some(n) = job_seq {
            event.set_job_seq(n);
        }
        if store && let Some(cp) = event.checkpoint() {
            store_checkpoint(storage, cp).await?;
        }
        if let (Some(job), Some(n)) = (job.as_deref_mut(), job_seq) {
            job.last = n;
        }
        *seq += 1;
        let mut written = output.push(&event, line);
        let stored = store && !is_unstored(&event);
        let subscribed = job.as_ref().is_some_and(|j| j.has_subscribers());
        if stored || subscribed || !callbacks.is_empty() {
            let event = Arc::new(event);
            if stored && let Err(e) = storage.store_shared_event(&event).await {
                tracing::warn!(error = %e, kind = event.kind(), "could not store event");
            }
            let sequenced = Sequenced { seq: *seq, event };
            for cb in callbacks.iter() {
                cb(&sequenced);
            }
            if let Some(job) = job.filter(|_| subscribed) {
                job.send(&sequenced).await;
            }
        }
        if written.is_ok() {
            written = output.write_if_full().await;
        }
        written.map_err(BusError::Sink)?;
        Ok(*seq)
    }

    /// Every handler ends here: lines buffered by a burst of messages are handed to the
    /// writer once the bus has nothing else to do, whatever message ended the burst. Once its
    /// mailbox is empty, the bus first lets the tasks that are ready run ([`after_ready_tasks`];
    /// the producers it just answered among them) and looks again: a producer that publishes
    /// again at once (its next batch, the next burst of a stream) joins this hand-over instead
    /// of waking the writer for one of its own. A line waits for no timer, only for the tasks
    /// that were ready.
    async fn write_out_if_idle(&mut self, bus: &ActorRef<EventBus>) {
        if !is_idle(bus) || !self.output.holds_lines() {
            return;
        }
        after_ready_tasks().await;
        if is_idle(bus) {
            self.output.write_out().await;
        }
    }
}

/// `streamRunResult` deltas are printed but not stored, as in Perstack (which stores every
/// other event, `streamReasoning` deltas included). Runtime events (no `stepNumber`) go to the
/// store too: Perstack's stores ignore them, the file-system store keeps them in its audit
/// side log.
fn is_unstored(e: &Event) -> bool {
    matches!(e.payload, EventPayload::StreamRunResult(_))
}

/// Lets the tasks that are ready on this worker run first: the task wakes itself, which puts
/// it back at the end of the worker's run queue (tokio's scheduling of a task woken while it
/// runs). Unlike `tokio::task::yield_now`, which defers the task until the runtime has polled
/// its I/O driver (a system call per yield), this costs one more poll of the task.
async fn after_ready_tasks() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// Whether no message is waiting in the bus's (bounded) mailbox.
fn is_idle(bus: &ActorRef<EventBus>) -> bool {
    let tx = bus.mailbox_sender();
    tx.capacity() == tx.max_capacity()
}

#[cfg(test)]
mod failure_tests;
#[cfg(test)]
mod output_tests;
#[cfg(test)]
mod sequence_tests;
