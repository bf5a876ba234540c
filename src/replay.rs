//! Deterministic replay (`perstack replay`): run a recorded job again through the real engine
//! (Expert actors, delegation, the bus, the state machine) with the model's recorded answers
//! played back through the provider seam and the recorded tool results played back through the
//! tool seam, into a scratch in-memory store, then compare the replay with the recording run by
//! run. A job that was continued (a new query, an interactive answer) is replayed the same way:
//! each later invocation continues the replayed job with the recorded input. With live tools the skills really run (in the caller's scratch workspace, confined as
//! every run is) and each result that differs from the recorded one is reported.
//!
//! | module | owns |
//! | --- | --- |
//! | `recording` | what was recorded: events, checkpoints, the settings to replay with |
//! | `playback` | [`ReplayModel`]: the recorded model answers, as a provider |
//! | `tools` | [`ToolReplay`]: the recorded tool results, answered or checked |
//! | `compare` | the one normalisation (ids and timestamps aside) and the per-run comparison |
//!
//! Never writes to the recorded job's store, never calls a model, and in playback starts no
//! skill, process or connection. The CLI (`cli::replay`) reads the store and prints.

mod compare;
mod playback;
mod recording;
mod tools;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use compare::{Divergence, Identical, tool_result};
pub(crate) use playback::ReplayModel;
pub(crate) use recording::{Continuation, Recording, RecordingError};
pub(crate) use tools::{Caller, ToolDiff, ToolMode, ToolReplay};

use crate::engine::{
    ContinueInput, ContinueRequest, Engine, EngineError, JobHandle, JobRequest, Settings,
};
use crate::schema::Event;
use crate::storage::{MemoryStorage, Storage};

/// How long a replayed job may take before it is reported as stuck. Playback answers at
/// once; live tools are bounded by the tool timeout each.
const REPLAY_DEADLINE: Duration = Duration::from_secs(600);

/// Events a replayed invocation may buffer before the engine waits for the collector.
const EVENT_BUFFER: usize = 1024;

/// What a replay found.
#[derive(Debug)]
pub(crate) struct Report {
    /// The state comparison: identical, or the first divergence.
    pub comparison: Result<Identical, Box<Divergence>>,
    /// Live tool results that differ from the recorded ones (live mode only).
    pub tool_diffs: Vec<ToolDiff>,
}

/// Replay `rec` with `settings` (see the module docs), tools as `mode` says.
pub(crate) async fn replay(
    rec: &Recording,
    settings: Settings,
    mode: ToolMode,
) -> Result<Report, EngineError> {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let tools = Arc::new(ToolReplay::new(rec, mode));
    let engine = Engine::builder()
        .settings(settings)
        .model(Arc::new(ReplayModel::new(rec)))
        .storage(storage.clone())
        .replay(tools.clone())
        .build();
    let mut request = JobRequest::new(rec.coordinator.clone(), rec.query.clone())
        .job_id(rec.job_id.clone())
        .subscribe();
    request.buffer = EVENT_BUFFER;
    let mut events = to_end(engine.start(request).await).await;
    // Each later invocation continues the replayed job as the recorded one was continued.
    for next in &rec.continuations {
        if events.is_err() {
            break;
        }
        let input = match next {
            Continuation::Query(q) => ContinueInput::Query(q.clone()),
            Continuation::Answer(a) => ContinueInput::Answer(a.clone()),
        };
        let handle = engine
            .continue_job(ContinueRequest {
                job_id: Some(rec.job_id.clone()),
                expert_key: rec.coordinator.clone(),
                resume_from: None,
                input,
                subscribe: Some(EVENT_BUFFER),
            })
            .await;
        let more = to_end(handle).await;
        events = events.and_then(|mut all| {
            all.extend(more?);
            Ok(all)
        });
    }
    engine.shutdown().await;
    let events = events?;
    let checkpoints = storage.checkpoints_by_job(&rec.job_id).await?;
    Ok(Report {
        comparison: compare::compare(&rec.events, &rec.checkpoints, &events, &checkpoints),
        tool_diffs: tools.diffs(),
    })
}

/// Every event of a started invocation, once it ended (or the deadline cancelled it).
async fn to_end(handle: Result<JobHandle, EngineError>) -> Result<Vec<Event>, EngineError> {
    let mut handle = handle?;
    let mut rx = handle.take_events().ok_or(EngineError::Lost)?;
    let collector = tokio::spawn(async move {
        let mut events: Vec<Event> = Vec::new();
        while let Some(s) = rx.recv().await {
            events.push(Arc::unwrap_or_clone(s.event));
        }
        events
    });
    let cancel = handle.cancel_token();
    match tokio::time::timeout(REPLAY_DEADLINE, handle.wait()).await {
        Ok(outcome) => {
            outcome?;
        }
        Err(_) => {
            cancel.cancel();
            collector.abort();
            return Err(EngineError::Usage(format!(
                "the replay did not finish within {} s",
                REPLAY_DEADLINE.as_secs()
            )));
        }
    }
    collector.await.map_err(|_| EngineError::Lost)
}
