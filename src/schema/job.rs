//! The job record, `job.json`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CheckpointStatus, Usage};

/// Job status; note `stoppedByMaxSteps`, not the checkpoint's `stoppedByExceededMaxSteps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobStatus {
    /// Some run is still going.
    Running,
    /// The coordinator completed.
    Completed,
    /// The job-wide step limit stopped it.
    StoppedByMaxSteps,
    /// Waiting for an interactive answer.
    StoppedByInteractiveTool,
    /// Stopped by an error or cancellation.
    StoppedByError,
}

impl JobStatus {
    /// The job status for a coordinator's final checkpoint status.
    pub fn from_checkpoint(s: CheckpointStatus) -> JobStatus {
        match s {
            CheckpointStatus::Completed => JobStatus::Completed,
            CheckpointStatus::StoppedByInteractiveTool => JobStatus::StoppedByInteractiveTool,
            CheckpointStatus::StoppedByExceededMaxSteps => JobStatus::StoppedByMaxSteps,
            CheckpointStatus::StoppedByError => JobStatus::StoppedByError,
            CheckpointStatus::Init
            | CheckpointStatus::Proceeding
            | CheckpointStatus::StoppedByDelegate => JobStatus::Running,
        }
    }
}

/// `job.json`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Job id.
    pub id: String,
    /// Status.
    pub status: JobStatus,
    /// The Expert the job started with.
    pub coordinator_expert_key: String,
    /// Step number of the last checkpoint.
    pub total_steps: u32,
    /// The job-wide step limit.
    pub max_steps: Option<u32>,
    /// Usage of the whole job.
    pub usage: Usage,
    /// Epoch ms.
    pub started_at: u64,
    /// Epoch ms.
    pub finished_at: Option<u64>,
    /// The job sequence number of the job's last event when the record was written (see
    /// [`Event::job_seq`](super::Event::job_seq)); where a continued job's numbering goes on.
    /// Not in Perstack's `job.json` (its readers ignore unknown keys).
    pub job_seq: Option<u64>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
