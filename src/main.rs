//! The `perstack` binary: parse arguments, send diagnostics to stderr, run, exit with the code.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: glibc's malloc serialises the runtime's worker threads on its arena locks, which
/// doubled the CPU time of a busy engine (see `benches/fanout.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = perstack::cli::Cli::parse();
    let verbose = matches!(&cli.command, perstack::cli::Command::Run(a) if a.verbose);
    perstack::cli::init_diagnostics(verbose);
    ExitCode::from(perstack::cli::main(cli).await)
}
