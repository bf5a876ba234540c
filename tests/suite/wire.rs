//! The wire formats of the real providers, as a fake server speaks them: Anthropic Messages
//! SSE, OpenAI Chat Completions SSE (also DeepSeek and Azure OpenAI), Gemini
//! `streamGenerateContent` SSE (also behind Vertex AI), Ollama NDJSON and Bedrock's Converse
//! over AWS's binary event stream. Each [`Wire`] builds good and broken answers
//! of one format, so the corpus and the CLI tests drive every provider the same way.

use std::time::Duration;

use futures::StreamExt;
use perstack::config::ProviderName;
use perstack::llm::{GenerationError, GenerationRequest, LanguageModel, StreamPart};
use serde_json::{Value, json};

use super::fake_server::{Reply, sse_event};

/// The API key every test uses; it must never appear in an event or error.
pub(crate) const KEY: &str = "test-key-SECRET";
/// The text of a good answer.
pub(crate) const FINE: &str = "All fine.";

/// Stream `req` from `model` to the end (bounded by a timeout): the parts, and the error that
/// ended it. Asserts that nothing in either contains `SECRET` (every test key or secret header
/// holds it).
pub(crate) async fn drain(
    model: &dyn LanguageModel,
    req: GenerationRequest,
) -> (Vec<StreamPart>, Option<GenerationError>) {
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = match model.stream(req).await {
            Ok(s) => s,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut parts = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(p) => parts.push(p),
                Err(e) => return (parts, Some(e)),
            }
        }
        (parts, None)
    })
    .await
    .expect("the provider hung");
    let text = format!("{outcome:?}");
    assert!(!leaks_secret(&text), "a secret leaked: {text}");
    outcome
}

/// Whether `text` holds a test secret (they all contain `SECRET`). The name of the variable
/// `AWS_SECRET_ACCESS_KEY`, which messages may tell the user to set, is not a secret.
pub(crate) fn leaks_secret(text: &str) -> bool {
    text.replace("AWS_SECRET_ACCESS_KEY", "").contains("SECRET")
}

/// Asserts the class of `e`: name, status and retry policy.
pub(crate) fn assert_class(e: &GenerationError, name: &str, status: Option<u16>, retryable: bool) {
    let got = (e.name.as_str(), e.status_code, e.retryable);
    assert_eq!(got, (name, status, retryable), "{e:?}");
}

/// One provider's wire format: how its answers look, and how it is pointed at a server.
pub(crate) struct Wire {
    pub(crate) provider: ProviderName,
    /// The environment that selects a server at this URL.
    pub(crate) env: fn(&str) -> Vec<(&'static str, String)>,
    /// A complete plain-text answer.
    pub(crate) text: fn(&str) -> Reply,
    /// A complete answer that calls `attemptCompletion` with these raw arguments.
    pub(crate) tool_call: fn(&str) -> Reply,
    /// A complete answer with no content at all.
    pub(crate) empty: fn() -> Reply,
    /// A complete text answer with event types / fields this engine has never seen.
    pub(crate) unknown_events: fn(&str) -> Reply,
    /// An answer one of whose events is cut-off JSON, then carries on to a normal end.
    pub(crate) truncated_json: fn() -> Reply,
    /// The beginning of a text answer, without its end (to close or reset after).
    pub(crate) partial: fn() -> Reply,
    /// The API's JSON error body.
    pub(crate) error_body: fn(&str) -> Value,
    /// Fixed answers beside the model API (a token endpoint), by path prefix.
    pub(crate) routes: fn() -> Vec<(&'static str, Reply)>,
}

mod anthropic {
    use super::*;

    fn ev(data: Value) -> String {
        sse_event(data["type"].as_str().unwrap(), &data)
    }

    fn start() -> String {
        ev(
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": "test-model", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        )
    }

    fn block(index: u64, start: Value, delta: Value) -> Vec<String> {
        vec![
            ev(json!({"type": "content_block_start", "index": index, "content_block": start})),
            ev(json!({"type": "content_block_delta", "index": index, "delta": delta})),
            ev(json!({"type": "content_block_stop", "index": index})),
        ]
    }

    fn text_block(t: &str) -> Vec<String> {
        block(
            0,
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": t}),
        )
    }

    fn end(reason: &str) -> Vec<String> {
        vec![
            ev(
                json!({"type": "message_delta", "delta": {"stop_reason": reason},
                "usage": {"output_tokens": 5}}),
            ),
            ev(json!({"type": "message_stop"})),
        ]
    }

    pub(crate) fn wire() -> Wire {
        Wire {
            provider: ProviderName::Anthropic,
            env: |url| {
                vec![
                    ("ANTHROPIC_API_KEY", KEY.into()),
                    ("ANTHROPIC_BASE_URL", format!("{url}/v1")),
                ]
            },
            text: |t| Reply::sse([vec![start()], text_block(t), end("end_turn")].concat()),
            tool_call: |raw| {
                let start_block = json!({"type": "tool_use", "id": "toolu_1",
                    "name": "attemptCompletion", "input": {}});
                let delta = json!({"type": "input_json_delta", "partial_json": raw});
                Reply::sse([vec![start()], block(0, start_block, delta), end("tool_use")].concat())
            },
            empty: || Reply::sse([vec![start()], end("end_turn")].concat()),
            unknown_events: |t| {
                let odd = vec![
                    sse_event("ping", &json!({"type": "ping"})),
                    ev(json!({"type": "mystery_event", "payload": {"x": 1}})),
                ];
                let mut text = text_block(t);
                text.insert(
                    1,
                    ev(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "mystery_delta", "x": 1}})),
                );
                Reply::sse([vec![start()], odd, text, end("end_turn")].concat())
            },
            truncated_json: || {
                let cut =
                    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"ind\n\n";
                Reply::sse([vec![start(), cut.into()], text_block("x"), end("end_turn")].concat())
            },
            partial: || {
                let mut s = vec![start()];
                s.extend(text_block("half an ans").into_iter().take(2));
                Reply::sse(s)
            },
            error_body: |m| json!({"type": "error", "error": {"type": "api_error", "message": m}}),
            routes: Vec::new,
        }
    }
}

mod openai {
    use super::*;

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        let data = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "created": 1_754_000_000, "model": "test-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {data}\n\n")
    }

    fn role() -> String {
        chunk(json!({"role": "assistant", "content": ""}), None)
    }

    fn done() -> Vec<String> {
        let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        vec![format!("data: {usage}\n\n"), "data: [DONE]\n\n".into()]
    }

    pub(crate) fn wire() -> Wire {
        Wire {
            provider: ProviderName::OpenAi,
            env: |url| {
                vec![
                    ("OPENAI_API_KEY", KEY.into()),
                    ("OPENAI_BASE_URL", format!("{url}/v1")),
                ]
            },
            text: |t| {
                let body = vec![
                    role(),
                    chunk(json!({"content": t}), None),
                    chunk(json!({}), Some("stop")),
                ];
                Reply::sse([body, done()].concat())
            },
            tool_call: |raw| {
                let call = json!({"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "attemptCompletion", "arguments": raw}});
                let body = vec![
                    role(),
                    chunk(json!({"tool_calls": [call]}), None),
                    chunk(json!({}), Some("tool_calls")),
                ];
                Reply::sse([body, done()].concat())
            },
            empty: || Reply::sse([vec![role(), chunk(json!({}), Some("stop"))], done()].concat()),
            unknown_events: |t| {
                let body = vec![
                    ": keep-alive\n\n".into(),
                    role(),
                    chunk(json!({"content": t, "mystery": {"x": 1}}), None),
                    format!(
                        "data: {}\n\n",
                        json!({"object": "mystery.object", "choices": []})
                    ),
                    chunk(json!({}), Some("stop")),
                ];
                Reply::sse([body, done()].concat())
            },
            truncated_json: || {
                let body = vec![
                    role(),
                    "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"ha\n\n"
                        .into(),
                    chunk(json!({}), Some("stop")),
                ];
                Reply::sse([body, done()].concat())
            },
            partial: || Reply::sse(vec![role(), chunk(json!({"content": "half an ans"}), None)]),
            error_body: |m| json!({"error": {"message": m, "type": "server_error", "code": null}}),
            routes: Vec::new,
        }
    }
}

mod google {
    use super::*;

    fn chunk(parts: Value, finish: Option<&str>) -> String {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        let mut data = json!({"candidates": [candidate], "modelVersion": "test-model"});
        if finish.is_some() {
            data["usageMetadata"] = json!({"promptTokenCount": 10, "candidatesTokenCount": 5,
                "totalTokenCount": 15});
        }
        format!("data: {data}\r\n\r\n")
    }

    fn stop() -> String {
        chunk(json!([{"text": ""}]), Some("STOP"))
    }

    pub(crate) fn wire() -> Wire {
        Wire {
            provider: ProviderName::Google,
            env: |url| {
                vec![
                    ("GOOGLE_GENERATIVE_AI_API_KEY", KEY.into()),
                    ("GOOGLE_GENERATIVE_AI_BASE_URL", format!("{url}/v1beta")),
                ]
            },
            text: |t| Reply::sse(vec![chunk(json!([{"text": t}]), None), stop()]),
            // Gemini sends arguments as an object; a string that is not a JSON object is the
            // closest thing to invalid tool-call JSON this wire can carry.
            tool_call: |raw| {
                let call = json!({"functionCall": {"name": "attemptCompletion", "args": raw}});
                Reply::sse(vec![chunk(json!([call]), Some("STOP"))])
            },
            empty: || Reply::sse(vec![chunk(json!([]), Some("STOP"))]),
            unknown_events: |t| {
                let odd = json!({"candidates": [{"content": {"parts": [], "role": "model"},
                    "groundingMetadata": {"x": 1}}], "mysteryField": true});
                Reply::sse(vec![
                    format!("data: {odd}\r\n\r\n"),
                    chunk(json!([{"text": t, "mysteryPartField": 1}]), None),
                    stop(),
                ])
            },
            truncated_json: || {
                Reply::sse(vec![
                    "data: {\"candidates\": [{\"content\": {\"par\r\n\r\n".into(),
                    chunk(json!([{"text": "x"}]), None),
                    stop(),
                ])
            },
            partial: || Reply::sse(vec![chunk(json!([{"text": "half an ans"}]), None)]),
            error_body: |m| json!({"error": {"code": 500, "message": m, "status": "INTERNAL"}}),
            routes: Vec::new,
        }
    }
}

mod ollama {
    use super::*;

    fn line(message: Value) -> String {
        let mut m = json!({"role": "assistant", "content": ""});
        if let (Value::Object(m), Value::Object(extra)) = (&mut m, message) {
            m.extend(extra);
        }
        let v = json!({"model": "test-model", "created_at": "2025-08-05T10:00:00Z",
            "message": m, "done": false});
        format!("{v}\n")
    }

    fn done() -> String {
        let v = json!({"model": "test-model", "created_at": "2025-08-05T10:00:01Z",
            "message": {"role": "assistant", "content": ""}, "done": true,
            "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 5});
        format!("{v}\n")
    }

    fn ndjson(lines: Vec<String>) -> Reply {
        Reply::stream("application/x-ndjson", lines)
    }

    pub(crate) fn wire() -> Wire {
        Wire {
            provider: ProviderName::Ollama,
            env: |url| vec![("OLLAMA_BASE_URL", url.to_string())],
            text: |t| ndjson(vec![line(json!({"content": t})), done()]),
            // Ollama sends arguments as an object; some models send a JSON string instead.
            tool_call: |raw| {
                let call = json!({"function": {"name": "attemptCompletion", "arguments": raw}});
                ndjson(vec![line(json!({"tool_calls": [call]})), done()])
            },
            empty: || ndjson(vec![done()]),
            unknown_events: |t| {
                ndjson(vec![
                    line(json!({"content": t, "mystery": {"x": 1}})),
                    format!("{}\n", json!({"model": "test-model", "status": "mystery"})),
                    done(),
                ])
            },
            truncated_json: || {
                ndjson(vec![
                    "{\"model\":\"test-model\",\"message\":{\"role\":\"assi\n".into(),
                    line(json!({"content": "x"})),
                    done(),
                ])
            },
            partial: || ndjson(vec![line(json!({"content": "half an ans"}))]),
            error_body: |m| json!({"error": m}),
            routes: Vec::new,
        }
    }
}

/// Bedrock's event-stream frames, as a fake server sends them.
pub(crate) mod bedrock_frames {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};

    use super::*;

    /// The content type of Bedrock's streamed answers.
    pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

    fn encode(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(m, &mut out).unwrap();
        out
    }

    fn header(name: &str, value: &str) -> Header {
        Header::new(
            name.to_string(),
            HeaderValue::String(value.to_string().into()),
        )
    }

    /// One event message, with its payload as raw bytes.
    pub(crate) fn raw_event(kind: &str, payload: &[u8]) -> Vec<u8> {
        encode(
            &Message::new(payload.to_vec())
                .add_header(header(":message-type", "event"))
                .add_header(header(":event-type", kind))
                .add_header(header(":content-type", "application/json")),
        )
    }

    /// One event message.
    pub(crate) fn event(kind: &str, payload: Value) -> Vec<u8> {
        raw_event(kind, payload.to_string().as_bytes())
    }

    /// An exception message inside a 200 stream.
    pub(crate) fn exception(kind: &str, message: &str) -> Vec<u8> {
        encode(
            &Message::new(json!({"message": message}).to_string().into_bytes())
                .add_header(header(":message-type", "exception"))
                .add_header(header(":exception-type", kind))
                .add_header(header(":content-type", "application/json")),
        )
    }

    pub(crate) fn start() -> Vec<u8> {
        event("messageStart", json!({"p": "abc", "role": "assistant"}))
    }

    pub(crate) fn text_block(index: u64, t: &str) -> Vec<Vec<u8>> {
        vec![
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": index,
                "delta": {"text": t}, "p": "abcd"}),
            ),
            event(
                "contentBlockStop",
                json!({"contentBlockIndex": index, "p": "ab"}),
            ),
        ]
    }

    pub(crate) fn end(reason: &str) -> Vec<Vec<u8>> {
        vec![
            event("messageStop", json!({"stopReason": reason, "p": "abcdef"})),
            event(
                "metadata",
                json!({"usage": {"inputTokens": 10, "outputTokens": 5,
                "totalTokens": 15}, "metrics": {"latencyMs": 100}, "p": "abc"}),
            ),
        ]
    }

    pub(crate) fn stream(frames: Vec<Vec<u8>>) -> Reply {
        Reply::binary(EVENT_STREAM, frames)
    }

    pub(crate) fn wire() -> Wire {
        Wire {
            provider: ProviderName::AmazonBedrock,
            env: |url| {
                vec![
                    ("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY_ID.into()),
                    ("AWS_SECRET_ACCESS_KEY", KEY.into()),
                    ("AWS_SESSION_TOKEN", AWS_SESSION_TOKEN.into()),
                    ("AWS_REGION", "us-east-1".into()),
                    ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", url.to_string()),
                ]
            },
            text: |t| stream([vec![start()], text_block(0, t), end("end_turn")].concat()),
            tool_call: |raw| {
                let blocks = vec![
                    event(
                        "contentBlockStart",
                        json!({"contentBlockIndex": 0,
                        "start": {"toolUse": {"toolUseId": "tooluse_1",
                        "name": "attemptCompletion"}}}),
                    ),
                    event(
                        "contentBlockDelta",
                        json!({"contentBlockIndex": 0,
                        "delta": {"toolUse": {"input": raw}}}),
                    ),
                    event("contentBlockStop", json!({"contentBlockIndex": 0})),
                ];
                stream([vec![start()], blocks, end("tool_use")].concat())
            },
            empty: || stream([vec![start()], end("end_turn")].concat()),
            unknown_events: |t| {
                let odd = vec![
                    event("mysteryEvent", json!({"x": 1})),
                    event(
                        "contentBlockDelta",
                        json!({"contentBlockIndex": 0,
                        "delta": {"mysteryDelta": {"x": 1}}}),
                    ),
                ];
                stream([vec![start()], odd, text_block(0, t), end("end_turn")].concat())
            },
            truncated_json: || {
                let cut = raw_event("contentBlockDelta", b"{\"contentBlockIndex\":0,\"del");
                stream([vec![start(), cut], text_block(0, "x"), end("end_turn")].concat())
            },
            partial: || stream(vec![start(), text_block(0, "half an ans").remove(0)]),
            error_body: |m| json!({"message": m}),
            routes: Vec::new,
        }
    }
}

/// The access key id of the Bedrock tests (not a secret: it is sent in the clear).
pub(crate) const AWS_ACCESS_KEY_ID: &str = "AKIDPERSTACKTEST";
/// The session token of the Bedrock tests; it must never appear in an event or error.
pub(crate) const AWS_SESSION_TOKEN: &str = "session-token-SECRET";

mod vertex {
    use super::*;

    /// Gemini's wire format behind Vertex AI's URL layout and an OAuth token from a fake
    /// token endpoint on the same server.
    pub(crate) fn wire() -> Wire {
        Wire {
            provider: ProviderName::GoogleVertex,
            env: |url| {
                vec![
                    ("GOOGLE_APPLICATION_CREDENTIALS", vertex_key_file(url)),
                    ("GOOGLE_VERTEX_BASE_URL", format!("{url}{VERTEX_PUBLISHER}")),
                ]
            },
            routes: || vec![("/token", vertex_token_reply(3600))],
            ..super::google::wire()
        }
    }
}

/// The publisher path every Vertex test uses under the fake server.
pub(crate) const VERTEX_PUBLISHER: &str =
    "/v1/projects/perstack-test/locations/us-central1/publishers/google";

/// The access token the fake token endpoint hands out.
pub(crate) const VERTEX_TOKEN: &str = "ya29.test-token-SECRET";

/// A token endpoint's answer: [`VERTEX_TOKEN`], valid `expires_in` seconds.
pub(crate) fn vertex_token_reply(expires_in: u64) -> Reply {
    Reply::status(200).json(
        json!({"access_token": VERTEX_TOKEN, "expires_in": expires_in,
        "token_type": "Bearer"}),
    )
}

/// A service-account key file (a test-only RSA key that grants nothing, generated for these
/// tests) whose `token_uri` is `{url}/token`; its path. The file lives in Cargo's scratch
/// directory for integration tests, one per server port.
pub(crate) fn vertex_key_file(url: &str) -> String {
    let template = include_str!("../fixtures/vertex/service-account.template.json");
    let body = template.replace("TOKEN_URI", &format!("{url}/token"));
    let port = url.rsplit(':').next().unwrap_or("0");
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vertex-key-{port}.json"));
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

pub(crate) use anthropic::wire as anthropic;
pub(crate) use bedrock_frames::wire as bedrock;
pub(crate) use google::wire as google;
pub(crate) use ollama::wire as ollama;
pub(crate) use openai::wire as openai;
pub(crate) use vertex::wire as vertex;
