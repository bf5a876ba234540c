//! The Ollama provider against a fake `/api/chat`: recorded-shape NDJSON lines become the right
//! parts (with synthesised call ids), captured request bodies, URLs and headers have the API's
//! shape, every failure of the fault matrix ends in a classified `GenerationError` (never a
//! panic or a hang), and no error carries a secret custom header.

use std::time::Duration;

use futures::StreamExt;
use perstack::config::ProviderName;
use perstack::llm::ollama::{OllamaConfig, OllamaModel};
use perstack::llm::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, StreamPart, ToolSpec,
};
use perstack::schema::{Message, MessagePart, ThinkingPart, Usage};
use pretty_assertions::assert_eq;
use serde_json::{Map, Value, json};

use super::common::{self, read_both_history};
use super::fake_server::{FakeServer, Reply};
use super::wire::{assert_class, drain};

const TOKEN: &str = "Bearer proxy-SECRET";

const MODEL: &str = "gpt-oss:20b";

fn ollama(server: &FakeServer) -> OllamaModel {
    let headers = [
        ("x-custom".to_string(), "custom-value".to_string()),
        ("authorization".to_string(), TOKEN.to_string()),
    ];
    OllamaModel::new(OllamaConfig {
        base_url: server.url(),
        headers: headers.into(),
    })
    .unwrap()
}

fn schema() -> Value {
    json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
}

fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: Some(format!("The {name} tool")),
        input_schema: schema(),
    }
}

fn request(messages: Vec<Message>, tools: Vec<ToolSpec>, budget: &str) -> GenerationRequest {
    common::request(MODEL, messages, tools, budget)
}

fn simple(budget: &str) -> GenerationRequest {
    request(common::hi(), vec![tool("readTextFile")], budget)
}

/// One NDJSON line with an assistant `message`.
fn line(message: Value) -> String {
    let mut m = json!({"role": "assistant", "content": ""});
    if let (Value::Object(m), Value::Object(extra)) = (&mut m, message) {
        m.extend(extra);
    }
    let v = json!({"model": MODEL, "created_at": "2025-08-05T10:00:00.000Z", "message": m,
        "done": false});
    format!("{v}\n")
}

fn text(t: &str) -> String {
    line(json!({"content": t}))
}

fn thinking(t: &str) -> String {
    line(json!({"thinking": t}))
}

/// The final line.
fn done(reason: &str, prompt: u64, eval: u64) -> String {
    let v = json!({"model": MODEL, "created_at": "2025-08-05T10:00:01.000Z",
        "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": reason,
        "total_duration": 4_883_583_458_u64, "load_duration": 1_334_875,
        "prompt_eval_count": prompt, "prompt_eval_duration": 342_546_000,
        "eval_count": eval, "eval_duration": 4_535_599_000_u64});
    format!("{v}\n")
}

fn ndjson(lines: Vec<String>) -> Reply {
    Reply::stream("application/x-ndjson", lines)
}

fn ok() -> Reply {
    ndjson(vec![text("ok"), done("stop", 1, 1)])
}

fn call(id: &str, name: &str, args: Value) -> StreamPart {
    StreamPart::ToolCall(GeneratedToolCall {
        id: id.into(),
        name: name.into(),
        args,
    })
}

fn finish(reason: FinishReason, input: u64, output: u64) -> StreamPart {
    let usage = Usage {
        input_tokens: input,
        output_tokens: output,
        reasoning_tokens: 0,
        total_tokens: input + output,
        cached_input_tokens: 0,
    };
    StreamPart::Finish { reason, usage }
}

fn function(name: &str, arguments: Value) -> Value {
    json!({"function": {"name": name, "arguments": arguments}})
}

#[tokio::test]
async fn a_tool_calling_turn_yields_a_call_with_a_synthesised_id() {
    let calls = json!([function("readTextFile", json!({"path": "README.md"}))]);
    let server = FakeServer::start(vec![ndjson(vec![
        text("Reading it."),
        line(json!({"tool_calls": calls})),
        done("stop", 472, 89),
    ])])
    .await;
    let (parts, err) = drain(&ollama(&server), simple("low")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::TextDelta("Reading it.".into()),
            call(
                "call_0_readTextFile",
                "readTextFile",
                json!({"path": "README.md"})
            ),
            finish(FinishReason::ToolCalls, 472, 89),
        ]
    );
    let requests = server.requests().await;
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/chat"));
    for (name, value) in [
        ("x-custom", "custom-value"),
        ("authorization", TOKEN),
        ("content-type", "application/json"),
    ] {
        assert_eq!(r.headers[name], value, "header {name}");
    }
    assert_eq!(
        r.body,
        json!({
            "model": MODEL,
            "messages": [{"role": "system", "content": "You are Perstack."},
                         {"role": "user", "content": "Hi"}],
            "tools": [{"type": "function", "function": {"name": "readTextFile",
                       "description": "The readTextFile tool", "parameters": schema()}}],
            "stream": true,
            "think": true,
        })
    );
}

#[tokio::test]
async fn parallel_tool_calls_in_one_line_get_distinct_ids_in_order() {
    let calls = json!([
        function("child-a", json!({"query": "do A"})),
        function("child-b", json!({"query": "do B"}))
    ]);
    let server = FakeServer::start(vec![ndjson(vec![
        line(json!({"tool_calls": calls})),
        done("stop", 10, 30),
    ])])
    .await;
    let (parts, err) = drain(&ollama(&server), simple("none")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            call("call_0_child-a", "child-a", json!({"query": "do A"})),
            call("call_1_child-b", "child-b", json!({"query": "do B"})),
            finish(FinishReason::ToolCalls, 10, 30),
        ]
    );
}

#[tokio::test]
async fn a_reasoning_turn_streams_thinking_then_content() {
    let server = FakeServer::start(vec![ndjson(vec![
        thinking("Let me "),
        thinking("think."),
        text("The answer"),
        text(" is 4."),
        done("stop", 50, 120),
    ])])
    .await;
    let req = request(vec![Message::user("2+2?")], Vec::new(), "high");
    let (parts, err) = drain(&ollama(&server), req).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::ReasoningDelta("Let me ".into()),
            StreamPart::ReasoningDelta("think.".into()),
            StreamPart::ReasoningEnd { signature: None },
            StreamPart::TextDelta("The answer".into()),
            StreamPart::TextDelta(" is 4.".into()),
            finish(FinishReason::Stop, 50, 120),
        ]
    );
    let body = &server.requests().await[0].body;
    assert_eq!(body["think"], true);
    assert!(body.get("tools").is_none(), "{body}");
}

#[tokio::test]
async fn a_plain_text_completion_without_reasoning_sends_think_false() {
    let server = FakeServer::start(vec![
        ndjson(vec![text("Hello"), text("!"), done("stop", 12, 2)]),
        ndjson(vec![text("Hel"), done("length", 12, 1)]),
    ])
    .await;
    let model = ollama(&server);
    let req = request(vec![Message::user("Hi")], Vec::new(), "none");
    let (parts, err) = drain(&model, req.clone()).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::TextDelta("Hello".into()),
            StreamPart::TextDelta("!".into()),
            finish(FinishReason::Stop, 12, 2),
        ]
    );
    let (parts, _) = drain(&model, req).await;
    assert_eq!(parts.last(), Some(&finish(FinishReason::Length, 12, 1)));
    let body = &server.requests().await[0].body;
    assert_eq!(
        body,
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                "stream": true, "think": false})
    );
}

#[tokio::test]
async fn a_model_without_thinking_is_asked_again_with_think_false() {
    let unsupported = json!({"error": "\"gemma3:1b\" does not support thinking"});
    let server = FakeServer::start(vec![Reply::status(400).json(unsupported), ok()]).await;
    let (parts, err) = drain(&ollama(&server), simple("low")).await;
    assert_eq!((parts.len(), err), (2, None));
    let requests = server.requests().await;
    let think: Vec<_> = requests.iter().map(|r| r.body["think"].clone()).collect();
    assert_eq!(think, vec![json!(true), json!(false)]);
    // Without thinking requested, the same 400 is an ordinary failure.
    let server = FakeServer::start(vec![Reply::status(400).json(json!({"error": "nope"}))]).await;
    let (_, err) = drain(&ollama(&server), simple("none")).await;
    assert_class(&err.unwrap(), "APICallError", Some(400), false);
    assert_eq!(server.requests().await.len(), 1);
}

#[tokio::test]
async fn a_history_maps_tool_calls_thinking_and_results_to_chat_messages() {
    let server = FakeServer::start(vec![ok()]).await;
    let thinking = MessagePart::ThinkingPart(ThinkingPart {
        id: "t".into(),
        thinking: "I should read both.".into(),
        signature: None,
        extra: Map::new(),
    });
    let ids = ["call_0_readTextFile", "call_1_readTextFile"];
    let history = read_both_history(vec![thinking], ids, [0, 1]);
    let req = request(history, vec![tool("readTextFile")], "low");
    let (_, err) = drain(&ollama(&server), req).await;
    assert_eq!(err, None);
    let tool_calls = json!([
        function("readTextFile", json!({"path": "a.txt"})),
        function("readTextFile", json!({"path": "b.txt"}))
    ]);
    assert_eq!(
        server.requests().await[0].body["messages"],
        json!([
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "Read a.txt and b.txt"},
            {"role": "assistant", "content": "Reading.", "thinking": "I should read both.",
             "tool_calls": tool_calls},
            {"role": "tool", "content": "contents of a", "tool_name": "readTextFile"},
            {"role": "tool", "content": "contents of b", "tool_name": "readTextFile"},
            {"role": "user", "content": "Now summarise."}
        ])
    );
}

#[tokio::test]
async fn the_provider_is_selected_from_the_environment_with_an_api_suffixed_base() {
    let server = FakeServer::start(vec![ok()]).await;
    let env = [(
        "OLLAMA_BASE_URL".to_string(),
        format!("{}/api/", server.url()),
    )]
    .into();
    let setting = serde_json::from_value(json!({"headers": {"x-team": "t1"}})).unwrap();
    let model =
        perstack::llm::select::provider(ProviderName::Ollama, &setting, &env, None).unwrap();
    assert_eq!(model.name(), "ollama");
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let s = model.stream(simple("low")).await.unwrap();
        s.collect::<Vec<_>>().await
    })
    .await
    .unwrap();
    assert!(outcome.iter().all(Result::is_ok), "{outcome:?}");
    let r = &server.requests().await[0];
    assert_eq!(r.path, "/api/chat");
    assert_eq!(r.headers["x-team"], "t1");
}

/// Run `simple` against one reply and return the error it must end in.
async fn failure(reply: Reply) -> GenerationError {
    let server = FakeServer::start(vec![reply]).await;
    let (_, err) = drain(&ollama(&server), simple("none")).await;
    err.expect("the call must fail")
}

#[tokio::test]
async fn a_429_is_retryable_and_carries_the_retry_after_wait() {
    let reply = Reply::status(429)
        .header("retry-after", "3")
        .json(json!({"error": "server busy, please try again"}));
    let e = failure(reply).await;
    assert_class(&e, "APICallError", Some(429), true);
    let says = |s: &str| e.message.contains(s);
    assert!(says("server busy") && says("retry after 3s"), "{e:?}");
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(3)));
}

#[tokio::test]
async fn a_500_a_503_and_an_error_line_mid_stream_are_retryable() {
    let e =
        failure(Reply::status(500).json(json!({"error": "llama runner process has terminated"})))
            .await;
    assert_class(&e, "APICallError", Some(500), true);
    assert!(e.message.contains("llama runner"), "{e:?}");
    let e = failure(Reply::status(503)).await;
    assert_class(&e, "APICallError", Some(503), true);
    let error_line = format!(
        "{}\n",
        json!({"error": "an error was encountered while running the model"})
    );
    let e = failure(ndjson(vec![text("Hel"), error_line])).await;
    assert_class(&e, "APICallError", None, true);
}

#[tokio::test]
async fn a_connection_reset_mid_stream_ends_in_a_retryable_error() {
    let reply = ndjson(vec![text("partial")])
        .delay(Duration::from_millis(10))
        .reset_mid_stream();
    let server = FakeServer::start(vec![reply]).await;
    let (parts, err) = drain(&ollama(&server), simple("none")).await;
    assert_eq!(parts, vec![StreamPart::TextDelta("partial".into())]);
    assert_class(
        &err.expect("a reset stream must fail"),
        "APIConnectionError",
        None,
        true,
    );
}

#[tokio::test]
async fn a_stream_ending_without_done_ends_in_a_retryable_error() {
    let e = failure(ndjson(vec![text("Hel")]).close_mid_stream()).await;
    assert_class(&e, "APIConnectionError", None, true);
    let e = failure(ndjson(vec![text("Hel"), thinking("and")])).await;
    assert_class(&e, "StreamClosed", None, true);
}

#[tokio::test]
async fn a_400_a_401_and_a_404_are_not_retryable_and_surface_the_message() {
    let e = failure(Reply::status(400).json(json!({"error": "invalid message format"}))).await;
    assert_class(&e, "APICallError", Some(400), false);
    assert!(e.message.contains("invalid message format"), "{e:?}");
    let echoed = json!({"error": format!("unauthorized: {TOKEN}")});
    let e = failure(Reply::status(401).json(echoed)).await;
    assert_class(&e, "APICallError", Some(401), false);
    assert!(e.message.contains("[REDACTED]"), "{e:?}");
    let missing = json!({"error": "model \"gpt-oss:20b\" not found, try pulling it first"});
    let e = failure(Reply::status(404).json(missing)).await;
    assert_class(&e, "APICallError", Some(404), false);
    assert!(e.message.contains("try pulling it first"), "{e:?}");
}

#[tokio::test]
async fn a_truncated_or_invalid_json_line_is_a_retryable_invalid_response_error() {
    let truncated = "{\"model\":\"gpt-oss:20b\",\"message\":{\"role\":\"assis\n".to_string();
    let e = failure(ndjson(vec![text("Hel"), truncated])).await;
    assert_class(&e, "InvalidResponseDataError", None, true);
    let e = failure(ndjson(vec![format!("<html>proxy error {TOKEN}</html>\n")])).await;
    assert_class(&e, "InvalidResponseDataError", None, true);
    assert!(e.message.contains("[REDACTED]"), "{e:?}");
    let bad_args = line(json!({"tool_calls": [function("f", json!("{\"a\":"))]}));
    let e = failure(ndjson(vec![bad_args, done("stop", 1, 1)])).await;
    assert_class(&e, "InvalidToolCallJSON", None, true);
}
