//! Loading what `perstack log` shows: which job, its record, its runs' events and the asked-for
//! checkpoint, from the file-system store.
//!
//! The store is read through [`Storage`] wherever the trait has a call for it; the job and run
//! directories are listed directly, because the trait has no "list jobs" that includes jobs
//! without `job.json` (Perstack's CLI never writes one) and no "list runs". A run is a
//! directory under `jobs/<jobId>/runs/`, whether or not it holds a `run-setting.json`.

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

/// Loads what `req` asks for; `None` when the job, run or checkpoint does not exist.
pub(super) async fn load(
    store: &FsStorage,
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
    let jobs_dir = store.base().join("jobs");
    let latest = req.job.is_none() && req.run.is_none() && req.checkpoint.is_none();
    let job_id = match (req.job, req.checkpoint, req.run) {
        (Some(job), _, _) => Some(job.to_owned()),
        (None, Some(cp), _) => {
            job_holding(&jobs_dir, |dir| {
                dir.join("checkpoints").join(format!("{cp}.json"))
            })
            .await?
        }
        (None, None, Some(run)) => job_holding(&jobs_dir, |dir| dir.join("runs").join(run)).await?,
        (None, None, None) => latest_job(store, &jobs_dir).await?,
    };
    let Some(job_id) = job_id else {
        return Ok(None);
    };
    let job_dir = jobs_dir.join(&job_id);
    if !exists(&job_dir).await? {
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
    let runs = match (&checkpoint, req.run) {
        (Some(c), Some(run)) if c.run_id != run => return Ok(None),
        (Some(c), _) => vec![c.run_id.clone()],
        (None, Some(run)) => {
            if !exists(&job_dir.join("runs").join(run)).await? {
                return Ok(None);
            }
            vec![run.to_owned()]
        }
        (None, None) => subdirs(&job_dir.join("runs"))
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
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
                None => mtime_ms(&job_dir).await?,
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
