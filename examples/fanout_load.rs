//! Probe (temporary).
#![allow(clippy::expect_used)]
use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, LanguageModel, PartStream,
    StreamPart,
};
use perstack::schema::{JobStatus, Message, Usage};
use perstack::storage::MemoryStorage;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
const COORDINATOR: &str = "coordinator";
fn kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .expect("key")
        .split_whitespace()
        .next()
        .expect("n")
        .parse()
        .expect("num")
}
/// An instant model that answers the fan-out workload from the request alone, so one instance
/// serves any number of concurrent jobs (the scripted provider consumes each turn once).
///
/// It plays the turns of `experts/fanout/script.toml`:
/// * no tools offered: the run-result generation after `attemptCompletion` -> text;
/// * a tool message in the history (the coordinator after its delegates) -> `attemptCompletion`;
/// * the coordinator's first generation -> reasoning, then `child-a` and `child-b` at once;
/// * a child's first generation -> `attemptCompletion`.
struct FanoutModel;

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
            // Two deltas, as the scripted provider streams text.
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

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let iters: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experts/fanout");
    let config = perstack::config::load(&dir.join("perstack.toml")).expect("config");
    let model: Arc<dyn LanguageModel> = Arc::new(FanoutModel);
    println!("start: rss {} KiB", kib("VmRSS"));
    for i in 0..iters {
        let storage = Arc::new(MemoryStorage::new());
        let engine = Engine::builder()
            .settings(Settings::new(config.experts.clone()))
            .model(model.clone())
            .storage(storage.clone())
            .build();
        let t0 = Instant::now();
        let mut hs = Vec::new();
        for _ in 0..n {
            hs.push(
                engine
                    .start(JobRequest::new("coordinator", "hello"))
                    .await
                    .expect("start"),
            );
        }
        for h in hs {
            let o = h.wait().await.expect("wait");
            assert_eq!(o.job.status, JobStatus::Completed);
        }
        let el = t0.elapsed();
        engine.shutdown().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        println!(
            "iter {i}: {el:?} rss {} KiB hwm {} storage strong refs {} model refs {}",
            kib("VmRSS"),
            kib("VmHWM"),
            Arc::strong_count(&storage),
            Arc::strong_count(&model)
        );
    }
}
