//! Continuing jobs through the CLI: `-i` answers the pending interactive call (also after a
//! mixed turn), `--continue` appends a query to a completed job, `--resume-from` works from
//! every coordinator checkpoint, and a corrupt checkpoint is reported by file name.

use serde_json::Value;
use std::path::Path;

use super::common::{self, Finished};

pub(super) const EXPERTS: &str = r#"
[experts."coord"]
instruction = "Check, ask the user, then answer."
delegates = ["helper"]

[experts."coord".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion", "healthCheck"]

[experts."coord".skills."ui"]
type = "interactiveSkill"

[experts."coord".skills."ui".tools."askUser"]
description = "Ask the user a question"
inputJsonSchema = '{"type":"object","properties":{"question":{"type":"string"}},"required":["question"]}'

[experts."helper"]
description = "Helps"
instruction = "Help."
"#;

// One mixed turn: an MCP call, a delegation and an interactive call, sorted by the engine as
// mcp, delegate, interactive (so the first tool call of the message is NOT the pending one).
pub(super) const SCRIPT: &str = r#"
[[turns]]
expert = "coord"
toolCalls = [
  { id = "ask", name = "askUser", args = { question = "ok?" } },
  { id = "del", name = "helper", args = { query = "help" } },
  { id = "hc", name = "healthCheck" },
]
[[turns]]
expert = "helper"
text = "helped"
[[turns]]
expert = "coord"
text = "The user said yes and the helper helped."
[[turns]]
expert = "coord"
text = "Follow-up answered."
"#;

fn setup() -> tempfile::TempDir {
    common::project(&common::scripted(EXPERTS), SCRIPT)
}

fn perstack(dir: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    Finished::of(&mut common::perstack(dir, args)).parts()
}

fn kinds(events: &[Value], expert: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["expertKey"] == expert && e.get("stepNumber").is_some())
        .map(|e| format!("{}@{}", e["type"].as_str().unwrap(), e["stepNumber"]))
        .filter(|k| !k.contains("Streaming") && !k.starts_with("stream"))
        .collect()
}

#[test]
fn an_interactive_stop_after_a_mixed_turn_is_answered_with_i_and_continues() {
    let dir = setup();
    let (code, events, err) = perstack(dir.path(), &["run", "--job-id", "j1", "coord", "start"]);
    assert_eq!(code, 0, "{err}");
    let stop = events
        .iter()
        .find(|e| e["type"] == "stopRunByInteractiveTool")
        .expect("interactive stop");
    assert_eq!(
        stop["checkpoint"]["pendingToolCalls"][0]["toolName"],
        "askUser"
    );
    assert_eq!(
        stop["checkpoint"]["partialToolResults"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "mcp + delegate results"
    );
    // The last message's first tool call is healthCheck: Perstack's guess would answer it.
    let calls = stop["checkpoint"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["type"] == "expertMessage")
        .unwrap();
    assert_eq!(calls["contents"][0]["toolName"], "healthCheck");

    let (code, events, err) = perstack(
        dir.path(),
        &["run", "--continue-job", "j1", "-i", "coord", "yes"],
    );
    assert_eq!(code, 0, "{err}");
    let start = events.iter().find(|e| e["type"] == "startRun").unwrap();
    assert_eq!(
        start["initialCheckpoint"]["status"],
        "stoppedByInteractiveTool"
    );
    assert_eq!(
        kinds(&events, "coord"),
        [
            "startRun@4",
            "finishAllToolCalls@4",
            "continueToNextStep@4",
            "startGeneration@5",
            "completeRun@5"
        ]
    );
    let tool_message = events
        .iter()
        .find(|e| e["type"] == "finishAllToolCalls")
        .unwrap()["newMessages"][0]
        .clone();
    let answered: Vec<&str> = tool_message["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["toolName"].as_str().unwrap())
        .collect();
    assert_eq!(
        answered.len(),
        3,
        "every call of the turn has its result: {answered:?}"
    );
    assert!(answered.contains(&"askUser"));
    let ask = tool_message["contents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["toolName"] == "askUser")
        .unwrap();
    assert_eq!(ask["contents"][0]["text"], "yes");

    // Continuing the completed job appends the query to the coordinator's history.
    let (code, events, err) = perstack(dir.path(), &["run", "--continue", "coord", "and then?"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        kinds(&events, "coord"),
        ["startRun@6", "startGeneration@6", "completeRun@6"]
    );
    let done = events.iter().find(|e| e["type"] == "completeRun").unwrap();
    assert_eq!(done["text"], "Follow-up answered.");
    let users = done["checkpoint"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "userMessage")
        .count();
    assert_eq!(users, 2, "the first query and the follow-up");
}

#[test]
fn resume_from_works_for_every_coordinator_checkpoint_and_refuses_a_childs() {
    let dir = setup();
    let (code, _, err) = perstack(dir.path(), &["run", "--job-id", "j2", "coord", "start"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = perstack(
        dir.path(),
        &["run", "--continue-job", "j2", "-i", "coord", "yes"],
    );
    assert_eq!(code, 0, "{err}");
    let cps: Vec<Value> = std::fs::read_dir(dir.path().join("perstack/jobs/j2/checkpoints"))
        .unwrap()
        .map(|f| {
            serde_json::from_str(&std::fs::read_to_string(f.unwrap().path()).unwrap()).unwrap()
        })
        .collect();
    let mut resumed = 0;
    for cp in &cps {
        let id = cp["id"].as_str().unwrap();
        let (args, expect): (Vec<&str>, i32) = match (
            cp.get("delegatedBy").is_some(),
            cp["status"].as_str().unwrap(),
        ) {
            (true, _) => (
                vec![
                    "run",
                    "--continue-job",
                    "j2",
                    "--resume-from",
                    id,
                    "coord",
                    "again",
                ],
                2,
            ),
            (false, "stoppedByInteractiveTool") => (
                vec![
                    "run",
                    "--continue-job",
                    "j2",
                    "--resume-from",
                    id,
                    "-i",
                    "coord",
                    "yes",
                ],
                0,
            ),
            (false, _) => (
                vec![
                    "run",
                    "--continue-job",
                    "j2",
                    "--resume-from",
                    id,
                    "coord",
                    "again",
                ],
                0,
            ),
        };
        // Each resume may need its own scripted turns: give it a fresh script.
        std::fs::write(
            dir.path().join("script.toml"),
            "[[turns]]\nexpert = \"coord\"\ntext = \"resumed\"\n[[turns]]\nexpert = \"coord\"\ntext = \"resumed\"\n[[turns]]\nexpert = \"coord\"\ntext = \"resumed\"\n[[turns]]\nexpert = \"coord\"\ntext = \"resumed\"\n",
        )
        .unwrap();
        let (code, events, err) = perstack(dir.path(), &args);
        assert_eq!(code, expect, "checkpoint {id} ({}): {err}", cp["status"]);
        if expect == 0 {
            // A delegation stop resumes its finished children's results and then stops again for
            // the still-pending interactive call; every other checkpoint runs to completion.
            let end = if cp["status"] == "stoppedByDelegate" {
                "stopRunByInteractiveTool"
            } else {
                "completeRun"
            };
            assert!(
                events
                    .iter()
                    .any(|e| e["type"] == end && e["expertKey"] == "coord"),
                "{id}: expected {end}"
            );
            resumed += 1;
        } else {
            assert!(err.contains("coordinator"), "{err}");
        }
    }
    assert!(
        resumed >= 3,
        "resumed from {resumed} coordinator checkpoints"
    );
    let (code, _, err) = perstack(dir.path(), &["run", "--resume-from", "x", "coord", "q"]);
    assert_eq!(code, 2);
    assert!(err.contains("--resume-from requires --continue-job"));
}

#[test]
fn a_corrupt_checkpoint_is_reported_with_its_file_name() {
    let dir = setup();
    let (code, _, err) = perstack(dir.path(), &["run", "--job-id", "j3", "coord", "start"]);
    assert_eq!(code, 0, "{err}");
    let file = std::fs::read_dir(dir.path().join("perstack/jobs/j3/checkpoints"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&file, "{\"id\": \"trunc").unwrap();
    let (code, events, err) = perstack(
        dir.path(),
        &["run", "--continue-job", "j3", "-i", "coord", "yes"],
    );
    assert_ne!(code, 0);
    assert!(events.is_empty());
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(err.contains(name.as_ref()), "{err}");
}
