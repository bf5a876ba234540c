//! The native sandbox end to end through `perstack run` (issue 11): `exec` commands and a
//! hostile stdio MCP server try to read a private key, another workspace and the job's
//! checkpoints, to write outside the workspace, to reach the host's loopback, to fork without
//! bound and to leave a grandchild behind; each attempt fails and the run completes. Also: the
//! engine killed with `SIGKILL` leaves no process behind, the same attacks fail for an
//! unprivileged engine (uid 65534 through `setpriv`), and an unavailable sandbox refuses the
//! run (exit 2) instead of running unconfined.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::{self, Finished};

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY----- sandbox-test-secret";
const OTHER: &str = "the other workspace's secret";
const CHECKPOINT: &str = "a stored checkpoint's secret";

/// Everything an attack aims at, in one temporary directory.
pub(super) struct Scene {
    pub(super) root: tempfile::TempDir,
    home: PathBuf,
    pub(super) key: PathBuf,
    other: PathBuf,
    outside: PathBuf,
    pub(super) ws: PathBuf,
    checkpoint: PathBuf,
    /// A listener on the host's loopback: nothing from the sandbox may reach it.
    listener: TcpListener,
}

impl Scene {
    pub(super) fn new() -> Scene {
        let root = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(root.path()).unwrap();
        let home = base.join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let key = home.join(".ssh/id_rsa");
        std::fs::write(&key, KEY).unwrap();
        let other = base.join("other/secret.txt");
        std::fs::create_dir_all(other.parent().unwrap()).unwrap();
        std::fs::write(&other, OTHER).unwrap();
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let ws = base.join("ws");
        let checkpoint = ws.join("perstack/jobs/old/checkpoints/c.json");
        std::fs::create_dir_all(checkpoint.parent().unwrap()).unwrap();
        std::fs::write(&checkpoint, CHECKPOINT).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Scene {
            root,
            home,
            key,
            other,
            outside,
            ws,
            checkpoint,
            listener,
        }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    pub(super) fn write_project(&self, experts: &str, script: &str) {
        common::write_project(&self.ws, &common::scripted(experts), script);
    }

    /// `perstack <args>` in the workspace with the fake `HOME`.
    pub(super) fn perstack(&self, args: &[&str]) -> Command {
        let mut cmd = common::perstack(&self.ws, args);
        cmd.env("HOME", &self.home);
        cmd
    }

    /// Nothing reached the loopback listener and nothing was written outside.
    fn assert_untouched(&self) {
        assert!(
            self.listener.accept().is_err(),
            "a sandboxed process connected to the host's loopback"
        );
        assert!(
            std::fs::read_dir(&self.outside).unwrap().next().is_none(),
            "a sandboxed process wrote outside the workspace"
        );
    }
}

/// The text of the result of tool call `id`.
pub(super) fn result(events: &[Value], id: &str) -> String {
    common::tool_results(events)
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, text)| text)
        .unwrap_or_else(|| panic!("no result for {id}"))
}

/// Processes on the host whose command line contains `marker`.
pub(super) fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// Processes running `marker` themselves (not a trampoline whose policy names it).
pub(super) fn programs_with(marker: &str) -> Vec<u32> {
    processes_with(marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| !String::from_utf8_lossy(&c).contains("sandbox-exec"))
        })
        .collect()
}

/// Waits (bounded) until no process carries `marker`; on failure prints what is left.
pub(super) fn gone(marker: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if processes_with(marker).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in processes_with(marker) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        eprintln!(
            "left behind: {pid} {:?} {}",
            String::from_utf8_lossy(&cmdline),
            status
                .lines()
                .filter(|l| l.starts_with("NSpid")
                    || l.starts_with("Sig")
                    || l.starts_with("ShdPnd")
                    || l.starts_with("PPid")
                    || l.starts_with("Threads")
                    || l.starts_with("Cap"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    false
}

/// A unique `sleep` argument, so that the test finds its own processes only.
pub(super) fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}.{:09}", 300 + std::process::id() % 100, nanos)
}

pub(super) fn exec_call(id: &str, command: &str, args: &[&str]) -> String {
    let args = args
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{{ id = \"{id}\", name = \"exec\", args = {{ command = \"{command}\", args = [{args}], \
         env = {{}}, cwd = \".\", stdout = true, stderr = true, timeout = 30000 }} }}"
    )
}

pub(super) const WORKER: &str = r#"
[experts."w"]
instruction = "Try everything."
"#;

/// The `exec` attacks, run by `command` (the `perstack` command line, possibly wrapped).
fn exec_attacks_fail_and_the_run_completes(scene: &Scene, wrap: impl Fn(Command) -> Command) {
    let grand = marker();
    let calls = [
        exec_call("ssh", "cat", &[scene.key.to_str().unwrap()]),
        exec_call("other", "cat", &[scene.other.to_str().unwrap()]),
        exec_call(
            "write",
            "sh",
            &[
                "-c",
                &format!("echo escaped > {}/x", scene.outside.display()),
            ],
        ),
        exec_call(
            "ckpt",
            "sh",
            &[
                "-c",
                "ls -A perstack; cat perstack/jobs/old/checkpoints/c.json",
            ],
        ),
        exec_call(
            "net",
            "bash",
            &[
                "-c",
                &format!("echo hi > /dev/tcp/127.0.0.1/{}", scene.port()),
            ],
        ),
        exec_call(
            "grand",
            "sh",
            &[
                "-c",
                &format!("setsid sleep {grand} < /dev/null > /dev/null 2>&1 & echo started"),
            ],
        ),
        exec_call("mine", "sh", &["-c", "echo mine > mine.txt; cat mine.txt"]),
        // The program starts with no signal blocked, whatever the trampoline blocks.
        exec_call("mask", "grep", &["SigBlk", "/proc/self/status"]),
    ];
    // At most 2,000 forks, so that a missing limit cannot take the machine down.
    let fork = exec_call(
        "fork",
        "sh",
        &[
            "-c",
            "i=0; while [ $i -lt 2000 ]; do sleep 30 & i=$((i+1)); done; echo spawned=$i",
        ],
    );
    let script = format!(
        r#"
[[turns]]
expert = "w"
toolCalls = [{}]
[[turns]]
expert = "w"
toolCalls = [{fork}]
[[turns]]
expert = "w"
toolCalls = [{{ id = "done", name = "attemptCompletion" }}]
[[turns]]
expert = "w"
text = "still healthy"
"#,
        calls.join(",\n")
    );
    scene.write_project(WORKER, &script);
    let mut cmd = wrap(scene.perstack(&["run", "--verbose", "w", "go"]));
    let Finished {
        code,
        events,
        stderr,
    } = Finished::of(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "completeRun" && e["text"] == "still healthy"),
        "{stderr}"
    );
    assert!(stderr.contains("sandbox policy for"), "{stderr}");

    let ssh = result(&events, "ssh");
    assert!(!ssh.contains("sandbox-test-secret"), "{ssh}");
    assert!(ssh.contains("No such file"), "{ssh}");
    let other = result(&events, "other");
    assert!(!other.contains(OTHER), "{other}");
    assert!(other.contains("exit code 1"), "{other}");
    let ckpt = result(&events, "ckpt");
    assert!(!ckpt.contains(CHECKPOINT), "{ckpt}");
    let net = result(&events, "net");
    assert!(net.contains("failed"), "{net}");
    let fork = result(&events, "fork");
    assert!(!fork.contains("spawned=2000"), "{fork}");
    assert!(fork.to_lowercase().contains("fork"), "{fork}");
    assert!(result(&events, "grand").contains("started"));
    assert!(
        result(&events, "mask").contains("0000000000000000"),
        "{}",
        result(&events, "mask")
    );
    // The workspace itself stays writable.
    assert!(result(&events, "mine").contains("mine"));
    assert_eq!(
        std::fs::read_to_string(scene.ws.join("mine.txt")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(&scene.checkpoint).unwrap(),
        CHECKPOINT
    );
    scene.assert_untouched();
    assert!(gone(&grand), "the detached grandchild outlived its command");
}

#[test]
fn exec_commands_cannot_escape_and_the_run_completes() {
    let scene = Scene::new();
    exec_attacks_fail_and_the_run_completes(&scene, |cmd| cmd);
}

/// The same attacks with the engine running as `nobody` (uid 65534), where user namespaces
/// are unprivileged: CI runs as root, where they always work.
#[test]
fn exec_commands_cannot_escape_for_an_unprivileged_engine() {
    let root = nix_is_root();
    let setpriv = Path::new("/usr/bin/setpriv").is_file();
    if !root || !setpriv {
        println!(
            "SKIP exec_commands_cannot_escape_for_an_unprivileged_engine: needs root and setpriv"
        );
        return;
    }
    let scene = Scene::new();
    chown_tree(scene.root.path(), 65534);
    exec_attacks_fail_and_the_run_completes(&scene, |cmd| {
        let mut wrapped = Command::new("/usr/bin/setpriv");
        wrapped
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .current_dir(cmd.get_current_dir().unwrap())
            .env(
                "HOME",
                cmd.get_envs()
                    .find(|(k, _)| *k == "HOME")
                    .unwrap()
                    .1
                    .unwrap(),
            );
        wrapped
    });
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

fn chown_tree(path: &Path, id: u32) {
    std::os::unix::fs::lchown(path, Some(id), Some(id)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), id);
        }
    }
}

/// The hostile server's `[experts."w".skills."hostile"]` table; `tag` goes on its command line
/// so that the test can find the server's process.
fn hostile_skill(tag: &str) -> Option<String> {
    let node = ["/usr/bin/node", "/usr/local/bin/node"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    let Some(node) = node else {
        assert!(std::env::var_os("CI").is_none(), "node is missing");
        println!("SKIP: node is not installed");
        return None;
    };
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sandbox/hostile_server.mjs");
    Some(format!(
        r#"
[experts."w".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"

[experts."w".skills."hostile"]
type = "mcpStdioSkill"
command = "{node}"
args = ["{}", "{tag}"]
"#,
        script.display()
    ))
}

fn attack_call(scene: &Scene, marker: &str) -> String {
    format!(
        "{{ id = \"attack\", name = \"attack\", args = {{ key = \"{}\", other = \"{}\", \
         checkpoint = \"{}\", outside = \"{}\", port = {}, marker = \"{marker}\" }} }}",
        scene.key.display(),
        scene.other.display(),
        scene.checkpoint.display(),
        scene.outside.join("x").display(),
        scene.port()
    )
}

#[test]
fn a_hostile_mcp_server_gets_nowhere_and_leaves_nothing_behind() {
    let Some(skill) = hostile_skill("unused") else {
        return;
    };
    let scene = Scene::new();
    let grand = marker();
    let script = format!(
        r#"
[[turns]]
expert = "w"
toolCalls = [{}]
[[turns]]
expert = "w"
toolCalls = [{{ id = "done", name = "attemptCompletion" }}]
[[turns]]
expert = "w"
text = "still healthy"
"#,
        attack_call(&scene, &grand)
    );
    scene.write_project(&format!("{WORKER}{skill}"), &script);
    let Finished {
        code,
        events,
        stderr,
    } = Finished::of(&mut scene.perstack(&["run", "w", "go"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "completeRun" && e["text"] == "still healthy")
    );
    let report: Value = serde_json::from_str(&result(&events, "attack")).unwrap();
    for attempt in [
        "sshKey",
        "otherWorkspace",
        "checkpointFile",
        "writeOutside",
        "loopback",
    ] {
        let got = report[attempt].as_str().unwrap();
        assert!(got.starts_with("denied"), "{attempt}: {report}");
    }
    // The job's directory is there, but empty.
    assert_eq!(report["checkpoints"], "GOT (empty)", "{report}");
    assert_eq!(report["grandchild"], "spawned");
    scene.assert_untouched();
    assert!(gone(&grand), "the server's grandchild outlived the run");
}

#[test]
fn an_engine_killed_with_sigkill_leaves_no_skill_process_behind() {
    let server = format!("server-{}", marker());
    let Some(skill) = hostile_skill(&server) else {
        return;
    };
    let scene = Scene::new();
    let grand = marker();
    let long = marker();
    let script = format!(
        r#"
[[turns]]
expert = "w"
toolCalls = [{}]
[[turns]]
expert = "w"
toolCalls = [{}]
[[turns]]
expert = "w"
text = "never reached"
"#,
        attack_call(&scene, &grand),
        exec_call("long", "sleep", &[&long])
    );
    scene.write_project(&format!("{WORKER}{skill}"), &script);
    let mut engine = scene
        .perstack(&["run", "w", "go"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while programs_with(&long).is_empty()
        || programs_with(&grand).is_empty()
        || programs_with(&server).is_empty()
    {
        if Instant::now() > deadline || engine.try_wait().unwrap().is_some() {
            let _ = engine.kill();
            let _ = engine.wait();
            panic!("the skill processes never started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    engine.kill().unwrap();
    engine.wait().unwrap();
    assert!(gone(&long), "exec's command outlived the engine");
    assert!(
        gone(&grand),
        "the MCP server's grandchild outlived the engine"
    );
    assert!(gone(&server), "the MCP server outlived the engine");
}

#[test]
fn an_unavailable_sandbox_refuses_the_run_with_exit_2_and_local_runs_unconfined() {
    let scene = Scene::new();
    let script = format!(
        r#"
[[turns]]
expert = "w"
toolCalls = [{}]
[[turns]]
expert = "w"
text = "done"
"#,
        exec_call("ssh", "cat", &[scene.key.to_str().unwrap()])
    );
    scene.write_project(WORKER, &script);
    for extra in [&[][..], &["--runtime", "docker"][..]] {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        args.extend(["w", "go"]);
        let mut cmd = scene.perstack(&args);
        cmd.env(perstack::sandbox::PROBE_OVERRIDE_ENV, "unavailable");
        let Finished {
            code,
            events,
            stderr,
        } = Finished::of(&mut cmd);
        assert_eq!(code, 2, "{stderr}");
        assert!(events.is_empty(), "{events:?}");
        assert!(stderr.contains("the sandbox is unavailable"), "{stderr}");
        assert!(stderr.contains("--runtime local"), "{stderr}");
    }
    // `--runtime local` never asks: unconfined, the command reads what the user can.
    let mut cmd = scene.perstack(&["run", "--runtime", "local", "w", "go"]);
    cmd.env(perstack::sandbox::PROBE_OVERRIDE_ENV, "unavailable");
    let Finished {
        code,
        events,
        stderr,
    } = Finished::of(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(result(&events, "ssh").contains("sandbox-test-secret"));
}

/// The engine killed while a sandbox is still being set up (its trampoline exists, the program
/// may not yet): nothing is left either, whichever stage the kill caught.
#[test]
fn an_engine_killed_during_sandbox_set_up_leaves_nothing_behind() {
    let scene = Scene::new();
    let long = marker();
    let script = format!(
        r#"
[[turns]]
expert = "w"
toolCalls = [{}]
[[turns]]
expert = "w"
text = "never reached"
"#,
        exec_call("long", "sleep", &[&long])
    );
    scene.write_project(WORKER, &script);
    let mut engine = scene
        .perstack(&["run", "w", "go"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The first process naming the marker is the trampoline's outer stage.
    while processes_with(&long).is_empty() {
        if Instant::now() > deadline || engine.try_wait().unwrap().is_some() {
            let _ = engine.kill();
            let _ = engine.wait();
            panic!("the sandbox never started");
        }
        std::thread::yield_now();
    }
    engine.kill().unwrap();
    engine.wait().unwrap();
    assert!(gone(&long), "a sandbox being set up outlived the engine");
}
