//! `perstack log`: view the stored history of a job (its events, a checkpoint and its
//! messages, a summary), as a human-readable listing or as JSON.
//!
//! Reads the file-system store at `PERSTACK_STORAGE_PATH` (relative paths are taken from the
//! current directory), or `<cwd>/perstack`; with `--nats <url>` (or `PERSTACK_NATS_URL`), the
//! cluster's JetStream store instead. Without `--job`, `--run` or `--checkpoint` it shows
//! the latest job. Nothing found prints "No data found" and exits 0, as in Perstack; a stored
//! file that does not parse is an error naming the file (exit 1), never skipped; a malformed
//! `--step` or `--filter` expression, or an id that cannot be a path segment, exits 2.
//!
//! Where this differs from Perstack's command, on purpose:
//! - `--run` or `--checkpoint` without `--job` look in the job that holds them, not only in the
//!   latest job;
//! - `--errors`, `--tools` and `--delegations` together select the union of their event types;
//! - `--type` takes a comma-separated list;
//! - `--pretty` implies `--json`; `--summary` shows every matching event's counts unless
//!   `--take` is given, and replaces the event lines in the listing;
//! - a broken pipe (`perstack log | head`) ends the output quietly.

mod data;
mod filter;
mod format;
mod text;
mod verify;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;

use crate::storage::{FsStorage, JetStreamConfig, JetStreamStorage, StoreError};
use filter::{
    DELEGATION_TYPES, ERROR_TYPES, ExprError, FieldFilter, Selection, StepFilter, TOOL_TYPES,
};

/// Events shown when `--take` is not given.
const DEFAULT_TAKE: usize = 100;

/// Options of `perstack log` (Perstack's names).
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Show events for a specific job (default: the latest job).
    #[arg(long, value_name = "jobId")]
    pub job: Option<String>,
    /// Show events for a specific run.
    #[arg(long, value_name = "runId")]
    pub run: Option<String>,
    /// Show checkpoint details, and the events of its run up to its step.
    #[arg(long, value_name = "checkpointId")]
    pub checkpoint: Option<String>,
    /// Filter by step number: 5, >5, >=5, <5, <=5 or 1-10 (inclusive).
    #[arg(long, value_name = "step", allow_hyphen_values = true)]
    pub step: Option<String>,
    /// Filter by event type, e.g. callTools (comma-separated for several).
    #[arg(long = "type", value_name = "eventType")]
    pub event_type: Option<String>,
    /// Show error-related events only (stopRunByError, retry).
    #[arg(long)]
    pub errors: bool,
    /// Show tool call events only (callTools, resolveToolResults, callInteractiveTool).
    #[arg(long)]
    pub tools: bool,
    /// Show delegation events only (callDelegate, stopRunByDelegate).
    #[arg(long)]
    pub delegations: bool,
    /// Filter expression `.<path> <op> <value>`, ops == != > >= < <=, `[]` = any element,
    /// e.g. '.toolCalls[].skillName == "@perstack/base"'.
    #[arg(long, value_name = "expression", allow_hyphen_values = true)]
    pub filter: Option<String>,
    /// Output as JSON: { job, events, summary: { totalEvents, errorCount, ... } }.
    #[arg(long)]
    pub json: bool,
    /// Pretty-print JSON output (implies --json).
    #[arg(long)]
    pub pretty: bool,
    /// Show full event details (the event's JSON under each line).
    #[arg(long)]
    pub verbose: bool,
    /// Number of events to display (default: 100, use 0 for all; all with --summary).
    #[arg(long, value_name = "n")]
    pub take: Option<usize>,
    /// Number of matching events to skip.
    #[arg(long, value_name = "n", default_value_t = 0)]
    pub offset: usize,
    /// Include N events before and after each match.
    #[arg(long, value_name = "n")]
    pub context: Option<usize>,
    /// Show the message history of the checkpoint (with --checkpoint).
    #[arg(long)]
    pub messages: bool,
    /// Show a summarized view: events per type, steps, usage, duration, status.
    #[arg(long)]
    pub summary: bool,
    /// Check jobs (all, or --job) against their signed chains, or check an exported archive;
    /// names every changed, removed, added or reordered file. Exit 1 on tampering.
    #[arg(long, value_name = "archive", num_args = 0..=1)]
    pub verify: Option<Option<PathBuf>>,
    /// Write the job's (--job) self-contained audit archive to this file.
    #[arg(long, value_name = "file", requires = "job", conflicts_with = "verify")]
    pub export: Option<PathBuf>,
    /// With --verify: the public key (hex) the chain must be signed with.
    #[arg(long, value_name = "hex", requires = "verify")]
    pub key: Option<String>,
    /// Read the cluster's store on NATS JetStream instead of the local one.
    #[command(flatten)]
    pub nats: crate::cluster::NatsOptions,
}

/// Why `perstack log` failed.
#[derive(Debug, thiserror::Error)]
enum LogError {
    #[error(transparent)]
    Expr(#[from] ExprError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot render the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error(transparent)]
    Connect(#[from] crate::cluster::ConnectError),
}

impl LogError {
    /// 2 for what the user typed (options, expressions, ids, an unreachable --nats server), 1
    /// for what is stored.
    fn exit_code(&self) -> u8 {
        match self {
            LogError::Expr(_)
            | LogError::Usage(_)
            | LogError::Store(StoreError::InvalidId { .. }) => 2,
            LogError::Store(_) | LogError::Json(_) | LogError::Stdout(_) => 1,
            LogError::Connect(_) => 2,
        }
    }
}

/// Run `perstack log` and return the exit code.
pub(super) async fn execute(args: LogArgs) -> u8 {
    if args.nats.is_set() && (args.verify.is_some() || args.export.is_some()) {
        eprintln!(
            "perstack: --verify and --export read the local store's signed chain; they are not \
             available with --nats (a cluster job's history is in its worker's JetStream store)"
        );
        return 2;
    }
    if let Some(result) = verify::execute(&args).await {
        return result.unwrap_or_else(|e| {
            eprintln!("perstack: {e}");
            e.exit_code()
        });
    }
    match log(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("perstack: {e}");
            e.exit_code()
        }
    }
}

async fn log(args: LogArgs) -> Result<(), LogError> {
    let selection = selection(&args)?;
    if args.messages && args.checkpoint.is_none() {
        return Err(LogError::Usage(
            "--messages shows a checkpoint's message history: add --checkpoint <checkpointId>"
                .into(),
        ));
    }
    let json = args.json || args.pretty;
    let request = data::Request {
        job: args.job.as_deref(),
        run: args.run.as_deref(),
        checkpoint: args.checkpoint.as_deref(),
        checkpoints: args.job.is_some() && args.run.is_none() && args.checkpoint.is_none(),
    };
    let (storage, loaded) = if args.nats.is_set() {
        let client = args.nats.connect("perstack-log").await?;
        let store = JetStreamStorage::new(client, JetStreamConfig::default());
        let loaded = data::load(data::Source::Store(&store), request).await?;
        (args.nats.server_for_logs(), loaded)
    } else {
        let base = storage_path()?;
        let store = FsStorage::new(base.clone());
        let loaded = data::load(data::Source::Dir(&store), request).await?;
        (base.display().to_string(), loaded)
    };
    let Some(loaded) = loaded else {
        let mut text = String::from("No data found\n");
        if !json {
            text.push_str(&format!("Storage: {storage}\n"));
        }
        return emit(&text);
    };
    let selected = selection.apply(&loaded.events);
    let text = if json {
        format::json(&loaded, &selected, args.pretty)? + "\n"
    } else {
        let opts = format::Options {
            color: use_color(),
            verbose: args.verbose,
            messages: args.messages,
            summary: args.summary,
            mark_matches: selection.context > 0,
        };
        format::human(&loaded, &selected, opts, &storage)
    };
    emit(&text)
}

/// The filters and paging of the command line.
fn selection(args: &LogArgs) -> Result<Selection, LogError> {
    let step = args
        .step
        .as_deref()
        .map(str::parse::<StepFilter>)
        .transpose()?;
    let field = args
        .filter
        .as_deref()
        .map(str::parse::<FieldFilter>)
        .transpose()?;
    let types: Vec<String> = match &args.event_type {
        Some(t) => {
            let types: Vec<String> = t
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if types.is_empty() {
                return Err(LogError::Usage(
                    "--type needs an event type, e.g. --type callTools".into(),
                ));
            }
            types
        }
        None => Vec::new(),
    };
    let mut sets = Vec::new();
    for (on, set) in [
        (args.errors, ERROR_TYPES),
        (args.tools, TOOL_TYPES),
        (args.delegations, DELEGATION_TYPES),
    ] {
        if on {
            sets.extend_from_slice(set);
        }
    }
    let take = match args.take {
        Some(0) => None,
        Some(n) => Some(n),
        None if args.summary => None,
        None => Some(DEFAULT_TAKE),
    };
    Ok(Selection {
        step,
        types,
        sets,
        field,
        offset: args.offset,
        take,
        context: args.context.unwrap_or(0),
    })
}

/// `PERSTACK_STORAGE_PATH` (relative to the current directory), or `<cwd>/perstack`.
fn storage_path() -> Result<PathBuf, LogError> {
    let cwd = std::env::current_dir()
        .map_err(|e| LogError::Usage(format!("cannot read the current directory: {e}")))?;
    Ok(
        match std::env::var_os("PERSTACK_STORAGE_PATH").filter(|v| !v.is_empty()) {
            Some(path) => cwd.join(path),
            None => cwd.join("perstack"),
        },
    )
}

/// Colours only on a terminal, and not when `NO_COLOR` is set or `TERM=dumb`.
fn use_color() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Writes `text` to stdout; a closed pipe ends the output quietly.
fn emit(text: &str) -> Result<(), LogError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(LogError::Stdout(e)),
    }
}
