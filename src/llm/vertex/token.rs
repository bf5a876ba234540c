//! Google OAuth access tokens from a key file: the [`TokenSource`] behind Vertex AI's bearer
//! token (cached and refreshed by the shell's [`BearerToken`](crate::llm::shell::auth::BearerToken)).
//!
//! | key file `type` | grant sent to its `token_uri` |
//! | --- | --- |
//! | `service_account` | JWT bearer grant: an RS256 JWT (`iss` = `client_email`, `aud` = `token_uri`, `scope` = cloud-platform, one hour) signed with `private_key` |
//! | `authorized_user` (`gcloud auth application-default login`) | refresh-token grant with `client_id`, `client_secret`, `refresh_token` |
//!
//! The key file is read once, when the provider is built; a missing or malformed file is a
//! [`ProviderConfigError`] naming the file and `GOOGLE_APPLICATION_CREDENTIALS`. There is no
//! fallback to the GCE metadata server: without a key file there is no token. The private key,
//! client secret, refresh token and signed assertion are secrets of the provider, scrubbed
//! from every message; this module never logs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::llm::GenerationError;
use crate::llm::http::{self, ProviderConfigError};
use crate::llm::shell::auth::{Token, TokenSource};

/// The OAuth scope Vertex AI needs.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Google's token endpoint, for key files that do not name one (`authorized_user`).
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// How long a signed assertion is valid (Google's maximum).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

const PROVIDER: &str = "google-vertex";

/// A parsed key file and where it came from. `Debug` shows only the file.
pub(crate) struct KeyFile {
    grant: Grant,
    token_uri: reqwest::Url,
    /// The file, for messages.
    path: PathBuf,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("path", &self.path)
            .field("token_uri", &self.token_uri.as_str())
            .finish_non_exhaustive()
    }
}

enum Grant {
    ServiceAccount {
        client_email: String,
        key_id: Option<String>,
        key: EncodingKey,
        /// The PEM text, kept only to scrub it from messages.
        pem: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
    },
}

#[derive(Deserialize)]
struct RawKeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

impl KeyFile {
    /// Read and check the key file at `path`; `origin` says how it was found
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, the gcloud default location).
    pub(crate) fn load(path: &Path, origin: &str) -> Result<Self, ProviderConfigError> {
        let bad = |problem: String| ProviderConfigError::Credentials {
            provider: PROVIDER.into(),
            problem: format!(
                "the key file {} (from {origin}) {problem}; point GOOGLE_APPLICATION_CREDENTIALS \
                 at a service-account key file (JSON) or run `gcloud auth application-default login`",
                path.display()
            ),
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let raw: RawKeyFile = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "is not a JSON key file (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let field = |v: Option<String>, name: &str| {
            v.filter(|s| !s.trim().is_empty())
                .ok_or_else(|| bad(format!("has no `{name}`")))
        };
        let (grant, token_uri) = match raw.kind.as_deref() {
            Some("service_account") => {
                let pem = field(raw.private_key, "private_key")?;
                let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
                    bad("has a `private_key` that is not an RSA private key in PEM form".into())
                })?;
                let grant = Grant::ServiceAccount {
                    client_email: field(raw.client_email, "client_email")?,
                    key_id: raw.private_key_id,
                    key,
                    pem,
                };
                (grant, field(raw.token_uri, "token_uri")?)
            }
            Some("authorized_user") => {
                let grant = Grant::AuthorizedUser {
                    client_id: field(raw.client_id, "client_id")?,
                    client_secret: field(raw.client_secret, "client_secret")?,
                    refresh_token: field(raw.refresh_token, "refresh_token")?,
                };
                (
                    grant,
                    raw.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
                )
            }
            Some(other) => {
                return Err(bad(format!(
                    "has type {other:?}; only \"service_account\" and \"authorized_user\" are supported"
                )));
            }
            None => return Err(bad("has no `type`".into())),
        };
        let token_uri = reqwest::Url::parse(&token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                bad(format!(
                    "has a `token_uri` that is not an http(s) URL: {token_uri:?}"
                ))
            })?;
        Ok(KeyFile {
            grant,
            token_uri,
            path: path.to_path_buf(),
        })
    }

    /// The values that must never appear in a message.
    pub(crate) fn secrets(&self) -> Vec<String> {
        match &self.grant {
            Grant::ServiceAccount { pem, .. } => vec![pem.clone()],
            Grant::AuthorizedUser {
                client_secret,
                refresh_token,
                ..
            } => vec![client_secret.clone(), refresh_token.clone()],
        }
    }

    /// The form fields of one token request.
    fn form(&self) -> Result<Vec<(&'static str, String)>, GenerationError> {
        match &self.grant {
            Grant::ServiceAccount {
                client_email,
                key_id,
                key,
                ..
            } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let claims = Claims {
                    iss: client_email,
                    scope: SCOPE,
                    aud: self.token_uri.as_str(),
                    iat: now,
                    exp: now + ASSERTION_LIFETIME.as_secs(),
                };
                let mut header = Header::new(Algorithm::RS256);
                header.kid.clone_from(key_id);
                let assertion =
                    jsonwebtoken::encode(&header, &claims, key).map_err(|e| GenerationError {
                        name: "LoadAPIKeyError".into(),
                        message: format!(
                            "cannot sign the token request with the key in {}: {e}",
                            self.path.display()
                        ),
                        status_code: None,
                        retryable: false,
                        retry_after: None,
                    })?;
                Ok(vec![
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                    ),
                    ("assertion", assertion),
                ])
            }
            Grant::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
            } => Ok(vec![
                ("grant_type", "refresh_token".into()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.clone()),
                ("refresh_token", refresh_token.clone()),
            ]),
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

/// Access tokens for one key file, fetched from its `token_uri`.
pub(crate) struct KeyFileTokens {
    key: KeyFile,
    client: reqwest::Client,
}

impl KeyFileTokens {
    /// Tokens for `key`, fetched with `client`.
    pub(crate) fn new(key: KeyFile, client: reqwest::Client) -> Self {
        KeyFileTokens { key, client }
    }
}

#[async_trait::async_trait]
impl TokenSource for KeyFileTokens {
    async fn fetch(&self) -> Result<Token, GenerationError> {
        let form = self.key.form()?;
        let mut secrets = self.key.secrets();
        secrets.extend(
            form.iter()
                .filter(|(k, _)| *k == "assertion")
                .map(|(_, v)| v.clone()),
        );
        // The form encoding of the URL parser (reqwest's `form` feature is not built).
        let mut encoder = reqwest::Url::parse("http://form.invalid/").map_err(|e| {
            GenerationError::invalid_response(format!("cannot encode the token request: {e}"))
        })?;
        encoder
            .query_pairs_mut()
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())));
        let body = encoder.query().unwrap_or_default().to_string();
        let response = self
            .client
            .post(self.key.token_uri.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| self.fetch_error(http::transport_error(e, &secrets)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let e = http::status_error(status, &headers, &oauth_error(&text), &secrets);
            return Err(self.fetch_error(e));
        }
        let answer: TokenAnswer = serde_json::from_str(&text).map_err(|e| {
            self.fetch_error(GenerationError::invalid_response(format!(
                "the token endpoint answered without an access token (line {}, column {})",
                e.line(),
                e.column()
            )))
        })?;
        Ok(Token {
            value: answer.access_token,
            expires_in: Duration::from_secs(answer.expires_in.unwrap_or(3600)),
        })
    }
}

impl KeyFileTokens {
    /// `e` from the token endpoint, saying which key file it concerns and, when retrying
    /// cannot help, what to fix.
    fn fetch_error(&self, mut e: GenerationError) -> GenerationError {
        let fix = if e.retryable {
            String::new()
        } else {
            "; the key may be disabled, deleted or revoked: check the key file named by \
             GOOGLE_APPLICATION_CREDENTIALS (or run `gcloud auth application-default login`)"
                .into()
        };
        e.message = format!(
            "cannot get a Google access token for the key file {} from {}: {}{fix}",
            self.key.path.display(),
            self.key.token_uri,
            e.message
        );
        e
    }
}

/// An OAuth error body (`{"error": "invalid_grant", "error_description": "..."}`) in the
/// shape the shared classifier reads (`{"error": {"type", "message"}}`); other bodies as
/// they are.
fn oauth_error(body: &str) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    match serde_json::from_str::<OAuthError>(body) {
        Ok(e) => serde_json::json!({"error": {
            "type": e.error,
            "message": e.error_description.unwrap_or_else(|| "no description".into()),
        }})
        .to_string(),
        Err(_) => body.to_string(),
    }
}

/// Where the key file is: `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's application default
/// credentials file (`$CLOUDSDK_CONFIG` or `$HOME/.config/gcloud`) when it exists. `None`:
/// no key file (the metadata server is never asked).
pub(crate) fn key_file_path(
    env: &std::collections::BTreeMap<String, String>,
) -> Option<(PathBuf, &'static str)> {
    if let Some(path) = http::optional_env(env, "GOOGLE_APPLICATION_CREDENTIALS") {
        return Some((PathBuf::from(path), "GOOGLE_APPLICATION_CREDENTIALS"));
    }
    let dir = http::optional_env(env, "CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| {
            http::optional_env(env, "HOME").map(|h| Path::new(&h).join(".config/gcloud"))
        })?;
    let path = dir.join("application_default_credentials.json");
    path.is_file()
        .then_some((path, "gcloud's application default credentials"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, body: &serde_json::Value) -> PathBuf {
        let path = dir.join("key.json");
        std::fs::write(&path, body.to_string()).unwrap();
        path
    }

    #[test]
    fn malformed_key_files_are_config_errors_that_name_the_file_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let e = KeyFile::load(&missing, "GOOGLE_APPLICATION_CREDENTIALS").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("nope.json") && text.contains("GOOGLE_APPLICATION_CREDENTIALS"));
        let bad_key = serde_json::json!({"type": "service_account", "client_email": "a@b",
            "private_key": "-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n",
            "token_uri": "http://127.0.0.1:9/token"});
        let e = KeyFile::load(&write(dir.path(), &bad_key), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("private_key") && !e.contains("SECRET"), "{e}");
        let other = serde_json::json!({"type": "external_account"});
        let e = KeyFile::load(&write(dir.path(), &other), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("external_account"), "{e}");
        let user = serde_json::json!({"type": "authorized_user", "client_id": "c",
            "client_secret": "s-SECRET", "refresh_token": "r-SECRET"});
        let k = KeyFile::load(&write(dir.path(), &user), "x").unwrap();
        assert_eq!(k.token_uri.as_str(), DEFAULT_TOKEN_URI);
        assert_eq!(k.secrets(), ["s-SECRET", "r-SECRET"]);
    }

    #[test]
    fn oauth_errors_are_read_as_api_errors() {
        let body = oauth_error(r#"{"error":"invalid_grant","error_description":"Invalid JWT"}"#);
        assert_eq!(
            http::api_error(&body),
            Some((Some("invalid_grant".into()), "Invalid JWT".into()))
        );
        assert_eq!(oauth_error("oops"), "oops");
    }

    #[test]
    fn without_a_key_file_there_is_no_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let env = std::collections::BTreeMap::from([(
            "HOME".to_string(),
            dir.path().display().to_string(),
        )]);
        assert!(key_file_path(&env).is_none());
        let gcloud = dir.path().join(".config/gcloud");
        std::fs::create_dir_all(&gcloud).unwrap();
        std::fs::write(gcloud.join("application_default_credentials.json"), "{}").unwrap();
        assert_eq!(
            key_file_path(&env).unwrap().1,
            "gcloud's application default credentials"
        );
    }
}
