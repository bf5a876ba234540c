//! [`Claim`]: the right to write one job. One writer per job: a second process (or a second
//! engine in the same process) that tries to run or continue a job that is being written is
//! refused with [`StoreError::Claimed`](super::StoreError::Claimed), naming the holder.
//!
//! Each store decides how a claim is held: [`FsStorage`](super::FsStorage) takes an exclusive
//! `flock` on `jobs/<jobId>/writer.lock` (the kernel drops it when the holder dies, so a lock
//! left by a `kill -9` needs no clean-up and the next claimant simply takes it);
//! [`MemoryStorage`](super::MemoryStorage) keeps a set of claimed job ids. The claim is
//! released when the value is dropped: the job actor holds it for the job's whole life.
//!
//! The fencing token grows by one with every claim of the same job, so a store that checks
//! writes against it (a lease in a cluster store) can tell a stale holder from the current one.

use std::any::Any;
use std::fmt;

/// The right to write one job, held until dropped.
pub struct Claim {
    job_id: String,
    token: u64,
    /// Whatever keeps the claim held (an open, locked file; a map entry's guard). Released by
    /// its own `Drop`.
    _hold: Box<dyn Any + Send + Sync>,
}

impl Claim {
    /// A claim of `job_id` with fencing `token`, held until `hold` is dropped. For
    /// [`Storage`](super::Storage) implementations.
    pub fn new(job_id: impl Into<String>, token: u64, hold: impl Any + Send + Sync) -> Self {
        Claim {
            job_id: job_id.into(),
            token,
            _hold: Box::new(hold),
        }
    }

    /// The job this claim is for.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The fencing token: larger than that of every earlier claim of the same job in this
    /// store.
    pub fn token(&self) -> u64 {
        self.token
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("job_id", &self.job_id)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Who holds a claim, as written into the lock file and named in errors: `pid <pid> on
/// <host>`.
pub(crate) fn holder_description() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".to_owned());
    format!("pid {} on {host}", std::process::id())
}
