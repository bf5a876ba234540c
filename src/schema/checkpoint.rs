//! The checkpoint: the state of one Expert run at the end of a step, stored once per step.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Message, ToolCall, ToolResult, Usage};

/// Where a run stands. The seven values are Perstack's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckpointStatus {
    /// Fresh run, not started.
    Init,
    /// Between steps.
    Proceeding,
    /// Finished with a result.
    Completed,
    /// Waiting for the caller to answer an interactive tool.
    StoppedByInteractiveTool,
    /// Waiting for delegated Experts.
    StoppedByDelegate,
    /// The job-wide step limit was reached.
    StoppedByExceededMaxSteps,
    /// An engine fault or an unrecoverable model error.
    StoppedByError,
}

impl CheckpointStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointStatus::Init => "init",
            CheckpointStatus::Proceeding => "proceeding",
            CheckpointStatus::Completed => "completed",
            CheckpointStatus::StoppedByInteractiveTool => "stoppedByInteractiveTool",
            CheckpointStatus::StoppedByDelegate => "stoppedByDelegate",
            CheckpointStatus::StoppedByExceededMaxSteps => "stoppedByExceededMaxSteps",
            CheckpointStatus::StoppedByError => "stoppedByError",
        }
    }
}

/// `{key, name, version}` of an Expert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertRef {
    /// Expert key.
    pub key: String,
    /// Expert name.
    pub name: String,
    /// Expert version.
    pub version: String,
}

/// One entry of `delegateTo`: a child Expert this run is waiting for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelegateTo {
    /// The child Expert.
    pub expert: ExpertRef,
    /// The delegate call's id.
    pub tool_call_id: String,
    /// The delegate tool's name.
    pub tool_name: String,
    /// The query handed to the child.
    pub query: String,
}

/// `delegatedBy`: which parent call started this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelegatedBy {
    /// The parent Expert.
    pub expert: ExpertRef,
    /// The parent's delegate call id.
    pub tool_call_id: String,
    /// The parent's delegate tool name.
    pub tool_name: String,
    /// The parent's `stoppedByDelegate` checkpoint.
    pub checkpoint_id: String,
    /// The parent's run id.
    pub run_id: String,
}

/// `{name, message, statusCode?, isRetryable}`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunError {
    /// Error class name (`MaxRetriesExceeded`, `APICallError`, ...).
    pub name: String,
    /// Human message.
    pub message: String,
    /// HTTP status, when the error came from an API.
    pub status_code: Option<u16>,
    /// Whether retrying could help.
    pub is_retryable: bool,
}

/// The state of one run at the end of a step.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// Checkpoint id.
    pub id: String,
    /// Job id.
    pub job_id: String,
    /// Run id.
    pub run_id: String,
    /// Status.
    pub status: CheckpointStatus,
    /// Job-wide step number.
    pub step_number: u32,
    /// The whole conversation of this Expert (children start empty).
    pub messages: Vec<Message>,
    /// The Expert running.
    pub expert: ExpertRef,
    /// Children this run waits for.
    pub delegate_to: Option<Vec<DelegateTo>>,
    /// The parent that started this run.
    pub delegated_by: Option<DelegatedBy>,
    /// Cumulative usage.
    pub usage: Usage,
    /// The model's context window, when known.
    pub context_window: Option<u64>,
    /// Cumulative tokens over the context window (Perstack's definition).
    #[serde(default, serialize_with = "super::jsnum::opt_f64")]
    pub context_window_usage: Option<f64>,
    /// Calls still to run after a stop.
    pub pending_tool_calls: Option<Vec<ToolCall>>,
    /// Results gathered before a stop.
    pub partial_tool_results: Option<Vec<ToolResult>>,
    /// Runtime metadata.
    pub metadata: Option<Value>,
    /// Why the run stopped by error.
    pub error: Option<RunError>,
    /// Consecutive failed generations.
    pub retry_count: Option<u32>,
    /// The job sequence number of the event that carried this checkpoint to the store (see
    /// [`Event::job_seq`](super::Event::job_seq)). Never on stdout; stored as `jobSeq`
    /// ([`Checkpoint::stored`]).
    #[serde(default, skip_serializing)]
    pub job_seq: Option<u64>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Checkpoint {
    /// The stored form: Perstack's JSON plus `jobSeq` when the bus gave one (Perstack's
    /// readers ignore unknown keys).
    pub fn stored(&self) -> impl Serialize + '_ {
        StoredCheckpoint {
            checkpoint: self,
            job_seq: self.job_seq,
        }
    }
}

/// [`Checkpoint::stored`].
#[derive(Serialize)]
struct StoredCheckpoint<'a> {
    #[serde(flatten)]
    checkpoint: &'a Checkpoint,
    #[serde(rename = "jobSeq", skip_serializing_if = "Option::is_none")]
    job_seq: Option<u64>,
}
