//! `perstack replay <jobId | events.jsonl>`: run a stored job (or Perstack's stdout recording)
//! again with its recorded model answers and tool results, and report the first place where
//! the replay differs from the recording (exit 1), or a short summary (exit 0). Usage errors
//! (an unknown job, an unreadable file, no Expert definitions) exit 2.
//!
//! The job is read from the file-system store `perstack log` reads (`PERSTACK_STORAGE_PATH`, or
//! `<cwd>/perstack`) and never written: the replay runs on a scratch in-memory store. With
//! `--tools live` the skills run for real, in a scratch copy of the workspace, sandboxed unless
//! `--runtime local` says otherwise. The replay itself is [`crate::replay`].

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::config;
use crate::engine::EngineError;
use crate::replay::{Recording, RecordingError, Report, ToolDiff, ToolMode};
use crate::sandbox::Isolation;
use crate::schema::{Event, id::is_safe_id};
use crate::storage::{FsStorage, Storage, StoreError};

/// Options of `perstack replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The job to replay (a job id in the store), or a Perstack stdout recording (a path to an
    /// `events.jsonl` file).
    #[arg(value_name = "jobId|events.jsonl")]
    pub target: String,
    /// perstack.toml with the Expert definitions, for recordings without a stored run setting
    /// (Perstack's). Default: the nearest one walking up from the current directory.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `playback` (default): answer every tool call with its recorded result; `live`: run the
    /// tools again in a scratch copy of the workspace and report results that differ.
    #[arg(long, value_enum, default_value_t = Tools::Playback)]
    pub tools: Tools,
    /// With `--tools live`: the workspace the job ran in (default: the current directory).
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// With `--tools live`: `docker` (default) runs skill processes in the native sandbox,
    /// `local` with your full rights.
    #[arg(long)]
    pub runtime: Option<String>,
}

/// How tools are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Tools {
    /// Recorded results.
    Playback,
    /// Re-executed.
    Live,
}

/// Why `perstack replay` could not replay.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ReplayError {
    /// 2 for what the user named (a job, a file, options, the configuration); the engine's
    /// own code otherwise.
    fn exit_code(&self) -> u8 {
        match self {
            ReplayError::Usage(_) | ReplayError::Recording(_) => 2,
            ReplayError::Config(e) => e.exit_code(),
            ReplayError::Store(e) => e.exit_code(),
            ReplayError::Engine(e) => e.exit_code(),
        }
    }
}

/// Run `perstack replay` and return the exit code.
pub(super) async fn execute(args: ReplayArgs) -> u8 {
    match replay(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("perstack: {e}");
            e.exit_code()
        }
    }
}

async fn replay(args: ReplayArgs) -> Result<u8, ReplayError> {
    let cwd = std::env::current_dir()
        .map_err(|e| ReplayError::Usage(format!("cannot read the current directory: {e}")))?;
    let rec = load(&args.target, &cwd).await?;
    let config_path = match &args.config {
        Some(p) => Some(config::discover(Some(p), &cwd)?),
        None if rec.setting.as_ref().is_some_and(|s| !s.experts.is_empty()) => None,
        None => config::discover(None, &cwd).ok(),
    };
    let cfg = config_path.as_deref().map(config::load).transpose()?;
    let mut settings = rec.settings(cfg.as_ref().map(|c| c.experts.clone()))?;
    let mode = match args.tools {
        Tools::Playback => ToolMode::Playback,
        Tools::Live => ToolMode::Live,
    };
    // Kept until the replay ends: the scratch workspace is removed on drop.
    let mut scratch = None;
    if mode == ToolMode::Live {
        let workspace = args.workspace.clone().unwrap_or_else(|| cwd.clone());
        let dir = Scratch::create()
            .map_err(|e| ReplayError::Usage(format!("cannot create a scratch workspace: {e}")))?;
        copy_workspace(&workspace, dir.path()).map_err(|e| {
            ReplayError::Usage(format!(
                "cannot copy the workspace {} to a scratch directory: {e}",
                workspace.display()
            ))
        })?;
        let isolation = super::run::isolation(args.runtime.as_deref(), None)?;
        if isolation == Isolation::Sandboxed {
            crate::sandbox::check_available().map_err(EngineError::from)?;
        }
        let env = config::load_env(
            &workspace,
            &config::DEFAULT_ENV_PATHS.map(str::to_owned),
            std::env::vars(),
        )?;
        settings.tool_timeout =
            crate::skill::tool_timeout(&env).map_err(|e| ReplayError::Usage(e.to_string()))?;
        settings.env = env;
        settings.isolation = isolation;
        settings.config_dir = config_path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        settings.base_skill_command = cfg
            .as_ref()
            .and_then(|c| c.perstack_base_skill_command.clone());
        settings.workspace = dir.path().to_path_buf();
        scratch = Some(dir);
    } else {
        settings.workspace = args.workspace.clone().unwrap_or_else(|| cwd.clone());
    }
    let report = crate::replay::replay(&rec, settings, mode).await?;
    drop(scratch);
    Ok(print(&rec, mode, &report))
}

/// The recording `target` names: an existing file is a stdout recording, anything else a job
/// id in the store.
async fn load(target: &str, cwd: &Path) -> Result<Recording, ReplayError> {
    let path = cwd.join(target);
    if path.is_file() || target.ends_with(".jsonl") {
        return Ok(Recording::from_jsonl(&path)?);
    }
    if !is_safe_id(target) {
        return Err(ReplayError::Usage(format!(
            "{target:?} is neither a file nor a job id"
        )));
    }
    let base = match std::env::var_os("PERSTACK_STORAGE_PATH").filter(|v| !v.is_empty()) {
        Some(p) => cwd.join(p),
        None => cwd.join("perstack"),
    };
    let runs_dir = base.join("jobs").join(target).join("runs");
    let runs = std::fs::read_dir(&runs_dir).map_err(|_| {
        ReplayError::Usage(format!(
            "no job {target} in {} (its runs directory cannot be read)",
            base.display()
        ))
    })?;
    let store = FsStorage::new(base.clone());
    let mut events: Vec<Event> = Vec::new();
    for run in runs.flatten() {
        let Some(run_id) = run.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if run.path().is_dir() && is_safe_id(&run_id) {
            events.extend(store.event_contents(target, &run_id, None).await?);
        }
    }
    // This engine numbers a job's events (`jobSeq`): that is their order, also within one
    // millisecond. Perstack's have no number: by time, each run's storage order kept (stable).
    if events.iter().all(|e| e.job_seq.is_some()) {
        events.sort_by_key(|e| e.job_seq);
    } else {
        events.sort_by_key(|e| e.timestamp);
    }
    let checkpoints = store.checkpoints_by_job(target).await?;
    let settings = store
        .all_run_settings()
        .await?
        .into_iter()
        .filter(|s| s.job_id == target)
        .collect();
    Ok(Recording::from_store(events, checkpoints, settings)?)
}

/// A scratch workspace under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("perstack-replay-{}", crate::schema::id::new_id()));
        std::fs::create_dir(&dir)?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copy `from` into `to`, leaving out the job store (`perstack/`) and symbolic links.
fn copy_workspace(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            if entry.file_name() == "perstack" && from.join("perstack").join("jobs").is_dir() {
                continue;
            }
            std::fs::create_dir_all(&target)?;
            copy_workspace(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Print the report; returns the exit code.
fn print(rec: &Recording, mode: ToolMode, report: &Report) -> u8 {
    let json = |v: &Option<Value>| match v {
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
        None => "(nothing)".to_owned(),
    };
    for d in &report.tool_diffs {
        print_tool_diff(d);
    }
    match &report.comparison {
        Err(d) => {
            let step = d.step.map(|s| format!(", step {s}")).unwrap_or_default();
            println!(
                "replay: job {} diverges in {}{step}: the {} differs",
                rec.job_id, d.run, d.what
            );
            println!("expected: {}", json(&d.expected));
            println!("replayed: {}", json(&d.replayed));
            1
        }
        Ok(same) => {
            let tools = match mode {
                ToolMode::Playback => "tools played back".to_owned(),
                ToolMode::Live => format!(
                    "tools re-executed, {} result(s) differ",
                    report.tool_diffs.len()
                ),
            };
            let cut = if same.unfinished > 0 {
                format!(
                    "; the recording ends mid-run in {} run(s) (a crash, or a job still running): compared up to its end",
                    same.unfinished
                )
            } else {
                String::new()
            };
            println!(
                "replay: job {}: {} runs, {} state events and {} stored checkpoints as recorded ({tools}){cut}",
                rec.job_id, same.runs, same.events, same.checkpoints
            );
            u8::from(!report.tool_diffs.is_empty())
        }
    }
}

fn print_tool_diff(d: &ToolDiff) {
    let show = |r: Option<&crate::schema::ToolResult>| match r {
        Some(r) => serde_json::to_string(&crate::replay::tool_result(r)).unwrap_or_default(),
        None => "(not recorded)".to_owned(),
    };
    let run = d.expected.as_ref().map_or_else(
        || format!("replayed run {}", d.caller.run_id),
        |(run, _)| format!("run {run}"),
    );
    println!(
        "replay: tool result differs in {run} (Expert \"{}\"), step {}, call {} ({}/{})",
        d.caller.expert_key, d.caller.step, d.call.id, d.call.skill_name, d.call.tool_name
    );
    println!("expected: {}", show(d.expected.as_ref().map(|(_, r)| r)));
    println!("live: {}", show(Some(&d.live)));
}
