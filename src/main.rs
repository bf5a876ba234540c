//! The `perstack` binary: parse arguments, send tracing to stderr, run, exit with the code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc: glibc's malloc serialises the runtime's worker threads on its arena locks, which
/// doubled the CPU time of a busy engine (see `benches/fanout.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = perstack::cli::Cli::parse();
    let verbose = matches!(&cli.command, perstack::cli::Command::Run(a) if a.verbose);
    let default = if verbose {
        "perstack=debug"
    } else {
        "perstack=warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("PERSTACK_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .init();
    ExitCode::from(perstack::cli::main(cli).await)
}
