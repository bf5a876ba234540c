//! How a run ends: it closes its skills, waits until every one is down (their
//! `skillDisconnected` events come before the report), then reports [`RunFinished`] to its
//! [`Parent`] exactly once. The link notices of closing skills arrive in the run's own mailbox,
//! so the wait is never an await here: `on_link_died` sends the report when the last skill is
//! down.

use kameo::prelude::*;

use super::{Parent, RunActor, RunFinished};
use crate::actor::skill::SkillRef;

impl RunActor {
    /// Close skills, then report to the parent (once every skill is down) and stop.
    pub(super) async fn close_and_report(&mut self, me: Option<ActorRef<Self>>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.pending_report = Some(Box::new(RunFinished {
            slot: 0,
            checkpoint: self.machine.checkpoint().clone(),
            text: self.result_text.clone(),
        }));
        // Skills stop concurrently; each publishes its own `skillDisconnected` before stopping.
        // Their link notices arrive in this mailbox, so waiting for them here would deadlock:
        // `on_link_died` sends the report when the last one is down.
        for (_, skill) in std::mem::take(&mut self.skills) {
            match skill {
                SkillRef::Actor(skill) => {
                    if skill.is_alive() && skill.tell(crate::actor::skill::Close).await.is_ok() {
                        self.closing.insert(skill.id());
                    }
                }
                // Closed here: its `skillDisconnected` is out before the report.
                SkillRef::Inline(skill) => skill.close().await,
            }
        }
        if self.closing.is_empty() || me.is_none() {
            self.closing.clear();
            self.send_report().await;
        }
    }

    pub(super) async fn send_report(&mut self) {
        let Some(report) = self.pending_report.take().map(|r| *r) else {
            return;
        };
        match &mut self.parent {
            None => {
                // Unreachable: the report is only made after `Begin`.
                tracing::error!(run = %self.machine.setting().run_id, "run finished before it began; no parent to report to");
            }
            Some(Parent::Job(job)) => {
                if let Some(job) = job.take() {
                    let _ = job.send(Box::new(report));
                }
            }
            Some(Parent::Run(parent, slot)) => {
                let (parent, slot) = (parent.clone(), *slot);
                // In flight until the parent has handled it (it may resume and write).
                self.ctx.enter();
                let sent = parent.tell(RunFinished { slot, ..report }).await;
                if sent.is_err() {
                    self.ctx.leave();
                }
            }
        }
    }

    /// Finished and reported: the actor may stop.
    pub(super) fn is_done(&self) -> bool {
        self.finished && self.pending_report.is_none()
    }
}
