//! Checking a job against its chain: every file changed, removed, added or moved is named; a
//! chain cut by a crash (records, a head or the last line missing at the tail) is a cut, not
//! tampering; a job without a chain (written by Perstack) is unchained.
//!
//! Works on a [`JobFiles`] in memory, loaded from a job directory ([`load_dir`]) or from an
//! export ([`super::import_archive`]), so both are checked by the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use super::{
    AUDIT_DIR, Adopted, Body, CHAIN_FILE, GENESIS, RUNTIME_FILE, Record, head_message,
    key::verify_signature, runtime_line_path, sha256_hex,
};
use crate::storage::StoreError;
use crate::storage::atomic::{io_error, is_temp};

/// A job's files and chain, as bytes.
#[derive(Debug, Default)]
pub(crate) struct JobFiles {
    /// The job's id (heads sign it).
    pub job_id: String,
    /// Every file the chain covers or could cover, by path relative to the job's directory;
    /// the runtime side log's lines as `audit/runtime.jsonl#<i>`.
    pub files: BTreeMap<String, Vec<u8>>,
    /// `audit/chain.jsonl`, if there is one.
    pub chain: Option<Vec<u8>>,
}

/// Loads a job directory: `job.json`, `checkpoints/*`, `runs/<runId>/*` and the runtime side
/// log's lines (temp files, the writer lock and the chain itself aside). Blocking.
pub(crate) fn load_dir(job_id: &str, job_dir: &Path) -> Result<JobFiles, StoreError> {
    let mut files = BTreeMap::new();
    walk(job_dir, "", &mut files)?;
    let runtime = read_optional(&job_dir.join(RUNTIME_FILE))?;
    if let Some(runtime) = runtime {
        // Only whole lines: a torn last line is a cut the writer removes.
        let whole = runtime
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let count = runtime[..whole].iter().filter(|b| **b == b'\n').count();
        for (i, line) in runtime[..whole]
            .split(|b| *b == b'\n')
            .take(count)
            .enumerate()
        {
            files.insert(runtime_line_path(i as u64), line.to_vec());
        }
    }
    Ok(JobFiles {
        job_id: job_id.to_owned(),
        files,
        chain: read_optional(&job_dir.join(CHAIN_FILE))?,
    })
}

fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) -> Result<(), StoreError> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    for entry in read {
        let entry = entry.map_err(io_error(dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_temp(&name) || (prefix.is_empty() && (name == AUDIT_DIR || name == "writer.lock")) {
            continue;
        }
        let path = entry.path();
        let rel = format!("{prefix}{name}");
        if path.is_dir() {
            walk(&path, &format!("{rel}/"), out)?;
        } else {
            out.insert(rel, fs::read(&path).map_err(io_error(&path))?);
        }
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// One thing verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finding {
    /// A recorded file's content differs from its last record.
    Changed(String),
    /// A recorded file is gone.
    Removed(String),
    /// A file no record covers, and no crash explains.
    Added(String),
    /// A file holds what was recorded for another path (files swapped or renamed).
    Moved {
        /// The file.
        path: String,
        /// The path its content was recorded under.
        recorded_as: String,
    },
    /// A chain record does not follow the one before (edited, removed, inserted, reordered).
    ChainBroken {
        /// The record's position.
        record: u64,
        /// What is wrong.
        why: String,
    },
    /// A head's signature does not match the chain before it.
    BadSignature {
        /// The head's position.
        record: u64,
    },
    /// A head is signed by a key that is not the trusted one.
    UntrustedKey {
        /// The head's key.
        key: String,
        /// The key it should have been.
        trusted: String,
    },
    /// The tail a crash can lose is missing: these files have no record yet, or the last
    /// records have no signed head. Not tampering.
    Cut {
        /// The files written after the chain's last record.
        files: Vec<String>,
        /// Records after the last signed head.
        unsigned: u64,
    },
    /// A writer that continued the job adopted these files after a crash (informational).
    Adopted {
        /// The `recovered` record.
        record: u64,
        /// The files it adopted.
        files: Vec<String>,
    },
}

impl Finding {
    /// Whether this finding means the history was tampered with (exit 1).
    pub(crate) fn is_tampering(&self) -> bool {
        !matches!(self, Finding::Cut { .. } | Finding::Adopted { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Changed(p) => write!(f, "changed: {p}"),
            Finding::Removed(p) => write!(f, "removed: {p}"),
            Finding::Added(p) => write!(f, "added: {p}"),
            Finding::Moved { path, recorded_as } => {
                write!(
                    f,
                    "reordered: {path} holds what was written as {recorded_as}"
                )
            }
            Finding::ChainBroken { record, why } => write!(f, "chain record {record}: {why}"),
            Finding::BadSignature { record } => {
                write!(
                    f,
                    "chain head {record}: the signature does not match the chain"
                )
            }
            Finding::UntrustedKey { key, trusted } => write!(
                f,
                "chain signed by key {key}, not by the trusted key {trusted} (re-signed?)"
            ),
            Finding::Cut { files, unsigned } => {
                write!(
                    f,
                    "cut by a crash (not tampering): {} file(s) written after the last record",
                    files.len()
                )?;
                if *unsigned > 0 {
                    write!(f, ", {unsigned} record(s) after the last signed head")?;
                }
                for file in files {
                    write!(f, "\n    {file}")?;
                }
                Ok(())
            }
            Finding::Adopted { record, files } => write!(
                f,
                "recovered after a crash (record {record}) adopting: {}",
                files.join(", ")
            ),
        }
    }
}

/// The verdict on one job.
#[derive(Debug)]
pub(crate) struct Report {
    /// The job.
    pub job_id: String,
    /// `false` for a job without a chain (written by Perstack, or before chains existed).
    pub chained: bool,
    /// Records read.
    pub records: u64,
    /// The key its heads are signed with, if any.
    pub key: Option<String>,
    /// Everything found, tampering first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether anything found is tampering.
    pub(crate) fn tampered(&self) -> bool {
        self.findings.iter().any(Finding::is_tampering)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if !self.chained {
            "unchained (no chain: written by Perstack or before chains; nothing to check)"
        } else if self.tampered() {
            "TAMPERED"
        } else if self
            .findings
            .iter()
            .any(|x| matches!(x, Finding::Cut { .. }))
        {
            "intact, cut by a crash"
        } else {
            "intact"
        };
        write!(f, "job {}: {verdict}", self.job_id)?;
        if self.chained {
            write!(f, " ({} records", self.records)?;
            match &self.key {
                Some(key) => write!(f, ", signed by {key})")?,
                None => write!(f, ", unsigned)")?,
            }
        }
        for finding in &self.findings {
            write!(f, "\n  {finding}")?;
        }
        Ok(())
    }
}

/// What the chain says a path should hold.
struct Expected {
    sha256: String,
    redacted: Option<String>,
}

impl Expected {
    fn matches(&self, sha: &str) -> bool {
        self.sha256 == sha || self.redacted.as_deref() == Some(sha)
    }
}

/// The files a writer opening the chain (`records`) finds unrecorded or changed: what a
/// `recovered` record adopts.
pub(crate) fn unrecorded(files: &JobFiles, records: &[Record]) -> Vec<Adopted> {
    let expected = expected(records);
    files
        .files
        .iter()
        .filter_map(|(path, bytes)| {
            let sha = sha256_hex(bytes);
            let known = expected.get(path).is_some_and(|e| e.matches(&sha));
            (!known).then(|| Adopted {
                path: path.clone(),
                sha256: sha,
            })
        })
        .collect()
}

/// The last recorded content of every path.
fn expected(records: &[Record]) -> BTreeMap<String, Expected> {
    let mut map = BTreeMap::new();
    for record in records {
        match &record.body {
            Body::File {
                path,
                sha256,
                redacted_sha256,
                ..
            } => {
                map.insert(
                    path.clone(),
                    Expected {
                        sha256: sha256.clone(),
                        redacted: redacted_sha256.clone(),
                    },
                );
            }
            Body::Recovered { files } => {
                for file in files {
                    map.insert(
                        file.path.clone(),
                        Expected {
                            sha256: file.sha256.clone(),
                            redacted: None,
                        },
                    );
                }
            }
            Body::Closed { .. } | Body::Head { .. } => {}
        }
    }
    map
}

/// Checks `files` against their chain. `trusted`: the public key (hex) heads must be signed
/// with; without one, the chain's own key is reported and used.
pub(crate) fn verify(files: &JobFiles, trusted: Option<&str>) -> Report {
    let mut report = Report {
        job_id: files.job_id.clone(),
        chained: files.chain.is_some(),
        records: 0,
        key: None,
        findings: Vec::new(),
    };
    let Some(chain) = &files.chain else {
        return report;
    };
    let mut findings = Vec::new();
    let mut records = Vec::new();
    // Records after the last good head, and whether one of them needed a head right after
    // it (a checkpoint, a `recovered` or `closed` record): only the very last may lack it.
    let mut heads: Vec<usize> = Vec::new();
    let mut last = GENESIS.to_owned();
    let mut lines = chain.split(|b| *b == b'\n').peekable();
    let mut n = 0u64;
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            // After the final newline: empty, or a torn last line (a crash mid-append).
            break;
        }
        let hash = sha256_hex(line);
        let record = match serde_json::from_slice::<Record>(line) {
            Ok(record) => record,
            Err(e) => {
                findings.push(Finding::ChainBroken {
                    record: n,
                    why: format!("not a chain record ({e})"),
                });
                last = hash;
                n += 1;
                continue;
            }
        };
        if record.n != n || record.prev != last {
            findings.push(Finding::ChainBroken {
                record: n,
                why: "does not follow the record before it (records edited, removed, inserted or reordered)".into(),
            });
        }
        if let Body::Head { key, .. } = &record.body {
            if let Some(trusted) = trusted.or(report.key.as_deref())
                && trusted != key
            {
                findings.push(Finding::UntrustedKey {
                    key: key.clone(),
                    trusted: trusted.to_owned(),
                });
            } else {
                report.key = Some(key.clone());
                heads.push(records.len());
            }
        }
        records.push(record);
        last = hash;
        n += 1;
    }
    report.records = n;
    // The hash links tie every record to the next, so the last head whose signature holds
    // vouches for everything before it: only that one is checked (an Ed25519 verification
    // per head would dominate the time on a long job).
    let mut signed_upto = None;
    for &i in heads.iter().rev() {
        let record = &records[i];
        let Body::Head { key, sig } = &record.body else {
            continue;
        };
        if verify_signature(
            key,
            &head_message(&files.job_id, record.n, &record.prev),
            sig,
        ) {
            signed_upto = Some(i);
            break;
        }
        findings.push(Finding::BadSignature { record: record.n });
    }
    if signed_upto.is_none() {
        report.key = None;
    }
    let unsigned: Vec<usize> = (signed_upto.map_or(0, |i| i + 1)..records.len())
        .filter(|&i| !matches!(records[i].body, Body::Head { .. }))
        .collect();
    // A head follows every checkpoint, `recovered` and `closed` record at once, under the same
    // lock: in the unsigned tail, only the last record may be one of those.
    let needs_head = |r: &Record| match &r.body {
        Body::File { path, .. } => path.starts_with("checkpoints/"),
        Body::Recovered { .. } | Body::Closed { .. } => true,
        Body::Head { .. } => false,
    };
    if trusted.is_some() || report.key.is_some() {
        for (i, r) in unsigned.iter().map(|&i| &records[i]).enumerate() {
            if needs_head(r) && i + 1 < unsigned.len() {
                findings.push(Finding::ChainBroken {
                    record: r.n,
                    why: "no signed head follows it, yet records do (heads removed?)".into(),
                });
            }
        }
    }
    let closed = records
        .iter()
        .rev()
        .find(|r| !matches!(r.body, Body::Head { .. }))
        .is_some_and(|r| matches!(r.body, Body::Closed { .. }));
    let max_seq = records
        .iter()
        .filter_map(|r| match &r.body {
            Body::File { job_seq, .. } => *job_seq,
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let expected = expected(&records);
    let recorded_runs: BTreeSet<&str> = expected.keys().filter_map(|p| run_of(p)).collect();
    // A file a crash can leave unrecorded: the job did not close, and the file is not older
    // than every record (its jobSeq), or is the run setting of a run nothing was recorded for.
    let after_cut = |path: &str, bytes: &[u8]| {
        !closed
            && match job_seq_of(bytes) {
                // `>=`: a checkpoint and the event carrying it share a jobSeq, the checkpoint
                // stored first.
                Some(seq) => seq >= max_seq,
                None => {
                    path.ends_with("/run-setting.json")
                        && run_of(path).is_some_and(|r| !recorded_runs.contains(r))
                }
            }
    };
    let actual: BTreeMap<&str, String> = files
        .files
        .iter()
        .map(|(p, b)| (p.as_str(), sha256_hex(b)))
        .collect();
    let mut cut = Vec::new();
    let mut moved_from = BTreeSet::new();
    let recorded_as = |sha: &str, not: &str| {
        expected
            .iter()
            .find(|(p, e)| {
                p.as_str() != not
                    && e.matches(sha)
                    && actual.get(p.as_str()).is_none_or(|a| !e.matches(a))
            })
            .map(|(p, _)| p.clone())
    };
    for (path, sha) in &actual {
        match expected.get(*path) {
            Some(e) if e.matches(sha) => {}
            found => {
                if let Some(other) = recorded_as(sha, path) {
                    moved_from.insert(other.clone());
                    findings.push(Finding::Moved {
                        path: (*path).to_owned(),
                        recorded_as: other,
                    });
                } else if after_cut(path, &files.files[*path]) {
                    cut.push((*path).to_owned());
                } else if found.is_some() {
                    findings.push(Finding::Changed((*path).to_owned()));
                } else {
                    findings.push(Finding::Added((*path).to_owned()));
                }
            }
        }
    }
    for path in expected.keys() {
        if !actual.contains_key(path.as_str()) && !moved_from.contains(path) {
            findings.push(Finding::Removed(path.clone()));
        }
    }
    let unsigned_count = if report.key.is_some() {
        unsigned.len() as u64
    } else {
        0
    };
    if !cut.is_empty() || unsigned_count > 0 || chain.last().is_some_and(|b| *b != b'\n') {
        findings.push(Finding::Cut {
            files: cut,
            unsigned: unsigned_count,
        });
    }
    for r in &records {
        if let Body::Recovered { files } = &r.body {
            findings.push(Finding::Adopted {
                record: r.n,
                files: files.iter().map(|f| f.path.clone()).collect(),
            });
        }
    }
    findings.sort_by_key(|f| !f.is_tampering());
    report.findings = findings;
    report
}

/// The run a path belongs to (`runs/<runId>/...`).
fn run_of(path: &str) -> Option<&str> {
    path.strip_prefix("runs/")?.split('/').next()
}

/// The `jobSeq` of a stored JSON record.
fn job_seq_of(bytes: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        #[serde(rename = "jobSeq")]
        job_seq: Option<u64>,
    }
    serde_json::from_slice::<Seq>(bytes).ok()?.job_seq
}
