//! The Google provider: the Gemini API's `streamGenerateContent` with SSE streaming.
//!
//! | step | where |
//! | --- | --- |
//! | configuration from `GOOGLE_GENERATIVE_AI_*` variables and `[provider.setting]` | [`GoogleConfig::from_env`] |
//! | messages, tools, thinking budget → request body | `google/request.rs` |
//! | tool input schemas → the OpenAPI subset Gemini accepts | [`normalize_schema`] |
//! | SSE chunks → [`StreamPart`](super::StreamPart)s | `google/stream.rs` |
//! | sending, credentials, HTTP and transport failures | the provider shell (`llm/shell.rs`) |
//!
//! Requests go to `{base}/models/{model}:streamGenerateContent?alt=sse`. The provider makes one
//! HTTP call per generation and never retries: a failure is classified once (retryable or not)
//! and the agent machine decides. The API key travels only in the `x-goog-api-key` header,
//! marked sensitive (never in the URL's `key=` query), and is scrubbed from every error
//! message.
//!
//! Gemini function calls carry no ids: the stream gives each call of a response the id
//! `call_<n>_<name>` (n counting from 0), and tool results go back as `functionResponse` parts
//! named after their tool, in the order of the calls they answer.

mod request;
mod schema;
mod stream;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::http::{self, ProviderConfigError};
use super::shell::auth::KeyHeaders;
use super::shell::{HttpProvider, Protocol, http_provider};
use super::{GenerationError, GenerationRequest};

pub use schema::normalize_schema;

/// The Gemini API's base URL, with its version.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

const PROVIDER: &str = "google";

/// How to reach the API. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct GoogleConfig {
    /// The API key (`GOOGLE_GENERATIVE_AI_API_KEY`), sent as `x-goog-api-key`.
    pub api_key: String,
    /// Base URL including the API version; requests go to
    /// `{base_url}/models/{model}:streamGenerateContent?alt=sse`.
    pub base_url: String,
    /// Extra headers, sent after (and so overriding) the default ones.
    pub headers: BTreeMap<String, String>,
}

impl GoogleConfig {
    /// A configuration for the public Gemini API with `api_key`.
    pub fn new(api_key: impl Into<String>) -> Self {
        GoogleConfig {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.into(),
            headers: BTreeMap::new(),
        }
    }

    /// Perstack's configuration rules: the key from `GOOGLE_GENERATIVE_AI_API_KEY` (required),
    /// the base URL from `baseUrl` in `[provider.setting]`, else
    /// `GOOGLE_GENERATIVE_AI_BASE_URL`, else the public API; `headers` from
    /// `[provider.setting]`.
    pub fn from_env(
        setting: &Map<String, Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ProviderConfigError> {
        let api_key = http::required_env(env, PROVIDER, "GOOGLE_GENERATIVE_AI_API_KEY")?;
        let base_url = match http::setting_or_env(
            setting,
            env,
            PROVIDER,
            "baseUrl",
            &["GOOGLE_GENERATIVE_AI_BASE_URL"],
        )? {
            Some((url, origin)) => checked_base(url, &origin)?,
            None => DEFAULT_BASE_URL.into(),
        };
        Ok(GoogleConfig {
            api_key,
            base_url,
            headers: http::setting_headers(setting, PROVIDER)?,
        })
    }
}

fn checked_base(url: String, origin: &str) -> Result<String, ProviderConfigError> {
    http::endpoint(PROVIDER, &url, "models", DEFAULT_BASE_URL)
        .map_err(|e| e.with_origin(origin))?;
    Ok(url)
}

impl fmt::Debug for GoogleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleConfig")
            .field("api_key", &http::REDACTED)
            .field("base_url", &self.base_url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

http_provider!(
    /// The Google (Gemini API) provider. Cheap to share behind an `Arc`; one connection pool
    /// for all calls.
    GoogleModel(Gemini)
);

impl GoogleModel {
    /// A provider for `config`. Fails on a base URL that is not an http(s) URL, on a header
    /// that HTTP cannot carry, or when TLS cannot be initialised.
    pub fn new(config: GoogleConfig) -> Result<Self, ProviderConfigError> {
        let endpoint = http::endpoint(PROVIDER, &config.base_url, "models", DEFAULT_BASE_URL)
            .map_err(|e| e.with_origin("GoogleConfig::base_url"))?;
        let key = &config.api_key;
        let key = KeyHeaders::new(PROVIDER, key, &[("x-goog-api-key", key)])?;
        let defaults = [
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ];
        let shell = HttpProvider::new(Gemini { endpoint }, key, &defaults, &config.headers)?;
        Ok(GoogleModel(shell))
    }
}

/// The Gemini API: where requests go and how they are written and read.
#[derive(Debug)]
struct Gemini {
    /// `{base_url}/models`, to which each call appends `/{model}:streamGenerateContent`.
    endpoint: reqwest::Url,
}

impl Gemini {
    /// `{base}/models/{model}:streamGenerateContent?alt=sse`. A model id with a `/`
    /// (`models/…`, `tunedModels/…`) is taken as a resource path relative to the base.
    fn url(&self, model: &str) -> Result<reqwest::Url, GenerationError> {
        let invalid = |what: &str| GenerationError {
            name: "InvalidArgumentError".into(),
            message: format!("the Google provider cannot build a URL for model {model:?}: {what}"),
            status_code: None,
            retryable: false,
            retry_after: None,
        };
        let model = model.trim().trim_matches('/');
        if model.is_empty() {
            return Err(invalid("the model id is empty"));
        }
        let (dirs, last) = match model.rsplit_once('/') {
            Some((dirs, last)) => (Some(dirs), last),
            None => (None, model),
        };
        let mut url = self.endpoint.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| invalid("the base URL cannot have a path"))?;
            path.pop_if_empty();
            if let Some(dirs) = dirs {
                path.pop(); // the id names its own collection (`models`, `tunedModels`, ...)
                path.extend(dirs.split('/').filter(|s| !s.is_empty()));
            }
            path.push(&format!("{last}:streamGenerateContent"));
        }
        url.set_query(Some("alt=sse"));
        Ok(url)
    }
}

/// The Gemini request body of `request` (Vertex AI posts the same body).
pub(crate) fn gemini_body(request: &GenerationRequest) -> Result<Value, GenerationError> {
    request::body(request)
}

/// The Gemini stream decoder (Vertex AI streams the same SSE answer).
pub(crate) type GeminiDecoder = stream::Decoder;

/// Google's 4xx/5xx bodies are sometimes a one-element array (`[{"error": {...}}]`); the
/// error object inside, as text, so the shared classifier finds its message.
pub(crate) fn unwrap_error_body(body: String) -> String {
    match serde_json::from_str::<Value>(&body) {
        Ok(Value::Array(items)) => match items.into_iter().next() {
            Some(first @ Value::Object(_)) => first.to_string(),
            _ => body,
        },
        _ => body,
    }
}

impl Protocol for Gemini {
    type Decoder = stream::Decoder;

    fn name(&self) -> &str {
        PROVIDER
    }

    fn url(&self, request: &GenerationRequest) -> Result<reqwest::Url, GenerationError> {
        Gemini::url(self, &request.model)
    }

    fn body(&self, request: &GenerationRequest) -> Result<Value, GenerationError> {
        request::body(request)
    }

    fn error_body(&self, body: String) -> String {
        unwrap_error_body(body)
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
        let e = GoogleConfig::from_env(&Map::new(), &env(&[])).unwrap_err();
        assert!(
            e.to_string().contains("GOOGLE_GENERATIVE_AI_API_KEY"),
            "{e}"
        );
        let c = GoogleConfig::from_env(&Map::new(), &env(&[("GOOGLE_GENERATIVE_AI_API_KEY", "k")]))
            .unwrap();
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        let vars = env(&[
            ("GOOGLE_GENERATIVE_AI_API_KEY", "k"),
            ("GOOGLE_GENERATIVE_AI_BASE_URL", "http://env.example/v1beta"),
        ]);
        let c = GoogleConfig::from_env(&Map::new(), &vars).unwrap();
        assert_eq!(c.base_url, "http://env.example/v1beta");
        let setting: Map<String, Value> = serde_json::from_str(
            r#"{"baseUrl":"https://proxy.example/v1beta","headers":{"x-goog-user-project":"p"}}"#,
        )
        .unwrap();
        let c = GoogleConfig::from_env(&setting, &vars).unwrap();
        assert_eq!(c.base_url, "https://proxy.example/v1beta");
        assert_eq!(c.headers["x-goog-user-project"], "p");
    }

    #[test]
    fn bad_base_urls_and_headers_are_config_errors_without_the_key() {
        let vars = env(&[
            ("GOOGLE_GENERATIVE_AI_API_KEY", "k"),
            ("GOOGLE_GENERATIVE_AI_BASE_URL", "not a url"),
        ]);
        let e = GoogleConfig::from_env(&Map::new(), &vars).unwrap_err();
        assert!(
            e.to_string().contains("GOOGLE_GENERATIVE_AI_BASE_URL"),
            "{e}"
        );
        let mut c = GoogleConfig::new("AIza-SECRET");
        c.headers.insert("bad header".into(), "v".into());
        let e = GoogleModel::new(c.clone()).unwrap_err();
        assert!(e.to_string().contains("bad header"), "{e}");
        assert!(!format!("{c:?}").contains("SECRET"));
    }

    #[test]
    fn urls_put_the_model_in_the_path_and_never_the_key_in_the_query() {
        let m = GoogleModel::new(GoogleConfig::new("AIza-SECRET")).unwrap();
        let url = |model: &str| m.0.protocol().url(model).unwrap().to_string();
        assert_eq!(
            url("gemini-2.5-flash"),
            "https://generativelanguage.googleapis.com/v1beta/models/\
             gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            url("models/gemini-2.5-pro"),
            "https://generativelanguage.googleapis.com/v1beta/models/\
             gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            url("tunedModels/my-model"),
            "https://generativelanguage.googleapis.com/v1beta/tunedModels/\
             my-model:streamGenerateContent?alt=sse"
        );
        assert!(!url("gemini-2.5-flash").contains("SECRET"));
        assert!(m.0.protocol().url(" ").is_err());
        let mut c = GoogleConfig::new("k");
        c.base_url = "http://127.0.0.1:9/v1beta/".into();
        let m = GoogleModel::new(c).unwrap();
        assert_eq!(
            m.0.protocol().url("g").unwrap().as_str(),
            "http://127.0.0.1:9/v1beta/models/g:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn array_error_bodies_are_unwrapped() {
        let body = r#"[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]"#;
        let e = http::status_error(
            400,
            &reqwest::header::HeaderMap::new(),
            &unwrap_error_body(body.into()),
            &[""],
        );
        assert_eq!(e.message, "INVALID_ARGUMENT: bad");
        assert_eq!(unwrap_error_body("oops".into()), "oops");
    }
}
