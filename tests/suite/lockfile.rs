//! `perstack install` writes `perstack.lock`; with it, `perstack run` starts no skill before
//! the first model call, and a skill starts on its first call.

use serde_json::Value;

use super::common::fixture_bin;
use super::common::{self, Finished};

fn config(dir: &std::path::Path) {
    let experts = format!(
        r#"[experts."worker"]
instruction = "Echo."
[experts."worker".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion", "healthCheck"]
[experts."worker".skills."fixture"]
type = "mcpStdioSkill"
command = "{}"
args = ["--stdio"]
lazyInit = true
"#,
        fixture_bin().display()
    );
    let script = r#"
[[turns]]
expert = "worker"
toolCalls = [{ id = "c", name = "echo", args = { text = "lazy hello" } }]
[[turns]]
expert = "worker"
text = "done"
"#;
    common::write_project(dir, &common::scripted(&experts), script);
}

fn run(dir: &std::path::Path) -> Vec<Value> {
    let run = Finished::of(&mut common::perstack(dir, &["run", "worker", "go"]));
    assert!(run.code == 0, "{}", run.stderr);
    run.events
}

fn position(events: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    events.iter().position(pred)
}

#[test]
fn install_writes_a_lockfile_and_runs_start_skills_only_on_first_call() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path());

    // Without a lockfile every skill connects before the first model call.
    let events = run(dir.path());
    let first_gen = position(&events, |e| e["type"] == "startGeneration").unwrap();
    let fixture_up = position(&events, |e| {
        e["type"] == "skillConnected" && e["skillName"] == "fixture"
    })
    .unwrap();
    assert!(fixture_up < first_gen);

    let out = common::perstack(dir.path(), &["install"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Resolving experts",
        "Collecting tool definitions",
        "Generated",
    ] {
        assert!(stdout.contains(needle), "{stdout}");
    }
    let lock = std::fs::read_to_string(dir.path().join("perstack.lock")).unwrap();
    for needle in [
        "version = \"1\"",
        "generatedAt",
        "worker",
        "healthCheck",
        "attemptCompletion",
        "echo",
        "inputSchema",
        "skillName",
        "@perstack/base",
    ] {
        assert!(lock.contains(needle), "{needle} missing from the lockfile");
    }

    // With it, nothing connects before the first model call; the fixture starts on its call.
    let events = run(dir.path());
    let init = &events[position(&events, |e| e["type"] == "initializeRuntime").unwrap()];
    let first_gen_at = position(&events, |e| e["type"] == "startGeneration").unwrap();
    assert!(
        events[..first_gen_at]
            .iter()
            .all(|e| e["type"] != "skillConnected" && e["type"] != "skillStarting"),
        "a skill started before the first model call"
    );
    let first_gen = &events[first_gen_at];
    println!(
        "time to first model call with a lockfile: {} ms",
        first_gen["timestamp"].as_u64().unwrap() - init["timestamp"].as_u64().unwrap()
    );
    let call = position(&events, |e| e["type"] == "callTools").unwrap();
    let up = position(&events, |e| {
        e["type"] == "skillConnected" && e["skillName"] == "fixture"
    })
    .unwrap();
    assert!(up > call, "the fixture starts on its first call");
    let result = events
        .iter()
        .find(|e| e["type"] == "resolveToolResults")
        .unwrap();
    assert_eq!(result["toolResults"][0]["result"][0]["text"], "lazy hello");
    // The base skill was never called, so it never connected and reports no disconnect.
    assert!(!events.iter().any(|e| e["skillName"] == "@perstack/base"));
}

/// Issue 9, item 1: a skill error the model cannot fix stops the run instead of becoming a
/// tool result. A locked skill whose server cannot start fails on its first call; the run
/// stops with `ConfigurationError`, as it does when an unlocked skill fails to start.
#[test]
fn issue_9_a_locked_skill_that_cannot_start_stops_the_run_on_its_first_call() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path());
    let out = common::perstack(dir.path(), &["install"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server goes away after install: the lockfile still lists its tools.
    let toml = std::fs::read_to_string(dir.path().join("perstack.toml")).unwrap();
    let missing = dir.path().join("no-such-server");
    let toml = toml.replace(
        &fixture_bin().display().to_string(),
        &missing.display().to_string(),
    );
    std::fs::write(dir.path().join("perstack.toml"), toml).unwrap();
    let out = common::perstack(dir.path(), &["run", "worker", "go"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let events: Vec<Value> = common::events(&out.stdout);
    assert!(
        !events.iter().any(|e| e["type"] == "resolveToolResults"),
        "the failure went to the model"
    );
    let stop = events
        .iter()
        .find(|e| e["type"] == "stopRunByError")
        .unwrap_or_else(|| panic!("no stop: {stderr}"));
    assert_eq!(stop["error"]["name"], "ConfigurationError");
    let message = stop["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("skill \"fixture\" failed to start"),
        "{message}"
    );
}
