//! Who sends a Bedrock request: AWS access keys signing it with SigV4 (the shell's
//! [`Signer`] hook), or a Bedrock API key sent as a bearer token (the shell's credential
//! headers, no signing).
//!
//! | source (first that is set wins) | how |
//! | --- | --- |
//! | `AWS_BEARER_TOKEN_BEDROCK` | `Authorization: Bearer <key>` |
//! | `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`) | SigV4 with these keys |
//! | `AWS_CONTAINER_CREDENTIALS_FULL_URI` / `_RELATIVE_URI` (ECS, Fargate, EKS Pod Identity) | SigV4 with keys fetched from the container credentials endpoint (with `AWS_CONTAINER_AUTHORIZATION_TOKEN` or `_TOKEN_FILE`), cached and fetched again [`REFRESH_MARGIN`] before they expire |
//!
//! The container endpoint lives in `bedrock/container.rs`. Signing uses `aws-sigv4` (service `bedrock`, the canonical URI encoded twice, the session
//! token signed). Keys, session tokens and the authorization token are secrets: `Debug` never
//! shows them, and the static ones are scrubbed from every message by the shell. `aws-sigv4`
//! traces canonical requests (which hold the session token) at `trace` level, so the CLI's
//! subscriber always turns its target off. This module never logs.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::PROVIDER;
use crate::llm::GenerationError;
use crate::llm::http::{self, ProviderConfigError};
use crate::llm::shell::auth::Signer;

use super::container::ContainerEndpoint;

/// The SigV4 service name of the Bedrock runtime.
pub(crate) const SERVICE: &str = "bedrock";

/// How long before their expiry fetched keys are replaced, so that none expires on the way.
/// Keys that live shorter are fetched per request.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// One set of AWS keys. `Debug` shows only the access key id.
#[derive(Clone)]
pub(crate) struct AwsKeys {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsKeys {
    fn secrets(&self) -> Vec<String> {
        let mut out = vec![self.secret_access_key.clone()];
        out.extend(self.session_token.clone());
        out
    }
}

/// How a request proves who sends it. `Debug` never shows a key.
pub(crate) enum Auth {
    /// A Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`), sent as a bearer token.
    Bearer(String),
    /// SigV4 with keys from this source.
    SigV4(KeySource),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(..)"),
            Auth::SigV4(source) => f.debug_tuple("SigV4").field(source).finish(),
        }
    }
}

/// Where SigV4 keys come from.
#[derive(Debug)]
pub(crate) enum KeySource {
    /// Keys from the environment.
    Static(AwsKeys),
    /// Keys from a container credentials endpoint.
    Container(ContainerEndpoint),
}

impl Auth {
    /// The first credential source the environment sets (see the module table); a
    /// configuration error naming every variable when none is set.
    pub(crate) fn from_env(
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, ProviderConfigError> {
        if let Some(key) = http::optional_env(env, "AWS_BEARER_TOKEN_BEDROCK") {
            return Ok(Auth::Bearer(key));
        }
        let id = http::optional_env(env, "AWS_ACCESS_KEY_ID");
        let secret = http::optional_env(env, "AWS_SECRET_ACCESS_KEY");
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => {
                return Ok(Auth::SigV4(KeySource::Static(AwsKeys {
                    access_key_id,
                    secret_access_key,
                    session_token: http::optional_env(env, "AWS_SESSION_TOKEN"),
                })));
            }
            (Some(_), None) | (None, Some(_)) => {
                let var = if env.contains_key("AWS_ACCESS_KEY_ID") {
                    "AWS_SECRET_ACCESS_KEY"
                } else {
                    "AWS_ACCESS_KEY_ID"
                };
                return Err(ProviderConfigError::MissingEnv {
                    provider: PROVIDER.into(),
                    var: format!("{var} (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together)"),
                });
            }
            (None, None) => {}
        }
        match ContainerEndpoint::from_env(env)? {
            Some(endpoint) => Ok(Auth::SigV4(KeySource::Container(endpoint))),
            None => Err(ProviderConfigError::MissingEnv {
                provider: PROVIDER.into(),
                var: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_BEARER_TOKEN_BEDROCK, \
                      or a container credentials endpoint)"
                    .into(),
            }),
        }
    }
}

/// Signs every request with SigV4 for one region.
pub(crate) struct SigV4Signer {
    source: KeySource,
    region: String,
    client: reqwest::Client,
    /// Keys fetched from a container endpoint and when they expire. The lock is held across
    /// a fetch so that concurrent requests wait for one fetch.
    cached: Mutex<Option<(AwsKeys, Option<Instant>)>>,
}

impl SigV4Signer {
    /// A signer for `region` with keys from `source`; `client` fetches container keys.
    pub(crate) fn new(source: KeySource, region: String, client: reqwest::Client) -> Self {
        SigV4Signer {
            source,
            region,
            client,
            cached: Mutex::new(None),
        }
    }

    async fn keys(&self) -> Result<AwsKeys, GenerationError> {
        let endpoint = match &self.source {
            KeySource::Static(keys) => return Ok(keys.clone()),
            KeySource::Container(endpoint) => endpoint,
        };
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some((keys, expires)) = &*cached
            && expires.is_none_or(|at| now + REFRESH_MARGIN < at)
        {
            return Ok(keys.clone());
        }
        let (keys, lifetime) = endpoint.fetch(&self.client).await?;
        *cached = Some((keys.clone(), lifetime.map(|l| now + l)));
        Ok(keys)
    }
}

#[async_trait::async_trait]
impl Signer for SigV4Signer {
    async fn sign(&self, request: &mut reqwest::Request) -> Result<(), GenerationError> {
        let keys = self.keys().await?;
        let body = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .unwrap_or_default();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signed = signature_headers(
            &keys,
            &self.region,
            SERVICE,
            request.method().as_str(),
            request.url().as_str(),
            &headers,
            body,
            SystemTime::now(),
        )?;
        for (name, value, sensitive) in signed {
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| signing_error("a signature header HTTP cannot carry"))?;
            value.set_sensitive(sensitive);
            request.headers_mut().insert(name, value);
        }
        Ok(())
    }

    fn secrets(&self) -> Vec<String> {
        match &self.source {
            KeySource::Static(keys) => keys.secrets(),
            KeySource::Container(c) => c.secrets(),
        }
    }
}

/// The headers SigV4 adds to a request (`authorization`, `x-amz-date`,
/// `x-amz-security-token`), with whether each is sensitive. `url` is the request URL as
/// sent (its path already percent-encoded once); the canonical URI encodes it again.
#[allow(clippy::too_many_arguments, reason = "the inputs of one signature")]
pub(crate) fn signature_headers(
    keys: &AwsKeys,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(HeaderName, String, bool)>, GenerationError> {
    let identity = AwsCredentials::new(
        &keys.access_key_id,
        &keys.secret_access_key,
        keys.session_token.clone(),
        None,
        "perstack",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| signing_error(&e.to_string()))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| signing_error(&e.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| signing_error(&e.to_string()))?
        .into_parts();
    let (signed, _params) = instructions.into_parts();
    signed
        .into_iter()
        .map(|h| {
            let name = HeaderName::from_static(h.name());
            Ok((
                name,
                h.value().to_string(),
                h.sensitive() || h.name() == "authorization",
            ))
        })
        .collect()
}

fn signing_error(what: &str) -> GenerationError {
    GenerationError {
        name: "SigningError".into(),
        message: format!("cannot sign the Bedrock request with SigV4: {what}"),
        status_code: None,
        retryable: false,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// The keys of AWS's published SigV4 test suite.
    fn suite_keys() -> AwsKeys {
        AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// 2015-08-30T12:36:00Z, the suite's clock.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn authorization(signed: &[(HeaderName, String, bool)]) -> &str {
        &signed
            .iter()
            .find(|(n, _, _)| n == "authorization")
            .unwrap()
            .1
    }

    #[test]
    fn get_vanilla_and_post_vanilla_of_the_aws_sigv4_test_suite_match_byte_for_byte() {
        let get = signature_headers(
            &suite_keys(),
            "us-east-1",
            "service",
            "GET",
            "https://example.amazonaws.com/",
            &[],
            b"",
            suite_time(),
        )
        .unwrap();
        assert_eq!(
            authorization(&get),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        let date = get.iter().find(|(n, _, _)| n == "x-amz-date").unwrap();
        assert_eq!(date.1, "20150830T123600Z");
        let post = signature_headers(
            &suite_keys(),
            "us-east-1",
            "service",
            "POST",
            "https://example.amazonaws.com/",
            &[],
            b"",
            suite_time(),
        )
        .unwrap();
        assert!(authorization(&post).ends_with(
            "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ));
    }

    /// A Converse call for a model id with `:` (sent as `%3A`, canonical `%253A`), with a
    /// session token. The expected signature was computed by an independent SigV4
    /// implementation (Python's hashlib/hmac, following the published algorithm) over the
    /// canonical request written out in full below.
    #[test]
    fn a_converse_stream_path_with_a_colon_is_encoded_twice_in_the_signature() {
        let keys = AwsKeys {
            session_token: Some("session-token-SECRET".into()),
            ..suite_keys()
        };
        let signed = signature_headers(
            &keys,
            "us-east-1",
            SERVICE,
            "POST",
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/\
             anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
            &[("content-type", "application/json")],
            br#"{"messages":[]}"#,
            suite_time(),
        )
        .unwrap();
        assert_eq!(authorization(&signed), CONVERSE_AUTHORIZATION);
        let token = signed
            .iter()
            .find(|(n, _, _)| n == "x-amz-security-token")
            .unwrap();
        assert_eq!(token.1, "session-token-SECRET");
        assert!(token.2, "the session token header is sensitive");
    }

    /// The canonical request behind it (the same implementation reproduces get-vanilla):
    ///
    /// ```text
    /// POST
    /// /model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse-stream
    ///
    /// content-type:application/json
    /// host:bedrock-runtime.us-east-1.amazonaws.com
    /// x-amz-date:20150830T123600Z
    /// x-amz-security-token:session-token-SECRET
    ///
    /// content-type;host;x-amz-date;x-amz-security-token
    /// 5e4ce7b36ba37b78a5d5f9fd08e6b7b54ba6879d651aa46ec9e1d6fa24ebe30a
    /// ```
    const CONVERSE_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
        Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
        SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
        Signature=c1292f53151aaccabf703675cae63e1201bfbbe357c3042dcaa861454792219b";

    #[test]
    fn credentials_come_from_the_bearer_key_the_keys_or_a_container_endpoint() {
        let env = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let e = Auth::from_env(&env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID") && e.contains("AWS_BEARER_TOKEN_BEDROCK"),
            "{e}"
        );
        let e = Auth::from_env(&env(&[("AWS_ACCESS_KEY_ID", "AKID")])).unwrap_err();
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let keys = [
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s-SECRET"),
        ];
        let a = Auth::from_env(&env(&keys)).unwrap();
        assert!(matches!(a, Auth::SigV4(KeySource::Static(_))));
        assert!(!format!("{a:?}").contains("SECRET"));
        let bearer = [keys[0], keys[1], ("AWS_BEARER_TOKEN_BEDROCK", "b-SECRET")];
        assert!(matches!(
            Auth::from_env(&env(&bearer)).unwrap(),
            Auth::Bearer(_)
        ));
        for (uri, ok) in [
            ("http://127.0.0.1:9/creds", true),
            ("https://creds.example/x", true),
            ("http://169.254.170.23/v1/credentials", true),
            ("http://creds.example/x", false),
            ("http://10.0.0.1/x", false),
        ] {
            let r = Auth::from_env(&env(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)]));
            assert_eq!(r.is_ok(), ok, "{uri}");
        }
    }
}
