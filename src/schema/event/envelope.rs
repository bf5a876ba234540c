//! [`Envelope`]: the one place an [`Event`] is built.
//!
//! Every event of the engine (a run's state and streaming events, its `initializeRuntime`, a
//! skill's lifecycle events) gets its id, its timestamp and its `jobId`, `runId`, `expertKey`
//! and `stepNumber` here. Producers keep an envelope for what they emit (the machine for its
//! step, a generation task for its stream, a skill for its run) and stamp payloads with it.
//! Sequence numbers are not set here: the event bus gives them when it writes the event.

use super::{Event, EventPayload};
use crate::schema::id::new_id;

/// The envelope fields an event source shares: everything but the event's own id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    job_id: String,
    run_id: String,
    /// Set for state and streaming events, with `step_number`; `None` for runtime events.
    step: Option<(String, u32)>,
}

impl Envelope {
    /// The envelope of a run's state and streaming events: `expertKey` and `stepNumber` set.
    pub fn step(
        job_id: impl Into<String>,
        run_id: impl Into<String>,
        expert_key: impl Into<String>,
        step_number: u32,
    ) -> Self {
        Envelope {
            job_id: job_id.into(),
            run_id: run_id.into(),
            step: Some((expert_key.into(), step_number)),
        }
    }

    /// The envelope of a run's runtime events (`initializeRuntime`, `skill*`): no `expertKey`
    /// and no `stepNumber`, so they are printed but never stored (as in Perstack).
    pub fn runtime(job_id: impl Into<String>, run_id: impl Into<String>) -> Self {
        Envelope {
            job_id: job_id.into(),
            run_id: run_id.into(),
            step: None,
        }
    }

    /// An event of this envelope with a fresh id, at `now` (epoch ms).
    pub fn event(&self, now: u64, payload: EventPayload) -> Event {
        self.clone().into_event(now, payload)
    }

    /// [`Envelope::event`] for a one-off envelope, without copying its fields.
    pub fn into_event(self, now: u64, payload: EventPayload) -> Event {
        let (expert_key, step_number) = match self.step {
            Some((key, step)) => (Some(key), Some(step)),
            None => (None, None),
        };
        Event {
            id: new_id(),
            timestamp: now,
            job_id: self.job_id,
            run_id: self.run_id,
            expert_key,
            step_number,
            job_seq: None,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::Envelope;
    use crate::schema::{EventPayload, SkillDisconnected};

    fn payload() -> EventPayload {
        EventPayload::SkillDisconnected(SkillDisconnected {
            skill_name: "s".into(),
            extra: Map::new(),
        })
    }

    #[test]
    fn a_step_envelope_sets_every_field_and_a_runtime_one_leaves_the_step_out() {
        let e = Envelope::step("j", "r", "x", 3).event(7, payload());
        assert_eq!(
            (e.job_id.as_str(), e.run_id.as_str(), e.timestamp),
            ("j", "r", 7)
        );
        assert_eq!(
            (e.expert_key.as_deref(), e.step_number),
            (Some("x"), Some(3))
        );
        assert!(e.is_run_event());
        let r = Envelope::runtime("j", "r").into_event(8, payload());
        assert!(!r.is_run_event());
        assert_eq!((r.expert_key, r.step_number), (None, None));
    }

    #[test]
    fn every_event_of_one_envelope_gets_its_own_id() {
        let env = Envelope::runtime("j", "r");
        assert_ne!(env.event(1, payload()).id, env.event(1, payload()).id);
    }
}
