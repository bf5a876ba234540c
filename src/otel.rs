//! OpenTelemetry export of the engine's `tracing` spans over OTLP/HTTP (the `otel` feature).
//!
//! The engine opens one span per job (`job`), per Expert run (`run`, under the run that
//! delegated it, the coordinator's under the job), per generation (`generation`) and per tool
//! call (`tool_call`), with their ids as fields (`jobId`, `runId`, `expertKey`, `stepNumber`,
//! `toolName`, `toolCallId`). [`OtlpExport`] turns those spans into OpenTelemetry spans (the
//! fields become attributes, the `tracing` parent the OpenTelemetry parent) and sends them in
//! batches to an OTLP/HTTP collector, from a background thread, never from the engine's tasks.
//!
//! | where the endpoint comes from | what is used |
//! | --- | --- |
//! | [`OtlpExport::from_env`] | the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/traces` appended) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (verbatim), `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or `http/json`), `..._HEADERS`, `..._TIMEOUT`, `OTEL_SERVICE_NAME` |
//! | [`OtlpExport::to_endpoint`] | the base URL given, as `OTEL_EXPORTER_OTLP_ENDPOINT` would be; the other variables still apply |
//!
//! The `perstack` binary built with this feature exports when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, and flushes before it exits. An embedding
//! application adds [`OtlpExport::layer`] to its own subscriber and calls
//! [`OtlpExport::shutdown`] before it exits:
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! # fn demo() -> Result<(), perstack::otel::OtelError> {
//! let export = perstack::otel::OtlpExport::to_endpoint("http://127.0.0.1:4318")?;
//! let subscriber = tracing_subscriber::registry().with(export.layer());
//! tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
//! // ... build an engine, run jobs, shut it down ...
//! export.shutdown()?; // sends what is left
//! # Ok(()) }
//! ```
//!
//! Requests go out through `reqwest`, the HTTP client the providers use (no second HTTP or TLS
//! stack), from the exporter's background thread on a single-thread runtime of its own: never
//! from the engine's tasks, and unaffected by the engine's runtime shutting down. Nothing here
//! touches events, checkpoints or storage.

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The endpoint variables that switch the export on (either one).
pub const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// The longest one export request may take (connecting, sending, reading the answer); past it
/// the batch is dropped and the next one is tried.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The service name spans are reported under unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "perstack";

/// Why the export could not be set up or flushed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// The exporter could not be built (a malformed endpoint or protocol variable).
    #[error("OpenTelemetry export: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
    /// Flushing the last spans or stopping the exporter failed.
    #[error("OpenTelemetry export: {0}")]
    Shutdown(#[from] opentelemetry_sdk::error::OTelSdkError),
    /// The exporter's own single-thread runtime could not start.
    #[error("OpenTelemetry export: cannot start its runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// An OTLP/HTTP exporter of the engine's spans: a batch span processor on its own thread.
/// Dropping it without [`OtlpExport::shutdown`] may lose the spans of the last batch.
pub struct OtlpExport {
    provider: SdkTracerProvider,
}

impl fmt::Debug for OtlpExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExport").finish_non_exhaustive()
    }
}

impl OtlpExport {
    /// The export the standard variables describe, or `None` when neither endpoint variable
    /// ([`ENDPOINT_VARS`]) is set.
    ///
    /// # Errors
    ///
    /// [`OtelError::Build`] when a variable is malformed, [`OtelError::Runtime`] when the
    /// exporter's runtime cannot start.
    pub fn from_env() -> Result<Option<Self>, OtelError> {
        let set = ENDPOINT_VARS
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if !set {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OwnRuntime::new()?)
            .with_protocol(protocol())
            .build()?;
        Ok(Some(Self::with_exporter(exporter)))
    }

    /// An export to the collector at `base` (`http://host:4318`; `/v1/traces` is appended, as
    /// for `OTEL_EXPORTER_OTLP_ENDPOINT`).
    ///
    /// # Errors
    ///
    /// [`OtelError::Build`] when another `OTEL_EXPORTER_OTLP_*` variable is malformed,
    /// [`OtelError::Runtime`] when the exporter's runtime cannot start.
    pub fn to_endpoint(base: &str) -> Result<Self, OtelError> {
        let endpoint = format!("{}/v1/traces", base.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OwnRuntime::new()?)
            .with_endpoint(endpoint)
            .with_protocol(protocol())
            .build()?;
        Ok(Self::with_exporter(exporter))
    }

    fn with_exporter(exporter: opentelemetry_otlp::SpanExporter) -> Self {
        let resource = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
            Resource::builder().build()
        } else {
            Resource::builder().with_service_name(SERVICE_NAME).build()
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        OtlpExport { provider }
    }

    /// The `tracing` layer that hands the engine's spans (target `perstack`, level `INFO` and
    /// above) to this export. Add it to a subscriber; it has its own filter, so a stricter
    /// filter on another layer (diagnostics on stderr) does not hide spans from it.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider.tracer(SERVICE_NAME);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target("perstack", tracing::Level::INFO))
    }

    /// Send the spans not yet sent (spans still open are not) and stop the exporter's thread.
    /// Blocks until done, at most [`REQUEST_TIMEOUT`] per request; in async code, call it in
    /// `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// [`OtelError::Shutdown`] when the last batch could not be sent.
    pub fn shutdown(self) -> Result<(), OtelError> {
        self.provider.shutdown()?;
        Ok(())
    }
}

/// The encoding: protobuf, the OTLP/HTTP default, unless `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`
/// or `OTEL_EXPORTER_OTLP_PROTOCOL` is `http/json`. (The exporter crate, built with both
/// encodings, would pick JSON by default.)
fn protocol() -> Protocol {
    let asked = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    match asked.as_deref() {
        Some("http/json") => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    }
}

/// The OTLP exporter's HTTP client: the engine's `reqwest` client, each request driven to its
/// end on a current-thread tokio runtime of its own. The batch span processor calls it from its
/// own thread, which has no tokio reactor; blocking that thread is what it expects. Owning
/// the runtime (rather than borrowing the engine's) keeps the export working while the
/// engine's runtime shuts down, which is when the last spans (the job's) close.
#[derive(Debug)]
struct OwnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl OwnRuntime {
    fn new() -> Result<Self, OtelError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(std::io::Error::other)?;
        Ok(OwnRuntime { client, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for OwnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let (status, headers, body) = self.runtime.block_on(async {
            let response = self.client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        })?;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}
