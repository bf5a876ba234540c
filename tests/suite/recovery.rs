//! Crash safety: a job killed with SIGKILL at many points finishes after `--continue-job`,
//! with the same answer as an uninterrupted run and no finished step run twice.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use super::common;
use std::time::{Duration, Instant};

use perstack::schema::{Checkpoint, CheckpointStatus};
use serde_json::Value;

const EXPERTS: &str = r#"
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
    common::project(&common::scripted(EXPERTS), SCRIPT)
}

fn perstack(dir: &Path, args: &[&str]) -> Command {
    let mut c = common::perstack(dir, args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
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
    let expected = final_text(&common::stored(clean.path(), "clean")).expect("clean run completes");
    assert_eq!(expected, "Summary: A done. B done.");
    let clean_steps = common::stored(clean.path(), "clean").len();

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
        while final_text(&common::stored(dir.path(), &job)).is_none() {
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
        let cps = common::stored(dir.path(), &job);
        let status = common::job_status(dir.path(), &job);
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

/// The coordinator of `EXPERTS` with one more skill (beside the base skill it has by default), a
/// stdio server whose command does not exist: it can only fail when the run starts its skills.
fn with_broken_skill(config: &str) -> String {
    config.replace(
        "delegates = [\"child-a\", \"child-b\"]\n",
        "delegates = [\"child-a\", \"child-b\"]\n\n[experts.\"coordinator\".skills.\"@perstack/base\"]\ntype = \"mcpStdioSkill\"\ncommand = \"npx\"\npackageName = \"@perstack/base\"\n\n[experts.\"coordinator\".skills.\"broken\"]\ntype = \"mcpStdioSkill\"\ncommand = \"/nonexistent/perstack-test-skill\"\nargs = [\"serve\"]\n",
    )
}

/// The events a finished `perstack` process printed, and its exit code.
fn events_of(out: &std::process::Output) -> (Option<i32>, Vec<Value>) {
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code(), events)
}

/// Issue 9 (item 3): a recovered parent used to skip the skill start-up check and run its
/// children with a skill missing; it must stop exactly as a fresh start does.
#[test]
fn a_recovered_coordinator_whose_skill_fails_to_start_stops_by_error_as_a_fresh_start_does() {
    // A job that crashed right after the coordinator stopped to delegate: run it whole, then
    // remove every checkpoint stored after the coordinator's `stoppedByDelegate` one.
    let dir = setup();
    let out = perstack(
        dir.path(),
        &["run", "--job-id", "crashed", "coordinator", "go"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checkpoints = dir.path().join("perstack/jobs/crashed/checkpoints");
    let mut kept = 0;
    for entry in std::fs::read_dir(&checkpoints).unwrap() {
        let path = entry.unwrap().path();
        let cp: Checkpoint =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if cp.status == CheckpointStatus::StoppedByDelegate && cp.delegated_by.is_none() {
            kept += 1;
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert_eq!(kept, 1, "one coordinator delegation to recover");

    // The coordinator now has a skill that cannot start.
    std::fs::write(
        dir.path().join("perstack.toml"),
        with_broken_skill(&common::scripted(EXPERTS)),
    )
    .unwrap();
    let recovered = perstack(
        dir.path(),
        &["run", "--continue-job", "crashed", "coordinator", "resume"],
    )
    .output()
    .unwrap();
    let (code, events) = events_of(&recovered);
    let fresh = perstack(
        dir.path(),
        &["run", "--job-id", "fresh", "coordinator", "go"],
    )
    .output()
    .unwrap();
    let (fresh_code, fresh_events) = events_of(&fresh);

    // The coordinator's terminal event (skill lifecycle events may follow it).
    let terminal = |events: &[Value]| {
        events
            .iter()
            .rev()
            .find(|e| {
                e["expertKey"] == "coordinator"
                    && e["type"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("stopRunBy") || t == "completeRun")
            })
            .cloned()
            .expect("the coordinator ended")
    };
    let (last, fresh_last) = (terminal(&events), terminal(&fresh_events));
    assert_eq!(fresh_last["type"], "stopRunByError");
    assert_eq!(last["type"], "stopRunByError", "{events:#?}");
    assert_eq!(last["expertKey"], "coordinator");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains("skill \"broken\""), "{message}");
    assert_eq!(
        last["error"], fresh_last["error"],
        "the same error as a fresh start"
    );
    assert_eq!(code, fresh_code);
    assert_eq!(code, Some(1));
    assert!(
        events
            .iter()
            .all(|e| e["expertKey"] != "child-a" && e["expertKey"] != "child-b"),
        "no child runs without the coordinator's tools: {events:#?}"
    );
    assert_eq!(
        common::job_status(dir.path(), "crashed").as_deref(),
        Some("stoppedByError")
    );
}
