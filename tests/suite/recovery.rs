//! Crash safety: a job killed with SIGKILL at many points finishes after `--continue-job`,
//! with the same answer as an uninterrupted run and no finished step run twice.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use perstack::schema::{Checkpoint, CheckpointStatus};
use serde_json::Value;

const CONFIG: &str = r#"
[provider]
providerName = "scripted"
[provider.setting]
script = "script.toml"

[experts."coordinator"]
instruction = "Delegate both halves, then summarise."
delegates = ["child-a", "child-b"]

[experts."child-a"]
description = "first half"
instruction = "Do the first half."

[experts."child-b"]
description = "second half"
instruction = "Do the second half."
"#;

// Every turn takes a little while, so kills land in every phase of the job.
const SCRIPT: &str = r#"
[[turns]]
expert = "coordinator"
delayMs = 40
toolCalls = [
  { id = "call_a", name = "child-a", args = { query = "first" } },
  { id = "call_b", name = "child-b", args = { query = "second" } },
]
[[turns]]
expert = "child-a"
delayMs = 40
toolCalls = [{ id = "a1", name = "healthCheck" }]
[[turns]]
expert = "child-a"
delayMs = 40
text = "A done."
[[turns]]
expert = "child-b"
delayMs = 90
text = "B done."
[[turns]]
expert = "coordinator"
delayMs = 40
toolCalls = [{ id = "c2", name = "attemptCompletion" }]
[[turns]]
expert = "coordinator"
delayMs = 40
text = "Summary: A done. B done."
"#;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("perstack.toml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("script.toml"), SCRIPT).unwrap();
    dir
}

fn perstack(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perstack"));
    c.args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn job_status(dir: &Path, job: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(dir.join("perstack/jobs").join(job).join("job.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["status"].as_str().map(str::to_owned)
}

fn stored(dir: &Path, job: &str) -> Vec<Checkpoint> {
    let Ok(entries) = std::fs::read_dir(dir.join("perstack/jobs").join(job).join("checkpoints"))
    else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap())
        .collect()
}

fn final_text(cps: &[Checkpoint]) -> Option<String> {
    cps.iter()
        .filter(|c| c.delegated_by.is_none() && c.status == CheckpointStatus::Completed)
        .max_by_key(|c| c.step_number)
        .and_then(|c| c.messages.last())
        .and_then(|m| m.first_text().map(str::to_owned))
}

#[test]
fn a_job_killed_at_any_point_completes_after_continue_with_the_same_answer() {
    // The uninterrupted run.
    let clean = setup();
    let out = perstack(
        clean.path(),
        &["run", "--job-id", "clean", "coordinator", "go"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = final_text(&stored(clean.path(), "clean")).expect("clean run completes");
    assert_eq!(expected, "Summary: A done. B done.");
    let clean_steps = stored(clean.path(), "clean").len();

    // Kill points spread over the whole run (at least 330 ms of scripted model latency),
    // deterministic; the ones before 300 ms always land mid-job, whatever the machine's speed.
    let mut recovered = 0;
    for (i, kill_after_ms) in [
        0u64, 15, 45, 70, 95, 120, 150, 185, 220, 260, 300, 340, 380, 420,
    ]
    .into_iter()
    .enumerate()
    {
        let dir = setup();
        let job = format!("job-kill-{i}");
        let mut child = perstack(dir.path(), &["run", "--job-id", &job, "coordinator", "go"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        let start = Instant::now();
        let mut attempts = 0;
        // Done when the coordinator's completed checkpoint is stored (job.json is written just
        // after it, so a kill in between leaves it saying "running").
        while final_text(&stored(dir.path(), &job)).is_none() {
            attempts += 1;
            assert!(
                attempts <= 3 && start.elapsed() < Duration::from_secs(60),
                "kill at {kill_after_ms} ms: job never completed"
            );
            let out = perstack(
                dir.path(),
                &["run", "--continue-job", &job, "coordinator", "resume"],
            )
            .output()
            .unwrap();
            if out.status.code() == Some(2) {
                // Killed before anything was stored: nothing to continue, run it again.
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("No checkpoint")
                        || err.contains("No job")
                        || err.contains("not found"),
                    "{err}"
                );
                let out = perstack(dir.path(), &["run", "--job-id", &job, "coordinator", "go"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            } else {
                assert!(
                    out.status.success(),
                    "kill at {kill_after_ms} ms: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        recovered += usize::from(attempts > 0);
        let cps = stored(dir.path(), &job);
        let status = job_status(dir.path(), &job);
        assert!(
            matches!(status.as_deref(), Some("completed" | "running")),
            "{status:?}"
        );
        assert_eq!(
            final_text(&cps).as_deref(),
            Some(expected.as_str()),
            "kill at {kill_after_ms} ms"
        );
        // No finished step ran twice: one stored checkpoint per (expert, step), and each child
        // completed exactly once.
        let mut seen: HashMap<(String, u32), usize> = HashMap::new();
        for c in &cps {
            *seen
                .entry((c.expert.key.clone(), c.step_number))
                .or_default() += 1;
        }
        for ((expert, step), n) in &seen {
            assert_eq!(
                *n, 1,
                "kill at {kill_after_ms} ms: {expert} stored step {step} {n} times"
            );
        }
        for child in ["child-a", "child-b"] {
            let done = cps
                .iter()
                .filter(|c| c.expert.key == child && c.status == CheckpointStatus::Completed)
                .count();
            assert_eq!(
                done, 1,
                "kill at {kill_after_ms} ms: {child} completed {done} times"
            );
        }
        assert!(
            cps.len() <= clean_steps + 1,
            "kill at {kill_after_ms} ms: {} checkpoints vs {clean_steps}",
            cps.len()
        );
        // Leftover temporary files never break a later read.
        for c in &cps {
            assert!(!c.id.starts_with(".tmp"));
        }
    }
    assert!(recovered >= 8, "only {recovered} kills landed mid-job");
}
