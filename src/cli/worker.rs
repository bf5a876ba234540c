//! `perstack worker --nats <url>`: run jobs from the cluster's queue (see `crate::cluster`)
//! until SIGTERM or SIGINT, which drains it: no new jobs, running ones finish; those still
//! running after `--drain-timeout-ms` are handed back at their next step boundary and taken
//! over by another worker at once. A second signal leaves at once; the jobs still running come
//! back to other workers after one lease.
//!
//! A worker may start before the cluster's JetStream is ready (a server still starting or
//! restarting, a cluster electing its leader): it tries again for up to `--ready-timeout-ms`
//! before it gives up with exit code 1.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::cluster::NatsOptions;
use crate::cluster::worker::{Models, WorkerConfig, serve};
use crate::config;
use crate::storage::{JetStreamConfig, JetStreamStorage, StoreError};

/// Options of `perstack worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsOptions,
    /// perstack.toml naming the provider and its settings (default: the nearest one walking
    /// up from the current directory, if any). The Experts come with each job.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Each job's workspace is <work-dir>/jobs/<jobId> (jobs, checkpoints and events are
    /// stored on JetStream, shared by every worker).
    #[arg(long, default_value = "perstack-work")]
    pub work_dir: PathBuf,
    /// A job whose worker sends no heartbeat for this long (ms, at least 1000; whole seconds)
    /// goes to another worker: the job's lease in the store and the queue's ack wait.
    #[arg(long, env = "PERSTACK_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,
    /// On SIGTERM, how long (ms) running jobs may go on before they are handed back to the
    /// queue at their next step boundary (another worker takes them over at once); after as
    /// long again, at once (their steps in flight are then repeated).
    #[arg(long, env = "PERSTACK_DRAIN_TIMEOUT_MS", default_value_t = 20_000)]
    pub drain_timeout_ms: u64,
    /// At start, how long (ms) to keep trying to set up the cluster's streams and buckets
    /// while JetStream is not ready (unreachable, disabled, no leader yet) before giving up.
    #[arg(long, env = "PERSTACK_READY_TIMEOUT_MS", default_value_t = 30_000)]
    pub ready_timeout_ms: u64,
    /// Script file for the scripted provider.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Where delegated runs go for jobs submitted without `--placement`: `local` (the
    /// parent's worker) or `cluster` (any worker). The submitter's choice wins.
    #[arg(long, value_enum, default_value = "local")]
    pub placement: crate::cluster::Placement,
    /// dotenv files to load (repeatable; default .env and .env.local).
    #[arg(long = "env-path")]
    pub env_path: Vec<String>,
}

/// Run the worker; returns the exit code.
pub(super) async fn execute(args: WorkerArgs) -> u8 {
    match run(args).await {
        Ok(()) => 0,
        Err((code, message)) => {
            eprintln!("perstack: {message}");
            code
        }
    }
}

/// Sets up the cluster's streams and buckets, trying again while the failure is one that
/// passes ([`StoreError::is_retryable`]: JetStream not ready yet) for up to `within`; waits
/// double from 100 ms to 2 s, each announced on stderr.
async fn wait_until_ready(storage: &JetStreamStorage, within: Duration) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut wait = Duration::from_millis(100);
    loop {
        match storage.ensure_ready().await {
            Err(e) if e.is_retryable() && tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, "JetStream is not ready; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}

async fn run(args: WorkerArgs) -> Result<(), (u8, String)> {
    let usage = |e: &dyn std::fmt::Display| (2, e.to_string());
    let cwd = std::env::current_dir().map_err(|e| usage(&e))?;
    let config = match config::discover(args.config.as_deref(), &cwd) {
        Ok(path) => Some(config::load(&path).map_err(|e| (e.exit_code(), e.to_string()))?),
        Err(e) if args.config.is_some() => return Err((e.exit_code(), e.to_string())),
        Err(_) => None,
    };
    let env_paths: Vec<String> = if args.env_path.is_empty() {
        config::DEFAULT_ENV_PATHS
            .iter()
            .map(|s| (*s).to_string())
            .collect()
    } else {
        args.env_path.clone()
    };
    let env = config::load_env(&cwd, &env_paths, std::env::vars())
        .map_err(|e| (e.exit_code(), e.to_string()))?;
    let tool_timeout = crate::skill::tool_timeout(&env).map_err(|e| usage(&e))?;
    let work_dir = if args.work_dir.is_absolute() {
        args.work_dir.clone()
    } else {
        cwd.join(&args.work_dir)
    };
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| (1, format!("cannot create {}: {e}", work_dir.display())))?;
    let sandbox = crate::sandbox::check_available().map_err(|e| e.to_string());
    if let Err(why) = &sandbox {
        tracing::warn!(%why, "this worker cannot sandbox: it refuses jobs that need it");
    }
    let client = args
        .nats
        .connect("perstack-worker")
        .await
        .map_err(|e| (2, e.to_string()))?;
    let lease = Duration::from_millis(args.lease_ms.max(1000));
    let storage = JetStreamStorage::new(
        client.clone(),
        JetStreamConfig::default().lease(lease, lease / 3),
    );
    wait_until_ready(&storage, Duration::from_millis(args.ready_timeout_ms))
        .await
        .map_err(|e| (1, e.to_string()))?;
    let config = WorkerConfig {
        name: crate::storage::holder_description(),
        concurrency: args.concurrency,
        lease,
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        models: Models {
            config,
            script: args.script.clone(),
        },
        env,
        tool_timeout,
        storage: Arc::new(storage),
        work_dir,
        sandbox,
        placement: args.placement,
    };
    let drain = CancellationToken::new();
    let leave = CancellationToken::new();
    {
        let (drain, leave) = (drain.clone(), leave.clone());
        tokio::spawn(async move {
            super::run::wait_for_signal().await;
            eprintln!(
                "perstack: draining (no new jobs; running ones finish, or are handed back after the drain timeout)"
            );
            drain.cancel();
            super::run::wait_for_signal().await;
            leave.cancel();
        });
    }
    serve(client, config, drain, leave)
        .await
        .map_err(|e| (1, e.to_string()))
}
