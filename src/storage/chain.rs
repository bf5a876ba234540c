//! The job chain: a per-job, append-only record of every file the file-system store writes for
//! a job, each record holding the file's path, its SHA-256 and the previous record's hash, with
//! the head signed by the user's Ed25519 key ([`key`]). It makes a job's history
//! tamper-evident: `perstack log --verify` ([`verify`]) names every file changed, removed, added
//! or moved since it was written, and tells a chain cut by a crash from tampering.
//!
//! Layout (beside Perstack's files, never inside them, so Perstack's readers still parse every
//! file; they ignore the `audit` directory):
//!
//! ```text
//! perstack/jobs/<jobId>/audit/chain.jsonl     one record per line (this module's `Record`)
//! perstack/jobs/<jobId>/audit/runtime.jsonl   runtime events Perstack does not store
//!                                             (proxyAccess, skillStderr, skill lifecycle),
//!                                             one per line; line i is chained as
//!                                             `audit/runtime.jsonl#<i>`
//! ```
//!
//! Durability, batched with the writes the records cover: records are appended (one `write`
//! each, no fsync) right after their file, under a per-job lock; a signed head record follows
//! every checkpoint, and the chain file is fsynced once, when the job's `job.json` gets a
//! final status. A crash (or power loss) can therefore lose only the tail: files without
//! records, records without a head, a torn last line. The verifier reports that as a cut.
//! A writer that opens a chain left that way (a continued job) first appends a `recovered`
//! record adopting what it finds unrecorded, so the gap stays explained.
//!
//! One owner: [`super::FsStorage`] calls [`Chains::covered`] and [`Chains::runtime`] in its
//! write path and never formats a record itself; the job's claim makes this process the only
//! writer. What the chain does not protect against: anyone holding the signing key, a file
//! system rolled back as a whole to an earlier consistent state, and events added after the
//! last signed head of a job that never finished (they cannot be told from a crash).

mod export;
mod key;
mod verify;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;
use super::atomic::io_error;

pub(crate) use export::{export_job, import_archive};
pub(crate) use key::default_key_dir;
#[cfg(test)]
use verify::Finding;
pub(crate) use verify::{JobFiles, Report, load_dir, verify};

/// The audit directory in a job's directory.
pub(crate) const AUDIT_DIR: &str = "audit";
/// The chain, relative to the job's directory.
pub(crate) const CHAIN_FILE: &str = "audit/chain.jsonl";
/// The runtime side log, relative to the job's directory.
pub(crate) const RUNTIME_FILE: &str = "audit/runtime.jsonl";
/// The `prev` of a chain's first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of `chain.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The record's position, from 0.
    pub n: u64,
    /// SHA-256 (hex) of the previous record's line, [`GENESIS`] for the first.
    pub prev: String,
    /// When it was appended, epoch ms (informational).
    pub at: u64,
    /// What it records.
    #[serde(flatten)]
    pub body: Body,
}

/// What a record records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(crate) enum Body {
    /// A file was written (or replaced) with this content.
    #[serde(rename_all = "camelCase")]
    File {
        /// Relative to the job's directory, `/`-separated.
        path: String,
        /// SHA-256 (hex) of the bytes written.
        sha256: String,
        /// The `jobSeq` of the record written (event, checkpoint, job), if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_seq: Option<u64>,
        /// SHA-256 of the form an export carries (run settings without secrets).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redacted_sha256: Option<String>,
    },
    /// A writer opening the job found these files unrecorded (a crash cut the chain, or the
    /// job was written without one) and adopted them as they are.
    Recovered {
        /// The adopted files and their hashes.
        files: Vec<Adopted>,
    },
    /// `job.json` got a final status: everything before is the whole job so far.
    Closed {
        /// The status, as in `job.json`.
        status: String,
    },
    /// The signature of everything before this record.
    Head {
        /// The public key (hex).
        key: String,
        /// Ed25519 signature (hex) of [`head_message`].
        sig: String,
    },
}

/// A file a `recovered` record adopts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Adopted {
    /// Relative to the job's directory.
    pub path: String,
    /// SHA-256 (hex) of its content when adopted.
    pub sha256: String,
}

/// What a head record signs: the job, the head's position and the hash of the record before.
pub(crate) fn head_message(job_id: &str, n: u64, prev: &str) -> Vec<u8> {
    format!("perstack-chain-v1\n{job_id}\n{n}\n{prev}").into_bytes()
}

/// The public half (hex) of the key in the user's configuration directory, if there is one.
pub(crate) fn local_public_key() -> Option<String> {
    let dir = default_key_dir()?;
    key::ChainKey::load(&dir)
        .ok()
        .flatten()
        .map(|k| k.public_hex())
}

/// SHA-256 as lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A run setting as an export carries it: `env` values and `proxyUrl` replaced by
/// `[redacted]`. `None` when the bytes are not a JSON object.
pub(crate) fn redact_run_setting(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let object = value.as_object_mut()?;
    if let Some(env) = object.get_mut("env").and_then(|e| e.as_object_mut()) {
        for v in env.values_mut() {
            *v = serde_json::Value::String("[redacted]".into());
        }
    }
    if let Some(proxy) = object.get_mut("proxyUrl").filter(|p| p.is_string()) {
        *proxy = serde_json::Value::String("[redacted]".into());
    }
    serde_json::to_vec(&value).ok()
}

/// What a file write asks of the chain.
pub(crate) struct Covered {
    /// Relative to the job's directory.
    pub path: String,
    /// The bytes written.
    pub bytes: Vec<u8>,
    /// Their `jobSeq`, if any.
    pub job_seq: Option<u64>,
    /// What to do after the record.
    pub then: Then,
}

/// What follows a file's record.
pub(crate) enum Then {
    /// Nothing (events, run settings, a running job's `job.json`).
    Nothing,
    /// A signed head (checkpoints).
    Sign,
    /// A `closed` record, a signed head and an fsync of the chain (a final `job.json`).
    Close(String),
}

/// The chains of the jobs one store writes. Shared by the store's clones.
#[derive(Debug)]
pub(crate) struct Chains {
    /// Where the signing key lives; `None`: no configuration directory, heads are not signed.
    key_dir: Option<PathBuf>,
    /// Loaded (or created) on the first head; `None` when that failed (logged once).
    key: OnceLock<Option<key::ChainKey>>,
    /// One lock per job, held (on a blocking thread) around a file write and its record.
    jobs: Mutex<HashMap<String, Arc<Mutex<JobChain>>>>,
}

impl std::fmt::Debug for key::ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

/// One job's chain as this process appends to it; opened on the job's first write.
#[derive(Debug, Default)]
struct JobChain {
    open: Option<OpenChain>,
    /// An append failed (a full disk, a file-size limit): this process records nothing more
    /// of the job, so what it writes after stays the chain's tail, a cut the next writer
    /// adopts. The data write that the record was for still succeeded, and says so.
    broken: bool,
}

#[derive(Debug)]
struct OpenChain {
    file: File,
    /// The next record's `n`.
    n: u64,
    /// Hash of the last record's line.
    last: String,
    /// The runtime side log, opened for appending.
    runtime: File,
    /// Lines in the runtime side log.
    runtime_lines: u64,
    /// Whether the audit directory has been fsynced since this process created it.
    dir_synced: bool,
}

impl Chains {
    /// Chains signed with the key in `key_dir`.
    pub(crate) fn new(key_dir: Option<PathBuf>) -> Chains {
        Chains {
            key_dir,
            key: OnceLock::new(),
            jobs: Mutex::new(HashMap::new()),
        }
    }

    fn job(&self, job_id: &str) -> Arc<Mutex<JobChain>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(jobs.entry(job_id.to_owned()).or_default())
    }

    /// Closes job `job_id`'s chain files and drops its state (the job's claim was released). A
    /// later write of the job opens the chain again from disk.
    pub(crate) fn forget(&self, job_id: &str) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.remove(job_id);
    }

    /// How many jobs' chain state this store holds.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn key(&self) -> Option<&key::ChainKey> {
        self.key
            .get_or_init(|| {
                let dir = self.key_dir.as_ref()?;
                match key::ChainKey::load_or_create(dir) {
                    Ok(key) => Some(key),
                    Err(e) => {
                        tracing::warn!(error = %e, dir = %dir.display(), "cannot load or create the chain signing key; job chains are not signed");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Runs `write` (which writes one file of job `job_id` and says what it wrote), then appends
    /// the file's record, both under the job's chain lock. Blocking. Only `write`'s failure is
    /// returned: once the file is written, the write has happened; a record that cannot be
    /// appended breaks the job's chain in this process instead (see `JobChain::broken`).
    pub(crate) fn covered<T>(
        &self,
        job_id: &str,
        job_dir: &Path,
        write: impl FnOnce() -> Result<(T, Covered), StoreError>,
    ) -> Result<T, StoreError> {
        let job = self.job(job_id);
        let mut job = job.lock().unwrap_or_else(|p| p.into_inner());
        self.opened(&mut job, job_id, job_dir);
        let (value, entry) = write()?;
        self.record(&mut job, job_id, job_dir, |open, key| {
            let redacted_sha256 = entry
                .path
                .ends_with("/run-setting.json")
                .then(|| redact_run_setting(&entry.bytes).map(|b| sha256_hex(&b)))
                .flatten();
            open.append(
                job_dir,
                Body::File {
                    sha256: sha256_hex(&entry.bytes),
                    path: entry.path,
                    job_seq: entry.job_seq,
                    redacted_sha256,
                },
            )?;
            match entry.then {
                Then::Nothing => {}
                Then::Sign => open.sign(job_id, job_dir, key)?,
                Then::Close(status) => {
                    open.append(job_dir, Body::Closed { status })?;
                    open.sign(job_id, job_dir, key)?;
                    open.sync(job_dir)?;
                }
            }
            Ok(())
        });
        Ok(value)
    }

    /// Opens the job's chain unless it is open or broken; a failure breaks it.
    fn opened(&self, job: &mut JobChain, job_id: &str, job_dir: &Path) {
        if job.open.is_some() || job.broken {
            return;
        }
        match self.open_chain(job_id, job_dir) {
            Ok(open) => job.open = Some(open),
            Err(e) => self.break_chain(job, job_id, &e),
        }
    }

    /// Runs `append` on the job's open chain; a failure breaks the chain (logged once).
    fn record(
        &self,
        job: &mut JobChain,
        job_id: &str,
        job_dir: &Path,
        append: impl FnOnce(&mut OpenChain, Option<&key::ChainKey>) -> Result<(), StoreError>,
    ) {
        self.opened(job, job_id, job_dir);
        let Some(open) = job.open.as_mut() else {
            return;
        };
        if let Err(e) = append(open, self.key()) {
            self.break_chain(job, job_id, &e);
        }
    }

    fn break_chain(&self, job: &mut JobChain, job_id: &str, error: &StoreError) {
        tracing::warn!(job = job_id, error = %error, "cannot append to the job's chain; the rest of this job's writes here stay unrecorded (verification reports a cut)");
        job.open = None;
        job.broken = true;
    }

    /// Appends `line` (one JSON runtime event, no newline) to the job's runtime side log and
    /// chains it. Blocking; a failure breaks the chain like [`Chains::covered`]'s.
    pub(crate) fn runtime(
        &self,
        job_id: &str,
        job_dir: &Path,
        line: &[u8],
    ) -> Result<(), StoreError> {
        let job = self.job(job_id);
        let mut job = job.lock().unwrap_or_else(|p| p.into_inner());
        self.record(&mut job, job_id, job_dir, |open, _| {
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.extend_from_slice(line);
            bytes.push(b'\n');
            let path = job_dir.join(RUNTIME_FILE);
            open.runtime.write_all(&bytes).map_err(io_error(&path))?;
            let index = open.runtime_lines;
            open.runtime_lines += 1;
            let job_seq = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("jobSeq").and_then(serde_json::Value::as_u64));
            open.append(
                job_dir,
                Body::File {
                    path: runtime_line_path(index),
                    sha256: sha256_hex(line),
                    job_seq,
                    redacted_sha256: None,
                },
            )
        });
        Ok(())
    }

    fn open_chain(&self, job_id: &str, job_dir: &Path) -> Result<OpenChain, StoreError> {
        let audit = job_dir.join(AUDIT_DIR);
        fs::create_dir_all(&audit).map_err(io_error(&audit))?;
        let chain_path = job_dir.join(CHAIN_FILE);
        let (file, kept) = open_append_whole_lines(&chain_path)?;
        let (mut n, mut last) = (0, GENESIS.to_owned());
        let mut records = Vec::new();
        for line in kept.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            last = sha256_hex(line);
            n += 1;
            if let Ok(record) = serde_json::from_slice::<Record>(line) {
                records.push(record);
            }
        }
        let runtime_path = job_dir.join(RUNTIME_FILE);
        let (runtime, runtime_kept) = open_append_whole_lines(&runtime_path)?;
        let runtime_lines = runtime_kept.iter().filter(|b| **b == b'\n').count() as u64;
        let mut open = OpenChain {
            file,
            n,
            last,
            runtime,
            runtime_lines,
            dir_synced: false,
        };
        let files = load_dir(job_id, job_dir)?;
        let unrecorded = verify::unrecorded(&files, &records);
        if !unrecorded.is_empty() {
            open.append(job_dir, Body::Recovered { files: unrecorded })?;
            open.sign(job_id, job_dir, self.key())?;
        }
        Ok(open)
    }
}

/// The chain's name for line `index` (from 0) of the runtime side log.
pub(crate) fn runtime_line_path(index: u64) -> String {
    format!("{RUNTIME_FILE}#{index}")
}

/// Opens `path` for appending (created when missing) after cutting off a torn last line, and
/// returns it with the bytes kept.
fn open_append_whole_lines(path: &Path) -> Result<(File, Vec<u8>), StoreError> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error(path)(e)),
    };
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error(path))?;
    if whole < bytes.len() {
        file.set_len(whole as u64).map_err(io_error(path))?;
        bytes.truncate(whole);
    }
    Ok((file, bytes))
}

impl OpenChain {
    /// Appends one record (one `write`, not fsynced).
    fn append(&mut self, job_dir: &Path, body: Body) -> Result<(), StoreError> {
        let record = Record {
            n: self.n,
            prev: std::mem::take(&mut self.last),
            at: now_ms(),
            body,
        };
        let mut line = serde_json::to_vec(&record).map_err(|source| StoreError::Serialize {
            what: "chain record",
            source,
        })?;
        self.last = sha256_hex(&line);
        self.n += 1;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(io_error(&job_dir.join(CHAIN_FILE)))
    }

    /// Appends a head signing everything so far (nothing without a key).
    fn sign(
        &mut self,
        job_id: &str,
        job_dir: &Path,
        key: Option<&key::ChainKey>,
    ) -> Result<(), StoreError> {
        let Some(key) = key else {
            return Ok(());
        };
        let sig = key.sign(&head_message(job_id, self.n, &self.last));
        self.append(
            job_dir,
            Body::Head {
                key: key.public_hex(),
                sig,
            },
        )
    }

    /// Makes the chain and the side log durable.
    fn sync(&mut self, job_dir: &Path) -> Result<(), StoreError> {
        self.runtime
            .sync_data()
            .map_err(io_error(&job_dir.join(RUNTIME_FILE)))?;
        self.file
            .sync_data()
            .map_err(io_error(&job_dir.join(CHAIN_FILE)))?;
        if !self.dir_synced {
            let audit = job_dir.join(AUDIT_DIR);
            File::open(&audit)
                .and_then(|d| d.sync_all())
                .map_err(io_error(&audit))?;
            self.dir_synced = true;
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
