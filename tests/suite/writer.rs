//! One writer per job (DECISIONS: `Storage::claim`): a second `perstack run` that tries to run
//! or continue a job being written exits 2 naming the holder; `perstack log` reads it anyway;
//! a lock left by a process killed with SIGKILL is taken over by the next continuation.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CONFIG: &str = r#"
[provider]
providerName = "scripted"
[provider.setting]
script = "script.toml"

[experts."slow"]
instruction = "Think for a long time."
"#;

// The model takes a minute: long enough for the test to act while the job runs; the test
// kills every process it started long before.
const SCRIPT: &str = r#"
[[turns]]
expert = "slow"
text = "done"
delayMs = 60000
"#;

/// Bounds every wait on a child's output.
const WAIT: Duration = Duration::from_secs(30);

fn perstack(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_perstack"));
    cmd.args(args).current_dir(dir);
    cmd
}

/// A running `perstack run`, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `perstack` with `args` and returns once it has printed its first event line (the
/// job is claimed before anything is printed).
fn start_and_wait_for_first_event(dir: &Path, args: &[&str]) -> Running {
    let mut child = perstack(dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
        // Keep reading: a closed pipe would end the job early.
        for _ in lines {}
    });
    let line = rx.recv_timeout(WAIT).expect("no event within the deadline");
    assert!(line.contains("\"jobId\":\"shared\""), "{line}");
    running
}

#[test]
fn a_second_writer_of_a_running_job_exits_2_naming_the_holder_and_a_killed_holder_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("perstack.toml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("script.toml"), SCRIPT).unwrap();

    let mut first =
        start_and_wait_for_first_event(dir.path(), &["run", "--job-id", "shared", "slow", "think"]);
    let holder = format!("pid {}", first.0.id());

    for args in [
        &["run", "--continue-job", "shared", "slow", "again"][..],
        &["run", "--job-id", "shared", "slow", "think"][..],
    ] {
        let out = perstack(dir.path(), args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("shared") && stderr.contains(&holder),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "a refused writer prints no event");
    }

    // Reading needs no claim.
    let log = perstack(dir.path(), &["log", "--job", "shared"])
        .output()
        .unwrap();
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );

    // SIGKILL leaves the lock file behind, but not the lock: the next writer takes over.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let _second = start_and_wait_for_first_event(
        dir.path(),
        &["run", "--continue-job", "shared", "slow", "again"],
    );
}
