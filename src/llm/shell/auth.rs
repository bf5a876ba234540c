//! Credentials and signing: the two hooks through which a request of the HTTP provider shell
//! gets what proves who sends it.
//!
//! | hook | when | implementations |
//! | --- | --- | --- |
//! | [`Credentials`] | before the provider's custom headers (which may override it) | [`KeyHeaders`] (a static API key: Anthropic, OpenAI, Azure, Gemini; none for Ollama), [`BearerToken`] (a token fetched and refreshed asynchronously by a [`TokenSource`]: Vertex) |
//! | [`Signer`] | last, over the finished request (method, URL, every header, body) | SigV4 (Bedrock's `bedrock/auth.rs`) |
//!
//! Credential values are marked sensitive (so `Debug` never prints them) and scrubbed from every
//! error message: a static key is known up front ([`Credentials::secrets`]); a credential that
//! rotates ([`Credentials::rotates`]) is scrubbed per request. This module never logs and never
//! retries a failed fetch: a failure is a classified [`GenerationError`] and the agent machine
//! decides.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::llm::GenerationError;
use crate::llm::http::{self, ProviderConfigError};

/// Where the credential headers of one request come from.
#[async_trait::async_trait]
pub(crate) trait Credentials: Send + Sync + 'static {
    /// The headers that carry the credential for one request, values marked sensitive.
    async fn headers(&self) -> Result<HeaderMap, GenerationError>;

    /// Secrets known up front, scrubbed from every message of the provider.
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether [`Credentials::headers`] may return a value that is not among
    /// [`Credentials::secrets`] (a refreshed token): the shell then scrubs the values of the
    /// request's credential headers from that request's messages too.
    fn rotates(&self) -> bool {
        false
    }
}

/// One credential shared by several providers of one configuration (Vertex's Gemini and
/// Claude endpoints share one token).
#[async_trait::async_trait]
impl<C: Credentials + ?Sized> Credentials for std::sync::Arc<C> {
    async fn headers(&self) -> Result<HeaderMap, GenerationError> {
        (**self).headers().await
    }

    fn secrets(&self) -> Vec<String> {
        (**self).secrets()
    }

    fn rotates(&self) -> bool {
        (**self).rotates()
    }
}

/// The last hook before a request is sent: signs the finished request (AWS SigV4 signs the
/// method, URL, headers and body) by adding or replacing headers.
#[async_trait::async_trait]
pub(crate) trait Signer: Send + Sync + 'static {
    /// Sign `request` in place.
    async fn sign(&self, request: &mut reqwest::Request) -> Result<(), GenerationError>;

    /// Secrets known up front (static keys), scrubbed from every message of the provider.
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A static API key sent in fixed headers (`x-api-key`, `Authorization: Bearer`, `api-key`,
/// `x-goog-api-key`); no headers at all for a provider without a key (Ollama).
pub(crate) struct KeyHeaders {
    headers: HeaderMap,
    key: Option<String>,
}

impl KeyHeaders {
    /// `key` sent as the headers `pairs` (each value usually holds the key); the key is a
    /// secret of the provider.
    pub(crate) fn new(
        provider: &str,
        key: &str,
        pairs: &[(&str, &str)],
    ) -> Result<Self, ProviderConfigError> {
        let mut headers = http::header_map(provider, pairs.iter().copied())?;
        for value in headers.values_mut() {
            value.set_sensitive(true);
        }
        Ok(KeyHeaders {
            headers,
            key: Some(key.to_string()),
        })
    }

    /// No credential (a local server; a proxy's header comes from the custom headers).
    pub(crate) fn none() -> Self {
        KeyHeaders {
            headers: HeaderMap::new(),
            key: None,
        }
    }
}

#[async_trait::async_trait]
impl Credentials for KeyHeaders {
    async fn headers(&self) -> Result<HeaderMap, GenerationError> {
        Ok(self.headers.clone())
    }

    fn secrets(&self) -> Vec<String> {
        self.key.iter().cloned().collect()
    }
}

/// A bearer token and how long it is valid.
#[derive(Clone)]
pub(crate) struct Token {
    /// The token, sent as `Authorization: Bearer <value>`.
    pub(crate) value: String,
    /// Its lifetime from the moment it was fetched (OAuth's `expires_in`).
    pub(crate) expires_in: Duration,
}

/// Fetches a fresh bearer token (an OAuth token endpoint, a metadata service).
#[async_trait::async_trait]
pub(crate) trait TokenSource: Send + Sync + 'static {
    /// A new token. A failure is a classified error (retryable when the endpoint may recover).
    async fn fetch(&self) -> Result<Token, GenerationError>;
}

/// A bearer token from a [`TokenSource`], cached and fetched again shortly before it expires.
pub(crate) struct BearerToken<S> {
    source: S,
    /// How long before its expiry a token is replaced, so that no request leaves with a token
    /// that expires on the way. A token that lives shorter than this is fetched per request.
    margin: Duration,
    /// The current token and when it expires. The lock is held across a fetch so that
    /// concurrent requests wait for one fetch instead of each starting their own.
    current: Mutex<Option<(HeaderValue, Instant)>>,
}

impl<S: TokenSource> BearerToken<S> {
    /// Tokens from `source`, replaced `margin` before they expire.
    pub(crate) fn new(source: S, margin: Duration) -> Self {
        BearerToken {
            source,
            margin,
            current: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl<S: TokenSource> Credentials for BearerToken<S> {
    async fn headers(&self) -> Result<HeaderMap, GenerationError> {
        let mut current = self.current.lock().await;
        let now = Instant::now();
        let value = match &*current {
            Some((value, expires)) if now + self.margin < *expires => value.clone(),
            _ => {
                let token = self.source.fetch().await?;
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", token.value)).map_err(|_| {
                        GenerationError::invalid_response(
                            "the token endpoint returned a token HTTP headers cannot carry".into(),
                        )
                    })?;
                value.set_sensitive(true);
                *current = Some((value.clone(), now + token.expires_in));
                value
            }
        };
        Ok(HeaderMap::from_iter([(AUTHORIZATION, value)]))
    }

    fn rotates(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Hands out `token-1`, `token-2`, ... valid for `life`.
    struct Counting {
        fetched: Arc<AtomicUsize>,
        life: Duration,
    }

    #[async_trait::async_trait]
    impl TokenSource for Counting {
        async fn fetch(&self) -> Result<Token, GenerationError> {
            let n = self.fetched.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Token {
                value: format!("token-{n}"),
                expires_in: self.life,
            })
        }
    }

    fn bearer(h: &HeaderMap) -> &str {
        h[AUTHORIZATION].to_str().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_bearer_token_is_reused_until_shortly_before_it_expires_then_fetched_again() {
        let fetched = Arc::new(AtomicUsize::new(0));
        let source = Counting {
            fetched: fetched.clone(),
            life: Duration::from_secs(60),
        };
        let creds = BearerToken::new(source, Duration::from_secs(10));
        assert!(creds.rotates());
        let h = creds.headers().await.unwrap();
        assert_eq!(bearer(&h), "Bearer token-1");
        assert!(h[AUTHORIZATION].is_sensitive());
        tokio::time::advance(Duration::from_secs(49)).await;
        assert_eq!(bearer(&creds.headers().await.unwrap()), "Bearer token-1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(bearer(&creds.headers().await.unwrap()), "Bearer token-2");
        assert_eq!(fetched.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_shorter_lived_than_the_margin_is_fetched_per_request() {
        let fetched = Arc::new(AtomicUsize::new(0));
        let source = Counting {
            fetched: fetched.clone(),
            life: Duration::from_secs(5),
        };
        let creds = BearerToken::new(source, Duration::from_secs(10));
        creds.headers().await.unwrap();
        creds.headers().await.unwrap();
        assert_eq!(fetched.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn key_headers_are_sensitive_and_name_their_key_as_a_secret() {
        let k = KeyHeaders::new("p", "sk-1", &[("x-api-key", "sk-1")]).unwrap();
        let h = k.headers().await.unwrap();
        assert!(h["x-api-key"].is_sensitive());
        assert_eq!(k.secrets(), ["sk-1"]);
        assert!(!k.rotates());
        assert!(KeyHeaders::none().headers().await.unwrap().is_empty());
    }
}
