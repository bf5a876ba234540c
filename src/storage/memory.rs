//! [`MemoryStorage`]: the same contract as [`super::FsStorage`], kept in memory.
//!
//! For tests and benchmarks: nothing survives the process. Ids are checked exactly as on disk,
//! so a test against this store catches the ids the file system would reject.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;

use super::{Claim, EventMeta, Storage, StoreError, check_id};
use crate::schema::{Checkpoint, Event, Job, RunSetting};

/// An in-memory store. Cheap to clone; clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    /// One entry per job id. Sharded, so parallel jobs in a benchmark rarely contend; a shard
    /// lock is only held for the copy in or out, never across an await.
    jobs: Arc<DashMap<String, JobEntry>>,
    /// The last fencing token handed out per job, and whether a claim of it is held now.
    claims: Arc<DashMap<String, (u64, bool)>>,
}

/// Releases a job's claim in a [`MemoryStorage`] when dropped.
struct MemoryHold {
    claims: Arc<DashMap<String, (u64, bool)>>,
    job_id: String,
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        if let Some(mut entry) = self.claims.get_mut(&self.job_id) {
            entry.1 = false;
        }
    }
}

/// Everything stored under one job id.
#[derive(Debug, Default)]
struct JobEntry {
    job: Option<Job>,
    /// In the order first stored; storing an existing id replaces it in place.
    checkpoints: Vec<Checkpoint>,
    runs: BTreeMap<String, RunEntry>,
}

/// Everything stored under one run id.
#[derive(Debug, Default)]
struct RunEntry {
    setting: Option<RunSetting>,
    /// In the order stored, shared with the bus and its listeners.
    events: Vec<Arc<Event>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    /// A copy of the events of one run, in the order stored.
    fn run_events(&self, job_id: &str, run_id: &str) -> Vec<Arc<Event>> {
        self.jobs
            .get(job_id)
            .and_then(|job| job.runs.get(run_id).map(|run| run.events.clone()))
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Storage for MemoryStorage {
    async fn store_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        check_id("job", &checkpoint.job_id)?;
        check_id("checkpoint", &checkpoint.id)?;
        let mut job = self.jobs.entry(checkpoint.job_id.clone()).or_default();
        match job.checkpoints.iter_mut().find(|c| c.id == checkpoint.id) {
            Some(stored) => *stored = checkpoint.clone(),
            None => job.checkpoints.push(checkpoint.clone()),
        }
        Ok(())
    }

    async fn retrieve_checkpoint(
        &self,
        job_id: &str,
        checkpoint_id: &str,
    ) -> Result<Checkpoint, StoreError> {
        check_id("job", job_id)?;
        check_id("checkpoint", checkpoint_id)?;
        self.jobs
            .get(job_id)
            .and_then(|job| {
                job.checkpoints
                    .iter()
                    .find(|c| c.id == checkpoint_id)
                    .cloned()
            })
            .ok_or_else(|| StoreError::NotFound {
                what: "checkpoint",
                id: checkpoint_id.to_owned(),
            })
    }

    async fn checkpoints_by_job(&self, job_id: &str) -> Result<Vec<Checkpoint>, StoreError> {
        check_id("job", job_id)?;
        let mut checkpoints = self
            .jobs
            .get(job_id)
            .map(|job| job.checkpoints.clone())
            .unwrap_or_default();
        checkpoints.sort_by_key(|c| c.step_number);
        Ok(checkpoints)
    }

    async fn store_event(&self, event: &Event) -> Result<(), StoreError> {
        self.store_shared_event(&Arc::new(event.clone())).await
    }

    async fn store_shared_event(&self, event: &Arc<Event>) -> Result<(), StoreError> {
        if !event.is_run_event() {
            return Ok(());
        }
        check_id("job", &event.job_id)?;
        check_id("run", &event.run_id)?;
        let mut job = self.jobs.entry(event.job_id.clone()).or_default();
        job.runs
            .entry(event.run_id.clone())
            .or_default()
            .events
            .push(event.clone());
        Ok(())
    }

    async fn events_by_run(
        &self,
        job_id: &str,
        run_id: &str,
    ) -> Result<Vec<EventMeta>, StoreError> {
        check_id("job", job_id)?;
        check_id("run", run_id)?;
        let mut metas: Vec<EventMeta> = self
            .run_events(job_id, run_id)
            .iter()
            .map(|e| EventMeta::of(e))
            .collect();
        super::sort_event_metas(&mut metas);
        Ok(metas)
    }

    async fn event_contents(
        &self,
        job_id: &str,
        run_id: &str,
        max_step: Option<u32>,
    ) -> Result<Vec<Event>, StoreError> {
        check_id("job", job_id)?;
        check_id("run", run_id)?;
        let mut events: Vec<Event> = self
            .run_events(job_id, run_id)
            .into_iter()
            .filter(|e| max_step.is_none_or(|max| e.step_number.is_some_and(|step| step <= max)))
            .map(|e| (*e).clone())
            .collect();
        events.sort_by_key(|e| e.timestamp);
        Ok(events)
    }

    async fn store_job(&self, job: &Job) -> Result<(), StoreError> {
        check_id("job", &job.id)?;
        self.jobs.entry(job.id.clone()).or_default().job = Some(job.clone());
        Ok(())
    }

    async fn retrieve_job(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        check_id("job", job_id)?;
        Ok(self.jobs.get(job_id).and_then(|job| job.job.clone()))
    }

    async fn all_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let mut jobs: Vec<Job> = self
            .jobs
            .iter()
            .filter_map(|entry| entry.job.clone())
            .collect();
        super::sort_jobs(&mut jobs);
        Ok(jobs)
    }

    async fn store_run_setting(&self, setting: &RunSetting) -> Result<(), StoreError> {
        check_id("job", &setting.job_id)?;
        check_id("run", &setting.run_id)?;
        let mut job = self.jobs.entry(setting.job_id.clone()).or_default();
        let run = job.runs.entry(setting.run_id.clone()).or_default();
        match &mut run.setting {
            Some(stored) => stored.updated_at = stored.updated_at.max(setting.updated_at),
            None => run.setting = Some(setting.clone()),
        }
        Ok(())
    }

    async fn all_run_settings(&self) -> Result<Vec<RunSetting>, StoreError> {
        let mut settings: Vec<RunSetting> = self
            .jobs
            .iter()
            .flat_map(|job| {
                job.runs
                    .values()
                    .filter_map(|run| run.setting.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        super::sort_run_settings(&mut settings);
        Ok(settings)
    }

    async fn claim(&self, job_id: &str) -> Result<Claim, StoreError> {
        check_id("job", job_id)?;
        let mut entry = self.claims.entry(job_id.to_owned()).or_default();
        if entry.1 {
            return Err(StoreError::Claimed {
                job_id: job_id.to_owned(),
                holder: "another engine in this process".to_owned(),
            });
        }
        *entry = (entry.0 + 1, true);
        let token = entry.0;
        drop(entry);
        let hold = MemoryHold {
            claims: Arc::clone(&self.claims),
            job_id: job_id.to_owned(),
        };
        Ok(Claim::new(job_id, token, hold))
    }
}
