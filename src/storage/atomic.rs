//! Crash-safe file writes: a temp file in the target's directory, then rename or link.
//!
//! A reader (or a restarted engine) sees either no file, the old file or the complete new one,
//! never a torn one. Temp files are named `.tmp-<random>`; listings skip them, so one left
//! behind by a crash is harmless. Everything here is blocking and runs on tokio's blocking pool.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::schema::id::new_id;

/// Prefix of every temp file; listings ignore names that start with it.
pub(super) const TEMP_PREFIX: &str = ".tmp-";

/// How many names [`create_unique`] tries before giving up: one per millisecond of drift, so a
/// burst of ten thousand same-millisecond events of one type and step still finds a name.
const MAX_NAME_ATTEMPTS: u64 = 10_000;

/// Maps an I/O error on `path` to [`StoreError::Io`].
pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a directory entry is a temp file of this module.
pub(super) fn is_temp(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// Writes `bytes` to `path`, replacing any previous file atomically.
///
/// With `durable`, the data is fsynced before the rename and the directory after it, so the new
/// file survives a power loss once this returns; directories it had to create are synced too.
pub(super) fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
    let dir = parent(path);
    ensure_dir(dir, durable)?;
    let tmp = write_temp(dir, bytes, durable)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(path)(e));
    }
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Writes `bytes` to the first name `candidate(0)`, `candidate(1)`, ... that does not exist yet,
/// and returns it. Never replaces a file, even when other threads or processes race for the same
/// name: the name is claimed with a hard link, which fails if the target exists. On a file
/// system without hard links the name is first reserved with an exclusive create, then the
/// complete temp file is renamed over the (empty) reservation.
///
/// Nothing is fsynced (see `FsStorage::store_event` for why).
pub(super) fn create_unique(
    dir: &Path,
    bytes: &[u8],
    mut candidate: impl FnMut(u64) -> PathBuf,
) -> Result<PathBuf, StoreError> {
    ensure_dir(dir, false)?;
    let tmp = write_temp(dir, bytes, false)?;
    let result = claim_unique_name(&tmp, &mut candidate, true);
    let _ = fs::remove_file(&tmp);
    result
}

/// The loop of [`create_unique`]; the caller removes `tmp` afterwards (after a rename it is gone
/// already and the removal fails harmlessly).
fn claim_unique_name(
    tmp: &Path,
    candidate: &mut impl FnMut(u64) -> PathBuf,
    mut links_work: bool,
) -> Result<PathBuf, StoreError> {
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let target = candidate(attempt);
        if links_work {
            match fs::hard_link(tmp, &target) {
                Ok(()) => return Ok(target),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                // Most likely a file system without hard links: reserve names instead.
                Err(_) => links_work = false,
            }
        }
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
        {
            Ok(_) => {
                if let Err(e) = fs::rename(tmp, &target) {
                    // Do not leave the empty reservation behind: it would read as corrupt.
                    let _ = fs::remove_file(&target);
                    return Err(io_error(&target)(e));
                }
                return Ok(target);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(&target)(e)),
        }
    }
    let last = candidate(MAX_NAME_ATTEMPTS - 1);
    Err(StoreError::Io {
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free file name left for this event",
        ),
        path: last,
    })
}

/// Creates `dir` and its missing ancestors. With `durable`, syncs the parent of every directory
/// it created, so the new entries survive a power loss.
pub(super) fn ensure_dir(dir: &Path, durable: bool) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    if durable {
        // Deepest first; the outermost parent existed before and gets synced last.
        for created in missing {
            sync_dir(parent(created))?;
        }
    }
    Ok(())
}

/// Writes a new temp file in `dir` and returns its path; fsyncs it when `durable`.
fn write_temp(dir: &Path, bytes: &[u8], durable: bool) -> Result<PathBuf, StoreError> {
    let tmp = dir.join(format!("{TEMP_PREFIX}{}", new_id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            if durable { f.sync_all() } else { Ok(()) }
        });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io_error(&tmp)(e))
        }
    }
}

/// Flushes a directory's entries (new names, renames) to disk. A no-op where directories cannot
/// be opened as files (Windows).
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The directory holding `path`; `.` for a bare relative name.
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replace_creates_directories_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/c.json");
        replace(&path, b"one", true).unwrap();
        replace(&path, b"two", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(names(&tmp.path().join("a/b")), ["c.json"]);
    }

    #[test]
    fn create_unique_never_replaces_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let name = |i: u64| tmp.path().join(format!("f-{i}"));
        assert_eq!(
            create_unique(tmp.path(), b"a", name).unwrap(),
            tmp.path().join("f-0")
        );
        assert_eq!(
            create_unique(tmp.path(), b"b", name).unwrap(),
            tmp.path().join("f-1")
        );
        assert_eq!(fs::read(tmp.path().join("f-0")).unwrap(), b"a");
        assert_eq!(fs::read(tmp.path().join("f-1")).unwrap(), b"b");
        assert_eq!(names(tmp.path()), ["f-0", "f-1"]);
    }

    #[test]
    fn the_reservation_fallback_also_keeps_both_files() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f-0"), b"old").unwrap();
        let t = write_temp(tmp.path(), b"new", false).unwrap();
        let mut name = |i: u64| tmp.path().join(format!("f-{i}"));
        let target = claim_unique_name(&t, &mut name, false).unwrap();
        assert_eq!(target, tmp.path().join("f-1"));
        assert_eq!(fs::read(tmp.path().join("f-0")).unwrap(), b"old");
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(names(tmp.path()), ["f-0", "f-1"]);
    }

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp(".tmp-abc"));
        assert!(!is_temp("event-1-1-callTools.json"));
        assert_eq!(parent(Path::new("x.json")), Path::new("."));
    }
}
