//! AWS keys from a container credentials endpoint: what ECS tasks, Fargate and EKS Pod
//! Identity give a process (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI`, with
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN` or `_TOKEN_FILE`). The signer in `bedrock/auth.rs`
//! caches the keys and fetches them again before they expire; this module only finds the
//! endpoint and makes one fetch. A plain-http endpoint must be loopback or the ECS/EKS
//! link-local host, as the AWS SDKs require. It never logs; a failure is a classified
//! [`GenerationError`] without the authorization token.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::PROVIDER;
use super::auth::AwsKeys;
use crate::llm::GenerationError;
use crate::llm::http::{self, ProviderConfigError};

/// The ECS task-role endpoint host for `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const ECS_HOST: &str = "http://169.254.170.2";

/// A container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_*`).
#[derive(Debug)]
pub(crate) struct ContainerEndpoint {
    url: reqwest::Url,
    authorization: Option<Authorization>,
}

/// The `Authorization` value a container endpoint wants.
enum Authorization {
    Token(String),
    /// Read per fetch (EKS rotates the file).
    File(PathBuf),
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authorization::Token(_) => f.write_str("Token(..)"),
            Authorization::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

impl ContainerEndpoint {
    /// The endpoint the environment names, `None` when it names none.
    pub(crate) fn from_env(
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<Self>, ProviderConfigError> {
        let bad = |problem: String| ProviderConfigError::Credentials {
            provider: PROVIDER.into(),
            problem,
        };
        let url = match (
            http::optional_env(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            http::optional_env(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        ) {
            (_, Some(relative)) => format!("{ECS_HOST}{relative}"),
            (Some(full), None) => full,
            (None, None) => return Ok(None),
        };
        let url = reqwest::Url::parse(&url)
            .ok()
            .filter(allowed_endpoint)
            .ok_or_else(|| {
                bad(format!(
                    "the container credentials endpoint {url:?} must be https, a loopback \
                     address or the ECS/EKS link-local address; fix \
                     AWS_CONTAINER_CREDENTIALS_FULL_URI"
                ))
            })?;
        let authorization = match (
            http::optional_env(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            http::optional_env(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(file), _) => Some(Authorization::File(file.into())),
            (None, Some(token)) => Some(Authorization::Token(token)),
            (None, None) => None,
        };
        Ok(Some(ContainerEndpoint { url, authorization }))
    }

    /// The secrets known up front (a static authorization token).
    pub(crate) fn secrets(&self) -> Vec<String> {
        match &self.authorization {
            Some(Authorization::Token(t)) => vec![t.clone()],
            _ => Vec::new(),
        }
    }
}

/// As the AWS SDKs decide: https anywhere; plain http only to a loopback address or the
/// ECS/EKS link-local hosts.
fn allowed_endpoint(url: &reqwest::Url) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    let Some(host) = url.host_str() else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => {
                ip.is_loopback()
                    || ip == IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2))
                    || ip == IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23))
            }
            Err(_) => host == "localhost",
        },
        _ => false,
    }
}

/// The answer of a container credentials endpoint.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerKeys {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

impl ContainerEndpoint {
    /// Fresh keys and how long they live (`None`: no expiry given).
    pub(crate) async fn fetch(
        &self,
        client: &reqwest::Client,
    ) -> Result<(AwsKeys, Option<Duration>), GenerationError> {
        let mut request = client.get(self.url.clone());
        let mut secrets = Vec::new();
        match &self.authorization {
            Some(Authorization::Token(t)) => {
                secrets.push(t.clone());
                request = request.header("authorization", t.trim());
            }
            Some(Authorization::File(path)) => {
                let t = tokio::fs::read_to_string(path).await.map_err(|e| {
                    self.error(
                        format!(
                            "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {}: {e}",
                            path.display()
                        ),
                        false,
                    )
                })?;
                secrets.push(t.trim().to_string());
                request = request.header("authorization", t.trim());
            }
            None => {}
        }
        let response = request.send().await.map_err(|e| {
            let e = http::transport_error(e, &secrets);
            self.error(e.message, true)
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let body = http::redact(&http::truncate(text.trim(), 200), &secrets);
            return Err(self.error(
                format!("HTTP status {status}: {body}"),
                http::is_retryable_status(status),
            ));
        }
        let keys: ContainerKeys = serde_json::from_str(&text).map_err(|e| {
            self.error(
                format!(
                    "the answer holds no AccessKeyId/SecretAccessKey (line {}, column {})",
                    e.line(),
                    e.column()
                ),
                true,
            )
        })?;
        let lifetime = keys.expiration.as_deref().and_then(lifetime_until);
        Ok((
            AwsKeys {
                access_key_id: keys.access_key_id,
                secret_access_key: keys.secret_access_key,
                session_token: keys.token,
            },
            lifetime,
        ))
    }

    fn error(&self, message: String, retryable: bool) -> GenerationError {
        let fix = if retryable {
            ""
        } else {
            "; check the task role and AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI"
        };
        GenerationError {
            name: "LoadAPIKeyError".into(),
            message: format!(
                "cannot get AWS credentials from the container credentials endpoint {}: \
                 {message}{fix}",
                self.url
            ),
            status_code: None,
            retryable,
            retry_after: None,
        }
    }
}

/// How long from now until an RFC 3339 instant (`2026-12-03T17:14:00Z`); zero when past,
/// `None` when unreadable.
fn lifetime_until(at: &str) -> Option<Duration> {
    let at =
        aws_smithy_types::DateTime::from_str(at, aws_smithy_types::date_time::Format::DateTime)
            .ok()?;
    let at = SystemTime::try_from(at).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expirations_are_read_as_lifetimes() {
        assert_eq!(lifetime_until("2015-08-30T12:36:00Z"), Some(Duration::ZERO));
        let later = lifetime_until("2999-01-01T00:00:00Z").unwrap();
        assert!(later > Duration::from_secs(3600));
        assert_eq!(lifetime_until("soon"), None);
    }

    #[test]
    fn plain_http_endpoints_must_be_loopback_or_link_local() {
        for (uri, ok) in [
            ("http://127.0.0.1:9/creds", true),
            ("http://[::1]:9/creds", true),
            ("https://creds.example/x", true),
            ("http://169.254.170.23/v1/credentials", true),
            ("http://creds.example/x", false),
            ("http://10.0.0.1/x", false),
        ] {
            assert_eq!(allowed_endpoint(&uri.parse().unwrap()), ok, "{uri}");
        }
    }
}
