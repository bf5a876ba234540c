//! The audit export: one self-contained JSON file holding a job's files (events, checkpoints,
//! `job.json`, run settings without secrets, the runtime side log), its chain with the signed
//! heads, and the public key, which `perstack log --verify <file>` checks anywhere.
//!
//! Run settings are exported redacted ([`super::redact_run_setting`]); the chain records the
//! hash of that form too, so the redacted file still verifies. The archive's public key says
//! who signed it; only a key the reader already trusts (`--key`) proves it.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{Body, JobFiles, Record, load_dir, redact_run_setting};
use crate::storage::StoreError;

/// The archive's `format`.
const FORMAT: &str = "perstack-audit/1";

/// The archive on disk.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Archive {
    format: String,
    job_id: String,
    /// The key of the chain's last head (hex), if it is signed.
    public_key: Option<String>,
    /// `audit/chain.jsonl`, base64.
    chain: Option<String>,
    /// Path relative to the job directory → content, base64.
    files: BTreeMap<String, String>,
}

/// Why an archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    /// Not JSON of the expected shape.
    #[error("not a perstack audit archive: {0}")]
    Shape(#[from] serde_json::Error),
    /// Another format.
    #[error("unsupported archive format {0:?} (expected {FORMAT:?})")]
    Format(String),
    /// A content is not base64.
    #[error("archive entry {0} is not base64")]
    Base64(String),
    /// The signer's key in the archive is not the one its chain is signed with.
    #[error("the archive names key {named} but its chain is signed by {signed}")]
    KeyMismatch {
        /// The archive's `publicKey`.
        named: String,
        /// The key of the chain's last head.
        signed: String,
    },
}

/// The archive of job `job_id` in `job_dir`, as bytes. Blocking.
pub(crate) fn export_job(job_id: &str, job_dir: &Path) -> Result<Vec<u8>, StoreError> {
    let files = load_dir(job_id, job_dir)?;
    let archive = Archive {
        format: FORMAT.to_owned(),
        job_id: job_id.to_owned(),
        public_key: files.chain.as_deref().and_then(last_key),
        chain: files.chain.as_ref().map(|c| STANDARD.encode(c)),
        files: files
            .files
            .iter()
            .map(|(path, bytes)| {
                let bytes = if path.ends_with("/run-setting.json") {
                    redact_run_setting(bytes).unwrap_or_else(|| bytes.clone())
                } else {
                    bytes.clone()
                };
                (path.clone(), STANDARD.encode(bytes))
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&archive).map_err(|source| StoreError::Serialize {
        what: "audit archive",
        source,
    })
}

/// An archive's files and chain, and the key it names.
pub(crate) fn import_archive(bytes: &[u8]) -> Result<(JobFiles, Option<String>), ArchiveError> {
    let archive: Archive = serde_json::from_slice(bytes)?;
    if archive.format != FORMAT {
        return Err(ArchiveError::Format(archive.format));
    }
    let decode = |what: &str, text: &str| {
        STANDARD
            .decode(text)
            .map_err(|_| ArchiveError::Base64(what.to_owned()))
    };
    let mut files = BTreeMap::new();
    for (path, text) in &archive.files {
        files.insert(path.clone(), decode(path, text)?);
    }
    let chain = archive
        .chain
        .as_deref()
        .map(|c| decode("chain", c))
        .transpose()?;
    if let (Some(named), Some(signed)) = (&archive.public_key, chain.as_deref().and_then(last_key))
        && *named != signed
    {
        return Err(ArchiveError::KeyMismatch {
            named: named.clone(),
            signed,
        });
    }
    Ok((
        JobFiles {
            job_id: archive.job_id,
            files,
            chain,
        },
        archive.public_key,
    ))
}

/// The key of the last head record of a chain.
fn last_key(chain: &[u8]) -> Option<String> {
    chain
        .split(|b| *b == b'\n')
        .rev()
        .filter_map(|line| serde_json::from_slice::<Record>(line).ok())
        .find_map(|r| match r.body {
            Body::Head { key, .. } => Some(key),
            _ => None,
        })
}
