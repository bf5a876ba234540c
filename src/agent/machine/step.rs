//! The step boundary: PreparingForStep and FinishingStep.
//!
//! Owns where a step begins (resume pending calls from the checkpoint, fold partial results
//! into a tool message, or start a generation) and where it ends (the job-wide step limit, or
//! `continueToNextStep` with a fresh checkpoint id and step). Like the rest of the machine it
//! never does I/O; it hands over to `calls` (pending calls) and asks for the next
//! [`Effect::Generate`].

use serde_json::Map;

use super::{Effect, Machine, Output, Phase};
use crate::schema::{
    CheckpointStatus, ContinueToNextStep, Event, EventPayload, Message, NewMessages,
    ResumeToolCalls, StartGeneration, Step, StopRun, id::new_id,
};

impl Machine {
    // PreparingForStep
    pub(super) fn prepare(&mut self, now: u64, mut events: Vec<Event>) -> Output {
        let pending = self
            .checkpoint
            .pending_tool_calls
            .clone()
            .unwrap_or_default();
        let partial = self
            .checkpoint
            .partial_tool_results
            .clone()
            .unwrap_or_default();
        if !pending.is_empty() {
            events.push(self.event(
                now,
                EventPayload::ResumeToolCalls(ResumeToolCalls {
                    pending_tool_calls: pending.clone(),
                    partial_tool_results: partial.clone(),
                    extra: Map::new(),
                }),
            ));
            self.step.tool_results = Some(partial);
            self.step.pending_tool_calls = Some(pending.clone());
            let plan = self.plan(&pending);
            return self.run_plan(now, events, plan);
        }
        if !partial.is_empty() {
            let msg = Message::tool(&partial);
            events.push(self.event(
                now,
                EventPayload::FinishAllToolCalls(NewMessages {
                    new_messages: vec![msg.clone()],
                    extra: Map::new(),
                }),
            ));
            self.step.tool_results = Some(partial);
            self.checkpoint.messages.push(msg.clone());
            self.step.new_messages.push(msg);
            self.checkpoint.pending_tool_calls = None;
            self.checkpoint.partial_tool_results = None;
            return self.finish_step(now, events);
        }
        events.push(self.event(
            now,
            EventPayload::StartGeneration(StartGeneration {
                messages: self.checkpoint.messages.clone(),
                extra: Map::new(),
            }),
        ));
        self.phase = Phase::GeneratingToolCall;
        Output {
            events,
            effect: Effect::Generate {
                messages: self.checkpoint.messages.clone(),
                with_tools: true,
                retry_count: self.checkpoint.retry_count.unwrap_or(0),
                retry_after: self.retry_after.take(),
            },
        }
    }

    // FinishingStep
    pub(super) fn finish_step(&mut self, now: u64, mut events: Vec<Event>) -> Output {
        self.step.finished_at = Some(now);
        if self.checkpoint.step_number >= self.setting.max_steps {
            self.checkpoint.status = CheckpointStatus::StoppedByExceededMaxSteps;
            events.push(self.event(
                now,
                EventPayload::StopRunByExceededMaxSteps(Box::new(StopRun {
                    checkpoint: self.checkpoint.clone(),
                    step: self.step.clone(),
                    extra: Map::new(),
                })),
            ));
            self.phase = Phase::Stopped;
            return Output {
                events,
                effect: Effect::Stop,
            };
        }
        self.checkpoint.status = CheckpointStatus::Proceeding;
        let mut next = self.checkpoint.clone();
        next.id = new_id();
        next.step_number += 1;
        events.push(self.event(
            now,
            EventPayload::ContinueToNextStep(Box::new(ContinueToNextStep {
                checkpoint: self.checkpoint.clone(),
                step: self.step.clone(),
                next_checkpoint: next.clone(),
                extra: Map::new(),
            })),
        ));
        self.checkpoint = next;
        self.step = Step::new(self.checkpoint.step_number, now);
        self.step.input_messages = Some(Vec::new());
        self.prepare(now, events)
    }
}
