//! [`FsStorage`]: Perstack's directory layout on the local file system, written atomically.
//!
//! All file work runs on tokio's blocking pool (`spawn_blocking`), one task per call, so a
//! listing of a thousand files costs one hop rather than a thousand. Ids are checked before
//! any path is built (see [`super::check_id`]).
//!
//! `layout` owns the file names and the reading of directories and JSON files.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::atomic;
use super::chain::{self, Chains, Covered, Then};
use super::claim::holder_description;
use super::{Claim, EventMeta, Storage, StoreError, check_id};
use crate::schema::{Checkpoint, Event, Job, JobStatus, RunSetting};

mod layout;

use layout::{checkpoint_path, entries, event_file_name, event_files, read_json};

/// The file-system store, rooted at a `perstack` directory (usually `<cwd>/perstack`).
///
/// Cheap to clone; clones share the lock that serialises run-setting updates and the jobs'
/// chains. Every write is recorded in its job's chain (a hash chain, see `perstack log --verify`), signed with the key in
/// the user's configuration directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    /// The `perstack` directory; `jobs/` lives directly under it.
    base: PathBuf,
    /// Held (on a blocking thread, never across an await) around the read-modify-write of
    /// `run-setting.json`, so two concurrent stores cannot lose an update. It only covers this
    /// process; run settings are written once per run segment, so contention is nil.
    run_setting_lock: Arc<Mutex<()>>,
    /// The chains of the jobs this store writes (one lock per job around a write and its
    /// record).
    chains: Arc<Chains>,
}

impl FsStorage {
    /// A store rooted at `base`, the `perstack` directory. Nothing is created until the first
    /// write.
    pub fn new(base: PathBuf) -> Self {
        Self::with_key_dir(base, default_key_dir())
    }

    /// A store whose jobs' chains are signed with the key in `key_dir` (created there on the
    /// first signature) instead of the user's configuration directory; `None` leaves them
    /// unsigned. For an embedder that keeps its key elsewhere, and for tests.
    pub fn with_key_dir(base: PathBuf, key_dir: Option<PathBuf>) -> Self {
        FsStorage {
            base,
            run_setting_lock: Arc::new(Mutex::new(())),
            chains: Arc::new(Chains::new(key_dir)),
        }
    }

    /// The directory of job `job_id` (checked), for verification and export.
    pub(crate) fn job_path(&self, job_id: &str) -> Result<PathBuf, StoreError> {
        check_id("job", job_id)?;
        Ok(self.job_dir(job_id))
    }

    /// The ids of every job directory, sorted.
    pub(crate) fn job_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = entries(&self.jobs_dir())?
            .into_iter()
            .filter(|e| e.is_dir)
            .map(|e| e.name)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The `perstack` directory this store is rooted at.
    pub fn base(&self) -> &Path {
        &self.base
    }

    fn jobs_dir(&self) -> PathBuf {
        self.base.join("jobs")
    }

    /// `jobs/<jobId>`; the id must have been checked.
    fn job_dir(&self, job_id: &str) -> PathBuf {
        self.jobs_dir().join(job_id)
    }

    /// `jobs/<jobId>/runs/<runId>`; the ids must have been checked.
    fn run_dir(&self, job_id: &str, run_id: &str) -> PathBuf {
        self.job_dir(job_id).join("runs").join(run_id)
    }
}

#[async_trait::async_trait]
impl Storage for FsStorage {
    /// Writes `jobs/<jobId>/checkpoints/<id>.json` (compact) atomically and durably.
    async fn store_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        check_id("job", &checkpoint.job_id)?;
        check_id("checkpoint", &checkpoint.id)?;
        let bytes = to_json("checkpoint", &checkpoint.stored(), false)?;
        let job_dir = self.job_dir(&checkpoint.job_id);
        let path = checkpoint_path(&job_dir, &checkpoint.id);
        let entry = Covered {
            path: format!("checkpoints/{}.json", checkpoint.id),
            bytes: Vec::new(),
            job_seq: checkpoint.job_seq,
            then: Then::Sign,
        };
        let (chains, job_id) = (Arc::clone(&self.chains), checkpoint.job_id.clone());
        blocking(path.clone(), move || {
            chains.covered(&job_id, &job_dir, || {
                atomic::replace(&path, &bytes, true)?;
                Ok(((), Covered { bytes, ..entry }))
            })
        })
        .await
    }

    async fn retrieve_checkpoint(
        &self,
        job_id: &str,
        checkpoint_id: &str,
    ) -> Result<Checkpoint, StoreError> {
        check_id("job", job_id)?;
        check_id("checkpoint", checkpoint_id)?;
        let path = checkpoint_path(&self.job_dir(job_id), checkpoint_id);
        let id = checkpoint_id.to_owned();
        blocking(path.clone(), move || {
            read_json(&path)?.ok_or(StoreError::NotFound {
                what: "checkpoint",
                id,
            })
        })
        .await
    }

    async fn checkpoints_by_job(&self, job_id: &str) -> Result<Vec<Checkpoint>, StoreError> {
        check_id("job", job_id)?;
        let dir = self.job_dir(job_id).join("checkpoints");
        blocking(dir.clone(), move || {
            let mut found = Vec::new();
            for entry in entries(&dir)? {
                if entry.is_dir || !entry.name.ends_with(".json") {
                    continue;
                }
                // `None`: deleted between the listing and the read.
                if let Some(checkpoint) = read_json::<Checkpoint>(&entry.path)? {
                    let written = fs::metadata(&entry.path).and_then(|m| m.modified()).ok();
                    found.push((checkpoint, written));
                }
            }
            found.sort_by(|(a, a_written), (b, b_written)| {
                a.step_number
                    .cmp(&b.step_number)
                    .then(a_written.cmp(b_written))
                    .then_with(|| a.id.cmp(&b.id))
            });
            Ok(found
                .into_iter()
                .map(|(checkpoint, _)| checkpoint)
                .collect())
        })
        .await
    }

    /// Writes `jobs/<jobId>/runs/<runId>/event-<timestamp>-<stepNumber>-<type>.json` (compact).
    ///
    /// When that name is taken (same millisecond, step and type, e.g. two streaming deltas), the
    /// name's timestamp is moved forward one millisecond at a time until it is free; the JSON
    /// keeps the event's real timestamp. The name stays parseable by Perstack's tools.
    ///
    /// The file is complete when it appears (temp file and link), but it is **not fsynced**:
    /// checkpoints are the source of truth for resuming, events are a log, and an fsync per
    /// streaming delta would dominate the run time. A power loss may lose the last events.
    ///
    /// An event without a `stepNumber` (a runtime event: `proxyAccess`, `skillStderr`, skill
    /// lifecycle), which Perstack does not store, goes to the job's runtime side log, covered
    /// by the chain like the rest (an event whose job id cannot be a path is dropped).
    async fn store_event(&self, event: &Event) -> Result<(), StoreError> {
        let job_seq = event.job_seq;
        let chains = Arc::clone(&self.chains);
        let Some(step) = event.step_number else {
            if check_id("job", &event.job_id).is_err() {
                return Ok(());
            }
            let line = to_json("event", &event.stored(), false)?;
            let (job_id, job_dir) = (event.job_id.clone(), self.job_dir(&event.job_id));
            return blocking(job_dir.clone(), move || {
                chains.runtime(&job_id, &job_dir, &line)
            })
            .await;
        };
        check_id("job", &event.job_id)?;
        check_id("run", &event.run_id)?;
        let bytes = to_json("event", &event.stored(), false)?;
        let job_dir = self.job_dir(&event.job_id);
        let dir = self.run_dir(&event.job_id, &event.run_id);
        let (timestamp, kind) = (event.timestamp, event.kind());
        let (job_id, run_id) = (event.job_id.clone(), event.run_id.clone());
        blocking(dir.clone(), move || {
            chains.covered(&job_id, &job_dir, || {
                let name = |bump: u64| {
                    dir.join(event_file_name(timestamp.saturating_add(bump), step, kind))
                };
                let written = atomic::create_unique(&dir, &bytes, name)?;
                let file = written
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                let entry = Covered {
                    path: format!("runs/{run_id}/{file}"),
                    bytes,
                    job_seq,
                    then: Then::Nothing,
                };
                Ok(((), entry))
            })
        })
        .await
    }

    async fn events_by_run(
        &self,
        job_id: &str,
        run_id: &str,
    ) -> Result<Vec<EventMeta>, StoreError> {
        check_id("job", job_id)?;
        check_id("run", run_id)?;
        let dir = self.run_dir(job_id, run_id);
        blocking(dir.clone(), move || {
            let mut metas = Vec::new();
            for file in event_files(&dir)? {
                metas.push(EventMeta {
                    timestamp: file.timestamp,
                    step_number: file.step,
                    kind: file.kind,
                });
            }
            super::sort_event_metas(&mut metas);
            Ok(metas)
        })
        .await
    }

    /// Events sharing a millisecond are ordered by step, then by where their type falls in a
    /// step's lifecycle (`startGeneration` before `callTools` before `resolveToolResults`...),
    /// then by file name: the directory does not record write order, and that is the order in
    /// which the run writes them. Same-type collisions keep their write order through the bumped
    /// file-name timestamps.
    async fn event_contents(
        &self,
        job_id: &str,
        run_id: &str,
        max_step: Option<u32>,
    ) -> Result<Vec<Event>, StoreError> {
        check_id("job", job_id)?;
        check_id("run", run_id)?;
        let dir = self.run_dir(job_id, run_id);
        blocking(dir.clone(), move || {
            let mut events = Vec::new();
            for file in event_files(&dir)? {
                if max_step.is_some_and(|max| file.step > max) {
                    continue;
                }
                if let Some(event) = read_json::<Event>(&file.path)? {
                    let key = (
                        event.timestamp,
                        event.step_number.unwrap_or(file.step),
                        super::lifecycle_rank(event.kind()),
                        file.timestamp,
                    );
                    events.push((key, event));
                }
            }
            events.sort_by_key(|(key, _)| *key);
            Ok(events.into_iter().map(|(_, event)| event).collect())
        })
        .await
    }

    /// Writes `jobs/<jobId>/job.json` (pretty, 2-space) atomically and durably.
    async fn store_job(&self, job: &Job) -> Result<(), StoreError> {
        check_id("job", &job.id)?;
        let bytes = to_json("job", job, true)?;
        let job_dir = self.job_dir(&job.id);
        let path = job_dir.join("job.json");
        let then = match job.status {
            JobStatus::Running => Then::Nothing,
            _ => Then::Close(
                serde_json::to_value(job.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ),
        };
        let (chains, job_id, job_seq) = (Arc::clone(&self.chains), job.id.clone(), job.job_seq);
        blocking(path.clone(), move || {
            chains.covered(&job_id, &job_dir, || {
                atomic::replace(&path, &bytes, true)?;
                let entry = Covered {
                    path: "job.json".to_owned(),
                    bytes,
                    job_seq,
                    then,
                };
                Ok(((), entry))
            })
        })
        .await
    }

    async fn retrieve_job(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        check_id("job", job_id)?;
        let path = self.job_dir(job_id).join("job.json");
        blocking(path.clone(), move || read_json(&path)).await
    }

    async fn all_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let dir = self.jobs_dir();
        blocking(dir.clone(), move || {
            let mut jobs = Vec::new();
            for job_dir in entries(&dir)?.into_iter().filter(|e| e.is_dir) {
                // A job directory without job.json is normal: Perstack's CLI never writes one.
                if let Some(job) = read_json::<Job>(&job_dir.path.join("job.json"))? {
                    jobs.push(job);
                }
            }
            super::sort_jobs(&mut jobs);
            Ok(jobs)
        })
        .await
    }

    /// Writes `jobs/<jobId>/runs/<runId>/run-setting.json` (compact) atomically and durably; an
    /// existing file only gets the later `updatedAt` (a corrupt one is reported, not replaced).
    async fn store_run_setting(&self, setting: &RunSetting) -> Result<(), StoreError> {
        check_id("job", &setting.job_id)?;
        check_id("run", &setting.run_id)?;
        let bytes = to_json("run setting", setting, false)?;
        let updated_at = setting.updated_at;
        let job_dir = self.job_dir(&setting.job_id);
        let path = self
            .run_dir(&setting.job_id, &setting.run_id)
            .join("run-setting.json");
        let lock = Arc::clone(&self.run_setting_lock);
        let chains = Arc::clone(&self.chains);
        let (job_id, rel) = (
            setting.job_id.clone(),
            format!("runs/{}/run-setting.json", setting.run_id),
        );
        blocking(path.clone(), move || {
            let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let bytes = match read_json::<RunSetting>(&path)? {
                None => bytes,
                Some(mut stored) => {
                    if updated_at <= stored.updated_at {
                        return Ok(());
                    }
                    stored.updated_at = updated_at;
                    to_json("run setting", &stored, false)?
                }
            };
            chains.covered(&job_id, &job_dir, || {
                atomic::replace(&path, &bytes, true)?;
                let entry = Covered {
                    path: rel,
                    bytes,
                    job_seq: None,
                    then: Then::Nothing,
                };
                Ok(((), entry))
            })
        })
        .await
    }

    async fn all_run_settings(&self) -> Result<Vec<RunSetting>, StoreError> {
        let dir = self.jobs_dir();
        blocking(dir.clone(), move || {
            let mut settings = Vec::new();
            for job_dir in entries(&dir)?.into_iter().filter(|e| e.is_dir) {
                for run_dir in entries(&job_dir.path.join("runs"))?
                    .into_iter()
                    .filter(|e| e.is_dir)
                {
                    if let Some(setting) =
                        read_json::<RunSetting>(&run_dir.path.join("run-setting.json"))?
                    {
                        settings.push(setting);
                    }
                }
            }
            super::sort_run_settings(&mut settings);
            Ok(settings)
        })
        .await
    }

    /// Takes an exclusive `flock` on `jobs/<jobId>/writer.lock` (created when missing) without
    /// waiting, then writes the holder and the next fencing token into it. The kernel releases
    /// the lock when the file is closed (the claim dropped) or the process dies, however it dies.
    async fn claim(&self, job_id: &str) -> Result<Claim, StoreError> {
        check_id("job", job_id)?;
        let dir = self.job_dir(job_id);
        let path = dir.join(WRITER_LOCK);
        let job_id = job_id.to_owned();
        let chains = Arc::clone(&self.chains);
        blocking(path.clone(), move || {
            let io = |source| StoreError::Io {
                path: path.clone(),
                source,
            };
            fs::create_dir_all(&dir).map_err(io)?;
            let mut file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            let mut previous = String::new();
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    file.read_to_string(&mut previous).map_err(io)?;
                    return Err(StoreError::Claimed {
                        job_id,
                        holder: lock_field(&previous, "holder")
                            .unwrap_or("an unknown process")
                            .to_owned(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            file.read_to_string(&mut previous).map_err(io)?;
            let token = lock_field(&previous, "token")
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let record = format!("holder={}\ntoken={token}\n", holder_description());
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            file.write_all(record.as_bytes()).map_err(io)?;
            // Dropped in order: the chain's state (its open files) first, then the lock.
            let release = ForgetChain {
                chains,
                job_id: job_id.clone(),
            };
            Ok(Claim::new(job_id, token, (release, file)))
        })
        .await
    }
}

/// The key directory of a store built with [`FsStorage::new`]: the user's configuration
/// directory; unit tests use one temp-dir key instead of creating one in the user's home.
fn default_key_dir() -> Option<PathBuf> {
    if cfg!(test) {
        return Some(std::env::temp_dir().join("perstack-unit-test-chain-key"));
    }
    chain::default_key_dir()
}

/// Part of a claim: when the claim is released, the job's chain state (two open files) is
/// dropped, so a long-lived store does not keep every job it ever wrote open.
struct ForgetChain {
    chains: Arc<Chains>,
    job_id: String,
}

impl Drop for ForgetChain {
    fn drop(&mut self) {
        self.chains.forget(&self.job_id);
    }
}

/// The lock file of a job's writer (see [`FsStorage::claim`]). Perstack's readers ignore it.
const WRITER_LOCK: &str = "writer.lock";

/// The value of `key=value` in a lock file's lines.
fn lock_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// Runs blocking file work on tokio's blocking pool. A panic in `f` is re-raised here; a task
/// cancelled by runtime shutdown becomes an I/O error on `path`.
async fn blocking<T, F>(path: PathBuf, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Io {
            path,
            source: io::Error::other(e),
        }),
    }
}

fn to_json<T: serde::Serialize>(
    what: &'static str,
    value: &T,
    pretty: bool,
) -> Result<Vec<u8>, StoreError> {
    let bytes = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    bytes.map_err(|source| StoreError::Serialize { what, source })
}

#[cfg(test)]
mod tests;
