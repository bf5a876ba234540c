//! The job message: everything a worker needs to run a job as it was submitted, and nothing
//! secret.
//!
//! It carries the resolved Expert definitions (every Expert of the submitter's configuration)
//! with their digest, so a worker whose own `perstack.toml` differs still runs the Experts that
//! were submitted, never different ones; the NAMES of the environment variables the Experts'
//! skills require (their values come from the worker's environment); the query, the job id and
//! the run options. [`JobMessage::decode`] is the one place a message is checked; what it
//! refuses is a [`Rejection`], whose reason goes to the dead-letter subject.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::schema::id::is_safe_id;
use crate::schema::{Expert, ReasoningBudget, Skill};

/// The message format's version; a worker refuses others.
pub(crate) const VERSION: u32 = 1;

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
    #[error("job message version {0} is not supported (this worker reads version {VERSION})")]
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
        }
    }

    /// Parse and check a message: the format, the version, the job id, the digest, the
    /// coordinator. The job id, when one could be read, comes with the rejection so the
    /// job's followers can be told.
    pub(crate) fn decode(bytes: &[u8]) -> Result<JobMessage, (Option<String>, Rejection)> {
        let message: JobMessage = serde_json::from_slice(bytes).map_err(|e| {
            let id = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v["jobId"].as_str().map(str::to_owned))
                .filter(|id| is_safe_id(id));
            (id, Rejection::Malformed(e.to_string()))
        })?;
        let id = Some(message.job_id.clone()).filter(|id| is_safe_id(id));
        if message.version != VERSION {
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
        assert_eq!(id.as_deref(), Some("job-1"));
        assert!(matches!(why, Rejection::Digest(_)), "{why}");
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
