//! Skills end to end through `perstack run`: base file tools, `exec`, a real npm MCP server
//! over stdio and over Streamable HTTP, and a skill server that crashes mid-call and is
//! restarted.

use std::path::Path;

use serde_json::Value;

use super::common::{self, Finished};
use super::common::{everything_entry, fixture_bin, start_everything_http};

fn run(dir: &Path, expert: &str, env: &[(&str, &str)]) -> (i32, Vec<Value>, String) {
    let mut cmd = common::perstack(dir, &["run", expert, "go"]);
    cmd.envs(env.iter().copied());
    Finished::of(&mut cmd).parts()
}

/// Result texts by tool name, in order.
fn results(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["type"] == "resolveToolResults")
        .flat_map(|e| e["toolResults"].as_array().unwrap().clone())
        .map(|r| {
            let text = r["result"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>();
            (r["toolName"].as_str().unwrap().to_owned(), text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expert_uses_file_tools_exec_and_a_real_mcp_server_over_stdio_and_http() {
    let Some(entry) = everything_entry("skills_e2e") else {
        return;
    };
    let (_http, addr) = start_everything_http(&entry).await;

    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[experts."worker"]
instruction = "Use every tool you have."

[experts."worker".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["writeTextFile", "readTextFile", "exec", "attemptCompletion"]

[experts."worker".skills."everything"]
type = "mcpStdioSkill"
command = "node"
args = ["{entry}", "stdio"]
pick = ["echo"]

[experts."worker".skills."remote"]
type = "mcpSseSkill"
endpoint = "http://{addr}/mcp"
pick = ["get-sum"]
"#
    );
    std::fs::write(dir.path().join("perstack.toml"), common::scripted(&toml)).unwrap();
    std::fs::write(
        dir.path().join("script.toml"),
        r#"
[[turns]]
expert = "worker"
toolCalls = [{ id = "w", name = "writeTextFile", args = { path = "notes/hello.txt", text = "hello from the engine" } }]
[[turns]]
expert = "worker"
toolCalls = [
  { id = "r", name = "readTextFile", args = { path = "notes/hello.txt" } },
  { id = "x", name = "exec", args = { command = "cat", args = ["notes/hello.txt"], env = {}, cwd = ".", stdout = true, stderr = true } },
  { id = "e", name = "echo", args = { message = "over stdio" } },
  { id = "a", name = "get-sum", args = { a = 2, b = 3 } },
]
[[turns]]
expert = "worker"
toolCalls = [{ id = "done", name = "attemptCompletion" }]
[[turns]]
expert = "worker"
text = "All tools worked."
"#,
    )
    .unwrap();
    let (code, events, stderr) = run(
        dir.path(),
        "worker",
        &[("PERSTACK_ALLOW_PRIVATE_MCP_ENDPOINTS", "1")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes/hello.txt")).unwrap(),
        "hello from the engine"
    );
    let r = results(&events);
    let get = |tool: &str| {
        r.iter()
            .find(|(t, _)| t == tool)
            .map(|(_, x)| x.clone())
            .unwrap_or_default()
    };
    assert!(
        get("readTextFile").contains("hello from the engine"),
        "{r:?}"
    );
    assert!(get("exec").contains("hello from the engine"), "{r:?}");
    assert!(get("echo").contains("over stdio"), "{r:?}");
    assert!(get("get-sum").contains('5'), "{r:?}");
    let connected: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "skillConnected")
        .filter_map(|e| e["skillName"].as_str())
        .collect();
    for skill in ["@perstack/base", "everything", "remote"] {
        assert!(
            connected.contains(&skill),
            "{skill} not connected: {connected:?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "completeRun" && e["text"] == "All tools worked.")
    );
}

#[test]
fn a_skill_server_killed_mid_call_is_restarted_and_the_next_call_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[experts."worker"]
instruction = "Call the fixture."

[experts."worker".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]

[experts."worker".skills."fixture"]
type = "mcpStdioSkill"
command = "{}"
args = ["--stdio"]
"#,
        fixture_bin().display()
    );
    std::fs::write(dir.path().join("perstack.toml"), common::scripted(&toml)).unwrap();
    std::fs::write(
        dir.path().join("script.toml"),
        r#"
[[turns]]
expert = "worker"
toolCalls = [{ id = "c1", name = "crash" }]
[[turns]]
expert = "worker"
toolCalls = [{ id = "c2", name = "echo", args = { text = "back again" } }]
[[turns]]
expert = "worker"
text = "Recovered."
"#,
    )
    .unwrap();
    let (code, events, stderr) = run(dir.path(), "worker", &[]);
    assert_eq!(code, 0, "{stderr}");
    let r = results(&events);
    assert_eq!(r[0].0, "crash");
    assert!(r[0].1.contains("Error calling tool crash"), "{r:?}");
    assert_eq!(r[1], ("echo".to_owned(), "back again".to_owned()), "{r:?}");
    let connects = events
        .iter()
        .filter(|e| e["type"] == "skillConnected" && e["skillName"] == "fixture")
        .count();
    assert_eq!(connects, 2, "the server was restarted once");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "completeRun" && e["text"] == "Recovered.")
    );
}

#[test]
fn a_missing_required_env_names_the_skill_and_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"[experts."worker"]
instruction = "x"
[experts."worker".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
[experts."worker".skills."fixture"]
type = "mcpStdioSkill"
command = "{}"
args = ["--stdio"]
requiredEnv = ["FIXTURE_TOKEN_FOR_TEST"]
"#,
        fixture_bin().display()
    );
    std::fs::write(dir.path().join("perstack.toml"), common::scripted(&toml)).unwrap();
    std::fs::write(dir.path().join("script.toml"), "").unwrap();
    let (code, events, stderr) = run(dir.path(), "worker", &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("fixture") && stderr.contains("FIXTURE_TOKEN_FOR_TEST"),
        "{stderr}"
    );
    assert!(events.is_empty(), "nothing may run");
}

#[test]
fn perstack_base_skill_command_serves_the_base_skill_over_stdio_from_perstack_base() {
    // `perstackBaseSkillCommand` replaces the in-process base skill with a stdio server; this
    // engine's own `perstack base` is one. Same tools, same results, over real MCP.
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
perstackBaseSkillCommand = ["{}", "base"]

[provider]
providerName = "scripted"
[provider.setting]
script = "script.toml"

[experts."worker"]
instruction = "Keep a todo list."

[experts."worker".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["todo", "attemptCompletion"]
"#,
        env!("CARGO_BIN_EXE_perstack")
    );
    std::fs::write(dir.path().join("perstack.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("script.toml"),
        r#"
[[turns]]
expert = "worker"
toolCalls = [{ id = "t1", name = "todo", args = { newTodos = ["write the test"] } }]
[[turns]]
expert = "worker"
text = "Listed."
"#,
    )
    .unwrap();
    let (code, events, stderr) = run(dir.path(), "worker", &[]);
    assert_eq!(code, 0, "{stderr}");
    let starting = events
        .iter()
        .find(|e| e["type"] == "skillStarting")
        .expect("the base skill was spawned");
    assert_eq!(starting["args"], serde_json::json!(["base"]));
    let connected = events
        .iter()
        .find(|e| e["type"] == "skillConnected")
        .unwrap();
    assert_eq!(connected["serverInfo"]["name"], "@perstack/base");
    let r = results(&events);
    assert_eq!(r[0].0, "todo");
    let todos: Value = serde_json::from_str(&r[0].1).unwrap();
    assert_eq!(
        todos["todos"],
        serde_json::json!([{"id": 0, "title": "write the test", "completed": false}])
    );
}

/// The perstack.toml of a scripted `worker` with the base skill (`attemptCompletion` only) and
/// the fixture server over stdio, whose skill table ends with `filter` (its `pick`/`omit`).
fn fixture_worker(filter: &str) -> String {
    format!(
        r#"
[provider]
providerName = "scripted"
[provider.setting]
script = "script.toml"

[experts."worker"]
instruction = "Call the fixture."

[experts."worker".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]

[experts."worker".skills."fixture"]
type = "mcpStdioSkill"
command = "{}"
args = ["--stdio"]
{filter}
"#,
        fixture_bin().display()
    )
}

/// A worker with the fixture skill whose one turn calls `sleep {ms}`, then answers "Done.".
fn sleeping_worker(dir: &Path, ms: u64) {
    let toml = fixture_worker(r#"pick = ["sleep"]"#);
    std::fs::write(dir.join("perstack.toml"), toml).unwrap();
    let script = format!(
        r#"
[[turns]]
expert = "worker"
toolCalls = [{{ id = "c1", name = "sleep", args = {{ ms = {ms} }} }}]
[[turns]]
expert = "worker"
text = "Done."
"#
    );
    std::fs::write(dir.join("script.toml"), script).unwrap();
}

/// Issue 9: `PERSTACK_TOOL_TIMEOUT_MS` is the tool-call timeout (it was ignored; calls were
/// bounded by the generation `timeout` and an inner 60 s instead). A call that outlives it
/// becomes an error text for the model and the run goes on.
#[test]
fn a_tool_call_that_outlives_perstack_tool_timeout_ms_becomes_an_error_for_the_model() {
    let dir = tempfile::tempdir().unwrap();
    sleeping_worker(dir.path(), 20_000);
    let started = std::time::Instant::now();
    let (code, events, stderr) = run(dir.path(), "worker", &[("PERSTACK_TOOL_TIMEOUT_MS", "300")]);
    assert_eq!(code, 0, "{stderr}");
    let r = results(&events);
    assert_eq!(
        r,
        [(
            "sleep".to_owned(),
            "Error calling tool sleep: no answer within 300 ms".to_owned()
        )]
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert!(events.iter().any(|e| e["type"] == "completeRun"));

    let (code, _, stderr) = run(
        dir.path(),
        "worker",
        &[("PERSTACK_TOOL_TIMEOUT_MS", "soon")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("PERSTACK_TOOL_TIMEOUT_MS"), "{stderr}");
}

/// Issue 9: the generation `timeout` no longer bounds tool calls: a call longer than
/// `--timeout` finishes inside the larger tool timeout.
#[test]
fn a_tool_call_longer_than_the_generation_timeout_finishes_inside_the_tool_timeout() {
    let dir = tempfile::tempdir().unwrap();
    sleeping_worker(dir.path(), 2_500);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_perstack"))
        .args(["run", "worker", "go", "--timeout", "1500"])
        .env("PERSTACK_TOOL_TIMEOUT_MS", "30000")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        results(&events),
        [("sleep".to_owned(), "slept 2500 ms".to_owned())]
    );
}

/// Issue 9: `pick`/`omit` are applied once, by the tool catalog, for every skill kind: an
/// omitted tool is not offered, and a call to it never reaches the server.
#[test]
fn an_omitted_tool_is_not_offered_and_a_call_to_it_never_reaches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let toml = fixture_worker("pick = [\"echo\", \"log\"]\nomit = [\"log\"]");
    std::fs::write(dir.path().join("perstack.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("script.toml"),
        r#"
[[turns]]
expert = "worker"
toolCalls = [{ id = "c1", name = "log", args = { text = "REACHED-OMITTED" } }]
[[turns]]
expert = "worker"
toolCalls = [{ id = "c2", name = "echo", args = { text = "after" } }]
[[turns]]
expert = "worker"
text = "Done."
"#,
    )
    .unwrap();
    let (code, events, stderr) = run(dir.path(), "worker", &[]);
    assert_eq!(code, 0, "{stderr}");
    let r = results(&events);
    assert_eq!(r[0].0, "log");
    assert!(r[0].1.contains("not found"), "{r:?}");
    assert_eq!(r[1], ("echo".to_owned(), "after".to_owned()), "{r:?}");
    let reached = events.iter().any(|e| {
        e["type"] == "skillStderr" && e["message"].as_str().is_some_and(|m| m.contains("REACHED"))
    });
    assert!(!reached, "the omitted tool reached the server");
}
