//! `perstack start` end to end: the real binary in tmux (its own server socket, a fixed 80x24
//! pane), driven with keys and read with `capture-pane`, every wait bounded by a deadline.
//! Without tmux the tests print SKIP, except under `CI`, where tmux must be installed
//! (`.ci/run` installs it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common;

/// How long any one screen may take to appear.
const DEADLINE: Duration = Duration::from_secs(30);

/// A tmux server of this test alone, killed (with the pane's processes) when dropped; its
/// socket lives in a temporary directory of its own (`TMUX_TMPDIR`), removed with it.
struct Tmux {
    socket: String,
    dir: tempfile::TempDir,
}

impl Tmux {
    /// A server running `command` in `dir` in one 80x24 pane, or `None` (SKIP) without tmux.
    fn start(test: &str, dir: &Path, command: &str) -> Option<Tmux> {
        let available = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !available {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: tmux is not installed"
            );
            println!("SKIP {test}: tmux not found (apt-get install tmux)");
            return None;
        }
        let tmux = Tmux {
            socket: format!("perstack-{test}-{}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
        };
        // The pane's shell prints the exit code and stays, so the last screen can be read.
        let shell = format!("{command}; echo EXITED:$?; sleep 120");
        let status = Command::new("tmux")
            .env("TMUX_TMPDIR", tmux.dir.path())
            .args(["-L", &tmux.socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "80", "-y", "24", "-c"])
            .arg(dir)
            .arg(shell)
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session failed");
        Some(tmux)
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .env("TMUX_TMPDIR", self.dir.path())
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// Send tmux key names (`Enter`, `Down`, `C-c`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Type `text` literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
    }

    /// Poll the screen until `ready` holds; panics with the last screen at the deadline.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .env("TMUX_TMPDIR", self.dir.path())
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tui/perstack.toml")
}

fn start_command(args: &str) -> String {
    format!(
        "env NO_COLOR=1 TERM=xterm-256color {} start {args}",
        common::bin()
    )
}

/// The only job stored under `dir`.
fn only_job(dir: &Path) -> String {
    let jobs: Vec<_> = std::fs::read_dir(dir.join("perstack/jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    jobs[0].clone()
}

/// Per run: its Expert and the sorted types of its stored events; sorted.
fn stored_runs(dir: &Path, job: &str) -> Vec<(String, Vec<String>)> {
    let mut runs = Vec::new();
    for run in std::fs::read_dir(dir.join("perstack/jobs").join(job).join("runs")).unwrap() {
        let mut expert = String::new();
        let mut kinds = Vec::new();
        for file in std::fs::read_dir(run.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("event-")
            {
                continue;
            }
            let e: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            expert = e["expertKey"].as_str().unwrap_or_default().to_owned();
            kinds.push(e["type"].as_str().unwrap().to_owned());
        }
        kinds.sort();
        runs.push((expert, kinds));
    }
    runs.sort();
    runs
}

/// `(Expert, step, status)` of every stored checkpoint; sorted.
fn stored_checkpoints(dir: &Path, job: &str) -> Vec<(String, u32, String)> {
    let mut all: Vec<_> = common::stored(dir, job)
        .into_iter()
        .map(|cp| (cp.expert.key, cp.step_number, cp.status.as_str().to_owned()))
        .collect();
    all.sort();
    all
}

#[test]
fn start_selects_an_expert_watches_the_fan_out_answers_continues_and_matches_a_headless_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture();
    let Some(tmux) = Tmux::start(
        "start_e2e",
        dir.path(),
        &start_command(&format!("--config {}", config.display())),
    ) else {
        return;
    };
    tmux.wait_for("the Experts list", |s| {
        s.contains("Experts") && s.contains("coordinator") && s.contains("Enter select")
    });
    // Experts are in key order: child-a, child-b, coordinator.
    tmux.keys(&["Down", "Down"]);
    tmux.wait_for("coordinator selected", |s| s.contains("› coordinator"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("the query input", |s| s.contains("query for coordinator ›"));
    tmux.type_text("hello");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the interactive call", |s| {
        s.contains("waiting for your answer") && s.contains("answer ›")
    });
    for child in ["child-a", "child-b"] {
        let line = screen
            .lines()
            .find(|l| l.contains(child) && l.contains('✓'))
            .unwrap_or_else(|| panic!("{child} not done:\n{screen}"));
        assert!(line.contains("done"), "{line}");
    }
    let tree: Vec<&str> = screen.lines().filter(|l| l.contains("child-")).collect();
    assert!(
        tree[0].contains("child-a") && tree[1].contains("child-b"),
        "{screen}"
    );
    tmux.type_text("yes");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the answered job completing", |s| {
        s.contains("· completed") && s.contains("follow-up ›") && s.contains("step 6/")
    });
    tmux.type_text("anything else?");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the follow-up completing", |s| {
        s.contains("· completed") && s.contains("follow-up ›") && s.contains("step 7/")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the input closed", |s| !s.contains("follow-up ›"));
    tmux.keys(&["q"]);
    tmux.wait_for("the exit", |s| s.contains("EXITED:0"));
    drop(tmux);

    // Started again: the Expert is recent, the job is in the history with its checkpoints.
    let tmux = Tmux::start(
        "start_e2e_history",
        dir.path(),
        &start_command(&format!("--config {}", config.display())),
    )
    .unwrap();
    tmux.wait_for("the recent Expert first", |s| {
        s.contains("› coordinator  (recent)")
    });
    tmux.keys(&["h"]);
    tmux.wait_for("the job history", |s| {
        s.contains("Job history") && s.contains("coordinator completed")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("the job's coordinator checkpoints", |s| {
        s.contains("Checkpoints of") && s.contains("› step   7 completed")
    });
    tmux.keys(&["q"]);
    tmux.wait_for("the exit", |s| s.contains("EXITED:0"));

    // The same script headless: the same runs with the same event types, the same checkpoints.
    let headless = tempfile::tempdir().unwrap();
    let config = config.to_string_lossy().into_owned();
    for args in [
        vec!["run", "--config", &config, "coordinator", "hello"],
        vec![
            "run",
            "--config",
            &config,
            "--continue",
            "-i",
            "coordinator",
            "yes",
        ],
        vec![
            "run",
            "--config",
            &config,
            "--continue",
            "coordinator",
            "anything else?",
        ],
    ] {
        let out = common::perstack(headless.path(), &args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (tui_job, run_job) = (only_job(dir.path()), only_job(headless.path()));
    assert_eq!(
        stored_runs(dir.path(), &tui_job),
        stored_runs(headless.path(), &run_job)
    );
    let checkpoints = stored_checkpoints(dir.path(), &tui_job);
    assert_eq!(checkpoints, stored_checkpoints(headless.path(), &run_job));
    let statuses: BTreeMap<String, usize> =
        checkpoints
            .iter()
            .fold(BTreeMap::new(), |mut m, (_, _, s)| {
                *m.entry(s.clone()).or_default() += 1;
                m
            });
    assert!(
        statuses.contains_key("stoppedByInteractiveTool"),
        "{statuses:?}"
    );
    assert_eq!(
        common::job_status(dir.path(), &tui_job).as_deref(),
        Some("completed")
    );
    // Nothing but the screen went to the terminal: diagnostics are in the log file.
    assert!(dir.path().join("perstack/start.log").is_file());
}

const SLOW: &str = r#"
[experts."slow"]
instruction = "Think for a long time."
"#;

const SLOW_SCRIPT: &str = r#"
[[turns]]
expert = "slow"
delayMs = 60000
text = "too late"
"#;

/// `perstack start` on the slow Expert (job `j1`) in a fresh project, once the job runs.
fn start_slow_job(name: &str) -> Option<(tempfile::TempDir, Tmux)> {
    let dir = common::project(&common::scripted(SLOW), SLOW_SCRIPT);
    let tmux = Tmux::start(name, dir.path(), &start_command("--job-id j1 slow think"))?;
    tmux.wait_for("the running job", |s| {
        s.contains("slow · job j1") && s.contains("running")
    });
    Some((dir, tmux))
}

#[test]
fn ctrl_c_in_start_cancels_the_job_with_its_checkpoint_stored_and_restores_the_terminal() {
    let Some((dir, tmux)) = start_slow_job("start_ctrl_c") else {
        return;
    };
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("the exit", |s| s.contains("EXITED:"));
    // The alternate screen is gone: the shell's line is on the normal screen.
    assert!(!screen.contains("Ctrl-C cancel"), "{screen}");
    assert!(
        screen.contains("EXITED:1"),
        "cancelled = stopped by error:\n{screen}"
    );
    assert_eq!(
        common::job_status(dir.path(), "j1").as_deref(),
        Some("stoppedByError")
    );
    let stored = common::stored(dir.path(), "j1");
    assert!(
        stored
            .iter()
            .any(|cp| cp.status.as_str() == "stoppedByError"),
        "{stored:?}"
    );
}

#[test]
fn sigterm_to_start_cancels_the_job_and_restores_the_terminal() {
    let Some((dir, tmux)) = start_slow_job("start_sigterm") else {
        return;
    };
    // The pane runs `sh -c "env ... perstack start ...; echo ...; sleep 120"`; env execs
    // perstack, the shell's only child while it runs.
    let shell = tmux.tmux(&["list-panes", "-F", "#{pane_pid}"]);
    let out = Command::new("pgrep")
        .args(["-P", shell.trim()])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!pid.is_empty(), "no child of the pane's shell {shell}");
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let screen = tmux.wait_for("the exit", |s| s.contains("EXITED:"));
    assert!(!screen.contains("Ctrl-C cancel"), "{screen}");
    assert_eq!(
        common::job_status(dir.path(), "j1").as_deref(),
        Some("stoppedByError")
    );
    assert!(
        common::stored(dir.path(), "j1")
            .iter()
            .any(|cp| cp.status.as_str() == "stoppedByError")
    );
}

#[test]
fn start_without_a_terminal_is_a_usage_error_pointing_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture().to_string_lossy().into_owned();
    let out = common::perstack(
        dir.path(),
        &["start", "--config", &config, "coordinator", "hi"],
    )
    .stdin(std::process::Stdio::null())
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a terminal") && err.contains("perstack run"),
        "{err}"
    );
    assert!(!dir.path().join("perstack/jobs").exists(), "no job started");
}
