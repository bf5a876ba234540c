//! The sandbox trampoline itself (issue 11): which binary it is, signals that arrive while it
//! sets the sandbox up, and the egress proxy directories it leaves when its engine is killed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, Finished};
use super::sandbox::{
    Scene, WORKER, exec_call, gone, marker, processes_with, programs_with, result,
};

/// The pids of `pid`'s children (its main thread's).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// The trampoline's outer stage started by `engine` for a command naming `marker`.
fn outer_stage(engine: u32, marker: &str) -> Option<u32> {
    processes_with(marker).into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains("sandbox-exec") && parent(*pid) == Some(engine)
    })
}

/// The parent of `pid`.
fn parent(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
}

/// Issue 11: a signal that reaches the trampoline while its sandbox is still being set up (its
/// init exists, the program does not yet) reaches the program once it has started: it is
/// neither lost (the command would run to the exec timeout) nor does it end the wrong process.
/// Each attempt is one run; the test retries until its signal lands in that window.
#[test]
fn issue_11_a_signal_during_sandbox_set_up_reaches_the_program() {
    for _attempt in 0..10 {
        let scene = Scene::new();
        let long = marker();
        let script = format!(
            r#"
[[turns]]
expert = "w"
toolCalls = [{}]
[[turns]]
expert = "w"
text = "done"
"#,
            exec_call("long", "sleep", &[&long])
        );
        scene.write_project(WORKER, &script);
        let engine = scene
            .perstack(&["run", "w", "go"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let outer = loop {
            if let Some(pid) = outer_stage(engine.id(), &long) {
                break pid;
            }
            assert!(Instant::now() < deadline, "the sandbox never started");
            std::thread::yield_now();
        };
        // The sandbox's init appears; the signal goes while it has no child (the program).
        let in_set_up = loop {
            if let Some(&init) = children(outer).first() {
                let in_set_up = children(init).is_empty();
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(outer).unwrap()),
                    nix::sys::signal::Signal::SIGTERM,
                )
                .unwrap();
                break in_set_up;
            }
            assert!(
                Instant::now() < deadline,
                "the sandbox's init never started"
            );
        };
        let out = engine.wait_with_output().unwrap();
        assert!(out.status.success());
        let events = common::events(&out.stdout);
        let long_result = result(&events, "long");
        assert!(
            long_result.contains("killed by signal 15"),
            "the program did not get the signal: {long_result}"
        );
        assert!(gone(&long));
        if in_set_up {
            return;
        }
    }
    panic!("no attempt caught a sandbox in its set-up");
}

/// The trampoline is the small `perstack-sandbox` binary next to `perstack`; with
/// `PERSTACK_SANDBOX_EXEC` naming the `perstack` binary its hidden `sandbox-exec` subcommand
/// serves instead, confining the same way. Inside, the trampoline is PID 1.
#[test]
fn the_trampoline_is_perstack_sandbox_and_perstack_itself_when_named() {
    let scene = Scene::new();
    let script = format!(
        r#"
[[turns]]
expert = "w"
toolCalls = [{}, {}]
[[turns]]
expert = "w"
text = "done"
"#,
        exec_call("init", "readlink", &["/proc/1/exe"]),
        exec_call("ssh", "cat", &[scene.key.to_str().unwrap()])
    );
    scene.write_project(WORKER, &script);
    let dedicated = Path::new(common::bin()).with_file_name("perstack-sandbox");
    for (named, expected) in [
        (None, dedicated.clone()),
        (Some(common::bin()), PathBuf::from(common::bin())),
    ] {
        let mut cmd = scene.perstack(&["run", "w", "go"]);
        if let Some(bin) = named {
            cmd.env(perstack::sandbox::TRAMPOLINE_ENV, bin);
        }
        let (code, events, stderr) = Finished::of(&mut cmd).parts();
        assert_eq!(code, 0, "{stderr}");
        let init = result(&events, "init");
        assert!(
            init.contains(&format!("{}\\n", expected.display())),
            "{named:?}: {init}"
        );
        assert!(!result(&events, "ssh").contains("sandbox-test-secret"));
    }
    assert!(dedicated.is_file());
}

/// A run whose `exec` sleeps (named by `marker`) for longer than the test lasts.
fn long_script(marker: &str) -> String {
    format!(
        r#"
[[turns]]
expert = "w"
toolCalls = [{{ id = "long", name = "exec", args = {{ command = "sleep", args = ["{marker}"], env = {{}}, cwd = ".", stdout = true, stderr = true, timeout = 120000 }} }}]
[[turns]]
expert = "w"
text = "never reached"
"#
    )
}

/// Waits (bounded) until a process runs `marker`.
fn wait_for_program(marker: &str, engine: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while programs_with(marker).is_empty() {
        if Instant::now() > deadline || engine.try_wait().unwrap().is_some() {
            let _ = engine.kill();
            let _ = engine.wait();
            panic!("the sandboxed command never started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The egress proxies' directories in `tmp`.
fn proxy_dirs(tmp: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("perstack-egress-"))
        })
        .collect()
}

/// Kills its engine (and so the engine's sandboxes) when dropped, also when an assertion fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 11: the egress proxy's socket directory of an engine killed with `SIGKILL` is removed
/// by the next engine that starts a proxy, and the directory of a live engine in another PID
/// namespace is kept, although its pid (4000000 there) names no process here.
#[test]
fn issue_11_a_killed_engines_proxy_directory_is_swept_and_a_live_ones_in_another_pid_namespace_kept()
 {
    let unshare = Path::new("/usr/bin/unshare");
    if !unshare.is_file() {
        eprintln!("SKIP: needs unshare (util-linux)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();

    // A: alive, in its own user and PID namespaces, with a pid no process has here.
    let a = Scene::new();
    let a_marker = marker();
    a.write_project(WORKER, &long_script(&a_marker));
    let mut cmd = Command::new(unshare);
    cmd.args([
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
        "echo 3999999 > /proc/sys/kernel/ns_last_pid && \"$0\" run w go",
        common::bin(),
    ]);
    cmd.current_dir(&a.ws)
        .env("HOME", a.root.path().join("home"))
        .env("TMPDIR", tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut engine_a = Killed(cmd.spawn().unwrap());
    wait_for_program(&a_marker, &mut engine_a.0);
    let dirs = proxy_dirs(tmp);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir_a = dirs.into_iter().next().unwrap();
    assert!(
        dir_a.to_string_lossy().contains("perstack-egress-4000000-"),
        "{}",
        dir_a.display()
    );

    // B: killed with SIGKILL while its proxy runs; its directory stays behind.
    let b = Scene::new();
    let b_marker = marker();
    b.write_project(WORKER, &long_script(&b_marker));
    let mut engine_b = b
        .perstack(&["run", "w", "go"])
        .env("TMPDIR", tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_program(&b_marker, &mut engine_b);
    let dirs_b: Vec<PathBuf> = proxy_dirs(tmp)
        .into_iter()
        .filter(|d| d != &dir_a)
        .collect();
    assert_eq!(dirs_b.len(), 1, "{dirs_b:?}");
    engine_b.kill().unwrap();
    engine_b.wait().unwrap();
    assert!(gone(&b_marker));
    assert!(
        dirs_b[0].is_dir(),
        "nothing removes a killed engine's directory by itself"
    );

    // C: a run with a proxy of its own sweeps B's directory, keeps A's, and removes its own.
    let c = Scene::new();
    c.write_project(
        WORKER,
        &format!(
            "[[turns]]\nexpert = \"w\"\ntoolCalls = [{}]\n[[turns]]\nexpert = \"w\"\ntext = \"done\"\n",
            exec_call("true", "true", &[])
        ),
    );
    let mut cmd = c.perstack(&["run", "w", "go"]);
    cmd.env("TMPDIR", tmp);
    let (code, _, stderr) = Finished::of(&mut cmd).parts();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(proxy_dirs(tmp), BTreeSet::from([dir_a]));

    drop(engine_a);
    assert!(gone(&a_marker));
}
