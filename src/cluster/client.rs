//! [`Client`]: submit jobs to the cluster, follow their events, cancel and wait, from the CLI
//! (`perstack run --nats`) or an embedding app.
//!
//! ```no_run
//! # async fn demo() -> Result<(), perstack::cluster::ClusterError> {
//! use perstack::cluster::{Client, NatsOptions};
//! let config = perstack::config::load(std::path::Path::new("experts/fanout/perstack.toml")).unwrap();
//! let settings = perstack::engine::Settings::resolve(&config, &Default::default());
//! let client = Client::connect(&NatsOptions::url("nats://127.0.0.1:4222")).await?;
//! let job = client.submit(&settings, "coordinator", "hello", None).await?;
//! let mut followed = client.follow(&job).await?;
//! while let Some(event) = followed.next_event().await? {
//!     println!("{} {}", event.job_seq.unwrap_or(0), event.kind());
//! }
//! println!("exit code {}", followed.end().map_or(1, |e| e.exit_code));
//! # Ok(()) }
//! ```
//!
//! [`Client::continue_job`] continues a stored job on the cluster (`--continue`,
//! `--continue-job`, `--resume-from`, `-i`): it checks the job (and the checkpoint) in the
//! cluster's store before anything is submitted, and returns the [`Invocation`] to follow,
//! which sees only the continuation's events and its end.

use bytes::Bytes;

use super::connect::{ConnectError, NatsOptions};
use super::message::{Continuation, JobMessage, JobOptions, Output, Placement};
pub use super::output::JobEnd;
use super::output::{Follower, Record};
use super::queue::{self, QueueError};
use crate::engine::{ContinueInput, ContinueRequest, Settings};
use crate::sandbox::Isolation;
use crate::schema::Event;
use crate::schema::id::{is_safe_id, new_id};
use crate::storage::{JetStreamConfig, JetStreamStorage, Storage, StoreError};

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The streams could not be set up.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The Expert is not in the settings.
    #[error("expert \"{0}\" is not defined in the configuration")]
    UnknownExpert(String),
    /// The job id cannot be used.
    #[error("invalid job id {0:?}: use 1-255 characters of letters, digits, '_', '-' or '.'")]
    InvalidJobId(String),
    /// A publish or a read failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// A record of the job's output is not what it should be.
    #[error("job output: {0}")]
    Output(String),
    /// What to continue is not there (no job, an unknown job or checkpoint).
    #[error("{0}")]
    Usage(String),
    /// The cluster's store could not be read, or holds no such checkpoint.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClusterError {
    /// The process exit code when this ends a command: 2 for what the user must fix, 1 else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClusterError::Connect(_)
            | ClusterError::UnknownExpert(_)
            | ClusterError::InvalidJobId(_)
            | ClusterError::Usage(_) => 2,
            ClusterError::Store(e) => e.exit_code(),
            ClusterError::Queue(_) | ClusterError::Nats(_) | ClusterError::Output(_) => 1,
        }
    }
}

/// A connection to the cluster.
#[derive(Clone)]
pub struct Client {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    /// Where the jobs it submits place their delegated runs; `None`: the worker's default.
    placement: Option<Placement>,
}

/// One invocation of a job, to follow or wait for: its first submission (made from the job
/// id: `client.follow("job-1")`) or a continuation ([`Client::continue_job`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The job.
    pub job_id: String,
    /// The continuation's id; `None` for the first submission.
    pub continuation: Option<String>,
}

impl Invocation {
    fn output(&self) -> Output {
        Output {
            job_id: self.job_id.clone(),
            invocation: self.continuation.clone(),
        }
    }
}

impl From<&str> for Invocation {
    fn from(job_id: &str) -> Self {
        Invocation {
            job_id: job_id.to_owned(),
            continuation: None,
        }
    }
}

impl From<&String> for Invocation {
    fn from(job_id: &String) -> Self {
        job_id.as_str().into()
    }
}

impl From<&Invocation> for Invocation {
    fn from(invocation: &Invocation) -> Self {
        invocation.clone()
    }
}

/// A job being followed: its events from the first, then its end.
pub struct Followed {
    follower: Follower,
    end: Option<JobEnd>,
    takeovers: Vec<String>,
}

impl Client {
    /// Connect and make sure the streams exist.
    pub async fn connect(options: &NatsOptions) -> Result<Client, ClusterError> {
        let client = options.connect("perstack").await?;
        let js = async_nats::jetstream::new(client.clone());
        queue::ensure_streams(&js).await?;
        Ok(Client {
            client,
            js,
            placement: None,
        })
    }

    /// Jobs submitted (and continued) through this client place their delegated runs as
    /// `placement` says (`--placement`); without it, as the worker's default (`local`).
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Submit a job of `expert_key` with `query`, running the Experts and options of
    /// `settings` (its environment is not sent: workers use their own). Returns the job id
    /// (`job_id` when given). Submitting the same job id twice within two minutes queues it
    /// once.
    pub async fn submit(
        &self,
        settings: &Settings,
        expert_key: &str,
        query: &str,
        job_id: Option<String>,
    ) -> Result<String, ClusterError> {
        if !settings.experts.contains_key(expert_key) {
            return Err(ClusterError::UnknownExpert(expert_key.to_owned()));
        }
        let job_id = job_id.unwrap_or_else(new_id);
        if !is_safe_id(&job_id) {
            return Err(ClusterError::InvalidJobId(job_id));
        }
        let message = message(settings, expert_key, query, job_id.clone(), self.placement);
        self.publish_job(&job_id, message.encode().into()).await?;
        Ok(job_id)
    }

    /// Continue a stored job on the cluster, as `perstack run --continue-job` does locally:
    /// `request.job_id` (`None`: the job started last in the cluster's store), from its latest
    /// coordinator checkpoint or `request.resume_from`, with a new query or the answer to its
    /// pending interactive call (`request.input`; `request.subscribe` is not used). An unknown
    /// job or checkpoint is an error before anything is submitted; what only the run can tell
    /// (another coordinator, an answer with nothing pending) ends the invocation as refused.
    pub async fn continue_job(
        &self,
        settings: &Settings,
        request: ContinueRequest,
    ) -> Result<Invocation, ClusterError> {
        if !settings.experts.contains_key(&request.expert_key) {
            return Err(ClusterError::UnknownExpert(request.expert_key));
        }
        let store = JetStreamStorage::new(self.client.clone(), JetStreamConfig::default());
        let job = match &request.job_id {
            Some(id) if !is_safe_id(id) => return Err(ClusterError::InvalidJobId(id.clone())),
            Some(id) => store.retrieve_job(id).await?,
            None => store.all_jobs().await?.into_iter().next(),
        };
        let Some(job) = job else {
            return Err(ClusterError::Usage(match request.job_id {
                Some(id) => format!("No job \"{id}\" found in the cluster's store"),
                None => "No job found to continue in the cluster's store".into(),
            }));
        };
        if let Some(checkpoint) = &request.resume_from {
            match store.retrieve_checkpoint(&job.id, checkpoint).await {
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) => {
                    return Err(ClusterError::Usage(format!(
                        "checkpoint \"{checkpoint}\" not found in job \"{}\"",
                        job.id
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (text, answer) = match request.input {
            ContinueInput::Query(q) => (q, false),
            ContinueInput::Answer(a) => (a, true),
        };
        let mut message = message(
            settings,
            &request.expert_key,
            &text,
            job.id.clone(),
            self.placement,
        );
        message.continuation = Some(Continuation {
            invocation: new_id(),
            resume_from: request.resume_from,
            answer,
            after_job_seq: store.last_job_seq(&job.id).await?,
        });
        let output = message.output();
        self.publish_job(&output.id(), message.encode().into())
            .await?;
        Ok(Invocation {
            job_id: output.job_id,
            continuation: output.invocation,
        })
    }

    /// Publish raw bytes as a job message with dedupe id `message_id`.
    pub(crate) async fn publish_job(
        &self,
        message_id: &str,
        body: Bytes,
    ) -> Result<(), ClusterError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
        self.js
            .publish_with_headers(queue::JOBS_SUBJECT, headers, body)
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        Ok(())
    }

    /// Follow a job (from its id) or a continuation from its first event.
    pub async fn follow(&self, job: impl Into<Invocation>) -> Result<Followed, ClusterError> {
        let follower = Follower::open(&self.js, &job.into().output())
            .await
            .map_err(|e| ClusterError::Output(e.to_string()))?;
        Ok(Followed {
            follower,
            end: None,
            takeovers: Vec::new(),
        })
    }

    /// Cancel a job (from its id) or a continuation: the worker running it cancels it at once
    /// (its runs end with `stopRunByError`, `Cancelled`); one still in the queue ends the same
    /// way, without running, as soon as a worker takes it. Followers see its end either way.
    /// The cancel is stored (acknowledged by the server) before this returns.
    pub async fn cancel(&self, job: impl Into<Invocation>) -> Result<(), ClusterError> {
        let subject = job.into().output().cancel_subject();
        self.js
            .publish(subject, Bytes::new())
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        Ok(())
    }

    /// Wait for the end of a job (from its id) or a continuation (reading its events on the
    /// way).
    pub async fn wait(&self, job: impl Into<Invocation>) -> Result<JobEnd, ClusterError> {
        let mut followed = self.follow(job).await?;
        while followed.next_event().await?.is_some() {}
        followed
            .end
            .ok_or_else(|| ClusterError::Output("no end record".into()))
    }
}

/// The message of a job of `expert_key` with `query` over the Experts and options of
/// `settings`.
fn message(
    settings: &Settings,
    expert_key: &str,
    query: &str,
    job_id: String,
    placement: Option<Placement>,
) -> JobMessage {
    JobMessage::new(
        job_id,
        expert_key.to_owned(),
        query.to_owned(),
        (*settings.experts).clone(),
        JobOptions {
            provider_name: settings.provider_name.clone(),
            model: settings.model.clone(),
            reasoning_budget: settings.reasoning_budget,
            max_steps: settings.max_steps,
            max_retries: settings.max_retries,
            timeout_ms: u64::try_from(settings.timeout.as_millis()).unwrap_or(u64::MAX),
            sandboxed: settings.isolation == Isolation::Sandboxed,
            placement,
        },
    )
}

impl Followed {
    /// The next event (its `job_seq` set), or `None` once the job has ended (then see
    /// [`Followed::end`]).
    pub async fn next_event(&mut self) -> Result<Option<Event>, ClusterError> {
        loop {
            match self.next_record().await? {
                None => return Ok(None),
                Some(Record::Event { line, job_seq }) => {
                    let mut event: Event = serde_json::from_slice(&line)
                        .map_err(|e| ClusterError::Output(format!("not an event: {e}")))?;
                    event.job_seq = job_seq;
                    return Ok(Some(event));
                }
                Some(Record::Takeover { .. } | Record::End(_)) => {}
            }
        }
    }

    /// How the job ended, once [`Followed::next_event`] returned `None`.
    pub fn end(&self) -> Option<&JobEnd> {
        self.end.as_ref()
    }

    /// The workers that took the job over from a worker that died or stalled, in order.
    pub fn takeovers(&self) -> &[String] {
        &self.takeovers
    }

    /// The next record as it came (`None` after the end).
    pub(crate) async fn next_record(&mut self) -> Result<Option<Record>, ClusterError> {
        if self.end.is_some() {
            return Ok(None);
        }
        let record = self
            .follower
            .next()
            .await
            .map_err(|e| ClusterError::Output(e.to_string()))?;
        match &record {
            Record::End(end) => self.end = Some(end.clone()),
            Record::Takeover { worker } => self.takeovers.push(worker.clone()),
            Record::Event { .. } => {}
        }
        Ok(Some(record))
    }
}
