//! The example `perstack.toml` of every provider (`experts/providers/<name>/`) runs unchanged
//! through the CLI against a fake server speaking that provider's wire format, selected only by
//! the provider's own environment variables: the request goes to the provider's endpoint with
//! its key header, the example's model and the reasoning settings its budget maps to.

use serde_json::{Value, json};

use super::fake_server::{FakeServer, Recorded, Reply};
use super::wire::{self, FINE, KEY};

struct Example {
    dir: &'static str,
    /// A good text answer in the provider's wire format.
    answer: fn(&str) -> Reply,
    /// The environment pointing the provider at the server.
    env: fn(&str) -> Vec<(&'static str, String)>,
    /// The path (and query) the request must go to.
    path: &'static str,
    /// The request header carrying the key, and its expected value.
    key_header: (&'static str, String),
    /// Fixed answers beside the model API (a token endpoint).
    routes: fn() -> Vec<(&'static str, Reply)>,
    /// What the example's model and reasoning budget must put in the body.
    body: Vec<(&'static str, Value)>,
}

fn examples() -> Vec<Example> {
    let openai = |t: &str| (wire::openai().text)(t);
    vec![
        Example {
            dir: "anthropic",
            routes: Vec::new,
            answer: |t| (wire::anthropic().text)(t),
            env: wire::anthropic().env,
            path: "/v1/messages",
            key_header: ("x-api-key", KEY.into()),
            body: vec![
                ("/model", json!("claude-sonnet-4-5")),
                (
                    "/thinking",
                    json!({"type": "enabled", "budget_tokens": 2048}),
                ),
                ("/system/0/cache_control", json!({"type": "ephemeral"})),
            ],
        },
        Example {
            dir: "openai",
            routes: Vec::new,
            answer: openai,
            env: wire::openai().env,
            path: "/v1/chat/completions",
            key_header: ("authorization", format!("Bearer {KEY}")),
            body: vec![
                ("/model", json!("gpt-5-mini")),
                ("/reasoning_effort", json!("medium")),
                ("/stream", json!(true)),
            ],
        },
        Example {
            dir: "deepseek",
            routes: Vec::new,
            answer: openai,
            env: |url| {
                vec![
                    ("DEEPSEEK_API_KEY", KEY.into()),
                    ("DEEPSEEK_BASE_URL", format!("{url}/v1")),
                ]
            },
            path: "/v1/chat/completions",
            key_header: ("authorization", format!("Bearer {KEY}")),
            body: vec![("/model", json!("deepseek-reasoner"))],
        },
        Example {
            dir: "azure-openai",
            routes: Vec::new,
            answer: openai,
            env: |url| {
                vec![
                    ("AZURE_API_KEY", KEY.into()),
                    ("AZURE_BASE_URL", format!("{url}/openai")),
                ]
            },
            path: "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            key_header: ("api-key", KEY.into()),
            body: vec![("/stream", json!(true))],
        },
        Example {
            dir: "google",
            routes: Vec::new,
            answer: |t| (wire::google().text)(t),
            env: wire::google().env,
            path: "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            key_header: ("x-goog-api-key", KEY.into()),
            body: vec![(
                "/generationConfig/thinkingConfig",
                json!({"thinkingBudget": 2048, "includeThoughts": true}),
            )],
        },
        Example {
            dir: "bedrock",
            routes: Vec::new,
            answer: |t| (wire::bedrock().text)(t),
            env: wire::bedrock().env,
            path: "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream",
            key_header: ("x-amz-security-token", wire::AWS_SESSION_TOKEN.into()),
            body: vec![(
                "/additionalModelRequestFields/thinking",
                json!({"type": "enabled", "budget_tokens": 2048}),
            )],
        },
        Example {
            dir: "vertex",
            routes: wire::vertex().routes,
            answer: |t| (wire::vertex().text)(t),
            env: wire::vertex().env,
            path: "/v1/projects/perstack-test/locations/us-central1/publishers/google/models/\
                   gemini-2.5-flash:streamGenerateContent?alt=sse",
            key_header: ("authorization", format!("Bearer {}", wire::VERTEX_TOKEN)),
            body: vec![(
                "/generationConfig/thinkingConfig",
                json!({"thinkingBudget": 2048, "includeThoughts": true}),
            )],
        },
        Example {
            dir: "ollama",
            routes: Vec::new,
            answer: |t| (wire::ollama().text)(t),
            env: wire::ollama().env,
            path: "/api/chat",
            key_header: ("content-type", "application/json".into()),
            body: vec![("/model", json!("gpt-oss:20b")), ("/think", json!(true))],
        },
    ]
}

/// Run the example in `dir` against a server answering `FINE`; the stdout events and the
/// request the server saw.
async fn run(example: &Example) -> (Vec<Value>, Recorded) {
    let server = FakeServer::start_routed(vec![(example.answer)(FINE)], (example.routes)()).await;
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experts/providers")
        .join(example.dir)
        .join("perstack.toml");
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("notes.txt"), "hello").unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_perstack"));
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .args(["assistant", "What is in this workspace?"])
        .current_dir(workspace.path());
    for (k, v) in (example.env)(&server.url()) {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{}: {stderr}", example.dir);
    assert!(!wire::leaks_secret(&stdout) && !wire::leaks_secret(&stderr));
    let events = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut requests = server.requests().await;
    assert_eq!(requests.len(), 1, "{}", example.dir);
    (events, requests.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_example_runs_unchanged_against_its_wire_format() {
    let runs = examples().into_iter().map(|example| {
        tokio::spawn(async move {
            let (events, request) = run(&example).await;
            (example, events, request)
        })
    });
    for run in futures::future::join_all(runs).await {
        let (example, events, request) = run.unwrap();
        let dir = example.dir;
        let done = events.iter().find(|e| e["type"] == "completeRun");
        assert_eq!(done.map(|e| &e["text"]), Some(&json!(FINE)), "{dir}");
        assert_eq!(request.method, "POST", "{dir}");
        assert_eq!(request.path, example.path, "{dir}");
        let (header, value) = &example.key_header;
        assert_eq!(request.headers.get(*header), Some(value), "{dir}: {header}");
        for (pointer, expected) in &example.body {
            assert_eq!(
                request.body.pointer(pointer),
                Some(expected),
                "{dir}: {pointer}"
            );
        }
        // The example's tools, and only those, are offered.
        let body = request.body.to_string();
        for tool in ["listDirectory", "readTextFile", "attemptCompletion"] {
            assert!(body.contains(tool), "{dir}: {tool} not offered");
        }
        assert!(
            !body.contains("deleteFile"),
            "{dir}: an omitted tool was offered"
        );
    }
}
