//! The sandbox trampoline (`perstack-sandbox sandbox-exec <policy>`, or the same arguments to
//! the `perstack` binary): restricts itself, then starts the program.
//!
//! Two stages, one process forked from the other (`unshare(CLONE_NEWPID)` only moves the
//! caller's *children* into the new PID namespace; the process is single-threaded, so the
//! `fork` crate's safe `fork` is sound here):
//!
//! 1. **outer** (`sandbox-exec <policy>`), the process the engine holds: sets its parent-death
//!    signal (the engine's spawning thread lives as long as the engine), blocks the signals it
//!    forwards, enters new user, mount, network, IPC and PID namespaces (single-threaded:
//!    [`super::dispatch`] runs before the tokio runtime exists), maps uid and gid 0 of the
//!    namespace to the engine's, then forks stage 2 and waits for it, forwarding signals;
//! 2. **init**, the forked child, PID 1 of the new namespace: sets its own
//!    parent-death signal, builds the mount view, brings `lo` up, binds the egress forwarder's
//!    port when the policy has a proxy socket, applies the limits, Landlock and the capability
//!    drop, then starts the program, forwards signals to it, reaps orphans, starts the
//!    forwarder's thread on the first connection to its port, and when the program ends reports
//!    its status to stage 1 through a pipe and exits, which kills whatever is left in the
//!    namespace.
//!
//! **Signals are never lost on the way** (issue 11): the forwarded signals are blocked first
//! thing in stage 1, stay blocked in stage 2 (a forked child inherits the mask) for its whole
//! life, and are read from a signal descriptor. The program gets an empty mask and default
//! actions from `posix_spawn`'s attributes, applied in the child right before `exec`, so there
//! is no moment where stage 2 has them unblocked: a signal that arrives during the set-up or
//! the spawn waits on the descriptor and is forwarded to the program as soon as it exists. (A
//! signal delivered to a PID 1 with the default action is discarded by the kernel; unblocking
//! around the spawn, as a `Command` would need, dropped every signal that arrived meanwhile.)
//!
//! Stage 1 then ends the way the program did: the same exit code, or the same signal. A set-up
//! failure prints `perstack sandbox-exec: <what>: <why>` on stderr and exits with
//! [`SETUP_FAILED`].

use std::ffi::{CString, OsStr};
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getgid, getppid, getuid, pipe2};

use super::egress::FORWARDER_PORT;
use super::egress::forwarder::{self, Bound, Forwarder};
use super::policy::Policy;

/// The hidden subcommand.
pub(crate) const SUBCOMMAND: &str = "sandbox-exec";
/// Exit code of a trampoline that could not set the sandbox up (as `env` and `chroot` use for
/// their own failures).
pub(crate) const SETUP_FAILED: u8 = 125;

/// The signals forwarded to the program (and `SIGCHLD`, which the loops wait for).
const FORWARDED: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

/// A step of the set-up that failed.
#[derive(Debug)]
pub(crate) struct SetupError {
    what: String,
    why: String,
}

impl SetupError {
    pub(crate) fn new(what: &str, why: impl fmt::Display) -> Self {
        SetupError {
            what: what.to_owned(),
            why: why.to_string(),
        }
    }

    pub(crate) fn io(what: &str, why: std::io::Error) -> Self {
        Self::new(what, why)
    }

    pub(crate) fn path(what: &str, path: &Path, why: impl fmt::Display) -> Self {
        Self::new(&format!("{what} {}", path.display()), why)
    }

    pub(crate) fn landlock(why: landlock::RulesetError) -> Self {
        Self::new("Landlock", why)
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Exited(u8),
    Signaled(Signal),
}

/// Runs a stage from the arguments after `sandbox-exec`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let result = match args {
        [policy] => outer(policy),
        _ => Err(SetupError::new(
            "arguments",
            "usage: perstack sandbox-exec <policy> (internal)",
        )),
    };
    match result {
        Ok(End::Exited(code)) => ExitCode::from(code),
        Ok(End::Signaled(signal)) => {
            // Die of the same signal: default action, unblocked.
            let _ = SigSet::all().thread_unblock();
            let _ = nix::sys::signal::raise(signal);
            ExitCode::from(128u8.saturating_add(signal as u8))
        }
        Err(e) => {
            eprintln!("perstack {SUBCOMMAND}: {e}");
            ExitCode::from(SETUP_FAILED)
        }
    }
}

fn parse(policy: &str) -> Result<Policy, SetupError> {
    serde_json::from_str(policy).map_err(|e| SetupError::new("reading the policy", e))
}

/// Stage 1, outside the namespaces.
fn outer(json: &str) -> Result<End, SetupError> {
    // First: from here on a forwarded signal waits for the program instead of ending us.
    let signals = blocked_signals()?;
    let policy = parse(json)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SetupError::new("parent-death signal", e))?;
    if u32::try_from(getppid().as_raw()).ok() != Some(policy.engine_pid) {
        return Err(SetupError::new("start", "the engine is gone"));
    }
    let (uid, gid) = (getuid(), getgid());
    unshare(
        CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWPID,
    )
    .map_err(|e| SetupError::new("entering new namespaces", e))?;
    let write =
        |file: &str, text: String| std::fs::write(file, text).map_err(|e| SetupError::io(file, e));
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))?;

    // The status pipe: stage 2 writes how the program ended; its end closing tells stage 2
    // that this stage is gone.
    let (status_in, status_out) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| SetupError::new("status pipe", e))?;
    let child = match fork::fork().map_err(|e| SetupError::io("forking the sandbox's init", e))? {
        fork::Fork::Child => {
            drop(status_in);
            drop(signals);
            let end = match init(&policy, std::fs::File::from(status_out)) {
                Ok(end) => end,
                Err(e) => {
                    eprintln!("perstack {SUBCOMMAND}: {e}");
                    End::Exited(SETUP_FAILED)
                }
            };
            let code = match end {
                End::Exited(code) => i32::from(code),
                End::Signaled(signal) => 128 + signal as i32,
            };
            std::process::exit(code);
        }
        fork::Fork::Parent(pid) => Pid::from_raw(pid),
    };
    drop(status_out);
    let own = wait_forwarding(&signals, child, None, &mut Egress::Off)?;
    let mut report = String::new();
    let _ = std::fs::File::from(status_in).read_to_string(&mut report);
    Ok(parse_report(&report).unwrap_or(own))
}

/// Stage 2, PID 1 of the new namespaces (forked from stage 1).
fn init(policy: &Policy, mut status: std::fs::File) -> Result<End, SetupError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SetupError::new("parent-death signal", e))?;
    // Stage 1 may have died before the parent-death signal was set: then nobody reads the
    // pipe any more.
    if parent_gone(&status, PollTimeout::ZERO)? {
        return Err(SetupError::new(
            "start",
            "the sandbox's outer stage is gone",
        ));
    }
    let signals = blocked_signals()?;

    super::mounts::apply(policy)?;
    super::network::loopback_up()?;
    // Kept until the program has ended: dropping it stops the forwarder.
    let mut egress = bind_egress(policy)?;
    super::limits::apply(&policy.limits)?;
    super::landlock::restrict(policy)?;

    // The forwarded signals stay blocked here: whatever arrived since stage 1 started waits on
    // `signals` and goes to the program in the loop below.
    let pid = spawn_program(policy)?;
    let end = wait_forwarding(&signals, pid, Some(&status), &mut egress)?;
    let report = match end {
        End::Exited(code) => format!("exit {code}"),
        End::Signaled(signal) => format!("signal {}", signal as i32),
    };
    let _ = status.write_all(report.as_bytes());
    // As PID 1 this process cannot die of a signal sent from inside; stage 1 does that part.
    Ok(match end {
        End::Exited(code) => End::Exited(code),
        End::Signaled(signal) => End::Exited(128u8.saturating_add(signal as u8)),
    })
}

/// The egress forwarder of one sandbox: a loopback port in this network namespace relayed to
/// the proxy's socket, whose thread starts with the first connection (a program that never
/// uses the proxy costs no thread).
#[derive(Debug)]
enum Egress {
    /// No proxy socket in the policy: the namespace simply has no way out.
    Off,
    /// Listening; connections wait in the backlog.
    Bound(Bound),
    /// Serving from its own thread; dropping it stops the thread.
    Serving {
        /// Held, not read: dropping it stops the thread.
        _forwarder: Forwarder,
    },
}

impl Egress {
    /// The port to watch for a first connection.
    fn waiting(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            Egress::Bound(bound) => Some(bound.listener()),
            Egress::Off | Egress::Serving { .. } => None,
        }
    }

    /// Starts serving. A thread that cannot start leaves the program without egress (the
    /// listener closes, so waiting connections are refused), as a sandbox without a proxy.
    fn start(&mut self) {
        if let Egress::Bound(bound) = std::mem::replace(self, Egress::Off) {
            match bound.start() {
                Ok(forwarder) => {
                    *self = Egress::Serving {
                        _forwarder: forwarder,
                    }
                }
                Err(e) => eprintln!("perstack {SUBCOMMAND}: starting the egress forwarder: {e}"),
            }
        }
    }
}

/// The hook for egress: when the policy has a proxy socket, the forwarder's port is bound here,
/// after `lo` is up and before Landlock (a bind error stops the set-up before the program
/// starts).
fn bind_egress(policy: &Policy) -> Result<Egress, SetupError> {
    Ok(match &policy.proxy_socket {
        None => Egress::Off,
        Some(socket) => Egress::Bound(
            forwarder::bind(FORWARDER_PORT, socket.clone())
                .map_err(|e| SetupError::io("starting the egress forwarder", e))?,
        ),
    })
}

/// Starts the program with the environment this process got, no signal blocked and every
/// signal at its default action (also `SIGPIPE`, which the Rust runtime ignores), the mask and
/// actions being set by `posix_spawn` in the child right before `exec`: this process never
/// unblocks a forwarded signal (see the module doc).
fn spawn_program(policy: &Policy) -> Result<Pid, SetupError> {
    let what = format!("starting {}", policy.argv0);
    let fail = |e: nix::errno::Errno| SetupError::io(&what, std::io::Error::from(e));
    let c_string = |s: &OsStr| {
        CString::new(s.as_bytes()).map_err(|_| SetupError::new(&what, "a NUL byte in an argument"))
    };
    let mut argv = vec![c_string(OsStr::new(&policy.argv0))?];
    for arg in &policy.args {
        argv.push(c_string(OsStr::new(arg))?);
    }
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let mut entry = name;
        entry.push("=");
        entry.push(value);
        env.push(c_string(&entry)?);
    }
    let mut attr = PosixSpawnAttr::init().map_err(fail)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )
    .map_err(fail)?;
    attr.set_sigmask(&SigSet::empty()).map_err(fail)?;
    attr.set_sigdefault(&SigSet::all()).map_err(fail)?;
    let actions = PosixSpawnFileActions::init().map_err(fail)?;
    posix_spawn(policy.program.as_path(), &actions, &attr, &argv, &env).map_err(fail)
}

fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FORWARDED {
        set.add(signal);
    }
    set
}

/// Blocks the forwarded signals and returns a descriptor that reads them (not inherited by the
/// program, and never blocking a read: the loop polls it).
fn blocked_signals() -> Result<SignalFd, SetupError> {
    let set = forwarded_set();
    set.thread_block()
        .map_err(|e| SetupError::new("blocking signals", e))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| SetupError::new("signalfd", e))
}

/// Whether the reader of the status pipe (stage 1) is gone, waiting up to `timeout`.
fn parent_gone(status: &std::fs::File, timeout: PollTimeout) -> Result<bool, SetupError> {
    let mut fds = [PollFd::new(status.as_fd(), PollFlags::empty())];
    match poll(&mut fds, timeout) {
        Ok(_) => Ok(fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(SetupError::new("watching the outer stage", e)),
    }
}

/// Waits for `child` to end, forwarding every other signal to it and reaping any other child
/// (as PID 1, orphans of the namespace are ours). With `parent`, the status pipe to stage 1:
/// when stage 1 is gone (its parent-death signal, in case ours did not come), ends at once
/// with `SIGKILL`, which takes the namespace down. A bound `egress` forwarder starts serving
/// when its first connection arrives.
fn wait_forwarding(
    signals: &SignalFd,
    child: Pid,
    parent: Option<&std::fs::File>,
    egress: &mut Egress,
) -> Result<End, SetupError> {
    loop {
        // Reap first: the child may have ended before the signal descriptor existed.
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    return Ok(End::Exited(u8::try_from(code).unwrap_or(u8::MAX)));
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                    return Ok(End::Signaled(signal));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let (gone, connecting, signalled) = {
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            let parent_at = parent.map(|parent| {
                fds.push(PollFd::new(parent.as_fd(), PollFlags::empty()));
                fds.len() - 1
            });
            let egress_at = egress.waiting().map(|listener| {
                fds.push(PollFd::new(listener, PollFlags::POLLIN));
                fds.len() - 1
            });
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(SetupError::new("waiting", e)),
            }
            let revents = |at: Option<usize>, flags: PollFlags| {
                at.and_then(|i| fds.get(i))
                    .and_then(PollFd::revents)
                    .is_some_and(|r| r.intersects(flags))
            };
            (
                revents(parent_at, PollFlags::POLLERR | PollFlags::POLLHUP),
                revents(egress_at, PollFlags::POLLIN),
                revents(Some(0), PollFlags::POLLIN),
            )
        };
        if gone {
            return Ok(End::Signaled(Signal::SIGKILL));
        }
        if connecting {
            egress.start();
        }
        if !signalled {
            continue;
        }
        let info = signals
            .read_signal()
            .map_err(|e| SetupError::new("reading signals", e))?;
        let Some(info) = info else { continue };
        let Ok(signal) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) else {
            continue;
        };
        if signal != Signal::SIGCHLD {
            let _ = kill(child, signal);
        }
    }
}

/// Stage 2's report: `exit <code>` or `signal <number>`.
fn parse_report(report: &str) -> Option<End> {
    let (kind, value) = report.trim().split_once(' ')?;
    let value: i32 = value.parse().ok()?;
    match kind {
        "exit" => u8::try_from(value).ok().map(End::Exited),
        "signal" => Signal::try_from(value).ok().map(End::Signaled),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_round_trips_exit_codes_and_signals() {
        assert_eq!(parse_report("exit 3"), Some(End::Exited(3)));
        assert_eq!(
            parse_report("signal 9"),
            Some(End::Signaled(Signal::SIGKILL))
        );
        assert_eq!(parse_report(""), None);
        assert_eq!(parse_report("exit 999"), None);
    }
}
