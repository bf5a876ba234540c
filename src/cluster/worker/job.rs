//! A job message's run on this worker: what the store and the invocation's output subject
//! say about it decides how it goes ([`How`]); then an [`Engine`] of its own starts, resumes
//! or takes over the job, and every line it prints goes to the job's output subject, up to
//! the end record (or, for a job whose children go to the cluster, their placement).

use std::path::PathBuf;
use std::sync::Arc;

use super::{Failure, GRACE_DELIVERIES, How, Running, Worker, classify, output_failure};
use crate::cluster::message::{JobMessage, Placement, Rejection};
use crate::cluster::output::{JobEnd, Publisher};
use crate::cluster::queue;
use crate::engine::{
    ContinueInput, ContinueRequest, Engine, EngineError, JobRequest, Settings, Takeover,
};
use crate::sandbox::Isolation;
use crate::schema::JobStatus;
use crate::storage::Storage;

impl Worker {
    /// Run (or finish) `job`, publishing its lines and its end record.
    pub(super) async fn run(&self, job: &JobMessage, delivered: i64) -> Result<(), Failure> {
        let storage = self.config.storage.clone();
        let stored = storage
            .retrieve_job(&job.job_id)
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let (mut publisher, published) =
            Publisher::open(self.js.clone(), &job.output(), delivered.unsigned_abs())
                .await
                .map_err(output_failure)?;
        if published.ended {
            // It ran to its end before; only the ack is missing.
            return Ok(());
        }
        let how = How::decide(
            job.continuation.is_some(),
            stored.as_ref().map(|j| j.status),
            published.any,
        )
        .ok_or_else(|| {
            Failure::Refused(Rejection::Unrunnable(format!(
                "No job \"{}\" found to continue",
                job.job_id
            )))
        })?;
        if how == How::Ended {
            let done = stored.as_ref().map_or(JobStatus::Completed, |j| j.status);
            let done_seq = stored.as_ref().and_then(|j| j.job_seq).unwrap_or(0);
            if published.last_job_seq < done_seq && delivered < GRACE_DELIVERIES {
                // Its worker may still be publishing the last lines (the ack came back late).
                return Err(Failure::Busy("the job's worker is still publishing".into()));
            }
            return publisher
                .end(&JobEnd::finished(done))
                .await
                .map_err(output_failure);
        }
        let engine = self.engine(job, storage, false)?;
        // After a takeover, the job's first event says so (before the repeated steps).
        let takeover = (how == How::TakeOver).then_some(Takeover {
            worker: &self.config.name,
            printed: published.last_job_seq,
        });
        let started = match (&job.continuation, how) {
            (None, How::Start) => engine.start(request(job)).await,
            (None, _) => {
                let continued = engine
                    .resume_job(continuation(job, None, false), takeover)
                    .await;
                match continued {
                    // Its worker died before it stored anything to resume from (not even the
                    // first run's settings): start it over, numbering on from its last event.
                    Err(EngineError::Usage(why)) => {
                        tracing::info!(job = %job.job_id, %why, "nothing to resume from; starting over");
                        start_over(&engine, job, takeover).await
                    }
                    other => other,
                }
            }
            // A continuation (or one whose worker died: the run cut off goes on, and the
            // input is used only if it had not been taken in yet).
            (Some(c), _) => {
                engine
                    .resume_job(continuation(job, c.resume_from.clone(), c.answer), takeover)
                    .await
            }
        };
        self.drive(job, how, &mut publisher, engine, started).await
    }

    /// Follow a started job (or continuation) on `engine` to its end: every line to
    /// `publisher` (after a takeover record for [`How::TakeOver`]), then the end record, or,
    /// when the coordinator stopped to have its children placed on the cluster, their
    /// placement (the end comes after the join).
    pub(super) async fn drive(
        &self,
        job: &JobMessage,
        how: How,
        publisher: &mut Publisher,
        engine: Engine,
        started: Result<crate::engine::JobHandle, EngineError>,
    ) -> Result<(), Failure> {
        let mut handle = match started {
            Ok(handle) => handle,
            Err(e) => {
                engine.shutdown().await;
                return Err(classify(e));
            }
        };
        let cancel = handle.cancel_token();
        // The claim is ours now: the takeover record comes first and fences the old holder.
        let mut failed = match how {
            How::TakeOver => publisher.takeover(&self.config.name).await.err(),
            _ => None,
        };
        if failed.is_some() {
            cancel.cancel();
        }
        // A cancel from now on reaches the job through the subscription; one sent before (while
        // it waited in the queue, or while its worker was dead) is in the cancel stream: the
        // job then ends cancelled before its first step, as a local job cancelled at once.
        let cancel_subject = job.output().cancel_subject();
        let hand_back = handle.hand_back();
        self.running.insert(
            cancel_subject.clone(),
            Running {
                cancel: cancel.clone(),
                hand_back: hand_back.clone(),
            },
        );
        if self.handing_back.load(std::sync::atomic::Ordering::SeqCst) {
            hand_back.at_step_boundary();
        }
        match queue::cancel_requested(&self.js, &cancel_subject).await {
            Ok(true) => {
                tracing::info!(job = %job.job_id, "cancelled while it waited; ending it");
                cancel.cancel();
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(job = %job.job_id, error = %e, "cannot read the cancel stream")
            }
        }
        if let Some(mut events) = handle.take_events() {
            while let Some(event) = events.recv().await {
                if failed.is_some() {
                    continue;
                }
                let line = serde_json::to_vec(&*event.event).unwrap_or_default();
                if let Err(e) = publisher.event(line, event.job_seq().unwrap_or(0)).await {
                    tracing::error!(job = %job.job_id, error = %e, "the job's events cannot be published; stopping it");
                    cancel.cancel();
                    failed = Some(e);
                }
            }
        }
        let outcome = handle.wait().await;
        engine.shutdown().await;
        self.running.remove(&cancel_subject);
        if let Some(e) = failed {
            return Err(output_failure(e));
        }
        let outcome = outcome.map_err(|e| Failure::Transient(e.to_string()))?;
        if outcome.claim_lost {
            return Err(Failure::Fenced);
        }
        if outcome.handed_back {
            return Err(Failure::HandedBack);
        }
        if outcome.job.status == JobStatus::Running
            && outcome.checkpoint.status == crate::schema::CheckpointStatus::StoppedByDelegate
            && self.placement(job) == Placement::Cluster
        {
            return self.place(job).await;
        }
        publisher
            .end(&JobEnd::finished(outcome.job.status))
            .await
            .map_err(output_failure)
    }

    /// An engine for `job` on `storage`, in the job's workspace on this worker; for a
    /// `child`, its own delegations run on this worker.
    pub(super) fn engine(
        &self,
        job: &JobMessage,
        storage: Arc<dyn Storage>,
        child: bool,
    ) -> Result<Engine, Failure> {
        let workspace = self.config.work_dir.join("jobs").join(&job.job_id);
        std::fs::create_dir_all(&workspace).map_err(|e| {
            Failure::Transient(format!("cannot create {}: {e}", workspace.display()))
        })?;
        let model = self
            .config
            .models
            .build(&job.options.provider_name, &self.config.env)
            .map_err(|e| Failure::Refused(Rejection::Unrunnable(e)))?;
        let mut settings = self.settings(job, workspace);
        settings.stop_at_delegation &= !child;
        Ok(Engine::builder()
            .settings(settings)
            .model(model)
            .storage(storage)
            .build())
    }

    /// The engine settings of `job`: its Experts and options, this worker's environment.
    fn settings(&self, job: &JobMessage, workspace: PathBuf) -> Settings {
        let o = &job.options;
        let mut s = Settings::new(job.experts.clone());
        s.model = o.model.clone();
        s.provider_name = o.provider_name.clone();
        s.reasoning_budget = o.reasoning_budget;
        s.max_steps = o.max_steps;
        s.max_retries = o.max_retries;
        s.timeout = o.timeout();
        s.context_window = crate::llm::models::context_window(&s.model);
        s.tool_timeout = self.config.tool_timeout;
        s.workspace = workspace;
        s.env = self.config.env.clone();
        s.isolation = if o.sandboxed {
            Isolation::Sandboxed
        } else {
            Isolation::Unconfined
        };
        s.stop_at_delegation = self.placement(job) == Placement::Cluster;
        s
    }
}

/// The engine request of `job`, subscribed to its events.
fn request(job: &JobMessage) -> JobRequest {
    JobRequest::new(job.expert_key.clone(), job.query.clone())
        .job_id(job.job_id.clone())
        .subscribe()
}

/// Events a job's subscription holds for the publisher.
const EVENTS_BUFFER: usize = 256;

/// The request that continues `job`, subscribed to its events: from `resume_from` (else its
/// latest checkpoint), with its query as the answer to a pending interactive call when
/// `answer`.
pub(super) fn continuation(
    job: &JobMessage,
    resume_from: Option<String>,
    answer: bool,
) -> ContinueRequest {
    let query = job.query.clone();
    ContinueRequest {
        job_id: Some(job.job_id.clone()),
        expert_key: job.expert_key.clone(),
        resume_from,
        input: match answer {
            true => ContinueInput::Answer(query),
            false => ContinueInput::Query(query),
        },
        subscribe: Some(EVENTS_BUFFER),
    }
}

/// Start `job` again from its query, on a claim of its own, its events numbered after the
/// last one stored.
async fn start_over(
    engine: &Engine,
    job: &JobMessage,
    takeover: Option<Takeover<'_>>,
) -> Result<crate::engine::JobHandle, EngineError> {
    let claim = engine.storage().claim(&job.job_id).await?;
    let last = engine.storage().last_job_seq(&job.job_id).await?;
    engine
        .start_claimed(request(job), claim, last, takeover)
        .await
}
