//! The Ollama provider: the native `/api/chat` endpoint with NDJSON streaming.
//!
//! | step | where |
//! | --- | --- |
//! | configuration from `OLLAMA_BASE_URL` and `[provider.setting]` | [`OllamaConfig::from_env`] |
//! | messages, tools, reasoning budget → request body | `ollama/request.rs` |
//! | NDJSON lines → [`StreamPart`](super::StreamPart)s | `ollama/stream.rs` |
//! | HTTP and transport failures → [`GenerationError`] | [`super::http`] |
//!
//! Requests go to `{base}/api/chat` (`{base}/chat` when the base already ends in `/api`, the
//! form the AI SDK's Ollama provider takes). There is no API key; custom headers (a proxy's
//! `Authorization`, say) come from `[provider.setting]`, and credential-like values among them
//! are scrubbed from every error message.
//!
//! The provider makes one HTTP call per generation and never retries a failure, with one
//! exception that is not a retry: when a model answers `think: true` with Ollama's "does not
//! support thinking" 400, the same request is sent once more with `think: false` (Perstack's
//! default budget `low` would otherwise fail every call to a model such as `gemma3`).

mod request;
mod stream;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use reqwest::header::HeaderMap;
use serde_json::{Map, Value};

use super::http::{self, ProviderConfigError};
use super::{GenerationError, GenerationRequest, LanguageModel, PartStream};

/// Where a local Ollama listens by default.
pub const DEFAULT_BASE_URL: &str = "http://localhost:11434";

const PROVIDER: &str = "ollama";

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaConfig {
    /// The server's base URL, without `/api` (a trailing `/api` is accepted).
    pub base_url: String,
    /// Extra headers sent with every request.
    pub headers: BTreeMap<String, String>,
}

impl Default for OllamaConfig {
    fn default() -> Self {
        OllamaConfig {
            base_url: DEFAULT_BASE_URL.into(),
            headers: BTreeMap::new(),
        }
    }
}

impl OllamaConfig {
    /// Perstack's configuration rules: the base URL from `baseUrl` in `[provider.setting]`,
    /// else `OLLAMA_BASE_URL`, else [`DEFAULT_BASE_URL`] (plain `http` is fine); `headers` from
    /// `[provider.setting]`. Nothing is required.
    pub fn from_env(
        setting: &Map<String, Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ProviderConfigError> {
        let base_url = match http::setting_str(setting, PROVIDER, "baseUrl")? {
            Some(url) => checked_base(url, "provider.setting.baseUrl")?,
            None => match http::optional_env(env, "OLLAMA_BASE_URL") {
                Some(url) => checked_base(url, "OLLAMA_BASE_URL")?,
                None => DEFAULT_BASE_URL.into(),
            },
        };
        Ok(OllamaConfig {
            base_url,
            headers: http::setting_headers(setting, PROVIDER)?,
        })
    }
}

/// The path of the chat endpoint below `base`.
fn chat_path(base: &str) -> &'static str {
    if base.trim_end_matches('/').ends_with("/api") {
        "chat"
    } else {
        "api/chat"
    }
}

fn checked_base(url: String, origin: &str) -> Result<String, ProviderConfigError> {
    http::endpoint(PROVIDER, &url, chat_path(&url), DEFAULT_BASE_URL)
        .map_err(|e| e.with_origin(origin))?;
    Ok(url)
}

/// The Ollama provider. Cheap to share behind an `Arc`; one connection pool for all calls.
pub struct OllamaModel {
    client: reqwest::Client,
    /// `{base_url}/api/chat`.
    endpoint: reqwest::Url,
    /// Content type and custom headers; credential-like ones are marked sensitive.
    headers: HeaderMap,
    /// Credential-like custom header values, scrubbed from every error message.
    secrets: Arc<Vec<String>>,
}

impl fmt::Debug for OllamaModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OllamaModel")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl OllamaModel {
    /// A provider for `config`. Fails on a base URL that is not an http(s) URL, on a header
    /// that HTTP cannot carry, or when TLS cannot be initialised.
    pub fn new(config: OllamaConfig) -> Result<Self, ProviderConfigError> {
        let path = chat_path(&config.base_url);
        let endpoint = http::endpoint(PROVIDER, &config.base_url, path, DEFAULT_BASE_URL)
            .map_err(|e| e.with_origin("OllamaConfig::base_url"))?;
        let defaults = [
            ("content-type", "application/json"),
            ("accept", "application/x-ndjson"),
        ];
        let custom = config.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let headers = http::header_map(PROVIDER, defaults.into_iter().chain(custom))?;
        let secrets = http::secrets(None, &config.headers);
        Ok(OllamaModel {
            client: http::client(PROVIDER)?,
            endpoint,
            headers,
            secrets,
        })
    }

    async fn post(&self, body: &Value) -> Result<reqwest::Response, GenerationError> {
        let url = self.endpoint.clone();
        http::post_json(&self.client, url, &self.headers, body, &self.secrets).await
    }
}

/// A non-success answer: its status, headers and body text.
struct Failure {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Failure {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Failure {
            status,
            headers,
            text,
        }
    }

    /// Ollama's answer to `think: true` for a model without the thinking capability.
    fn is_thinking_unsupported(&self) -> bool {
        self.status == 400 && self.text.contains("does not support thinking")
    }

    fn error(&self, secrets: &[String]) -> GenerationError {
        http::status_error(self.status, &self.headers, &self.text, secrets)
    }
}

#[async_trait::async_trait]
impl LanguageModel for OllamaModel {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn stream(&self, req: GenerationRequest) -> Result<PartStream, GenerationError> {
        let mut body = request::body(&req)?;
        let mut response = self.post(&body).await?;
        if !response.status().is_success() {
            let failure = Failure::read(response).await;
            if !(failure.is_thinking_unsupported() && body["think"] == Value::Bool(true)) {
                return Err(failure.error(&self.secrets));
            }
            body["think"] = Value::Bool(false);
            response = self.post(&body).await?;
            if !response.status().is_success() {
                return Err(Failure::read(response).await.error(&self.secrets));
            }
        }
        Ok(stream::parts(response.bytes_stream(), self.secrets.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn from_env_needs_nothing_and_lets_the_setting_base_url_win() {
        let c = OllamaConfig::from_env(&Map::new(), &env(&[])).unwrap();
        assert_eq!(c, OllamaConfig::default());
        let vars = env(&[("OLLAMA_BASE_URL", "http://gpu-box:11434")]);
        let c = OllamaConfig::from_env(&Map::new(), &vars).unwrap();
        assert_eq!(c.base_url, "http://gpu-box:11434");
        let setting: Map<String, Value> = serde_json::from_str(
            r#"{"baseUrl":"https://ollama.example/api","headers":{"authorization":"Bearer t"}}"#,
        )
        .unwrap();
        let c = OllamaConfig::from_env(&setting, &vars).unwrap();
        assert_eq!(c.base_url, "https://ollama.example/api");
        let m = OllamaModel::new(c).unwrap();
        assert_eq!(m.endpoint.as_str(), "https://ollama.example/api/chat");
        assert_eq!(m.secrets.as_slice(), ["Bearer t".to_string()]);
        let m = OllamaModel::new(OllamaConfig::default()).unwrap();
        assert_eq!(m.endpoint.as_str(), "http://localhost:11434/api/chat");
    }

    #[test]
    fn bad_base_urls_and_headers_are_config_errors() {
        let vars = env(&[("OLLAMA_BASE_URL", "localhost 11434")]);
        let e = OllamaConfig::from_env(&Map::new(), &vars).unwrap_err();
        assert!(e.to_string().contains("OLLAMA_BASE_URL"), "{e}");
        let mut c = OllamaConfig::default();
        c.headers.insert("bad header".into(), "v".into());
        let e = OllamaModel::new(c).unwrap_err();
        assert!(e.to_string().contains("bad header"), "{e}");
    }
}
