//! The native Linux sandbox: every process the engine starts for an Expert (stdio MCP servers,
//! the base skill's `exec`, `perstack install`'s skill starts) runs confined, unless the
//! configuration says `runtime = "local"`.
//!
//! The launcher (`skill::launcher`) is the only caller: for a confined request it builds
//! a `policy::Policy` from the request and the run's `SandboxScope`, and starts the trampoline
//! (`trampoline`: the small `perstack-sandbox` binary, or the `perstack` binary's hidden
//! `sandbox-exec` subcommand; `probe` decides which) instead of the program. The trampoline,
//! before any thread exists, enters new user, mount, network, IPC and PID namespaces, then, as
//! PID 1 of the new PID namespace:
//!
//! | step | module | what it gives |
//! |---|---|---|
//! | mount view | `mounts` | tmpfs over `$HOME`, `/run/user`, `/tmp`, `/dev/shm`; what the process needs bound back; an empty read-only `<workspace>/perstack`; a fresh `/proc` |
//! | network | `network` | `lo` up and nothing else: no route out but the egress forwarder |
//! | limits | `limits` | processes (and PIDs of the namespace), file size, CPU time |
//! | Landlock | `landlock` | files: the workspace and private temp read-write, system and program paths read-only, nothing else; signals and abstract sockets scoped; capabilities dropped |
//!
//! then starts the program and passes its exit code or signal through. When the trampoline dies
//! (the skill or run ended, or the engine was killed with `SIGKILL`: it has a parent-death
//! signal), the kernel kills every process of the namespace.
//!
//! Egress (`egress`): an HTTPS `CONNECT` proxy in the engine applying the skill's
//! `allowedDomains` and reporting each decision as a `proxyAccess` event, reached through a
//! forwarder the trampoline starts inside the network namespace.
//!
//! Whether the machine can sandbox at all is `probe`'s call; when it cannot, a run that asks
//! for the sandbox fails with [`SandboxUnavailable`] (exit 2), never silently unconfined. This
//! module never decides the environment or the program: the launcher's caller does.

pub(crate) mod egress;
pub(crate) mod landlock;
pub(crate) mod limits;
pub(crate) mod mounts;
pub(crate) mod network;
pub(crate) mod policy;
pub(crate) mod probe;
pub(crate) mod trampoline;

use std::path::PathBuf;
use std::process::ExitCode;

pub use probe::{PROBE_OVERRIDE_ENV, TRAMPOLINE_ENV, check_available};

/// How the processes of a run are started: Perstack's `runtime` key, seen from this engine.
///
/// No `runtime` key, `runtime = "docker"` and `--runtime docker` mean [`Isolation::Sandboxed`]
/// (Perstack is sandbox-first: its default is a container); `runtime = "local"` means
/// [`Isolation::Unconfined`], as in Perstack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Every process in the native sandbox.
    #[default]
    Sandboxed,
    /// Processes run with the engine's full rights.
    Unconfined,
}

impl Isolation {
    /// What a `runtime` asks for: none and `docker` confine, `local` does not. The agent-CLI
    /// runtimes (`cursor`, `claude-code`, `gemini`) are not implemented here; they confine
    /// (callers say so to the user).
    pub fn for_runtime(runtime: Option<crate::config::Runtime>) -> Isolation {
        match runtime {
            Some(crate::config::Runtime::Local) => Isolation::Unconfined,
            _ => Isolation::Sandboxed,
        }
    }

    /// The scope of a run's processes in `workspace` with `perstack.toml` in `config_dir`;
    /// `None` when unconfined.
    pub(crate) fn scope(
        self,
        workspace: &std::path::Path,
        config_dir: Option<&std::path::Path>,
    ) -> Option<SandboxScope> {
        match self {
            Isolation::Unconfined => None,
            Isolation::Sandboxed => Some(SandboxScope {
                workspace: workspace.to_path_buf(),
                config_dir: config_dir.map(std::path::Path::to_path_buf),
                proxy_socket: None,
            }),
        }
    }
}

/// What a run contributes to each process's policy (the launcher adds what the request says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SandboxScope {
    /// The workspace: readable and writable, except its `perstack/` directory (the job's
    /// checkpoints), which the process sees empty and read-only.
    pub(crate) workspace: PathBuf,
    /// The directory of `perstack.toml`, readable (skills may name files next to it).
    pub(crate) config_dir: Option<PathBuf>,
    /// The egress proxy's Unix socket, bound into the view so that the forwarder inside the
    /// network namespace can reach it. `None`: the process has no network at all.
    pub(crate) proxy_socket: Option<PathBuf>,
}

impl SandboxScope {
    /// A scope for `workspace`, without a config directory or egress.
    #[cfg(test)]
    pub(crate) fn new(workspace: impl Into<PathBuf>) -> Self {
        SandboxScope {
            workspace: workspace.into(),
            config_dir: None,
            proxy_socket: None,
        }
    }
}

/// The sandbox cannot run on this machine, and the run asked for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the sandbox is unavailable: {reason}. Fix: {fix}; or run skills unconfined with \
     runtime = \"local\" in perstack.toml (or --runtime local)"
)]
#[non_exhaustive]
pub struct SandboxUnavailable {
    /// What is missing.
    pub reason: String,
    /// What would make it work.
    pub fix: String,
}

impl SandboxUnavailable {
    /// A usage/configuration error: exit code 2.
    pub fn exit_code(&self) -> u8 {
        2
    }
}

/// The whole program of the `perstack-sandbox` binary: the trampoline, started by the engine as
/// `perstack-sandbox sandbox-exec <policy>`; any other use prints what it is and exits 2.
///
/// Public only so that the second binary of this package can call it; it is not part of the
/// embedding API (an embedding program ships the binary, see [`TRAMPOLINE_ENV`]).
#[doc(hidden)]
pub fn trampoline_main() -> ExitCode {
    dispatch().unwrap_or_else(|| {
        eprintln!(
            "perstack-sandbox: the sandbox trampoline of the perstack engine, started by the \
             engine only (usage: perstack-sandbox {} <policy>)",
            trampoline::SUBCOMMAND
        );
        ExitCode::from(2)
    })
}

/// Runs the sandbox trampoline when this process was started as one (its first argument is
/// `sandbox-exec`, in `perstack-sandbox` or in the `perstack` binary, where it is a hidden
/// subcommand), and returns its exit code; `None` otherwise.
///
/// Must be called first thing in `main`, before any thread (the tokio runtime) exists: entering
/// a user namespace fails in a multithreaded process.
pub(crate) fn dispatch() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != trampoline::SUBCOMMAND {
        return None;
    }
    let rest: Vec<String> = args.filter_map(|a| a.into_string().ok()).collect();
    Some(trampoline::main(&rest))
}
