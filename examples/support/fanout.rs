//! The reference workload of `docs/PERFORMANCE.md` for measurements, shared by
//! `benches/fanout.rs` and `examples/fanout_load.rs` (included with `#[path]`; cargo does not
//! build this directory as an example of its own).
//!
//! * [`FanoutModel`]: an instant model answering the workload statelessly, so one instance serves
//!   any number of concurrent jobs (the scripted provider consumes each turn once);
//! * [`settings`]: the Experts of `experts/fanout/perstack.toml`;
//! * [`run_jobs`]: N concurrent jobs on one engine, each checked to complete;
//! * [`process_cpu`], [`status_kib`], [`reset_peak_rss`]: CPU time and memory of this process,
//!   read from `/proc` (Linux).

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, LanguageModel, PartStream,
    StreamPart,
};
use perstack::schema::{Checkpoint, Event, Job, JobStatus, Message, RunSetting, Usage};
use perstack::storage::{Claim, EventMeta, Storage, StoreError};

/// The coordinator of the reference workload.
pub(crate) const COORDINATOR: &str = "coordinator";

/// An instant model playing the turns of `experts/fanout/script.toml`, chosen from the request:
/// * no tools offered: the run-result generation after `attemptCompletion` -> text (2 deltas);
/// * a tool message in the history (the coordinator after its delegates) -> `attemptCompletion`;
/// * the coordinator's first generation -> reasoning, then `child-a` and `child-b` at once;
/// * a child's first generation -> `attemptCompletion`.
pub(crate) struct FanoutModel;

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        reasoning_tokens: 0,
        total_tokens: input + output,
        cached_input_tokens: 0,
    }
}

fn call(id: &str, name: &str, args: serde_json::Value) -> StreamPart {
    StreamPart::ToolCall(GeneratedToolCall {
        id: id.into(),
        name: name.into(),
        args,
    })
}

fn finish(reason: FinishReason, input: u64, output: u64) -> StreamPart {
    StreamPart::Finish {
        reason,
        usage: usage(input, output),
    }
}

#[async_trait::async_trait]
impl LanguageModel for FanoutModel {
    fn name(&self) -> &str {
        "instant-fanout"
    }

    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError> {
        let coordinator = request.expert_key == COORDINATOR;
        let after_tools = request
            .messages
            .iter()
            .any(|m| matches!(m, Message::ToolMessage(_)));
        let parts = if request.tools.is_empty() {
            let (a, b) = if coordinator {
                (
                    "Both halves are done: ",
                    "first half done, second half done.",
                )
            } else {
                ("Half ", "done.")
            };
            vec![
                StreamPart::TextDelta(a.into()),
                StreamPart::TextDelta(b.into()),
                finish(FinishReason::Stop, 220, 20),
            ]
        } else if coordinator && !after_tools {
            vec![
                StreamPart::ReasoningDelta("Two independent halves: delegate both at once.".into()),
                StreamPart::ReasoningEnd { signature: None },
                call(
                    "call_child_a",
                    "child-a",
                    json!({ "query": "Do the first half" }),
                ),
                call(
                    "call_child_b",
                    "child-b",
                    json!({ "query": "Do the second half" }),
                ),
                finish(FinishReason::ToolCalls, 120, 30),
            ]
        } else {
            vec![
                call("call_done", "attemptCompletion", json!({})),
                finish(FinishReason::ToolCalls, 80, 10),
            ]
        };
        Ok(Box::pin(futures::stream::iter(parts.into_iter().map(Ok))))
    }
}

/// Settings for the Experts of `experts/fanout/perstack.toml`; panics if it does not load.
pub(crate) fn settings() -> Settings {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experts/fanout/perstack.toml");
    let config = perstack::config::load(&path)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
    let mut settings = Settings::new(config.experts);
    settings.provider_name = "instant-fanout".into();
    if let Some(model) = config.model {
        settings.model = model;
    }
    settings
}

/// Start `n` jobs of the workload on `engine` at once and wait for all of them; panics unless
/// every one completed.
pub(crate) async fn run_jobs(engine: &Engine, n: usize) {
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        match engine.start(JobRequest::new(COORDINATOR, "hello")).await {
            Ok(handle) => handles.push(handle),
            Err(e) => panic!("the engine refused a fan-out job: {e}"),
        }
    }
    for outcome in futures::future::join_all(handles.into_iter().map(|h| h.wait())).await {
        match outcome {
            Ok(o) => assert_eq!(
                o.job.status,
                JobStatus::Completed,
                "a fan-out job did not complete: {:?}",
                o.checkpoint.error
            ),
            Err(e) => panic!("a fan-out job reported no outcome: {e}"),
        }
    }
}

/// User + system CPU time of the whole process (all threads), from `/proc/self/stat`; zero
/// where `/proc` is unavailable.
///
/// The kernel counts clock ticks of `USER_HZ`, 100 on Linux, so a reading has 10 ms resolution:
/// sum many iterations before dividing.
pub(crate) fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A `Vm*` line of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB.
pub(crate) fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `VmHWM` (peak RSS) as `"12.3 MB"`, or `"unknown"`.
pub(crate) fn peak_rss() -> String {
    status_kib("VmHWM").map_or_else(
        || "unknown".to_string(),
        |kib| format!("{:.1} MB", kib as f64 / 1024.0),
    )
}

/// Reset the peak RSS to the current RSS (Linux 4.0 and later); whether it worked.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A store that keeps nothing: measures what the engine itself holds per live job, without
/// the events and checkpoints an in-memory store accumulates (a real deployment writes them to
/// disk). For measurements only: it checks nothing and can restore nothing.
#[derive(Debug, Default)]
pub(crate) struct DiscardStorage;

#[async_trait::async_trait]
impl Storage for DiscardStorage {
    async fn store_checkpoint(&self, _: &Checkpoint) -> Result<(), StoreError> {
        Ok(())
    }
    async fn retrieve_checkpoint(
        &self,
        _: &str,
        checkpoint_id: &str,
    ) -> Result<Checkpoint, StoreError> {
        Err(StoreError::NotFound {
            what: "checkpoint",
            id: checkpoint_id.to_string(),
        })
    }
    async fn checkpoints_by_job(&self, _: &str) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(Vec::new())
    }
    async fn store_event(&self, _: &Event) -> Result<(), StoreError> {
        Ok(())
    }
    async fn events_by_run(&self, _: &str, _: &str) -> Result<Vec<EventMeta>, StoreError> {
        Ok(Vec::new())
    }
    async fn event_contents(
        &self,
        _: &str,
        _: &str,
        _: Option<u32>,
    ) -> Result<Vec<Event>, StoreError> {
        Ok(Vec::new())
    }
    async fn store_job(&self, _: &Job) -> Result<(), StoreError> {
        Ok(())
    }
    async fn retrieve_job(&self, _: &str) -> Result<Option<Job>, StoreError> {
        Ok(None)
    }
    async fn all_jobs(&self) -> Result<Vec<Job>, StoreError> {
        Ok(Vec::new())
    }
    async fn store_run_setting(&self, _: &RunSetting) -> Result<(), StoreError> {
        Ok(())
    }
    async fn all_run_settings(&self) -> Result<Vec<RunSetting>, StoreError> {
        Ok(Vec::new())
    }
    async fn claim(&self, job_id: &str) -> Result<Claim, StoreError> {
        Ok(Claim::new(job_id, 1, ()))
    }
}
