//! A recorded job, as replay reads it: its events (a stored job's, or Perstack's stdout
//! recording `events.jsonl`), its stored checkpoints and the settings it ran with.
//!
//! Owns reading a stdout recording and choosing, from what was recorded, the coordinator, the
//! query, the later invocations (continuations), the Expert definitions and the limits a replay runs with: the stored run setting
//! first, then the recording's `initializeRuntime`, then the configuration (Perstack stores no
//! run setting, so its jobs need `perstack.toml` for the Expert definitions). Reading the
//! file-system store is the CLI's (`perstack log` already does it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::compare::is_state;
use crate::engine::Settings;
use crate::schema::{Checkpoint, Event, EventPayload, Expert, InitializeRuntime, RunSetting};

/// Why a recording cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordingError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not an event.
    #[error("{}:{line}: not a Perstack event: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        source: serde_json::Error,
    },
    /// Nothing to replay, or nothing to replay it with.
    #[error("{0}")]
    Unusable(String),
}

/// How the job was continued after an invocation ended: `--continue-job` with a new query, or
/// `-i` with the answer to the pending interactive call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Continuation {
    /// A new query.
    Query(String),
    /// The answer's text.
    Answer(String),
}

/// A job's recorded history (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Recording {
    /// The job id (the replay reuses it, in a scratch store).
    pub job_id: String,
    /// The coordinator Expert.
    pub coordinator: String,
    /// The job's query.
    pub query: String,
    /// Every event, in the order it happened.
    pub events: Vec<Event>,
    /// The stored checkpoints (for a stdout recording, those its events carry).
    pub checkpoints: Vec<Checkpoint>,
    /// The coordinator's first stored run setting.
    pub setting: Option<RunSetting>,
    /// The first `initializeRuntime` (stdout recordings only; it is not stored).
    pub runtime: Option<InitializeRuntime>,
    /// The job's later invocations, in order.
    pub continuations: Vec<Continuation>,
}

impl Recording {
    /// Perstack's stdout recording: one event per line.
    pub(crate) fn from_jsonl(path: &Path) -> Result<Self, RecordingError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecordingError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut events = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let event: Event =
                serde_json::from_str(line).map_err(|source| RecordingError::Parse {
                    path: path.to_owned(),
                    line: n + 1,
                    source,
                })?;
            events.push(event);
        }
        let checkpoints = events
            .iter()
            .filter_map(|e| e.checkpoint().cloned())
            .collect();
        let runtime = events.iter().find_map(|e| match &e.payload {
            EventPayload::InitializeRuntime(i) => Some((**i).clone()),
            _ => None,
        });
        Self::new(events, checkpoints, Vec::new(), runtime)
    }

    /// A stored job: its events by time, its checkpoints and every stored run setting.
    pub(crate) fn from_store(
        events: Vec<Event>,
        checkpoints: Vec<Checkpoint>,
        settings: Vec<RunSetting>,
    ) -> Result<Self, RecordingError> {
        Self::new(events, checkpoints, settings, None)
    }

    fn new(
        events: Vec<Event>,
        checkpoints: Vec<Checkpoint>,
        settings: Vec<RunSetting>,
        runtime: Option<InitializeRuntime>,
    ) -> Result<Self, RecordingError> {
        let first = events
            .iter()
            .filter(|e| is_state(e))
            .find_map(|e| match &e.payload {
                EventPayload::StartRun(p) => Some((e, p)),
                _ => None,
            })
            .ok_or_else(|| {
                RecordingError::Unusable("the recording has no startRun event".into())
            })?;
        let (start, payload) = first;
        let query = payload
            .input_messages
            .iter()
            .find(|m| matches!(m, crate::schema::Message::UserMessage(_)))
            .and_then(|m| m.first_text())
            .map(str::to_owned)
            .or_else(|| runtime.as_ref().and_then(|r| r.query.clone()))
            .ok_or_else(|| {
                RecordingError::Unusable("the job's first run has no query to replay".into())
            })?;
        let setting = settings
            .iter()
            .find(|s| s.run_id == start.run_id)
            .or_else(|| {
                settings
                    .iter()
                    .filter(|s| s.job_id == start.job_id)
                    .min_by_key(|s| s.started_at)
            })
            .cloned();
        let coordinator = start.expert_key.clone().unwrap_or_default();
        let continuations = continuations(&events, &coordinator, &start.run_id);
        Ok(Recording {
            continuations,
            job_id: start.job_id.clone(),
            coordinator,
            query,
            events,
            checkpoints,
            setting,
            runtime,
        })
    }

    /// The settings the replay runs with: the stored run setting's Experts and limits, else the
    /// recorded `initializeRuntime`'s limits and `experts` (the configuration's). Workspace,
    /// isolation and environment are the caller's.
    pub(crate) fn settings(
        &self,
        experts: Option<BTreeMap<String, Expert>>,
    ) -> Result<Settings, RecordingError> {
        let stored = self.setting.as_ref().filter(|s| !s.experts.is_empty());
        let experts = match (stored, experts) {
            (Some(s), _) => (*s.experts).clone(),
            (None, Some(e)) => e,
            (None, None) => {
                return Err(RecordingError::Unusable(
                    "the recording holds no Expert definitions (Perstack stores no run \
                     setting): pass the job's perstack.toml with --config"
                        .into(),
                ));
            }
        };
        if !experts.contains_key(&self.coordinator) {
            return Err(RecordingError::Unusable(format!(
                "the job's coordinator \"{}\" is not among the Experts it is replayed with",
                self.coordinator
            )));
        }
        let mut s = Settings::new(experts);
        if let Some(st) = &self.setting {
            s.model = st.model.clone();
            s.provider_name = st.provider_config.provider_name.clone();
            s.reasoning_budget = st.reasoning_budget;
            s.max_steps = st.max_steps;
            s.max_retries = st.max_retries;
            s.timeout = Duration::from_millis(st.timeout);
        } else if let Some(rt) = &self.runtime {
            s.model = rt.model.clone();
            if let Some(n) = rt.max_steps {
                s.max_steps = n;
            }
            s.max_retries = rt.max_retries;
            s.timeout = Duration::from_millis(rt.timeout);
        }
        s.context_window = crate::llm::models::context_window(&s.model);
        Ok(s)
    }
}

/// The coordinator segments that began a new invocation: a `startRun` with a user message (a
/// continued job's query) or on a `stoppedByInteractiveTool` checkpoint (an answer), other than
/// the first run's. A segment resumed after a delegation is part of its invocation.
fn continuations(events: &[Event], coordinator: &str, first_run: &str) -> Vec<Continuation> {
    events
        .iter()
        .filter(|e| e.run_id != first_run && e.expert_key.as_deref() == Some(coordinator))
        .filter_map(|e| match &e.payload {
            EventPayload::StartRun(p) if p.initial_checkpoint.delegated_by.is_none() => {
                let query = p
                    .input_messages
                    .iter()
                    .find(|m| matches!(m, crate::schema::Message::UserMessage(_)))
                    .and_then(|m| m.first_text());
                match (query, p.initial_checkpoint.status) {
                    (Some(q), _) => Some(Continuation::Query(q.to_owned())),
                    (None, crate::schema::CheckpointStatus::StoppedByInteractiveTool) => p
                        .initial_checkpoint
                        .partial_tool_results
                        .as_ref()
                        .and_then(|r| r.last())
                        .map(|r| Continuation::Answer(r.text())),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::Recording;
    use crate::schema::{Event, Expert};

    const S09: &str =
        include_str!("../../tests/fixtures/perstack-traces/s09-max-steps/events.jsonl");

    fn recording() -> Recording {
        let events: Vec<Event> = S09
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let checkpoints = events
            .iter()
            .filter_map(|e| e.checkpoint().cloned())
            .collect();
        let runtime = events.iter().find_map(|e| match &e.payload {
            crate::schema::EventPayload::InitializeRuntime(i) => Some((**i).clone()),
            _ => None,
        });
        Recording::new(events, checkpoints, Vec::new(), runtime).unwrap()
    }

    fn experts() -> BTreeMap<String, Expert> {
        crate::config::parse(
            "[experts.\"coord\"]\ninstruction = \"x\"\n",
            std::path::Path::new("perstack.toml"),
        )
        .unwrap()
        .experts
    }

    #[test]
    fn a_stdout_recording_names_its_job_coordinator_query_and_limits() {
        let rec = recording();
        assert_eq!(rec.job_id, "job-s09-max-steps");
        assert_eq!(rec.coordinator, "coord");
        assert_eq!(rec.query, "please do the thing");
        assert!(rec.continuations.is_empty());
        let s = rec.settings(Some(experts())).unwrap();
        assert_eq!(
            (s.max_steps, s.max_retries),
            (3, 0),
            "initializeRuntime's limits"
        );
        assert_eq!(s.timeout, Duration::from_millis(30_000));
    }

    #[test]
    fn without_a_stored_setting_the_experts_must_come_from_the_configuration() {
        let rec = recording();
        let e = rec.settings(None).unwrap_err();
        assert!(e.to_string().contains("--config"), "{e}");
        let mut other = experts();
        let coord = other.remove("coord").unwrap();
        other.insert("someone-else".into(), coord);
        let e = rec.settings(Some(other)).unwrap_err();
        assert!(e.to_string().contains("\"coord\""), "{e}");
    }

    #[test]
    fn a_stored_setting_wins_over_the_configuration() {
        let mut rec = recording();
        let base = crate::engine::Settings::new(experts());
        let mut stored = base.run_setting(
            &rec.job_id,
            "run-1",
            "coord",
            crate::schema::RunInput::default(),
            1,
        );
        stored.max_steps = 42;
        rec.setting = Some(stored);
        let s = rec.settings(Some(BTreeMap::new())).unwrap();
        assert_eq!(s.max_steps, 42);
        assert!(s.experts.contains_key("coord"), "the stored Experts");
    }
}
