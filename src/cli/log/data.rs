//! Loading what `perstack log` shows: which job, its record, its runs' events and the asked-for
//! checkpoint, from a [`Source`]: the file-system store or the cluster's JetStream store.
//!
//! The store is read through [`Storage`] wherever the trait has a call for it. On the file
//! system the job and run directories are listed directly, because the trait has no "list jobs"
//! that includes jobs without `job.json` (Perstack's CLI never writes one) and no "list runs":
//! there a run is a directory under `jobs/<jobId>/runs/`, whether or not it holds a
//! `run-setting.json`. The JetStream store is written by this engine alone, which always
//! stores the job record and every run's settings, so the trait's lists are complete there.

use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::Map;

use crate::schema::id::is_safe_id;
use crate::schema::{Checkpoint, Event, Job, JobStatus};
use crate::storage::{FsStorage, Storage, StoreError};

/// What to load.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Request<'a> {
    /// `--job`.
    pub(super) job: Option<&'a str>,
    /// `--run`.
    pub(super) run: Option<&'a str>,
    /// `--checkpoint`.
    pub(super) checkpoint: Option<&'a str>,
    /// Load every checkpoint of the job too (`--job`, as Perstack does).
    pub(super) checkpoints: bool,
}

/// What was found.
#[derive(Debug)]
pub(super) struct Loaded {
    /// The job's id.
    pub(super) job_id: String,
    /// The job record: `job.json`, or one synthesised from the checkpoints; `None` when the
    /// job has neither.
    pub(super) job: Option<Job>,
    /// Whether the job was picked as the latest one (no `--job`, `--run` or `--checkpoint`).
    pub(super) latest: bool,
    /// The run asked for with `--run`.
    pub(super) run: Option<String>,
    /// The checkpoint asked for with `--checkpoint`.
    pub(super) checkpoint: Option<Checkpoint>,
    /// Every checkpoint of the job, when asked for.
    pub(super) checkpoints: Option<Vec<Checkpoint>>,
    /// Every stored event in scope (job, run, or the checkpoint's run up to its step), by
    /// timestamp.
    pub(super) events: Vec<Event>,
}

/// Where the history is read from.
pub(super) enum Source<'a> {
    /// The file-system store: its directories are listed.
    Dir(&'a FsStorage),
    /// A store known through [`Storage`] alone (the cluster's).
    Store(&'a dyn Storage),
}

impl Source<'_> {
    fn store(&self) -> &dyn Storage {
        match self {
            Source::Dir(fs) => *fs,
            Source::Store(store) => *store,
        }
    }

    /// The newest job.
    async fn latest_job(&self) -> Result<Option<String>, StoreError> {
        match self {
            Source::Dir(fs) => latest_job(fs, &fs.base().join("jobs")).await,
            Source::Store(store) => Ok(store.all_jobs().await?.first().map(|j| j.id.clone())),
        }
    }

    /// The job holding checkpoint `cp`.
    async fn job_of_checkpoint(&self, cp: &str) -> Result<Option<String>, StoreError> {
        match self {
            Source::Dir(fs) => {
                job_holding(&fs.base().join("jobs"), |dir| {
                    dir.join("checkpoints").join(format!("{cp}.json"))
                })
                .await
            }
            Source::Store(store) => {
                for job in store.all_jobs().await? {
                    match store.retrieve_checkpoint(&job.id, cp).await {
                        Ok(_) => return Ok(Some(job.id)),
                        Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(None)
            }
        }
    }

    /// The job holding run `run`.
    async fn job_of_run(&self, run: &str) -> Result<Option<String>, StoreError> {
        match self {
            Source::Dir(fs) => {
                job_holding(&fs.base().join("jobs"), |dir| dir.join("runs").join(run)).await
            }
            Source::Store(store) => Ok(store
                .all_run_settings()
                .await?
                .into_iter()
                .find(|s| s.run_id == run)
                .map(|s| s.job_id)),
        }
    }

    /// Whether job `job` exists.
    async fn has_job(&self, job: &str) -> Result<bool, StoreError> {
        match self {
            Source::Dir(fs) => exists(&fs.base().join("jobs").join(job)).await,
            Source::Store(store) => Ok(store.retrieve_job(job).await?.is_some()),
        }
    }

    /// The runs of job `job`, by id.
    async fn runs(&self, job: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Source::Dir(fs) => Ok(subdirs(&fs.base().join("jobs").join(job).join("runs"))
                .await?
                .into_iter()
                .map(|(name, _)| name)
                .collect()),
            Source::Store(store) => {
                let mut runs: Vec<String> = store
                    .all_run_settings()
                    .await?
                    .into_iter()
                    .filter(|s| s.job_id == job)
                    .map(|s| s.run_id)
                    .collect();
                runs.sort();
                runs.dedup();
                Ok(runs)
            }
        }
    }

    /// When job `job` started, for a job record made from its checkpoints when it has no
    /// events: its directory's modification time on disk.
    async fn started_without_events(&self, job: &str) -> Result<u64, StoreError> {
        match self {
            Source::Dir(fs) => mtime_ms(&fs.base().join("jobs").join(job)).await,
            Source::Store(_) => Ok(0),
        }
    }
}

/// Loads what `req` asks for; `None` when the job, run or checkpoint does not exist.
pub(super) async fn load(
    source: Source<'_>,
    req: Request<'_>,
) -> Result<Option<Loaded>, StoreError> {
    for (what, id) in [
        ("job", req.job),
        ("run", req.run),
        ("checkpoint", req.checkpoint),
    ] {
        if let Some(id) = id {
            check(what, id)?;
        }
    }
    let store = source.store();
    let latest = req.job.is_none() && req.run.is_none() && req.checkpoint.is_none();
    let job_id = match (req.job, req.checkpoint, req.run) {
        (Some(job), _, _) => Some(job.to_owned()),
        (None, Some(cp), _) => source.job_of_checkpoint(cp).await?,
        (None, None, Some(run)) => source.job_of_run(run).await?,
        (None, None, None) => source.latest_job().await?,
    };
    let Some(job_id) = job_id else {
        return Ok(None);
    };
    if !source.has_job(&job_id).await? {
        return Ok(None);
    }

    let checkpoint = match req.checkpoint {
        Some(cp) => match store.retrieve_checkpoint(&job_id, cp).await {
            Ok(c) => Some(c),
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        },
        None => None,
    };
    let all_runs = source.runs(&job_id).await?;
    let runs = match (&checkpoint, req.run) {
        (Some(c), Some(run)) if c.run_id != run => return Ok(None),
        (Some(c), _) => vec![c.run_id.clone()],
        (None, Some(run)) => {
            if !all_runs.iter().any(|r| r == run) {
                return Ok(None);
            }
            vec![run.to_owned()]
        }
        (None, None) => all_runs,
    };
    let max_step = checkpoint.as_ref().map(|c| c.step_number);
    let mut events = Vec::new();
    for run in &runs {
        events.extend(store.event_contents(&job_id, run, max_step).await?);
    }
    // Stable: each run's own order (the store's) survives ties across runs.
    events.sort_by_key(|e| e.timestamp);

    let mut checkpoints = None;
    let job = match store.retrieve_job(&job_id).await? {
        Some(job) => Some(job),
        None => {
            let all = store.checkpoints_by_job(&job_id).await?;
            let started = match events.first() {
                Some(e) => e.timestamp,
                None => source.started_without_events(&job_id).await?,
            };
            let job = synthesise(&job_id, &all, started, events.last().map(|e| e.timestamp));
            checkpoints = Some(all);
            job
        }
    };
    if req.checkpoints && checkpoints.is_none() {
        checkpoints = Some(store.checkpoints_by_job(&job_id).await?);
    }
    Ok(Some(Loaded {
        job_id,
        job,
        latest,
        run: req.run.map(str::to_owned),
        checkpoint,
        checkpoints,
        events,
    }))
}

/// A job record made from the checkpoints, as Perstack's `perstack log` does when `job.json`
/// is missing: coordinator from the first checkpoint, steps, usage and status from the last.
fn synthesise(
    id: &str,
    checkpoints: &[Checkpoint],
    started_at: u64,
    last_event: Option<u64>,
) -> Option<Job> {
    let (first, last) = (checkpoints.first()?, checkpoints.last()?);
    let status = JobStatus::from_checkpoint(last.status);
    Some(Job {
        id: id.to_owned(),
        status,
        coordinator_expert_key: first.expert.key.clone(),
        total_steps: last.step_number,
        max_steps: None,
        usage: last.usage,
        started_at,
        finished_at: if status == JobStatus::Running {
            None
        } else {
            last_event
        },
        job_seq: checkpoints.iter().filter_map(|c| c.job_seq).max(),
        extra: Map::new(),
    })
}

/// The newest job: the latest `startedAt` of the stored job records, and for job directories
/// without `job.json`, the directory's modification time.
async fn latest_job(store: &FsStorage, jobs_dir: &Path) -> Result<Option<String>, StoreError> {
    let stored = store.all_jobs().await?;
    let mut best: Option<(u64, String)> = stored.first().map(|j| (j.started_at, j.id.clone()));
    for (name, path) in subdirs(jobs_dir).await? {
        if stored.iter().any(|j| j.id == name) {
            continue;
        }
        let when = mtime_ms(&path).await?;
        if best.as_ref().is_none_or(|(t, _)| when > *t) {
            best = Some((when, name));
        }
    }
    Ok(best.map(|(_, id)| id))
}

/// The first job (by name) whose directory holds `member(job_dir)`.
async fn job_holding(
    jobs_dir: &Path,
    member: impl Fn(&Path) -> PathBuf,
) -> Result<Option<String>, StoreError> {
    for (name, path) in subdirs(jobs_dir).await? {
        if exists(&member(&path)).await? {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// The subdirectories of `dir` whose names are safe ids, sorted by name; none when `dir` does
/// not exist. Dot-names (the store's `.tmp-…` entries among them) are skipped.
async fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let mut read = match tokio::fs::read_dir(dir).await {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut out = Vec::new();
    while let Some(entry) = read.next_entry().await.map_err(|e| io_err(dir, e))? {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !is_safe_id(&name) {
            continue;
        }
        let path = entry.path();
        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

async fn exists(path: &Path) -> Result<bool, StoreError> {
    match tokio::fs::metadata(path).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path, e)),
    }
}

async fn mtime_ms(path: &Path) -> Result<u64, StoreError> {
    let modified = tokio::fs::metadata(path)
        .await
        .and_then(|m| m.modified())
        .map_err(|e| io_err(path, e))?;
    let ms = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Ok(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn io_err(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Rejects an id that cannot be a path segment, before any path is built from it.
fn check(what: &'static str, id: &str) -> Result<(), StoreError> {
    if is_safe_id(id) && !id.starts_with('.') {
        Ok(())
    } else {
        Err(StoreError::InvalidId {
            what,
            id: id.to_owned(),
        })
    }
}
