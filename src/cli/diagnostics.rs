//! Diagnostics on stderr: the `tracing` subscriber of the `perstack` binary.
//!
//! Owns the decision whether diagnostics carry ANSI colour codes: only when stderr is a
//! terminal and `NO_COLOR` is unset or empty (<https://no-color.org>), so that log files and
//! pipes never receive escape sequences. Never writes to stdout (stdout carries only events).
//! With the `otel` feature and an OTLP endpoint variable set, the same subscriber also exports
//! the engine's spans ([`crate::otel`]); [`Telemetry::finish`] flushes them before exit.

use std::ffi::OsString;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// What [`init`] leaves running: the span export, when compiled in and configured.
#[derive(Debug, Default)]
pub(super) struct Telemetry {
    #[cfg(feature = "otel")]
    export: Option<crate::otel::OtlpExport>,
}

impl Telemetry {
    /// Send the spans not sent yet. Call after the command ran and its runtime was dropped
    /// (which closes the last spans), outside async code.
    pub(super) fn finish(self) {
        #[cfg(feature = "otel")]
        if let Some(export) = self.export
            && let Err(e) = export.shutdown()
        {
            eprintln!("perstack: {e}");
        }
    }
}

/// Install the process-wide subscriber: diagnostics on stderr, filtered by `PERSTACK_LOG`
/// (default `perstack=warn`, or `perstack=debug` when `verbose`); with the `otel` feature, also
/// the OTLP export the `OTEL_EXPORTER_OTLP_*` variables describe.
pub(super) fn init(verbose: bool) -> Telemetry {
    let filter = filter(verbose);
    let ansi = use_color(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    #[cfg(feature = "otel")]
    match crate::otel::OtlpExport::from_env() {
        Ok(Some(export)) => {
            use tracing_subscriber::Layer as _;
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;
            let stderr = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter(filter);
            tracing_subscriber::registry()
                .with(stderr)
                .with(export.layer())
                .init();
            return Telemetry {
                export: Some(export),
            };
        }
        Ok(None) => {}
        Err(e) => eprintln!("perstack: {e}; spans are not exported"),
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter)
        .init();
    Telemetry::default()
}

/// Install the process-wide subscriber writing to `file` instead of stderr, without colour
/// (`perstack start`, whose terminal is the screen). No span export.
pub(super) fn init_file(verbose: bool, file: std::fs::File) -> Telemetry {
    tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(filter(verbose))
        .init();
    Telemetry::default()
}

/// `PERSTACK_LOG`, else `perstack=warn` (`perstack=debug` when `verbose`).
fn filter(verbose: bool) -> EnvFilter {
    let default = if verbose {
        "perstack=debug"
    } else {
        "perstack=warn"
    };
    quiet_signer(
        EnvFilter::try_from_env("PERSTACK_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
    )
}

/// `filter` with `aws-sigv4` silenced whatever `PERSTACK_LOG` asks: at `trace` it logs
/// canonical requests, which hold the AWS session token.
fn quiet_signer(filter: EnvFilter) -> EnvFilter {
    match "aws_sigv4=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Whether diagnostics may carry colour codes: stderr is a terminal and `NO_COLOR` is unset or
/// empty.
fn use_color(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::use_color;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_color(true, None));
        assert!(use_color(true, Some("".into())));
        assert!(!use_color(true, Some("1".into())));
        assert!(!use_color(false, None));
        assert!(!use_color(false, Some("1".into())));
    }
}
