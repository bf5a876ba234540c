//! Jobs through the engine on the Anthropic provider and the fake Messages API: a
//! reasoning turn that completes (the result call sends no tools, the thinking block goes back
//! with its signature), and an MCP result marked `isError` that reaches the model as an error
//! tool result.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use perstack::engine::{Engine, JobRequest, Settings};
use perstack::schema::{ReasoningBudget, ReasoningLevel};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::super::fake_server::FakeServer;
use super::{message_end, message_start, model, stream_of, text_block, thinking_block, tool_use};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_through_the_engine_completes_with_the_result_text_and_no_tools_on_the_result_call() {
    let server = FakeServer::start(vec![
        stream_of(vec![
            vec![message_start(900, 0)],
            thinking_block(0, &["Done already."], "sig-e2e"),
            tool_use(1, "toolu_done", "attemptCompletion", &["{}"]),
            message_end("tool_use", 20),
        ]),
        stream_of(vec![
            vec![message_start(950, 900)],
            text_block(0, &["Final ", "answer."]),
            message_end("end_turn", 5),
        ]),
    ])
    .await;
    let toml = r#"
model = "claude-sonnet-4-5"

[experts."coord"]
description = "Answers"
instruction = "Answer the question."

[experts."coord".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]
"#;
    let config = perstack::config::parse(toml, Path::new("perstack.toml")).unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(config.experts.clone());
    settings.workspace = workspace.path().to_path_buf();
    settings.reasoning_budget = ReasoningBudget::Level(ReasoningLevel::Low);
    let engine = Engine::builder()
        .settings(settings)
        .model(Arc::new(model(&server)))
        .build();
    let mut handle = engine
        .start(JobRequest::new("coord", "What is 2+2?").subscribe())
        .await
        .unwrap();
    let mut rx = handle.take_events().unwrap();
    let events = tokio::spawn(async move {
        let (mut all, mut kinds) = (String::new(), Vec::new());
        while let Some(e) = rx.recv().await {
            all.push_str(&format!("{:?}\n", e.event));
            if e.event.expert_key.is_some() {
                kinds.push(e.event.kind().to_string());
            }
        }
        (all, kinds)
    });
    let outcome = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("the job did not finish")
        .unwrap();
    engine.shutdown().await;
    assert_eq!(outcome.text.as_deref(), Some("Final answer."));
    let events = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .unwrap()
        .unwrap();
    let (events, kinds) = events;
    assert!(events.contains("Done already.") && !events.contains("SECRET"));
    // Perstack's s01 sequence, with the reasoning of the first call streamed in front of it
    // (reasoning streams in both generations; the result text only in the run-result one).
    assert_eq!(
        kinds,
        [
            "startRun",
            "startGeneration",
            "startStreamingReasoning",
            "streamReasoning",
            "completeStreamingReasoning",
            "callTools",
            "attemptCompletion",
            "startStreamingRunResult",
            "streamRunResult",
            "streamRunResult",
            "completeStreamingRunResult",
            "completeRun",
        ]
    );

    let requests = server.requests().await;
    assert_eq!(requests.len(), 2);
    let first_tools = &requests[0].body["tools"];
    assert_eq!(
        first_tools.as_array().map(Vec::len),
        Some(1),
        "{first_tools}"
    );
    assert_eq!(first_tools[0]["name"], "attemptCompletion");
    let second = &requests[1].body;
    assert!(
        second.get("tools").is_none(),
        "the result call offers no tools: {second}"
    );
    let messages = second["messages"].as_array().unwrap();
    let assistant = messages
        .iter()
        .find(|m| m["role"] == "assistant")
        .expect("the history holds the model's turn");
    assert_eq!(
        assistant["content"][0],
        json!({"type": "thinking", "thinking": "Done already.", "signature": "sig-e2e"})
    );
    assert_eq!(assistant["content"][1]["type"], "tool_use");
    let has_result = messages.iter().any(|m| {
        m["content"].as_array().is_some_and(|c| {
            c.iter()
                .any(|b| b["type"] == "tool_result" && b["tool_use_id"] == "toolu_done")
        })
    });
    assert!(has_result, "the tool result follows: {second}");
}

/// Issue 9: an MCP result marked `isError: true` reaches the model as an error (Perstack drops
/// the flag). The fixture's `huge` refuses a size past its limit with an `isError` result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_result_marked_is_error_reaches_the_model_as_an_error_tool_result() {
    let server = FakeServer::start(vec![
        stream_of(vec![
            vec![message_start(100, 0)],
            tool_use(0, "toolu_fail", "huge", &[r#"{"bytes": 999999999999}"#]),
            tool_use(1, "toolu_ok", "echo", &[r#"{"text": "fine"}"#]),
            message_end("tool_use", 20),
        ]),
        stream_of(vec![
            vec![message_start(200, 0)],
            tool_use(0, "toolu_done", "attemptCompletion", &["{}"]),
            message_end("tool_use", 5),
        ]),
        stream_of(vec![
            vec![message_start(300, 0)],
            text_block(0, &["Done."]),
            message_end("end_turn", 5),
        ]),
    ])
    .await;
    let toml = format!(
        r#"
model = "claude-sonnet-4-5"

[experts."coord"]
instruction = "Call the fixture."

[experts."coord".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]

[experts."coord".skills."fixture"]
type = "mcpStdioSkill"
command = "{}"
args = ["--stdio"]
pick = ["huge", "echo"]
"#,
        super::common::fixture_bin().display()
    );
    let config = perstack::config::parse(&toml, Path::new("perstack.toml")).unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(config.experts.clone());
    settings.workspace = workspace.path().to_path_buf();
    let engine = Engine::builder()
        .settings(settings)
        .model(Arc::new(model(&server)))
        .build();
    let handle = engine.start(JobRequest::new("coord", "Go.")).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("the job did not finish")
        .unwrap();
    engine.shutdown().await;
    assert_eq!(outcome.text.as_deref(), Some("Done."));

    let requests = server.requests().await;
    assert_eq!(requests.len(), 3);
    let second = &requests[1].body;
    let result_of = |id: &str| -> Value {
        second["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no tool_result for {id} in {second}"))
    };
    let failed = result_of("toolu_fail");
    assert_eq!(failed["is_error"], json!(true), "{failed}");
    assert!(failed.to_string().contains("at most"), "{failed}");
    let ok = result_of("toolu_ok");
    assert!(ok.get("is_error").is_none(), "{ok}");
}
