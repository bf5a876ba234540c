//! The Google Vertex AI provider (`google-vertex`): Gemini models through the Gemini wire
//! format of [`google`], and `claude-*` models through the Anthropic Messages
//! wire format of [`anthropic`], both with an OAuth bearer token.
//!
//! | model | URL under the publisher base | wire |
//! | --- | --- | --- |
//! | anything but `claude-*` | `…/publishers/google/models/{m}:streamGenerateContent?alt=sse` | Gemini body and SSE stream |
//! | `claude-*` | `…/publishers/anthropic/models/{m}:streamRawPredict` | Messages body without `model`, with `anthropic_version: vertex-2023-10-16`; Messages SSE stream |
//!
//! The publisher base is `https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google`
//! (the host has no region for location `global`), or `baseUrl` / `GOOGLE_VERTEX_BASE_URL`
//! as given; Claude's base is the same with `publishers/anthropic`. The token comes from a key
//! file (the `token` module), is shared by both endpoints and is fetched again five minutes
//! (`TOKEN_MARGIN`) before it expires. Sending, classification and secret scrubbing are the provider shell's.

mod token;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::http::{self, ProviderConfigError};
use super::shell::auth::BearerToken;
use super::shell::{Failure, HttpProvider, Protocol};
use super::{GenerationError, GenerationRequest, LanguageModel, PartStream};
use super::{anthropic, google};

const PROVIDER: &str = "google-vertex";

/// The `anthropic_version` Vertex AI wants in a Claude request body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// How long before its expiry an access token is replaced, so that none expires on the way;
/// Google's tokens live an hour. A token that lives shorter is fetched per request.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

const EXAMPLE_BASE: &str = "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/publishers/google";

/// How to reach Vertex AI. Holds no secret: the key file is read when the provider is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexConfig {
    /// The Gemini publisher base URL (`…/publishers/google`); requests go to
    /// `{base_url}/models/{model}:streamGenerateContent?alt=sse`.
    pub base_url: String,
    /// The key file (a service-account key, or gcloud's application default credentials).
    pub key_file: PathBuf,
    /// How the key file was found, for messages (`GOOGLE_APPLICATION_CREDENTIALS`, ...).
    pub key_origin: String,
    /// Extra headers, sent after (and so overriding) the default ones.
    pub headers: BTreeMap<String, String>,
}

impl VertexConfig {
    /// Perstack's configuration rules: `baseUrl` in `[provider.setting]`, else
    /// `GOOGLE_VERTEX_BASE_URL`, else the regional endpoint of `project`/`location` (settings,
    /// else `GOOGLE_VERTEX_PROJECT`/`GOOGLE_VERTEX_LOCATION`; both required then); `headers`
    /// from `[provider.setting]`; the key file from `GOOGLE_APPLICATION_CREDENTIALS`, else
    /// gcloud's application default credentials.
    pub fn from_env(
        setting: &Map<String, Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ProviderConfigError> {
        let pick = |key: &str, var: &str| -> Result<Option<String>, ProviderConfigError> {
            Ok(http::setting_str(setting, PROVIDER, key)?
                .filter(|s| !s.trim().is_empty())
                .or_else(|| http::optional_env(env, var)))
        };
        let base_url = match http::setting_or_env(
            setting,
            env,
            PROVIDER,
            "baseUrl",
            &["GOOGLE_VERTEX_BASE_URL"],
        )? {
            Some((url, origin)) => checked_base(url, &origin)?,
            None => {
                let missing = |var: &str| ProviderConfigError::MissingEnv {
                    provider: PROVIDER.into(),
                    var: format!("{var} (or provider.setting.{})", setting_key(var)),
                };
                let project = pick("project", "GOOGLE_VERTEX_PROJECT")?
                    .ok_or_else(|| missing("GOOGLE_VERTEX_PROJECT"))?;
                let location = pick("location", "GOOGLE_VERTEX_LOCATION")?
                    .ok_or_else(|| missing("GOOGLE_VERTEX_LOCATION"))?;
                checked_base(regional_base(&project, &location), "GOOGLE_VERTEX_PROJECT")?
            }
        };
        let (key_file, origin) =
            token::key_file_path(env).ok_or_else(|| ProviderConfigError::Credentials {
                provider: PROVIDER.into(),
                problem: "no key file: set GOOGLE_APPLICATION_CREDENTIALS to a service-account \
                          key file (JSON) or run `gcloud auth application-default login` \
                          (the metadata server is not used)"
                    .into(),
            })?;
        Ok(VertexConfig {
            base_url,
            key_file,
            key_origin: origin.into(),
            headers: http::setting_headers(setting, PROVIDER)?,
        })
    }
}

fn setting_key(var: &str) -> &'static str {
    if var.ends_with("PROJECT") {
        "project"
    } else {
        "location"
    }
}

/// The Gemini publisher base of `project` in `location`; `global` has no region in its host.
pub fn regional_base(project: &str, location: &str) -> String {
    let (project, location) = (project.trim(), location.trim());
    let host = match location {
        "global" => "aiplatform.googleapis.com".to_string(),
        region => format!("{region}-aiplatform.googleapis.com"),
    };
    format!("https://{host}/v1/projects/{project}/locations/{location}/publishers/google")
}

fn checked_base(url: String, origin: &str) -> Result<String, ProviderConfigError> {
    http::endpoint(PROVIDER, &url, "models", EXAMPLE_BASE).map_err(|e| e.with_origin(origin))?;
    Ok(url)
}

/// Whether `model` is served by Anthropic's publisher on Vertex AI.
fn is_claude(model: &str) -> bool {
    model.trim().starts_with("claude-")
}

/// The Google Vertex AI provider. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct VertexModel {
    gemini: HttpProvider<VertexGemini>,
    claude: HttpProvider<VertexClaude>,
}

impl VertexModel {
    /// A provider for `config`: reads the key file. Fails on an unusable key file or base URL,
    /// on a header that HTTP cannot carry, or when TLS cannot be initialised.
    pub fn new(config: VertexConfig) -> Result<Self, ProviderConfigError> {
        let key = token::KeyFile::load(&config.key_file, &config.key_origin)?;
        let tokens = token::KeyFileTokens::new(key, http::client(PROVIDER)?);
        let credentials = Arc::new(BearerToken::new(tokens, TOKEN_MARGIN));
        let models = http::endpoint(PROVIDER, &config.base_url, "models", EXAMPLE_BASE)
            .map_err(|e| e.with_origin("VertexConfig::base_url"))?;
        let anthropic_base = match config.base_url.trim_end_matches('/') {
            b if b.ends_with("/publishers/google") => {
                format!("{}/anthropic", b.trim_end_matches("/google"))
            }
            // A gateway with its own layout serves both publishers under one base.
            b => b.to_string(),
        };
        let claude_models = http::endpoint(PROVIDER, &anthropic_base, "models", EXAMPLE_BASE)
            .map_err(|e| e.with_origin("VertexConfig::base_url"))?;
        let defaults = [
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ];
        Ok(VertexModel {
            gemini: HttpProvider::new(
                VertexGemini { models },
                credentials.clone(),
                &defaults,
                &config.headers,
            )?,
            claude: HttpProvider::new(
                VertexClaude {
                    models: claude_models,
                },
                credentials,
                &defaults,
                &config.headers,
            )?,
        })
    }
}

#[async_trait::async_trait]
impl LanguageModel for VertexModel {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError> {
        if is_claude(&request.model) {
            self.claude.stream(request).await
        } else {
            self.gemini.stream(request).await
        }
    }
}

/// `{models}/{model}:{method}` (a query added by the caller).
fn model_url(
    models: &reqwest::Url,
    model: &str,
    method: &str,
) -> Result<reqwest::Url, GenerationError> {
    let invalid = |what: &str| GenerationError {
        name: "InvalidArgumentError".into(),
        message: format!(
            "the google-vertex provider cannot build a URL for model {model:?}: {what}"
        ),
        status_code: None,
        retryable: false,
        retry_after: None,
    };
    let model = model.trim();
    if model.is_empty() || model.contains('/') {
        return Err(invalid("use a bare model id such as gemini-2.5-flash"));
    }
    let mut url = models.clone();
    url.path_segments_mut()
        .map_err(|()| invalid("the base URL cannot have a path"))?
        .pop_if_empty()
        .push(&format!("{model}:{method}"));
    Ok(url)
}

/// What to fix after an answer Vertex AI refused.
fn hint(failure: &Failure) -> Option<String> {
    match failure.status {
        401 => Some(
            "the access token was refused: check the key file named by \
             GOOGLE_APPLICATION_CREDENTIALS"
                .into(),
        ),
        403 => Some(
            "access denied: the key's account needs the Vertex AI User role \
             (roles/aiplatform.user) on the project, and the Vertex AI API must be enabled"
                .into(),
        ),
        404 => Some(
            "the model or project was not found: check the model id, GOOGLE_VERTEX_PROJECT and \
             GOOGLE_VERTEX_LOCATION (the model must be offered in that location)"
                .into(),
        ),
        _ => None,
    }
}

/// Gemini on Vertex AI.
#[derive(Debug)]
struct VertexGemini {
    /// `…/publishers/google/models`.
    models: reqwest::Url,
}

impl Protocol for VertexGemini {
    type Decoder = google::GeminiDecoder;

    fn name(&self) -> &str {
        PROVIDER
    }

    fn url(&self, request: &GenerationRequest) -> Result<reqwest::Url, GenerationError> {
        let mut url = model_url(&self.models, &request.model, "streamGenerateContent")?;
        url.set_query(Some("alt=sse"));
        Ok(url)
    }

    fn body(&self, request: &GenerationRequest) -> Result<Value, GenerationError> {
        google::gemini_body(request)
    }

    fn error_body(&self, body: String) -> String {
        google::unwrap_error_body(body)
    }

    fn failure_hint(&self, failure: &Failure) -> Option<String> {
        hint(failure)
    }
}

/// Anthropic's Claude on Vertex AI.
#[derive(Debug)]
struct VertexClaude {
    /// `…/publishers/anthropic/models`.
    models: reqwest::Url,
}

impl Protocol for VertexClaude {
    type Decoder = anthropic::MessagesDecoder;

    fn name(&self) -> &str {
        PROVIDER
    }

    fn url(&self, request: &GenerationRequest) -> Result<reqwest::Url, GenerationError> {
        model_url(&self.models, &request.model, "streamRawPredict")
    }

    fn body(&self, request: &GenerationRequest) -> Result<Value, GenerationError> {
        let mut body = anthropic::messages_body(request)?;
        body.insert("anthropic_version".into(), json!(ANTHROPIC_VERSION));
        Ok(Value::Object(body))
    }

    fn error_body(&self, body: String) -> String {
        google::unwrap_error_body(body)
    }

    fn failure_hint(&self, failure: &Failure) -> Option<String> {
        hint(failure)
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
    fn the_base_url_comes_from_the_setting_the_env_or_project_and_location() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        let key_var = ("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap());
        let e = VertexConfig::from_env(&Map::new(), &env(&[key_var])).unwrap_err();
        assert!(e.to_string().contains("GOOGLE_VERTEX_PROJECT"), "{e}");
        let vars = env(&[
            key_var,
            ("GOOGLE_VERTEX_PROJECT", "p"),
            ("GOOGLE_VERTEX_LOCATION", "europe-west4"),
        ]);
        let c = VertexConfig::from_env(&Map::new(), &vars).unwrap();
        assert_eq!(
            c.base_url,
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/\
             europe-west4/publishers/google"
        );
        assert_eq!(c.key_file, key);
        let setting: Map<String, Value> =
            serde_json::from_str(r#"{"project":"q","location":"global"}"#).unwrap();
        let c = VertexConfig::from_env(&setting, &vars).unwrap();
        assert_eq!(
            c.base_url,
            "https://aiplatform.googleapis.com/v1/projects/q/locations/global/publishers/google"
        );
        let mut with_base = vars;
        with_base.insert(
            "GOOGLE_VERTEX_BASE_URL".into(),
            "http://127.0.0.1:9/v1".into(),
        );
        let c = VertexConfig::from_env(&setting, &with_base).unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:9/v1");
        let e = VertexConfig::from_env(&setting, &env(&[("HOME", "/nonexistent")])).unwrap_err();
        assert!(
            e.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"),
            "{e}"
        );
    }

    #[test]
    fn gemini_and_claude_models_go_to_their_publishers() {
        let models: reqwest::Url = "https://x/v1/projects/p/locations/l/publishers/google/models"
            .parse()
            .unwrap();
        let g = VertexGemini {
            models: models.clone(),
        };
        let mut req = GenerationRequest {
            expert_key: "e".into(),
            model: "gemini-2.5-flash".into(),
            messages: Vec::new(),
            tools: Arc::new(Vec::new()),
            reasoning_budget: crate::schema::ReasoningBudget::default(),
        };
        assert_eq!(
            g.url(&req).unwrap().as_str(),
            "https://x/v1/projects/p/locations/l/publishers/google/models/\
             gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        req.model = "claude-sonnet-4-5@20250929".into();
        assert!(is_claude(&req.model));
        let c = VertexClaude { models };
        assert!(
            c.url(&req)
                .unwrap()
                .as_str()
                .ends_with("/models/claude-sonnet-4-5@20250929:streamRawPredict")
        );
        let body = c.body(&req).unwrap();
        assert_eq!(body["anthropic_version"], ANTHROPIC_VERSION);
        assert!(body.get("model").is_none());
        req.model = "../x".into();
        assert!(g.url(&req).is_err());
    }
}
