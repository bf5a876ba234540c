//! The registry API v1 over HTTP, as Perstack's API client calls it: `GET/POST/DELETE
//! /api/registry/v1/experts/{key}` (the key one encoded path segment) and
//! `POST /api/registry/v1/experts/` to publish; JSON bodies, `Authorization: Bearer
//! <PERSTACK_API_KEY>` when a key is set, 30 s per request. Errors come back as
//! `{code, error, reason}`; a failure becomes a [`RegistryError`] that says what to do.
//!
//! The API key is sent and never shown: it is not in any error, and server-sent error texts
//! are scrubbed of it.

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;

use super::RegistryError;
use super::key::RegistryKey;
use crate::config::names;

/// Perstack's registry when neither `PERSTACK_API_BASE_URL` nor `perstackApiBaseUrl` says
/// otherwise.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.perstack.ai";

/// Each request's limit, connect to last byte (Perstack's client: 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response body read. Definitions are text of at most a few hundred KiB (20 KiB of
/// instruction, 2 KiB per description); past this the answer is refused, not buffered.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The experts collection path.
const EXPERTS: &str = "/api/registry/v1/experts/";

/// A registry API client.
#[derive(Clone)]
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    base: String,
    /// `PERSTACK_API_KEY`. Never printed; `Debug` leaves it out.
    api_key: Option<String>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl RegistryClient {
    /// A client of the registry at `base` (checked: https, or http on loopback), `origin`
    /// naming where `base` came from for messages.
    pub(crate) fn new(
        base: &str,
        origin: &str,
        api_key: Option<String>,
    ) -> Result<Self, RegistryError> {
        if let Some(problem) = names::api_base_url_problem(base) {
            return Err(RegistryError::InvalidBaseUrl {
                url: base.to_owned(),
                origin: origin.to_owned(),
                problem: problem.to_owned(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(crate::llm::http::CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: base.to_owned(),
                message: e.to_string(),
            })?;
        Ok(RegistryClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `GET .../experts/{key}`: the body, whose `data.expert` is the definition.
    pub(crate) async fn get(&self, key: &RegistryKey) -> Result<Value, RegistryError> {
        let path = format!("{EXPERTS}{}", key.path_segment());
        self.request(Method::GET, &path, None, &key.to_string())
            .await
    }

    /// `POST .../experts/` with a create payload.
    pub(crate) async fn create(&self, payload: &Value, name: &str) -> Result<Value, RegistryError> {
        self.request(Method::POST, EXPERTS, Some(payload), name)
            .await
    }

    /// `POST .../experts/{key}` with `{status}` and/or `{tags}`.
    pub(crate) async fn update(
        &self,
        key: &RegistryKey,
        body: &Value,
    ) -> Result<Value, RegistryError> {
        let path = format!("{EXPERTS}{}", key.path_segment());
        self.request(Method::POST, &path, Some(body), &key.to_string())
            .await
    }

    /// `DELETE .../experts/{key}`.
    pub(crate) async fn delete(&self, key: &RegistryKey) -> Result<Value, RegistryError> {
        let path = format!("{EXPERTS}{}", key.path_segment());
        self.request(Method::DELETE, &path, None, &key.to_string())
            .await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: &str,
    ) -> Result<Value, RegistryError> {
        let url = format!("{}{path}", self.base);
        let parsed = Url::parse(&url).map_err(|e| RegistryError::InvalidBaseUrl {
            url: self.base.clone(),
            origin: "the registry base URL".into(),
            problem: e.to_string(),
        })?;
        let mut req = self
            .http
            .request(method, parsed)
            .header("content-type", "application/json");
        if let Some(k) = &self.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {k}"))
                .map_err(|_| RegistryError::InvalidApiKey)?;
            value.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            url: self.base.clone(),
            message: crate::llm::http::error_chain(&e.without_url()),
        };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(RegistryError::Malformed {
                    key: key.to_owned(),
                    message: format!("the answer is larger than {MAX_BODY} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let field = |f: &str| {
                json.as_ref()
                    .and_then(|j| j.get(f))
                    .and_then(|v| match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    })
                    .map(|s| self.scrub(&s))
            };
            return Err(RegistryError::Http {
                key: key.to_owned(),
                status: status.as_u16(),
                error: field("error")
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned()),
                reason: field("reason"),
            });
        }
        json.ok_or_else(|| RegistryError::Malformed {
            key: key.to_owned(),
            message: "the answer is not JSON".into(),
        })
    }

    /// `text` without the API key.
    fn scrub(&self, text: &str) -> String {
        let secrets: Vec<&str> = self.api_key.iter().map(String::as_str).collect();
        crate::llm::http::redact(&text.chars().take(500).collect::<String>(), &secrets)
    }
}
