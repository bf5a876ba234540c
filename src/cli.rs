//! The `perstack` command line: argument parsing and one file per command.
//!
//! Exit codes: 0 when the job completed or stopped for user input, 1 when it stopped by error
//! or max steps (or an engine fault), 2 for usage and configuration errors. Events go to stdout,
//! one JSON object per line; diagnostics go to stderr.

mod base;
mod diagnostics;
mod install;
mod log;
mod publish;
mod replay;
mod run;
mod start;
mod submit;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use run::RunArgs;

/// Perstack-compatible engine for multi-Expert AI agents.
#[derive(Debug, Parser)]
#[command(name = "perstack", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run an Expert headless, printing every event as a JSON line.
    Run(Box<RunArgs>),
    /// Work interactively in the terminal: pick an Expert or a stored job, watch its runs live,
    /// answer interactive calls, continue with follow-ups. Takes `run`'s options.
    #[command(
        mut_arg("expert_key", |a| a.required(false).default_value("")),
        mut_arg("query", |a| a.required(false).default_value(""))
    )]
    Start(Box<RunArgs>),
    /// View execution history
    Log(Box<log::LogArgs>),
    /// Serve the built-in @perstack/base skill as an MCP server over stdio.
    Base(base::BaseArgs),
    /// Collect every Expert's tool definitions into perstack.lock and pin its registry Experts.
    Install(install::InstallArgs),
    /// Run a stored job (or a Perstack events.jsonl) again from its recorded model answers and
    /// tool results, and report the first difference.
    Replay(Box<replay::ReplayArgs>),
    /// Run jobs from the cluster's queue on NATS JetStream (`perstack run --nats` submits).
    Worker(Box<worker::WorkerArgs>),
    /// Publish an Expert of perstack.toml to the registry.
    Publish(publish::PublishArgs),
    /// Remove an Expert version from the registry.
    Unpublish(publish::UnpublishArgs),
    /// Set the tags of an Expert version in the registry.
    Tag(publish::TagArgs),
    /// Change the status of an Expert version in the registry.
    Status(publish::StatusArgs),
}

/// The `perstack` command line, from the process arguments to its exit code: parses the
/// arguments (clap prints usage errors and exits 2 itself), sends diagnostics to stderr (and,
/// with the `otel` feature, spans to an OTLP collector), runs the command on a multi-thread
/// tokio runtime and returns 0, 1 or 2 as described in the module doc. The binary's `main` is
/// this one call; it is public for that alone.
pub fn run() -> ExitCode {
    // The sandbox's trampoline (`perstack sandbox-exec`, hidden) enters namespaces, which needs
    // a single-threaded process: it runs before the runtime starts.
    if let Some(code) = crate::sandbox::dispatch() {
        return code;
    }
    let cli = Cli::parse();
    let telemetry = match &cli.command {
        // The terminal is the screen: diagnostics go to a log file.
        Command::Start(a) => match start::log_file() {
            Ok(file) => diagnostics::init_file(a.verbose, file),
            Err(e) => {
                eprintln!("perstack: cannot open {}: {e}", start::LOG_FILE);
                return ExitCode::from(2);
            }
        },
        Command::Run(a) => diagnostics::init(a.verbose),
        _ => diagnostics::init(false),
    };
    let runtime = match runtime_for(&cli.command) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("perstack: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(main(cli));
    // Dropping the runtime drops what its tasks still hold (the job's span among them), so
    // the export sees every span closed before it sends the last batch.
    drop(runtime);
    telemetry.finish();
    ExitCode::from(code)
}

/// The tokio runtime a command runs on. `perstack run` runs one job on a current-thread
/// runtime: its actors take turns on the main thread (file work still goes to tokio's blocking
/// pool), which saves the worker threads' stacks, allocator heaps and wake-ups (target T1,
/// README Performance) and is no slower for one job. The other commands (`start`, `worker`,
/// ...) keep a worker thread per core.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match command {
        Command::Run(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// Run the parsed command; returns the process exit code.
async fn main(cli: Cli) -> u8 {
    match cli.command {
        Command::Run(args) => run::execute(*args).await,
        Command::Start(args) => start::execute(*args).await,
        Command::Log(args) => log::execute(*args).await,
        Command::Base(args) => base::execute(args).await,
        Command::Install(args) => install::execute(args).await,
        Command::Worker(args) => worker::execute(*args).await,
        Command::Publish(args) => publish::publish(args).await,
        Command::Unpublish(args) => publish::unpublish(args).await,
        Command::Tag(args) => publish::tag(args).await,
        Command::Status(args) => publish::status(args).await,
        Command::Replay(args) => replay::execute(*args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain `perstack run` is one job: one runtime thread (target T1); a worker that
    /// runs many jobs keeps a thread per core.
    #[test]
    fn run_gets_a_current_thread_runtime_and_worker_a_multi_thread_one() {
        let run = Cli::parse_from(["perstack", "run", "coordinator", "hello"]);
        let runtime = runtime_for(&run.command).unwrap();
        assert_eq!(
            runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        assert_eq!(runtime.metrics().num_workers(), 1);

        let worker = Cli::parse_from(["perstack", "worker", "--nats", "nats://127.0.0.1:4222"]);
        let runtime = runtime_for(&worker.command).unwrap();
        assert_eq!(
            runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
    }
}
