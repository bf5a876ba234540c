//! The Amazon Bedrock provider (`amazon-bedrock`): the Converse API's
//! `/model/{modelId}/converse-stream`, answered in AWS's binary event-stream framing.
//!
//! | step | where |
//! | --- | --- |
//! | region, endpoint and credentials from `AWS_*` variables and `[provider.setting]` | [`BedrockConfig::from_env`], `bedrock/auth.rs` |
//! | messages, tools, thinking budget → Converse body | `bedrock/request.rs` |
//! | event-stream messages (events and exceptions) → [`StreamPart`](super::StreamPart)s | `bedrock/stream.rs` |
//! | SigV4 signing (or a bearer API key) | `bedrock/auth.rs`, through the shell's signer hook |
//! | sending, HTTP and transport failures, secret scrubbing | the provider shell (`llm/shell.rs`) |
//!
//! The model id goes into the path percent-encoded (`:` as `%3A`, an ARN's `/` as `%2F`), and
//! SigV4 encodes that path again for its canonical URI. Errors the API reports before the
//! stream (4xx/5xx) and exceptions inside it are classified by the same statuses; access
//! denied, bad or expired credentials and unknown models say what to fix.

mod auth;
mod container;
mod request;
mod stream;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use self::auth::{Auth, SigV4Signer};
use super::http::{self, ProviderConfigError};
use super::shell::auth::KeyHeaders;
use super::shell::{Failure, HttpProvider, Protocol, http_provider};
use super::{GenerationError, GenerationRequest};

const PROVIDER: &str = "amazon-bedrock";

const EXAMPLE_BASE: &str = "https://bedrock-runtime.us-east-1.amazonaws.com";

/// How to reach Bedrock. `Debug` never shows a secret.
pub struct BedrockConfig {
    /// The AWS region (`us-east-1`), for the default endpoint and the signature.
    pub region: String,
    /// The runtime endpoint; requests go to `{base_url}/model/{model}/converse-stream`.
    pub base_url: String,
    auth: Auth,
}

impl BedrockConfig {
    /// Perstack's configuration rules, plus the AWS ones it leaves to the SDK: the region from
    /// `region` in `[provider.setting]`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`
    /// (required); the endpoint from `baseUrl`, else `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, else
    /// `AWS_ENDPOINT_URL`, else `https://bedrock-runtime.{region}.amazonaws.com`; credentials
    /// as `bedrock/auth.rs` lists them.
    pub fn from_env(
        setting: &Map<String, Value>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ProviderConfigError> {
        let region = http::setting_str(setting, PROVIDER, "region")?
            .filter(|r| !r.trim().is_empty())
            .or_else(|| http::optional_env(env, "AWS_REGION"))
            .or_else(|| http::optional_env(env, "AWS_DEFAULT_REGION"))
            .ok_or_else(|| ProviderConfigError::MissingEnv {
                provider: PROVIDER.into(),
                var: "AWS_REGION (or provider.setting.region)".into(),
            })?;
        let region = region.trim().to_string();
        let vars = ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"];
        let base_url = match http::setting_or_env(setting, env, PROVIDER, "baseUrl", &vars)? {
            Some((url, origin)) => checked_base(url, &origin)?,
            None => checked_base(default_base(&region), "AWS_REGION")?,
        };
        Ok(BedrockConfig {
            region,
            base_url,
            auth: Auth::from_env(env)?,
        })
    }
}

/// The public runtime endpoint of `region`.
pub fn default_base(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

fn checked_base(url: String, origin: &str) -> Result<String, ProviderConfigError> {
    http::endpoint(PROVIDER, &url, "model", EXAMPLE_BASE).map_err(|e| e.with_origin(origin))?;
    Ok(url)
}

impl fmt::Debug for BedrockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockConfig")
            .field("region", &self.region)
            .field("base_url", &self.base_url)
            .field("auth", &self.auth)
            .finish()
    }
}

http_provider!(
    /// The Amazon Bedrock provider (Converse API). Cheap to share behind an `Arc`; one
    /// connection pool for all calls.
    BedrockModel(Bedrock)
);

impl BedrockModel {
    /// A provider for `config`. Fails on a base URL that is not an http(s) URL, on a key HTTP
    /// cannot carry, or when TLS cannot be initialised.
    pub fn new(config: BedrockConfig) -> Result<Self, ProviderConfigError> {
        let base = http::endpoint(PROVIDER, &config.base_url, "", EXAMPLE_BASE)
            .map_err(|e| e.with_origin("BedrockConfig::base_url"))?;
        let defaults = [
            ("content-type", "application/json"),
            ("accept", "application/vnd.amazon.eventstream"),
        ];
        let protocol = Bedrock {
            base,
            region: config.region.clone(),
        };
        let none = BTreeMap::new();
        let shell = match config.auth {
            Auth::Bearer(key) => {
                let bearer = format!("Bearer {key}");
                let creds = KeyHeaders::new(PROVIDER, &key, &[("authorization", &bearer)])?;
                HttpProvider::new(protocol, creds, &defaults, &none)?
            }
            Auth::SigV4(source) => {
                let signer = SigV4Signer::new(source, config.region, http::client(PROVIDER)?);
                HttpProvider::new(protocol, KeyHeaders::none(), &defaults, &none)?
                    .with_signer(signer)
            }
        };
        Ok(BedrockModel(shell))
    }
}

/// The Converse API: where requests go and how they are written and read.
#[derive(Debug)]
struct Bedrock {
    /// The runtime endpoint, with a trailing `/`.
    base: reqwest::Url,
    region: String,
}

/// `s` percent-encoded as one path segment: everything but RFC 3986's unreserved characters.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Protocol for Bedrock {
    type Decoder = stream::Decoder;

    fn name(&self) -> &str {
        PROVIDER
    }

    fn url(&self, request: &GenerationRequest) -> Result<reqwest::Url, GenerationError> {
        let model = request.model.trim();
        if model.is_empty() {
            return Err(GenerationError {
                name: "InvalidArgumentError".into(),
                message: "the amazon-bedrock provider needs a model id".into(),
                status_code: None,
                retryable: false,
                retry_after: None,
            });
        }
        let path = format!("model/{}/converse-stream", encode_segment(model));
        self.base.join(&path).map_err(|e| GenerationError {
            name: "InvalidArgumentError".into(),
            message: format!("the amazon-bedrock provider cannot build a URL for {model:?}: {e}"),
            status_code: None,
            retryable: false,
            retry_after: None,
        })
    }

    fn body(&self, request: &GenerationRequest) -> Result<Value, GenerationError> {
        request::body(request)
    }

    fn failure_hint(&self, failure: &Failure) -> Option<String> {
        hint(failure, &self.region)
    }
}

/// What to fix after a refused request. Bedrock names the exception in `x-amzn-errortype`
/// (`AccessDeniedException:http://...`).
fn hint(failure: &Failure, region: &str) -> Option<String> {
    let kind = failure
        .headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v))
        .unwrap_or_default();
    let text = failure.text.to_ascii_lowercase();
    let expired = kind == "ExpiredTokenException" || text.contains("expired");
    match failure.status {
        400 | 403 if expired => Some(
            "the AWS credentials have expired: get new ones and set AWS_ACCESS_KEY_ID, \
             AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (or AWS_BEARER_TOKEN_BEDROCK)"
                .into(),
        ),
        403 if kind == "UnrecognizedClientException"
            || kind == "InvalidSignatureException"
            || text.contains("security token included in the request is invalid")
            || text.contains("signature") =>
        {
            Some(
                "the AWS credentials were not accepted: check AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (or AWS_BEARER_TOKEN_BEDROCK)"
                    .into(),
            )
        }
        401 | 403 => Some(format!(
            "access denied: the identity needs bedrock:InvokeModelWithResponseStream on this \
             model, and access to the model must be granted in the Bedrock console of {region}"
        )),
        404 => Some(format!(
            "unknown model: use a Bedrock model id or inference profile offered in {region} \
             (for example us.anthropic.claude-sonnet-4-5-20250929-v1:0), or set AWS_REGION"
        )),
        400 if text.contains("model identifier is invalid")
            || text.contains("model id")
            || text.contains("on-demand throughput isn") =>
        {
            Some(format!(
                "unknown model or not invocable this way: use a Bedrock model id or inference \
                 profile offered in {region} (for example \
                 us.anthropic.claude-sonnet-4-5-20250929-v1:0)"
            ))
        }
        _ => None,
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

    const KEYS: [(&str, &str); 2] = [
        ("AWS_ACCESS_KEY_ID", "AKID"),
        ("AWS_SECRET_ACCESS_KEY", "secret-SECRET"),
    ];

    #[test]
    fn region_and_endpoint_come_from_the_setting_or_the_aws_variables() {
        let e = BedrockConfig::from_env(&Map::new(), &env(&KEYS)).unwrap_err();
        assert!(e.to_string().contains("AWS_REGION"), "{e}");
        let mut vars = env(&KEYS);
        vars.insert("AWS_REGION".into(), "eu-west-1".into());
        let c = BedrockConfig::from_env(&Map::new(), &vars).unwrap();
        assert_eq!(
            c.base_url,
            "https://bedrock-runtime.eu-west-1.amazonaws.com"
        );
        assert!(!format!("{c:?}").contains("SECRET"));
        let setting: Map<String, Value> =
            serde_json::from_str(r#"{"region":"us-west-2"}"#).unwrap();
        vars.insert("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:9".into());
        let c = BedrockConfig::from_env(&setting, &vars).unwrap();
        assert_eq!(
            (c.region.as_str(), c.base_url.as_str()),
            ("us-west-2", "http://127.0.0.1:9")
        );
        vars.insert(
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME".into(),
            "http://127.0.0.1:8".into(),
        );
        let c = BedrockConfig::from_env(&setting, &vars).unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:8");
    }

    #[test]
    fn model_ids_are_one_encoded_path_segment() {
        let mut vars = env(&KEYS);
        vars.insert("AWS_REGION".into(), "us-east-1".into());
        let m = BedrockModel::new(BedrockConfig::from_env(&Map::new(), &vars).unwrap()).unwrap();
        let url = |model: &str| {
            let req = GenerationRequest {
                expert_key: "e".into(),
                model: model.into(),
                messages: Vec::new(),
                tools: std::sync::Arc::new(Vec::new()),
                reasoning_budget: crate::schema::ReasoningBudget::default(),
            };
            m.0.protocol().url(&req).map(|u| u.to_string())
        };
        assert_eq!(
            url("anthropic.claude-3-5-sonnet-20240620-v1:0").unwrap(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/\
             anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
        );
        assert_eq!(
            url("arn:aws:bedrock:us-east-1:1:inference-profile/us.x").unwrap(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/\
             arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/converse-stream"
        );
        assert!(url(" ").is_err());
    }
}
