//! A delegated run is freed once it has reported, not when its parent ends: between its
//! children's reports and its own end a parent holds nothing of them. A parent that kept its
//! finished children (as a kameo supervisor keeps each child's spawn arguments and mailbox
//! until it stops) would hold two more runs' worth of memory per session at the peak of the
//! fan-out workload (T3 in `docs/PERFORMANCE.md`, `benches/engine/t3.rs`).
//!
//! What a run holds of its job is counted through the job's [`JobContext`]: every run, its
//! skills and its model calls hold the context, and so would anything kept of a finished run.

// Tests may panic on unexpected errors; the no-unwrap rule is for the engine's own code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::fanout_config_tests::FANOUT as CONFIG;
use super::{Engine, JobRequest, Settings};
use crate::actor::context::JobContext;
use crate::llm::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, LanguageModel, PartStream,
    StreamPart,
};
use crate::schema::{JobStatus, Message, Usage};
use crate::storage::MemoryStorage;

/// The fan-out workload's turns, answered from the request: the coordinator delegates to both
/// children, each child completes, then the coordinator completes. Each of the coordinator's
/// two tool generations is announced on `arrived` and waits until `open` reaches its number.
struct Gated {
    arrived: mpsc::UnboundedSender<u32>,
    open: watch::Receiver<u32>,
    calls: Mutex<u32>,
}

fn finish(reason: FinishReason) -> StreamPart {
    StreamPart::Finish {
        reason,
        usage: Usage::default(),
    }
}

fn call(id: &str, name: &str, args: serde_json::Value) -> StreamPart {
    StreamPart::ToolCall(GeneratedToolCall {
        id: id.into(),
        name: name.into(),
        args,
    })
}

#[async_trait::async_trait]
impl LanguageModel for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError> {
        let after_tools = request
            .messages
            .iter()
            .any(|m| matches!(m, Message::ToolMessage(_)));
        let parts = if request.tools.is_empty() {
            vec![
                StreamPart::TextDelta("done".into()),
                finish(FinishReason::Stop),
            ]
        } else if request.expert_key == "coordinator" {
            let n = {
                let mut calls = self.calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            self.arrived.send(n).unwrap();
            let mut open = self.open.clone();
            open.wait_for(|&o| o >= n).await.unwrap();
            if after_tools {
                vec![
                    call("call_done", "attemptCompletion", json!({})),
                    finish(FinishReason::ToolCalls),
                ]
            } else {
                vec![
                    call("call_a", "child-a", json!({ "query": "first half" })),
                    call("call_b", "child-b", json!({ "query": "second half" })),
                    finish(FinishReason::ToolCalls),
                ]
            }
        } else {
            vec![
                call("call_done", "attemptCompletion", json!({})),
                finish(FinishReason::ToolCalls),
            ]
        };
        Ok(Box::pin(futures::stream::iter(parts.into_iter().map(Ok))))
    }
}

/// The job's context's holders once they are at most `at_most`, or the last count seen after
/// 10 s (a finished run's stop completes on its own task, after its report).
async fn holders_settle(ctx: &Weak<JobContext>, at_most: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = ctx.strong_count();
        if now <= at_most || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_children_hold_nothing_of_the_job_while_their_parent_runs_on() {
    let config = crate::config::parse(CONFIG, std::path::Path::new("perstack.toml")).unwrap();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (open, open_rx) = watch::channel(0);
    let model = Arc::new(Gated {
        arrived: arrived_tx,
        open: open_rx,
        calls: Mutex::new(0),
    });
    let workspace = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(config.experts);
    settings.workspace = workspace.path().to_path_buf();
    let engine = Engine::builder()
        .settings(settings)
        .model(model)
        .storage(Arc::new(MemoryStorage::new()))
        .build();
    let handle = engine
        .start(JobRequest::new("coordinator", "go"))
        .await
        .unwrap();
    let ctx = handle.hand_back.0.clone();

    // The coordinator's first model call: what a run waiting on the model holds, with no child.
    assert_eq!(arrived.recv().await, Some(1));
    let before = ctx.strong_count();
    open.send_replace(1);

    // Its next one comes after both children reported: once they have stopped, nothing of
    // theirs may be left (their spawn arguments, their skills, their model calls).
    assert_eq!(arrived.recv().await, Some(2));
    let after = holders_settle(&ctx, before).await;
    assert!(
        after <= before,
        "the job's context has {after} holders while the coordinator waits on the model after \
         its children finished, {before} at its first call: something of the finished children \
         is still held"
    );
    open.send_replace(2);

    let outcome = tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .expect("the job did not finish within 60 s")
        .unwrap();
    assert_eq!(
        outcome.job.status,
        JobStatus::Completed,
        "{:?}",
        outcome.checkpoint.error
    );
    engine.shutdown().await;
}
