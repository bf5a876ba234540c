//! One turn's delegations: which children run, which wait for a slot, and what each returned.
//!
//! Children start at most `max_parallel_delegates` at a time; the rest queue. Each child's
//! outcome becomes a tool result for its delegate call: the child's final text when it
//! completed, an error text naming the child and its stop otherwise (Perstack ends the whole
//! job instead; see COMPATIBILITY.md).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kameo::prelude::*;
use serde_json::Map;

use super::{Begin, Parent, RunActor, RunArgs, RunFinished, Start};
use crate::actor::context::JobContext;
use crate::agent::{Machine, MachineSetting, Resumption};
use crate::schema::{
    Checkpoint, CheckpointStatus, DelegateTo, DelegatedBy, MessagePart, ToolResult, Usage,
    id::new_id,
};

/// The delegations of one turn.
pub(super) struct Delegation {
    calls: Vec<DelegateTo>,
    /// Slots waiting for a free place, with how each child starts.
    queue: VecDeque<(usize, Resumption)>,
    results: Vec<Option<ToolResult>>,
    children: HashMap<ActorId, usize>,
    running: usize,
    last_step: u32,
    usage: Usage,
    parent_step: u32,
}

impl Delegation {
    pub(super) fn new(calls: Vec<DelegateTo>, parent: &Checkpoint) -> Self {
        let n = calls.len();
        let queue = calls
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, call)| (i, Resumption::Fresh { call }))
            .collect();
        Delegation {
            calls,
            queue,
            results: vec![None; n],
            children: HashMap::new(),
            running: 0,
            last_step: parent.step_number,
            usage: Usage::default(),
            parent_step: parent.step_number,
        }
    }

    /// The delegations of a stored `stoppedByDelegate` checkpoint: finished children count as
    /// reported, the others queue to resume or start again.
    pub(super) fn recover(children: Vec<(DelegateTo, Resumption)>, parent: &Checkpoint) -> Self {
        let calls: Vec<DelegateTo> = children.iter().map(|(c, _)| c.clone()).collect();
        let mut d = Delegation::new(calls, parent);
        d.queue.clear();
        for (slot, (_, r)) in children.into_iter().enumerate() {
            match r {
                Resumption::Done { checkpoint } => {
                    let text = final_text(&checkpoint);
                    d.running += 1; // balanced by `child_finished`
                    d.child_finished(RunFinished {
                        slot,
                        checkpoint,
                        text,
                    });
                }
                other => d.queue.push_back((slot, other)),
            }
        }
        d
    }

    pub(super) fn is_done(&self) -> bool {
        self.results.iter().all(Option::is_some)
    }

    /// Start queued children while slots are free.
    pub(super) async fn start_more(
        &mut self,
        ctx: &Arc<JobContext>,
        me: &ActorRef<RunActor>,
        parent: &Checkpoint,
    ) {
        while self.running < ctx.settings.max_parallel_delegates.max(1) {
            let Some((slot, resumption)) = self.queue.pop_front() else {
                break;
            };
            let call = &self.calls[slot];
            let (checkpoint, start) = match resumption {
                Resumption::Fresh { .. } | Resumption::Done { .. } => {
                    let setting = MachineSetting {
                        job_id: ctx.job_id.clone(),
                        run_id: new_id(),
                        expert: call.expert.clone(),
                        max_steps: ctx.settings.max_steps,
                        max_retries: ctx.settings.max_retries,
                        context_window: ctx.settings.context_window,
                    };
                    let mut checkpoint = Machine::fresh_checkpoint(&setting, self.parent_step + 1);
                    checkpoint.delegated_by = Some(DelegatedBy {
                        expert: parent.expert.clone(),
                        tool_call_id: call.tool_call_id.clone(),
                        tool_name: call.tool_name.clone(),
                        checkpoint_id: parent.id.clone(),
                        run_id: parent.run_id.clone(),
                    });
                    (checkpoint, Start::Query(call.query.clone()))
                }
                Resumption::Continue { checkpoint } => (next_segment(checkpoint), Start::Resume),
                Resumption::AwaitChildren {
                    mut checkpoint,
                    children,
                } => {
                    checkpoint.run_id = new_id();
                    (checkpoint, Start::Recover(children))
                }
            };
            let args = RunArgs {
                ctx: ctx.clone(),
                expert_key: call.expert.key.clone(),
                checkpoint,
                start,
            };
            let child = RunActor::supervise(me, args)
                .restart_policy(kameo::supervision::RestartPolicy::Never)
                .spawn_with_mailbox(kameo::mailbox::bounded(super::RUN_MAILBOX))
                .await;
            self.children.insert(child.id(), slot);
            self.running += 1;
            // The child's mailbox is new and only we know it, so this never waits for space. A
            // child that failed to start refuses it; its death notice then fails the slot.
            let begin = Begin {
                parent: Parent::Run(me.clone(), slot),
            };
            if let Err(e) = child.tell(begin).await {
                tracing::warn!(job = %ctx.job_id, slot, "delegated run did not start: {e}");
            }
        }
    }

    /// A child reported.
    pub(super) fn child_finished(&mut self, r: RunFinished) {
        let Some(call) = self.calls.get(r.slot) else {
            return;
        };
        if self.results[r.slot].is_some() {
            return;
        }
        self.running = self.running.saturating_sub(1);
        self.children.retain(|_, s| *s != r.slot);
        self.last_step = self.last_step.max(r.checkpoint.step_number);
        self.usage += r.checkpoint.usage;
        let text = match (r.checkpoint.status, r.text) {
            (CheckpointStatus::Completed, Some(text)) => text,
            (CheckpointStatus::Completed, None) => String::new(),
            (status, _) => {
                let why = r
                    .checkpoint
                    .error
                    .as_ref()
                    .map(|e| format!(": {}: {}", e.name, e.message))
                    .unwrap_or_default();
                format!(
                    "Delegation to expert \"{}\" failed: it stopped with status {}{why}",
                    call.expert.key,
                    status.as_str()
                )
            }
        };
        self.results[r.slot] = Some(result_for(call, text));
    }

    /// A child died without reporting; returns its slot when it was one of ours.
    pub(super) fn child_died(&mut self, id: ActorId, reason: &ActorStopReason) -> Option<usize> {
        let slot = self.children.remove(&id)?;
        if self.results[slot].is_some() {
            return None;
        }
        self.running = self.running.saturating_sub(1);
        let call = &self.calls[slot];
        let text = format!(
            "Delegation to expert \"{}\" failed: the run crashed ({reason})",
            call.expert.key
        );
        self.results[slot] = Some(result_for(call, text));
        Some(slot)
    }

    /// The highest step any child reached, their summed usage, and results in call order.
    pub(super) fn into_results(self) -> (u32, Usage, Vec<ToolResult>) {
        (
            self.last_step,
            self.usage,
            self.results.into_iter().flatten().collect(),
        )
    }
}

/// A stored checkpoint continued as a new segment: new id and run id, the next step.
pub(crate) fn next_segment(mut checkpoint: Checkpoint) -> Checkpoint {
    checkpoint.id = new_id();
    checkpoint.run_id = new_id();
    checkpoint.step_number += 1;
    checkpoint
}

/// A finished run's result text: the first text of its last expert message (Perstack's rule).
pub(crate) fn final_text(checkpoint: &Checkpoint) -> Option<String> {
    if checkpoint.status != CheckpointStatus::Completed {
        return None;
    }
    checkpoint
        .messages
        .last()
        .filter(|m| m.is_expert())
        .and_then(|m| m.first_text())
        .map(str::to_owned)
}

fn result_for(call: &DelegateTo, text: String) -> ToolResult {
    ToolResult {
        id: call.tool_call_id.clone(),
        skill_name: format!("delegate/{}", call.expert.key),
        tool_name: call.tool_name.clone(),
        result: vec![MessagePart::text(text)],
        extra: Map::new(),
    }
}
