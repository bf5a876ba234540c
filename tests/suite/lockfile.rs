//! `perstack install` writes `perstack.lock`; with it, `perstack run` starts no skill before
//! the first model call, and a skill starts on its first call.

use std::process::Command;

use serde_json::Value;

use super::mcp::fixture_bin;

fn config(dir: &std::path::Path) {
    let toml = format!(
        r#"
[provider]
providerName = "scripted"
[provider.setting]
script = "script.toml"
[experts."worker"]
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
    std::fs::write(dir.join("perstack.toml"), toml).unwrap();
    std::fs::write(
        dir.join("script.toml"),
        r#"
[[turns]]
expert = "worker"
toolCalls = [{ id = "c", name = "echo", args = { text = "lazy hello" } }]
[[turns]]
expert = "worker"
text = "done"
"#,
    )
    .unwrap();
}

fn run(dir: &std::path::Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_perstack"))
        .args(["run", "worker", "go"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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

    let out = Command::new(env!("CARGO_BIN_EXE_perstack"))
        .arg("install")
        .current_dir(dir.path())
        .output()
        .unwrap();
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
