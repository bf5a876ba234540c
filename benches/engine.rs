//! Benchmarks of targets T3–T6 of `docs/PERFORMANCE.md`, in process, through the public API
//! (`Engine`, `Engine::publish`, `JobRequest`, `Settings`, `ScriptedModel`, the `LanguageModel`
//! trait, the `perstack` binary for `perstack install`). Every group ends with one summary line per target, and
//! all of them are printed again at the end.
//!
//! # Layout
//!
//! | module | target | criterion group |
//! | --- | --- | --- |
//! | [`bus`] | T4: the event bus alone, into a sink, an OS pipe and a stalled pipe | `bus/*` |
//! | [`skill`] | T5 (a): base tool calls in job steps (`todo`, `healthCheck`) | `skill/*` |
//! | [`job`] | T5 and T6 through whole jobs: first model call, tool step, delegation | `job/*` |
//! | [`t3`] | T3 (opt-in): many concurrent fan-out sessions with a slow model | none |
//!
//! This file holds `main` and what the groups share: the bound on waits, a poison-proof lock,
//! and the percentile summary lines (the store that keeps nothing is in `support`).
//!
//! Percentiles are over every timed iteration, criterion's warm-up included. Latencies measured
//! on a shared 2-core machine vary; compare ratios.
//!
//! Run with `cargo bench --bench engine` (about a minute once built); `-- job/` runs one group;
//! `PERSTACK_BENCH_T3=1 cargo bench --bench engine -- t3` runs only T3 (no criterion group is
//! named `t3`).

// A benchmark should fail loudly, with a message, when the engine breaks.
#![allow(clippy::expect_used)]

/// The allocator the `perstack` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)] // the helpers are shared with benches/fanout.rs; this bench uses a few
#[path = "../examples/support/fanout.rs"]
mod support;

#[path = "engine/bus.rs"]
mod bus;
#[path = "engine/job.rs"]
mod job;
#[path = "engine/skill.rs"]
mod skill;
#[path = "engine/t3.rs"]
mod t3;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use criterion::Criterion;

/// The bound on every wait that could hang if the engine lost an event or a reply.
const GIVE_UP: Duration = Duration::from_secs(60);

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a multi-thread tokio runtime");
    let mut report = Vec::new();
    bus::bench_bus(&mut c, &rt, &mut report);
    skill::bench_skill(&mut c, &rt, &mut report);
    job::bench_jobs(&mut c, &rt, &mut report);
    if std::env::var_os("PERSTACK_BENCH_T3").is_some_and(|v| v != "0") {
        report.push(t3::t3_sessions(&rt));
    }
    c.final_summary();
    if !report.is_empty() {
        println!("\nSummary ({} cores):", cores());
        for line in &report {
            println!("  {line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared set-up.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Reporting.

/// `label: p50 .. µs, p99 .. µs, max .. µs (n=..)`, or `None` when nothing was measured (the
/// bench was filtered out).
fn percentiles(label: &str, mut samples: Vec<Duration>) -> Option<String> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Some(format!(
        "{label}: p50 {} µs, p99 {} µs, max {} µs (n={})",
        micros(at(0.5)),
        micros(at(0.99)),
        micros(at(1.0)),
        samples.len()
    ))
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
