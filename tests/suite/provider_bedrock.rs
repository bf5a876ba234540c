//! The amazon-bedrock provider against a fake Bedrock runtime on 127.0.0.1 speaking AWS's
//! binary event stream: requests are SigV4-signed (or carry a Bedrock API key) and go to the
//! model's encoded path with a Converse body; keys from a container credentials endpoint are
//! cached and fetched again before they expire; reasoning, tool use and usage come back as
//! parts; refusals say what to fix; no secret reaches a part, an error, an event or the log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use perstack::config::ProviderName;
use perstack::llm::{FinishReason, GeneratedToolCall, LanguageModel, StreamPart, ToolSpec};
use perstack::schema::Usage;
use serde_json::{Map, Value, json};

use super::common;
use super::fake_server::{FakeServer, Recorded, Reply};
use super::wire::{
    self, AWS_ACCESS_KEY_ID, AWS_SESSION_TOKEN, FINE, KEY, assert_class, bedrock_frames as f, drain,
};

const MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const MODEL_PATH: &str = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream";

fn bedrock_with(env: Vec<(&'static str, String)>) -> Arc<dyn LanguageModel> {
    let env: BTreeMap<String, String> = env.into_iter().map(|(k, v)| (k.into(), v)).collect();
    perstack::llm::select::provider(ProviderName::AmazonBedrock, &Map::new(), &env, None).unwrap()
}

fn bedrock(server: &FakeServer) -> Arc<dyn LanguageModel> {
    bedrock_with((wire::bedrock().env)(&server.url()))
}

fn request(budget: &str) -> perstack::llm::GenerationRequest {
    let tool = ToolSpec {
        name: "readTextFile".into(),
        description: Some("Read a file".into()),
        input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
    };
    common::request(MODEL, common::hi(), vec![tool], budget)
}

/// Checks the shape of a SigV4 `Authorization` header for `key_id`, and that its signature
/// is the one of the request as it arrived (see [`assert_signed_as_received`]).
fn assert_sigv4(r: &Recorded, key_id: &str, secret: &str, token: &str) {
    let auth = &r.headers["authorization"];
    let date = &r.headers["x-amz-date"];
    assert_eq!(date.len(), 16, "{date}");
    let prefix = format!(
        "AWS4-HMAC-SHA256 Credential={key_id}/{}/us-east-1/bedrock/aws4_request, \
         SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, Signature=",
        &date[..8]
    );
    assert!(auth.starts_with(&prefix), "{auth}");
    let signature = &auth[prefix.len()..];
    assert_eq!(signature.len(), 64);
    assert!(signature.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.headers["x-amz-security-token"], token);
    assert_signed_as_received(r, key_id, secret, token);
}

/// Signs again what the server received (method, path as sent, host, the signed headers,
/// body, at the request's `x-amz-date`) and compares with its `Authorization`. The signer's
/// own correctness is the known-answer tests' job (`llm::bedrock::auth`); this catches a
/// request that changed after it was signed (a path re-encoded, a signed header rewritten).
fn assert_signed_as_received(r: &Recorded, key_id: &str, secret: &str, token: &str) {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let d = &r.headers["x-amz-date"];
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    );
    let time = aws_smithy_types::DateTime::from_str(
        &rfc3339,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .unwrap();
    let identity = aws_credential_types::Credentials::new(
        key_id,
        secret,
        Some(token.to_string()),
        None,
        "test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock")
        .time(std::time::SystemTime::try_from(time).unwrap())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = ["accept", "content-type"].map(|h| (h, r.headers[h].as_str()));
    let url = format!("http://{}{}", r.headers["host"], r.path);
    let request = SignableRequest::new(
        &r.method,
        url,
        headers.into_iter(),
        SignableBody::Bytes(r.raw_body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let expected = instructions
        .headers()
        .find(|(name, _)| *name == "authorization")
        .map(|(_, v)| v.to_string())
        .unwrap();
    assert_eq!(r.headers["authorization"], expected);
}

#[tokio::test]
async fn a_signed_converse_request_streams_reasoning_tool_use_and_usage() {
    let frames = vec![
        f::start(),
        f::event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0,
            "delta": {"reasoningContent": {"text": "Look first."}}}),
        ),
        f::event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0,
            "delta": {"reasoningContent": {"signature": "sig-1"}}}),
        ),
        f::event("contentBlockStop", json!({"contentBlockIndex": 0})),
        f::event(
            "contentBlockStart",
            json!({"contentBlockIndex": 1,
            "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "readTextFile"}}}),
        ),
        f::event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1,
            "delta": {"toolUse": {"input": "{\"path\": \"a.txt\"}"}}}),
        ),
        f::event("contentBlockStop", json!({"contentBlockIndex": 1})),
        f::event("messageStop", json!({"stopReason": "tool_use"})),
        f::event(
            "metadata",
            json!({"usage": {"inputTokens": 20, "outputTokens": 9,
            "totalTokens": 29, "cacheReadInputTokens": 300, "cacheWriteInputTokens": 0}}),
        ),
    ];
    // One frame split over two chunks, to cross a chunk boundary mid-message.
    let mut chunks = frames;
    let second = chunks.remove(1);
    chunks.insert(1, second[..7].to_vec());
    chunks.insert(2, second[7..].to_vec());
    let server = FakeServer::start(vec![f::stream(chunks)]).await;
    let (parts, err) = drain(&*bedrock(&server), request("low")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        parts,
        vec![
            StreamPart::ReasoningDelta("Look first.".into()),
            StreamPart::ReasoningEnd {
                signature: Some("sig-1".into())
            },
            StreamPart::ToolCall(GeneratedToolCall {
                id: "tooluse_1".into(),
                name: "readTextFile".into(),
                args: json!({"path": "a.txt"}),
            }),
            StreamPart::Finish {
                reason: FinishReason::ToolCalls,
                usage: Usage {
                    input_tokens: 320,
                    output_tokens: 9,
                    reasoning_tokens: 0,
                    total_tokens: 329,
                    cached_input_tokens: 300,
                },
            },
        ]
    );
    let calls = server.requests().await;
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", MODEL_PATH)
    );
    assert_sigv4(call, AWS_ACCESS_KEY_ID, KEY, AWS_SESSION_TOKEN);
    assert_eq!(call.headers["accept"], "application/vnd.amazon.eventstream");
    assert_eq!(
        call.body["messages"][0],
        json!({"role": "user", "content": [{"text": "Hi"}]})
    );
    assert_eq!(call.body["system"][0], json!({"text": "You are Perstack."}));
    assert_eq!(
        call.body["additionalModelRequestFields"]["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    assert_eq!(
        call.body["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "readTextFile"
    );
    assert!(!call.raw_body.contains("SECRET"));
}

#[tokio::test]
async fn a_bedrock_api_key_is_sent_as_a_bearer_token_without_signing() {
    let server = FakeServer::start(vec![(wire::bedrock().text)(FINE)]).await;
    let model = bedrock_with(vec![
        ("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-SECRET".into()),
        ("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY", KEY.into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url()),
    ]);
    let (_, err) = drain(&*model, request("none")).await;
    assert!(err.is_none(), "{err:?}");
    let call = &server.requests().await[0];
    assert_eq!(
        call.headers["authorization"],
        "Bearer bedrock-api-key-SECRET"
    );
    assert!(!call.headers.contains_key("x-amz-date"));
    assert!(call.body.get("additionalModelRequestFields").is_none());
}

/// The answer of a container credentials endpoint, expiring at `expiration`.
fn container_keys(expiration: &str) -> Reply {
    Reply::status(200).json(json!({"AccessKeyId": "ASIACONTAINER",
        "SecretAccessKey": "container-secret-SECRET", "Token": "container-token-SECRET",
        "Expiration": expiration, "RoleArn": "arn:aws:iam::1:role/task"}))
}

/// Two generations with keys from a container endpoint whose keys expire at `expiration`;
/// the endpoint's authorization comes from `auth` (`AWS_CONTAINER_AUTHORIZATION_TOKEN` or
/// `_TOKEN_FILE`).
async fn run_with_container(
    expiration: &str,
    auth: (&'static str, String),
) -> (FakeServer, Vec<Recorded>) {
    let text = || (wire::bedrock().text)(FINE);
    let server = FakeServer::start_routed(
        vec![text(), text()],
        vec![("/creds", container_keys(expiration))],
    )
    .await;
    let model = bedrock_with(vec![
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url()),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/creds/task", server.url()),
        ),
        auth,
    ]);
    for _ in 0..2 {
        let (_, err) = drain(&*model, request("none")).await;
        assert!(err.is_none(), "{err:?}");
    }
    let fetches = server.routed_requests().await;
    (server, fetches)
}

#[tokio::test]
async fn container_credentials_are_fetched_once_and_sign_every_request() {
    let auth = (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "ecs-auth-SECRET".into(),
    );
    let (server, fetches) = run_with_container("2999-01-01T00:00:00Z", auth).await;
    assert_eq!(fetches.len(), 1);
    assert_eq!(fetches[0].method, "GET");
    assert_eq!(fetches[0].path, "/creds/task");
    assert_eq!(fetches[0].headers["authorization"], "ecs-auth-SECRET");
    for call in server.requests().await {
        assert_sigv4(
            &call,
            "ASIACONTAINER",
            "container-secret-SECRET",
            "container-token-SECRET",
        );
    }
}

#[tokio::test]
async fn container_credentials_about_to_expire_are_fetched_again() {
    // Already expired: inside the refresh margin, so every request fetches fresh keys. The
    // endpoint's token comes from a file (EKS Pod Identity), read per fetch.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "eks-auth-file-SECRET\n").unwrap();
    let auth = (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        file.display().to_string(),
    );
    let (_, fetches) = run_with_container("2020-01-01T00:00:00Z", auth).await;
    assert_eq!(fetches.len(), 2);
    for f in &fetches {
        assert_eq!(f.headers["authorization"], "eks-auth-file-SECRET");
    }
}

fn refusal(status: u16, kind: &str, message: &str) -> Reply {
    Reply::status(status)
        .header(
            "x-amzn-errortype",
            &format!("{kind}:http://internal.amazon.com/coral/"),
        )
        .json(json!({"message": message}))
}

#[tokio::test]
async fn refusals_say_what_to_fix_and_throttling_is_retried_after_the_servers_delay() {
    let server = FakeServer::start(vec![
        refusal(403, "AccessDeniedException",
            "User: arn:aws:iam::1:user/x is not authorized to perform: bedrock:InvokeModelWithResponseStream"),
        refusal(403, "ExpiredTokenException", "The security token included in the request is expired"),
        refusal(403, "UnrecognizedClientException", "The security token included in the request is invalid."),
        refusal(400, "ValidationException", "The provided model identifier is invalid."),
        refusal(404, "ResourceNotFoundException", "Model not found"),
        refusal(429, "ThrottlingException", "Too many requests, please wait before trying again.")
            .header("retry-after", "3"),
        refusal(503, "ServiceUnavailableException", "Service unavailable"),
    ])
    .await;
    let model = bedrock(&server);
    let next = || refused(&*model);
    let e = next().await;
    assert_class(&e, "APICallError", Some(403), false);
    assert!(
        e.message
            .contains("bedrock:InvokeModelWithResponseStream on this model"),
        "{e:?}"
    );
    let e = next().await;
    assert_class(&e, "APICallError", Some(403), false);
    assert!(e.message.contains("credentials have expired"), "{e:?}");
    let e = next().await;
    assert!(e.message.contains("check AWS_ACCESS_KEY_ID"), "{e:?}");
    let e = next().await;
    assert_class(&e, "APICallError", Some(400), false);
    assert!(e.message.contains("unknown model"), "{e:?}");
    let e = next().await;
    assert_class(&e, "APICallError", Some(404), false);
    assert!(e.message.contains("unknown model"), "{e:?}");
    let e = next().await;
    assert_class(&e, "APICallError", Some(429), true);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    let e = next().await;
    assert_class(&e, "APICallError", Some(503), true);
}

async fn refused(model: &dyn LanguageModel) -> perstack::llm::GenerationError {
    drain(model, request("none")).await.1.unwrap()
}

#[tokio::test]
async fn exceptions_inside_a_200_stream_are_classified() {
    let broken = |kind: &str| {
        f::stream(vec![
            f::start(),
            f::text_block(0, "half").remove(0),
            f::exception(kind, "the model stream failed"),
        ])
    };
    let server = FakeServer::start(vec![
        broken("throttlingException"),
        broken("modelStreamErrorException"),
        broken("validationException"),
    ])
    .await;
    let model = bedrock(&server);
    for (status, retryable) in [(429, true), (424, true), (400, false)] {
        let (parts, err) = drain(&*model, request("none")).await;
        assert_eq!(parts, vec![StreamPart::TextDelta("half".into())]);
        let e = err.unwrap();
        assert_class(&e, "APICallError", Some(status), retryable);
        assert!(e.message.ends_with("the model stream failed"), "{e:?}");
    }
}

#[tokio::test]
async fn the_cli_example_leaks_no_aws_secret_even_when_tracing_everything() {
    let server = FakeServer::start(vec![(wire::bedrock().text)(FINE)]).await;
    let config = common::experts("providers/bedrock");
    let workspace = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_perstack"));
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .args(["assistant", "Hi"])
        .current_dir(workspace.path())
        .env("PERSTACK_LOG", "trace");
    for (k, v) in (wire::bedrock().env)(&server.url()) {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    // Tracing is really on (the log is not empty), and holds no key, token or signature.
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "{stderr}"
    );
    let signature = server.requests().await[0].headers["authorization"]
        .rsplit('=')
        .next()
        .unwrap()
        .to_string();
    for text in [&stdout, &stderr] {
        assert!(!wire::leaks_secret(text), "a secret leaked: {text}");
        assert!(!text.contains(&signature), "the signature leaked: {text}");
    }
    let done: Vec<Value> = common::events(&out.stdout);
    assert!(done.iter().any(|e| e["type"] == "completeRun"));
}
