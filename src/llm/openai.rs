//! The OpenAI-compatible providers: one Chat Completions implementation with SSE streaming
//! serving `openai`, `deepseek` and `azure-openai` ([`Flavor`]).
//!
//! | step | where |
//! | --- | --- |
//! | configuration from the environment and `[provider.setting]` | [`OpenAiConfig::from_env`] |
//! | messages, tools, reasoning budget → request body | `openai/request.rs` |
//! | SSE chunks → [`StreamPart`](super::StreamPart)s | `openai/stream.rs` |
//! | sending, credentials, HTTP and transport failures | the provider shell (`llm/shell.rs`) |
//!
//! | flavor | URL | key header | reasoning |
//! | --- | --- | --- | --- |
//! | `openai` | `{base}/chat/completions` | `Authorization: Bearer` | `reasoning_effort` (reasoning models) |
//! | `deepseek` | `{base}/chat/completions` | `Authorization: Bearer` | streamed `reasoning_content` |
//! | `azure-openai` | `{base}/deployments/{model}/chat/completions?api-version=…` | `api-key` | none |
//!
//! The provider makes one HTTP call per generation and never retries: a failure is classified
//! once (retryable or not) and the agent machine decides. The API key travels only in its
//! header, marked sensitive, and is scrubbed from every error message.

mod request;
mod stream;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::http::{self, ProviderConfigError};
use super::shell::auth::KeyHeaders;
use super::shell::{HttpProvider, Protocol, http_provider};
use super::{GenerationError, GenerationRequest};

pub use request::{is_reasoning_model, reasoning_effort};

/// The OpenAI API's base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// The DeepSeek API's base URL.
pub const DEEPSEEK_BASE_URL: &str = "https://api.deepseek.com/v1";

/// The Azure OpenAI `api-version` used when neither `apiVersion` nor `AZURE_API_VERSION` is set.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// Which service speaks Chat Completions here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// `openai`: the OpenAI API.
    OpenAi,
    /// `deepseek`: the DeepSeek API (reasoning arrives as `reasoning_content`).
    DeepSeek,
    /// `azure-openai`: Azure OpenAI deployments; the model id is the deployment name.
    AzureOpenAi,
}

impl Flavor {
    /// The provider name as `providerName` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::OpenAi => "openai",
            Flavor::DeepSeek => "deepseek",
            Flavor::AzureOpenAi => "azure-openai",
        }
    }

    /// The flavor of a provider name, if it is one of the three.
    pub fn from_provider_name(name: &str) -> Option<Self> {
        [Flavor::OpenAi, Flavor::DeepSeek, Flavor::AzureOpenAi]
            .into_iter()
            .find(|f| f.as_str() == name)
    }

    /// A base URL example for error messages.
    fn example(self) -> &'static str {
        match self {
            Flavor::OpenAi => OPENAI_BASE_URL,
            Flavor::DeepSeek => DEEPSEEK_BASE_URL,
            Flavor::AzureOpenAi => "https://my-resource.openai.azure.com/openai",
        }
    }
}

/// How to reach the API. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// Which service this is.
    pub flavor: Flavor,
    /// The API key (`OPENAI_API_KEY`, `DEEPSEEK_API_KEY` or `AZURE_API_KEY`), sent as
    /// `Authorization: Bearer` (`api-key` on Azure).
    pub api_key: String,
    /// Base URL. OpenAI and DeepSeek: including `/v1`, requests go to
    /// `{base_url}/chat/completions`. Azure: `https://{resourceName}.openai.azure.com/openai`
    /// or the given `baseUrl`, requests go to `{base_url}/deployments/{model}/chat/completions`.
    pub base_url: String,
    /// `OpenAI-Organization` header (OpenAI only).
    pub organization: Option<String>,
    /// `OpenAI-Project` header (OpenAI only).
    pub project: Option<String>,
    /// The `api-version` query parameter (Azure only).
    pub api_version: String,
    /// Extra headers, sent after (and so overriding) the default ones.
    pub headers: BTreeMap<String, String>,
}

impl OpenAiConfig {
    /// The public OpenAI API with `api_key`.
    pub fn openai(api_key: impl Into<String>) -> Self {
        Self::with(Flavor::OpenAi, api_key.into(), OPENAI_BASE_URL.into())
    }

    /// The public DeepSeek API with `api_key`.
    pub fn deepseek(api_key: impl Into<String>) -> Self {
        Self::with(Flavor::DeepSeek, api_key.into(), DEEPSEEK_BASE_URL.into())
    }

    /// The Azure OpenAI resource `resource_name` with `api_key`.
    pub fn azure(api_key: impl Into<String>, resource_name: &str) -> Self {
        Self::with(
            Flavor::AzureOpenAi,
            api_key.into(),
            azure_base_url(resource_name),
        )
    }

    fn with(flavor: Flavor, api_key: String, base_url: String) -> Self {
        OpenAiConfig {
            flavor,
            api_key,
            base_url,
            organization: None,
            project: None,
            api_version: AZURE_DEFAULT_API_VERSION.into(),
            headers: BTreeMap::new(),
        }
    }

    /// Perstack's configuration rules for `flavor`. Each `[provider.setting]` key wins over
    /// its variable:
    ///
    /// - `openai`: `OPENAI_API_KEY` (required); `baseUrl`/`OPENAI_BASE_URL`;
    ///   `organization`/`OPENAI_ORGANIZATION`; `project`/`OPENAI_PROJECT`; `name` is accepted
    ///   and has no effect on the wire.
    /// - `deepseek`: `DEEPSEEK_API_KEY` (required); `baseUrl`/`DEEPSEEK_BASE_URL`.
    /// - `azure-openai`: `AZURE_API_KEY` (required); `baseUrl`/`AZURE_BASE_URL`, else
    ///   `resourceName`/`AZURE_RESOURCE_NAME` (one of them required);
    ///   `apiVersion`/`AZURE_API_VERSION`. Deployment-based URLs are always used, so
    ///   `useDeploymentBasedUrls` is only type-checked.
    ///
    /// All three take `headers`.
    pub fn from_env(
        flavor: Flavor,
        setting: &Map<String, Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ProviderConfigError> {
        let p = flavor.as_str();
        let pick = |key: &str, var: &str| http::setting_or_env(setting, env, p, key, &[var]);
        let (key_var, prefix) = match flavor {
            Flavor::OpenAi => ("OPENAI_API_KEY", "OPENAI"),
            Flavor::DeepSeek => ("DEEPSEEK_API_KEY", "DEEPSEEK"),
            Flavor::AzureOpenAi => ("AZURE_API_KEY", "AZURE"),
        };
        let api_key = http::required_env(env, p, key_var)?;
        let base = pick("baseUrl", &format!("{prefix}_BASE_URL"))?;
        let base_url = match (flavor, base) {
            (_, Some((url, origin))) => checked_base(flavor, url, &origin)?,
            (Flavor::OpenAi, None) => OPENAI_BASE_URL.into(),
            (Flavor::DeepSeek, None) => DEEPSEEK_BASE_URL.into(),
            (Flavor::AzureOpenAi, None) => match pick("resourceName", "AZURE_RESOURCE_NAME")? {
                Some((name, origin)) => checked_base(flavor, azure_base_url(&name), &origin)?,
                None => {
                    return Err(ProviderConfigError::MissingEnv {
                        provider: p.into(),
                        var: "AZURE_RESOURCE_NAME (or AZURE_BASE_URL)".into(),
                    });
                }
            },
        };
        let mut config = Self::with(flavor, api_key, base_url);
        config.headers = http::setting_headers(setting, p)?;
        match flavor {
            Flavor::OpenAi => {
                config.organization = pick("organization", "OPENAI_ORGANIZATION")?.map(|v| v.0);
                config.project = pick("project", "OPENAI_PROJECT")?.map(|v| v.0);
                http::setting_str(setting, p, "name")?;
            }
            Flavor::DeepSeek => {}
            Flavor::AzureOpenAi => {
                if let Some((v, _)) = pick("apiVersion", "AZURE_API_VERSION")? {
                    config.api_version = v;
                }
                match setting.get("useDeploymentBasedUrls") {
                    None | Some(Value::Null | Value::Bool(_)) => {}
                    Some(_) => {
                        return Err(ProviderConfigError::InvalidSetting {
                            provider: p.into(),
                            key: "useDeploymentBasedUrls".into(),
                            problem: "must be a boolean".into(),
                        });
                    }
                }
            }
        }
        Ok(config)
    }
}

/// `https://{resource_name}.openai.azure.com/openai`.
pub fn azure_base_url(resource_name: &str) -> String {
    format!("https://{}.openai.azure.com/openai", resource_name.trim())
}

/// The path appended to the base URL (Azure's deployment segment is added per request).
fn base_path(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::OpenAi | Flavor::DeepSeek => "chat/completions",
        Flavor::AzureOpenAi => "deployments",
    }
}

fn checked_base(flavor: Flavor, url: String, origin: &str) -> Result<String, ProviderConfigError> {
    http::endpoint(flavor.as_str(), &url, base_path(flavor), flavor.example())
        .map_err(|e| e.with_origin(origin))?;
    Ok(url)
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("flavor", &self.flavor)
            .field("api_key", &http::REDACTED)
            .field("base_url", &self.base_url)
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("api_version", &self.api_version)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

http_provider!(
    /// An OpenAI-compatible provider. Cheap to share behind an `Arc`; one connection pool for
    /// all calls.
    OpenAiModel(OpenAi)
);

impl OpenAiModel {
    /// A provider for `config`. Fails on a base URL that is not an http(s) URL, on a header
    /// that HTTP cannot carry, or when TLS cannot be initialised.
    pub fn new(config: OpenAiConfig) -> Result<Self, ProviderConfigError> {
        let flavor = config.flavor;
        let p = flavor.as_str();
        let endpoint = http::endpoint(p, &config.base_url, base_path(flavor), flavor.example())
            .map_err(|e| e.with_origin("OpenAiConfig::base_url"))?;
        let key = &config.api_key;
        let key = match flavor {
            Flavor::AzureOpenAi => KeyHeaders::new(p, key, &[("api-key", key)])?,
            Flavor::OpenAi | Flavor::DeepSeek => {
                KeyHeaders::new(p, key, &[("authorization", &format!("Bearer {key}"))])?
            }
        };
        let mut defaults: Vec<(&str, &str)> = Vec::new();
        if flavor == Flavor::OpenAi {
            if let Some(org) = &config.organization {
                defaults.push(("openai-organization", org));
            }
            if let Some(project) = &config.project {
                defaults.push(("openai-project", project));
            }
        }
        defaults.push(("content-type", "application/json"));
        defaults.push(("accept", "text/event-stream"));
        let protocol = OpenAi {
            flavor,
            endpoint,
            api_version: config.api_version,
        };
        let shell = HttpProvider::new(protocol, key, &defaults, &config.headers)?;
        Ok(OpenAiModel(shell))
    }

    /// Which OpenAI-compatible API this is.
    pub fn flavor(&self) -> Flavor {
        self.0.protocol().flavor
    }
}

/// Chat Completions: where requests go and how they are written and read.
#[derive(Debug)]
struct OpenAi {
    flavor: Flavor,
    /// `{base_url}/chat/completions`, or `{base_url}/deployments` for Azure.
    endpoint: reqwest::Url,
    /// Azure's `api-version` query value.
    api_version: String,
}

impl OpenAi {
    fn url(&self, model: &str) -> Result<reqwest::Url, GenerationError> {
        if self.flavor != Flavor::AzureOpenAi {
            return Ok(self.endpoint.clone());
        }
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| GenerationError {
                name: "InvalidArgumentError".into(),
                message: format!("cannot append a deployment to {}", self.endpoint),
                status_code: None,
                retryable: false,
                retry_after: None,
            })?
            .pop_if_empty()
            .extend([model, "chat", "completions"]);
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        Ok(url)
    }
}

impl Protocol for OpenAi {
    type Decoder = stream::Decoder;

    fn name(&self) -> &str {
        self.flavor.as_str()
    }

    fn url(&self, request: &GenerationRequest) -> Result<reqwest::Url, GenerationError> {
        OpenAi::url(self, &request.model)
    }

    fn body(&self, request: &GenerationRequest) -> Result<Value, GenerationError> {
        request::body(request, self.flavor)
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

    fn setting(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn each_flavor_names_its_missing_key() {
        for (flavor, var) in [
            (Flavor::OpenAi, "OPENAI_API_KEY"),
            (Flavor::DeepSeek, "DEEPSEEK_API_KEY"),
            (Flavor::AzureOpenAi, "AZURE_API_KEY"),
        ] {
            let e = OpenAiConfig::from_env(flavor, &Map::new(), &env(&[])).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
        let e = OpenAiConfig::from_env(
            Flavor::AzureOpenAi,
            &Map::new(),
            &env(&[("AZURE_API_KEY", "k")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("AZURE_RESOURCE_NAME"), "{e}");
    }

    #[test]
    fn openai_settings_win_over_variables() {
        let vars = env(&[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", "http://env.example/v1"),
            ("OPENAI_ORGANIZATION", "org-env"),
            ("OPENAI_PROJECT", "proj-env"),
        ]);
        let c = OpenAiConfig::from_env(Flavor::OpenAi, &Map::new(), &vars).unwrap();
        assert_eq!(c.base_url, "http://env.example/v1");
        assert_eq!(c.organization.as_deref(), Some("org-env"));
        let s = setting(
            r#"{"baseUrl":"https://proxy.example/v1","organization":"org-s","name":"x",
                "headers":{"x-a":"1"}}"#,
        );
        let c = OpenAiConfig::from_env(Flavor::OpenAi, &s, &vars).unwrap();
        assert_eq!(c.base_url, "https://proxy.example/v1");
        assert_eq!(c.organization.as_deref(), Some("org-s"));
        assert_eq!(c.project.as_deref(), Some("proj-env"));
        assert_eq!(c.headers["x-a"], "1");
        let d = OpenAiConfig::from_env(
            Flavor::DeepSeek,
            &Map::new(),
            &env(&[("DEEPSEEK_API_KEY", "k")]),
        )
        .unwrap();
        assert_eq!(d.base_url, DEEPSEEK_BASE_URL);
    }

    #[test]
    fn azure_builds_deployment_urls_from_a_resource_or_a_base_url() {
        let vars = env(&[("AZURE_API_KEY", "k"), ("AZURE_RESOURCE_NAME", "res")]);
        let c = OpenAiConfig::from_env(Flavor::AzureOpenAi, &Map::new(), &vars).unwrap();
        let m = OpenAiModel::new(c).unwrap();
        assert_eq!(
            m.0.protocol().url("my deploy").unwrap().as_str(),
            "https://res.openai.azure.com/openai/deployments/my%20deploy/chat/completions\
             ?api-version=2024-10-21"
        );
        let s = setting(r#"{"baseUrl":"https://gw.example/openai/","apiVersion":"2025-01-01"}"#);
        let c = OpenAiConfig::from_env(Flavor::AzureOpenAi, &s, &vars).unwrap();
        let url = OpenAiModel::new(c)
            .unwrap()
            .0
            .protocol()
            .url("gpt")
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://gw.example/openai/deployments/gpt/chat/completions?api-version=2025-01-01"
        );
        let s = setting(r#"{"useDeploymentBasedUrls":"yes"}"#);
        let e = OpenAiConfig::from_env(Flavor::AzureOpenAi, &s, &vars).unwrap_err();
        assert!(e.to_string().contains("useDeploymentBasedUrls"), "{e}");
    }

    #[test]
    fn bad_base_urls_and_headers_are_config_errors_without_the_key() {
        let vars = env(&[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", "not a url")]);
        let e = OpenAiConfig::from_env(Flavor::OpenAi, &Map::new(), &vars).unwrap_err();
        assert!(e.to_string().contains("OPENAI_BASE_URL"), "{e}");
        let mut c = OpenAiConfig::openai("sk-SECRET");
        c.headers.insert("bad header".into(), "v".into());
        let e = OpenAiModel::new(c.clone()).unwrap_err();
        assert!(e.to_string().contains("bad header"), "{e}");
        assert!(!format!("{c:?}").contains("SECRET"));
        assert_eq!(
            Flavor::from_provider_name("azure-openai"),
            Some(Flavor::AzureOpenAi)
        );
        assert_eq!(Flavor::from_provider_name("anthropic"), None);
    }
}
