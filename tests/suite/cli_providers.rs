//! The CLI with real HTTP providers against a local fake server: an unchanged Perstack
//! `perstack.toml` with `providerName = "anthropic"` runs when `ANTHROPIC_BASE_URL` points at
//! the fake Messages API; a missing key is a configuration error naming the variable.

use serde_json::{Value, json};

use super::fake_server::{FakeServer, Reply, sse_event};

const PERSTACK_TOML: &str = r#"
model = "claude-sonnet-4-5"
reasoningBudget = "none"
runtime = "local"

[provider]
providerName = "anthropic"

[experts."e2e-assistant"]
version = "1.0.0"
description = "A test assistant"
instruction = "Answer the question, then call attemptCompletion."

[experts."e2e-assistant".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion", "healthCheck"]
"#;

fn anthropic_stream(blocks: Vec<Value>, stop_reason: &str) -> Reply {
    let mut events = vec![sse_event(
        "message_start",
        &json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",
            "model":"claude-sonnet-4-5","content":[],"stop_reason":null,
            "usage":{"input_tokens":100,"cache_read_input_tokens":5,"output_tokens":1}}}),
    )];
    for (i, b) in blocks.into_iter().enumerate() {
        let (start, delta) = match b["type"].as_str() {
            Some("tool_use") => (
                json!({"type":"tool_use","id":b["id"],"name":b["name"],"input":{}}),
                json!({"type":"input_json_delta","partial_json":b["input"].to_string()}),
            ),
            _ => (
                json!({"type":"text","text":""}),
                json!({"type":"text_delta","text":b["text"]}),
            ),
        };
        events.push(sse_event(
            "content_block_start",
            &json!({"type":"content_block_start","index":i,"content_block":start}),
        ));
        events.push(sse_event(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":i,"delta":delta}),
        ));
        events.push(sse_event(
            "content_block_stop",
            &json!({"type":"content_block_stop","index":i}),
        ));
    }
    events.push(sse_event(
        "message_delta",
        &json!({"type":"message_delta","delta":{"stop_reason":stop_reason},"usage":{"output_tokens":12}}),
    ));
    events.push(sse_event("message_stop", &json!({"type":"message_stop"})));
    Reply::sse(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_anthropic_config_runs_against_a_local_messages_server() {
    let server = FakeServer::start(vec![
        anthropic_stream(
            vec![json!({"type":"tool_use","id":"toolu_1","name":"attemptCompletion","input":{}})],
            "tool_use",
        ),
        anthropic_stream(
            vec![json!({"type":"text","text":"The answer is 42."})],
            "end_turn",
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("perstack.toml"), PERSTACK_TOML).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_perstack"))
        .args(["run", "e2e-assistant", "What is the answer?"])
        .current_dir(dir.path())
        .env("ANTHROPIC_API_KEY", "sk-ant-test-SECRET")
        .env("ANTHROPIC_BASE_URL", format!("{}/v1", server.url()))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("SECRET"));
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e.get("stepNumber").is_some())
        .map(|e| e["type"].as_str().unwrap())
        .filter(|k| !k.contains("Streaming") && !k.starts_with("stream"))
        .collect();
    assert_eq!(
        kinds,
        [
            "startRun",
            "startGeneration",
            "callTools",
            "attemptCompletion",
            "completeRun"
        ]
    );
    let done = events.iter().find(|e| e["type"] == "completeRun").unwrap();
    assert_eq!(done["text"], "The answer is 42.");

    let requests = server.requests().await;
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.body["model"], "claude-sonnet-4-5");
    assert!(
        first.body.get("thinking").is_none(),
        "reasoningBudget none sends no thinking"
    );
    assert_eq!(
        first.body["system"][0]["cache_control"]["type"],
        "ephemeral"
    );
    let tools: Vec<&str> = first.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools.len(), 2);
    assert!(tools.contains(&"attemptCompletion") && tools.contains(&"healthCheck"));
    assert_eq!(first.body["messages"][0]["role"], "user");
    // The run-result generation offers no tools and carries the completion's tool result.
    let second = &requests[1];
    assert!(
        second
            .body
            .get("tools")
            .is_none_or(|t| t.as_array().is_some_and(|a| a.is_empty()))
    );
    let last = second.body["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_api_key_is_a_configuration_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("perstack.toml"), PERSTACK_TOML).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_perstack"))
        .args(["run", "e2e-assistant", "q"])
        .current_dir(dir.path())
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ANTHROPIC_API_KEY"));
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_from_the_provider_stops_the_run_with_its_status_and_exit_code_1() {
    let server = FakeServer::start(vec![
        Reply::status(401).json(json!({"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}})),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("perstack.toml"), PERSTACK_TOML).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_perstack"))
        .args(["run", "e2e-assistant", "q"])
        .current_dir(dir.path())
        .env("ANTHROPIC_API_KEY", "sk-ant-test-SECRET")
        .env("ANTHROPIC_BASE_URL", format!("{}/v1", server.url()))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("SECRET"));
    let stop: Value = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "stopRunByError")
        .unwrap();
    assert_eq!(stop["error"]["statusCode"], 401);
    assert_eq!(stop["error"]["isRetryable"], false);
}
