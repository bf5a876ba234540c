//! The process launcher: every process started for an Expert goes through [`launch`]: stdio
//! MCP servers (for `perstack run` and `perstack install`) and the base skill's `exec`.
//!
//! Unconfined, it spawns the way the engine always has: the program with exactly the given
//! environment (`env_clear` first; the caller has already filtered it through
//! [`crate::config::SAFE_ENV_VARS`] and the protected names), in the given directory, as the
//! leader of a new process group (so `npx`/`uvx` wrappers and what they start share one group),
//! with the pipes the caller asks for and the kill-on-drop the caller asks for. A
//! [`LaunchRequest`] says who the process is for ([`LaunchFor`]), so that the sandbox can
//! decide per Expert and per kind here, and nowhere else.
//!
//! Confined (the request carries a [`SandboxScope`]), it builds the process's
//! [`Policy`](crate::sandbox::policy::Policy) here, prints it at debug level (`--verbose`), and
//! starts the sandbox trampoline (`perstack-sandbox sandbox-exec <policy>`, the binary
//! [`probe::trampoline`] picks; [`crate::sandbox`]) with the same
//! environment, directory, pipes and process group, from one long-lived spawner thread: the
//! trampoline's parent-death signal follows the thread that spawned it, so that thread must
//! live as long as the engine.
//!
//! It never decides the environment, never waits for or reaps the child, and never reads its
//! pipes: the caller supervises what it gets back. Nothing else in `src/` spawns a process for
//! an Expert (`Command::new` and `process_wrap` appear only here).

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{OnceLock, mpsc};

use crate::sandbox::policy::{Policy, Target};
use crate::sandbox::{SandboxScope, probe, trampoline};

use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup};

/// Who a process is started for: what the sandbox will key its rules on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum LaunchFor {
    /// A stdio MCP server: the skill `skill` (its key in the Expert's `skills`).
    McpServer {
        /// The skill's name.
        skill: String,
    },
    /// A command run by the base skill's `exec` tool.
    Exec,
}

/// One of the child's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pipe {
    /// A pipe to the engine.
    Piped,
    /// `/dev/null`.
    Null,
}

impl Pipe {
    fn stdio(self) -> Stdio {
        match self {
            Pipe::Piped => Stdio::piped(),
            Pipe::Null => Stdio::null(),
        }
    }
}

/// What dropping the returned child does while it still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDrop {
    /// Kill the whole process group (`SIGKILL` to the group): nothing it started survives.
    KillGroup,
    /// Kill only the leader; processes it detached keep running (as Perstack's `execFile`).
    KillLeader,
}

/// A process to start for an Expert.
#[derive(Debug, Clone)]
pub(crate) struct LaunchRequest {
    /// Who it is for.
    pub purpose: LaunchFor,
    /// The program (looked up in the child's `PATH` when it has no `/`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its complete environment, already filtered by the caller.
    pub env: BTreeMap<String, String>,
    /// Its working directory (`None`: the engine's).
    pub cwd: Option<PathBuf>,
    /// stdin.
    pub stdin: Pipe,
    /// stdout.
    pub stdout: Pipe,
    /// stderr.
    pub stderr: Pipe,
    /// What dropping the child does.
    pub on_drop: OnDrop,
    /// The sandbox to confine it in; `None` runs it with the engine's rights
    /// (`runtime = "local"`).
    pub sandbox: Option<SandboxScope>,
}

/// Starts `request` as the leader of a new process group and hands back the child.
///
/// # Errors
///
/// The spawn's I/O error (program not found, not executable, bad directory); for a confined
/// request also the sandbox being unavailable.
pub(crate) fn launch(request: LaunchRequest) -> io::Result<Box<dyn ChildWrapper>> {
    let LaunchRequest {
        purpose,
        program,
        args,
        env,
        cwd,
        stdin,
        stdout,
        stderr,
        on_drop,
        sandbox,
    } = request;
    tracing::debug!(?purpose, program = program.as_str(), "launching a process");
    let mut env = env;
    if let Some(scope) = &sandbox {
        crate::sandbox::egress::apply_proxy_env(&mut env, scope.proxy_socket.is_some());
    }
    let (program, args, confined) = match &sandbox {
        None => (program, args, false),
        Some(scope) => {
            probe::check_available().map_err(io::Error::other)?;
            let trampoline = probe::trampoline().map_err(io::Error::other)?;
            let policy = Policy::build(
                &Target {
                    program: &program,
                    args: &args,
                    env: &env,
                    cwd: cwd.as_deref(),
                    args_name_files: matches!(purpose, LaunchFor::McpServer { .. }),
                },
                scope,
            )?;
            tracing::debug!(?purpose, "{policy}");
            let json = serde_json::to_string(&policy).map_err(io::Error::other)?;
            let program = trampoline.to_string_lossy().into_owned();
            (program, vec![trampoline::SUBCOMMAND.to_owned(), json], true)
        }
    };
    let mut command = CommandWrap::with_new(&program, |c| {
        c.args(&args)
            .env_clear()
            .envs(&env)
            .stdin(stdin.stdio())
            .stdout(stdout.stdio())
            .stderr(stderr.stdio());
        if let Some(dir) = &cwd {
            c.current_dir(dir);
        }
        if on_drop == OnDrop::KillLeader {
            c.kill_on_drop(true);
        }
    });
    command.wrap(ProcessGroup::leader());
    if on_drop == OnDrop::KillGroup {
        command.wrap(KillOnDrop);
    }
    if confined {
        on_spawner_thread(move || command.spawn())
    } else {
        command.spawn()
    }
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Runs `spawn` on the spawner thread, which lives as long as the process (a sandboxed child's
/// parent-death signal fires when the thread that spawned it ends), inside the caller's tokio
/// runtime when there is one.
fn on_spawner_thread(
    spawn: impl FnOnce() -> io::Result<Box<dyn ChildWrapper>> + Send + 'static,
) -> io::Result<Box<dyn ChildWrapper>> {
    static SPAWNER: OnceLock<io::Result<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("perstack-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map(|_| tx)
    });
    let spawner = spawner
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), format!("spawner thread: {e}")))?;
    let runtime = tokio::runtime::Handle::try_current().ok();
    let (tx, rx) = mpsc::sync_channel(1);
    spawner
        .send(Box::new(move || {
            let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
            let _ = tx.send(spawn());
        }))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(program: &str, args: &[&str]) -> LaunchRequest {
        LaunchRequest {
            purpose: LaunchFor::Exec,
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BTreeMap::from([("ONLY".to_owned(), "this".to_owned())]),
            cwd: Some(std::env::temp_dir()),
            stdin: Pipe::Null,
            stdout: Pipe::Piped,
            stderr: Pipe::Null,
            on_drop: OnDrop::KillGroup,
            sandbox: None,
        }
    }

    #[tokio::test]
    async fn a_launched_process_leads_its_group_with_exactly_the_given_env_and_directory() {
        use tokio::io::AsyncReadExt;
        let mut child = launch(request(
            "/bin/sh",
            &["-c", "env; pwd; cut -d' ' -f5 /proc/$$/stat"],
        ))
        .unwrap();
        let pid = child.id().unwrap();
        let mut out = String::new();
        child
            .stdout()
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert!(child.wait().await.unwrap().success());
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        // `sh` adds PWD (and may add SHLVL and `_`); nothing of the engine's environment.
        assert!(lines.contains(&"ONLY=this"), "{out}");
        assert!(!out.contains("PATH=/"), "{out}");
        let tmp = std::fs::canonicalize(std::env::temp_dir()).unwrap();
        assert!(lines.contains(&tmp.to_str().unwrap()), "{out}");
        assert_eq!(
            lines.last().copied(),
            Some(pid.to_string().as_str()),
            "{out}"
        );
    }

    /// The launcher is the only place in `src/` that builds a command (tests excepted), so the
    /// sandbox cannot be bypassed by a spawn somewhere else.
    #[test]
    fn nothing_else_in_src_builds_a_command() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if name != "tests" {
                        walk(&path, found);
                    }
                    continue;
                }
                // The trampoline starts the program inside the sandbox the launcher set up.
                if !name.ends_with(".rs")
                    || name == "launcher.rs"
                    || name == "tests.rs"
                    || name == "trampoline.rs"
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Unit tests at the end of a file may start helper processes.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for needle in ["Command::new(", "CommandWrap", "process::Command"] {
                    if code.contains(needle) {
                        found.push(format!("{}: {needle}", path.display()));
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(
            found.is_empty(),
            "processes started outside the launcher: {found:?}"
        );
    }

    #[test]
    fn a_missing_program_is_an_io_error() {
        let err = launch(request("/nonexistent/program", &[])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
