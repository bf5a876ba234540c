//! The job message: everything a worker needs to run a job as it was submitted, and nothing
//! secret.
//!
//! It carries the resolved Expert definitions (every Expert of the submitter's configuration)
//! with their digest, so a worker whose own `perstack.toml` differs still runs the Experts that
//! were submitted, never different ones; the NAMES of the environment variables the Experts'
//! skills require (their values come from the worker's environment); the query, the job id and
//! the run options. [`JobMessage::decode`] is the one place a message is checked; what it
//! refuses is a [`Rejection`], whose reason goes to the dead-letter subject.
//!
//! A message either starts a job or continues a stored one ([`Continuation`]: `--continue-job`,
//! `--resume-from`, `-i`). A continuation is one more invocation of the job: it has an id of
//! its own, which makes its dedupe id (`<jobId>:<invocation>`, where a first submission's is the
//! job id) and its output subject ([`JobMessage::output`]) its own, so it is never dropped as a
//! duplicate of the first submission and its followers see only its lines and its end.
//!
//! Versions: 1 starts jobs only; 2 adds `continuation`. A worker reads both; a version-1 worker
//! refuses a continuation (an unknown version) instead of running it as a new job.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::schema::id::is_safe_id;
use crate::schema::{Expert, ReasoningBudget, Skill};

/// The message format's version; a worker refuses others ([`READS`]).
pub(crate) const VERSION: u32 = 2;

/// The versions a worker reads.
const READS: std::ops::RangeInclusive<u32> = 1..=VERSION;

/// One job, as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobMessage {
    /// [`VERSION`].
    pub version: u32,
    /// The job id (also the message's dedupe id).
    pub job_id: String,
    /// The coordinator Expert.
    pub expert_key: String,
    /// The query.
    pub query: String,
    /// Every Expert the job may run, by key.
    pub experts: BTreeMap<String, Expert>,
    /// `sha256:<hex>` of the compact JSON of `experts` ([`digest`]).
    pub digest: String,
    /// The environment variables the skills require (names only, never values).
    pub env_names: Vec<String>,
    /// Run options.
    pub options: JobOptions,
    /// Set when the message continues the stored job instead of starting it (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Continuation>,
}

/// What a continuation message continues, and with what (the input text is the message's
/// `query`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Continuation {
    /// This invocation's id (a fresh id per continuation).
    pub invocation: String,
    /// The coordinator checkpoint to continue from instead of the latest (`--resume-from`).
    pub resume_from: Option<String>,
    /// The text is the answer to the pending interactive tool call (`-i`), not a new query.
    pub answer: bool,
    /// The job's last stored job sequence number when the continuation was submitted (for
    /// diagnostics: workers tell a redelivery by the continuation's own output subject, since
    /// continuations submitted at once all find the job past it).
    pub after_job_seq: u64,
}

/// Where one invocation of a job prints: the job's output subject for its first submission, a
/// subject of the invocation's own for a continuation; and the prefix of its records' dedupe
/// ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Output {
    /// The job.
    pub job_id: String,
    /// The continuation's invocation id; `None` for the first submission.
    pub invocation: Option<String>,
}

impl Output {
    /// The subject the invocation's records go to. A continuation's ends in `~<invocation>`:
    /// `~` is not allowed in job ids, so it never names another job's subject.
    pub(crate) fn subject(&self) -> String {
        match &self.invocation {
            None => super::queue::output_subject(&self.job_id),
            Some(i) => format!("{}.~{i}", super::queue::output_subject(&self.job_id)),
        }
    }

    /// The subject that cancels the invocation (`perstack.cancel.<jobId>`, with the same
    /// `.~<invocation>` suffix as [`Output::subject`] for a continuation). Kept in a stream,
    /// so a cancel sent while the invocation waits in the queue is found when a worker takes
    /// it.
    pub(crate) fn cancel_subject(&self) -> String {
        match &self.invocation {
            None => super::queue::cancel_subject(&self.job_id),
            Some(i) => format!("{}.~{i}", super::queue::cancel_subject(&self.job_id)),
        }
    }

    /// The prefix of the invocation's dedupe ids (the job message's own dedupe id, too).
    pub(crate) fn id(&self) -> String {
        match &self.invocation {
            None => self.job_id.clone(),
            Some(i) => format!("{}:{i}", self.job_id),
        }
    }
}

/// The run options a job carries (the submitter's resolved settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobOptions {
    /// Provider name.
    pub provider_name: String,
    /// Model id.
    pub model: String,
    /// Reasoning budget.
    pub reasoning_budget: ReasoningBudget,
    /// Job-wide step limit.
    pub max_steps: u32,
    /// Consecutive generation retries.
    pub max_retries: u32,
    /// Per-generation timeout, ms.
    pub timeout_ms: u64,
    /// Whether skill processes must be confined (no `runtime` or `docker`); a worker that
    /// cannot sandbox refuses such a job.
    pub sandboxed: bool,
    /// Where the job's delegated runs go (`--placement`); absent: the worker's default.
    /// Absent for the default, so a message stays what it was before placements existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// Where a job's delegated runs run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// On the parent's worker, as in one process (the default).
    #[default]
    Local,
    /// On any worker of the cluster: the parent stops at `stopRunByDelegate`, each child is a
    /// message of its own, and the last child's result resumes the parent wherever it lands
    /// (see `cluster::delegate`).
    Cluster,
}

impl JobOptions {
    /// The per-generation timeout.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Why a worker refused a job message. Each goes to the dead-letter subject with
/// [`Rejection`]'s text as the reason; none is retried (the same message would fail again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    /// Not JSON, or not a job message.
    #[error("malformed job message: {0}")]
    Malformed(String),
    /// A format this worker does not know.
    #[error("job message version {0} is not supported (this worker reads versions 1 to {VERSION})")]
    Version(u32),
    /// The job id cannot be used.
    #[error("invalid job id {0:?}")]
    JobId(String),
    /// The Experts do not match their digest (altered on the way).
    #[error("the Expert definitions do not match their digest {0}")]
    Digest(String),
    /// The coordinator is not among the Experts.
    #[error("expert \"{0}\" is not defined in the submitted configuration")]
    UnknownExpert(String),
    /// The job needs the sandbox and this worker cannot provide it.
    #[error("the job needs the sandbox and this worker cannot sandbox: {0}")]
    Sandbox(String),
    /// The job could not start here for a reason the same message would meet again
    /// (a required environment variable is missing, the provider cannot be built).
    #[error("the job cannot run on this worker: {0}")]
    Unrunnable(String),
    /// Redelivered too often without reaching a terminal state.
    #[error("gave up after {0} deliveries without reaching a terminal state")]
    Exhausted(i64),
}

impl Rejection {
    /// The exit code a follower of the job ends with: 2 for what the submitter must fix
    /// (usage and configuration), 1 for a worker that could not run it.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Rejection::Malformed(_)
            | Rejection::Version(_)
            | Rejection::JobId(_)
            | Rejection::Digest(_)
            | Rejection::UnknownExpert(_)
            | Rejection::Unrunnable(_) => 2,
            Rejection::Sandbox(_) | Rejection::Exhausted(_) => 1,
        }
    }
}

/// `sha256:<hex>` of the compact JSON of `experts` (a sorted map, so the same definitions
/// always give the same digest).
pub(crate) fn digest(experts: &BTreeMap<String, Expert>) -> String {
    let json = serde_json::to_vec(experts).unwrap_or_default();
    let hash = Sha256::digest(&json);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The names of the environment variables the stdio skills of `experts` require.
pub(crate) fn required_env(experts: &BTreeMap<String, Expert>) -> Vec<String> {
    let mut names: Vec<String> = experts
        .values()
        .flat_map(|e| e.skills.values())
        .filter_map(|s| match s {
            Skill::McpStdioSkill(s) => Some(s.required_env.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    names.sort();
    names.dedup();
    names
}

impl JobMessage {
    /// A message for `expert_key` and `query` over `experts`, with its digest and env names.
    pub(crate) fn new(
        job_id: String,
        expert_key: String,
        query: String,
        experts: BTreeMap<String, Expert>,
        options: JobOptions,
    ) -> Self {
        JobMessage {
            version: VERSION,
            job_id,
            expert_key,
            query,
            digest: digest(&experts),
            env_names: required_env(&experts),
            experts,
            options,
            continuation: None,
        }
    }

    /// Where this message's invocation prints.
    pub(crate) fn output(&self) -> Output {
        Output {
            job_id: self.job_id.clone(),
            invocation: self.continuation.as_ref().map(|c| c.invocation.clone()),
        }
    }

    /// Parse and check a message: the format, the version, the job id, the digest, the
    /// coordinator. Where the invocation prints, when it could be read, comes with the
    /// rejection so its followers can be told.
    pub(crate) fn decode(bytes: &[u8]) -> Result<JobMessage, (Option<Output>, Rejection)> {
        let message: JobMessage = serde_json::from_slice(bytes).map_err(|e| {
            let value = serde_json::from_slice::<serde_json::Value>(bytes).ok();
            let output = value.as_ref().and_then(|v| {
                let job_id = v["jobId"].as_str().filter(|id| is_safe_id(id))?;
                let invocation = v["continuation"]["invocation"].as_str();
                Some(Output {
                    job_id: job_id.to_owned(),
                    invocation: invocation.filter(|i| is_safe_id(i)).map(str::to_owned),
                })
            });
            (output, Rejection::Malformed(e.to_string()))
        })?;
        let id = Some(message.output())
            .filter(|o| is_safe_id(&o.job_id) && o.invocation.as_deref().is_none_or(is_safe_id));
        if !READS.contains(&message.version)
            || (message.version < 2 && message.continuation.is_some())
        {
            return Err((id, Rejection::Version(message.version)));
        }
        if id.is_none() {
            return Err((None, Rejection::JobId(message.job_id)));
        }
        if digest(&message.experts) != message.digest {
            return Err((id, Rejection::Digest(message.digest)));
        }
        if !message.experts.contains_key(&message.expert_key) {
            return Err((id, Rejection::UnknownExpert(message.expert_key)));
        }
        Ok(message)
    }

    /// The message as JSON.
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JobMessage {
        let cfg = crate::config::parse(
            "[experts.\"solo\"]\ninstruction = \"Answer.\"\n",
            std::path::Path::new("perstack.toml"),
        )
        .unwrap();
        JobMessage::new(
            "job-1".into(),
            "solo".into(),
            "hi".into(),
            cfg.experts,
            JobOptions {
                provider_name: "scripted".into(),
                model: "m".into(),
                reasoning_budget: ReasoningBudget::default(),
                max_steps: 10,
                max_retries: 1,
                timeout_ms: 1000,
                sandboxed: false,
                placement: None,
            },
        )
    }

    #[test]
    fn a_message_round_trips_and_passes_its_checks() {
        let m = sample();
        assert_eq!(JobMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn an_altered_expert_fails_the_digest_check() {
        let mut m = sample();
        if let Some(e) = m.experts.get_mut("solo") {
            e.instruction = "Do something else.".into();
        }
        let (id, why) = JobMessage::decode(&m.encode()).unwrap_err();
        assert_eq!(id.map(|o| o.id()), Some("job-1".to_owned()));
        assert!(matches!(why, Rejection::Digest(_)), "{why}");
    }

    #[test]
    fn a_continuation_has_its_own_dedupe_id_and_subject_and_version_1_reads_as_before() {
        let mut m = sample();
        assert_eq!(m.output().id(), "job-1");
        assert_eq!(m.output().subject(), "perstack.output.job-1");
        m.continuation = Some(Continuation {
            invocation: "inv1".into(),
            resume_from: Some("cp".into()),
            answer: true,
            after_job_seq: 7,
        });
        let back = JobMessage::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.output().id(), "job-1:inv1");
        assert_eq!(back.output().subject(), "perstack.output.job-1.~inv1");
        // A version-1 message (a submitter from before continuations) starts its job.
        let mut v1 = sample();
        v1.version = 1;
        assert_eq!(JobMessage::decode(&v1.encode()).unwrap().continuation, None);
        // A continuation claiming version 1 is refused, never run as a new job.
        m.version = 1;
        let (id, why) = JobMessage::decode(&m.encode()).unwrap_err();
        assert_eq!(why, Rejection::Version(1));
        assert_eq!(id.unwrap().subject(), "perstack.output.job-1.~inv1");
    }

    #[test]
    fn unknown_experts_and_garbage_are_refused_with_a_reason() {
        let mut m = sample();
        m.expert_key = "nobody".into();
        let (_, why) = JobMessage::decode(&m.encode()).unwrap_err();
        assert_eq!(why, Rejection::UnknownExpert("nobody".into()));
        assert_eq!(why.exit_code(), 2);
        let (id, why) = JobMessage::decode(b"{not json").unwrap_err();
        assert!(id.is_none());
        assert!(
            why.to_string().starts_with("malformed job message"),
            "{why}"
        );
    }
}
