//! The broken-stream corpus, end to end: for every wire format (Anthropic Messages SSE, OpenAI
//! Chat Completions SSE, Gemini SSE, also behind Vertex AI's token, Ollama NDJSON) a job runs
//! through the engine against a fake server whose first answer is broken in one way — truncated JSON, unknown event types,
//! a stream closed or reset before its end, invalid tool-call JSON, an empty answer, a hang,
//! a 429/5xx, a 400/401 — and whose second answer is fine. Each case must end in the expected
//! number of visible `retry` steps and a completed job, or in a clear `stopRunByError` naming
//! the status: never a panic or a hang, and never the API key in an event.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perstack::engine::{Engine, Settings};
use perstack::schema::{EventPayload, JobStatus};
use serde_json::Map;

use super::fake_server::{FakeServer, Reply};
use super::wire::{self, FINE, Wire};

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
            // Long enough that the good second answer never runs into it, however loaded the
            // machine: only the hang may.
            timeout: Duration::from_secs(10),
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
    let server = FakeServer::start_routed(case.replies, (w.routes)()).await;
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
        .any(|e| wire::leaks_secret(&serde_json::to_string(&**e).unwrap()));
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
    let cases = cases(&w);
    check_cases(w, cases).await;
}

/// Run `cases` concurrently (each on its own server); list all misses.
async fn check_cases(w: Wire, cases: Vec<Case>) {
    let w = Arc::new(w);
    let jobs = cases.into_iter().map(|case| {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_survives_the_broken_stream_corpus() {
    check(wire::anthropic()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_survives_the_broken_stream_corpus() {
    check(wire::openai()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_survives_the_broken_stream_corpus() {
    check(wire::google()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_survives_the_broken_stream_corpus() {
    check(wire::vertex()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_survives_the_broken_stream_corpus() {
    check(wire::bedrock()).await;
}

/// Bedrock reports some failures as exception messages inside a 200 stream: throttling and a
/// model's stream error are retried, a validation error stops the run with its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_exception_frames_inside_a_200_stream_follow_the_retry_policy() {
    use wire::bedrock_frames as f;
    let w = wire::bedrock();
    let broken = |kind: &str| {
        f::stream(vec![
            f::start(),
            f::text_block(0, "half").remove(0),
            f::exception(kind, "the stream failed"),
        ])
    };
    let case = |name, kind, expect| Case {
        name,
        replies: vec![broken(kind), (w.text)(FINE)],
        expect,
        timeout: Duration::from_secs(300),
    };
    let retried = Expect::Completed { retries: 1 };
    let cases = vec![
        case("throttlingException", "throttlingException", retried),
        case(
            "modelStreamErrorException",
            "modelStreamErrorException",
            retried,
        ),
        case(
            "serviceUnavailableException",
            "serviceUnavailableException",
            retried,
        ),
        case(
            "validationException",
            "validationException",
            Expect::Stopped { status: 400 },
        ),
    ];
    check_cases(w, cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_survives_the_broken_stream_corpus() {
    check(wire::ollama()).await;
}
