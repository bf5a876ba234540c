//! [`JetStreamStorage`]: the [`Storage`] contract on NATS JetStream, for a cluster of workers
//! that share one store.
//!
//! It takes an already connected [`async_nats::Client`] (connection options, credentials and
//! TLS are the caller's) and a [`JetStreamConfig`] of limits and TTLs. Streams and buckets are
//! created on first use:
//!
//! | name | kind | holds | limits |
//! | --- | --- | --- | --- |
//! | `perstack` | key-value bucket | `<job>.job`, `<job>.run.<run>`, `<job>.cp.<checkpoint>`, `<job>.fence` | one value per key, kept until deleted |
//! | `perstack_leases` | key-value bucket | `<job>`: the lease of the job's writer | per-key TTL = lease TTL |
//! | `perstack_checkpoints` | object store | checkpoints larger than the server's max payload | kept until deleted |
//! | `PERSTACK_EVENTS` | stream on `perstack.events.*` | stored events of job `<job>` on `perstack.events.<job>` | limits retention, `max_age` = [`JetStreamConfig::event_max_age`] (0: forever), 2 min duplicate window |
//!
//! All are file-backed with [`JetStreamConfig::replicas`] replicas (1 for a single server; 3
//! on a clustered one). An existing stream or bucket is used as it is.
//!
//! Rules it keeps:
//!
//! - **Durable before visible**: every write returns only after JetStream acknowledged it. A
//!   large checkpoint's object is stored before the entry that points to it.
//! - **No duplicates**: every write has a `Nats-Msg-Id` (events: `<jobId>:<jobSeq>`), so a write
//!   repeated after a lost acknowledgement (a server restart) is dropped by the server.
//! - **Fencing**: writes of a job claimed through this store carry the claim's expectations
//!   (see [`lease`]); a holder that lost the claim writes nothing more.
//! - `last_job_seq` is three single-message reads (job record, last checkpoint, last event).
//!
//! What it never does: connect, hold credentials, or interpret records beyond ids, sequence
//! numbers and the orderings of the contract.
//!
//! Embedding an engine on it (every worker of a cluster does the same with its own engine):
//!
//! ```no_run
//! # async fn example(engine_settings: perstack::engine::Settings, model: std::sync::Arc<dyn perstack::llm::LanguageModel>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use perstack::storage::{JetStreamConfig, JetStreamStorage};
//!
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let store = JetStreamStorage::new(
//!     client,
//!     JetStreamConfig::default().lease(Duration::from_secs(15), Duration::from_secs(5)),
//! );
//! let engine = perstack::engine::Engine::builder()
//!     .settings(engine_settings)
//!     .storage(Arc::new(store))
//!     .model(model)
//!     .build();
//! let outcome = engine.run("coordinator", "hello").await?.wait().await?;
//! if outcome.claim_lost {
//!     // Another worker took the job over; it finishes it.
//! }
//! # Ok(()) }
//! ```

mod config;
mod events;
mod lease;
mod names;
mod objects;
mod setup;
mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use dashmap::DashMap;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

pub use config::JetStreamConfig;
pub use names::events_subject;
use objects::{get_object, put_object};
pub(crate) use setup::Handles;
use setup::create_handles;

use super::claim::holder_description;
use super::{Claim, EventMeta, Storage, StoreError, check_id};
use crate::schema::{Checkpoint, Event, Job, RunSetting};
use lease::{Fence, Leases, into_store_error, nonce};
use wire::{PublishFailure, Stored, Wire, rejected};

/// The store on NATS JetStream. Cheap to clone; clones share the connection and the claims.
#[derive(Clone)]
pub struct JetStreamStorage {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    wire: Wire,
    config: JetStreamConfig,
    /// The streams and buckets, created on first use (a failed attempt is tried again by the
    /// next operation).
    handles: OnceCell<Handles>,
    /// The jobs claimed through this store, with their fencing state; a lost claim stays until
    /// the job is claimed again, so its writes keep being refused.
    fences: Arc<DashMap<String, Arc<Fence>>>,
    /// Who this store is, in leases and errors: `pid <pid> on <host> (store <nonce>)`.
    holder: String,
    /// Test switch: heartbeats stop as in a paused process.
    frozen: Arc<AtomicBool>,
}

impl std::fmt::Debug for JetStreamStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStorage")
            .field("holder", &self.inner.holder)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl JetStreamStorage {
    /// A store on `client`'s server. Nothing is sent until the first operation (or
    /// [`JetStreamStorage::ensure_ready`]).
    pub fn new(client: async_nats::Client, mut config: JetStreamConfig) -> Self {
        // The server's TTL unit is a second; a heartbeat of zero would spin.
        config.lease_ttl = config.lease_ttl.max(Duration::from_secs(1));
        config.heartbeat = config
            .heartbeat
            .min(config.lease_ttl / 2)
            .max(Duration::from_millis(50));
        let js = jetstream::new(client.clone());
        JetStreamStorage {
            inner: Arc::new(Inner {
                client,
                wire: Wire::new(js, config.write_timeout),
                config,
                handles: OnceCell::new(),
                fences: Arc::new(DashMap::new()),
                holder: format!("{} (store {})", holder_description(), &nonce()[..8]),
                frozen: Arc::new(AtomicBool::new(false)),
            }),
        }
    }

    /// Creates the streams and buckets now (a worker's start-up), instead of on first use.
    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.handles().await.map(drop)
    }

    /// Stops this store's heartbeats without releasing anything, as in a paused process.
    #[cfg(test)]
    pub(crate) fn freeze_heartbeats(&self) {
        self.inner
            .frozen
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    async fn handles(&self) -> Result<&Handles, StoreError> {
        self.inner
            .handles
            .get_or_try_init(|| create_handles(self.inner.wire.context(), &self.inner.config))
            .await
    }

    /// The fence of a job claimed through this store, or `None` when it is not (its writes
    /// then carry no expectation). A lost claim refuses here.
    fn fence(&self, job_id: &str) -> Result<Option<Arc<Fence>>, StoreError> {
        match self.inner.fences.get(job_id) {
            Some(fence) if fence.is_lost() => Err(fence.lost_error()),
            Some(fence) => Ok(Some(Arc::clone(&fence))),
            None => Ok(None),
        }
    }

    /// Writes a key-value record of job `job_id`, fenced when the job is claimed here.
    async fn write_kv(
        &self,
        operation: &'static str,
        job_id: &str,
        subject: &str,
        mut headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, StoreError> {
        let handles = self.handles().await?;
        let Some(fence) = self.fence(job_id)? else {
            headers.insert("Nats-Msg-Id", format!("{job_id}:{}", nonce()).as_str());
            return self
                .inner
                .wire
                .publish(operation, subject, headers, payload, None)
                .await
                .map_err(into_store_error);
        };
        let mut last = fence.kv.lock().await;
        let filter = names::job_filter(job_id);
        headers.insert("Nats-Msg-Id", fence.next_msg_id("kv").as_str());
        headers.insert(
            names::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
            filter.as_str(),
        );
        self.publish_fenced(
            operation,
            subject,
            headers,
            payload,
            (&fence, &mut last),
            (&handles.data, &filter),
        )
        .await
    }

    /// Publishes a write of a job claimed here, expecting `last` (held locked by the caller)
    /// to be the last sequence under `verify`'s subject filter, and moves `last` on. A write
    /// that finds another holder's after `last` marks the claim lost; a lost claim writes
    /// nothing.
    async fn publish_fenced(
        &self,
        operation: &'static str,
        subject: &str,
        mut headers: HeaderMap,
        payload: Bytes,
        (fence, last): (&Fence, &mut u64),
        verify: (&jetstream::stream::Stream, &str),
    ) -> Result<u64, StoreError> {
        if fence.is_lost() {
            return Err(fence.lost_error());
        }
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            last.to_string().as_str(),
        );
        match self
            .inner
            .wire
            .publish(operation, subject, headers, payload, Some(verify))
            .await
        {
            Ok(sequence) => {
                *last = sequence;
                Ok(sequence)
            }
            Err(PublishFailure::WrongLastSequence) => {
                fence.mark_lost();
                Err(fence.lost_error())
            }
            Err(PublishFailure::Store(e)) => Err(e),
        }
    }

    /// Reads a checkpoint entry, following it into the object store when it points there.
    async fn checkpoint_from(
        &self,
        handles: &Handles,
        entry: &Stored,
    ) -> Result<Checkpoint, StoreError> {
        let Some(object) = entry.header(names::OBJECT) else {
            return parse(entry, "checkpoint");
        };
        let body = get_object(&handles.objects, object, self.inner.config.write_timeout).await?;
        serde_json::from_slice(&body).map_err(|e| StoreError::Corrupt {
            path: format!("{}/{object}", names::OBJECT_BUCKET).into(),
            message: e.to_string(),
        })
    }

    /// The largest body that fits one message, leaving room for headers.
    fn max_body(&self) -> usize {
        let max_payload = match self.inner.client.server_info().max_payload {
            0 => 1024 * 1024,
            n => n,
        };
        max_payload.saturating_sub(8 * 1024)
    }
}

fn parse<T: DeserializeOwned>(entry: &Stored, what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(&entry.payload).map_err(|e| StoreError::Corrupt {
        path: format!("{what} at stream sequence {}", entry.sequence).into(),
        message: e.to_string(),
    })
}

fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Bytes, StoreError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| StoreError::Serialize { what, source })
}

#[async_trait::async_trait]
impl Storage for JetStreamStorage {
    /// A checkpoint larger than one message goes to the object store first (named after the
    /// writer's token, so a stale holder never overwrites it), then the entry pointing to it.
    async fn store_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        check_id("job", &checkpoint.job_id)?;
        check_id("checkpoint", &checkpoint.id)?;
        let body = to_json("checkpoint", &checkpoint.stored())?;
        let mut headers = HeaderMap::new();
        if let Some(seq) = checkpoint.job_seq {
            headers.insert(names::JOB_SEQ, seq.to_string().as_str());
        }
        let subject = names::checkpoint_subject(&checkpoint.job_id, &checkpoint.id);
        let payload = if body.len() > self.max_body() {
            let handles = self.handles().await?;
            let writer = match self.fence(&checkpoint.job_id)? {
                Some(fence) => fence.token(),
                None => rand::random::<u64>(),
            };
            let object = names::object_name(&checkpoint.job_id, &checkpoint.id, writer);
            put_object(
                &handles.objects,
                &object,
                &body,
                self.inner.config.write_timeout,
            )
            .await?;
            headers.insert(names::OBJECT, object.as_str());
            Bytes::new()
        } else {
            body
        };
        self.write_kv(
            "store checkpoint",
            &checkpoint.job_id,
            &subject,
            headers,
            payload,
        )
        .await
        .map(drop)
    }

    async fn retrieve_checkpoint(
        &self,
        job_id: &str,
        checkpoint_id: &str,
    ) -> Result<Checkpoint, StoreError> {
        check_id("job", job_id)?;
        check_id("checkpoint", checkpoint_id)?;
        let handles = self.handles().await?;
        let subject = names::checkpoint_subject(job_id, checkpoint_id);
        match self.inner.wire.last(&handles.data, &subject).await? {
            Some(entry) if !entry.is_deletion() => self.checkpoint_from(handles, &entry).await,
            _ => Err(StoreError::NotFound {
                what: "checkpoint",
                id: checkpoint_id.to_owned(),
            }),
        }
    }

    /// By step, then by the order of their last write.
    async fn checkpoints_by_job(&self, job_id: &str) -> Result<Vec<Checkpoint>, StoreError> {
        check_id("job", job_id)?;
        let handles = self.handles().await?;
        let entries = self
            .inner
            .wire
            .scan(&handles.data, &names::checkpoints_filter(job_id), true)
            .await?;
        let mut found = Vec::with_capacity(entries.len());
        for entry in entries.iter().filter(|e| !e.is_deletion()) {
            found.push((self.checkpoint_from(handles, entry).await?, entry.sequence));
        }
        found.sort_by_key(|(c, sequence)| (c.step_number, *sequence));
        Ok(found.into_iter().map(|(c, _)| c).collect())
    }

    /// Publishes on `perstack.events.<jobId>` with `Nats-Msg-Id = <jobId>:<jobSeq>` (see
    /// `events`).
    async fn store_event(&self, event: &Event) -> Result<(), StoreError> {
        self.append_event(event).await
    }

    /// By step, then timestamp, then the order stored.
    async fn events_by_run(
        &self,
        job_id: &str,
        run_id: &str,
    ) -> Result<Vec<EventMeta>, StoreError> {
        let mut metas: Vec<EventMeta> = self
            .event_contents(job_id, run_id, None)
            .await?
            .into_iter()
            .map(|e| EventMeta::of(&e))
            .collect();
        super::sort_event_metas(&mut metas);
        Ok(metas)
    }

    /// By timestamp, then the order stored (the stream's order).
    async fn event_contents(
        &self,
        job_id: &str,
        run_id: &str,
        max_step: Option<u32>,
    ) -> Result<Vec<Event>, StoreError> {
        self.run_events(job_id, run_id, max_step).await
    }

    async fn store_job(&self, job: &Job) -> Result<(), StoreError> {
        check_id("job", &job.id)?;
        let mut headers = HeaderMap::new();
        if let Some(seq) = job.job_seq {
            headers.insert(names::JOB_SEQ, seq.to_string().as_str());
        }
        let body = to_json("job", job)?;
        self.write_kv(
            "store job",
            &job.id,
            &names::job_subject(&job.id),
            headers,
            body,
        )
        .await
        .map(drop)
    }

    async fn retrieve_job(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        check_id("job", job_id)?;
        let handles = self.handles().await?;
        match self
            .inner
            .wire
            .last(&handles.data, &names::job_subject(job_id))
            .await?
        {
            Some(entry) if !entry.is_deletion() => parse(&entry, "job").map(Some),
            _ => Ok(None),
        }
    }

    async fn all_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let handles = self.handles().await?;
        let entries = self
            .inner
            .wire
            .scan(&handles.data, &names::all_jobs_filter(), true)
            .await?;
        let mut jobs = entries
            .iter()
            .filter(|e| !e.is_deletion())
            .map(|e| parse::<Job>(e, "job"))
            .collect::<Result<Vec<_>, _>>()?;
        super::sort_jobs(&mut jobs);
        Ok(jobs)
    }

    /// Read, then write with compare-and-set on what was read (tried again when another
    /// writer came between), so concurrent updates cannot lose the later `updatedAt`.
    async fn store_run_setting(&self, setting: &RunSetting) -> Result<(), StoreError> {
        check_id("job", &setting.job_id)?;
        check_id("run", &setting.run_id)?;
        let handles = self.handles().await?;
        let subject = names::run_setting_subject(&setting.job_id, &setting.run_id);
        for _ in 0..16 {
            let stored = self.inner.wire.last(&handles.data, &subject).await?;
            let (body, expected) = match &stored {
                Some(entry) if !entry.is_deletion() => {
                    let mut current: RunSetting = parse(entry, "run setting")?;
                    if setting.updated_at <= current.updated_at {
                        return Ok(());
                    }
                    current.updated_at = setting.updated_at;
                    (to_json("run setting", &current)?, entry.sequence)
                }
                Some(entry) => (to_json("run setting", setting)?, entry.sequence),
                None => (to_json("run setting", setting)?, 0),
            };
            if self.fence(&setting.job_id)?.is_some() {
                // The fence already serialises this job's writes through this store, and
                // nobody else may write the job.
                return self
                    .write_kv(
                        "store run setting",
                        &setting.job_id,
                        &subject,
                        HeaderMap::new(),
                        body,
                    )
                    .await
                    .map(drop);
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}:{}", setting.job_id, nonce()).as_str(),
            );
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                expected.to_string().as_str(),
            );
            match self
                .inner
                .wire
                .publish("store run setting", &subject, headers, body, None)
                .await
            {
                Ok(_) => return Ok(()),
                Err(PublishFailure::WrongLastSequence) => continue,
                Err(PublishFailure::Store(e)) => return Err(e),
            }
        }
        Err(rejected(
            "store run setting",
            &"too many concurrent updates of one run setting",
        ))
    }

    async fn all_run_settings(&self) -> Result<Vec<RunSetting>, StoreError> {
        let handles = self.handles().await?;
        let entries = self
            .inner
            .wire
            .scan(&handles.data, &names::all_run_settings_filter(), true)
            .await?;
        let mut settings = entries
            .iter()
            .filter(|e| !e.is_deletion())
            .map(|e| parse::<RunSetting>(e, "run setting"))
            .collect::<Result<Vec<_>, _>>()?;
        super::sort_run_settings(&mut settings);
        Ok(settings)
    }

    /// The largest of the job record's, the last checkpoint's and the last event's job
    /// sequence numbers: three single-message reads, each answered from a header.
    async fn last_job_seq(&self, job_id: &str) -> Result<u64, StoreError> {
        check_id("job", job_id)?;
        let handles = self.handles().await?;
        let wire = &self.inner.wire;
        let (job, checkpoints, events) = (
            names::job_subject(job_id),
            names::checkpoints_filter(job_id),
            names::events_subject(job_id),
        );
        let (job, checkpoint, event) = tokio::try_join!(
            wire.last(&handles.data, &job),
            wire.last(&handles.data, &checkpoints),
            wire.last(&handles.events, &events),
        )?;
        let seq = |m: &Option<Stored>| {
            m.as_ref()
                .and_then(|m| m.header(names::JOB_SEQ))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(seq(&job).max(seq(&checkpoint)).max(seq(&event)))
    }

    /// A lease with fencing (the `lease` module's): [`StoreError::Claimed`] while another holder's
    /// lease lives; the returned claim's [`Claim::lost`] resolves if the lease is lost.
    async fn claim(&self, job_id: &str) -> Result<Claim, StoreError> {
        check_id("job", job_id)?;
        let handles = self.handles().await?;
        Leases {
            wire: &self.inner.wire,
            handles,
            config: &self.inner.config,
            fences: &self.inner.fences,
            holder: &self.inner.holder,
            frozen: &self.inner.frozen,
        }
        .claim(job_id)
        .await
    }

    /// Waits (at most one write timeout) for the heartbeat of the dropped claim to delete its
    /// lease.
    async fn settle_release(&self, job_id: &str) {
        let Some(fence) = self.inner.fences.get(job_id).map(|f| Arc::clone(&f)) else {
            return;
        };
        fence.settle_release(self.inner.config.write_timeout).await;
    }
}
