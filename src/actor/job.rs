//! The job actor: one per job. It starts the coordinator run (supervised by itself), keeps
//! `job.json` current, and ends the job with exactly one terminal state, handed to the
//! [`JobHandle`](crate::engine::JobHandle) through a oneshot.
//!
//! The job actor is the root of the job's actor tree and the only actor of a job that is not
//! supervised: when it stops, kameo frees its links, and with them every run's and skill's
//! spawn arguments. Nothing of the job may hold it in a cycle (see `run`'s module docs), and it
//! must always stop: after the coordinator's report, or after the coordinator's death notice.

use std::sync::Arc;

use kameo::prelude::*;
use tokio::sync::oneshot;

use super::context::{JobContext, now_ms};
use super::event_bus::CloseJob;
use super::run::{Begin, Parent, RunActor, RunArgs, RunFinished};
use crate::agent::{RunFailure, Start};
use crate::schema::{Checkpoint, CheckpointStatus, Job, JobStatus};
use crate::storage::StoreError;
use crate::storage::{Claim, Storage};

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// The final job record (as stored in `job.json`).
    pub job: Job,
    /// The coordinator's final checkpoint.
    pub checkpoint: Checkpoint,
    /// The coordinator's result text, when it completed.
    pub text: Option<String>,
    /// Whether this engine lost its claim on the job while it ran (a cluster store's lease
    /// that expired): the job was stopped here without writing anything more, and is not
    /// finished; its new holder carries it on. `job` is then this engine's last view, not
    /// what the store holds.
    pub claim_lost: bool,
    /// Whether the job was handed back (a cluster worker shutting down): its runs stopped at
    /// a step boundary without writing anything more, and the job is left `running` in the
    /// store for another worker to carry on.
    pub handed_back: bool,
}

/// What a job actor starts with.
pub(crate) struct JobArgs {
    /// Shared context.
    pub ctx: Arc<JobContext>,
    /// Where `job.json` goes.
    pub storage: Arc<dyn Storage>,
    /// The coordinator Expert.
    pub expert_key: String,
    /// The coordinator's starting checkpoint.
    pub checkpoint: Checkpoint,
    /// Its input.
    pub start: Start,
    /// The job record at start.
    pub job: Job,
    /// Resolved when the job ends (boxed: the channel holds a slot for it while the job runs).
    pub done: oneshot::Sender<Box<JobOutcome>>,
    /// The job's `tracing` span (fields `jobId`, `expertKey`), the parent of its coordinator
    /// run's span. A child of the span current where the job was started.
    pub span: tracing::Span,
    /// The right to write the job, held for the actor's life.
    pub claim: Claim,
}

/// One job.
pub(crate) struct JobActor {
    /// This actor, held while it runs. The engine keeps no reference to a job actor; without
    /// this one, only the coordinator's state would, and kameo delivers the coordinator's death
    /// notice through a weak reference to this mailbox, which fails once the coordinator's
    /// state is gone: a coordinator dying without a report would then leave the job without an
    /// outcome. Dropped with the state when the actor stops, so it keeps nothing alive after.
    _me: ActorRef<JobActor>,
    ctx: Arc<JobContext>,
    storage: Arc<dyn Storage>,
    /// Boxed: kameo's task future holds the actor several times over.
    job: Box<Job>,
    last: Box<Checkpoint>,
    done: Option<oneshot::Sender<Box<JobOutcome>>>,
    /// The right to write the job: no other process or engine can run or continue it while
    /// the job runs. Released right after the job's last write, before the outcome is handed
    /// out, so that whoever waits for the outcome can continue the job at once.
    claim: Option<Claim>,
}

impl Actor for JobActor {
    /// Boxed, as the actor's state: kameo's task future holds its arguments until it starts.
    type Args = Box<JobArgs>;
    type Error = std::convert::Infallible;

    async fn on_start(args: Box<JobArgs>, me: ActorRef<Self>) -> Result<Self, Self::Error> {
        // Boxed: this hook is inlined into the actor's task, which would otherwise be as
        // large as its largest await for the actor's whole life.
        Box::pin(async move {
            let args = *args;
            // A claim that can be lost (a lease) stops the job when it is: every run ends, and
            // the store refuses whatever they would still write. The task ends with the claim.
            let lost = args.claim.lost();
            let watched = args.ctx.clone();
            tokio::spawn(async move {
                if lost.await {
                    let e = StoreError::ClaimLost {
                        job_id: watched.job_id.clone(),
                    };
                    watched.fail(RunFailure::ClaimLost(e.to_string()));
                }
            });
            if let Err(e) = args.storage.store_job(&args.job).await {
                tracing::warn!(job = %args.job.id, "could not store job.json: {e}");
            }
            let run = Box::new(RunArgs {
                parent_span: args.span.clone(),
                ctx: args.ctx.clone(),
                expert_key: args.expert_key,
                checkpoint: args.checkpoint.clone(),
                start: args.start,
            });
            let coordinator = RunActor::supervise(&me, run)
                .restart_policy(kameo::supervision::RestartPolicy::Never)
                .spawn_with_mailbox(kameo::mailbox::bounded(super::run::RUN_MAILBOX))
                .await;
            // A new mailbox nobody else knows: this never waits. A coordinator that failed to start
            // refuses it, and its death notice ends the job.
            let begin = Begin {
                parent: Parent::Job(me.clone()),
            };
            args.ctx.enter();
            if let Err(e) = coordinator.tell(begin).await {
                args.ctx.leave();
                tracing::warn!(job = %args.job.id, "the coordinator run did not start: {e}");
            }
            Ok(JobActor {
                _me: me,
                ctx: args.ctx,
                storage: args.storage,
                job: Box::new(args.job),
                last: Box::new(args.checkpoint),
                done: Some(args.done),
                claim: Some(args.claim),
            })
        })
        .await
    }

    async fn on_link_died(
        &mut self,
        _: WeakActorRef<Self>,
        _: ActorId,
        reason: ActorStopReason,
    ) -> Result<std::ops::ControlFlow<ActorStopReason>, Self::Error> {
        // Boxed: this hook is inlined into the actor's task, which would otherwise be as
        // large as its largest await for the actor's whole life.
        Box::pin(async move {
            // The coordinator is the only child. Its report is queued before its death notice, so
            // a notice while the job is still open means it died without reporting (an engine
            // fault, whatever the reason): end the job with an error instead of waiting forever.
            if self.done.is_some() {
                let mut cp = (*self.last).clone();
                cp.status = CheckpointStatus::StoppedByError;
                let failure = RunFailure::Engine(format!(
                    "the coordinator run stopped without reporting: {reason}"
                ));
                cp.error = Some(failure.to_run_error());
                self.finish(cp, None).await;
            }
            Ok(std::ops::ControlFlow::Break(ActorStopReason::Normal))
        })
        .await
    }
}

impl Message<RunFinished> for JobActor {
    type Reply = ();

    async fn handle(&mut self, r: RunFinished, ctx: &mut Context<Self, Self::Reply>) {
        self.finish(r.checkpoint, r.text).await;
        ctx.stop();
    }
}

impl JobActor {
    async fn finish(&mut self, checkpoint: Checkpoint, text: Option<String>) {
        self.job.status = JobStatus::from_checkpoint(checkpoint.status);
        // A coordinator that stopped to have its children run elsewhere leaves the job
        // running: it waits for them (see `cluster::delegate`).
        let waits = self.ctx.settings.stop_at_delegation
            && checkpoint.status == CheckpointStatus::StoppedByDelegate;
        if self.job.status == JobStatus::Running && !waits {
            self.job.status = JobStatus::StoppedByError;
        }
        self.job.total_steps = checkpoint.step_number;
        self.job.usage = checkpoint.usage;
        self.job.finished_at = (!waits).then(now_ms);
        // Every event of the job is out (the coordinator reports after its children and its
        // skills): the record keeps the last number for a continuation.
        match self
            .ctx
            .bus
            .actor()
            .ask(CloseJob(self.job.id.clone()))
            .await
        {
            Ok(last) => self.job.job_seq = Some(last),
            Err(e) => tracing::warn!(job = %self.job.id, "could not close the job on the bus: {e}"),
        }
        let claim_lost = self.claim.as_ref().is_some_and(|c| c.is_lost());
        let handed_back = self
            .ctx
            .failure
            .get()
            .is_some_and(crate::agent::RunFailure::is_silent);
        if claim_lost {
            tracing::warn!(job = %self.job.id, "the claim on the job was lost; job.json is left to its new holder");
        } else if handed_back {
            tracing::info!(job = %self.job.id, "the job was handed back; job.json stays running for its next holder");
        } else if let Err(e) = self.storage.store_job(&self.job).await {
            tracing::warn!(job = %self.job.id, "could not store job.json: {e}");
        }
        self.claim = None;
        if let Some(done) = self.done.take() {
            let _ = done.send(Box::new(JobOutcome {
                job: (*self.job).clone(),
                checkpoint,
                text,
                claim_lost,
                handed_back,
            }));
        }
    }
}
