//! [`Claim`]: the right to write one job. One writer per job: a second process (or a second
//! engine in the same process) that tries to run or continue a job that is being written is
//! refused with [`StoreError::Claimed`](super::StoreError::Claimed), naming the holder.
//!
//! Each store decides how a claim is held: [`FsStorage`](super::FsStorage) takes an exclusive
//! `flock` on `jobs/<jobId>/writer.lock` (the kernel drops it when the holder dies, so a lock
//! left by a `kill -9` needs no clean-up and the next claimant simply takes it);
//! [`MemoryStorage`](super::MemoryStorage) keeps a set of claimed job ids. The claim is
//! released when the value is dropped: the job task holds it for the job's whole life.
//!
//! [`JetStreamStorage`](super::JetStreamStorage) holds a lease that can be lost while the
//! claim lives (a paused or cut-off holder whose lease expired): [`Claim::lost`] resolves then,
//! so the job can stop; the other stores' claims are never lost.
//!
//! The fencing token grows with every claim of the same job, so a store that checks writes
//! against it (a lease in a cluster store) can tell a stale holder from the current one.

use std::any::Any;
use std::fmt;
use std::future::Future;

use tokio::sync::watch;

/// The right to write one job, held until dropped.
pub struct Claim {
    job_id: String,
    token: u64,
    /// Whatever keeps the claim held (an open, locked file; a map entry's guard). Released by
    /// its own `Drop`.
    _hold: Box<dyn Any + Send + Sync>,
    /// Becomes `true` when the store learns the claim was lost; `None` for stores whose claims
    /// cannot be lost while held.
    lost: Option<watch::Receiver<bool>>,
}

impl Claim {
    /// A claim of `job_id` with fencing `token`, held until `hold` is dropped. For
    /// [`Storage`](super::Storage) implementations.
    pub fn new(job_id: impl Into<String>, token: u64, hold: impl Any + Send + Sync) -> Self {
        Claim {
            job_id: job_id.into(),
            token,
            _hold: Box::new(hold),
            lost: None,
        }
    }

    /// The same claim, lost when `lost` becomes `true` (or its sender is dropped). For stores
    /// whose claim is a lease.
    pub fn with_loss_signal(mut self, lost: watch::Receiver<bool>) -> Self {
        self.lost = Some(lost);
        self
    }

    /// Whether the store knows the claim was lost: the job's writes are refused from now on.
    pub fn is_lost(&self) -> bool {
        self.lost.as_ref().is_some_and(|lost| *lost.borrow())
    }

    /// Resolves to `true` when the claim is lost, or to `false` once it can no longer be
    /// (released, or a store whose claims cannot be lost: at once). Owns what it needs, so it
    /// can be awaited on another task while the claim is held elsewhere.
    pub fn lost(&self) -> impl Future<Output = bool> + Send + 'static {
        let lost = self.lost.clone();
        async move {
            match lost {
                Some(mut lost) => lost.wait_for(|lost| *lost).await.is_ok(),
                None => false,
            }
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
            .field("lost", &self.is_lost())
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
