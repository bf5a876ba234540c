//! Spawning a stdio MCP server in its own process group, and supervising it.
//!
//! The child is started by the launcher ([`crate::skill::launcher`]) as the leader of a new
//! process group (so `npx`/`uvx` wrappers and whatever they start share one group) that is
//! killed when the child is dropped. A supervisor task owns
//! it: when the leader exits on its own, the task kills what is left of the group (orphaned
//! grandchildren) and reaps the leader, so no zombie stays behind; when asked to (or when the
//! [`ChildHandle`] is dropped), it kills the whole group with `SIGKILL` and reaps. If the task
//! itself is dropped (the runtime shuts down), the guard it owns still kills the group.
//!
//! Confined servers (the default) also die with the engine when it is killed with `SIGKILL`:
//! the sandbox's trampoline has a parent-death signal and is PID 1 of the server's PID
//! namespace ([`crate::sandbox`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use process_wrap::tokio::ChildWrapper;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::sandbox::SandboxScope;
use crate::skill::SkillError;
use crate::skill::launcher::{LaunchFor, LaunchRequest, OnDrop, Pipe, launch};

/// A freshly spawned server: its supervisor handle and its three pipes.
pub(super) struct Spawned {
    pub(super) child: ChildHandle,
    pub(super) stdin: ChildStdin,
    pub(super) stdout: ChildStdout,
    pub(super) stderr: ChildStderr,
}

/// Starts `command args` with exactly `env`, in `cwd` when given, in a new process group.
pub(super) fn spawn(
    skill: &str,
    command: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&Path>,
    sandbox: Option<&SandboxScope>,
) -> Result<Spawned, SkillError> {
    let spawn_error = |source: std::io::Error| SkillError::Spawn {
        skill: skill.to_owned(),
        source,
    };
    let mut child = launch(LaunchRequest {
        purpose: LaunchFor::McpServer {
            skill: skill.to_owned(),
        },
        program: command.to_owned(),
        args: args.to_vec(),
        env: env.clone(),
        cwd: cwd.map(Path::to_path_buf),
        stdin: Pipe::Piped,
        stdout: Pipe::Piped,
        stderr: Pipe::Piped,
        on_drop: OnDrop::KillGroup,
        sandbox: sandbox.cloned(),
    })
    .map_err(spawn_error)?;
    let pid = child.id();
    let pipes = (
        child.stdin().take(),
        child.stdout().take(),
        child.stderr().take(),
    );
    let guard = GroupGuard {
        child,
        reaped: false,
    };
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        drop(guard);
        return Err(spawn_error(std::io::Error::other(
            "the child's stdio pipes are missing",
        )));
    };
    let kill = CancellationToken::new();
    let supervisor = tokio::spawn(supervise(guard, kill.clone(), skill.to_owned()));
    Ok(Spawned {
        child: ChildHandle {
            pid,
            kill_on_drop: kill.clone().drop_guard(),
            kill,
            supervisor,
        },
        stdin,
        stdout,
        stderr,
    })
}

/// The engine's handle on a server process. Dropping it kills the process group.
#[derive(Debug)]
pub(super) struct ChildHandle {
    /// The leader's process id, for the tests of real servers.
    #[cfg_attr(not(test), allow(dead_code))]
    pid: Option<u32>,
    kill: CancellationToken,
    /// Cancels `kill` when this handle is dropped.
    kill_on_drop: DropGuard,
    supervisor: JoinHandle<()>,
}

impl ChildHandle {
    /// The leader's process id (also the process group id).
    #[cfg(test)]
    pub(super) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Kills the whole group now (without waiting).
    pub(super) fn kill(&self) {
        self.kill.cancel();
    }

    /// Waits up to `grace` for the leader to exit by itself (its stdin should already be
    /// closed), then kills the whole group and waits until it is reaped.
    pub(super) async fn shutdown(self, grace: Duration) {
        let ChildHandle {
            kill,
            kill_on_drop,
            mut supervisor,
            ..
        } = self;
        if tokio::time::timeout(grace, &mut supervisor).await.is_err() {
            kill.cancel();
            if let Err(e) = supervisor.await {
                tracing::debug!(error = %e, "skill supervisor task failed");
            }
        }
        drop(kill_on_drop);
    }
}

/// Owns the child; kills its group on drop unless it was already reaped.
struct GroupGuard {
    child: Box<dyn ChildWrapper>,
    reaped: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.reaped {
            // `ProcessGroupChild::start_kill` is `killpg(SIGKILL)`: synchronous, no runtime needed.
            let _ = self.child.start_kill();
        }
    }
}

async fn supervise(mut guard: GroupGuard, kill: CancellationToken, skill: String) {
    let exited = tokio::select! {
        status = guard.child.wait() => {
            match status {
                Ok(status) => tracing::debug!(skill, %status, "skill server exited"),
                Err(e) => tracing::debug!(skill, error = %e, "waiting for a skill server failed"),
            }
            true
        }
        () = kill.cancelled() => false,
    };
    // On request: everything. After the leader exited: whatever it left behind in its group.
    // ESRCH (nobody left) is the normal case after a clean exit.
    if let Err(e) = guard.child.start_kill() {
        tracing::trace!(skill, error = %e, "killing the skill's process group");
    }
    if !exited && let Err(e) = guard.child.wait().await {
        tracing::debug!(skill, error = %e, "reaping a killed skill server failed");
    }
    guard.reaped = true;
}
