//! Diagnostics on stderr: the `tracing` subscriber of the `perstack` binary.
//!
//! Owns the decision whether diagnostics carry ANSI colour codes: only when stderr is a
//! terminal and `NO_COLOR` is unset or empty (<https://no-color.org>), so that log files and
//! pipes never receive escape sequences. Never writes to stdout (stdout carries only events).

use std::ffi::OsString;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Install the process-wide subscriber: diagnostics on stderr, filtered by `PERSTACK_LOG`
/// (default `perstack=warn`, or `perstack=debug` when `verbose`).
pub(super) fn init(verbose: bool) {
    let default = if verbose {
        "perstack=debug"
    } else {
        "perstack=warn"
    };
    let filter =
        EnvFilter::try_from_env("PERSTACK_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = use_color(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter)
        .init();
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
