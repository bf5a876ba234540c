//! The Google provider against a fake Gemini API: recorded-shape `streamGenerateContent` SSE
//! chunks become the right parts (with synthesised call ids), captured request bodies, URLs
//! and headers have the API's shape, every failure of the fault matrix ends in a classified
//! `GenerationError` (never a panic or a hang), and no error or part ever carries the API key.

use std::time::Duration;

use futures::StreamExt;
use perstack::config::ProviderName;
use perstack::llm::google::{GoogleConfig, GoogleModel};
use perstack::llm::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, StreamPart, ToolSpec,
};
use perstack::schema::{Message, MessagePart, ThinkingPart, Usage};
use pretty_assertions::assert_eq;
use serde_json::{Map, Value, json};

use super::common::{self, read_both_history};
use super::fake_server::{FakeServer, Reply};
use super::wire::{assert_class, drain};

const KEY: &str = "AIzaSy-test-SECRET";

const MODEL: &str = "gemini-2.5-flash";

fn google(server: &FakeServer) -> GoogleModel {
    let mut config = GoogleConfig::new(KEY);
    config.base_url = format!("{}/v1beta", server.url());
    config.headers = [("x-custom".to_string(), "custom-value".to_string())].into();
    GoogleModel::new(config).unwrap()
}

/// A tool whose schema holds keywords Gemini rejects.
fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: Some(format!("The {name} tool")),
        input_schema: json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object", "additionalProperties": false,
            "properties": {"path": {"type": "string"}, "limit": {"type": ["integer", "null"]}},
            "required": ["path"]
        }),
    }
}

/// What Gemini receives for [`tool`].
fn declaration(name: &str) -> Value {
    json!({"name": name, "description": format!("The {name} tool"), "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "limit": {"type": "integer", "nullable": true}},
        "required": ["path"]
    }})
}

fn request(messages: Vec<Message>, tools: Vec<ToolSpec>, budget: &str) -> GenerationRequest {
    common::request(MODEL, messages, tools, budget)
}

fn simple(budget: &str) -> GenerationRequest {
    request(common::hi(), vec![tool("readTextFile")], budget)
}

/// One `data:` event holding a GenerateContentResponse with `parts` for candidate 0.
fn chunk(parts: Value, finish_reason: Option<&str>, usage: Option<[u64; 4]>) -> String {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish_reason {
        candidate["finishReason"] = json!(f);
    }
    let mut data = json!({"candidates": [candidate], "modelVersion": MODEL,
        "responseId": "x9Y2aKXxB4"});
    if let Some([prompt, candidates, thoughts, cached]) = usage {
        data["usageMetadata"] = json!({"promptTokenCount": prompt,
            "candidatesTokenCount": candidates, "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + candidates + thoughts,
            "cachedContentTokenCount": cached,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]});
    }
    format!("data: {data}\r\n\r\n")
}

fn text(t: &str) -> String {
    chunk(json!([{"text": t}]), None, None)
}

fn thought(t: &str) -> String {
    chunk(json!([{"text": t, "thought": true}]), None, None)
}

fn function_call(name: &str, args: Value) -> Value {
    json!({"functionCall": {"name": name, "args": args}})
}

fn stop(usage: [u64; 4]) -> String {
    chunk(json!([{"text": ""}]), Some("STOP"), Some(usage))
}

/// A complete "ok" answer.
fn ok() -> Reply {
    Reply::sse(vec![text("ok"), stop([1, 1, 0, 0])])
}

fn call(id: &str, name: &str, args: Value) -> StreamPart {
    StreamPart::ToolCall(GeneratedToolCall {
        id: id.into(),
        name: name.into(),
        args,
    })
}

/// `Finish` with usage: prompt, candidates, thoughts and cached tokens.
fn finish(reason: FinishReason, [input, output, reasoning, cached]: [u64; 4]) -> StreamPart {
    let usage = Usage {
        input_tokens: input,
        output_tokens: output,
        reasoning_tokens: reasoning,
        total_tokens: input + output + reasoning,
        cached_input_tokens: cached,
    };
    StreamPart::Finish { reason, usage }
}

fn end(signature: Option<&str>) -> StreamPart {
    let signature = signature.map(str::to_string);
    StreamPart::ReasoningEnd { signature }
}

#[tokio::test]
async fn a_tool_calling_turn_yields_a_call_with_a_synthesised_id_and_its_signature() {
    let mut call_part = function_call("readTextFile", json!({"path": "README.md"}));
    call_part["thoughtSignature"] = json!("CiQB0e2Kb-sig");
    let server = FakeServer::start(vec![Reply::sse(vec![
        thought("I should read it."),
        text("Reading it."),
        chunk(json!([call_part]), Some("STOP"), Some([472, 12, 64, 100])),
    ])])
    .await;
    let (parts, err) = drain(&google(&server), simple("low")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::ReasoningDelta("I should read it.".into()),
            end(None),
            StreamPart::TextDelta("Reading it.".into()),
            end(Some("CiQB0e2Kb-sig")),
            call(
                "call_0_readTextFile",
                "readTextFile",
                json!({"path": "README.md"})
            ),
            finish(FinishReason::ToolCalls, [472, 12, 64, 100]),
        ]
    );

    let requests = server.requests().await;
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        (
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        )
    );
    assert!(
        !r.path.contains("key="),
        "the key must not travel in the URL"
    );
    for (name, value) in [
        ("x-goog-api-key", KEY),
        ("content-type", "application/json"),
        ("x-custom", "custom-value"),
    ] {
        assert_eq!(r.headers[name], value, "header {name}");
    }
    assert!(!r.headers.contains_key("authorization"));
    assert_eq!(
        r.body,
        json!({
            "systemInstruction": {"parts": [{"text": "You are Perstack."}]},
            "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
            "tools": [{"functionDeclarations": [declaration("readTextFile")]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "generationConfig": {"thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true}},
        })
    );
}

#[tokio::test]
async fn parallel_function_calls_get_distinct_ids_in_order() {
    let server = FakeServer::start(vec![Reply::sse(vec![
        chunk(
            json!([
                function_call("child-a", json!({"query": "do A"})),
                function_call("child-b", json!({"query": "do B"}))
            ]),
            None,
            None,
        ),
        chunk(
            json!([function_call("child-a", json!({"query": "do C"}))]),
            Some("STOP"),
            Some([10, 30, 0, 0]),
        ),
    ])])
    .await;
    let (parts, err) = drain(&google(&server), simple("none")).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            call("call_0_child-a", "child-a", json!({"query": "do A"})),
            call("call_1_child-b", "child-b", json!({"query": "do B"})),
            call("call_2_child-a", "child-a", json!({"query": "do C"})),
            finish(FinishReason::ToolCalls, [10, 30, 0, 0]),
        ]
    );
}

#[tokio::test]
async fn a_reasoning_turn_streams_thoughts_then_text_and_asks_for_the_budget() {
    let server = FakeServer::start(vec![Reply::sse(vec![
        thought("**Adding**\n"),
        chunk(
            json!([{"text": "2 and 2.", "thought": true, "thoughtSignature": "sig-1"}]),
            None,
            Some([50, 0, 80, 0]),
        ),
        text("The answer"),
        text(" is 4."),
        stop([50, 5, 80, 0]),
    ])])
    .await;
    let req = request(vec![Message::user("2+2?")], Vec::new(), "high");
    let (parts, err) = drain(&google(&server), req).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::ReasoningDelta("**Adding**\n".into()),
            StreamPart::ReasoningDelta("2 and 2.".into()),
            end(Some("sig-1")),
            StreamPart::TextDelta("The answer".into()),
            StreamPart::TextDelta(" is 4.".into()),
            finish(FinishReason::Stop, [50, 5, 80, 0]),
        ]
    );
    let body = &server.requests().await[0].body;
    assert_eq!(
        body["generationConfig"],
        json!({"thinkingConfig": {"thinkingBudget": 10000, "includeThoughts": true}})
    );
    assert!(body.get("tools").is_none(), "{body}");
}

#[tokio::test]
async fn a_plain_text_completion_without_reasoning_finishes_with_stop() {
    let server = FakeServer::start(vec![Reply::sse(vec![
        text("Hello"),
        chunk(json!([{"text": "!"}]), Some("STOP"), Some([12, 2, 0, 3])),
    ])])
    .await;
    let req = request(vec![Message::user("Hi")], Vec::new(), "none");
    let (parts, err) = drain(&google(&server), req).await;
    assert_eq!(err, None);
    assert_eq!(
        parts,
        vec![
            StreamPart::TextDelta("Hello".into()),
            StreamPart::TextDelta("!".into()),
            finish(FinishReason::Stop, [12, 2, 0, 3]),
        ]
    );
    let body = &server.requests().await[0].body;
    assert_eq!(
        body,
        &json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
    );
}

#[tokio::test]
async fn max_tokens_and_safety_map_to_length_and_other() {
    let server = FakeServer::start(vec![
        Reply::sse(vec![chunk(
            json!([{"text": "par"}]),
            Some("MAX_TOKENS"),
            None,
        )]),
        Reply::sse(vec![chunk(json!([]), Some("SAFETY"), None)]),
    ])
    .await;
    let model = google(&server);
    let (parts, _) = drain(&model, simple("low")).await;
    assert_eq!(parts.last(), Some(&finish(FinishReason::Length, [0; 4])));
    let (parts, _) = drain(&model, simple("low")).await;
    let filtered = FinishReason::Other("content-filter".into());
    assert_eq!(parts, vec![finish(filtered, [0; 4])]);
}

#[tokio::test]
async fn a_history_maps_calls_signatures_and_results_to_contents() {
    let server = FakeServer::start(vec![ok()]).await;
    let thinking = |text: &str, sig: &str| {
        MessagePart::ThinkingPart(ThinkingPart {
            id: "t".into(),
            thinking: text.into(),
            signature: Some(sig.into()),
            extra: Map::new(),
        })
    };
    let thoughts = vec![
        thinking("I should read both.", "sig-thought"),
        thinking("", "sig-call"),
    ];
    let ids = ["call_0_readTextFile", "call_1_readTextFile"];
    // Results may come back in another order than the calls.
    let history = read_both_history(thoughts, ids, [1, 0]);
    let req = request(history, vec![tool("readTextFile")], "none");
    let (_, err) = drain(&google(&server), req).await;
    assert_eq!(err, None);
    let response = |text: &str| json!({"functionResponse": {"name": "readTextFile", "response": {"content": text}}});
    let body = &server.requests().await[0].body;
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "sys"}]})
    );
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Read a.txt and b.txt"}]},
            {"role": "model", "parts": [
                {"text": "I should read both.", "thought": true, "thoughtSignature": "sig-thought"},
                {"text": "Reading."},
                {"functionCall": {"name": "readTextFile", "args": {"path": "a.txt"}},
                 "thoughtSignature": "sig-call"},
                {"functionCall": {"name": "readTextFile", "args": {"path": "b.txt"}}}
            ]},
            {"role": "user", "parts": [response("contents of a"), response("contents of b")]},
            {"role": "user", "parts": [{"text": "Now summarise."}]}
        ])
    );
}

#[tokio::test]
async fn the_provider_is_selected_from_the_environment() {
    let server = FakeServer::start(vec![ok()]).await;
    let env = [
        ("GOOGLE_GENERATIVE_AI_API_KEY", KEY.to_string()),
        (
            "GOOGLE_GENERATIVE_AI_BASE_URL",
            format!("{}/v1beta", server.url()),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    let setting =
        serde_json::from_value(json!({"headers": {"x-goog-user-project": "p1"}})).unwrap();
    let model =
        perstack::llm::select::provider(ProviderName::Google, &setting, &env, None).unwrap();
    assert_eq!(model.name(), "google");
    let (parts, err) = tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = model.stream(simple("low")).await.unwrap();
        let (mut parts, mut err) = (Vec::new(), None);
        while let Some(item) = s.next().await {
            match item {
                Ok(p) => parts.push(p),
                Err(e) => err = Some(e),
            }
        }
        (parts, err)
    })
    .await
    .unwrap();
    assert_eq!((parts.len(), err), (2, None));
    let r = &server.requests().await[0];
    assert_eq!(r.headers["x-goog-api-key"], KEY);
    assert_eq!(r.headers["x-goog-user-project"], "p1");
    let missing = perstack::llm::select::provider(
        ProviderName::Google,
        &Map::new(),
        &Default::default(),
        None,
    );
    let e = missing.err().expect("the key is required").to_string();
    assert!(e.contains("GOOGLE_GENERATIVE_AI_API_KEY"), "{e}");
}

/// Run `simple` against one reply and return the error it must end in.
async fn failure(reply: Reply) -> GenerationError {
    let server = FakeServer::start(vec![reply]).await;
    let (_, err) = drain(&google(&server), simple("low")).await;
    err.expect("the call must fail")
}

fn api_error(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

#[tokio::test]
async fn a_429_is_retryable_and_carries_the_retry_after_wait() {
    let body = api_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted");
    let e = failure(Reply::status(429).header("retry-after", "7").json(body)).await;
    assert_class(&e, "APICallError", Some(429), true);
    let says = |s: &str| e.message.contains(s);
    assert!(
        says("RESOURCE_EXHAUSTED: Resource has been exhausted"),
        "{e:?}"
    );
    assert!(says("retry after 7s"), "{e:?}");
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(7)));
}

#[tokio::test]
async fn a_500_a_503_and_an_error_chunk_mid_stream_are_retryable() {
    let e = failure(Reply::status(500).json(api_error(500, "INTERNAL", "An internal error"))).await;
    assert_class(&e, "APICallError", Some(500), true);
    let overloaded = api_error(503, "UNAVAILABLE", "The model is overloaded.");
    let e = failure(Reply::status(503).json(json!([overloaded]))).await;
    assert_class(&e, "APICallError", Some(503), true);
    assert!(e.message.contains("The model is overloaded."), "{e:?}");
    let in_stream = format!("data: {overloaded}\r\n\r\n");
    let e = failure(Reply::sse(vec![text("Hel"), in_stream])).await;
    assert_class(&e, "APICallError", Some(503), true);
}

#[tokio::test]
async fn a_connection_reset_mid_stream_ends_in_a_retryable_error() {
    let reply = Reply::sse(vec![text("partial")])
        .delay(Duration::from_millis(10))
        .reset_mid_stream();
    let server = FakeServer::start(vec![reply]).await;
    let (parts, err) = drain(&google(&server), simple("low")).await;
    assert_eq!(parts, vec![StreamPart::TextDelta("partial".into())]);
    assert_class(
        &err.expect("a reset stream must fail"),
        "APIConnectionError",
        None,
        true,
    );
}

#[tokio::test]
async fn a_stream_ending_before_a_finish_reason_ends_in_a_retryable_error() {
    let e = failure(Reply::sse(vec![text("Hel")]).close_mid_stream()).await;
    assert_class(&e, "APIConnectionError", None, true);
    let e = failure(Reply::sse(vec![text("Hel")])).await;
    assert_class(&e, "StreamClosed", None, true);
}

#[tokio::test]
async fn a_400_and_a_401_are_not_retryable_and_surface_the_api_message_without_the_key() {
    let message = "* GenerateContentRequest.tools[0].function_declarations[0].parameters.\
                   properties: should be non-empty for OBJECT type";
    let e = failure(Reply::status(400).json(api_error(400, "INVALID_ARGUMENT", message))).await;
    assert_class(&e, "APICallError", Some(400), false);
    assert!(
        e.message.contains("should be non-empty for OBJECT type"),
        "{e:?}"
    );
    let message = format!("API key not valid. Please pass a valid API key. ({KEY})");
    let e = failure(Reply::status(401).json(api_error(401, "UNAUTHENTICATED", &message))).await;
    assert_class(&e, "APICallError", Some(401), false);
    assert!(e.message.contains("API key not valid") && e.message.contains("[REDACTED]"));
}

#[tokio::test]
async fn a_truncated_or_invalid_json_chunk_is_a_retryable_invalid_response_error() {
    let truncated = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"te\r\n\r\n".to_string();
    let e = failure(Reply::sse(vec![text("Hel"), truncated])).await;
    assert_class(&e, "InvalidResponseDataError", None, true);
    let echoed = format!("data: not json {KEY}\r\n\r\n");
    let e = failure(Reply::sse(vec![echoed])).await;
    assert_class(&e, "InvalidResponseDataError", None, true);
    assert!(e.message.contains("[REDACTED]"), "{e:?}");
}

#[tokio::test]
async fn no_error_text_contains_the_api_key_or_a_secret_custom_header() {
    let echo = |m: String| api_error(403, "PERMISSION_DENIED", &m);
    let server = FakeServer::start(vec![
        Reply::status(403).json(echo(format!("key {KEY} and token tok-SECRET-2 denied"))),
        Reply::status(500).json(json!(format!("proxy saw x-goog-api-key: {KEY}"))),
        Reply::sse(vec![format!(
            "data: {}\r\n\r\n",
            echo(format!("bad key {KEY}"))
        )]),
    ])
    .await;
    let mut config = GoogleConfig::new(KEY);
    config.base_url = format!("{}/v1beta", server.url());
    config.headers = [("x-proxy-token".to_string(), "tok-SECRET-2".to_string())].into();
    let model = GoogleModel::new(config.clone()).unwrap();
    for _ in 0..3 {
        // `run` asserts that neither the parts nor the error mention "SECRET".
        let (_, err) = drain(&model, simple("low")).await;
        let e = err.expect("each reply fails");
        assert!(e.message.contains("[REDACTED]"), "{e:?}");
    }
    let debug = format!("{config:?} {model:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
}
