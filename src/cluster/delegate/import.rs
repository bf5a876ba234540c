//! The join's import: the children's committed results written into the job's store, in call
//! order, under the job's claim, numbered after the job's last sequence number.
//!
//! The numbering base is chosen once and kept in the join record, and each child's lines keep
//! their order and spacing, so a repeated import (its worker died half-way) writes the same
//! records with the same numbers: checkpoints and run settings by id, events skipped when an
//! event of the same id is stored already.

use std::collections::HashSet;

use async_nats::jetstream::kv;
use async_nats::jetstream::object_store::ObjectStore;
use tokio::io::AsyncReadExt;

use super::{CAS_TRIES, ChildResult, JoinRecord, ResultRecord, join_key, result_key};
use crate::schema::{Checkpoint, Event};
use crate::storage::{Storage, StoreError};

/// Why an import could not be made (yet).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    /// The store refused or did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The delegation bucket or the result objects.
    #[error("delegation results: {0}")]
    Results(String),
    /// A child's result is not committed (a join published too early cannot happen; a bucket
    /// edited by hand can).
    #[error("the result of delegate call {0} is missing")]
    Missing(usize),
}

/// Imports the results of every delegate call of `parent_checkpoint_id` into job `job_id`
/// (whose claim the caller holds). Returns the lines to print with their new sequence
/// numbers, and the job's last sequence number after them.
pub(crate) async fn import(
    storage: &dyn Storage,
    kv: &kv::Store,
    objects: &ObjectStore,
    job_id: &str,
    parent_checkpoint_id: &str,
    calls: usize,
) -> Result<(Vec<(u64, String)>, u64), ImportError> {
    let results = |e: &dyn std::fmt::Display| ImportError::Results(e.to_string());
    let base = base_seq(storage, kv, job_id, parent_checkpoint_id).await?;
    let mut printed = Vec::new();
    let mut next = base;
    for slot in 0..calls {
        let record: ResultRecord = match kv
            .get(result_key(job_id, parent_checkpoint_id, slot))
            .await
            .map_err(|e| results(&e))?
        {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| results(&e))?,
            None => return Err(ImportError::Missing(slot)),
        };
        let mut object = objects.get(&record.object).await.map_err(|e| results(&e))?;
        let mut body = Vec::new();
        object
            .read_to_end(&mut body)
            .await
            .map_err(|e| results(&e))?;
        let result: ChildResult = serde_json::from_slice(&body).map_err(|e| results(&e))?;
        let first = result.lines.iter().map(|l| l.seq).min().unwrap_or(1);
        let last = result.lines.iter().map(|l| l.seq).max().unwrap_or(0);
        let renumber = |seq: u64| next + seq.saturating_sub(first) + 1;
        let mut runs: HashSet<String> = HashSet::new();
        for value in &result.checkpoints {
            let mut checkpoint: Checkpoint =
                serde_json::from_value(value.clone()).map_err(|e| results(&e))?;
            checkpoint.job_seq = checkpoint.job_seq.map(renumber);
            runs.insert(checkpoint.run_id.clone());
            storage.store_checkpoint(&checkpoint).await?;
        }
        for setting in &result.run_settings {
            runs.insert(setting.run_id.clone());
            storage.store_run_setting(setting).await?;
        }
        let mut stored = HashSet::new();
        for run in &runs {
            for event in storage.event_contents(job_id, run, None).await? {
                stored.insert(event.id);
            }
        }
        for line in &result.lines {
            let seq = renumber(line.seq);
            let mut event: Event = serde_json::from_str(&line.line).map_err(|e| results(&e))?;
            event.set_job_seq(seq);
            if event.is_run_event() && !stored.contains(&event.id) {
                storage.store_event(&event).await?;
            }
            printed.push((seq, line.line.clone()));
        }
        if last >= first {
            next += last - first + 1;
        }
    }
    Ok((printed, next))
}

/// The join record's numbering base, chosen now (the job's last sequence number) if it was
/// not before.
async fn base_seq(
    storage: &dyn Storage,
    kv: &kv::Store,
    job_id: &str,
    parent_checkpoint_id: &str,
) -> Result<u64, ImportError> {
    let results = |e: &dyn std::fmt::Display| ImportError::Results(e.to_string());
    let key = join_key(job_id, parent_checkpoint_id);
    for _ in 0..CAS_TRIES {
        let (mut record, revision) = JoinRecord::read(kv, &key)
            .await
            .map_err(|e| results(&e))?
            .unwrap_or_default();
        if let Some(base) = record.base_seq {
            return Ok(base);
        }
        let base = storage.last_job_seq(job_id).await?;
        record.base_seq = Some(base);
        if record
            .write(kv, &key, revision)
            .await
            .map_err(|e| results(&e))?
        {
            return Ok(base);
        }
    }
    Err(ImportError::Results(
        "too many concurrent updates of the join record".into(),
    ))
}
