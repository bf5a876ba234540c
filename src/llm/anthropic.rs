//! The Anthropic provider: the Messages API with SSE streaming.
//!
//! | step | where |
//! | --- | --- |
//! | configuration from `ANTHROPIC_*` variables and `[provider.setting]` | [`AnthropicConfig::from_env`] |
//! | messages, tools, thinking budget → request body | `anthropic/request.rs` |
//! | event stream → [`StreamPart`](super::StreamPart)s | `anthropic/stream.rs` |
//! | sending, credentials, HTTP and transport failures | the provider shell (`llm/shell.rs`) |
//!
//! The provider makes one HTTP call per generation and never retries: a failure is classified
//! once (retryable or not) and the agent machine decides. The API key travels only in the
//! `x-api-key` header, marked sensitive, and is scrubbed from every error message.

mod request;
mod stream;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::http::{self, ProviderConfigError};
use super::shell::auth::KeyHeaders;
use super::shell::{HttpProvider, Protocol, http_provider};
use super::{GenerationError, GenerationRequest};

/// The public API's base URL, in Perstack's form (with `/v1`).
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";

/// The `anthropic-version` header sent with every request.
pub const API_VERSION: &str = "2023-06-01";

const PROVIDER: &str = "anthropic";

/// How to reach the API. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct AnthropicConfig {
    /// The API key (`ANTHROPIC_API_KEY`), sent as `x-api-key`.
    pub api_key: String,
    /// Base URL including `/v1`; requests go to `{base_url}/messages`.
    pub base_url: String,
    /// Extra headers, sent after (and so overriding) the default ones.
    pub headers: BTreeMap<String, String>,
    /// The output limit of each request; `None` (Perstack's behaviour) asks for the model's
    /// own maximum (the AI SDK's table, in `anthropic/request.rs`). A generation that hits it
    /// finishes with `Length`, which the agent machine retries.
    pub max_tokens: Option<u32>,
}

impl AnthropicConfig {
    /// A configuration for the public API with `api_key` and the defaults.
    pub fn new(api_key: impl Into<String>) -> Self {
        AnthropicConfig {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.into(),
            headers: BTreeMap::new(),
            max_tokens: None,
        }
    }

    /// Perstack's configuration rules: the key from `ANTHROPIC_API_KEY` (required), the base
    /// URL from `baseUrl` in `[provider.setting]`, else `ANTHROPIC_BASE_URL`, else the public
    /// API; `headers` from `[provider.setting]`.
    pub fn from_env(
        setting: &Map<String, Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ProviderConfigError> {
        let api_key = http::required_env(env, PROVIDER, "ANTHROPIC_API_KEY")?;
        let base_url =
            match http::setting_or_env(setting, env, PROVIDER, "baseUrl", &["ANTHROPIC_BASE_URL"])?
            {
                Some((url, origin)) => checked_base(url, &origin)?,
                None => DEFAULT_BASE_URL.into(),
            };
        Ok(AnthropicConfig {
            api_key,
            base_url,
            headers: http::setting_headers(setting, PROVIDER)?,
            max_tokens: None,
        })
    }
}

fn checked_base(url: String, origin: &str) -> Result<String, ProviderConfigError> {
    http::endpoint(PROVIDER, &url, "messages", DEFAULT_BASE_URL)
        .map_err(|e| e.with_origin(origin))?;
    Ok(url)
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("api_key", &http::REDACTED)
            .field("base_url", &self.base_url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

http_provider!(
    /// The Anthropic provider. Cheap to share behind an `Arc`; one connection pool for all
    /// calls.
    AnthropicModel(Anthropic)
);

impl AnthropicModel {
    /// A provider for `config`. Fails on a base URL that is not an http(s) URL, on a header
    /// that HTTP cannot carry, or when TLS cannot be initialised.
    pub fn new(config: AnthropicConfig) -> Result<Self, ProviderConfigError> {
        let endpoint = http::endpoint(PROVIDER, &config.base_url, "messages", DEFAULT_BASE_URL)
            .map_err(|e| e.with_origin("AnthropicConfig::base_url"))?;
        let key = KeyHeaders::new(PROVIDER, &config.api_key, &[("x-api-key", &config.api_key)])?;
        let defaults = [
            ("anthropic-version", API_VERSION),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ];
        let protocol = Anthropic {
            endpoint,
            max_tokens: config.max_tokens,
        };
        let shell = HttpProvider::new(protocol, key, &defaults, &config.headers)?;
        Ok(AnthropicModel(shell))
    }
}

/// The Messages API body of `request` without its `model` (Vertex AI names the model in the
/// URL), for a host that wraps the Messages API.
pub(crate) fn messages_body(
    request: &GenerationRequest,
) -> Result<Map<String, Value>, GenerationError> {
    let Value::Object(mut body) = request::body(request, None)? else {
        return Err(GenerationError::invalid_response(
            "the Messages request body is not an object".into(),
        ));
    };
    body.remove("model");
    Ok(body)
}

/// The Messages API stream decoder (Vertex AI's `streamRawPredict` streams the same events).
pub(crate) type MessagesDecoder = stream::Decoder;

/// The Messages API: where requests go and how they are written and read.
#[derive(Debug)]
struct Anthropic {
    /// `{base_url}/messages`.
    endpoint: reqwest::Url,
    max_tokens: Option<u32>,
}

impl Protocol for Anthropic {
    type Decoder = stream::Decoder;

    fn name(&self) -> &str {
        PROVIDER
    }

    fn url(&self, _: &GenerationRequest) -> Result<reqwest::Url, GenerationError> {
        Ok(self.endpoint.clone())
    }

    fn body(&self, request: &GenerationRequest) -> Result<Value, GenerationError> {
        request::body(request, self.max_tokens)
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
    fn from_env_requires_the_key_and_lets_the_setting_base_url_win() {
        let e = AnthropicConfig::from_env(&Map::new(), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("ANTHROPIC_API_KEY"), "{e}");
        let vars = env(&[
            ("ANTHROPIC_API_KEY", "k"),
            ("ANTHROPIC_BASE_URL", "http://env.example/v1"),
        ]);
        let c = AnthropicConfig::from_env(&Map::new(), &vars).unwrap();
        assert_eq!(c.base_url, "http://env.example/v1");
        let setting: Map<String, Value> = serde_json::from_str(
            r#"{"baseUrl":"https://proxy.example/v1","headers":{"anthropic-beta":"x"}}"#,
        )
        .unwrap();
        let c = AnthropicConfig::from_env(&setting, &vars).unwrap();
        assert_eq!(c.base_url, "https://proxy.example/v1");
        assert_eq!(c.headers["anthropic-beta"], "x");
        assert_eq!(c.max_tokens, None);
    }

    #[test]
    fn bad_base_urls_and_headers_are_config_errors_without_the_key() {
        let vars = env(&[
            ("ANTHROPIC_API_KEY", "k"),
            ("ANTHROPIC_BASE_URL", "not a url"),
        ]);
        let e = AnthropicConfig::from_env(&Map::new(), &vars).unwrap_err();
        assert!(e.to_string().contains("ANTHROPIC_BASE_URL"), "{e}");
        let mut c = AnthropicConfig::new("sk-ant-SECRET");
        c.headers.insert("bad header".into(), "v".into());
        let e = AnthropicModel::new(c.clone()).unwrap_err();
        assert!(e.to_string().contains("bad header"), "{e}");
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
