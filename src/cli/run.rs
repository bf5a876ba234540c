//! `perstack run <expertKey> <query>`: load the configuration, build the engine on stdout and
//! the filesystem store, run one job, and map its end to an exit code. SIGINT and SIGTERM
//! cancel the job: every run ends with a terminal event and its checkpoint, then the process
//! exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::config::defaults;
use crate::config::{self, PerstackConfig, ProviderName};
use crate::engine::{
    ContinueInput, ContinueRequest, Engine, EngineBuilder, EngineError, JobHandle, JobRequest,
    RunOverrides, Settings, WithModel,
};
use crate::llm::LanguageModel;
use crate::sandbox::Isolation;
use crate::schema::{JobStatus, ReasoningBudget};
use crate::storage::FsStorage;

/// Options of `perstack run` (Perstack's names).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The Expert to run: a key of perstack.toml, or a registry key (`@org/name`,
    /// `@org/name@1.2.3`, `@org/name@tag`).
    #[arg(value_name = "expertKey")]
    pub expert_key: String,
    /// The query.
    #[arg(value_name = "query")]
    pub query: String,
    /// Path to perstack.toml (default: the nearest one walking up from the current directory).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Provider: anthropic, google, openai, ollama, azure-openai, amazon-bedrock, google-vertex,
    /// deepseek, or scripted (plays turns from a script file).
    #[arg(long)]
    pub provider: Option<String>,
    /// Model id (default claude-sonnet-4-5).
    #[arg(long)]
    pub model: Option<String>,
    /// Job-wide step limit (default 100).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// Consecutive generation retries (default 5).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Per-generation timeout in milliseconds (default 300000).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// none, minimal, low, medium, high, or a token count (default low).
    #[arg(long)]
    pub reasoning_budget: Option<ReasoningBudget>,
    /// Job id to use instead of a generated one.
    #[arg(long)]
    pub job_id: Option<String>,
    /// dotenv files to load (repeatable; default .env and .env.local).
    #[arg(long = "env-path")]
    pub env_path: Vec<String>,
    /// Runtime: `docker` (the default) confines every skill process in the native sandbox;
    /// `local` runs them with your full rights.
    #[arg(long)]
    pub runtime: Option<String>,
    /// Script file for the scripted provider (default: `[provider.setting] script`).
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// More diagnostics on stderr.
    #[arg(long)]
    pub verbose: bool,
    /// Continue the most recent job with a new run.
    #[arg(long = "continue")]
    pub continue_latest: bool,
    /// Continue the given job from its latest checkpoint.
    #[arg(long, value_name = "jobId")]
    pub continue_job: Option<String>,
    /// Continue from this coordinator checkpoint (requires --continue-job).
    #[arg(long, value_name = "checkpointId")]
    pub resume_from: Option<String>,
    /// Treat the query as the answer to the pending interactive tool call.
    #[arg(short = 'i', long = "interactive-tool-call-result")]
    pub interactive: bool,
    /// Run on the cluster: submit the job to NATS and print its events as a local run would.
    #[command(flatten)]
    pub nats: crate::cluster::NatsOptions,
    /// With --nats: print the job id and return at once.
    #[arg(long, requires = "url")]
    pub detach: bool,
    /// With --nats: where the job's delegated runs go: `local` (its parent's worker) or
    /// `cluster` (any worker; the parent resumes wherever the last child's result lands).
    /// Without it, the worker's `--placement` decides.
    #[arg(long, value_enum, requires = "url")]
    pub placement: Option<crate::cluster::Placement>,
    /// Run only registry Experts pinned in perstack.lock (`perstack install` pins them).
    #[arg(long)]
    pub locked: bool,
}

/// Run and return the exit code.
pub(super) async fn execute(args: RunArgs) -> u8 {
    if args.nats.is_set() {
        return super::submit::execute(args).await;
    }
    match run(args).await {
        Ok(status) => match status {
            JobStatus::Completed | JobStatus::StoppedByInteractiveTool => 0,
            _ => 1,
        },
        Err(e) => {
            eprintln!("perstack: {e}");
            e.exit_code()
        }
    }
}

async fn run(args: RunArgs) -> Result<JobStatus, EngineError> {
    let prepared = prepare(&args).await?;
    // Stdout through a descriptor of its own, so that a pipe gets the engine's wider buffer;
    // a stdout that cannot be duplicated (closed) is written as before.
    let builder = match std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned() {
        Ok(stdout) => prepared.builder.fd_sink(stdout),
        Err(_) => prepared.builder.blocking_sink(std::io::stdout()),
    };
    let engine = builder.build();
    let handle = match launch(&engine, args, None).await {
        Ok(handle) => handle,
        Err(e) => {
            // What the failed start published reaches stdout before the process ends.
            engine.shutdown().await;
            return Err(e);
        }
    };
    let cancel = handle.cancel_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::warn!("signal received: cancelling the job");
        cancel.cancel();
    });
    let outcome = handle.wait().await;
    engine.shutdown().await;
    Ok(outcome?.job.status)
}

/// What `run` and `start` build from the options before a job starts.
pub(super) struct Prepared {
    /// The engine on the filesystem store of the current directory, without a sink yet.
    pub builder: EngineBuilder<WithModel>,
    /// The loaded perstack.toml.
    pub config: PerstackConfig,
    /// The provider the runs call.
    pub provider: ProviderName,
}

/// Check the options, load the configuration and environment, and build the engine's parts.
pub(super) async fn prepare(args: &RunArgs) -> Result<Prepared, EngineError> {
    check_continue_options(args)?;
    let cwd = std::env::current_dir()
        .map_err(|e| EngineError::Usage(format!("cannot read the current directory: {e}")))?;
    let path = config::discover(args.config.as_deref(), &cwd)?;
    let mut cfg = config::load(&path)?;
    let isolation = isolation(args.runtime.as_deref(), cfg.runtime)?;
    if isolation == Isolation::Sandboxed {
        crate::sandbox::check_available()?;
    }
    let (env, lockfile) = resolve_registry(args, &mut cfg, &path, &cwd).await?;
    if cfg.experts.contains_key(&args.expert_key) {
        cfg.check_runnable(&args.expert_key)?;
    }
    let provider = provider_name(args, &cfg)?;
    let model = build_model(provider, args, &cfg, &env)?;

    let mut settings = Settings::resolve(&cfg, &overrides(args, provider));
    settings.workspace = cwd.clone();
    settings.tool_timeout =
        crate::skill::tool_timeout(&env).map_err(|e| EngineError::Usage(e.to_string()))?;
    settings.env = env;
    settings.isolation = isolation;
    settings.config_dir = path.parent().map(std::path::Path::to_path_buf);
    settings.lockfile = lockfile;

    let builder = Engine::builder()
        .settings(settings)
        .model(model)
        .storage(Arc::new(FsStorage::new(cwd.join("perstack"))));
    Ok(Prepared {
        builder,
        config: cfg,
        provider,
    })
}

/// How `--continue`, `--continue-job`, `--resume-from` and `-i` may be combined (locally and
/// with `--nats`).
pub(super) fn check_continue_options(args: &RunArgs) -> Result<(), EngineError> {
    if args.resume_from.is_some() && args.continue_job.is_none() {
        return Err(EngineError::Usage(
            "--resume-from requires --continue-job".into(),
        ));
    }
    if args.interactive && args.continue_job.is_none() && !args.continue_latest {
        return Err(EngineError::Usage(
            "-i answers a stopped job: use it with --continue or --continue-job".into(),
        ));
    }
    Ok(())
}

/// Start the job the options ask for on `engine`, or continue a stored one (`--continue`,
/// `--continue-job`, `-i`); `subscribe` delivers its events to the handle.
pub(super) async fn launch(
    engine: &Engine,
    args: RunArgs,
    subscribe: Option<usize>,
) -> Result<JobHandle, EngineError> {
    if args.continue_latest || args.continue_job.is_some() {
        let input = if args.interactive {
            ContinueInput::Answer(args.query)
        } else {
            ContinueInput::Query(args.query)
        };
        engine
            .continue_job(ContinueRequest {
                job_id: args.continue_job,
                expert_key: args.expert_key,
                resume_from: args.resume_from,
                input,
                subscribe,
            })
            .await
    } else {
        let mut request = JobRequest::new(args.expert_key, args.query);
        if let Some(id) = args.job_id {
            request = request.job_id(id);
        }
        if let Some(buffer) = subscribe {
            request = request.subscribe();
            request.buffer = buffer;
        }
        engine.start(request).await
    }
}

/// The run's environment (the process's, overlaid with `--env-path` or `envPath` or the
/// default dotenv files) and lockfile; with them, the registry Experts reachable from the
/// Expert to run become ordinary definitions of `cfg` (pinned by the lockfile, all pinned with
/// `--locked`) before anything else looks at it.
pub(super) async fn resolve_registry(
    args: &RunArgs,
    cfg: &mut PerstackConfig,
    path: &std::path::Path,
    cwd: &std::path::Path,
) -> Result<
    (
        std::collections::BTreeMap<String, String>,
        Option<Arc<crate::config::lockfile::Lockfile>>,
    ),
    EngineError,
> {
    let env_paths: Vec<String> = if !args.env_path.is_empty() {
        args.env_path.clone()
    } else {
        cfg.env_path.clone().unwrap_or_else(|| {
            config::DEFAULT_ENV_PATHS
                .iter()
                .map(|s| (*s).to_string())
                .collect()
        })
    };
    let env = config::load_env(cwd, &env_paths, std::env::vars())?;
    let lockfile = match crate::config::lockfile::Lockfile::find(path) {
        Some(lock) => Some(Arc::new(
            crate::config::lockfile::Lockfile::load(&lock)
                .map_err(|e| EngineError::Usage(e.to_string()))?,
        )),
        None => None,
    };
    // `start` without an Expert key resolves none until one is picked.
    let keys: &[String] = if args.expert_key.is_empty() {
        &[]
    } else {
        std::slice::from_ref(&args.expert_key)
    };
    crate::registry::resolve_into(cfg, &env, keys, lockfile.as_deref(), args.locked).await?;
    Ok((env, lockfile))
}

/// The command line's settings over perstack.toml's.
pub(super) fn overrides(args: &RunArgs, provider: ProviderName) -> RunOverrides {
    RunOverrides {
        model: args.model.clone(),
        provider: Some(provider),
        reasoning_budget: args.reasoning_budget,
        max_steps: args.max_steps,
        max_retries: args.max_retries,
        timeout: args.timeout.map(Duration::from_millis),
    }
}

/// The isolation a run asks for: `--runtime`, else `runtime` in perstack.toml, else the
/// default. `docker` and no runtime mean the sandbox (Perstack's default is a container),
/// `local` means none; the agent-CLI runtimes are refused on the command line and fall back to
/// the sandbox (with a warning) from perstack.toml.
pub(super) fn isolation(
    flag: Option<&str>,
    configured: Option<config::Runtime>,
) -> Result<Isolation, EngineError> {
    let runtime = match flag {
        Some(name) => match name.parse::<config::Runtime>() {
            Ok(r @ (config::Runtime::Local | config::Runtime::Docker)) => Some(r),
            _ => {
                return Err(EngineError::Usage(format!(
                    "runtime \"{name}\" is not supported by this engine; use --runtime docker \
                     (sandboxed, the default) or --runtime local"
                )));
            }
        },
        None => configured,
    };
    if let Some(other) =
        runtime.filter(|r| !matches!(r, config::Runtime::Local | config::Runtime::Docker))
    {
        tracing::warn!("perstack.toml asks for runtime \"{other}\"; running in the native sandbox");
    }
    Ok(Isolation::for_runtime(runtime))
}

pub(super) fn provider_name(
    args: &RunArgs,
    cfg: &PerstackConfig,
) -> Result<ProviderName, EngineError> {
    match &args.provider {
        Some(p) => p
            .parse::<ProviderName>()
            .map_err(|e| EngineError::Usage(e.to_string())),
        None => Ok(cfg
            .provider
            .as_ref()
            .map_or(defaults::PROVIDER, |p| p.provider_name)),
    }
}

fn build_model(
    provider: ProviderName,
    args: &RunArgs,
    cfg: &PerstackConfig,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Arc<dyn LanguageModel>, EngineError> {
    // `[provider.setting]` belongs to the provider named next to it.
    let table = cfg
        .provider
        .as_ref()
        .filter(|p| p.provider_name == provider);
    let empty = serde_json::Map::new();
    let setting = table.map_or(&empty, |p| &p.setting);
    let script = args.script.clone().or_else(|| {
        table
            .and_then(|p| p.setting_str("script"))
            .map(|s| cfg.resolve_relative(s))
    });
    Ok(crate::llm::select::provider(
        provider, setting, env, script,
    )?)
}

pub(super) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
