//! The ends of a run reachable from any state: `completeRun` and `stopRunByError`.
//!
//! Owns the final checkpoint of a completed run (status `completed`, retry count and pending
//! calls cleared) and of a run stopped by an error (status `stoppedByError`, the error kept on
//! the checkpoint). Both move the machine to `Stopped` and answer [`Effect::Stop`]; the run
//! actor stores the checkpoint. The other stops (delegate, interactive tool, max steps) belong
//! to the state that reaches them, in `calls` and `step`.

use serde_json::Map;

use super::{Effect, Machine, Output, Phase};
use crate::agent::failure::RunFailure;
use crate::schema::{
    CheckpointStatus, CompleteRun, Event, EventPayload, Message, StopRunByError, Usage,
};

impl Machine {
    pub(super) fn complete(
        &mut self,
        now: u64,
        new_messages: Vec<Message>,
        text: String,
        usage: Usage,
    ) -> Output {
        self.checkpoint
            .messages
            .extend(new_messages.iter().cloned());
        self.checkpoint.usage += usage;
        self.checkpoint.status = CheckpointStatus::Completed;
        self.checkpoint.retry_count = Some(0);
        self.checkpoint.pending_tool_calls = None;
        self.checkpoint.partial_tool_results = None;
        self.update_context_window_usage();
        self.step.new_messages.extend(new_messages);
        self.step.usage += usage;
        self.step.finished_at = Some(now);
        let events = vec![self.event(
            now,
            EventPayload::CompleteRun(Box::new(CompleteRun {
                checkpoint: self.checkpoint.clone(),
                step: self.step.clone(),
                text,
                usage,
                extra: Map::new(),
            })),
        )];
        self.phase = Phase::Stopped;
        Output {
            events,
            effect: Effect::Stop,
        }
    }

    pub(super) fn stop_by_error(
        &mut self,
        now: u64,
        mut events: Vec<Event>,
        failure: RunFailure,
    ) -> Output {
        let error = failure.to_run_error();
        self.checkpoint.status = CheckpointStatus::StoppedByError;
        // Perstack stores this checkpoint without `error`; it is kept here (COMPATIBILITY.md).
        self.checkpoint.error = Some(error.clone());
        self.step.finished_at = Some(now);
        events.push(self.event(
            now,
            EventPayload::StopRunByError(Box::new(StopRunByError {
                checkpoint: self.checkpoint.clone(),
                step: self.step.clone(),
                error,
                extra: Map::new(),
            })),
        ));
        self.phase = Phase::Stopped;
        Output {
            events,
            effect: Effect::Stop,
        }
    }
}
