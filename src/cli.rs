//! The `perstack` command line: argument parsing and one file per command.
//!
//! Exit codes: 0 when the job completed or stopped for user input, 1 when it stopped by error
//! or max steps (or an engine fault), 2 for usage and configuration errors. Events go to stdout,
//! one JSON object per line; diagnostics go to stderr.

mod base;
mod diagnostics;
mod install;
mod log;
mod run;

use clap::{Parser, Subcommand};

pub use base::BaseArgs;
pub use diagnostics::init as init_diagnostics;
pub use install::InstallArgs;
pub use log::LogArgs;
pub use run::RunArgs;

/// Perstack-compatible engine for multi-Expert AI agents.
#[derive(Debug, Parser)]
#[command(name = "perstack", version, about, propagate_version = true)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an Expert headless, printing every event as a JSON line.
    Run(RunArgs),
    /// View execution history
    Log(log::LogArgs),
    /// Serve the built-in @perstack/base skill as an MCP server over stdio.
    Base(base::BaseArgs),
    /// Collect every Expert's tool definitions into perstack.lock.
    Install(install::InstallArgs),
}

/// Run the parsed command; returns the process exit code.
pub async fn main(cli: Cli) -> u8 {
    match cli.command {
        Command::Run(args) => run::execute(args).await,
        Command::Log(args) => log::execute(args).await,
        Command::Base(args) => base::execute(args).await,
        Command::Install(args) => install::execute(args).await,
    }
}
