//! `perstack log --verify` on a 1,000-step job: how long checking a job against its signed
//! chain takes, end to end (process start, reading ~5,000 files, hashing, signature checks).
//!
//! The job is written once through `FsStorage` (its chain signed with a key in a temp dir):
//! per step three events and a ~4 KB checkpoint, then the final `job.json`. Run with
//! `cargo bench --bench verify`; criterion prints the time per verification.

// A benchmark should fail loudly, with a message, when verification breaks.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

use criterion::Criterion;
use serde_json::json;

use perstack::schema::{Checkpoint, Event, Job, RunSetting};
use perstack::storage::{FsStorage, Storage};

const STEPS: u32 = 1_000;

fn checkpoint(step: u32, job_seq: u64) -> Checkpoint {
    let text = "lorem ipsum dolor sit amet ".repeat(40);
    let mut cp: Checkpoint = serde_json::from_value(json!({
        "id": format!("cp{step}"), "jobId": "bench-job", "runId": "run1",
        "expert": {"key": "coord", "name": "coord", "version": "1.0.0"},
        "stepNumber": step, "status": "proceeding", "messages": [],
        "padding": [text, text, text],
        "usage": {"inputTokens": 100, "outputTokens": 10, "reasoningTokens": 0, "totalTokens": 110, "cachedInputTokens": 0},
        "contextWindow": 200000, "contextWindowUsage": 0
    }))
    .expect("a checkpoint");
    cp.job_seq = Some(job_seq);
    cp
}

fn event(kind: &str, step: u32, job_seq: u64) -> Event {
    serde_json::from_value(json!({
        "type": kind, "id": format!("e{job_seq}"), "expertKey": "coord",
        "timestamp": 1_700_000_000_000u64 + job_seq, "jobId": "bench-job", "runId": "run1",
        "stepNumber": step, "text": "lorem ipsum dolor sit amet ".repeat(10), "jobSeq": job_seq
    }))
    .expect("an event")
}

fn job(status: &str) -> Job {
    serde_json::from_value(json!({
        "id": "bench-job", "status": status, "coordinatorExpertKey": "coord", "totalSteps": STEPS,
        "maxSteps": 10_000,
        "usage": {"inputTokens": 0, "outputTokens": 0, "reasoningTokens": 0, "totalTokens": 0, "cachedInputTokens": 0},
        "startedAt": 1
    }))
    .expect("a job")
}

fn run_setting() -> RunSetting {
    serde_json::from_value(json!({
        "model": "m", "providerConfig": {"providerName": "scripted"},
        "jobId": "bench-job", "runId": "run1", "expertKey": "coord", "input": {"text": "hi"},
        "experts": {}, "reasoningBudget": "low", "maxSteps": 10_000, "maxRetries": 5,
        "timeout": 300000, "startedAt": 1, "updatedAt": 1,
        "perstackApiBaseUrl": "https://api.perstack.ai", "env": {}
    }))
    .expect("a run setting")
}

fn bench_verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("config");
    let store = FsStorage::with_key_dir(dir.path().join("perstack"), Some(config.join("perstack")));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        store.store_job(&job("running")).await.unwrap();
        store.store_run_setting(&run_setting()).await.unwrap();
        let mut seq = 0;
        for step in 1..=STEPS {
            for kind in [
                "startStreamingRunResult",
                "completeStreamingRunResult",
                "startStreamingReasoning",
            ] {
                seq += 1;
                store.store_event(&event(kind, step, seq)).await.unwrap();
            }
            seq += 1;
            store
                .store_checkpoint(&checkpoint(step, seq))
                .await
                .unwrap();
        }
        store.store_job(&job("completed")).await.unwrap();
    });
    let verify = || {
        let out = Command::new(env!("CARGO_BIN_EXE_perstack"))
            .args(["log", "--verify", "--job", "bench-job"])
            .current_dir(dir.path())
            .env("XDG_CONFIG_HOME", &config)
            .env_remove("PERSTACK_STORAGE_PATH")
            .output()
            .expect("perstack log --verify");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("job bench-job: intact ("),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    verify();
    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    group.bench_function("1000_step_job", |b| b.iter(verify));
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_verify(&mut c);
    c.final_summary();
}
