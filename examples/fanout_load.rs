//! One-shot load test of the reference workload (`docs/PERFORMANCE.md`, targets T1 and T2),
//! without criterion: N concurrent fan-out jobs on one engine with an instant model and
//! [`MemoryStorage`], repeated for a number of rounds, each on a fresh engine and store.
//!
//! ```text
//! cargo run --release --example fanout_load -- [N=1000] [ROUNDS=3]
//! ```
//!
//! Per round it prints wall and CPU time per job and the process RSS, then checks that the
//! round's engine, store and jobs were freed: after `shutdown` and the last job handle, nothing
//! but this program should still hold the store or the model (the store is new each round; the
//! model count adds up over rounds). It exits 1 when something does
//! (a leak: memory then grows with every job ever run) and panics if a job does not complete.

#[path = "support/fanout.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use perstack::engine::Engine;
use perstack::llm::LanguageModel;
use perstack::storage::MemoryStorage;

use support::{FanoutModel, peak_rss, process_cpu, reset_peak_rss, run_jobs, status_kib};

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("argument {n} must be a number, not {a:?}"))
        })
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let n = arg(1, 1_000);
    let rounds = arg(2, 3);
    let settings = support::settings();
    let model: Arc<dyn LanguageModel> = Arc::new(FanoutModel);
    let rss = || status_kib("VmRSS").map_or(0.0, |kib| kib as f64 / 1024.0);
    println!("before: RSS {:.1} MB", rss());

    let mut leaked = false;
    for round in 1..=rounds {
        let reset = reset_peak_rss();
        let storage = Arc::new(MemoryStorage::new());
        let engine = Engine::builder()
            .settings(settings.clone())
            .model(model.clone())
            .storage(storage.clone())
            .build();
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        run_jobs(&engine, n).await;
        let wall = t0.elapsed();
        let cpu = process_cpu().saturating_sub(cpu0);
        let rss_done = rss();
        engine.shutdown().await;
        // Let actors that are still stopping finish before counting references.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let storage_refs = Arc::strong_count(&storage) - 1;
        let model_refs = Arc::strong_count(&model) - 1;
        drop(storage);
        println!(
            "round {round}: N={n}: {:.3} ms wall/job, {:.3} ms CPU/job, peak RSS {}{}; RSS {rss_done:.1} MB with the round's store, {:.1} MB after it was dropped; references left by the engine: to this round's store {storage_refs}, to the model (all rounds so far) {model_refs}",
            wall.as_secs_f64() * 1e3 / n as f64,
            cpu.as_secs_f64() * 1e3 / n as f64,
            peak_rss(),
            if reset { "" } else { " (process peak)" },
            rss(),
        );
        if storage_refs > 0 || model_refs > 0 {
            leaked = true;
        }
    }
    if leaked {
        eprintln!(
            "leak: finished jobs still hold the store or the model after Engine::shutdown (see the counts above)"
        );
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
