//! The broken-stream corpus, end to end: for every wire format (Anthropic Messages SSE, OpenAI
//! Chat Completions SSE, Gemini SSE, Ollama NDJSON) a job runs through the engine against a
//! fake server whose first answer is broken in one way — truncated JSON, unknown event types,
//! a stream closed or reset before its end, invalid tool-call JSON, an empty answer, a hang,
//! a 429/5xx, a 400/401 — and whose second answer is fine. Each case must end in the expected
//! number of visible `retry` steps and a completed job, or in a clear `stopRunByError` naming
//! the status: never a panic or a hang, and never the API key in an event.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perstack::config::ProviderName;
use perstack::engine::{Engine, Settings};
use perstack::schema::{EventPayload, JobStatus};
use serde_json::{Map, Value, json};

use super::fake_server::{FakeServer, Reply, sse_event};

const KEY: &str = "test-key-SECRET";
const FINE: &str = "All fine.";

/// One provider's wire format: how its answers look, and how it is pointed at a server.
struct Wire {
    provider: ProviderName,
    /// The environment that selects a server at this URL.
    env: fn(&str) -> Vec<(&'static str, String)>,
    /// A complete plain-text answer.
    text: fn(&str) -> Reply,
    /// A complete answer that calls `attemptCompletion` with these raw arguments.
    tool_call: fn(&str) -> Reply,
    /// A complete answer with no content at all.
    empty: fn() -> Reply,
    /// A complete text answer with event types / fields this engine has never seen.
    unknown_events: fn(&str) -> Reply,
    /// An answer one of whose events is cut-off JSON, then carries on to a normal end.
    truncated_json: fn() -> Reply,
    /// The beginning of a text answer, without its end (to close or reset after).
    partial: fn() -> Reply,
    /// The API's JSON error body.
    error_body: fn(&str) -> Value,
}

/// What a case must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Completed with [`FINE`] after this many retries.
    Completed { retries: usize },
    /// Stopped by error with this HTTP status (and no retry).
    Stopped { status: u16 },
}

struct Case {
    name: &'static str,
    replies: Vec<Reply>,
    expect: Expect,
    timeout: Duration,
}

fn cases(w: &Wire) -> Vec<Case> {
    let after_one = |name, broken: Reply| Case {
        name,
        replies: vec![broken, (w.text)(FINE)],
        expect: Expect::Completed { retries: 1 },
        timeout: Duration::from_secs(300),
    };
    let status =
        |s: u16| Reply::status(s).json((w.error_body)(&format!("status {s} from the fake")));
    let stopped = |name, s: u16| Case {
        name,
        replies: vec![status(s), (w.text)("never")],
        expect: Expect::Stopped { status: s },
        timeout: Duration::from_secs(300),
    };
    vec![
        Case {
            name: "plain text",
            replies: vec![(w.text)(FINE)],
            expect: Expect::Completed { retries: 0 },
            timeout: Duration::from_secs(300),
        },
        Case {
            name: "unknown event types",
            replies: vec![(w.unknown_events)(FINE)],
            expect: Expect::Completed { retries: 0 },
            timeout: Duration::from_secs(300),
        },
        after_one("truncated JSON", (w.truncated_json)()),
        after_one("closed before the end", (w.partial)().close_mid_stream()),
        after_one("reset mid-stream", (w.partial)().reset_mid_stream()),
        after_one(
            "invalid tool-call JSON",
            (w.tool_call)(r#"{"result": "unterminated"#),
        ),
        after_one("empty answer", (w.empty)()),
        after_one(
            "429 with Retry-After",
            status(429).header("retry-after", "0"),
        ),
        after_one("500", status(500)),
        after_one("503", status(503)),
        Case {
            // The per-call timeout bounds a server that sends headers and then nothing.
            name: "hang",
            replies: vec![
                (w.text)("never").delay(Duration::from_secs(3600)),
                (w.text)(FINE),
            ],
            expect: Expect::Completed { retries: 1 },
            timeout: Duration::from_secs(3),
        },
        stopped("400", 400),
        stopped("401", 401),
    ]
}

/// What one job ended in.
#[derive(Debug)]
struct Outcome {
    status: JobStatus,
    retries: usize,
    error_status: Option<u16>,
    text: Option<String>,
    leaked_key: bool,
}

async fn run_case(w: &Wire, case: Case) -> Outcome {
    let server = FakeServer::start(case.replies).await;
    let env: BTreeMap<String, String> = (w.env)(&server.url())
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let model = perstack::llm::select::provider(w.provider, &Map::new(), &env, None).unwrap();
    let cfg = perstack::config::parse(
        "[experts.solo]\ninstruction = \"Answer.\"\n",
        std::path::Path::new("perstack.toml"),
    )
    .unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(cfg.experts);
    settings.model = "test-model".into();
    settings.timeout = case.timeout;
    settings.workspace = workspace.path().to_path_buf();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    let engine = Engine::builder()
        .settings(settings)
        .model(model)
        .on_event(move |e| seen.lock().unwrap().push(e.event.clone()))
        .build();
    // A safety net against a hang in the engine, far above any wait in the corpus.
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        engine
            .run("solo", "go")
            .await
            .unwrap()
            .wait()
            .await
            .unwrap()
    })
    .await
    .unwrap_or_else(|_| panic!("{:?} / {}: the job hung", w.provider, case.name));
    let events = lines.lock().unwrap().clone();
    let retries = events
        .iter()
        .filter(|e| matches!(e.payload, EventPayload::Retry(_)))
        .count();
    let leaked_key = events
        .iter()
        .any(|e| serde_json::to_string(&**e).unwrap().contains("SECRET"));
    Outcome {
        status: outcome.job.status,
        retries,
        error_status: outcome
            .checkpoint
            .error
            .as_ref()
            .and_then(|e| e.status_code),
        text: outcome.text,
        leaked_key,
    }
}

fn meets(o: &Outcome, expect: Expect) -> bool {
    let clean = !o.leaked_key;
    clean
        && match expect {
            Expect::Completed { retries } => {
                o.status == JobStatus::Completed
                    && o.retries == retries
                    && o.text.as_deref() == Some(FINE)
            }
            Expect::Stopped { status } => {
                o.status == JobStatus::StoppedByError
                    && o.retries == 0
                    && o.error_status == Some(status)
            }
        }
}

/// Run every case of the corpus concurrently (each on its own server); list all misses.
async fn check(w: Wire) {
    let w = Arc::new(w);
    let jobs = cases(&w).into_iter().map(|case| {
        let w = w.clone();
        tokio::spawn(async move {
            let (name, expect) = (case.name, case.expect);
            (name, expect, run_case(&w, case).await)
        })
    });
    let mut misses = Vec::new();
    for job in futures::future::join_all(jobs).await {
        let (name, expect, outcome) = job.unwrap();
        if !meets(&outcome, expect) {
            misses.push(format!("{name}: expected {expect:?}, got {outcome:?}"));
        }
    }
    assert!(
        misses.is_empty(),
        "{:?}:\n{}",
        w.provider,
        misses.join("\n")
    );
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

    pub(super) fn wire() -> Wire {
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

    pub(super) fn wire() -> Wire {
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

    pub(super) fn wire() -> Wire {
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

    pub(super) fn wire() -> Wire {
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
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_survives_the_broken_stream_corpus() {
    check(anthropic::wire()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_survives_the_broken_stream_corpus() {
    check(openai::wire()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_survives_the_broken_stream_corpus() {
    check(google::wire()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_survives_the_broken_stream_corpus() {
    check(ollama::wire()).await;
}
