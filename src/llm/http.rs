//! HTTP plumbing shared by the network providers (Anthropic, OpenAI, Google, Ollama, ...):
//! reading provider settings and environment variables into configuration errors that say what
//! to do, building header maps, classifying HTTP and transport failures into
//! [`GenerationError`]s exactly once, parsing `Retry-After`, and scrubbing API keys out of every
//! message that leaves a provider.
//!
//! This module never retries and never sleeps: the agent machine owns the retry decision and
//! [`super::retry`] the wait. It never logs, so a key cannot leak through it.
//!
//! | status / failure | name | retryable |
//! | --- | --- | --- |
//! | 408, 409, 429, 5xx (incl. 529 overloaded) | `APICallError` | yes |
//! | other 4xx (400, 401, 403, 404, 413, ...) | `APICallError` | no |
//! | connect / reset / body read failure | `APIConnectionError` | yes |
//! | client-side timeout | `TimeoutError` | yes |

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::GenerationError;

/// What replaces a secret in messages.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// How long a provider waits for a TCP/TLS connection before reporting a retryable
/// `APIConnectionError`. The whole call is bounded separately by the engine's per-generation
/// timeout.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A provider could not be configured from the environment and `[provider.setting]`.
/// Every message names the variable or key at fault and what to do about it, and never
/// contains a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderConfigError {
    /// A required environment variable is missing or empty.
    #[error(
        "the {provider} provider needs the environment variable {var}: set it in the environment \
         or in a .env file next to perstack.toml"
    )]
    MissingEnv {
        /// Provider name (`anthropic`, ...).
        provider: String,
        /// The variable.
        var: String,
    },
    /// A `[provider.setting]` key has the wrong type or value.
    #[error("the {provider} provider's `provider.setting.{key}` {problem}")]
    InvalidSetting {
        /// Provider name.
        provider: String,
        /// The key.
        key: String,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// The base URL (from `baseUrl` or the `*_BASE_URL` variable) is not a usable URL.
    #[error(
        "the {provider} provider's base URL {url:?} (from {origin}) is invalid: {problem}; \
         use an absolute URL such as {example}"
    )]
    InvalidBaseUrl {
        /// Provider name.
        provider: String,
        /// The URL as given.
        url: String,
        /// Where it came from (`provider.setting.baseUrl`, `ANTHROPIC_BASE_URL`, ...).
        origin: String,
        /// The parser's complaint.
        problem: String,
        /// A valid example.
        example: String,
    },
    /// A custom header name or value cannot be sent. The value is never echoed.
    #[error(
        "the {provider} provider cannot send the HTTP header {name:?}: {problem}; fix it in \
         `provider.setting.headers`"
    )]
    InvalidHeader {
        /// Provider name.
        provider: String,
        /// The header name as given.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The provider's credentials (a key file, a credentials endpoint) are missing or
    /// unusable. The message names where they were looked for and what to do; it never holds
    /// a secret.
    #[error("the {provider} provider cannot use its credentials: {problem}")]
    Credentials {
        /// Provider name.
        provider: String,
        /// What is wrong, where it was looked for and how to fix it.
        problem: String,
    },
    /// The HTTP client could not be built (TLS initialisation).
    #[error("the {provider} provider cannot build its HTTP client: {message}")]
    Client {
        /// Provider name.
        provider: String,
        /// The cause.
        message: String,
    },
}

impl ProviderConfigError {
    /// The same error, naming where an invalid base URL came from (`ANTHROPIC_BASE_URL`,
    /// `provider.setting.baseUrl`, ...). Other variants are returned unchanged.
    pub fn with_origin(mut self, origin: &str) -> Self {
        if let ProviderConfigError::InvalidBaseUrl { origin: o, .. } = &mut self {
            *o = origin.into();
        }
        self
    }
}

/// A required environment variable, non-empty.
pub(crate) fn required_env(
    env: &BTreeMap<String, String>,
    provider: &str,
    var: &str,
) -> Result<String, ProviderConfigError> {
    match env.get(var).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(ProviderConfigError::MissingEnv {
            provider: provider.into(),
            var: var.into(),
        }),
    }
}

/// An optional environment variable; empty counts as unset.
pub(crate) fn optional_env(env: &BTreeMap<String, String>, var: &str) -> Option<String> {
    env.get(var)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A provider option by Perstack's precedence: `key` in `[provider.setting]`, then the first of
/// `vars` that is set (e.g. `baseUrl`, then `ANTHROPIC_BASE_URL`). Returns the value with where
/// it came from, for messages and [`ProviderConfigError::with_origin`]; `None` leaves the
/// provider's default.
pub(crate) fn setting_or_env(
    setting: &Map<String, Value>,
    env: &BTreeMap<String, String>,
    provider: &str,
    key: &str,
    vars: &[&str],
) -> Result<Option<(String, String)>, ProviderConfigError> {
    if let Some(value) = setting_str(setting, provider, key)? {
        return Ok(Some((value, format!("provider.setting.{key}"))));
    }
    Ok(vars
        .iter()
        .find_map(|var| optional_env(env, var).map(|value| (value, (*var).to_string()))))
}

/// An optional string key of `[provider.setting]`.
pub(crate) fn setting_str(
    setting: &Map<String, Value>,
    provider: &str,
    key: &str,
) -> Result<Option<String>, ProviderConfigError> {
    match setting.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ProviderConfigError::InvalidSetting {
            provider: provider.into(),
            key: key.into(),
            problem: format!("must be a string, found {}", json_kind(other)),
        }),
    }
}

/// The `headers` table of `[provider.setting]`: a map of strings.
pub(crate) fn setting_headers(
    setting: &Map<String, Value>,
    provider: &str,
) -> Result<BTreeMap<String, String>, ProviderConfigError> {
    let invalid = |problem: String| ProviderConfigError::InvalidSetting {
        provider: provider.into(),
        key: "headers".into(),
        problem,
    };
    match setting.get("headers") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(invalid(format!(
                    "must map header names to strings, but {k:?} is {}",
                    json_kind(other)
                ))),
            })
            .collect(),
        Some(other) => Err(invalid(format!(
            "must be a table of header names to strings, found {}",
            json_kind(other)
        ))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// `{base}/{path}` as an http(s) URL; `base` may end with `/`. An error names `example` as
/// a valid base; use [`ProviderConfigError::with_origin`] to say where `base` came from.
pub(crate) fn endpoint(
    provider: &str,
    base: &str,
    path: &str,
    example: &str,
) -> Result<reqwest::Url, ProviderConfigError> {
    let joined = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    let bad = |problem: String| ProviderConfigError::InvalidBaseUrl {
        provider: provider.into(),
        url: base.into(),
        origin: "the provider configuration".into(),
        problem,
        example: example.into(),
    };
    let url = reqwest::Url::parse(&joined).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!("unsupported scheme {:?}", url.scheme())));
    }
    Ok(url)
}

/// Whether a header may carry a credential (its name mentions a key, token, auth, secret,
/// cookie or password): its value is marked sensitive and scrubbed from messages.
pub(crate) fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["key", "token", "auth", "secret", "cookie", "password"]
        .iter()
        .any(|s| name.contains(s))
}

/// A header map from name/value pairs. Later pairs replace earlier ones with the same name
/// (so custom headers can override defaults). Values of [`is_secret_header`] names are marked
/// sensitive so `Debug` never prints them.
pub(crate) fn header_map<'a>(
    provider: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<HeaderMap, ProviderConfigError> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let bad = |problem: &str| ProviderConfigError::InvalidHeader {
            provider: provider.into(),
            name: name.into(),
            problem: problem.into(),
        };
        let key =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("not a valid header name"))?;
        let mut val = HeaderValue::from_str(value)
            .map_err(|_| bad("the value holds characters HTTP headers cannot carry"))?;
        val.set_sensitive(is_secret_header(name));
        map.insert(key, val);
    }
    Ok(map)
}

/// The HTTP client every provider uses: rustls, a [`CONNECT_TIMEOUT`], no overall timeout
/// (streams may run long; the engine bounds each generation).
pub(crate) fn client(provider: &str) -> Result<reqwest::Client, ProviderConfigError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| ProviderConfigError::Client {
            provider: provider.into(),
            message: error_chain(&e),
        })
}

/// `text` with every non-empty secret replaced by [`REDACTED`].
pub(crate) fn redact<S: AsRef<str>>(text: &str, secrets: &[S]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().map(AsRef::as_ref).filter(|s| !s.is_empty()) {
        if out.contains(s) {
            out = out.replace(s, REDACTED);
        }
    }
    out
}

/// `e` with secrets scrubbed from its message.
pub(crate) fn redact_error<S: AsRef<str>>(
    mut e: GenerationError,
    secrets: &[S],
) -> GenerationError {
    e.message = redact(&e.message, secrets);
    e
}

/// Whether a retry may succeed after this HTTP status: 408, 409, 429 and every 5xx
/// (Anthropic's 529 "overloaded" included), as the AI SDK decides.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// How long the server asked us to wait: `retry-after-ms` (milliseconds), else `retry-after`
/// as seconds or as an HTTP date. `None` when absent or unparsable.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // try_from: a huge or negative value is ignored instead of panicking.
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Ok(wait) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(wait);
    }
    let value = get("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = http_date(value)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(s: &str) -> Option<u64> {
    let mut it = s.split_whitespace().skip(1);
    let day: u64 = it.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = it
        .next()
        .and_then(|m| MONTHS.iter().position(|x| *x == m))? as u64
        + 1;
    let year: u64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|x| x.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    let in_range = (1..=31).contains(&day) && (1970..=9999).contains(&year);
    if it.next()? != "GMT" || !in_range || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), for years >= 1970.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// The `(type, message)` of an API error body: `{"error":{"type","message"}}` (Anthropic,
/// OpenAI), `{"error":{"status","message"}}` (Google), `{"error":"..."}` (Ollama) or
/// `{"message":"..."}`.
pub(crate) fn api_error(body: &str) -> Option<(Option<String>, String)> {
    let v: Value = serde_json::from_str(body).ok()?;
    let str_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    match v.get("error") {
        Some(Value::String(m)) => Some((None, m.clone())),
        Some(e @ Value::Object(_)) => {
            let kind = str_of(e.get("type")).or_else(|| str_of(e.get("status")));
            Some((kind, str_of(e.get("message"))?))
        }
        _ => Some((str_of(v.get("type")), str_of(v.get("message"))?)),
    }
}

/// Classify a non-success HTTP answer: `APICallError` with the status, the API's own message
/// (or the start of the body), the `Retry-After` wait when given, retryable per
/// [`is_retryable_status`], and no secret.
pub(crate) fn status_error<S: AsRef<str>>(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    secrets: &[S],
) -> GenerationError {
    let message = match api_error(body) {
        Some((Some(kind), m)) => format!("{kind}: {m}"),
        Some((None, m)) => m,
        None if body.trim().is_empty() => format!("HTTP status {status}"),
        None => format!("HTTP status {status}: {}", truncate(body.trim(), 500)),
    };
    let wait = retry_after(headers);
    let message = match wait {
        Some(wait) => format!("{message} (retry after {wait:?})"),
        None => message,
    };
    GenerationError {
        name: "APICallError".into(),
        message: redact(&message, secrets),
        status_code: Some(status),
        retryable: is_retryable_status(status),
        retry_after: wait,
    }
}

/// Classify a failed request or body read: `TimeoutError` or `APIConnectionError`, both
/// retryable; the message is the error chain without the URL and without secrets.
pub(crate) fn transport_error<S: AsRef<str>>(e: reqwest::Error, secrets: &[S]) -> GenerationError {
    let timeout = e.is_timeout();
    let status = e.status().map(|s| s.as_u16());
    let e = e.without_url();
    GenerationError {
        name: if timeout {
            "TimeoutError"
        } else {
            "APIConnectionError"
        }
        .into(),
        message: redact(&error_chain(&e), secrets),
        status_code: status,
        retryable: true,
        retry_after: None,
    }
}

/// `e` and its sources, joined with `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The first `max` characters of `s`, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        header_map("t", pairs.iter().copied()).unwrap()
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_http_dates() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1"), ("retry-after-ms", "250")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "1e300")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")])), None);
        assert_eq!(
            http_date("Sun, 06 Nov 99999999999999999 08:49:37 GMT"),
            None
        );
        assert_eq!(retry_after(&headers(&[])), None);
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Sun, 06 Nov 1994 08:49:37 GMT"
            )])),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn status_errors_carry_the_api_message_and_their_retry_policy() {
        let body =
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad key sk-1"}}"#;
        let e = status_error(400, &headers(&[]), body, &["sk-1"]);
        assert_eq!(e.name, "APICallError");
        assert_eq!(e.message, "invalid_request_error: bad key [REDACTED]");
        assert!(!e.retryable);
        let e = status_error(429, &headers(&[("retry-after", "3")]), "", &[] as &[&str]);
        assert!(e.retryable && e.message.contains("retry after 3s"), "{e:?}");
        for s in [500, 502, 503, 504, 529] {
            assert!(status_error(s, &HeaderMap::new(), "oops", &[""]).retryable);
        }
        for s in [400, 401, 403, 404] {
            assert!(!is_retryable_status(s));
        }
        assert_eq!(
            api_error(r#"{"error":"model not found"}"#).unwrap().1,
            "model not found"
        );
    }

    #[test]
    fn settings_are_type_checked_and_errors_name_the_key() {
        let setting: Map<String, Value> =
            serde_json::from_str(r#"{"baseUrl": 3, "headers": {"x": 1}}"#).unwrap();
        let e = setting_str(&setting, "anthropic", "baseUrl").unwrap_err();
        assert!(e.to_string().contains("provider.setting.baseUrl"), "{e}");
        let e = setting_headers(&setting, "anthropic").unwrap_err();
        assert!(e.to_string().contains("headers"), "{e}");
        let e = required_env(&BTreeMap::new(), "anthropic", "ANTHROPIC_API_KEY").unwrap_err();
        assert!(e.to_string().contains("ANTHROPIC_API_KEY"), "{e}");
        let e = header_map("anthropic", [("x-key", "secret\nvalue")]).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
