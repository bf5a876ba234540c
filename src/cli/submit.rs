//! `perstack run --nats <url> <expertKey> <query>`: submit the job to the cluster and print its
//! events from the job's output subject exactly as a local run prints them, ending with the
//! same exit code. `--detach` prints the job id and returns. SIGINT / SIGTERM cancel the job on
//! whichever worker holds it (its end still arrives and is printed); a second signal leaves.
//!
//! `--continue`, `--continue-job <id>` (with `--resume-from <checkpoint>`) and `-i` continue a
//! job stored in the cluster: the job and checkpoint are looked up in the cluster's store
//! (unknown: exit 2 before anything is submitted), and what is printed is the continuation's
//! events and its end only, as a local `run --continue-job` prints.
//!
//! The configuration is resolved here, as for a local run (Experts, model, limits, runtime);
//! the provider's key and the skills' environment are the worker's.

use tokio::io::AsyncWriteExt;

use super::run::{RunArgs, isolation, overrides, provider_name, wait_for_signal};
use crate::cluster::output::Record;
use crate::cluster::{Client, Invocation};
use crate::config;
use crate::engine::{ContinueInput, ContinueRequest, EngineError, Settings};

/// Submit, follow, and return the exit code.
pub(super) async fn execute(args: RunArgs) -> u8 {
    match run(args).await {
        Ok(code) => code,
        Err(Failed::Engine(e)) => {
            eprintln!("perstack: {e}");
            e.exit_code()
        }
        Err(Failed::Cluster(e)) => {
            eprintln!("perstack: {e}");
            e.exit_code()
        }
    }
}

enum Failed {
    Engine(EngineError),
    Cluster(crate::cluster::ClusterError),
}

impl From<EngineError> for Failed {
    fn from(e: EngineError) -> Self {
        Failed::Engine(e)
    }
}

impl From<crate::cluster::ClusterError> for Failed {
    fn from(e: crate::cluster::ClusterError) -> Self {
        Failed::Cluster(e)
    }
}

impl From<config::ConfigError> for Failed {
    fn from(e: config::ConfigError) -> Self {
        Failed::Engine(e.into())
    }
}

async fn run(args: RunArgs) -> Result<u8, Failed> {
    super::run::check_continue_options(&args)?;
    let cwd = std::env::current_dir()
        .map_err(|e| EngineError::Usage(format!("cannot read the current directory: {e}")))?;
    let path = config::discover(args.config.as_deref(), &cwd)?;
    let mut cfg = config::load(&path)?;
    // Registry Experts travel with the job as ordinary definitions, resolved (and checked
    // against perstack.lock) here; the workers never ask the registry.
    super::run::resolve_registry(&args, &mut cfg, &path, &cwd).await?;
    if !cfg.experts.contains_key(&args.expert_key) {
        let hint = config::did_you_mean(&args.expert_key, cfg.experts.keys().map(String::as_str))
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        return Err(EngineError::UnknownExpert {
            key: args.expert_key.clone(),
            hint,
        }
        .into());
    }
    cfg.check_runnable(&args.expert_key)?;
    let provider = provider_name(&args, &cfg)?;
    let mut settings = Settings::resolve(&cfg, &overrides(&args, provider));
    settings.isolation = isolation(args.runtime.as_deref(), cfg.runtime)?;

    let mut client = Client::connect(&args.nats).await?;
    if let Some(placement) = args.placement {
        client = client.with_placement(placement);
    }
    let invocation = if args.continue_latest || args.continue_job.is_some() {
        let input = if args.interactive {
            ContinueInput::Answer(args.query.clone())
        } else {
            ContinueInput::Query(args.query.clone())
        };
        let request = ContinueRequest {
            job_id: args.continue_job.clone(),
            expert_key: args.expert_key.clone(),
            resume_from: args.resume_from.clone(),
            input,
            subscribe: None,
        };
        client.continue_job(&settings, request).await?
    } else {
        let job_id = client
            .submit(
                &settings,
                &args.expert_key,
                &args.query,
                args.job_id.clone(),
            )
            .await?;
        Invocation::from(&job_id)
    };
    let job_id = invocation.job_id.clone();
    if args.detach {
        println!("{job_id}");
        return Ok(0);
    }
    let mut followed = client.follow(&invocation).await?;
    {
        let (client, invocation) = (client.clone(), invocation.clone());
        tokio::spawn(async move {
            wait_for_signal().await;
            eprintln!(
                "perstack: cancelling job {} (if it is still queued, it ends when a worker takes it, without running)",
                invocation.job_id
            );
            if let Err(e) = client.cancel(&invocation).await {
                eprintln!("perstack: {e}");
            }
            wait_for_signal().await;
            std::process::exit(130);
        });
    }
    let mut stdout = tokio::io::stdout();
    loop {
        match followed.next_record().await? {
            Some(Record::Event { line, .. }) => {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(&line);
                buf.push(b'\n');
                if stdout.write_all(&buf).await.is_err() || stdout.flush().await.is_err() {
                    // The reader went away (`| head`): cancel, as a local run does.
                    let _ = client.cancel(&invocation).await;
                    return Ok(1);
                }
            }
            Some(Record::Takeover { worker }) => {
                eprintln!(
                    "perstack: job {job_id} was taken over by {worker}; its step in flight is repeated"
                );
            }
            Some(Record::End(end)) => {
                if let Some(reason) = &end.reason {
                    eprintln!("perstack: job {job_id} was refused: {reason}");
                }
                return Ok(end.exit_code);
            }
            None => return Ok(1),
        }
    }
}
