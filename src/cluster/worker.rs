//! The worker: pulls job messages from the shared durable consumer, runs each on a local
//! [`Engine`](crate::engine::Engine) of its own (workspace `<work-dir>/jobs/<jobId>`, see
//! `job`), publishes every line the job prints to the job's output subject, and acks once the
//! job is terminal and its end record is acknowledged.
//!
//! What happens to a message:
//!
//! | case | what the worker does |
//! | --- | --- |
//! | refused by [`JobMessage::decode`], needs a sandbox it cannot give, needs an env var it lacks | dead letter with the reason, end record for followers, ack |
//! | its output already ends with the end record | ack |
//! | the job is stored and terminal (it ran before, the ack was lost); for a continuation, its own output subject holds its lines | the end record (after its worker had a chance to publish its last lines), ack: it never runs twice |
//! | a continuation whose output subject is empty (it has not run) | `continue_job` with its input (and checkpoint) under the job's claim, its lines on its own subject; while another invocation of the job holds the claim, it waits (next row) |
//! | another worker took the job over (its takeover record fences this one's output; the store refuses this one's writes) | the job stops, nothing more is written, the message is left to the new holder |
//! | the job is stored and running (its worker died) | takeover record, then `continue_job` whose first event is `jobTakenOver`: the recovery planner repeats only the step in flight |
//! | someone else holds the job's claim | nak with a delay of one lease (redelivered later) |
//! | a cancel of the invocation is stored (sent while it was queued) | started and cancelled at once: it ends as a local job cancelled before its first step |
//! | delivered [`MAX_DELIVER`](super::queue::MAX_DELIVER) times without an end | dead letter |
//! | the job places its children on the cluster and its coordinator stopped at `stopRunByDelegate` | the children's messages instead of the end record, ack (`delegated`, [`crate::cluster::delegate`]) |
//! | a child message (`perstack.delegations`) this worker placed, first two deliveries | nak: left to the other workers first |
//! | a child message | run it on an engine of its own unless its result is committed; commit; add it to the join; ack |
//! | a join message (`perstack.joins`) | import the results under the job's claim, print them, `continue_job`, then the end record (or the next placement) |
//!
//! While a job runs, the worker sends a progress ack every third of the lease, so a paused or
//! dead worker's job is redelivered one lease after its last heartbeat. SIGTERM drains: no new
//! message is pulled, running jobs finish. Those still running after the drain timeout are
//! handed back: each run stops at its next step boundary (after a second drain timeout, at
//! once, its step in flight then repeated), writing nothing more; the job stays `running` in
//! the store, its claim is released and its message nak'ed without delay, so another worker
//! takes it over now, not after a lease. A second signal leaves at once (the running jobs'
//! messages come back to other workers after one lease).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::delegate::{self, ChildMessage, JoinMessage};
use super::message::{JobMessage, Output, Placement, Rejection};
use super::output::{JobEnd, OutputError, Publisher};
use super::queue;
use crate::config::{PerstackConfig, ProviderName};
use crate::engine::EngineError;
use crate::llm::LanguageModel;
use crate::storage::{Storage, StoreError};

mod delegated;
mod drain;
mod how;
mod job;

use drain::{Running, drain_running};
use how::How;

/// Deliveries of a finished job's message during which a worker waits for the job's own
/// worker to publish its last lines before it writes the end record itself.
const GRACE_DELIVERIES: i64 = 3;

/// How long one pull waits for messages before the loop looks at the drain signal again.
const PULL_WAIT: Duration = Duration::from_secs(1);

/// Where a worker's jobs get their model: the provider a job names, with the worker's
/// `[provider.setting]` when its perstack.toml names the same provider, and the worker's
/// script file for the scripted provider. Built per job (the scripted provider counts turns
/// per model).
pub(crate) struct Models {
    /// The worker's configuration, if it has one.
    pub config: Option<PerstackConfig>,
    /// `--script`, else the configuration's script.
    pub script: Option<PathBuf>,
}

impl Models {
    fn build(
        &self,
        provider: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn LanguageModel>, String> {
        let name: ProviderName = provider.parse().map_err(|e| format!("{e}"))?;
        let table = self
            .config
            .as_ref()
            .and_then(|c| c.provider.as_ref())
            .filter(|p| p.provider_name == name);
        let empty = serde_json::Map::new();
        let setting = table.map_or(&empty, |p| &p.setting);
        let script = self.script.clone().or_else(|| {
            let cfg = self.config.as_ref()?;
            table
                .and_then(|p| p.setting_str("script"))
                .map(|s| cfg.resolve_relative(s))
        });
        crate::llm::select::provider(name, setting, env, script).map_err(|e| e.to_string())
    }
}

/// A worker's settings.
pub(crate) struct WorkerConfig {
    /// The worker's name in takeover records and logs (`pid <pid> on <host>`).
    pub name: String,
    /// Jobs run at once; the worker pulls no more than it has free slots for.
    pub concurrency: usize,
    /// Each job's workspace is `<work_dir>/jobs/<jobId>`.
    pub work_dir: PathBuf,
    /// The consumer's ack wait: a job whose worker sends no heartbeat for this long is
    /// redelivered. Heartbeats go every third of it.
    pub lease: Duration,
    /// How long a draining worker lets its running jobs go on before it hands them back at
    /// their next step boundary; once more that long and it hands them back at once.
    pub drain_timeout: Duration,
    /// The models.
    pub models: Models,
    /// The worker's environment (skills see what their `requiredEnv` names).
    pub env: BTreeMap<String, String>,
    /// Tool-call timeout.
    pub tool_timeout: Duration,
    /// Checkpoints, events, jobs; claims.
    pub storage: Arc<dyn Storage>,
    /// Whether this machine can sandbox, and why not.
    pub sandbox: Result<(), String>,
    /// Where delegated runs go for jobs whose message does not say (`--placement`).
    pub placement: Placement,
}

/// Why the worker stopped before draining.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// The streams or the consumer.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    /// The cancel subscription.
    #[error("cannot subscribe to cancellations: {0}")]
    Subscribe(String),
}

/// What became of one job attempt (besides success).
enum Failure {
    /// Refused for good.
    Refused(Rejection),
    /// Someone else holds the job: try later.
    Busy(String),
    /// Something that may pass (the store, the server).
    Transient(String),
    /// Another worker took the job over: this delivery is stale; nothing more is written
    /// and the message is left to the new holder.
    Fenced,
    /// This worker is shutting down and handed the job back (its claim released): the
    /// message goes back to the queue at once, for another worker to take the job over.
    HandedBack,
}

struct Worker {
    config: WorkerConfig,
    js: jetstream::Context,
    /// Each invocation running here, by its cancel subject (the cancel subscription looks
    /// invocations up here; one not here is not ours; a drain past its timeout hands each
    /// back).
    running: DashMap<String, Running>,
    /// Set once the drain timeout passed: a job that starts after that is handed back at once.
    handing_back: std::sync::atomic::AtomicBool,
}

/// Run the worker on `client` until `drain` is cancelled and every running job has ended, or
/// `leave` is cancelled (running jobs are left to be redelivered).
pub(crate) async fn serve(
    client: async_nats::Client,
    config: WorkerConfig,
    drain: CancellationToken,
    leave: CancellationToken,
) -> Result<(), WorkerError> {
    let js = jetstream::new(client.clone());
    let consumer = queue::consumer(&js, config.lease).await?;
    let mut cancels = client
        .subscribe(queue::CANCEL_ALL)
        .await
        .map_err(|e| WorkerError::Subscribe(e.to_string()))?;
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let worker = Arc::new(Worker {
        config,
        js,
        running: DashMap::new(),
        handing_back: std::sync::atomic::AtomicBool::new(false),
    });
    let listener = {
        let worker = worker.clone();
        tokio::spawn(async move {
            while let Some(m) = cancels.next().await {
                // The invocation itself, and the delegated runs of it running here
                // (`<subject>#<child>`, see `delegated`).
                let subject = m.subject.as_str();
                let children = format!("{subject}#");
                for entry in worker.running.iter() {
                    if entry.key() == subject || entry.key().starts_with(&children) {
                        tracing::info!(run = %entry.key(), "cancel requested");
                        entry.value().cancel.cancel();
                    }
                }
            }
        })
    };
    tracing::info!(
        worker = %worker.config.name,
        concurrency = worker.config.concurrency,
        "worker ready"
    );
    let mut tasks = JoinSet::new();
    tokio::select! {
        () = pull(&worker, &consumer, &slots, &mut tasks, &drain) => {}
        () = leave.cancelled() => {}
    }
    if !leave.is_cancelled() {
        tracing::info!(running = tasks.len(), "draining: no new jobs");
        drain_running(&worker, &mut tasks, &leave).await;
    }
    if !tasks.is_empty() {
        tracing::warn!(
            running = tasks.len(),
            "leaving with jobs running; other workers take them after one lease"
        );
    }
    tasks.abort_all();
    listener.abort();
    let _ = client.flush().await;
    Ok(())
}

/// Pull and start jobs until `drain`.
async fn pull(
    worker: &Arc<Worker>,
    consumer: &PullConsumer,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    drain: &CancellationToken,
) {
    loop {
        while tasks.try_join_next().is_some() {}
        let first = tokio::select! {
            () = drain.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_WAIT)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "pull failed; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(message) = batch.next().await {
            match message {
                Ok(message) => {
                    let Some(permit) = permits.pop() else { break };
                    let worker = worker.clone();
                    tasks.spawn(async move {
                        worker.handle(message).await;
                        drop(permit);
                    });
                }
                Err(e) => tracing::debug!(error = %e, "pull: no message"),
            }
        }
        if drain.is_cancelled() {
            return;
        }
    }
}

impl Worker {
    /// One delivery of one job, delegation or join message, to its ack, nak or dead letter.
    async fn handle(self: Arc<Self>, message: jetstream::Message) {
        let delivered = message.info().map_or(1, |i| i.delivered);
        let work = match Work::decode(message.subject.as_str(), &message.payload) {
            Ok(work) => work,
            Err((output, why)) => {
                self.dead_letter(&message, output.as_ref(), &why).await;
                return;
            }
        };
        let job = work.job().clone();
        if let Some(why) = self.refusal(&job) {
            self.dead_letter(&message, Some(&job.output()), &why).await;
            return;
        }
        if let Work::Child(child) = &work
            && child.placed_by == self.config.name
            && delivered <= 2
        {
            // Its parent's worker leaves it to the others first (they may be idle); it
            // runs it itself when it comes back again.
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
        let message = Arc::new(message);
        let heartbeat = {
            let message = message.clone();
            let every = self.config.lease / 3;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "heartbeat not sent");
                    }
                }
            })
        };
        let result = match &work {
            Work::Job(job) => self.run(job, delivered).await,
            Work::Child(child) => self.run_child(child, delivered).await,
            Work::Join(join) => self.join(join, delivered).await,
        };
        heartbeat.abort();
        let last = delivered >= queue::MAX_DELIVER;
        match result {
            Ok(()) => ack(&message).await,
            Err(Failure::Refused(why)) => {
                self.dead_letter(&message, Some(&job.output()), &why).await;
            }
            Err(Failure::Busy(_) | Failure::Transient(_)) if last => {
                self.dead_letter(
                    &message,
                    Some(&job.output()),
                    &Rejection::Exhausted(delivered),
                )
                .await;
            }
            Err(Failure::Busy(why)) => {
                tracing::info!(job = %job.job_id, %why, "job held elsewhere; retrying after one lease");
                let _ = message
                    .ack_with(AckKind::Nak(Some(self.config.lease)))
                    .await;
            }
            Err(Failure::HandedBack) => {
                tracing::info!(job = %job.job_id, "the job was handed back; another worker takes it over now");
                self.config.storage.settle_release(&job.job_id).await;
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
            Err(Failure::Fenced) => {
                tracing::warn!(job = %job.job_id, "the job was taken over by another worker; this one stopped it, writing nothing more");
            }
            Err(Failure::Transient(why)) => {
                tracing::warn!(job = %job.job_id, %why, "job attempt failed; it comes back");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
    }

    /// Why this worker will not run `job` at all, if it will not.
    fn refusal(&self, job: &JobMessage) -> Option<Rejection> {
        if job.options.sandboxed
            && let Err(why) = &self.config.sandbox
        {
            return Some(Rejection::Sandbox(why.clone()));
        }
        let missing: Vec<&str> = job
            .env_names
            .iter()
            .filter(|n| !self.config.env.contains_key(*n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Some(Rejection::Unrunnable(format!(
                "environment variable(s) {} not set on the worker",
                missing.join(", ")
            )));
        }
        None
    }

    /// Where `job`'s delegated runs go: as its message says, else this worker's default.
    fn placement(&self, job: &JobMessage) -> Placement {
        job.options.placement.unwrap_or(self.config.placement)
    }

    /// Send `message` to the dead-letter subject with `why`, tell the job's followers, ack.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        output: Option<&Output>,
        why: &Rejection,
    ) {
        let job_id = output.map(|o| o.job_id.as_str());
        tracing::warn!(job = job_id.unwrap_or("?"), reason = %why, "job refused: dead letter");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Perstack-Reason", why.to_string().as_str());
        if let Some(id) = job_id {
            headers.insert("Perstack-Job-Id", id);
        }
        let sent = match self
            .js
            .publish_with_headers(queue::DEAD_SUBJECT, headers, message.payload.clone())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::error!(error = %e, "dead letter not stored; the message comes back");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
        if let Some(output) = output {
            let told = match Publisher::open(self.js.clone(), output, 0).await {
                Ok((mut publisher, _)) => publisher.end(&JobEnd::refused(why)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = told {
                tracing::warn!(error = %e, "followers not told of the refusal");
            }
        }
        ack(message).await;
    }
}

/// A message of the work queue, by its subject.
enum Work {
    /// A job or a continuation (`perstack.jobs`).
    Job(Box<JobMessage>),
    /// A delegated run placed on the cluster (`perstack.delegations`).
    Child(Box<ChildMessage>),
    /// A parent to resume (`perstack.joins`).
    Join(Box<JoinMessage>),
}

impl Work {
    fn decode(subject: &str, payload: &[u8]) -> Result<Work, (Option<Output>, Rejection)> {
        Ok(match subject {
            queue::DELEGATION_SUBJECT => Work::Child(Box::new(delegate::decode(payload)?)),
            queue::JOIN_SUBJECT => Work::Join(Box::new(delegate::decode(payload)?)),
            _ => Work::Job(Box::new(JobMessage::decode(payload)?)),
        })
    }

    /// The job message it carries.
    fn job(&self) -> &JobMessage {
        match self {
            Work::Job(job) => job,
            Work::Child(child) => &child.job,
            Work::Join(join) => &join.job,
        }
    }
}

/// Ack (and wait for the server to confirm it), a few times if needed.
async fn ack(message: &jetstream::Message) {
    for _ in 0..5 {
        match message.double_ack().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "ack not confirmed; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// What a failed publish means for the message.
fn output_failure(e: OutputError) -> Failure {
    match e {
        OutputError::Fenced(_) => Failure::Fenced,
        OutputError::Failed(why) => Failure::Transient(why),
    }
}

/// What a failed start means for the message.
fn classify(e: EngineError) -> Failure {
    match e {
        EngineError::Storage(StoreError::Claimed { .. }) => Failure::Busy(e.to_string()),
        EngineError::Storage(_) | EngineError::Bus(_) | EngineError::Lost => {
            Failure::Transient(e.to_string())
        }
        EngineError::Sandbox(e) => Failure::Refused(Rejection::Sandbox(e.to_string())),
        other => Failure::Refused(Rejection::Unrunnable(other.to_string())),
    }
}
