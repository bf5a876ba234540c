//! One turn's children as actors: spawns the children the pure [`Delegation`] names, linked to
//! the run, and forwards their reports (or death notices) into it.
//!
//! The bookkeeping (slots, queue, results in call order, usage, what the parent resumes with)
//! lives in [`crate::agent::Delegation`]; this module only maps child actors to slots. It never
//! decides what a child's outcome means.

use std::collections::HashMap;
use std::sync::Arc;

use kameo::prelude::*;

use super::{Begin, Parent, RunActor, RunArgs, RunFinished};
use crate::actor::context::JobContext;
use crate::agent::{Delegation, MachineSetting};

/// A delegation in flight: the pure data plus which child actor holds which slot.
pub(super) struct Children {
    pub(super) delegation: Delegation,
    /// Child actors started and not reported yet, by slot.
    slots: HashMap<ActorId, usize>,
}

impl Children {
    pub(super) fn new(delegation: Delegation) -> Self {
        Children {
            delegation,
            slots: HashMap::new(),
        }
    }

    /// Spawn the children the delegation lets start now (at most `max_parallel_delegates` run).
    pub(super) async fn start_more(
        &mut self,
        ctx: &Arc<JobContext>,
        me: &ActorRef<RunActor>,
        parent: &MachineSetting,
        span: &tracing::Span,
    ) {
        let max = ctx.settings.max_parallel_delegates;
        while let Some(run) = self.delegation.next_child(parent, max) {
            let args = Box::new(RunArgs {
                parent_span: span.clone(),
                ctx: ctx.clone(),
                expert_key: run.expert_key,
                checkpoint: run.checkpoint,
                start: run.start,
            });
            // Linked, not supervised: a supervisor keeps each child's spawn arguments and
            // mailbox (a block of 32 slots, 3 KiB) until it stops itself, so a parent would
            // hold every finished child's until its own end. A link only carries the death
            // notices, both ways (see `RunActor::on_link_died`); it is made before the child
            // runs, so that no notice can be missed.
            let prepared =
                RunActor::prepare_with_mailbox(kameo::mailbox::bounded(super::RUN_MAILBOX));
            let child = prepared.actor_ref().clone();
            me.link(&child).await;
            prepared.spawn(args);
            self.slots.insert(child.id(), run.slot);
            // The child's mailbox is new and only we know it, so this never waits for space. A
            // child that failed to start refuses it; its death notice then fails the slot.
            let begin = Begin {
                parent: Parent::Run(me.clone(), run.slot),
            };
            // In flight until the child has handled it (its start may write).
            ctx.enter();
            if let Err(e) = child.tell(begin).await {
                ctx.leave();
                tracing::warn!(job = %ctx.job_id, slot = run.slot, "delegated run did not start: {e}");
            }
        }
    }

    /// A child reported.
    pub(super) fn child_finished(&mut self, r: RunFinished) {
        self.slots.retain(|_, s| *s != r.slot);
        self.delegation
            .child_finished(r.slot, &r.checkpoint, r.text);
    }

    /// A child actor died; whether it was one of ours that had not reported.
    pub(super) fn child_died(&mut self, id: ActorId, reason: &ActorStopReason) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        self.delegation.child_crashed(slot, &reason.to_string())
    }
}
