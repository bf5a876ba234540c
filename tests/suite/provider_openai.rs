//! The OpenAI-compatible providers (`openai`, `deepseek`, `azure-openai`) against a fake Chat
//! Completions API: recorded-shape SSE chunks become the right parts, captured request bodies,
//! URLs and headers have the API's shape, every failure of the fault matrix ends in a
//! classified `GenerationError` (never a panic or a hang), and no error or part ever carries
//! the API key.

use std::time::Duration;

use futures::StreamExt;
use perstack::llm::openai::{OpenAiConfig, OpenAiModel};
use perstack::llm::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, LanguageModel, StreamPart,
};
use perstack::schema::{Message, MessagePart, ThinkingPart, Usage};
use pretty_assertions::assert_eq;
use serde_json::{Map, Value, json};

use super::common::{self, read_both_history, read_tool as tool, request};
use super::fake_server::{FakeServer, Reply};
use super::wire::{assert_class, drain};

const KEY: &str = "sk-proj-test-SECRET";

/// `config` pointed at `{server}/v1`.
fn at(server: &FakeServer, config: OpenAiConfig) -> OpenAiModel {
    let base_url = format!("{}/v1", server.url());
    OpenAiModel::new(OpenAiConfig { base_url, ..config }).unwrap()
}

fn openai(server: &FakeServer) -> OpenAiModel {
    let headers = [("x-custom".to_string(), "custom-value".to_string())].into();
    let (organization, project) = (Some("org-123".into()), Some("proj_456".into()));
    let mut config = OpenAiConfig::openai(KEY);
    (config.organization, config.project, config.headers) = (organization, project, headers);
    at(server, config)
}

/// `Hi` to `model`, without tools.
fn ask(model: &str, budget: &str) -> GenerationRequest {
    request(model, vec![Message::user("Hi")], Vec::new(), budget)
}

fn simple(budget: &str) -> GenerationRequest {
    request("o4-mini", common::hi(), vec![tool("readTextFile")], budget)
}

/// One `data:` event holding a chat.completion.chunk with `delta` for choice 0.
fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    let data = json!({
        "id": "chatcmpl-C3x9", "object": "chat.completion.chunk", "created": 1_754_000_000,
        "model": "o4-mini-2025-04-16", "service_tier": "default", "system_fingerprint": null,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null, "obfuscation": "xY"
    });
    format!("data: {data}\n\n")
}

fn role() -> String {
    chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )
}

fn text(t: &str) -> String {
    chunk(json!({"content": t}), None)
}

fn stop(reason: &str) -> String {
    chunk(json!({}), Some(reason))
}

/// A tool-call fragment: the first one of a call carries its id and name.
fn frag(index: u64, first: Option<(&str, &str)>, args: &str) -> String {
    let mut call = json!({"index": index, "function": {"arguments": args}});
    if let Some((id, name)) = first {
        call["id"] = json!(id);
        call["type"] = json!("function");
        call["function"]["name"] = json!(name);
    }
    chunk(json!({"tool_calls": [call]}), None)
}

/// The usage chunk `stream_options.include_usage` asks for, then `[DONE]`.
fn usage_and_done(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> Vec<String> {
    let data = json!({"id": "chatcmpl-C3x9", "object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}});
    vec![format!("data: {data}\n\n"), "data: [DONE]\n\n".into()]
}

fn sse(groups: Vec<Vec<String>>) -> Reply {
    Reply::sse(groups.into_iter().flatten().collect())
}

/// A complete "ok" answer.
fn ok() -> Reply {
    sse(vec![
        vec![text("ok"), stop("stop")],
        usage_and_done(1, 1, 0, 0),
    ])
}

fn call(id: &str, name: &str, args: Value) -> StreamPart {
    StreamPart::ToolCall(GeneratedToolCall {
        id: id.into(),
        name: name.into(),
        args,
    })
}

/// `Finish` with usage: input, output, cached input and reasoning tokens.
fn finish(reason: FinishReason, [input, output, cached, reasoning]: [u64; 4]) -> StreamPart {
    let (input_tokens, output_tokens, total_tokens) = (input, output, input + output);
    let (cached_input_tokens, reasoning_tokens) = (cached, reasoning);
    let usage = Usage {
        input_tokens,
        output_tokens,
        reasoning_tokens,
        total_tokens,
        cached_input_tokens,
    };
    StreamPart::Finish { reason, usage }
}

#[tokio::test]
async fn a_tool_calling_turn_assembles_arguments_split_across_chunks() {
    let server = FakeServer::start(vec![sse(vec![
        vec![role(), text("Reading it.")],
        vec![frag(0, Some(("call_A1", "readTextFile")), "")],
        vec![
            frag(0, None, "{\"pa"),
            frag(0, None, "th\": \"READ"),
            frag(0, None, "ME.md\"}"),
        ],
        vec![stop("tool_calls")],
        usage_and_done(472, 89, 100, 64),
    ])])
    .await;
    let (parts, err) = drain(&openai(&server), simple("low")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::TextDelta("Reading it.".into()),
            call("call_A1", "readTextFile", json!({"path": "README.md"})),
            finish(FinishReason::ToolCalls, [472, 89, 100, 64]),
        ]
    );

    let requests = server.requests().await;
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    let bearer = format!("Bearer {KEY}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("openai-organization", "org-123"),
        ("openai-project", "proj_456"),
        ("content-type", "application/json"),
        ("x-custom", "custom-value"),
    ];
    for (name, value) in headers {
        assert_eq!(r.headers[name], value, "header {name}");
    }
    assert!(!r.headers.contains_key("api-key"));
    let schema = json!({"type": "object", "properties": {"path": {"type": "string"}}});
    assert_eq!(
        r.body,
        json!({
            "model": "o4-mini",
            "messages": [{"role": "system", "content": "You are Perstack."},
                         {"role": "user", "content": "Hi"}],
            "tools": [{"type": "function", "function": {"name": "readTextFile",
                       "description": "The readTextFile tool", "parameters": schema}}],
            "tool_choice": "auto",
            "stream": true, "stream_options": {"include_usage": true},
            "reasoning_effort": "low",
        })
    );
}

#[tokio::test]
async fn parallel_tool_calls_interleaved_by_index_come_out_in_index_order() {
    let server = FakeServer::start(vec![sse(vec![
        vec![role()],
        vec![frag(0, Some(("call_a", "child-a")), "{\"query\":")],
        vec![frag(1, Some(("call_b", "child-b")), "{\"query\":")],
        vec![frag(1, None, " \"do B\"}"), frag(0, None, " \"do A\"}")],
        vec![stop("tool_calls")],
        usage_and_done(10, 30, 0, 0),
    ])])
    .await;
    let (parts, err) = drain(&openai(&server), simple("none")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            call("call_a", "child-a", json!({"query": "do A"})),
            call("call_b", "child-b", json!({"query": "do B"})),
            finish(FinishReason::ToolCalls, [10, 30, 0, 0]),
        ]
    );
}

#[tokio::test]
async fn a_deepseek_reasoning_turn_streams_reasoning_content_then_text() {
    let reasoning = |t: &str| chunk(json!({"content": null, "reasoning_content": t}), None);
    let server = FakeServer::start(vec![sse(vec![
        vec![
            role(),
            reasoning(""),
            reasoning("Let me "),
            reasoning("think."),
        ],
        vec![text("The answer"), text(" is 4."), stop("stop")],
        usage_and_done(50, 120, 0, 80),
    ])])
    .await;
    let model = at(&server, OpenAiConfig::deepseek(KEY));
    let (parts, err) = drain(&model, ask("deepseek-reasoner", "high")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::ReasoningDelta("Let me ".into()),
            StreamPart::ReasoningDelta("think.".into()),
            StreamPart::ReasoningEnd { signature: None },
            StreamPart::TextDelta("The answer".into()),
            StreamPart::TextDelta(" is 4.".into()),
            finish(FinishReason::Stop, [50, 120, 0, 80]),
        ]
    );
    let r = &server.requests().await[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.headers["authorization"], format!("Bearer {KEY}"));
    assert!(r.body.get("reasoning_effort").is_none(), "{}", r.body);
}

#[tokio::test]
async fn a_plain_text_completion_finishes_with_stop_and_usage() {
    let server = FakeServer::start(vec![sse(vec![
        vec![role(), text("Hello"), text("!"), stop("stop")],
        usage_and_done(12, 2, 3, 0),
    ])])
    .await;
    let (parts, err) = drain(&openai(&server), ask("gpt-4.1", "high")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::TextDelta("Hello".into()),
            StreamPart::TextDelta("!".into()),
            finish(FinishReason::Stop, [12, 2, 3, 0]),
        ]
    );
    let body = &server.requests().await[0].body;
    let absent = ["tools", "reasoning_effort"].map(|k| body.get(k).is_none());
    assert_eq!(absent, [true, true], "gpt-4.1 takes no effort: {body}");
}

#[tokio::test]
async fn the_reasoning_budget_maps_to_reasoning_effort_for_reasoning_models() {
    let budgets = [
        ("low", Some("low")),
        ("medium", Some("medium")),
        ("high", Some("high")),
        ("none", None),
    ];
    let server = FakeServer::start(budgets.map(|_| ok()).into()).await;
    let model = openai(&server);
    for (budget, _) in budgets {
        let (_, err) = drain(&model, simple(budget)).await;
        assert_eq!(err, None);
    }
    let requests = server.requests().await;
    for ((budget, want), r) in budgets.iter().zip(&requests) {
        let got = r.body.get("reasoning_effort").and_then(Value::as_str);
        assert_eq!(got, *want, "budget {budget}");
        assert_eq!(r.body["stream_options"], json!({"include_usage": true}));
    }
}

#[tokio::test]
async fn a_history_maps_tool_calls_and_tool_results_to_chat_messages() {
    let server = FakeServer::start(vec![ok()]).await;
    let thinking = MessagePart::ThinkingPart(ThinkingPart {
        id: "t".into(),
        thinking: "I should read both.".into(),
        signature: None,
        extra: Map::new(),
    });
    let history = read_both_history(vec![thinking], ["call_1", "call_2"], [0, 1]);
    let req = request("gpt-4.1", history, vec![tool("readTextFile")], "low");
    let (_, err) = drain(&openai(&server), req).await;
    assert_eq!(err, None);
    let tool_calls = json!([
        {"id": "call_1", "type": "function",
         "function": {"name": "readTextFile", "arguments": "{\"path\":\"a.txt\"}"}},
        {"id": "call_2", "type": "function",
         "function": {"name": "readTextFile", "arguments": "{\"path\":\"b.txt\"}"}}
    ]);
    assert_eq!(
        server.requests().await[0].body["messages"],
        json!([
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "Read a.txt and b.txt"},
            {"role": "assistant", "content": "Reading.", "tool_calls": tool_calls},
            {"role": "tool", "tool_call_id": "call_1", "content": "contents of a"},
            {"role": "tool", "tool_call_id": "call_2", "content": "contents of b"},
            {"role": "user", "content": "Now summarise."}
        ])
    );
}

#[tokio::test]
async fn azure_posts_to_the_deployment_url_with_the_api_key_header() {
    let server = FakeServer::start(vec![ok(), ok()]).await;
    let env = [
        ("AZURE_API_KEY", KEY),
        ("AZURE_BASE_URL", &format!("{}/openai", server.url())),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let flavor = perstack::llm::openai::Flavor::AzureOpenAi;
    let setting = serde_json::from_value(json!({"headers": {"x-ms-client": "perstack"}})).unwrap();
    let config = OpenAiConfig::from_env(flavor, &setting, &env).unwrap();
    let model = OpenAiModel::new(config.clone()).unwrap();
    assert_eq!(model.name(), "azure-openai");
    let (parts, err) = drain(&model, simple("high")).await;
    assert_eq!((parts.len(), err), (2, None));
    let r = &server.requests().await[0];
    assert_eq!(
        r.path,
        "/openai/deployments/o4-mini/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(r.headers["api-key"], KEY);
    assert_eq!(r.headers["x-ms-client"], "perstack");
    assert!(!r.headers.contains_key("authorization"), "{:?}", r.headers);
    assert!(r.body.get("reasoning_effort").is_none(), "{}", r.body);

    let api_version = "2025-04-01-preview".into();
    let model = OpenAiModel::new(OpenAiConfig {
        api_version,
        ..config
    })
    .unwrap();
    let (_, err) = drain(&model, ask("my-gpt", "none")).await;
    assert_eq!(err, None);
    let r = &server.requests().await[1];
    assert_eq!(
        r.path,
        "/openai/deployments/my-gpt/chat/completions?api-version=2025-04-01-preview"
    );
}

/// Run `simple` against one reply and return the error it must end in.
async fn failure(reply: Reply) -> GenerationError {
    let server = FakeServer::start(vec![reply]).await;
    let (_, err) = drain(&openai(&server), simple("low")).await;
    err.expect("the call must fail")
}

fn api_error(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[tokio::test]
async fn a_429_is_retryable_and_carries_the_retry_after_wait() {
    let body = api_error("requests", "rate_limit_exceeded", "Rate limit reached");
    let e = failure(Reply::status(429).header("retry-after", "2").json(body)).await;
    assert_class(&e, "APICallError", Some(429), true);
    let says = |s: &str| e.message.contains(s);
    assert!(
        says("Rate limit reached") && says("retry after 2s"),
        "{e:?}"
    );
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(2)));
}

#[tokio::test]
async fn a_500_a_503_and_a_server_error_chunk_mid_stream_are_retryable() {
    let server_error = api_error("server_error", "", "The server had an error");
    let e = failure(Reply::status(500).json(server_error.clone())).await;
    assert_class(&e, "APICallError", Some(500), true);
    let e = failure(Reply::status(503).json(json!("upstream connect error"))).await;
    assert_class(&e, "APICallError", Some(503), true);
    assert!(e.message.contains("upstream connect error"), "{e:?}");
    let error = format!("data: {server_error}\n\n");
    let e = failure(sse(vec![vec![role(), text("Hel"), error]])).await;
    assert_class(&e, "APICallError", Some(500), true);
}

#[tokio::test]
async fn a_connection_reset_mid_stream_ends_in_a_retryable_error() {
    let reply = sse(vec![vec![role(), text("partial")]])
        .delay(Duration::from_millis(10))
        .reset_mid_stream();
    let server = FakeServer::start(vec![reply]).await;
    let (parts, err) = drain(&openai(&server), simple("low")).await;
    assert_eq!(parts, vec![StreamPart::TextDelta("partial".into())]);
    let e = err.expect("a reset stream must fail");
    assert_class(&e, "APIConnectionError", None, true);
}

#[tokio::test]
async fn a_stream_ending_before_finish_and_done_ends_in_a_retryable_error() {
    let e = failure(sse(vec![vec![role(), text("Hel")]]).close_mid_stream()).await;
    assert_class(&e, "APIConnectionError", None, true);
    let e = failure(sse(vec![vec![role(), frag(0, Some(("call_1", "f")), "{")]])).await;
    assert_class(&e, "StreamClosed", None, true);
    // A finished choice whose body ends without [DONE] still finishes.
    let server = FakeServer::start(vec![sse(vec![vec![text("ok"), stop("length")]])]).await;
    let (parts, err) = drain(&openai(&server), simple("low")).await;
    assert_eq!(err, None);
    let end = finish(FinishReason::Length, [0; 4]);
    assert_eq!(parts.last(), Some(&end));
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_api_connection_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = OpenAiConfig::openai(KEY);
    config.base_url = format!("http://127.0.0.1:{port}/v1");
    let (_, err) = drain(&OpenAiModel::new(config).unwrap(), simple("low")).await;
    assert_class(&err.unwrap(), "APIConnectionError", None, true);
}

#[tokio::test]
async fn a_400_and_a_401_are_not_retryable_and_surface_the_api_message_without_the_key() {
    let message = "Invalid parameter: messages with role 'tool' must be a response to a \
                   preceeding message with 'tool_calls'.";
    let e = failure(Reply::status(400).json(api_error("invalid_request_error", "", message))).await;
    assert_class(&e, "APICallError", Some(400), false);
    assert!(e.message.contains("must be a response to"), "{e:?}");
    let message = format!("Incorrect API key provided: {KEY}. You can find your API key at ...");
    let body = api_error("invalid_request_error", "invalid_api_key", &message);
    let e = failure(Reply::status(401).json(body)).await;
    assert_class(&e, "APICallError", Some(401), false);
    let redacted = e.message.contains("Incorrect API key provided: [REDACTED]");
    assert!(redacted, "{e:?}");
}

#[tokio::test]
async fn invalid_tool_call_json_is_a_retryable_invalid_tool_call_json_error() {
    let e = failure(sse(vec![
        vec![
            frag(0, Some(("call_x", "readTextFile")), "{\"path\": \"a"),
            frag(0, None, ".txt\""),
        ],
        vec![stop("tool_calls")],
        usage_and_done(1, 5, 0, 0),
    ]))
    .await;
    assert_class(&e, "InvalidToolCallJSON", None, true);
    assert!(e.message.contains("readTextFile"), "{e:?}");
}

#[tokio::test]
async fn a_hanging_server_is_bounded_by_the_callers_timeout_after_the_request_was_sent() {
    let hang = sse(vec![vec![text("never")]]).delay(Duration::from_secs(30));
    let server = FakeServer::start(vec![hang]).await;
    let model = openai(&server);
    let mut stream = tokio::time::timeout(Duration::from_secs(5), model.stream(simple("low")))
        .await
        .expect("the response head arrives")
        .expect("a 200 starts the stream");
    let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(next.is_err(), "the stream must still be waiting: {next:?}");
    let requests = server.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body["model"], "o4-mini");
}

#[tokio::test]
async fn no_error_text_contains_the_api_key_or_a_secret_custom_header() {
    let echo = |m: String| api_error("invalid_request_error", "", &m);
    let forbidden = echo(format!("key {KEY} and token tok-SECRET-2 are not allowed"));
    let in_stream = format!("data: {}\n\n", echo(format!("bad key {KEY}")));
    let server = FakeServer::start(vec![
        Reply::status(403).json(forbidden),
        Reply::status(500).json(json!(format!("proxy saw Bearer {KEY}"))),
        sse(vec![vec![in_stream]]),
        sse(vec![vec![format!("data: {{\"choices\": [oops {KEY}\n\n")]]),
    ])
    .await;
    let mut config = OpenAiConfig::openai(KEY);
    config.headers = [("x-proxy-token".to_string(), "tok-SECRET-2".to_string())].into();
    let model = at(&server, config);
    for _ in 0..4 {
        // `run` asserts that neither the parts nor the error mention "SECRET".
        let (_, err) = drain(&model, simple("low")).await;
        let e = err.expect("each reply fails");
        assert!(e.message.contains("[REDACTED]"), "{e:?}");
    }
    let config = OpenAiConfig::openai(KEY);
    let debug = format!("{config:?} {:?}", OpenAiModel::new(config.clone()).unwrap());
    assert!(!debug.contains("SECRET"), "{debug}");
}
