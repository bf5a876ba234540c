//! Delegation across workers (`--placement cluster`): a durable join.
//!
//! With `local` placement (the default) a job's children run on their parent's worker, as in
//! one process. With `cluster` placement:
//!
//! 1. **Place.** The coordinator stops at `stopRunByDelegate` (its checkpoint is stored, the
//!    job stays `running`, the job message is acked, no end record). Its worker reads the plan
//!    of the stored job (the recovery planner's: every delegate call not finished) and, for
//!    each, publishes a [`ChildMessage`] on `perstack.delegations` (the jobs stream, shared
//!    durable consumer) with the job's Experts, digest and options, the parent checkpoint, the
//!    call's slot and the child's start checkpoint (its `delegatedBy` names the parent). Dedupe
//!    id `<job>:<parentCheckpoint>:<slot>`. A [`JoinRecord`] is created first in the
//!    `perstack_delegations` bucket.
//! 2. **Run a child.** Any worker pulls it. The message's ack wait, kept alive by progress
//!    heartbeats, is the child's lease: a dead or paused worker's child comes back after one
//!    lease. The child runs on an engine of its own whose store is the attempt's own (in
//!    memory): a child whose worker died is run again from its query, and nothing of the
//!    dead attempt was ever committed. The job's shared store and the job's subjects are never
//!    written by a child's worker, so the job keeps one writer (the holder of its claim) and its
//!    fencing as it is: no two workers ever append to the job's event subject at once, and the
//!    per-job sequence is allocated by one writer only.
//! 3. **Commit a result.** The child's printed lines (with their sequence numbers), its
//!    checkpoints and its run settings go into one object of `perstack_delegation_results`;
//!    then the result entry `<job>.<parentCheckpoint>.<slot>` is *created* (compare-and-set on
//!    "no entry yet"): the first attempt to finish wins, a later one (a paused worker that
//!    woke up) finds the entry and commits nothing. "Each child completes once" is this entry.
//! 4. **Join.** The worker that committed adds its slot to the join record (compare-and-set
//!    on its revision). Whoever's update makes the set complete publishes a [`JoinMessage`] on
//!    `perstack.joins` (dedupe id `<job>:join:<parentCheckpoint>`); a worker that died in
//!    between leaves its child message unacked, and the next delivery finds the result
//!    entry, adds the slot (idempotent) and publishes the join.
//! 5. **Resume.** Any worker takes the join: under the job's claim it imports the children's
//!    results into the job's store in call order (checkpoints, run settings, and every line
//!    renumbered after the job's last sequence number, which the join record keeps once chosen
//!    so that a repeated import writes the same numbers), prints the lines to the job's output
//!    subject, and continues the job through the ordinary resume path (`continue_job`: the
//!    recovery planner finds every child finished and the parent resumes with the results in
//!    call order, as a local delegation does). If the coordinator delegates again, the cycle
//!    repeats; otherwise the end record follows.
//!
//! The wait survives either side's death: the parent is not running while it waits (nothing
//! to lose); a child's worker death redelivers the child message; a joiner's death redelivers
//! the join (the import is idempotent, a continuation cut off is recovered as any other).
//!
//! A cancel of the invocation (heard by every worker, and stored) stops its children wherever
//! they run (a child that starts later finds it stored); they commit their stops, and the
//! parent, resumed with them, finds the stored cancel and ends cancelled, as a local job does.
//!
//! What differs from a local run: followers see each child's lines at the join, child after
//! child in call order (order per run is kept; a local run interleaves children as they go), and
//! a child whose worker died starts over instead of repeating only its step in flight. Nested
//! delegations of a child run on the child's worker.

mod import;
mod place;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use super::message::JobMessage;
use crate::schema::Checkpoint;

pub(crate) use import::import;
pub(crate) use place::plan_children;

/// The delegation message format's version.
pub(crate) const VERSION: u32 = 1;

/// One delegated run to run anywhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChildMessage {
    /// [`VERSION`].
    pub version: u32,
    /// The job's own message: its Experts (checked against their digest), options and output.
    pub job: JobMessage,
    /// The parent's `stoppedByDelegate` checkpoint.
    pub parent_checkpoint_id: String,
    /// The delegate call's position in the parent's turn.
    pub slot: usize,
    /// How many delegate calls the turn made.
    pub calls: usize,
    /// Where the child starts (`delegatedBy` names the parent).
    pub checkpoint: Checkpoint,
    /// Its query; `None`: it resumes `checkpoint`.
    pub query: Option<String>,
    /// The worker that placed it (a worker leaves its own children to others at first).
    pub placed_by: String,
}

/// A parent whose children all reported, to resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JoinMessage {
    /// [`VERSION`].
    pub version: u32,
    /// The job's own message.
    pub job: JobMessage,
    /// The parent's `stoppedByDelegate` checkpoint.
    pub parent_checkpoint_id: String,
    /// How many delegate calls the turn made.
    pub calls: usize,
}

impl ChildMessage {
    /// Its dedupe id.
    pub(crate) fn id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.job.output().id(),
            self.parent_checkpoint_id,
            self.slot
        )
    }
}

impl JoinMessage {
    /// Its dedupe id.
    pub(crate) fn id(&self) -> String {
        format!(
            "{}:join:{}",
            self.job.output().id(),
            self.parent_checkpoint_id
        )
    }
}

/// Parse a delegation or join message, checking the job message inside it as a job message
/// is checked.
pub(crate) fn decode<T: serde::de::DeserializeOwned + Carries>(
    bytes: &[u8],
) -> Result<T, (Option<super::message::Output>, super::message::Rejection)> {
    use super::message::Rejection;
    let message: T = serde_json::from_slice(bytes).map_err(|e| {
        let output = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| serde_json::to_vec(&v["job"]).ok())
            .and_then(|job| JobMessage::decode(&job).ok())
            .map(|job| job.output());
        (output, Rejection::Malformed(e.to_string()))
    })?;
    if message.version() != VERSION {
        return Err((
            Some(message.job().output()),
            Rejection::Version(message.version()),
        ));
    }
    JobMessage::decode(&message.job().encode())?;
    Ok(message)
}

/// What [`decode`] checks of a delegation or join message.
pub(crate) trait Carries {
    /// The message's version.
    fn version(&self) -> u32;
    /// The job message inside.
    fn job(&self) -> &JobMessage;
}

impl Carries for ChildMessage {
    fn version(&self) -> u32 {
        self.version
    }
    fn job(&self) -> &JobMessage {
        &self.job
    }
}

impl Carries for JoinMessage {
    fn version(&self) -> u32 {
        self.version
    }
    fn job(&self) -> &JobMessage {
        &self.job
    }
}

/// The join state of one parent checkpoint (`<job>.<parentCheckpoint>.join`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JoinRecord {
    /// How many delegate calls the turn made.
    pub calls: usize,
    /// The slots whose result is committed.
    pub done: Vec<usize>,
    /// The worker that placed the children.
    pub placed_by: String,
    /// The job's last sequence number when the import began (set once, so that a repeated
    /// import numbers the lines the same way).
    pub base_seq: Option<u64>,
}

/// How often a compare-and-set of a join record is tried before giving up.
pub(crate) const CAS_TRIES: usize = 32;

impl JoinRecord {
    /// The stored record under `key` and its revision; `None` when there is none yet.
    pub(crate) async fn read(kv: &kv::Store, key: &str) -> Result<Option<(Self, u64)>, String> {
        match kv.entry(key).await.map_err(|e| e.to_string())? {
            Some(e) if e.operation == kv::Operation::Put => {
                let record = serde_json::from_slice(&e.value).map_err(|e| e.to_string())?;
                Ok(Some((record, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Store this record over `revision` (0: create it); `false` when another writer came
    /// between (read again and retry).
    pub(crate) async fn write(
        &self,
        kv: &kv::Store,
        key: &str,
        revision: u64,
    ) -> Result<bool, String> {
        let body = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        let written = if revision == 0 {
            kv.create(key, body.into()).await.map(drop).map_err(drop)
        } else {
            kv.update(key, body.into(), revision)
                .await
                .map(drop)
                .map_err(drop)
        };
        Ok(written.is_ok())
    }
}

/// A committed child result (`<job>.<parentCheckpoint>.<slot>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResultRecord {
    /// The object holding the [`ChildResult`].
    pub object: String,
    /// The worker that ran the child.
    pub worker: String,
    /// The child's final checkpoint status.
    pub status: String,
}

/// What a child's run left: what its worker printed, stored checkpoints, run settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChildResult {
    /// Every line the child printed, in order, with the attempt's own sequence numbers.
    pub lines: Vec<Line>,
    /// Its checkpoints as stored (with `jobSeq`).
    pub checkpoints: Vec<serde_json::Value>,
    /// Its run settings.
    pub run_settings: Vec<crate::schema::RunSetting>,
}

/// One printed line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Line {
    /// Its sequence number in the attempt.
    pub seq: u64,
    /// The stdout JSON line.
    pub line: String,
}

/// The key prefix of one parent checkpoint's records: `<job>.<parentCheckpoint>` (a `.` in
/// an id written as `=`, as the store does).
fn prefix(job_id: &str, parent_checkpoint_id: &str) -> String {
    format!(
        "{}.{}",
        job_id.replace('.', "="),
        parent_checkpoint_id.replace('.', "=")
    )
}

/// The join record's key.
pub(crate) fn join_key(job_id: &str, parent_checkpoint_id: &str) -> String {
    format!("{}.join", prefix(job_id, parent_checkpoint_id))
}

/// A result entry's key.
pub(crate) fn result_key(job_id: &str, parent_checkpoint_id: &str, slot: usize) -> String {
    format!("{}.{slot}", prefix(job_id, parent_checkpoint_id))
}

#[cfg(test)]
mod tests;
