//! The Anthropic provider against a fake Messages API: recorded-shape SSE streams become the
//! right parts, captured request bodies and headers have the API's shape, every failure of the
//! fault matrix ends in a classified `GenerationError` (never a panic or a hang), and no error
//! or part ever carries the API key. Jobs through the engine on this provider are in `jobs`.

use std::time::Duration;

use perstack::llm::anthropic::{AnthropicConfig, AnthropicModel};
use perstack::llm::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, StreamPart, ToolSpec,
};
use perstack::schema::{
    InlinePart, Message, MessagePart, ThinkingPart, ToolCallPart, ToolResult, Usage,
};
use pretty_assertions::assert_eq;
use serde_json::{Map, Value, json};

use super::common::{self, read_tool as tool};
use super::fake_server::{FakeServer, Reply, sse_event};
use super::wire::{assert_class, drain};

mod jobs;

const KEY: &str = "sk-ant-test-SECRET";

fn model(server: &FakeServer) -> AnthropicModel {
    let headers = [("x-custom".to_string(), "custom-value".to_string())].into();
    let base_url = format!("{}/v1", server.url());
    AnthropicModel::new(AnthropicConfig {
        base_url,
        headers,
        ..AnthropicConfig::new(KEY)
    })
    .unwrap()
}

fn request(messages: Vec<Message>, tools: Vec<ToolSpec>, budget: &str) -> GenerationRequest {
    common::request("claude-sonnet-4-5", messages, tools, budget)
}

fn simple(budget: &str) -> GenerationRequest {
    request(common::hi(), vec![tool("readTextFile")], budget)
}

fn ev(name: &str, data: Value) -> String {
    sse_event(name, &data)
}

fn message_start(input: u64, cached: u64) -> String {
    ev(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": input, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached, "output_tokens": 1}}}),
    )
}

/// A content block: its start event, one delta event per `deltas`, its stop event.
fn block(index: u64, start: Value, deltas: impl IntoIterator<Item = Value>) -> Vec<String> {
    let event = |kind: &str, body: Value| {
        let mut v = json!({"type": kind, "index": index});
        v.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        ev(kind, v)
    };
    let mut out = vec![event(
        "content_block_start",
        json!({"content_block": start}),
    )];
    out.extend(
        deltas
            .into_iter()
            .map(|d| event("content_block_delta", json!({"delta": d}))),
    );
    out.push(event("content_block_stop", json!({})));
    out
}

fn message_end(stop_reason: &str, output: u64) -> Vec<String> {
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason,
        "stop_sequence": null}, "usage": {"output_tokens": output}});
    vec![
        ev("message_delta", delta),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

fn tool_use(index: u64, id: &str, name: &str, pieces: &[&str]) -> Vec<String> {
    let start = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
    let deltas = pieces
        .iter()
        .map(|p| json!({"type": "input_json_delta", "partial_json": p}));
    block(index, start, deltas)
}

fn text_block(index: u64, pieces: &[&str]) -> Vec<String> {
    let deltas = pieces
        .iter()
        .map(|p| json!({"type": "text_delta", "text": p}));
    block(index, json!({"type": "text", "text": ""}), deltas)
}

fn thinking_block(index: u64, pieces: &[&str], signature: &str) -> Vec<String> {
    let start = json!({"type": "thinking", "thinking": "", "signature": ""});
    let deltas = pieces
        .iter()
        .map(|p| json!({"type": "thinking_delta", "thinking": p}))
        .chain([json!({"type": "signature_delta", "signature": signature})]);
    block(index, start, deltas)
}

fn stream_of(groups: Vec<Vec<String>>) -> Reply {
    Reply::sse(groups.into_iter().flatten().collect())
}

fn call(id: &str, name: &str, args: Value) -> StreamPart {
    StreamPart::ToolCall(GeneratedToolCall {
        id: id.into(),
        name: name.into(),
        args,
    })
}

fn finish(reason: FinishReason, input: u64, output: u64, cached: u64) -> StreamPart {
    StreamPart::Finish {
        reason,
        usage: Usage {
            input_tokens: input,
            output_tokens: output,
            reasoning_tokens: 0,
            total_tokens: input + output,
            cached_input_tokens: cached,
        },
    }
}

/// `{"path": "README.md"}` in pieces, as the API streams it (the first one empty).
const SPLIT_ARGS: &[&str] = &["", "{\"pa", "th\": \"READ", "ME.md\"}"];

#[tokio::test]
async fn a_tool_calling_turn_assembles_arguments_split_across_deltas() {
    let server = FakeServer::start(vec![stream_of(vec![
        vec![message_start(472, 100), ev("ping", json!({"type": "ping"}))],
        text_block(0, &["Reading it."]),
        tool_use(1, "toolu_01A", "readTextFile", SPLIT_ARGS),
        message_end("tool_use", 89),
    ])])
    .await;
    let (parts, err) = drain(&model(&server), simple("low")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::TextDelta("Reading it.".into()),
            call("toolu_01A", "readTextFile", json!({"path": "README.md"})),
            finish(FinishReason::ToolCalls, 472, 89, 100),
        ]
    );

    let requests = server.requests().await;
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/messages")
    );
    let headers = [
        ("x-api-key", KEY),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
        ("x-custom", "custom-value"),
    ];
    for (name, value) in headers {
        assert_eq!(r.headers[name], value, "header {name}");
    }
    let schema = json!({"type": "object", "properties": {"path": {"type": "string"}}});
    assert_eq!(
        r.body,
        json!({
            // The AI SDK asks for the model's maximum output (64000 for Sonnet 4.5) plus the
            // thinking budget, clamped to that maximum; tool_choice is auto.
            "model": "claude-sonnet-4-5", "max_tokens": 64000, "stream": true,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "system": [{"type": "text", "text": "You are Perstack.",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "tools": [{"name": "readTextFile", "description": "The readTextFile tool",
                       "input_schema": schema}],
            "tool_choice": {"type": "auto"},
        })
    );
}

#[tokio::test]
async fn parallel_tool_calls_come_out_in_block_order() {
    let server = FakeServer::start(vec![stream_of(vec![
        vec![message_start(10, 0)],
        tool_use(0, "toolu_a", "child-a", &["{\"query\":", " \"do A\"}"]),
        tool_use(1, "toolu_b", "child-b", &["{\"query\": \"do B\"}"]),
        message_end("tool_use", 30),
    ])])
    .await;
    let (parts, err) = drain(&model(&server), simple("none")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            call("toolu_a", "child-a", json!({"query": "do A"})),
            call("toolu_b", "child-b", json!({"query": "do B"})),
            finish(FinishReason::ToolCalls, 10, 30, 0),
        ]
    );
    let body = &server.requests().await[0].body;
    assert!(
        body.get("thinking").is_none(),
        "reasoning off sends no thinking: {body}"
    );
}

#[tokio::test]
async fn a_reasoning_turn_streams_thinking_with_its_signature_then_text() {
    let server = FakeServer::start(vec![stream_of(vec![
        vec![message_start(50, 0)],
        thinking_block(0, &["Let me ", "think."], "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"),
        text_block(1, &["The answer", " is 4."]),
        message_end("end_turn", 120),
    ])])
    .await;
    let (parts, err) = drain(&model(&server), simple("low")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::ReasoningDelta("Let me ".into()),
            StreamPart::ReasoningDelta("think.".into()),
            StreamPart::ReasoningEnd {
                signature: Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3h".into())
            },
            StreamPart::TextDelta("The answer".into()),
            StreamPart::TextDelta(" is 4.".into()),
            finish(FinishReason::Stop, 50, 120, 0),
        ]
    );
}

#[tokio::test]
async fn a_plain_text_completion_finishes_with_stop_and_usage() {
    let server = FakeServer::start(vec![stream_of(vec![
        vec![message_start(12, 3)],
        text_block(0, &["Hello", "!"]),
        message_end("end_turn", 2),
    ])])
    .await;
    let req = request(vec![Message::user("Hi")], Vec::new(), "none");
    let (parts, err) = drain(&model(&server), req).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::TextDelta("Hello".into()),
            StreamPart::TextDelta("!".into()),
            finish(FinishReason::Stop, 12, 2, 3),
        ]
    );
    let body = &server.requests().await[0].body;
    assert!(
        body.get("tools").is_none() && body.get("system").is_none(),
        "{body}"
    );
}

/// A Perstack history (instruction with `cache: true`, a user query, an expert turn with
/// signed and unsigned reasoning, text and a tool call, the tool message, a follow-up query)
/// becomes exactly the body the AI SDK's Anthropic provider sends for it: the instruction as a
/// cached system block; unsigned reasoning dropped; tool and user messages merged into one user
/// turn; a single-text tool result as a plain string (`output: {type: "text"}`), a result with
/// an image as a block list (`output: {type: "content"}`).
#[tokio::test]
async fn a_perstack_history_becomes_the_request_the_ai_sdk_sends() {
    let server = FakeServer::start(vec![stream_of(vec![
        vec![message_start(1, 0)],
        text_block(0, &["ok"]),
        message_end("end_turn", 1),
    ])])
    .await;
    let thinking = |text: &str, signature: Option<&str>| {
        MessagePart::ThinkingPart(ThinkingPart {
            id: "t".into(),
            thinking: text.into(),
            signature: signature.map(str::to_string),
            extra: Map::new(),
        })
    };
    let call = |id: &str, path: &str| {
        MessagePart::ToolCallPart(ToolCallPart {
            id: "p".into(),
            tool_call_id: id.into(),
            tool_name: if path.ends_with(".png") {
                "readImageFile"
            } else {
                "readTextFile"
            }
            .into(),
            args: json!({"path": path}).into(),
            extra: Map::new(),
        })
    };
    let expert = Message::expert(vec![
        thinking("I should read both.", Some("sig-1")),
        thinking("unsigned", None),
        MessagePart::text("Reading."),
        call("toolu_01", "a.txt"),
        call("toolu_02", "b.png"),
    ]);
    let image = MessagePart::ImageInlinePart(InlinePart {
        id: "i".into(),
        encoded_data: "iVBORw0KGgo=".into(),
        mime_type: "image/png".into(),
        extra: Map::new(),
    });
    let results = [
        ToolResult {
            id: "toolu_01".into(),
            skill_name: "@perstack/base".into(),
            tool_name: "readTextFile".into(),
            result: vec![MessagePart::text("contents of a")],
            is_error: false,
            extra: Map::new(),
        },
        ToolResult {
            id: "toolu_02".into(),
            skill_name: "@perstack/base".into(),
            tool_name: "readImageFile".into(),
            result: vec![MessagePart::text("b.png, 8 bytes"), image],
            is_error: false,
            extra: Map::new(),
        },
    ];
    let history = vec![
        Message::instruction("You are Perstack."),
        Message::user("Read a.txt and b.png"),
        expert,
        Message::tool(&results),
        Message::user("Now summarise."),
    ];
    let (_, err) = drain(
        &model(&server),
        request(
            history,
            vec![tool("readTextFile"), tool("readImageFile")],
            "medium",
        ),
    )
    .await;
    assert_eq!(err, None);
    let schema = json!({"type": "object", "properties": {"path": {"type": "string"}}});
    let tool = |name: &str| json!({"name": name, "description": format!("The {name} tool"), "input_schema": schema});
    assert_eq!(
        server.requests().await[0].body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 64000,
            "thinking": {"type": "enabled", "budget_tokens": 5000},
            "system": [{"type": "text", "text": "You are Perstack.",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Read a.txt and b.png"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "I should read both.", "signature": "sig-1"},
                    {"type": "text", "text": "Reading."},
                    {"type": "tool_use", "id": "toolu_01", "name": "readTextFile",
                     "input": {"path": "a.txt"}},
                    {"type": "tool_use", "id": "toolu_02", "name": "readImageFile",
                     "input": {"path": "b.png"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "contents of a"},
                    {"type": "tool_result", "tool_use_id": "toolu_02", "content": [
                        {"type": "text", "text": "b.png, 8 bytes"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                     "data": "iVBORw0KGgo="}}
                    ]},
                    {"type": "text", "text": "Now summarise."}
                ]}
            ],
            "tools": [tool("readTextFile"), tool("readImageFile")],
            "tool_choice": {"type": "auto"},
            "stream": true
        })
    );
}

/// Run `simple` against one reply and return the error it must end in.
async fn failure(reply: Reply) -> GenerationError {
    let server = FakeServer::start(vec![reply]).await;
    let (_, err) = drain(&model(&server), simple("low")).await;
    err.expect("the call must fail")
}

fn api_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[tokio::test]
async fn a_429_is_retryable_and_carries_the_retry_after_wait() {
    let limited = api_error(
        "rate_limit_error",
        "Number of requests exceeds your rate limit",
    );
    let e = failure(Reply::status(429).header("retry-after", "1").json(limited)).await;
    assert_class(&e, "APICallError", Some(429), true);
    let wait_named = e.message.contains("rate limit") && e.message.contains("retry after 1s");
    assert!(wait_named, "{e:?}");
    // The header parsing itself is unit-tested in `llm::http`.
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn a_500_and_a_529_are_retryable() {
    let e = failure(Reply::status(500).json(api_error("api_error", "Internal server error"))).await;
    assert_class(&e, "APICallError", Some(500), true);
    let e = failure(Reply::status(529).json(api_error("overloaded_error", "Overloaded"))).await;
    assert_class(&e, "APICallError", Some(529), true);
    assert!(e.message.contains("Overloaded"), "{e:?}");
}

#[tokio::test]
async fn an_overloaded_error_event_mid_stream_is_retryable_with_status_529() {
    let e = failure(stream_of(vec![
        vec![message_start(1, 0)],
        text_block(0, &["Hel"]),
        vec![ev("error", api_error("overloaded_error", "Overloaded"))],
    ]))
    .await;
    assert_class(&e, "APICallError", Some(529), true);
}

#[tokio::test]
async fn a_connection_reset_mid_stream_ends_in_a_retryable_error() {
    let reply = stream_of(vec![vec![message_start(1, 0)], text_block(0, &["partial"])])
        .delay(Duration::from_millis(10))
        .reset_mid_stream();
    let server = FakeServer::start(vec![reply]).await;
    let (parts, err) = drain(&model(&server), simple("low")).await;
    assert_eq!(parts, vec![StreamPart::TextDelta("partial".into())]);
    let e = err.expect("a reset stream must fail");
    assert_class(&e, "APIConnectionError", None, true);
}

#[tokio::test]
async fn a_connection_closed_before_message_stop_ends_in_a_retryable_error() {
    let e = failure(stream_of(vec![vec![message_start(1, 0)]]).close_mid_stream()).await;
    assert_class(&e, "APIConnectionError", None, true);
    let e = failure(stream_of(vec![vec![message_start(1, 0)]])).await;
    assert_class(&e, "StreamClosed", None, true);
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_api_connection_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = AnthropicConfig::new(KEY);
    config.base_url = format!("http://127.0.0.1:{port}/v1");
    let (_, err) = drain(&AnthropicModel::new(config).unwrap(), simple("low")).await;
    let e = err.unwrap();
    assert_class(&e, "APIConnectionError", None, true);
}

#[tokio::test]
async fn a_400_is_not_retryable_and_surfaces_the_api_message() {
    let e = failure(Reply::status(400).json(api_error(
        "invalid_request_error",
        "messages.1.content.0: unexpected `tool_use_id` found in `tool_result` blocks",
    )))
    .await;
    assert_class(&e, "APICallError", Some(400), false);
    assert!(e.message.contains("unexpected `tool_use_id`"), "{e:?}");
}

#[tokio::test]
async fn a_401_is_not_retryable_and_never_echoes_the_key() {
    let e = failure(Reply::status(401).json(api_error(
        "authentication_error",
        &format!("invalid x-api-key {KEY}"),
    )))
    .await;
    assert_class(&e, "APICallError", Some(401), false);
    assert!(e.message.contains("authentication_error"), "{e:?}");
}

#[tokio::test]
async fn invalid_tool_call_json_is_a_retryable_invalid_tool_call_json_error() {
    let e = failure(stream_of(vec![
        vec![message_start(1, 0)],
        tool_use(0, "toolu_x", "readTextFile", &["{\"path\": \"a", ".txt\""]),
        message_end("tool_use", 5),
    ]))
    .await;
    assert_class(&e, "InvalidToolCallJSON", None, true);
    assert!(e.message.contains("readTextFile"), "{e:?}");
}
