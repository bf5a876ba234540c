//! The Ollama provider: the native `/api/chat` endpoint with NDJSON streaming.
//!
//! | step | where |
//! | --- | --- |
//! | configuration from `OLLAMA_BASE_URL` and `[provider.setting]` | [`OllamaConfig::from_env`] |
//! | messages, tools, reasoning budget → request body | `ollama/request.rs` |
//! | NDJSON lines → [`StreamPart`](super::StreamPart)s | `ollama/stream.rs` |
//! | sending, NDJSON framing, HTTP and transport failures | the provider shell (`llm/shell.rs`) |
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

use serde_json::{Map, Value};

use super::http::{self, ProviderConfigError};
use super::shell::auth::KeyHeaders;
use super::shell::{Failure, HttpProvider, Protocol, http_provider};
use super::{GenerationError, GenerationRequest};

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
        let base_url =
            match http::setting_or_env(setting, env, PROVIDER, "baseUrl", &["OLLAMA_BASE_URL"])? {
                Some((url, origin)) => checked_base(url, &origin)?,
                None => DEFAULT_BASE_URL.into(),
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

http_provider!(
    /// The Ollama provider. Cheap to share behind an `Arc`; one connection pool for all calls.
    OllamaModel(Ollama)
);

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
        let protocol = Ollama { endpoint };
        let shell = HttpProvider::new(protocol, KeyHeaders::none(), &defaults, &config.headers)?;
        Ok(OllamaModel(shell))
    }
}

/// The native chat API: where requests go and how they are written and read.
#[derive(Debug)]
struct Ollama {
    /// `{base_url}/api/chat`.
    endpoint: reqwest::Url,
}

impl Protocol for Ollama {
    type Decoder = stream::Decoder;

    fn name(&self) -> &str {
        PROVIDER
    }

    fn url(&self, _: &GenerationRequest) -> Result<reqwest::Url, GenerationError> {
        Ok(self.endpoint.clone())
    }

    fn body(&self, request: &GenerationRequest) -> Result<Value, GenerationError> {
        request::body(request)
    }

    /// A model without the thinking capability answers `think: true` with a 400 saying so:
    /// ask once more with `think: false`.
    fn fallback(&self, failure: &Failure, body: &Value) -> Option<Value> {
        let unsupported =
            failure.status == 400 && failure.text.contains("does not support thinking");
        if !(unsupported && body["think"] == Value::Bool(true)) {
            return None;
        }
        let mut body = body.clone();
        body["think"] = Value::Bool(false);
        Some(body)
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
        assert_eq!(
            m.0.protocol().endpoint.as_str(),
            "https://ollama.example/api/chat"
        );
        assert_eq!(m.0.secrets(), ["Bearer t".to_string()]);
        let m = OllamaModel::new(OllamaConfig::default()).unwrap();
        assert_eq!(
            m.0.protocol().endpoint.as_str(),
            "http://localhost:11434/api/chat"
        );
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
