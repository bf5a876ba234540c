//! The event side of [`JetStreamStorage`]: stored events are messages of the
//! `PERSTACK_EVENTS` stream, one subject per job (`perstack.events.<job>`), each with a
//! `Nats-Msg-Id` of `<jobId>:<jobSeq>` so that a write repeated after a lost acknowledgement is
//! dropped by the server. A claimed job's events are fenced: each publish expects the subject's
//! last sequence to be the one this holder wrote last, so a holder that lost the job writes
//! nothing more.

use async_nats::HeaderMap;

use super::lease::{into_store_error, nonce};
use super::{JetStreamStorage, names, parse, to_json};
use crate::schema::Event;
use crate::storage::{StoreError, check_id};

impl JetStreamStorage {
    /// Append a run event to its job's subject (runtime events are not stored); fenced by
    /// the job's last event sequence when the job is claimed here.
    pub(super) async fn append_event(&self, event: &Event) -> Result<(), StoreError> {
        if !event.is_run_event() {
            return Ok(());
        }
        check_id("job", &event.job_id)?;
        check_id("run", &event.run_id)?;
        let handles = self.handles().await?;
        let body = to_json("event", &event.stored())?;
        let mut headers = HeaderMap::new();
        let msg_id = match event.job_seq {
            Some(seq) => {
                headers.insert(names::JOB_SEQ, seq.to_string().as_str());
                format!("{}:{seq}", event.job_id)
            }
            None => format!("{}:{}", event.job_id, nonce()),
        };
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        let subject = names::events_subject(&event.job_id);
        let Some(fence) = self.fence(&event.job_id)? else {
            return self
                .inner
                .wire
                .publish("store event", &subject, headers, body, None)
                .await
                .map(drop)
                .map_err(into_store_error);
        };
        let mut last = fence.events.lock().await;
        self.publish_fenced(
            "store event",
            &subject,
            headers,
            body,
            (&fence, &mut last),
            (&handles.events, &subject),
        )
        .await
        .map(drop)
    }

    /// The events of run `run_id` of job `job_id`, up to step `max_step`, by timestamp, then
    /// the order stored (the stream's order); the stream's other records are skipped.
    pub(super) async fn run_events(
        &self,
        job_id: &str,
        run_id: &str,
        max_step: Option<u32>,
    ) -> Result<Vec<Event>, StoreError> {
        check_id("job", job_id)?;
        check_id("run", run_id)?;
        let handles = self.handles().await?;
        let messages = self
            .inner
            .wire
            .scan(&handles.events, &names::events_subject(job_id), false)
            .await?;
        let mut events = Vec::new();
        for message in messages
            .iter()
            .filter(|m| m.header(names::RECORD).is_none())
        {
            let event: Event = parse(message, "event")?;
            if event.run_id == run_id
                && max_step.is_none_or(|max| event.step_number.is_some_and(|s| s <= max))
            {
                events.push(event);
            }
        }
        events.sort_by_key(|e| e.timestamp);
        Ok(events)
    }
}
