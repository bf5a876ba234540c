//! A job: one task per job, not an actor (it receives one message, its coordinator's report,
//! and an actor's mailbox costs 3 KiB a job). It starts the coordinator run, keeps `job.json`
//! current, and ends the job with exactly one terminal state, handed to the
//! [`JobHandle`](crate::engine::JobHandle) through a oneshot.
//!
//! The coordinator is the root of the job's actor tree: when it stops, kameo frees its links,
//! and with them its skills' spawn arguments. It reports through a oneshot ([`Parent::Job`]);
//! a coordinator that stops without reporting drops the sender, and the job then ends with an
//! error naming how it stopped. The task always ends: after the report, or after that.

use std::sync::Arc;

use kameo::prelude::*;
use tokio::sync::oneshot;

use super::context::{JobContext, now_ms, unbox};
use super::event_bus::CloseJob;
use super::run::{Begin, Parent, RUN_MAILBOX, RunActor, RunArgs};
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

/// What a job starts with.
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
    /// The right to write the job, held until the job's last write.
    pub claim: Claim,
}

/// Run one job to its end: start the coordinator run, wait for its report (or for it to stop
/// without one), then close the job. Spawned as a task of its own by the engine.
pub(crate) async fn run(args: Box<JobArgs>) {
    // What the task keeps across its awaits is small and boxed (see `begin`), so that the task
    // stays small for the job's life: it spends that life waiting for the report.
    let (end, run, started) = begin(args);
    if let Err(e) = end.storage.store_job(&end.job).await {
        tracing::warn!(job = %end.job.id, "could not store job.json: {e}");
    }
    // Not supervised: nothing restarts a run, and a supervisor would keep its arguments (the
    // starting checkpoint) and its mailbox for as long as the supervisor lives.
    let coordinator = RunActor::spawn_with_mailbox(run, kameo::mailbox::bounded(RUN_MAILBOX));
    let (report_tx, report) = oneshot::channel();
    // A new mailbox nobody else knows: this never waits. A coordinator that failed to start
    // refuses it, and the report's sender goes with the refused message. Boxed, as the steps
    // below: the task would otherwise be as large as its largest await.
    end.ctx.enter();
    let begin = Box::pin(
        coordinator
            .tell(Begin {
                parent: Parent::Job(Some(report_tx)),
            })
            .into_future(),
    );
    if let Err(e) = begin.await {
        end.ctx.leave();
        tracing::warn!(job = %end.job.id, "the coordinator run did not start: {e}");
    }
    let finish: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match report.await {
        Ok(r) => Box::pin(end.finish(r.checkpoint, r.text)),
        // The coordinator stopped and dropped its report's sender without sending: it died
        // without reporting (an engine fault, whatever the reason). End the job with an error
        // instead of waiting forever.
        Err(_) => Box::pin(end.unreported(coordinator, started)),
    };
    finish.await;
}

/// Take the job's arguments apart, out of an async frame (whatever a task's future holds
/// even once, it holds for the job's life): watch the claim, and box what the coordinator
/// starts with and what the job's end needs. Also the coordinator's start, for a coordinator
/// that stops without reporting.
fn begin(args: Box<JobArgs>) -> (JobEnd, Box<RunArgs>, Box<Checkpoint>) {
    let JobArgs {
        ctx,
        storage,
        expert_key,
        checkpoint,
        start,
        job,
        done,
        span,
        claim,
    } = unbox(args);
    // A claim that can be lost (a lease) stops the job when it is: every run ends, and the
    // store refuses whatever they would still write. The task ends with the claim.
    let lost = claim.lost();
    let watched = ctx.clone();
    tokio::spawn(async move {
        if lost.await {
            let e = StoreError::ClaimLost {
                job_id: watched.job_id.clone(),
            };
            watched.fail(RunFailure::ClaimLost(e.to_string()));
        }
    });
    let started = Box::new(checkpoint.clone());
    let run = Box::new(RunArgs {
        parent_span: span,
        ctx: ctx.clone(),
        expert_key,
        checkpoint,
        start,
    });
    let end = JobEnd {
        ctx,
        storage,
        job: Box::new(job),
        done,
        claim: Some(claim),
    };
    (end, run, started)
}

/// What a job needs at its end.
struct JobEnd {
    ctx: Arc<JobContext>,
    storage: Arc<dyn Storage>,
    /// Boxed: the job's task holds it while the job runs.
    job: Box<Job>,
    done: oneshot::Sender<Box<JobOutcome>>,
    /// The right to write the job: no other process or engine can run or continue it while
    /// the job runs. Released right after the job's last write, before the outcome is handed
    /// out, so that whoever waits for the outcome can continue the job at once.
    claim: Option<Claim>,
}

impl JobEnd {
    /// End the job after its coordinator stopped without reporting, at the coordinator's
    /// start with an error.
    async fn unreported(self, coordinator: ActorRef<RunActor>, started: Box<Checkpoint>) {
        let reason = coordinator
            .wait_for_shutdown_with_result(|r| match r {
                Ok(reason) => reason.to_string(),
                Err(e) => e.to_string(),
            })
            .await;
        let mut cp = *started;
        cp.status = CheckpointStatus::StoppedByError;
        let failure = RunFailure::Engine(format!(
            "the coordinator run stopped without reporting: {reason}"
        ));
        cp.error = Some(failure.to_run_error());
        self.finish(cp, None).await;
    }

    async fn finish(mut self, checkpoint: Checkpoint, text: Option<String>) {
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
        let _ = self.done.send(Box::new(JobOutcome {
            job: *self.job,
            checkpoint,
            text,
            claim_lost,
            handed_back,
        }));
    }
}
