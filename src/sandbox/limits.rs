//! Resource limits of a sandboxed process tree: the one place their values live.
//!
//! Applied by the trampoline as PID 1 of the sandbox's PID namespace, before it drops its
//! capabilities, and inherited by everything the program starts.
//!
//! Processes are bounded twice: `RLIMIT_NPROC` (counted per user in the sandbox's user
//! namespace; the kernel does not enforce it when the engine runs as root) and the PID
//! namespace's own `pid_max` (Linux 6.14+, enforced for everyone): a fork bomb stops at the
//! limit instead of taking the machine down.

use std::fmt;

use nix::sys::resource::{Resource, setrlimit};
use serde::{Deserialize, Serialize};

/// Processes and threads (a Node server runs about a dozen threads) per sandbox.
const PROCESSES: u64 = 512;
/// Largest file a process may write: 4 GiB (`SIGXFSZ` past it).
const FILE_SIZE_BYTES: u64 = 4 << 30;
/// CPU seconds per process: an hour (`SIGXCPU`, then `SIGKILL` 5 s later).
const CPU_SECONDS: u64 = 3600;
/// The kernel's smallest accepted `pid_max`.
const MIN_PID_MAX: u64 = 301;

/// The limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Limits {
    /// Processes and threads at once. At the limit `fork` fails with `EAGAIN`.
    pub(crate) processes: u64,
    /// Largest file size in bytes. Past it the write fails and `SIGXFSZ` is sent.
    pub(crate) file_size_bytes: u64,
    /// CPU time per process in seconds. Past it `SIGXCPU`, then `SIGKILL`.
    pub(crate) cpu_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            processes: PROCESSES,
            file_size_bytes: FILE_SIZE_BYTES,
            cpu_seconds: CPU_SECONDS,
        }
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} processes, files up to {} bytes, {} s of CPU per process",
            self.processes, self.file_size_bytes, self.cpu_seconds
        )
    }
}

/// Applies `limits` to this process (inherited by its children) and to its PID namespace,
/// whose `/proc` must be mounted.
pub(super) fn apply(limits: &Limits) -> Result<(), super::trampoline::SetupError> {
    use super::trampoline::SetupError;
    let nproc = limits.processes;
    setrlimit(Resource::RLIMIT_NPROC, nproc, nproc)
        .map_err(|e| SetupError::new("RLIMIT_NPROC", e))?;
    setrlimit(
        Resource::RLIMIT_FSIZE,
        limits.file_size_bytes,
        limits.file_size_bytes,
    )
    .map_err(|e| SetupError::new("RLIMIT_FSIZE", e))?;
    setrlimit(
        Resource::RLIMIT_CPU,
        limits.cpu_seconds,
        limits.cpu_seconds.saturating_add(5),
    )
    .map_err(|e| SetupError::new("RLIMIT_CPU", e))?;
    // PIDs of the namespace: `pid_max` bounds the PID numbers, so the processes alive at once.
    let pid_max = nproc.saturating_add(1).max(MIN_PID_MAX);
    std::fs::write("/proc/sys/kernel/pid_max", pid_max.to_string())
        .map_err(|e| SetupError::io("the PID namespace's pid_max", e))?;
    Ok(())
}
