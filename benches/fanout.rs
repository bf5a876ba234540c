//! Benchmarks of the reference workload of `docs/PERFORMANCE.md`, in process.
//!
//! * `fanout/N`: N concurrent jobs of the 3-Expert fan-out tree (`experts/fanout`) on one
//!   [`Engine`] (multi-thread tokio runtime, a store that keeps nothing, no sink, no
//!   subscribers, so the RSS is the engine's own and not a store's growth) with an
//!   instant model (`examples/support/fanout.rs`). Each iteration builds a fresh engine and store
//!   untimed, times starting the N jobs until all have finished, then shuts the engine down
//!   untimed. Every job must end `completed`, or the bench panics. After each group a line gives
//!   wall time per job, engine CPU time per job (from `/proc/self/stat`, all threads) and peak
//!   RSS (`VmHWM` of `/proc/self/status`, reset to the current RSS before the group where the
//!   kernel allows, so memory that earlier iterations did not give back counts too): the numbers
//!   of targets T1 and T2. `cargo run --release --example fanout_load` measures one round
//!   without criterion and checks that finished jobs release their memory.
//! * `event_serialise`: one `callTools` event serialised to a reused `Vec<u8>` as a JSON line,
//!   the per-event cost behind target T4.
//!
//! Run with `cargo bench --bench fanout`; `cargo bench --bench fanout -- fanout/1000` runs one.

// A benchmark should fail loudly, with a message, when the engine breaks.
#![allow(clippy::expect_used)]

/// The allocator the `perstack` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../examples/support/fanout.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

use perstack::engine::Engine;
use perstack::llm::LanguageModel;
use perstack::schema::Event;

use support::{DiscardStorage, FanoutModel, peak_rss, process_cpu, reset_peak_rss, run_jobs};

/// The job sizes of the fan-out groups.
const SIZES: [usize; 3] = [1, 100, 1_000];

/// Totals over every timed iteration of one group (warm-up included).
#[derive(Default)]
struct Totals {
    wall: Duration,
    cpu: Duration,
    jobs: u64,
}

fn bench_fanout(c: &mut Criterion) {
    let settings = support::settings();
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
                            .storage(Arc::new(DiscardStorage))
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
        let peak = peak_rss();
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
