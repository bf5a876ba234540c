//! `exec`: run a program without a shell, like Perstack's `execFile`.
//!
//! - **Working directory**: `cwd` must pass the workspace checks; the child starts in the
//!   directory handle that was checked (`/proc/self/fd/<fd>`), so it cannot be swapped for a
//!   symlink in between.
//! - **Environment**: cleared, then the safe variables of the skill's configured environment
//!   ([`crate::config::safe_env`]), then the call's `env` minus the protected names (Perstack's list, compared
//!   case-insensitively, plus `BASH_ENV`, `ENV`, `PERL5OPT`, `RUBYOPT`, `PYTHONHOME`,
//!   `PYTHONSTARTUP` and every `LD_*`/`DYLD_*` name). The engine's own secrets never reach
//!   the child unless the model passes them explicitly.
//! - **Process group**: the child is started by the launcher ([`crate::skill::launcher`]) and
//!   leads a new process group. On timeout, on output overflow
//!   and when the call is dropped, the whole group is killed (`SIGKILL`), so a forked
//!   `sleep 100 &` does not survive. A command that finishes normally may leave detached
//!   background processes running, as with Perstack; confined (the engine's default), the
//!   sandbox's PID namespace ends with the command, and so do they.
//! - **Output**: stdout and stderr are read as they come, at most [`MAX_OUTPUT_BYTES`] in total
//!   (Node's `maxBuffer`); past that the group is killed and the answer says the output was
//!   truncated. A stream the call did not ask for goes to `/dev/null`.
//!
//! Answers: `{"output": stdout + stderr}` (or Perstack's "no output" sentence) on success,
//! `{"error", "stdout"?, "stderr"?}` otherwise.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use process_wrap::tokio::ChildWrapper;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::BaseSkill;
use super::path::{Dir, ToolError, Workspace, io_error, quote};
use super::result::{input_schema, json_error, json_result};
use crate::skill::launcher::{LaunchFor, LaunchRequest, OnDrop, Pipe, launch};

/// More names that make an interpreter run or load code on start; also refused.
const EXTRA_PROTECTED_ENV_KEYS: [&str; 6] = [
    "BASH_ENV",
    "ENV",
    "PERL5OPT",
    "RUBYOPT",
    "PYTHONHOME",
    "PYTHONSTARTUP",
];

/// Prefixes of dynamic-loader variables, all refused.
const PROTECTED_ENV_PREFIXES: [&str; 2] = ["LD_", "DYLD_"];

/// Most output (stdout + stderr) kept from one command. Reaching it stops the command, as
/// Node's `maxBuffer` does, so memory stays bounded whatever the command prints.
pub(super) const MAX_OUTPUT_BYTES: usize = 10 * 1024 * 1024;

/// Timeout when the call gives none (or a non-positive one), in milliseconds.
const DEFAULT_TIMEOUT_MS: f64 = 60_000.0;

/// How long to wait for a killed process group's leader to be reaped before giving up on it
/// (tokio then reaps it in the background).
const REAP_GRACE: Duration = Duration::from_secs(2);

/// Size of each read from a pipe.
const CHUNK_BYTES: usize = 64 * 1024;

/// Longest command line quoted back in an error message (a long `sh -c` script is cut).
const MAX_QUOTED_COMMAND_CHARS: usize = 1000;

const NO_OUTPUT: &str = "Command executed successfully, but produced no output.";

pub(super) use crate::config::safe_env;

/// The child's environment: `base` (already safe) plus the allowed entries of `given`.
pub(super) fn child_env(
    base: &BTreeMap<String, String>,
    given: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = base.clone();
    for (key, value) in given {
        let well_formed = !key.is_empty() && !key.contains(['=', '\0']) && !value.contains('\0');
        if well_formed && !is_protected(key) {
            env.insert(key.clone(), value.clone());
        }
    }
    env
}

/// Perstack's protected names ([`crate::config::is_protected`]) plus this module's extras.
fn is_protected(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    crate::config::is_protected(key)
        || EXTRA_PROTECTED_ENV_KEYS.contains(&upper.as_str())
        || PROTECTED_ENV_PREFIXES.iter().any(|p| upper.starts_with(p))
}

fn default_cwd() -> String {
    ".".to_owned()
}

fn yes() -> bool {
    true
}

/// `exec` arguments. Perstack requires all but `timeout`; missing `args`/`env`/`cwd`/flags
/// default to none, none, the workspace and `true`.
#[derive(Debug, Deserialize)]
struct ExecArgs {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default = "default_cwd")]
    cwd: String,
    #[serde(default = "yes")]
    stdout: bool,
    #[serde(default = "yes")]
    stderr: bool,
    timeout: Option<f64>,
}

#[derive(Serialize)]
struct ExecOutput {
    output: String,
}

#[derive(Serialize)]
struct ExecFailure {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr: Option<String>,
}

#[tool_router(router = exec_router, vis = "pub(super)")]
impl BaseSkill {
    #[tool(
        name = "exec",
        description = "Run a program (no shell: `command` is the executable, `args` its \
            arguments; run `sh -c` yourself if you need pipes or globbing) in `cwd` inside the \
            workspace. `env` adds variables (PATH, HOME, loader and interpreter start-up \
            variables cannot be overridden). `stdout`/`stderr` choose which output to return. \
            `timeout` is in milliseconds (default 60000); the command and everything it \
            started are killed when it expires. Output is limited to 10 MB. Returns \
            `{output}`, or `{error, stdout?, stderr?}`.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The program to run"},
                "args": {"type": "array", "items": {"type": "string"}, "description": "Its arguments"},
                "env": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Extra environment variables"
                },
                "cwd": {"type": "string", "description": "Working directory (in the workspace)"},
                "stdout": {"type": "boolean", "description": "Return standard output"},
                "stderr": {"type": "boolean", "description": "Return standard error"},
                "timeout": {"type": "number", "description": "Timeout in milliseconds (default 60000)"}
            },
            "required": ["command", "args", "env", "cwd", "stdout", "stderr"]
        }))
    )]
    async fn exec(&self, Parameters(args): Parameters<ExecArgs>) -> CallToolResult {
        let ws = self.ws();
        let cwd = args.cwd.clone();
        let dir = match tokio::task::spawn_blocking(move || open_cwd(&ws, &cwd)).await {
            Ok(Ok(dir)) => dir,
            Ok(Err(e)) => return e.into_result(),
            Err(e) => return json_error("Error", &format!("Internal error: {e}")),
        };
        let env = child_env(&self.env, &args.env);
        run(args, dir, env, MAX_OUTPUT_BYTES, self.sandbox.clone()).await
    }
}

fn open_cwd(ws: &Workspace, given: &str) -> Result<Dir, ToolError> {
    let shown = quote(given);
    let resolved = ws.resolve(given)?;
    let missing = || ToolError::new(format!("Directory {shown} does not exist."));
    let target = resolved.existing_target().ok_or_else(missing)?;
    ws.open_dir(target, false).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => missing(),
        io::ErrorKind::NotADirectory => ToolError::new(format!("Path {shown} is not a directory.")),
        _ => io_error(&shown, &e),
    })
}

/// Kills the child's process group when dropped while armed (the call was abandoned or the
/// command must be stopped).
struct GroupGuard {
    child: Box<dyn ChildWrapper>,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            // ESRCH (the group is already gone) is fine.
            let _ = self.child.start_kill();
        }
    }
}

impl GroupGuard {
    /// Kills the group and waits briefly for the leader.
    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(REAP_GRACE, self.child.wait()).await;
        self.armed = false;
    }
}

/// How collecting the output ended.
enum End {
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Overflow,
}

async fn run(
    args: ExecArgs,
    dir: Dir,
    env: BTreeMap<String, String>,
    cap: usize,
    sandbox: Option<crate::sandbox::SandboxScope>,
) -> CallToolResult {
    if args.command.is_empty() {
        return json_error("Error", "command must not be empty");
    }
    let (timeout, timeout_ms) = timeout_of(args.timeout);
    let pipe = |wanted: bool| if wanted { Pipe::Piped } else { Pipe::Null };
    let spawned = launch(LaunchRequest {
        purpose: LaunchFor::Exec,
        program: args.command.clone(),
        args: args.args.clone(),
        env,
        cwd: Some(dir.handle_path()),
        stdin: Pipe::Null,
        stdout: pipe(args.stdout),
        stderr: pipe(args.stderr),
        // Only the leader: a command that finishes may leave detached processes, as with
        // Perstack; the guard below kills the whole group on timeout, overflow and drop.
        on_drop: OnDrop::KillLeader,
        sandbox,
    });
    // The child has its working directory now; the handle can go.
    drop(dir);
    let child = match spawned {
        Ok(child) => child,
        Err(e) => return failure(format!("Failed to run {}: {e}", args.command), None, None),
    };
    let mut guard = GroupGuard { child, armed: true };
    let (end, out, err) = collect(guard.child.as_mut(), timeout, cap).await;
    let text = |bytes: Vec<u8>, wanted: bool| {
        (wanted && !bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
    };
    let command_line = shorten(
        &std::iter::once(args.command.as_str())
            .chain(args.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let error = match end {
        End::Exited(Ok(status)) if status.success() => {
            guard.armed = false;
            let mut output = String::new();
            output.push_str(&text(out, args.stdout).unwrap_or_default());
            output.push_str(&text(err, args.stderr).unwrap_or_default());
            if output.trim().is_empty() {
                output = NO_OUTPUT.to_owned();
            }
            return json_result(&ExecOutput { output });
        }
        End::Exited(Ok(status)) => {
            guard.armed = false;
            match (status.code(), status.signal()) {
                (Some(code), _) => format!("Command failed with exit code {code}: {command_line}"),
                (None, Some(signal)) => {
                    format!("Command was killed by signal {signal}: {command_line}")
                }
                (None, None) => format!("Command failed: {command_line}"),
            }
        }
        End::Exited(Err(e)) => {
            guard.kill().await;
            format!("Failed to wait for {command_line}: {e}")
        }
        End::TimedOut => {
            guard.kill().await;
            format!("Command timed out after {timeout_ms}ms.")
        }
        End::Overflow => {
            guard.kill().await;
            format!(
                "Command output exceeded {cap} bytes, so the command was stopped and its output \
                 truncated to the first {cap} bytes: {command_line}"
            )
        }
    };
    failure(error, text(out, args.stdout), text(err, args.stderr))
}

/// The command line as quoted in an error: at most [`MAX_QUOTED_COMMAND_CHARS`] characters.
fn shorten(command_line: &str) -> String {
    match command_line.char_indices().nth(MAX_QUOTED_COMMAND_CHARS) {
        Some((end, _)) => format!("{}...", &command_line[..end]),
        None => command_line.to_owned(),
    }
}

fn failure(error: String, stdout: Option<String>, stderr: Option<String>) -> CallToolResult {
    json_result(&ExecFailure {
        error,
        stdout,
        stderr,
    })
}

/// The timeout and how to print it: the call's milliseconds if positive and finite (up to
/// a day), else the default.
fn timeout_of(requested: Option<f64>) -> (Duration, String) {
    let ms = requested
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .map_or(DEFAULT_TIMEOUT_MS, |ms| ms.min(86_400_000.0));
    let shown = if ms.fract() == 0.0 {
        format!("{ms:.0}")
    } else {
        ms.to_string()
    };
    (Duration::from_secs_f64(ms / 1000.0), shown)
}

/// Reads both pipes until they close and the child exits, the deadline passes, or `cap`
/// bytes have been kept in total.
async fn collect(
    child: &mut dyn ChildWrapper,
    timeout: Duration,
    cap: usize,
) -> (End, Vec<u8>, Vec<u8>) {
    let mut out_pipe = child.stdout().take();
    let mut err_pipe = child.stderr().take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut out_chunk = vec![0u8; CHUNK_BYTES];
    let mut err_chunk = vec![0u8; CHUNK_BYTES];
    let mut status = None;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let end = loop {
        if out_pipe.is_none()
            && err_pipe.is_none()
            && let Some(status) = status.take()
        {
            break End::Exited(status);
        }
        tokio::select! {
            read = read_some(&mut out_pipe, &mut out_chunk), if out_pipe.is_some() => {
                match read {
                    Ok(0) | Err(_) => out_pipe = None,
                    Ok(n) => {
                        if !keep(&mut out, &out_chunk[..n], err.len(), cap) {
                            break End::Overflow;
                        }
                    }
                }
            }
            read = read_some(&mut err_pipe, &mut err_chunk), if err_pipe.is_some() => {
                match read {
                    Ok(0) | Err(_) => err_pipe = None,
                    Ok(n) => {
                        if !keep(&mut err, &err_chunk[..n], out.len(), cap) {
                            break End::Overflow;
                        }
                    }
                }
            }
            exited = child.wait(), if status.is_none() => status = Some(exited),
            () = &mut deadline => break End::TimedOut,
        }
    };
    (end, out, err)
}

async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Appends `chunk` to `buf` within the shared `cap` (`other` bytes are already kept by the
/// other stream); false when something had to be dropped.
fn keep(buf: &mut Vec<u8>, chunk: &[u8], other: usize, cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len() + other);
    let taken = chunk.len().min(room);
    buf.extend_from_slice(&chunk[..taken]);
    if taken < chunk.len() {
        // Cut at the cap: drop a character the cut would split (the output is read as UTF-8).
        let tail = crate::skill::mcp::incomplete_utf8_tail(buf);
        buf.truncate(buf.len() - tail);
    }
    taken == chunk.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_a_running_call_kills_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let ws = Workspace::from_canonical(root.clone(), None);
        let cwd = ws.open_dir(&root, false).unwrap();
        let args = ExecArgs {
            command: "sh".into(),
            args: vec![
                "-c".into(),
                "sleep 30 & echo $! > bg.pid; echo $$ > sh.pid; wait".into(),
            ],
            env: BTreeMap::new(),
            cwd: ".".into(),
            stdout: true,
            stderr: true,
            timeout: None,
        };
        let env = BTreeMap::from([("PATH".to_owned(), std::env::var("PATH").unwrap())]);
        let call = run(args, cwd, env, MAX_OUTPUT_BYTES, None);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), call)
                .await
                .is_err()
        );
        for file in ["bg.pid", "sh.pid"] {
            let pid = std::fs::read_to_string(root.join(file)).unwrap();
            let mut gone = false;
            for _ in 0..40 {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
                gone = stat.map_or(true, |s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                });
                if gone {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(gone, "{file} {pid} survived");
        }
    }

    #[test]
    fn protected_names_are_refused_in_any_case() {
        for key in [
            "PATH",
            "Path",
            "pAtH",
            "LD_PRELOAD",
            "ld_audit",
            "NODE_OPTIONS",
            "PYTHONPATH",
            "BASH_ENV",
            "DYLD_INSERT_LIBRARIES",
            "HOME",
            "shell",
        ] {
            assert!(is_protected(key), "{key}");
        }
        for key in ["MY_VAR", "TERM", "LANG", "OLDPATH"] {
            assert!(!is_protected(key), "{key}");
        }
    }

    #[test]
    fn the_child_env_is_the_safe_base_plus_allowed_additions() {
        let base = safe_env([
            ("PATH".to_owned(), "/bin".to_owned()),
            ("SECRET".to_owned(), "s".to_owned()),
        ]);
        let given = BTreeMap::from([
            ("Path".to_owned(), "/evil".to_owned()),
            ("MY_VAR".to_owned(), "1".to_owned()),
            ("A=B".to_owned(), "x".to_owned()),
            ("NUL".to_owned(), "a\0b".to_owned()),
        ]);
        let env = child_env(&base, &given);
        assert_eq!(
            env,
            BTreeMap::from([
                ("MY_VAR".to_owned(), "1".to_owned()),
                ("PATH".to_owned(), "/bin".to_owned()),
            ])
        );
    }

    #[test]
    fn output_is_kept_up_to_the_shared_cap() {
        let (mut a, b) = (Vec::new(), vec![0u8; 3]);
        assert!(keep(&mut a, b"12345", b.len(), 10));
        assert!(!keep(&mut a, b"678", b.len(), 10));
        assert_eq!(a, b"1234567");
    }

    #[test]
    fn output_cut_at_the_cap_keeps_whole_characters() {
        let mut a = b"12345678".to_vec();
        // "日" is 3 bytes; only 2 fit.
        assert!(!keep(&mut a, "日本".as_bytes(), 0, 10));
        assert_eq!(a, b"12345678");
        let mut b = b"12345678".to_vec();
        assert!(!keep(&mut b, "é日".as_bytes(), 0, 11));
        assert_eq!(String::from_utf8(b).unwrap(), "12345678é");
    }

    #[test]
    fn long_command_lines_are_cut_in_messages() {
        assert_eq!(shorten("ls -l"), "ls -l");
        let long = "é".repeat(MAX_QUOTED_COMMAND_CHARS + 5);
        assert_eq!(shorten(&long).chars().count(), MAX_QUOTED_COMMAND_CHARS + 3);
    }

    #[test]
    fn timeouts_default_and_print_like_javascript() {
        assert_eq!(timeout_of(None).1, "60000");
        assert_eq!(timeout_of(Some(0.0)).0, Duration::from_secs(60));
        assert_eq!(
            timeout_of(Some(500.0)),
            (Duration::from_millis(500), "500".into())
        );
        assert_eq!(timeout_of(Some(f64::NAN)).1, "60000");
    }
}
