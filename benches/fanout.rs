//! Benchmarks of the reference workload of `docs/PERFORMANCE.md`, in process.
//!
//! * `fanout/N`: N concurrent jobs of the 3-Expert fan-out tree (`experts/fanout`) on one
//!   [`Engine`] (multi-thread tokio runtime, [`MemoryStorage`], no sink, no subscribers) with an
//!   instant model. Every job must end `completed`, or the bench panics. After each group a line
//!   gives wall time per job, engine CPU time per job (from `/proc/self/stat`, all threads) and
//!   peak RSS (`VmHWM` of `/proc/self/status`, reset before the group where the kernel allows):
//!   the numbers of targets T1 and T2.
//! * `event_serialise`: one `callTools` event serialised to a reused `Vec<u8>` as a JSON line,
//!   the per-event cost behind target T4.
//!
//! Run with `cargo bench --bench fanout`; `cargo bench --bench fanout -- fanout/1000` runs one.

// A benchmark should fail loudly, with a message, when the engine breaks.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use serde_json::json;

use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, LanguageModel, PartStream,
    StreamPart,
};
use perstack::schema::{Event, JobStatus, Message, Usage};
use perstack::storage::MemoryStorage;

/// The job sizes of the fan-out groups.
const SIZES: [usize; 3] = [1, 100, 1_000];

/// The coordinator of the reference workload.
const COORDINATOR: &str = "coordinator";

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

/// `experts/fanout/perstack.toml`, from the crate root.
fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experts/fanout/perstack.toml")
}

/// User + system CPU time of the whole process (all threads), from `/proc/self/stat`.
///
/// The kernel counts in clock ticks of `USER_HZ`, which is 100 on Linux, so each reading has
/// 10 ms resolution: the benchmark sums many iterations before dividing.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the `(comm)` field, which may itself contain spaces: state is field 3,
    // utime field 14 and stime field 15.
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

/// A `Vm*` line of `/proc/self/status`, in KiB.
fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reset the peak RSS to the current RSS (Linux ≥ 4.0); whether it worked.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Start `n` jobs of the workload on `engine` at once and wait for all; panics unless every
/// one completed.
async fn run_jobs(engine: &Engine, n: usize) {
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let handle = engine
            .start(JobRequest::new(COORDINATOR, "hello"))
            .await
            .expect("the engine must accept the fan-out job");
        handles.push(handle);
    }
    let outcomes = futures::future::join_all(handles.into_iter().map(|h| h.wait())).await;
    for outcome in outcomes {
        let outcome = outcome.expect("every fan-out job must report an outcome");
        assert_eq!(
            outcome.job.status,
            JobStatus::Completed,
            "a fan-out job did not complete: {:?}",
            outcome.text
        );
    }
}

/// Totals over every timed iteration of one group (warm-up included).
#[derive(Default)]
struct Totals {
    wall: Duration,
    cpu: Duration,
    jobs: u64,
}

fn bench_fanout(c: &mut Criterion) {
    let config = perstack::config::load(&config_path()).expect("experts/fanout/perstack.toml");
    let mut settings = Settings::new(config.experts.clone());
    settings.provider_name = "scripted".into();
    if let Some(model) = &config.model {
        settings.model = model.clone();
    }
    let model: Arc<dyn LanguageModel> = Arc::new(FanoutModel);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a multi-thread tokio runtime");

    for n in SIZES {
        let mut group = c.benchmark_group("fanout");
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(n as u64));
        match n {
            1 => group
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(3)),
            100 => group
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(4)),
            _ => group
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(5)),
        };
        let reset = reset_peak_rss();
        let mut totals = Totals::default();
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh engine and store per iteration (built and shut down untimed), so
                    // the in-memory store does not grow across iterations.
                    let engine = {
                        let _guard = rt.enter();
                        Engine::builder()
                            .settings(settings.clone())
                            .model(model.clone())
                            .storage(Arc::new(MemoryStorage::new()))
                            .build()
                    };
                    let cpu0 = process_cpu();
                    let t0 = Instant::now();
                    rt.block_on(run_jobs(&engine, n));
                    let wall = t0.elapsed();
                    let cpu = process_cpu().saturating_sub(cpu0);
                    elapsed += wall;
                    totals.wall += wall;
                    totals.cpu += cpu;
                    totals.jobs += n as u64;
                    rt.block_on(engine.shutdown());
                }
                elapsed
            });
        });
        group.finish();
        if totals.jobs == 0 {
            continue; // filtered out on the command line
        }
        let jobs = totals.jobs as f64;
        let peak = status_kib("VmHWM").map_or_else(
            || "unknown".to_string(),
            |kib| format!("{:.1} MB", kib as f64 / 1024.0),
        );
        println!(
            "fanout N={n}: {:.3} ms wall/job, {:.3} ms CPU/job, peak RSS {peak}{} ({} jobs timed)",
            totals.wall.as_secs_f64() * 1e3 / jobs,
            totals.cpu.as_secs_f64() * 1e3 / jobs,
            if reset {
                ""
            } else {
                " (process peak, not reset)"
            },
            totals.jobs,
        );
    }
}

/// A `callTools` event of the reference workload, as Perstack prints it.
const CALL_TOOLS: &str = r#"{"type":"callTools","id":"bwgiescld20w6p2hvmp669hi","expertKey":"coordinator","timestamp":1795729279647,"jobId":"kq2y1n5v0d7c3x8m4b6a9z1w","runId":"czh87xqx33fm5efnri0vp050","stepNumber":1,"newMessage":{"type":"expertMessage","contents":[{"type":"thinkingPart","id":"t0b3kq9v8x7c6n5m4l3k2j1h","thinking":"Two independent halves: delegate both at once."},{"type":"toolCallPart","toolCallId":"call_child_a","toolName":"child-a","args":{"query":"Do the first half"},"id":"e8b0m1gux6cyn6vy61zkbo9y"},{"type":"toolCallPart","toolCallId":"call_child_b","toolName":"child-b","args":{"query":"Do the second half"},"id":"i8juirdznq0pp7hukm4pgqfl"}],"id":"mux230rwscs9lw1ca55uasw9"},"toolCalls":[{"id":"call_child_a","skillName":"child-a","toolName":"child-a","args":{"query":"Do the first half"}},{"id":"call_child_b","skillName":"child-b","toolName":"child-b","args":{"query":"Do the second half"}}],"usage":{"inputTokens":120,"outputTokens":30,"reasoningTokens":0,"totalTokens":150,"cachedInputTokens":0}}"#;

fn bench_event_serialise(c: &mut Criterion) {
    let event: Event = serde_json::from_str(CALL_TOOLS).expect("a valid callTools event");
    let mut buf = Vec::with_capacity(4096);
    serde_json::to_writer(&mut buf, &event).expect("serialisable event");
    let line_len = buf.len() + 1;

    let mut group = c.benchmark_group("event_serialise");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    group.bench_function("callTools", |b| {
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, std::hint::black_box(&event))
                .expect("serialisable event");
            buf.push(b'\n');
            std::hint::black_box(buf.len())
        });
    });
    group.finish();

    // A plain loop for an events/s figure independent of criterion's report format.
    let count = 200_000u32;
    let t0 = Instant::now();
    for _ in 0..count {
        buf.clear();
        serde_json::to_writer(&mut buf, std::hint::black_box(&event)).expect("serialisable event");
        buf.push(b'\n');
        std::hint::black_box(buf.len());
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "event_serialise callTools ({line_len} bytes): {:.0} ns/event, {:.2} M events/s, {:.0} MB/s",
        secs * 1e9 / f64::from(count),
        f64::from(count) / secs / 1e6,
        f64::from(count) * line_len as f64 / secs / 1e6,
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_fanout(&mut c);
    bench_event_serialise(&mut c);
    c.final_summary();
}
