//! The event bus: the one place events leave the engine.
//!
//! Every event (state, streaming, runtime) of every job goes through [`EventBus`]: it assigns
//! the sequence number, makes a carried checkpoint durable in storage, writes the compact JSON
//! line to the sink (stdout for the CLI), stores run events, and hands the event to the
//! listeners. Because one actor does all of it, stdout lines are never interleaved and a
//! checkpoint is always durable before its event is visible.
//!
//! Producers `ask` [`Publish`] and wait for the reply, so a slow sink or listener slows the
//! producers down (backpressure); nothing is dropped. The bus never calls back into a run.
//!
//! Two failures are reported to the producer as a [`BusError`], whose
//! [`BusError::run_failure`] decides what the run does: a checkpoint the store refuses (the
//! event is not shown; a storage failure stops the job, whose runs then end with a
//! `stopRunByError` shown through [`PublishUnstored`]), and a sink that fails (a reader that
//! closed stdout: the event is still stored and delivered, and the job is cancelled).

use std::collections::HashMap;
use std::sync::Arc;

use kameo::prelude::*;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::agent::RunFailure;
use crate::schema::{Event, EventPayload};
use crate::storage::{Storage, StoreError};

/// The mailbox size of the bus. Producers wait when it is full.
pub const BUS_MAILBOX: usize = 1024;

/// An event with its bus sequence number (monotonic across the whole engine).
#[derive(Debug, Clone)]
pub struct Sequenced {
    /// Position in the engine-wide order, from 1.
    pub seq: u64,
    /// The event.
    pub event: Arc<Event>,
}

/// A synchronous listener, called on the bus task for every event; keep it cheap.
pub type Callback = Arc<dyn Fn(&Sequenced) + Send + Sync>;

/// Where serialised events go (stdout for the CLI).
pub type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// Storing the checkpoint failed; the event was not made visible.
    #[error("could not store checkpoint {checkpoint_id}: {source}")]
    Checkpoint {
        /// The checkpoint.
        checkpoint_id: String,
        /// Why.
        source: StoreError,
    },
    /// Writing to the sink failed (a closed stdout, for example). The event was stored and
    /// delivered to listeners and subscribers; only the output missed it. Every later event
    /// gets this error too: the sink is never written again.
    #[error("could not write event to the output: {0}")]
    Sink(std::io::Error),
    /// The bus is not running (it was shut down, or it failed).
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
}

impl BusError {
    /// What this means for the run that published: a storage failure or a closed output
    /// stops every run of the job; a bus that is gone is an engine fault.
    pub fn run_failure(&self) -> RunFailure {
        match self {
            BusError::Checkpoint { .. } => RunFailure::storage(self),
            BusError::Sink(e) => RunFailure::OutputClosed(e.to_string()),
            BusError::Unavailable(_) => RunFailure::Engine(self.to_string()),
        }
    }

    /// Whether the event was stored and delivered all the same (only the output missed it),
    /// so the producer may go on publishing; otherwise it was not shown at all.
    pub fn event_was_stored(&self) -> bool {
        matches!(self, BusError::Sink(_))
    }

    /// The bus's own error from an ask's, or [`BusError::Unavailable`].
    pub fn from_send<M, E: Into<BusError>>(e: SendError<M, E>) -> Self {
        match e {
            SendError::HandlerError(e) => e.into(),
            SendError::ActorNotRunning(_) | SendError::ActorStopped => {
                BusError::Unavailable("not running".into())
            }
            SendError::MailboxFull(_) => BusError::Unavailable("mailbox full".into()),
            SendError::Timeout(_) => BusError::Unavailable("timed out".into()),
            SendError::ActorRestarting(_) => BusError::Unavailable("restarting".into()),
        }
    }
}

impl From<kameo::error::Infallible> for BusError {
    fn from(never: kameo::error::Infallible) -> Self {
        match never {}
    }
}

/// How many times a store the error of which [`StoreError::is_retryable`] is tried in all.
const STORE_ATTEMPTS: usize = 3;

/// The bus actor.
pub struct EventBus {
    sink: Option<tokio::io::BufWriter<Sink>>,
    /// Set when the sink failed: it is dropped, and every later publish reports this.
    sink_failed: Option<(std::io::ErrorKind, String)>,
    storage: Arc<dyn Storage>,
    callbacks: Vec<Callback>,
    /// Per-job subscribers. A full channel makes the bus wait (backpressure); a closed one is
    /// removed.
    subscribers: HashMap<String, Vec<mpsc::Sender<Sequenced>>>,
    seq: u64,
    line: Vec<u8>,
}

/// What the bus starts with.
pub struct BusArgs {
    /// Where JSON lines go, if anywhere.
    pub sink: Option<Sink>,
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
            sink: args
                .sink
                .map(|s| tokio::io::BufWriter::with_capacity(64 * 1024, s)),
            sink_failed: None,
            storage: args.storage,
            callbacks: args.callbacks,
            subscribers: HashMap::new(),
            seq: 0,
            line: Vec::with_capacity(4096),
        })
    }
}

/// Publish one event; replies with its sequence number once it is visible.
#[derive(Debug)]
pub struct Publish(pub Event);

impl Message<Publish> for EventBus {
    type Reply = Result<u64, BusError>;

    async fn handle(
        &mut self,
        Publish(event): Publish,
        ctx: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        if let Some(cp) = event.checkpoint() {
            store_checkpoint(&self.storage, cp).await?;
        }
        self.deliver(event, true, ctx.actor_ref()).await
    }
}

/// Publish the terminal event of a run stopped by a storage failure without storing anything
/// (its checkpoint could not be stored; see `RunFailure::is_visible_unstored`). Replies
/// with its sequence number once it is visible.
#[derive(Debug)]
pub struct PublishUnstored(pub Event);

impl Message<PublishUnstored> for EventBus {
    type Reply = Result<u64, BusError>;

    async fn handle(
        &mut self,
        PublishUnstored(event): PublishUnstored,
        ctx: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.deliver(event, false, ctx.actor_ref()).await
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
    /// Sequence, print, store (when `store`) and hand out an event whose checkpoint, if any,
    /// is already dealt with. A failed sink does not stop the rest: the event is still stored
    /// and delivered, and the error is reported after.
    async fn deliver(
        &mut self,
        event: Event,
        store: bool,
        bus: &ActorRef<EventBus>,
    ) -> Result<u64, BusError> {
        self.seq += 1;
        let mut written = self.sink_failed.as_ref().map_or(Ok(()), |(kind, message)| {
            Err(std::io::Error::new(*kind, message.clone()))
        });
        if let Some(sink) = self.sink.as_mut() {
            self.line.clear();
            if serde_json::to_writer(&mut self.line, &event).is_ok() {
                self.line.push(b'\n');
                written = sink.write_all(&self.line).await;
            }
        }
        // Lines leave in one write per burst (and whenever the buffer fills), never later
        // than the moment the bus has nothing else to do.
        if written.is_ok() {
            written = self.flush_if_idle(bus).await;
        }
        if let Err(e) = &written
            && self.sink.take().is_some()
        {
            tracing::warn!(error = %e, "the event output failed; no more events are written to it");
            self.sink_failed = Some((e.kind(), e.to_string()));
        }
        let event = Arc::new(event);
        if store
            && event.is_run_event()
            && !is_delta(&event)
            && let Err(e) = self.storage.store_shared_event(&event).await
        {
            tracing::warn!(error = %e, kind = event.kind(), "could not store event");
        }
        let sequenced = Sequenced {
            seq: self.seq,
            event,
        };
        for cb in &self.callbacks {
            cb(&sequenced);
        }
        if let Some(subs) = self.subscribers.get_mut(&sequenced.event.job_id) {
            let mut open = Vec::with_capacity(subs.len());
            for tx in subs.drain(..) {
                if tx.send(sequenced.clone()).await.is_ok() {
                    open.push(tx);
                }
            }
            *subs = open;
        }
        written.map_err(BusError::Sink)?;
        Ok(self.seq)
    }
}

/// Streaming deltas are printed but not stored (Perstack stores one file per delta).
fn is_delta(e: &Event) -> bool {
    matches!(
        e.payload,
        EventPayload::StreamReasoning(_) | EventPayload::StreamRunResult(_)
    )
}

/// Receive the events of one job.
#[derive(Debug)]
pub struct Subscribe {
    /// The job.
    pub job_id: String,
    /// Where its events go.
    pub tx: mpsc::Sender<Sequenced>,
}

impl Message<Subscribe> for EventBus {
    type Reply = ();

    async fn handle(&mut self, s: Subscribe, ctx: &mut Context<Self, Self::Reply>) {
        self.subscribers.entry(s.job_id).or_default().push(s.tx);
        self.flush_or_warn(ctx.actor_ref()).await;
    }
}

/// Forget a job's subscribers (when it ends).
#[derive(Debug)]
pub struct Unsubscribe(pub String);

impl Message<Unsubscribe> for EventBus {
    type Reply = ();

    async fn handle(
        &mut self,
        Unsubscribe(job): Unsubscribe,
        ctx: &mut Context<Self, Self::Reply>,
    ) {
        self.subscribers.remove(&job);
        self.flush_or_warn(ctx.actor_ref()).await;
    }
}

/// Flush the sink (at shutdown).
#[derive(Debug)]
pub struct Flush;

impl Message<Flush> for EventBus {
    type Reply = ();

    async fn handle(&mut self, _: Flush, _: &mut Context<Self, Self::Reply>) {
        if let Some(sink) = self.sink.as_mut() {
            let _ = sink.flush().await;
        }
    }
}

/// Whether no message is waiting in the bus's (bounded) mailbox.
fn is_idle(bus: &ActorRef<EventBus>) -> bool {
    let tx = bus.mailbox_sender();
    tx.capacity() == tx.max_capacity()
}

impl EventBus {
    /// Every handler ends here: lines written by a burst of events leave once the bus has
    /// nothing else to do, whatever message ended the burst.
    async fn flush_if_idle(&mut self, bus: &ActorRef<EventBus>) -> std::io::Result<()> {
        match self.sink.as_mut() {
            Some(sink) if is_idle(bus) => sink.flush().await,
            _ => Ok(()),
        }
    }

    /// [`EventBus::flush_if_idle`] for handlers that cannot report a failure: a failed sink
    /// is dropped, and the next publish reports it.
    async fn flush_or_warn(&mut self, bus: &ActorRef<EventBus>) {
        if let Err(e) = self.flush_if_idle(bus).await {
            tracing::warn!(error = %e, "could not flush the event sink");
            self.sink = None;
            self.sink_failed = Some((e.kind(), e.to_string()));
        }
    }
}

#[cfg(test)]
mod failure_tests;
