//! The HTTP provider shell: everything a network provider does that is not its wire format.
//! A provider is a [`Protocol`] (its URL, its request body, its stream [`Decoder`]) wrapped in
//! an [`HttpProvider`], which sends one POST per generation and turns the answer into a
//! [`PartStream`].
//!
//! | concern | owner |
//! | --- | --- |
//! | URL, request body, error-body quirks, a one-time fallback request | the provider's [`Protocol`] (`<provider>.rs`, `<provider>/request.rs`) |
//! | answer frames → [`StreamPart`](super::StreamPart)s | the provider's [`Decoder`] (`<provider>/stream.rs`) |
//! | framing: SSE, NDJSON, AWS event stream | [`framing`] |
//! | credentials: static key headers, async-refreshed bearer tokens | [`auth::Credentials`] |
//! | request signing (AWS SigV4) | [`auth::Signer`] |
//! | default and custom headers, the HTTP client, secrets scrubbed from errors | [`HttpProvider`] |
//! | HTTP and transport failures → [`GenerationError`] | [`super::http`] |
//!
//! A request is built in one order: credential headers, then the provider's default headers,
//! then the user's custom headers (which override both), then the signer over the finished
//! request. The shell makes one HTTP call per generation (two when the protocol asks for its
//! fallback) and never retries: a failure is classified once and the agent machine decides. It
//! never logs, so a key cannot leak through it.

pub(crate) mod auth;
pub(crate) mod framing;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use reqwest::header::HeaderMap;
use serde_json::Value;

use self::auth::{Credentials, Signer};
pub(crate) use self::framing::Decoder;
use super::http::{self, ProviderConfigError};
use super::{GenerationError, GenerationRequest, PartStream};

/// One provider's wire protocol over HTTP.
pub(crate) trait Protocol: fmt::Debug + Send + Sync + 'static {
    /// How the streamed answer is framed and decoded.
    type Decoder: Decoder;

    /// The provider's name (`anthropic`, `openai`, ...), for logs and errors.
    fn name(&self) -> &str;

    /// Where `request` is posted.
    fn url(&self, request: &GenerationRequest) -> Result<reqwest::Url, GenerationError>;

    /// The JSON body of `request`.
    fn body(&self, request: &GenerationRequest) -> Result<Value, GenerationError>;

    /// An error body rewritten before it is classified (Gemini wraps errors in an array).
    fn error_body(&self, body: String) -> String {
        body
    }

    /// What the user must fix after `failure` (access denied, expired credentials, an unknown
    /// model), appended to the error message. `None`: the API's own message says enough.
    fn failure_hint(&self, _failure: &Failure) -> Option<String> {
        None
    }

    /// A second body to send, once, after `failure` answered `body` (Ollama asks again with
    /// `think: false` when a model cannot think). `None`: the failure is the answer.
    fn fallback(&self, _failure: &Failure, _body: &Value) -> Option<Value> {
        None
    }
}

/// A non-success answer: its status, headers and (rewritten) body text.
pub(crate) struct Failure {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The answer's headers (`Retry-After`).
    pub(crate) headers: HeaderMap,
    /// The body, after [`Protocol::error_body`].
    pub(crate) text: String,
}

impl Failure {
    async fn read(response: reqwest::Response, rewrite: impl FnOnce(String) -> String) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = rewrite(response.text().await.unwrap_or_default());
        Failure {
            status,
            headers,
            text,
        }
    }

    fn error(&self, hint: Option<String>, secrets: &[String]) -> GenerationError {
        let mut e = http::status_error(self.status, &self.headers, &self.text, secrets);
        if let Some(hint) = hint {
            e.message = http::redact(&format!("{}; {hint}", e.message), secrets);
        }
        e
    }
}

/// A network provider: a [`Protocol`] sent through one HTTP client. Cheap to share behind an
/// `Arc`; one connection pool for all calls.
pub(crate) struct HttpProvider<P> {
    protocol: P,
    client: reqwest::Client,
    /// The provider's default headers with the user's custom headers over them; credential-like
    /// values are marked sensitive.
    headers: HeaderMap,
    credentials: Box<dyn Credentials>,
    signer: Option<Box<dyn Signer>>,
    /// The static secrets (the key, credential-like custom header values), scrubbed from every
    /// error message.
    secrets: Arc<Vec<String>>,
}

impl<P: Protocol> fmt::Debug for HttpProvider<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProvider")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> HttpProvider<P> {
    /// `protocol` sent with `credentials`, the provider's `defaults` headers and the user's
    /// `custom` headers. Fails on a header HTTP cannot carry or when TLS cannot be initialised.
    pub(crate) fn new(
        protocol: P,
        credentials: impl Credentials,
        defaults: &[(&str, &str)],
        custom: &BTreeMap<String, String>,
    ) -> Result<Self, ProviderConfigError> {
        let name = protocol.name().to_string();
        let pairs = custom.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let headers = http::header_map(&name, defaults.iter().copied().chain(pairs))?;
        let custom_secrets = custom
            .iter()
            .filter(|(k, _)| http::is_secret_header(k))
            .map(|(_, v)| v.clone());
        let secrets = credentials.secrets().into_iter().chain(custom_secrets);
        Ok(HttpProvider {
            client: http::client(&name)?,
            protocol,
            headers,
            credentials: Box::new(credentials),
            signer: None,
            secrets: Arc::new(secrets.collect()),
        })
    }

    /// The same provider, signing every request with `signer` last; the signer's static
    /// secrets join the provider's.
    pub(crate) fn with_signer(mut self, signer: impl Signer) -> Self {
        let secrets = self.secrets.iter().cloned().chain(signer.secrets());
        self.secrets = Arc::new(secrets.collect());
        self.signer = Some(Box::new(signer));
        self
    }

    /// The wire protocol.
    pub(crate) fn protocol(&self) -> &P {
        &self.protocol
    }

    /// What error messages must never show.
    #[cfg(test)]
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The provider's name.
    pub(crate) fn name(&self) -> &str {
        self.protocol.name()
    }

    /// One generation: post the body, classify a failure, stream the answer.
    pub(crate) async fn stream(
        &self,
        request: GenerationRequest,
    ) -> Result<PartStream, GenerationError> {
        let body = self.protocol.body(&request)?;
        let url = self.protocol.url(&request)?;
        let credentials = self
            .credentials
            .headers()
            .await
            .map_err(|e| http::redact_error(e, &self.secrets))?;
        let secrets = self.secrets_with(&credentials);
        let mut response = self
            .send(url.clone(), &credentials, &body, &secrets)
            .await?;
        if !response.status().is_success() {
            let failure = Failure::read(response, |t| self.protocol.error_body(t)).await;
            let Some(second) = self.protocol.fallback(&failure, &body) else {
                let hint = self.protocol.failure_hint(&failure);
                return Err(failure.error(hint, &secrets));
            };
            response = self.send(url, &credentials, &second, &secrets).await?;
            if !response.status().is_success() {
                let failure = Failure::read(response, |t| self.protocol.error_body(t)).await;
                let hint = self.protocol.failure_hint(&failure);
                return Err(failure.error(hint, &secrets));
            }
        }
        Ok(framing::parts::<P::Decoder, _>(
            response.bytes_stream(),
            secrets,
        ))
    }

    /// The static secrets, plus this request's credential values when they rotate.
    fn secrets_with(&self, credentials: &HeaderMap) -> Arc<Vec<String>> {
        if !self.credentials.rotates() {
            return self.secrets.clone();
        }
        let fresh = credentials.values().filter_map(|v| v.to_str().ok());
        let fresh = fresh.flat_map(|v| [v.to_string(), bare_token(v).to_string()]);
        Arc::new(self.secrets.iter().cloned().chain(fresh).collect())
    }

    /// POST `body` as JSON to `url`: credential headers, then the default and custom headers,
    /// then the signer. A failure to send or to get an answer is a classified transport error
    /// without secrets; the status is not checked.
    async fn send(
        &self,
        url: reqwest::Url,
        credentials: &HeaderMap,
        body: &Value,
        secrets: &[String],
    ) -> Result<reqwest::Response, GenerationError> {
        let mut request = self
            .client
            .post(url)
            .headers(credentials.clone())
            .headers(self.headers.clone())
            .json(body)
            .build()
            .map_err(|e| http::transport_error(e, secrets))?;
        if let Some(signer) = &self.signer {
            signer
                .sign(&mut request)
                .await
                .map_err(|e| http::redact_error(e, secrets))?;
        }
        self.client
            .execute(request)
            .await
            .map_err(|e| http::transport_error(e, secrets))
    }
}

/// The token of an `Authorization: Bearer <token>` value (the whole value otherwise).
fn bare_token(value: &str) -> &str {
    value.strip_prefix("Bearer ").unwrap_or(value)
}

/// A public provider type over an [`HttpProvider`]: the struct, its `Debug` (which never shows
/// a secret) and its [`LanguageModel`](crate::llm::LanguageModel) implementation.
macro_rules! http_provider {
    ($(#[$doc:meta])* $name:ident($protocol:ty)) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(crate::llm::shell::HttpProvider<$protocol>);

        #[async_trait::async_trait]
        impl crate::llm::LanguageModel for $name {
            fn name(&self) -> &str {
                self.0.name()
            }

            async fn stream(
                &self,
                request: crate::llm::GenerationRequest,
            ) -> Result<crate::llm::PartStream, crate::llm::GenerationError> {
                self.0.stream(request).await
            }
        }
    };
}
pub(crate) use http_provider;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::auth::{BearerToken, KeyHeaders, Token, TokenSource};
    use super::framing::Ndjson;
    use super::*;
    use crate::llm::StreamPart;
    use crate::schema::ReasoningBudget;

    /// A protocol that posts to one URL and reads NDJSON lines as text deltas.
    #[derive(Debug)]
    struct Echo(reqwest::Url);

    #[derive(Default)]
    struct Lines(bool);

    impl Decoder for Lines {
        type Framing = Ndjson;

        fn frame(&mut self, line: Vec<u8>) -> Result<Vec<StreamPart>, GenerationError> {
            let line = String::from_utf8_lossy(&line).trim().to_string();
            self.0 = line == "end";
            Ok(vec![StreamPart::TextDelta(line)])
        }

        fn end_of_body(&mut self) -> Result<Vec<StreamPart>, GenerationError> {
            Ok(Vec::new())
        }

        fn is_done(&self) -> bool {
            self.0
        }
    }

    impl Protocol for Echo {
        type Decoder = Lines;

        fn name(&self) -> &str {
            "echo"
        }

        fn url(&self, _: &GenerationRequest) -> Result<reqwest::Url, GenerationError> {
            Ok(self.0.clone())
        }

        fn body(&self, _: &GenerationRequest) -> Result<Value, GenerationError> {
            Ok(serde_json::json!({"hello": 1}))
        }
    }

    /// Adds `x-signed: <the header names it saw>`, as SigV4 signs every header.
    struct NamesSigner;

    #[async_trait::async_trait]
    impl Signer for NamesSigner {
        async fn sign(&self, request: &mut reqwest::Request) -> Result<(), GenerationError> {
            let mut names: Vec<_> = request.headers().keys().map(|k| k.as_str()).collect();
            names.sort_unstable();
            let body = request
                .body()
                .and_then(|b| b.as_bytes())
                .unwrap_or_default();
            let value = format!("{} body={}", names.join(","), body.len());
            request
                .headers_mut()
                .insert("x-signed", value.parse().unwrap());
            Ok(())
        }
    }

    struct Fixed;

    #[async_trait::async_trait]
    impl TokenSource for Fixed {
        async fn fetch(&self) -> Result<Token, GenerationError> {
            Ok(Token {
                value: "tok-SECRET".into(),
                expires_in: Duration::from_secs(3600),
            })
        }
    }

    /// One answer on 127.0.0.1: returns the URL and a task yielding the request head.
    async fn serve_once(answer: &'static str) -> (reqwest::Url, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/chat", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("{\"hello\":1}") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                seen.extend_from_slice(&buf[..n]);
            }
            socket.write_all(answer.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8_lossy(&seen).to_lowercase()
        });
        (url.parse().unwrap(), task)
    }

    fn request() -> GenerationRequest {
        GenerationRequest {
            expert_key: "e".into(),
            model: "m".into(),
            messages: Vec::new(),
            tools: Arc::new(Vec::new()),
            reasoning_budget: ReasoningBudget::default(),
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                      connection: close\r\n\r\nhi\nend\nignored\n";

    #[tokio::test]
    async fn credentials_then_defaults_then_custom_headers_then_the_signer_shape_a_request() {
        let (url, seen) = serve_once(OK).await;
        let creds = KeyHeaders::new("echo", "k-SECRET", &[("x-api-key", "k-SECRET")]).unwrap();
        let custom = BTreeMap::from([("x-team".to_string(), "blue".to_string())]);
        let provider = HttpProvider::new(Echo(url), creds, &[("x-team", "red")], &custom)
            .unwrap()
            .with_signer(NamesSigner);
        let parts: Vec<_> =
            futures::StreamExt::collect(provider.stream(request()).await.unwrap()).await;
        let text: Vec<_> = parts.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            text,
            [
                StreamPart::TextDelta("hi".into()),
                StreamPart::TextDelta("end".into())
            ]
        );
        let head = tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .unwrap()
            .unwrap();
        assert!(head.contains("x-api-key: k-secret"), "{head}");
        assert!(
            head.contains("x-team: blue") && !head.contains("red"),
            "{head}"
        );
        assert!(
            head.contains("x-signed: content-type,x-api-key,x-team body=11"),
            "{head}"
        );
        assert_eq!(provider.secrets(), ["k-SECRET"]);
    }

    #[tokio::test]
    async fn a_refreshed_bearer_token_is_sent_and_scrubbed_from_errors() {
        let answer = "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
                      connection: close\r\n\r\n{\"error\":\"bad token tok-SECRET\"}\n";
        let (url, seen) = serve_once(answer).await;
        let creds = BearerToken::new(Fixed, Duration::from_secs(60));
        let provider = HttpProvider::new(Echo(url), creds, &[], &BTreeMap::new()).unwrap();
        let Err(e) = provider.stream(request()).await else {
            panic!("a 401 must fail");
        };
        assert_eq!(e.status_code, Some(401));
        assert_eq!(e.message, "bad token [REDACTED]");
        let head = seen.await.unwrap();
        assert!(head.contains("authorization: bearer tok-secret"), "{head}");
    }
}
