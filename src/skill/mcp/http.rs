//! The Streamable HTTP transport for a checked endpoint.
//!
//! The reqwest client is built for one endpoint only:
//!
//! - the host name is pinned to the address [`super::endpoint`] checked (`resolve`), so the
//!   connection cannot be moved elsewhere by a second DNS answer;
//! - redirects are never followed (a `302` to `http://127.0.0.1/` is an error, not a request);
//! - no proxy is used, since a proxy would resolve the name itself and undo the pinning;
//! - plain `http` is refused unless private endpoints are allowed;
//! - responses are capped at `max_message_bytes`.

use std::time::Duration;

use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use super::ConnectOptions;
use super::endpoint::CheckedEndpoint;
use crate::skill::SkillError;

/// How long establishing a TCP/TLS connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A Streamable HTTP client transport for `endpoint`, pinned to its checked address.
pub(super) fn transport(
    skill: &str,
    endpoint: &CheckedEndpoint,
    opts: &ConnectOptions,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, SkillError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(!opts.allow_private_endpoints)
        .connect_timeout(CONNECT_TIMEOUT.min(opts.startup_timeout))
        // rmcp's own default: idle pooled connections cost ~40 ms stalls (delayed ACK).
        .pool_max_idle_per_host(0);
    if let Some(domain) = &endpoint.domain {
        builder = builder.resolve(domain, endpoint.addr);
    }
    let client = builder.build().map_err(|e| SkillError::Connect {
        skill: skill.to_owned(),
        message: format!("could not build the HTTP client: {e}"),
    })?;
    let config = StreamableHttpClientTransportConfig::with_uri(endpoint.url.as_str())
        .max_json_response_size(opts.max_message_bytes)
        .max_sse_event_size(opts.max_message_bytes);
    Ok(StreamableHttpClientTransport::with_client(client, config))
}
