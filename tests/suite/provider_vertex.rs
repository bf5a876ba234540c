//! The google-vertex provider against a fake Vertex AI and a fake OAuth token endpoint on
//! 127.0.0.1: the token request is a JWT bearer grant signed with the service-account key
//! (checked against its public key), every model request carries the token, Gemini and Claude
//! models go to their publishers' paths with their bodies, a token is reused until shortly
//! before it expires, and refused tokens or access end in clear, secret-free errors.

use std::collections::BTreeMap;

use perstack::config::ProviderName;
use perstack::llm::{LanguageModel, StreamPart};
use serde_json::{Map, Value, json};

use super::common;
use super::fake_server::{FakeServer, Recorded, Reply, sse_event};
use super::wire::{
    self, FINE, VERTEX_PUBLISHER, VERTEX_TOKEN, assert_class, drain, vertex_token_reply,
};

const SERVICE_ACCOUNT: &str = "perstack-test@perstack-test.iam.gserviceaccount.com";

fn vertex(server: &FakeServer) -> std::sync::Arc<dyn LanguageModel> {
    let env: BTreeMap<String, String> = (wire::vertex().env)(&server.url())
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    perstack::llm::select::provider(ProviderName::GoogleVertex, &Map::new(), &env, None).unwrap()
}

/// The form fields of a recorded token request.
fn form(r: &Recorded) -> BTreeMap<String, String> {
    let url = reqwest::Url::parse(&format!("http://x/?{}", r.raw_body)).unwrap();
    url.query_pairs().into_owned().collect()
}

/// Checks the JWT bearer grant: signed RS256 by the key file's key, for the token endpoint.
fn assert_jwt_grant(r: &Recorded, server: &FakeServer) {
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/x-www-form-urlencoded")
    );
    let form = form(r);
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    let public = include_bytes!("../fixtures/vertex/service-account.pub.pem");
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(public).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[format!("{}/token", server.url())]);
    validation.set_issuer(&[SERVICE_ACCOUNT]);
    let token = jsonwebtoken::decode::<Value>(&form["assertion"], &key, &validation).unwrap();
    assert_eq!(
        token.claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(token.header.kid.as_deref(), Some("test-key-id-1"));
}

fn gemini_text(t: &str) -> Reply {
    (wire::vertex().text)(t)
}

fn claude_text(t: &str) -> Reply {
    let ev = |data: Value| sse_event(data["type"].as_str().unwrap(), &data);
    Reply::sse(vec![
        ev(
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
            "stop_reason": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        ev(json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})),
        ev(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": t}})),
        ev(json!({"type": "content_block_stop", "index": 0})),
        ev(
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 5}}),
        ),
        ev(json!({"type": "message_stop"})),
    ])
}

fn text(parts: &[StreamPart]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            StreamPart::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn gemini_and_claude_requests_carry_one_signed_grant_token_to_their_publishers() {
    let server = FakeServer::start_routed(
        vec![gemini_text(FINE), claude_text(FINE)],
        vec![("/token", vertex_token_reply(3600))],
    )
    .await;
    let model = vertex(&server);
    let req = |m: &str| common::request(m, common::hi(), Vec::new(), "low");
    let (parts, err) = drain(&*model, req("gemini-2.5-flash")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text(&parts), FINE);
    let (parts, err) = drain(&*model, req("claude-sonnet-4-5")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text(&parts), FINE);

    // One token for both calls: it lives an hour.
    let tokens = server.routed_requests().await;
    assert_eq!(tokens.len(), 1);
    assert_jwt_grant(&tokens[0], &server);

    let calls = server.requests().await;
    assert_eq!(calls.len(), 2);
    let bearer = format!("Bearer {VERTEX_TOKEN}");
    for c in &calls {
        assert_eq!(c.headers.get("authorization"), Some(&bearer));
    }
    assert_eq!(
        calls[0].path,
        format!("{VERTEX_PUBLISHER}/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    );
    assert_eq!(
        calls[0].body["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 2048, "includeThoughts": true})
    );
    assert_eq!(calls[0].body["contents"][0]["parts"][0]["text"], "Hi");
    let anthropic = VERTEX_PUBLISHER.replace("/publishers/google", "/publishers/anthropic");
    assert_eq!(
        calls[1].path,
        format!("{anthropic}/models/claude-sonnet-4-5:streamRawPredict")
    );
    assert_eq!(calls[1].body["anthropic_version"], "vertex-2023-10-16");
    assert_eq!(calls[1].body.get("model"), None);
    assert_eq!(calls[1].body["messages"][0]["content"][0]["text"], "Hi");
    assert_eq!(calls[1].body["thinking"]["budget_tokens"], 2048);
}

#[tokio::test]
async fn a_token_about_to_expire_is_fetched_again_before_the_next_request() {
    // `expires_in: 1` is inside the refresh margin: every request needs a fresh token.
    let server = FakeServer::start_routed(
        vec![gemini_text(FINE), gemini_text(FINE)],
        vec![("/token", vertex_token_reply(1))],
    )
    .await;
    let model = vertex(&server);
    for _ in 0..2 {
        let req = common::request("gemini-2.5-flash", common::hi(), Vec::new(), "none");
        let (_, err) = drain(&*model, req).await;
        assert!(err.is_none(), "{err:?}");
    }
    let tokens = server.routed_requests().await;
    assert_eq!(tokens.len(), 2);
    for t in &tokens {
        assert_jwt_grant(t, &server);
    }
}

#[tokio::test]
async fn gclouds_authorized_user_credentials_use_the_refresh_token_grant() {
    let server = FakeServer::start_routed(
        vec![gemini_text(FINE)],
        vec![("/token", vertex_token_reply(3600))],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("application_default_credentials.json");
    let body = json!({"type": "authorized_user", "client_id": "client-1.apps",
        "client_secret": "client-secret-SECRET", "refresh_token": "1//refresh-SECRET",
        "token_uri": format!("{}/token", server.url())});
    std::fs::write(&key, body.to_string()).unwrap();
    let env = BTreeMap::from([
        (
            "GOOGLE_APPLICATION_CREDENTIALS".to_string(),
            key.display().to_string(),
        ),
        (
            "GOOGLE_VERTEX_BASE_URL".to_string(),
            format!("{}{VERTEX_PUBLISHER}", server.url()),
        ),
    ]);
    let model =
        perstack::llm::select::provider(ProviderName::GoogleVertex, &Map::new(), &env, None)
            .unwrap();
    let req = common::request("gemini-2.5-flash", common::hi(), Vec::new(), "none");
    let (_, err) = drain(&*model, req).await;
    assert!(err.is_none(), "{err:?}");
    let tokens = server.routed_requests().await;
    assert_eq!(tokens.len(), 1);
    let form = form(&tokens[0]);
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["client_id"], "client-1.apps");
    assert_eq!(form["client_secret"], "client-secret-SECRET");
    assert_eq!(form["refresh_token"], "1//refresh-SECRET");
    let bearer = format!("Bearer {VERTEX_TOKEN}");
    assert_eq!(
        server.requests().await[0].headers.get("authorization"),
        Some(&bearer)
    );
}

#[tokio::test]
async fn a_refused_key_stops_with_an_error_naming_the_key_file_and_never_a_secret() {
    let refused = Reply::status(400).json(json!({"error": "invalid_grant",
        "error_description": "Invalid JWT Signature."}));
    let server = FakeServer::start_routed(vec![], vec![("/token", refused)]).await;
    let model = vertex(&server);
    let req = common::request("gemini-2.5-flash", common::hi(), Vec::new(), "none");
    let (_, err) = drain(&*model, req).await;
    let err = err.unwrap();
    assert_class(&err, "APICallError", Some(400), false);
    assert!(
        err.message
            .contains("invalid_grant: Invalid JWT Signature."),
        "{err:?}"
    );
    assert!(
        err.message.contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{err:?}"
    );
    assert!(server.requests().await.is_empty());
}

#[tokio::test]
async fn access_denied_and_unknown_models_say_what_to_fix() {
    let denied = Reply::status(403).json(json!({"error": {"code": 403,
        "message": "Permission 'aiplatform.endpoints.predict' denied", "status": "PERMISSION_DENIED"}}));
    let missing = Reply::status(404).json(json!({"error": {"code": 404,
        "message": "Publisher Model was not found", "status": "NOT_FOUND"}}));
    let slow = Reply::status(429)
        .header("retry-after", "7")
        .json(json!({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}));
    let server = FakeServer::start_routed(
        vec![denied, missing, slow],
        vec![("/token", vertex_token_reply(3600))],
    )
    .await;
    let model = vertex(&server);
    let req = || common::request("gemini-2.5-flash", common::hi(), Vec::new(), "none");
    let (_, err) = drain(&*model, req()).await;
    let err = err.unwrap();
    assert_class(&err, "APICallError", Some(403), false);
    assert!(err.message.contains("roles/aiplatform.user"), "{err:?}");
    let (_, err) = drain(&*model, req()).await;
    let err = err.unwrap();
    assert_class(&err, "APICallError", Some(404), false);
    assert!(err.message.contains("GOOGLE_VERTEX_LOCATION"), "{err:?}");
    let (_, err) = drain(&*model, req()).await;
    let err = err.unwrap();
    assert_class(&err, "APICallError", Some(429), true);
    assert_eq!(err.retry_after, Some(std::time::Duration::from_secs(7)));
}
