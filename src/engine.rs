//! The embedding API: build an [`Engine`] once, start jobs on it, get a [`JobHandle`] per job.
//!
//! ```no_run
//! # async fn demo() -> Result<(), perstack::engine::EngineError> {
//! use std::sync::Arc;
//! use perstack::engine::{Engine, Settings};
//! use perstack::llm::scripted::ScriptedModel;
//!
//! let config = perstack::config::load(std::path::Path::new("experts/fanout/perstack.toml"))?;
//! let model = ScriptedModel::load(&config.resolve_relative("script.toml"))?;
//! let engine = Engine::builder()
//!     .settings(Settings::new(config.experts.clone()))
//!     .model(Arc::new(model))
//!     .build();
//! let mut job = engine.start(perstack::engine::JobRequest::new("coordinator", "hello").subscribe()).await?;
//! let mut events = job.take_events().expect("subscribed");
//! tokio::spawn(async move { while let Some(e) = events.recv().await { println!("{}", e.event.kind()); } });
//! let outcome = job.wait().await?;
//! println!("{:?}: {:?}", outcome.job.status, outcome.text);
//! engine.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! One engine runs any number of concurrent jobs over one event bus, one storage and one
//! provider. Events reach the optional sink (stdout for the CLI), callbacks, and each job's
//! subscribers, in one global order.
//!
//! | file | owns |
//! | --- | --- |
//! | this one | [`Engine`]: starting, launching and handing out jobs; [`JobRequest`], [`JobHandle`] |
//! | `builder` | [`EngineBuilder`]: what an engine is built from |
//! | `error` | [`EngineError`] and the exit code of each |
//! | `resume` | continuing a stored job ([`ContinueRequest`]) |

use std::sync::Arc;

use serde_json::Map;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

mod builder;
mod error;
#[cfg(test)]
mod fanout_config_tests;
#[cfg(test)]
mod open_jobs_tests;
#[cfg(test)]
mod release_tests;
mod resume;

pub use crate::actor::context::{RunOverrides, Settings};
pub use crate::actor::event_bus::{BusError, Callback, Sequenced, Sink};
pub use crate::actor::job::JobOutcome;
pub use builder::{EngineBuilder, NoModel, WithModel};
pub use error::EngineError;
pub use resume::{ContinueInput, ContinueRequest};

use crate::actor::context::{JobContext, SharedExperts, now_ms};
use crate::actor::event_bus::{Bus, Flush, OpenJob};
use crate::actor::job::JobArgs;
use crate::agent::Start;
use crate::agent::{Machine, MachineSetting};
use crate::llm::LanguageModel;
use crate::schema::{Job, JobStatus, id::is_safe_id, id::new_id};
use crate::storage::{Claim, Storage};

/// A cluster worker taking a job over from one that stopped mid-run (see [`Engine::launch`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Takeover<'a> {
    /// The worker that takes it over (`pid <pid> on <host>`).
    pub worker: &'a str,
    /// The last job sequence number the job's followers have seen: the old holder's printed
    /// events can go past the store's (runtime events are not stored there), and the job
    /// numbers on from the larger of the two.
    pub printed: u64,
}

/// The `jobTakenOver` event of a job whose coordinator goes on from `checkpoint` on `worker`.
fn taken_over(checkpoint: &crate::schema::Checkpoint, worker: &str) -> crate::schema::Event {
    crate::schema::Envelope::step(
        checkpoint.job_id.as_str(),
        checkpoint.run_id.as_str(),
        checkpoint.expert.key.as_str(),
        checkpoint.step_number,
    )
    .into_event(
        now_ms(),
        crate::schema::EventPayload::JobTakenOver(crate::schema::JobTakenOver {
            worker: worker.to_owned(),
            message: "the job's previous worker stopped mid-run; the steps it had in flight are repeated here"
                .into(),
            extra: Map::new(),
        }),
    )
}

/// What job to start.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// The coordinator Expert.
    pub expert_key: String,
    /// The query.
    pub query: String,
    /// A job id to use instead of a generated one.
    pub job_id: Option<String>,
    /// Whether the handle receives a typed event stream.
    pub subscribe: bool,
    /// How many events the stream buffers before the engine waits for the reader.
    pub buffer: usize,
}

impl JobRequest {
    /// A new job of `expert_key` with `query`.
    pub fn new(expert_key: impl Into<String>, query: impl Into<String>) -> Self {
        JobRequest {
            expert_key: expert_key.into(),
            query: query.into(),
            job_id: None,
            subscribe: false,
            buffer: 256,
        }
    }

    /// Use this job id.
    pub fn job_id(mut self, id: impl Into<String>) -> Self {
        self.job_id = Some(id.into());
        self
    }

    /// Deliver the job's events to [`JobHandle::take_events`]. The reader must keep up: a full
    /// stream makes the engine wait (events are never dropped).
    pub fn subscribe(mut self) -> Self {
        self.subscribe = true;
        self
    }
}

/// The engine: one event bus, one storage, one provider, many jobs.
pub struct Engine {
    bus: Bus,
    storage: Arc<dyn Storage>,
    model: Arc<dyn LanguageModel>,
    settings: Arc<Settings>,
    /// The settings' Experts, each behind its own `Arc`: every run of every job shares its
    /// Expert's definition instead of cloning it (skills, instruction, delegates: about 3 KB).
    experts: Arc<SharedExperts>,
    /// The tool lists of its runs, shared between runs of an Expert.
    tool_lists: Arc<crate::agent::ToolLists>,
    /// Tool calls answered from (or checked against) a recording, for `perstack replay`.
    replay: Option<Arc<crate::replay::ToolReplay>>,
}

/// A running job.
pub struct JobHandle {
    /// The job id.
    pub job_id: String,
    events: Option<mpsc::Receiver<Sequenced>>,
    /// Boxed: the channel holds a slot for the value from the start, for the job's whole life.
    done: oneshot::Receiver<Box<JobOutcome>>,
    cancel: CancellationToken,
    hand_back: HandBack,
}

/// Hands a running job back (a cluster worker shutting down): its runs stop without writing
/// anything more, the job stays `running` in the store, and [`JobOutcome::handed_back`] says
/// so; another worker carries it on from its stored checkpoints. Holds the job weakly: once
/// the job has ended, it does nothing.
#[derive(Clone)]
pub(crate) struct HandBack(std::sync::Weak<JobContext>);

impl HandBack {
    /// At the runs' next step boundaries: no run starts another step; the job stops once no
    /// model or tool call is under way.
    pub(crate) fn at_step_boundary(&self) {
        if let Some(ctx) = self.0.upgrade() {
            ctx.request_hand_back();
        }
    }

    /// Now: calls under way are cancelled, and the steps they belong to are repeated by the
    /// job's next holder.
    pub(crate) fn now(&self) {
        if let Some(ctx) = self.0.upgrade() {
            ctx.fail(crate::agent::RunFailure::HandedBack);
        }
    }
}

impl JobHandle {
    /// The typed event stream, when the request subscribed (once).
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<Sequenced>> {
        self.events.take()
    }

    /// Stop the job: every run ends with `stopRunByError` ("Cancelled") and its checkpoint.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Hands this job back (see [`HandBack`]).
    pub(crate) fn hand_back(&self) -> HandBack {
        self.hand_back.clone()
    }

    /// A token that cancels this job (for signal handlers).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Wait for the job's terminal state.
    pub async fn wait(self) -> Result<JobOutcome, EngineError> {
        self.done.await.map(|o| *o).map_err(|_| EngineError::Lost)
    }
}

impl Engine {
    /// A builder; it can build once it has a model (see [`EngineBuilder`]).
    pub fn builder() -> EngineBuilder<NoModel> {
        EngineBuilder::new()
    }

    /// The settings jobs run with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Start a job of `expert_key` with `query`.
    pub async fn run(&self, expert_key: &str, query: &str) -> Result<JobHandle, EngineError> {
        self.start(JobRequest::new(expert_key, query)).await
    }

    /// Start a job.
    pub async fn start(&self, request: JobRequest) -> Result<JobHandle, EngineError> {
        self.startable(&request.expert_key)?;
        let job_id = request.job_id.clone().unwrap_or_else(new_id);
        if !is_safe_id(&job_id) {
            return Err(EngineError::InvalidJobId(job_id));
        }
        let claim = self.storage.claim(&job_id).await?;
        self.start_claimed(request, claim, 0, None).await
    }

    /// Start `request` on the job `claim` holds (its id wins over the request's), whose last
    /// event so far got job sequence number `last_seq` (0 for a new job). `takeover` names the
    /// cluster worker that took the job over, when it did (see [`Engine::launch`]).
    pub(crate) async fn start_claimed(
        &self,
        request: JobRequest,
        claim: Claim,
        last_seq: u64,
        takeover: Option<Takeover<'_>>,
    ) -> Result<JobHandle, EngineError> {
        let expert = self.startable(&request.expert_key)?;
        let job_id = claim.job_id().to_owned();
        let run_id = new_id();
        let now = now_ms();
        let setting = MachineSetting {
            job_id: job_id.clone(),
            run_id: run_id.clone(),
            expert: expert.reference(),
            max_steps: self.settings.max_steps,
            max_retries: self.settings.max_retries,
            context_window: self.settings.context_window,
        };
        let checkpoint = Machine::fresh_checkpoint(&setting, 1);
        let job = Job {
            id: job_id.clone(),
            status: JobStatus::Running,
            coordinator_expert_key: request.expert_key.clone(),
            total_steps: 0,
            max_steps: Some(self.settings.max_steps),
            usage: Default::default(),
            started_at: now,
            finished_at: None,
            job_seq: (last_seq > 0).then_some(last_seq),
            extra: Map::new(),
        };
        self.launch(
            job,
            checkpoint,
            Start::Query(request.query),
            request.subscribe.then_some(request.buffer),
            claim,
            takeover,
        )
        .await
    }

    /// Run one delegated run as the top run of a job of its own on this engine: a cluster
    /// worker's child run (see `cluster::delegate`). `checkpoint` is the child's start, its
    /// `delegatedBy` naming the parent; the job id is the parent's (this engine's store is
    /// the attempt's own, never the job's shared one). `query`: its delegate call's query;
    /// `None` resumes `checkpoint`.
    pub(crate) async fn start_delegated(
        &self,
        checkpoint: crate::schema::Checkpoint,
        query: Option<String>,
        buffer: usize,
    ) -> Result<JobHandle, EngineError> {
        self.startable(&checkpoint.expert.key)?;
        let claim = self.storage.claim(&checkpoint.job_id).await?;
        let job = Job {
            id: checkpoint.job_id.clone(),
            status: JobStatus::Running,
            coordinator_expert_key: checkpoint.expert.key.clone(),
            total_steps: 0,
            max_steps: Some(self.settings.max_steps),
            usage: Default::default(),
            started_at: now_ms(),
            finished_at: None,
            job_seq: None,
            extra: Map::new(),
        };
        let start = query.map_or(Start::Resume, Start::Query);
        self.launch(job, checkpoint, start, Some(buffer), claim, None)
            .await
    }

    /// The Expert `key`, when it exists and passes [`Engine::preflight`].
    fn startable(&self, key: &str) -> Result<&crate::schema::Expert, EngineError> {
        let Some(expert) = self.settings.experts.get(key) else {
            let hint =
                crate::config::did_you_mean(key, self.settings.experts.keys().map(String::as_str))
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default();
            return Err(EngineError::UnknownExpert {
                key: key.to_owned(),
                hint,
            });
        };
        self.preflight(key)?;
        Ok(expert)
    }

    /// Checks that need no model call, for the Expert and every Expert it can delegate to:
    /// each stdio skill's `requiredEnv` is set. Fails before anything runs.
    fn preflight(&self, expert_key: &str) -> Result<(), EngineError> {
        if self.replay.as_ref().is_some_and(|r| r.plays_back()) {
            return Ok(()); // no skill process starts: nothing needs their environment
        }
        let mut queue = std::collections::VecDeque::from([expert_key.to_string()]);
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = queue.pop_front() {
            if !seen.insert(key.clone()) {
                continue;
            }
            let Some(expert) = self.settings.experts.get(&key) else {
                continue;
            };
            for (name, skill) in &expert.skills {
                if let crate::schema::Skill::McpStdioSkill(s) = skill
                    && name != crate::agent::BASE_SKILL
                {
                    crate::skill::mcp::child_env(name, &s.required_env, &self.settings.env)
                        .map_err(|e| EngineError::Usage(format!("expert \"{key}\": {e}")))?;
                }
            }
            queue.extend(expert.delegates.iter().cloned());
        }
        Ok(())
    }

    /// Spawn the job task for `job`, its coordinator starting from `checkpoint` with `start`.
    /// The job task holds `claim` (the right to write the job) until it stops. With
    /// `takeover` (a cluster worker that took the job over from one that stopped mid-run), the
    /// job's first event is a `jobTakenOver` naming it, before anything of the job runs again.
    pub(crate) async fn launch(
        &self,
        job: Job,
        checkpoint: crate::schema::Checkpoint,
        start: Start,
        subscribe: Option<usize>,
        claim: Claim,
        takeover: Option<Takeover<'_>>,
    ) -> Result<JobHandle, EngineError> {
        let mut job = job;
        if let Some(t) = takeover {
            // Followers saw the old holder's events up to `printed`: number on from there.
            job.job_seq = Some(job.job_seq.unwrap_or(0).max(t.printed));
        }
        let job_id = job.id.clone();
        let (tx, events) = match subscribe {
            Some(buffer) => {
                let (tx, rx) = mpsc::channel(buffer.max(1));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        self.bus
            .actor()
            .ask(OpenJob {
                job_id: job_id.clone(),
                last_seq: job.job_seq.unwrap_or(0),
                events: tx,
            })
            .await
            .map_err(BusError::from_send)?;
        if let Some(t) = takeover {
            let event = taken_over(&checkpoint, t.worker);
            if let Err(e) = self.bus.publish(event).await {
                tracing::warn!(job = %job_id, error = %e, "the takeover event was not published");
            }
        }
        let cancel = CancellationToken::new();
        let ctx = Arc::new(JobContext {
            job_id: job_id.clone(),
            settings: self.settings.clone(),
            experts: self.experts.clone(),
            tool_lists: self.tool_lists.clone(),
            model: self.model.clone(),
            bus: self.bus.clone(),
            cancel: cancel.clone(),
            failure: std::sync::OnceLock::new(),
            storage: self.storage.clone(),
            replay: self.replay.clone(),
            hand_back: CancellationToken::new(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        let hand_back = HandBack(Arc::downgrade(&ctx));
        let (done_tx, done) = oneshot::channel();
        tokio::spawn(crate::actor::job::run(Box::new(JobArgs {
            span: tracing::info_span!(
                "job",
                jobId = %job_id,
                expertKey = %job.coordinator_expert_key,
            ),
            ctx,
            storage: self.storage.clone(),
            expert_key: job.coordinator_expert_key.clone(),
            checkpoint,
            start,
            job,
            done: done_tx,
            claim,
        })));
        Ok(JobHandle {
            job_id,
            events,
            done,
            cancel,
            hand_back,
        })
    }

    /// Write `events` through this engine's event bus, in order, in one message, as its own
    /// runs do: each gets the next engine-wide sequence number (and its job's, when the job
    /// runs on this engine), a checkpoint it carries is stored before the event is visible,
    /// then it goes to the sink, the store and the listeners. For events made outside the
    /// engine: a replay, another process's job relayed, a load test of the bus. Returns the
    /// last event's sequence number once all are visible (stored, delivered, and queued for
    /// the sink in order; [`Engine::shutdown`] waits until the sink has them), or the first
    /// failure: a refused checkpoint stops the batch there, a failed sink does not (see
    /// [`BusError`]).
    pub async fn publish(&self, events: Vec<crate::schema::Event>) -> Result<u64, BusError> {
        self.bus.publish_batch(events).await
    }

    /// Flush the sink and stop the bus: every event published before is in the sink when it
    /// returns. Jobs still running lose their output.
    pub async fn shutdown(self) {
        let bus = self.bus.actor();
        let _ = bus.ask(Flush).await;
        let _ = bus.stop_gracefully().await;
        bus.wait_for_shutdown().await;
    }
}
