//! Continuing a stored job: `--continue`, `--continue-job`, `--resume-from`, `-i`.
//!
//! The coordinator goes on from its latest checkpoint (or the one named), as REFERENCE §4.7
//! describes, with the fixes COMPATIBILITY.md lists: an interactive answer goes to the call that
//! is really pending, and a job that stopped mid-run or mid-delegation (a crash, `kill -9`)
//! resumes from its last durable step, running only the children that had not finished.

use serde_json::Map;

use super::{Engine, EngineError, JobHandle};
use crate::actor::context::now_ms;
use crate::agent::{Resumption, Start, latest_coordinator, next_segment, plan};
use crate::schema::{Checkpoint, CheckpointStatus, InteractiveToolCallResult, Job, JobStatus};
use crate::storage::Claim;

/// What to continue, and with what.
#[derive(Debug, Clone)]
pub struct ContinueRequest {
    /// The job; `None` means the most recently started one.
    pub job_id: Option<String>,
    /// The coordinator Expert (must be the job's).
    pub expert_key: String,
    /// A checkpoint of the coordinator to continue from instead of the latest.
    pub resume_from: Option<String>,
    /// The new input.
    pub input: ContinueInput,
    /// Deliver events to the handle (buffer size).
    pub subscribe: Option<usize>,
}

/// The input of a continued run.
#[derive(Debug, Clone)]
pub enum ContinueInput {
    /// A new query (appended to the coordinator's history), or ignored when the job resumes a
    /// run that was cut off mid-way.
    Query(String),
    /// The answer to the pending interactive call: plain text, or Perstack's JSON form
    /// `{"toolCallId","toolName","skillName","text"}`.
    Answer(String),
}

impl Engine {
    /// Continue a stored job.
    pub async fn continue_job(&self, request: ContinueRequest) -> Result<JobHandle, EngineError> {
        self.resume_job(request, None).await
    }

    /// [`Engine::continue_job`]; with `takeover`, the cluster worker that takes the job over
    /// from one that stopped mid-run (its first event says so: see [`Engine::launch`]).
    pub(crate) async fn resume_job(
        &self,
        request: ContinueRequest,
        takeover: Option<super::Takeover<'_>>,
    ) -> Result<JobHandle, EngineError> {
        let storage = self.storage.clone();
        let job_id = match request.job_id.clone() {
            Some(id) => id,
            None => storage
                .all_jobs()
                .await?
                .into_iter()
                .next()
                .map(|j| j.id)
                .ok_or_else(|| {
                    EngineError::Usage("No job found to continue in this storage".into())
                })?,
        };
        // Claimed before anything is read: a writer still running the job could otherwise
        // change what the plan is made from.
        let claim = storage.claim(&job_id).await?;
        let all = storage.checkpoints_by_job(&job_id).await?;
        let base = match &request.resume_from {
            Some(id) => storage.retrieve_checkpoint(&job_id, id).await?,
            None => match latest_coordinator(&all) {
                Some(cp) => cp.clone(),
                None => return self.restart(claim, request, takeover).await,
            },
        };
        if base.delegated_by.is_some() {
            return Err(EngineError::Usage(format!(
                "checkpoint \"{}\" belongs to delegated expert \"{}\"; only the coordinator's checkpoints can be resumed from",
                base.id, base.expert.key
            )));
        }
        if base.expert.key != request.expert_key {
            return Err(EngineError::Usage(format!(
                "job \"{job_id}\" was run by expert \"{}\", not \"{}\"; continue it with that expert key",
                base.expert.key, request.expert_key
            )));
        }
        let (checkpoint, start) = self.plan_start(base, &all, request.input)?;
        let now = now_ms();
        let mut job = storage.retrieve_job(&job_id).await?.unwrap_or_else(|| Job {
            id: job_id.clone(),
            status: JobStatus::Running,
            coordinator_expert_key: request.expert_key.clone(),
            total_steps: checkpoint.step_number,
            max_steps: Some(self.settings.max_steps),
            usage: checkpoint.usage,
            started_at: now,
            finished_at: None,
            job_seq: None,
            extra: Map::new(),
        });
        job.status = JobStatus::Running;
        job.finished_at = None;
        job.job_seq = Some(storage.last_job_seq(&job_id).await?);
        job.max_steps = Some(self.settings.max_steps);
        self.launch(job, checkpoint, start, request.subscribe, claim, takeover)
            .await
    }

    /// The job stopped before its first step ended: start it again, same job id, with its
    /// original query (from its first run setting).
    async fn restart(
        &self,
        claim: Claim,
        request: ContinueRequest,
        takeover: Option<super::Takeover<'_>>,
    ) -> Result<JobHandle, EngineError> {
        let job_id = claim.job_id();
        let settings = self.storage.all_run_settings().await?;
        let original = settings
            .iter()
            .filter(|s| s.job_id == job_id && s.expert_key == request.expert_key)
            .min_by_key(|s| s.started_at)
            .and_then(|s| s.input.text.clone());
        let Some(query) = original else {
            return Err(EngineError::Usage(format!(
                "No checkpoint found for job \"{job_id}\""
            )));
        };
        let mut start = super::JobRequest::new(request.expert_key, query).job_id(job_id);
        if let Some(buffer) = request.subscribe {
            start = start.subscribe();
            start.buffer = buffer;
        }
        let last_seq = self.storage.last_job_seq(claim.job_id()).await?;
        self.start_claimed(start, claim, last_seq, takeover).await
    }

    fn plan_start(
        &self,
        base: Checkpoint,
        all: &[Checkpoint],
        input: ContinueInput,
    ) -> Result<(Checkpoint, Start), EngineError> {
        // A run cut off mid-way (mid-step or waiting for children) goes on without new input,
        // through the same start as a child that recovers.
        let checkpoint = match plan(&base, all).into_start() {
            Ok(started) => {
                if let (ContinueInput::Query(q), (_, Start::AfterDelegation(_))) =
                    (&input, &started)
                {
                    tracing::info!(query = %q, "the job was waiting for delegated experts; resuming them, query ignored");
                }
                return Ok(started);
            }
            Err(done) => match *done {
                Resumption::Done { checkpoint } => checkpoint,
                _ => return Err(EngineError::Usage("nothing to continue".into())),
            },
        };
        match input {
            ContinueInput::Answer(text) => {
                if checkpoint.status != CheckpointStatus::StoppedByInteractiveTool {
                    return Err(EngineError::Usage(format!(
                        "-i answers a pending interactive tool call, but checkpoint \"{}\" is {}",
                        checkpoint.id,
                        checkpoint.status.as_str()
                    )));
                }
                let answer = answer_for(&checkpoint, &text)?;
                Ok((next_segment(checkpoint), Start::Answer(answer)))
            }
            ContinueInput::Query(text) => {
                if checkpoint.status == CheckpointStatus::StoppedByInteractiveTool {
                    return Err(EngineError::Usage(format!(
                        "job is waiting for an answer to tool \"{}\"; pass it with -i",
                        checkpoint
                            .pending_tool_calls
                            .as_ref()
                            .and_then(|p| p.first())
                            .map_or("?", |c| c.tool_name.as_str())
                    )));
                }
                Ok((next_segment(checkpoint), Start::Query(text)))
            }
        }
    }
}

/// The answer to the call that is really pending: the JSON form names it; plain text answers
/// the first pending interactive call (Perstack guesses the first tool call of the last
/// message, which is wrong after a mixed turn).
fn answer_for(
    checkpoint: &Checkpoint,
    text: &str,
) -> Result<InteractiveToolCallResult, EngineError> {
    let pending = checkpoint.pending_tool_calls.as_deref().unwrap_or_default();
    if let Ok(json) = serde_json::from_str::<InteractiveToolCallResult>(text) {
        if pending.iter().any(|c| c.id == json.tool_call_id) {
            return Ok(json);
        }
        return Err(EngineError::Usage(format!(
            "tool call \"{}\" is not pending in checkpoint \"{}\"",
            json.tool_call_id, checkpoint.id
        )));
    }
    let call = pending.first().ok_or_else(|| {
        EngineError::Usage(format!(
            "checkpoint \"{}\" has no pending tool call to answer",
            checkpoint.id
        ))
    })?;
    Ok(InteractiveToolCallResult {
        tool_call_id: call.id.clone(),
        tool_name: call.tool_name.clone(),
        skill_name: call.skill_name.clone(),
        text: text.to_string(),
    })
}
