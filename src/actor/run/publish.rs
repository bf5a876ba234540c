//! What a run shows: the `initializeRuntime` of each segment (with its stored run setting), a
//! machine output's events in one publish, and the one terminal event of a run whose events
//! could no longer be published.

use serde_json::Map;

use super::RunActor;
use crate::actor::context::now_ms;
use crate::agent::{RunFailure, Start};
use crate::schema::{Envelope, Event, EventPayload, InitializeRuntime};

impl RunActor {
    /// `initializeRuntime` for this segment.
    pub(super) async fn announce_segment(&mut self, now: u64) {
        let query = match self.start.as_deref() {
            Some(Start::Query(q)) => Some(q.clone()),
            _ => None,
        };
        let answer = match self.start.as_deref() {
            Some(Start::Answer(a)) => Some(a.clone()),
            _ => None,
        };
        self.announce(now, query, answer).await;
    }

    pub(super) async fn announce(
        &self,
        now: u64,
        query: Option<String>,
        answer: Option<crate::schema::InteractiveToolCallResult>,
    ) {
        // Both built outside this frame and boxed: a run may wait long in the publish below
        // (the bus is busy), and its future would hold them all that time.
        let (setting, event) = self.segment_records(now, query, answer);
        if let Err(e) = self.ctx.storage.store_run_setting(&setting).await {
            tracing::warn!(run = %setting.run_id, "could not store run-setting.json: {e}");
        }
        drop(setting);
        let _ = self.ctx.publish(*event).await;
    }

    /// The run setting to store and the `initializeRuntime` event of a segment.
    pub(super) fn segment_records(
        &self,
        now: u64,
        query: Option<String>,
        answer: Option<crate::schema::InteractiveToolCallResult>,
    ) -> (Box<crate::schema::RunSetting>, Box<Event>) {
        let s = &self.ctx.settings;
        let input = crate::schema::RunInput {
            text: query.clone(),
            interactive_tool_call_result: answer.clone(),
        };
        let setting = Box::new(s.run_setting(
            &self.ctx.job_id,
            &self.machine.setting().run_id,
            &self.expert.key,
            input,
            now,
        ));
        let event = self.runtime_event(
            now,
            EventPayload::InitializeRuntime(Box::new(InitializeRuntime {
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                runtime: Some("local".into()),
                expert_name: self.expert.name.clone(),
                experts: s.experts.keys().cloned().collect(),
                model: s.model.clone(),
                max_steps: Some(s.max_steps),
                max_retries: s.max_retries,
                timeout: u64::try_from(s.timeout.as_millis()).unwrap_or(u64::MAX),
                query,
                interactive_tool_call: answer,
                extra: Map::new(),
            })),
        );
        (setting, Box::new(event))
    }

    /// Publish a machine output's events in order, in one message. A closed output fails the
    /// job (the events are still stored). A storage failure fails the job and stops the
    /// batch: the event and those after it are not shown, and the run must end with
    /// [`RunActor::stop_unstored`].
    pub(super) async fn publish_events(
        &mut self,
        mut events: Vec<Event>,
    ) -> Result<(), RunFailure> {
        if events.is_empty() {
            return Ok(());
        }
        // Held until the bus has taken them, which can be long on a busy bus: no spare slots.
        events.shrink_to_fit();
        for event in &events {
            if let EventPayload::CompleteRun(c) = &event.payload {
                self.result_text = Some(c.text.clone());
            }
        }
        let Err(e) = self.ctx.publish_batch(events).await else {
            return Ok(());
        };
        let failure = e.run_failure();
        tracing::error!(run = %self.machine.setting().run_id, "{e}");
        if failure.stops_the_job() {
            self.ctx.fail(failure.clone());
        }
        if e.event_was_stored() {
            Ok(())
        } else {
            Err(failure)
        }
    }

    /// End the run with `failure` after an event of it could not be published: whatever end
    /// the machine reached was never shown, so this is the run's one terminal event. Shown
    /// unstored for a storage failure; for any other (a bus that is gone) nothing can be shown
    /// and the checkpoint only goes to the parent's report.
    pub(super) async fn stop_unstored(&mut self, failure: RunFailure) {
        let out = self.machine.fail(now_ms(), failure.clone());
        if !failure.is_visible_unstored() {
            return;
        }
        for event in out.events {
            if let Err(e) = self.ctx.publish_unstored(event).await {
                tracing::error!(run = %self.machine.setting().run_id, "{e}");
            }
        }
    }

    pub(super) fn runtime_event(&self, now: u64, payload: EventPayload) -> Event {
        Envelope::runtime(
            self.ctx.job_id.as_str(),
            self.machine.setting().run_id.as_str(),
        )
        .into_event(now, payload)
    }
}
