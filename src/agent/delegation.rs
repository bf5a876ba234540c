//! One turn's delegations as plain data: the slots of the turn's delegate calls, which children
//! wait for a place, which are still pending, what each returned (kept in call order), the
//! children's summed usage and highest step, and what the parent resumes with.
//!
//! The machine creates a [`Delegation`] when a turn stops by delegation
//! ([`Effect::Delegate`](super::Effect::Delegate)); crash recovery rebuilds one from stored
//! checkpoints ([`Delegation::recover`]). The run actor only spawns the children
//! [`Delegation::next_child`] names, supervises them and forwards their reports
//! ([`Delegation::child_finished`], [`Delegation::child_crashed`]); once
//! [`Delegation::is_done`], [`Delegation::into_resumed`] says what the parent goes on with.
//! Nothing here spawns, awaits or reads the clock.
//!
//! Each child's outcome becomes a tool result for its delegate call: the child's final text
//! when it completed, an error text naming the child and its stop otherwise (Perstack ends the
//! whole job instead; see COMPATIBILITY.md).

use std::collections::VecDeque;

use serde_json::Map;

use super::machine::{Machine, MachineSetting, Start};
use super::recovery::Resumption;
use crate::schema::{
    Checkpoint, CheckpointStatus, DelegateTo, DelegatedBy, ExpertRef, InteractiveToolCallResult,
    MessagePart, ToolResult, Usage, id::new_id,
};

/// The delegations of one turn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Delegation {
    /// The turn's delegate calls; a call's index is its slot.
    calls: Vec<DelegateTo>,
    /// Slots waiting for a free place, with how each child goes on.
    queue: VecDeque<(usize, Resumption)>,
    /// One per slot, in call order; `None` while the child is pending.
    results: Vec<Option<ToolResult>>,
    /// Children started and not reported yet; bounded by the `max_parallel` of
    /// [`Delegation::next_child`].
    running: usize,
    /// The highest step any child reached (the parent's own step to begin with).
    last_step: u32,
    /// The reported children's summed usage.
    usage: Usage,
    /// The parent's `stoppedByDelegate` checkpoint, as each child's `delegatedBy` names it.
    parent: ParentRef,
}

#[derive(Debug, Clone, PartialEq)]
struct ParentRef {
    expert: ExpertRef,
    checkpoint_id: String,
    run_id: String,
    step_number: u32,
}

/// A child the run actor must spawn now.
#[derive(Debug, Clone)]
pub(crate) struct ChildRun {
    /// The delegate call's slot (its position in the turn).
    pub slot: usize,
    /// The child's Expert.
    pub expert_key: String,
    /// The checkpoint it starts from: a fresh one, or its stored one continued.
    pub checkpoint: Checkpoint,
    /// How it starts.
    pub start: Start,
}

/// What a parent resumes with once every child reported.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resumed {
    /// The highest step any child reached (the parent's next step is the one after).
    pub last_step: u32,
    /// The children's summed usage, added to the parent's.
    pub usage: Usage,
    /// One tool result per delegate call, in call order.
    pub results: Vec<ToolResult>,
}

impl Resumed {
    /// The input the resumed segment announces in `initializeRuntime`: the first delegate
    /// call's result, as Perstack shows it.
    pub(crate) fn announced_answer(&self) -> Option<InteractiveToolCallResult> {
        self.results.first().map(|r| InteractiveToolCallResult {
            tool_call_id: r.id.clone(),
            tool_name: r.tool_name.clone(),
            skill_name: r.skill_name.clone(),
            text: r.text(),
        })
    }
}

impl Delegation {
    /// The delegations of a turn that just stopped by delegation at `parent`: every child
    /// starts fresh, in call order.
    pub(crate) fn new(calls: Vec<DelegateTo>, parent: &Checkpoint) -> Self {
        let queue = calls
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, call)| (i, Resumption::Fresh { call }))
            .collect();
        Delegation {
            results: vec![None; calls.len()],
            calls,
            queue,
            running: 0,
            last_step: parent.step_number,
            usage: Usage::default(),
            parent: ParentRef {
                expert: parent.expert.clone(),
                checkpoint_id: parent.id.clone(),
                run_id: parent.run_id.clone(),
                step_number: parent.step_number,
            },
        }
    }

    /// The delegations of a stored `stoppedByDelegate` checkpoint: finished children count as
    /// reported, the others queue to resume or start again.
    pub(crate) fn recover(children: Vec<(DelegateTo, Resumption)>, parent: &Checkpoint) -> Self {
        let calls: Vec<DelegateTo> = children.iter().map(|(c, _)| c.clone()).collect();
        let mut d = Delegation::new(calls, parent);
        d.queue.clear();
        for (slot, (_, r)) in children.into_iter().enumerate() {
            match r {
                Resumption::Done { checkpoint } => {
                    let text = final_text(&checkpoint);
                    d.record(slot, &checkpoint, text);
                }
                other => d.queue.push_back((slot, other)),
            }
        }
        d
    }

    /// The turn's delegate calls, in call order.
    #[cfg(test)]
    pub(crate) fn calls(&self) -> &[DelegateTo] {
        &self.calls
    }

    /// Whether every child reported.
    pub(crate) fn is_done(&self) -> bool {
        self.results.iter().all(Option::is_some)
    }

    /// The slots whose child has not reported yet (running or waiting for a place).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> Vec<usize> {
        (0..self.results.len())
            .filter(|&s| self.results[s].is_none())
            .collect()
    }

    /// The next child to spawn while fewer than `max_parallel` (at least 1) run; `parent` is
    /// the parent run's setting (job id, context window). Counts the child as running.
    pub(crate) fn next_child(
        &mut self,
        parent: &MachineSetting,
        max_parallel: usize,
    ) -> Option<ChildRun> {
        if self.running >= max_parallel.max(1) {
            return None;
        }
        let (slot, resumption) = self.queue.pop_front()?;
        if self.queue.is_empty() {
            // Nothing is queued again: free the buffer (an entry is the size of a checkpoint)
            // rather than hold it while the parent waits for its children.
            self.queue = VecDeque::new();
        }
        let call = &self.calls[slot];
        let (checkpoint, start) = match resumption.into_start() {
            Ok(started) => started,
            // Never stored a step (or, unreachable, already done): start it from its query.
            Err(_) => {
                let setting = MachineSetting {
                    job_id: parent.job_id.clone(),
                    run_id: new_id(),
                    expert: call.expert.clone(),
                    max_steps: parent.max_steps,
                    max_retries: parent.max_retries,
                    context_window: parent.context_window,
                };
                let mut checkpoint =
                    Machine::fresh_checkpoint(&setting, self.parent.step_number + 1);
                checkpoint.delegated_by = Some(DelegatedBy {
                    expert: self.parent.expert.clone(),
                    tool_call_id: call.tool_call_id.clone(),
                    tool_name: call.tool_name.clone(),
                    checkpoint_id: self.parent.checkpoint_id.clone(),
                    run_id: self.parent.run_id.clone(),
                });
                (checkpoint, Start::Query(call.query.clone()))
            }
        };
        self.running += 1;
        Some(ChildRun {
            slot,
            expert_key: call.expert.key.clone(),
            checkpoint,
            start,
        })
    }

    /// The child of `slot` reported its final checkpoint (and its text when it completed).
    /// Returns whether the report was news (a slot already reported is ignored).
    pub(crate) fn child_finished(
        &mut self,
        slot: usize,
        checkpoint: &Checkpoint,
        text: Option<String>,
    ) -> bool {
        if self.results.get(slot).is_none_or(Option::is_some) {
            return false;
        }
        self.running = self.running.saturating_sub(1);
        self.record(slot, checkpoint, text);
        true
    }

    /// The child of `slot` died without reporting (`reason` says how). Returns whether this
    /// was news.
    pub(crate) fn child_crashed(&mut self, slot: usize, reason: &str) -> bool {
        let Some(call) = self.calls.get(slot) else {
            return false;
        };
        if self.results[slot].is_some() {
            return false;
        }
        self.running = self.running.saturating_sub(1);
        let text = format!(
            "Delegation to expert \"{}\" failed: the run crashed ({reason})",
            call.expert.key
        );
        self.results[slot] = Some(result_for(call, text));
        true
    }

    /// What the parent resumes with: the children's highest step, their summed usage, and the
    /// results in call order (a pending slot, which [`Delegation::is_done`] rules out, is left
    /// out).
    pub(crate) fn into_resumed(self) -> Resumed {
        Resumed {
            last_step: self.last_step,
            usage: self.usage,
            results: self.results.into_iter().flatten().collect(),
        }
    }

    fn record(&mut self, slot: usize, checkpoint: &Checkpoint, text: Option<String>) {
        let call = &self.calls[slot];
        self.last_step = self.last_step.max(checkpoint.step_number);
        self.usage += checkpoint.usage;
        let text = match (checkpoint.status, text) {
            (CheckpointStatus::Completed, Some(text)) => text,
            (CheckpointStatus::Completed, None) => String::new(),
            (status, _) => {
                let why = checkpoint
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
        self.results[slot] = Some(result_for(call, text));
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
        is_error: false,
        extra: Map::new(),
    }
}

#[cfg(test)]
mod tests;
