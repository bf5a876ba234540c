//! Where [`FsStorage`](super::FsStorage) puts things and how it reads them back: file names
//! (Perstack's), directory listings without temp files, JSON files that may not exist.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::storage::StoreError;
use crate::storage::atomic::{self, io_error};

pub(super) fn checkpoint_path(job_dir: &Path, checkpoint_id: &str) -> PathBuf {
    job_dir
        .join("checkpoints")
        .join(format!("{checkpoint_id}.json"))
}

/// `event-<timestamp>-<stepNumber>-<type>.json`.
pub(super) fn event_file_name(timestamp: u64, step: u32, kind: &str) -> String {
    format!("event-{timestamp}-{step}-{kind}.json")
}

/// Reads and parses a JSON file; `None` when it does not exist, [`StoreError::Corrupt`] when it
/// exists but does not parse as `T`.
pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// One directory entry that is not a temp file.
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) is_dir: bool,
}

/// The entries of `dir`, without temp files and names that are not UTF-8 (neither is ever
/// written by this store); none when `dir` does not exist.
pub(super) fn entries(dir: &Path) -> Result<Vec<Entry>, StoreError> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(io_error(dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if atomic::is_temp(&name) {
            continue;
        }
        let path = entry.path();
        out.push(Entry {
            is_dir: path.is_dir(),
            name,
            path,
        });
    }
    Ok(out)
}

/// An event file and what its name says.
pub(super) struct EventFile {
    pub(super) path: PathBuf,
    pub(super) timestamp: u64,
    pub(super) step: u32,
    pub(super) kind: String,
}

/// The `event-*` files of a run directory; a name that does not parse is [`StoreError::Corrupt`].
pub(super) fn event_files(run_dir: &Path) -> Result<Vec<EventFile>, StoreError> {
    let mut files = Vec::new();
    for entry in entries(run_dir)? {
        if entry.is_dir || !entry.name.starts_with("event-") {
            continue;
        }
        let Some((timestamp, step, kind)) = parse_event_file_name(&entry.name) else {
            return Err(StoreError::Corrupt {
                path: entry.path,
                message: "event file name is not event-<timestamp>-<stepNumber>-<type>.json"
                    .to_owned(),
            });
        };
        files.push(EventFile {
            timestamp,
            step,
            kind: kind.to_owned(),
            path: entry.path,
        });
    }
    Ok(files)
}

/// Splits `event-<timestamp>-<stepNumber>-<type>.json` on `-`; the type keeps any further `-`.
pub(super) fn parse_event_file_name(name: &str) -> Option<(u64, u32, &str)> {
    let rest = name.strip_prefix("event-")?.strip_suffix(".json")?;
    let mut parts = rest.splitn(3, '-');
    let timestamp = parts.next()?.parse().ok()?;
    let step = parts.next()?.parse().ok()?;
    let kind = parts.next().filter(|k| !k.is_empty())?;
    Some((timestamp, step, kind))
}
