//! Storage of checkpoints, events, jobs and run settings.
//!
//! This module owns the [`Storage`] trait and its two implementations:
//!
//! | implementation | where | for |
//! | --- | --- | --- |
//! | [`FsStorage`] | Perstack's directory layout under `<cwd>/perstack` | the CLI, `perstack log`, resuming jobs |
//! | [`MemoryStorage`] | a concurrent map in memory | tests and benchmarks |
//! | [`JetStreamStorage`] | NATS JetStream key-value buckets, an object store and a stream | a cluster of workers sharing one store |
//!
//! The file layout is Perstack's, so its tools can read what this engine writes:
//!
//! ```text
//! perstack/jobs/<jobId>/job.json                                  pretty JSON (2-space)
//! perstack/jobs/<jobId>/checkpoints/<checkpointId>.json           compact JSON
//! perstack/jobs/<jobId>/runs/<runId>/run-setting.json             compact JSON
//! perstack/jobs/<jobId>/runs/<runId>/event-<timestamp>-<stepNumber>-<type>.json
//! ```
//!
//! Where this store deliberately differs from Perstack's `FileSystemStorage`:
//!
//! - every id is checked (letters, digits, `_`, `-`, `.`) before it becomes a path segment
//!   ([`StoreError::InvalidId`]), so `../x` never escapes the store;
//! - checkpoints, `job.json` and `run-setting.json` are written atomically and durably (temp
//!   file in the same directory, fsync, rename, fsync of the directory);
//! - two events with the same millisecond, step and type do not overwrite each other: the second
//!   file name gets the next free millisecond (the event JSON keeps its real timestamp);
//! - a file that exists but does not parse is reported as [`StoreError::Corrupt`] with its
//!   path, by retrievals and listings alike, instead of being skipped.
//!
//! What it never does: write secrets (it stores the [`RunSetting`] it is given, which carries no
//! API key), decide what to persist (the job and run actors call it), or interpret the data
//! beyond the ids and numbers needed for paths and ordering. It talks only to [`crate::schema`].

mod atomic;
pub(crate) mod chain;
mod claim;
mod fs;
mod jetstream;
mod memory;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use claim::Claim;
pub(crate) use claim::holder_description;
pub use fs::FsStorage;
pub use jetstream::{JetStreamConfig, JetStreamStorage, events_subject};
pub use memory::MemoryStorage;

use crate::schema::id::is_safe_id;
use crate::schema::{Checkpoint, Event, Job, RunSetting};

/// Where checkpoints, events, jobs and run settings are kept.
///
/// Orderings are part of the contract, identical across implementations:
/// checkpoints by ascending `stepNumber`, events by timestamp, jobs and run settings newest
/// first. Ties are broken as each method documents.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Store (or replace) a checkpoint under its job.
    async fn store_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// The checkpoint `checkpoint_id` of job `job_id`, or [`StoreError::NotFound`].
    async fn retrieve_checkpoint(
        &self,
        job_id: &str,
        checkpoint_id: &str,
    ) -> Result<Checkpoint, StoreError>;

    /// Every checkpoint of a job, by ascending `stepNumber`; checkpoints with the same step keep
    /// the order in which they were stored (on disk: file modification time, then id). An
    /// unknown job has none.
    async fn checkpoints_by_job(&self, job_id: &str) -> Result<Vec<Checkpoint>, StoreError>;

    /// Store an event. Events without a `stepNumber` (runtime events such as
    /// `initializeRuntime`) are ignored, as in Perstack.
    async fn store_event(&self, event: &Event) -> Result<(), StoreError>;

    /// Store an event the caller shares (the event bus does). The default stores it like
    /// [`Storage::store_event`]; a store that keeps events in memory keeps the shared value
    /// instead of a copy.
    async fn store_shared_event(&self, event: &Arc<Event>) -> Result<(), StoreError> {
        self.store_event(event).await
    }

    /// The stored events of a run, without their contents, by ascending step, then timestamp.
    async fn events_by_run(&self, job_id: &str, run_id: &str)
    -> Result<Vec<EventMeta>, StoreError>;

    /// The stored events of a run whose step is at most `max_step` (all when `None`), by
    /// timestamp, then the order in which they were stored.
    async fn event_contents(
        &self,
        job_id: &str,
        run_id: &str,
        max_step: Option<u32>,
    ) -> Result<Vec<Event>, StoreError>;

    /// Store (or replace) a job record.
    async fn store_job(&self, job: &Job) -> Result<(), StoreError>;

    /// The job record, or `None` when it was never stored (Perstack's CLI never writes one).
    async fn retrieve_job(&self, job_id: &str) -> Result<Option<Job>, StoreError>;

    /// Every stored job record, newest `startedAt` first (ties by id).
    async fn all_jobs(&self) -> Result<Vec<Job>, StoreError>;

    /// Store a run setting. When the run already has one, only its `updatedAt` changes: it
    /// becomes the later of the stored and the given value (the caller owns the clock).
    async fn store_run_setting(&self, setting: &RunSetting) -> Result<(), StoreError>;

    /// Every stored run setting, newest `updatedAt` first (ties by job id, then run id).
    async fn all_run_settings(&self) -> Result<Vec<RunSetting>, StoreError>;

    /// The job sequence number of job `job_id`'s last stored event: the largest `jobSeq` of
    /// its job record, checkpoints and events, 0 for a job that has none (one Perstack wrote).
    /// A continued job numbers its events from the one after. The default reads them all (on
    /// a continuation only); a store that keeps the number at hand can answer faster.
    async fn last_job_seq(&self, job_id: &str) -> Result<u64, StoreError> {
        let mut last = self
            .retrieve_job(job_id)
            .await?
            .and_then(|j| j.job_seq)
            .unwrap_or(0);
        let mut runs = std::collections::BTreeSet::new();
        for cp in self.checkpoints_by_job(job_id).await? {
            last = last.max(cp.job_seq.unwrap_or(0));
            runs.insert(cp.run_id);
        }
        for setting in self.all_run_settings().await? {
            if setting.job_id == job_id {
                runs.insert(setting.run_id);
            }
        }
        for run in runs {
            for event in self.event_contents(job_id, &run, None).await? {
                last = last.max(event.job_seq.unwrap_or(0));
            }
        }
        Ok(last)
    }

    /// Take the right to write job `job_id`, or [`StoreError::Claimed`] naming the holder when
    /// someone else has it. Held until the returned [`Claim`] is dropped; a holder that dies
    /// releases it (a new claimant takes it over). Reading never needs a claim.
    async fn claim(&self, job_id: &str) -> Result<Claim, StoreError>;

    /// Wait (bounded) until a claim of job `job_id` that this store handed out and that was
    /// dropped has let go of the job for other processes too, so that another one can claim it
    /// at once. A store whose claims are let go when dropped (the default) returns at once.
    async fn settle_release(&self, job_id: &str) {
        let _ = job_id;
    }
}

/// A stored event without its contents: what Perstack's `getEventsByRun` returns.
///
/// On disk these come from the file name alone, so `timestamp` is the file name's, which is
/// the event's own timestamp unless a same-millisecond collision moved it a few ms later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// Epoch ms.
    pub timestamp: u64,
    /// Job-wide step number.
    pub step_number: u32,
    /// The wire `type`, such as `callTools`.
    pub kind: String,
}

impl EventMeta {
    /// The meta of a stored event (step 0 when it has none).
    pub(crate) fn of(event: &Event) -> Self {
        EventMeta {
            timestamp: event.timestamp,
            step_number: event.step_number.unwrap_or_default(),
            kind: event.kind().to_owned(),
        }
    }
}

/// The contract's order of [`Storage::events_by_run`]: ascending step, then timestamp, then
/// where the type falls within a step ([`lifecycle_rank`]), then the order given (the sort is
/// stable). Every store sorts with this.
pub(crate) fn sort_event_metas(metas: &mut [EventMeta]) {
    metas.sort_by_key(|m| (m.step_number, m.timestamp, lifecycle_rank(&m.kind)));
}

/// Where an event type falls within one step, for ordering events that share a millisecond and
/// a step. Unknown types go last.
pub(crate) fn lifecycle_rank(kind: &str) -> usize {
    const ORDER: [&str; 23] = [
        "startRun",
        "startGeneration",
        "retry",
        "startStreamingReasoning",
        "streamReasoning",
        "completeStreamingReasoning",
        "callTools",
        "callInteractiveTool",
        "callDelegate",
        "resumeToolCalls",
        "resolveToolResults",
        "attemptCompletion",
        "finishToolCall",
        "finishAllToolCalls",
        "startStreamingRunResult",
        "streamRunResult",
        "completeStreamingRunResult",
        "continueToNextStep",
        "stopRunByInteractiveTool",
        "stopRunByDelegate",
        "stopRunByExceededMaxSteps",
        "stopRunByError",
        "completeRun",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// The contract's order of [`Storage::all_jobs`]: newest `startedAt` first, ties by id. Every
/// store sorts with this.
pub(crate) fn sort_jobs(jobs: &mut [Job]) {
    jobs.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// The contract's order of [`Storage::all_run_settings`]: newest `updatedAt` first, ties by job
/// id, then run id. Every store sorts with this.
pub(crate) fn sort_run_settings(settings: &mut [RunSetting]) {
    settings.sort_by(|a, b| {
        b.updated_at
            .cmp(&a.updated_at)
            .then_with(|| a.job_id.cmp(&b.job_id))
            .then_with(|| a.run_id.cmp(&b.run_id))
    });
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An id cannot safely become a path segment; nothing was read or written.
    #[error(
        "invalid {what} id {id:?}: expected 1 to 255 characters of [A-Za-z0-9_.-], not \".\", \"..\" or \".tmp-…\""
    )]
    InvalidId {
        /// Which id: `job`, `run` or `checkpoint`.
        what: &'static str,
        /// The rejected id.
        id: String,
    },
    /// The requested record does not exist.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// Which record: `checkpoint`.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The file system refused an operation on `path`.
    #[error("storage I/O failed on {}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A stored file exists but is not what it should be (bad JSON, wrong shape, bad name).
    #[error("corrupt stored file {}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Another writer holds the job (see [`Storage::claim`]).
    #[error("job {job_id:?} is being written by {holder}; wait for it to end, then continue it")]
    Claimed {
        /// The job.
        job_id: String,
        /// Who holds it, as far as the store knows (`pid 123 on host`).
        holder: String,
    },
    /// The store's server did not answer in time or the connection is down (a restart, a
    /// partition), after trying for the store's write timeout. A write that failed this way may
    /// have landed; repeating it cannot duplicate it.
    #[error("storage server unavailable during {operation}: {message}")]
    Unavailable {
        /// What was being done: `store event`, `read`, `claim`, `set up`...
        operation: &'static str,
        /// The client's error, without the server address's credentials.
        message: String,
    },
    /// The store's server refused an operation for a reason repeating will not change (a
    /// message over its limits, a permission).
    #[error("storage server refused {operation}: {message}")]
    Rejected {
        /// What was being done.
        operation: &'static str,
        /// The server's reason, without credentials.
        message: String,
    },
    /// This writer's claim on the job was lost (its lease expired while it was paused or cut
    /// off, and another writer took the job over): the write was refused, and every later
    /// write of the job through this store will be. The job must stop here; its new holder
    /// carries on.
    #[error(
        "the claim on job {job_id:?} was lost (its lease expired or another writer took it over); nothing more of it is written here"
    )]
    ClaimLost {
        /// The job.
        job_id: String,
    },
    /// A record could not be turned into JSON (a bug in the wire types, not in the data).
    #[error("cannot serialise {what}")]
    Serialize {
        /// Which record: `checkpoint`, `event`, `job` or `run setting`.
        what: &'static str,
        /// The serialiser's error.
        source: serde_json::Error,
    },
}

impl StoreError {
    /// Whether trying the same operation again could succeed: only transient I/O conditions
    /// (interrupted, would block, timed out, busy). A full disk, a permission problem or a
    /// corrupt file needs someone to act first.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::ResourceBusy
            ),
            StoreError::Unavailable { .. } => true,
            StoreError::InvalidId { .. }
            | StoreError::Rejected { .. }
            | StoreError::ClaimLost { .. }
            | StoreError::Claimed { .. }
            | StoreError::NotFound { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Serialize { .. } => false,
        }
    }
}

impl StoreError {
    /// Whether this writer lost the job to another: stop the job without writing anything
    /// more, and do not report it as finished (its new holder will).
    pub fn is_claim_lost(&self) -> bool {
        matches!(self, StoreError::ClaimLost { .. })
    }

    /// Process exit code when this ends a command: 2 when the user asked for something that
    /// cannot be done now (the job is held by another writer), 1 for a store that failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            StoreError::Claimed { .. } => 2,
            StoreError::InvalidId { .. }
            | StoreError::NotFound { .. }
            | StoreError::Unavailable { .. }
            | StoreError::Rejected { .. }
            | StoreError::ClaimLost { .. }
            | StoreError::Io { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Serialize { .. } => 1,
        }
    }
}

/// Rejects an id that is not a safe path segment, or that would look like a temp file.
fn check_id(what: &'static str, id: &str) -> Result<(), StoreError> {
    if is_safe_id(id) && !id.starts_with(atomic::TEMP_PREFIX) {
        Ok(())
    } else {
        Err(StoreError::InvalidId {
            what,
            id: id.to_owned(),
        })
    }
}
