//! The private directory (mode 0700) that holds one egress proxy's Unix socket, and the sweep
//! of directories left behind by engines that died without removing theirs (`kill -9`).
//!
//! Liveness is a lock, not a pid: the proxy holds an exclusive `flock` on the `lock` file in its
//! directory for as long as it runs, and the kernel drops the lock when the process dies,
//! however it dies. Before creating its own directory, a proxy removes every directory of the
//! temp directory whose lock it can take. A pid would not do: engines in other PID namespaces
//! (containers, sandboxes) may share the temp directory, and their pids mean nothing here (a
//! live one could look dead, a dead one alive because its number was reused).
//!
//! Races: a sweeper removes a directory only while holding its lock; a creator takes the lock
//! of its new directory and then checks that the file it locked is still the one at the path
//! (a sweeper may have taken the lock first and removed the directory), trying a new name if
//! not. A directory without a lock file is one being created, unless it is older than
//! [`UNLOCKED_GRACE`] (its creator died between `mkdir` and the lock file's creation).
//!
//! It owns the directory's name, layout and removal; the proxy owns the socket in it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The prefix of the directories: `perstack-egress-<engine pid>-<random>` (the pid is for
/// people reading the temp directory; liveness is the lock).
const DIR_PREFIX: &str = "perstack-egress-";
/// The lock file in each directory.
const LOCK_FILE: &str = "lock";
/// How old a directory without a lock file must be before it counts as abandoned: far longer
/// than a creator takes between `mkdir` and creating the lock file (microseconds).
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);
/// Names tried before giving up (collisions of the random part, or sweepers in the way).
const ATTEMPTS: usize = 8;

/// A proxy's directory, locked; dropping it removes the directory (then releases the lock).
#[derive(Debug)]
pub(crate) struct SocketDir {
    path: PathBuf,
    /// Held, not read: its `flock` tells sweepers that this directory is alive.
    _lock: File,
}

impl SocketDir {
    /// Sweeps `base` of abandoned directories, then creates and locks a fresh one in it.
    ///
    /// # Errors
    ///
    /// The I/O error of creating the directory or its lock file.
    pub(crate) fn create(base: &Path) -> io::Result<SocketDir> {
        sweep(base);
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let path = base.join(format!(
                "{DIR_PREFIX}{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            match lock_new(&path) {
                Ok(Some(lock)) => return Ok(SocketDir { path, _lock: lock }),
                // A sweeper got there first and removed it.
                Ok(None) => {}
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&path);
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no private directory for the proxy")))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        // Removed while still locked, so that no sweeper can see it half gone as abandoned.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Creates and locks the lock file of the new directory `dir`; `None` when a sweeper removed
/// the directory meanwhile.
fn lock_new(dir: &Path) -> io::Result<Option<File>> {
    let path = dir.join(LOCK_FILE);
    let file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    let locked = file.metadata()?;
    let still_there = std::fs::metadata(&path)
        .is_ok_and(|now| now.ino() == locked.ino() && now.dev() == locked.dev());
    Ok(still_there.then_some(file))
}

/// Removes the directories in `base` that no live proxy holds.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if is_ours && entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_if_abandoned(&entry.path());
        }
    }
}

/// Removes `dir` when its lock is free (its proxy is gone), holding the lock meanwhile; or when
/// it has no lock file and is older than [`UNLOCKED_GRACE`]. A directory that cannot be read
/// (another user's) is left alone.
fn remove_if_abandoned(dir: &Path) {
    match File::open(dir.join(LOCK_FILE)) {
        Ok(lock) => {
            if lock.try_lock().is_ok() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let old = std::fs::metadata(dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > UNLOCKED_GRACE));
            if old {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_in(base: &Path, name: &str) -> PathBuf {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("proxy.sock"), "").unwrap();
        dir
    }

    /// Issue 11: liveness is the lock, whatever pid the name carries: a directory of a live
    /// engine in another PID namespace (its pid does not exist here) is kept, one whose engine
    /// is gone is removed even when its pid is alive here (this process's own, standing for a
    /// reused pid).
    #[test]
    fn issue_11_the_sweep_keeps_locked_directories_and_removes_the_others_whatever_their_pid() {
        let base = tempfile::tempdir().unwrap();
        // Above any pid_max: no process here has it; its engine lives elsewhere.
        let live = dir_in(base.path(), "perstack-egress-4294967295-0a11ve00");
        let held = File::create(live.join(LOCK_FILE)).unwrap();
        held.lock().unwrap();
        let dead = dir_in(
            base.path(),
            &format!("perstack-egress-{}-deadbeef", std::process::id()),
        );
        File::create(dead.join(LOCK_FILE)).unwrap();
        let unrelated = dir_in(base.path(), "someone-else");

        let made = SocketDir::create(base.path()).unwrap();
        assert!(live.exists(), "a live engine's directory was removed");
        assert!(!dead.exists(), "a dead engine's directory was kept");
        assert!(unrelated.exists());
        assert!(made.path().join(LOCK_FILE).is_file());

        // Once its engine is gone (the kernel drops the lock), the next start removes it.
        drop(held);
        let again = SocketDir::create(base.path()).unwrap();
        assert!(!live.exists());
        // A live proxy's own directory survives another proxy's sweep.
        assert!(made.path().is_dir());
        let path = again.path().to_owned();
        drop(again);
        assert!(!path.exists(), "dropping removes the directory");
    }

    #[test]
    fn a_directory_without_a_lock_file_is_kept_while_it_may_be_being_created() {
        let base = tempfile::tempdir().unwrap();
        let young = dir_in(base.path(), "perstack-egress-1-00000000");
        let _made = SocketDir::create(base.path()).unwrap();
        assert!(young.exists());
    }
}
