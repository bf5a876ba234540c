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

use std::collections::HashMap;
use std::sync::Arc;

use kameo::prelude::*;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

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
    /// Writing to the sink failed (a closed stdout, for example).
    #[error("could not write event to the output: {0}")]
    Sink(std::io::Error),
}

/// The bus actor.
pub struct EventBus {
    sink: Option<tokio::io::BufWriter<Sink>>,
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
            self.storage
                .store_checkpoint(cp)
                .await
                .map_err(|source| BusError::Checkpoint {
                    checkpoint_id: cp.id.clone(),
                    source,
                })?;
        }
        self.seq += 1;
        if let Some(sink) = self.sink.as_mut() {
            self.line.clear();
            if serde_json::to_writer(&mut self.line, &event).is_ok() {
                self.line.push(b'\n');
                sink.write_all(&self.line).await.map_err(BusError::Sink)?;
            }
        }
        // Lines leave in one write per burst (and whenever the buffer fills), never later
        // than the moment the bus has nothing else to do.
        self.flush_if_idle(ctx.actor_ref())
            .await
            .map_err(BusError::Sink)?;
        let event = Arc::new(event);
        if event.is_run_event()
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

    /// [`EventBus::flush_if_idle`] for handlers that cannot report a failure.
    async fn flush_or_warn(&mut self, bus: &ActorRef<EventBus>) {
        if let Err(e) = self.flush_if_idle(bus).await {
            tracing::warn!(error = %e, "could not flush the event sink");
        }
    }
}
