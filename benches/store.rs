//! Store throughput on NATS JetStream against a local `nats-server` (its own port and store
//! directory, killed at the end): how many checkpoint and event writes per second one writer
//! gets, each acknowledged by JetStream before the next starts (the engine's order: a step's
//! checkpoint, then its event).
//!
//! * `jetstream/checkpoint`: one ~4 KB checkpoint, fenced by the job's claim.
//! * `jetstream/event`: one `callTools`-sized event with its `jobSeq` and message id, fenced.
//! * `jetstream/step`: a checkpoint then its event, as one engine step stores them.
//! * `jetstream/claim`: claim a job (lease, fence and claim records) and release it.
//!
//! The server is `$NATS_SERVER_BIN`, else `nats-server` on `PATH`; without one the bench
//! prints SKIP and measures nothing. Run with `cargo bench --bench store`.

// A benchmark should fail loudly, with a message, when the store breaks.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../src/tests/support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use serde_json::json;

use perstack::schema::{Checkpoint, Event};
use perstack::storage::{JetStreamConfig, JetStreamStorage, Storage};

/// A checkpoint of `step`, about 4 KB of JSON (an unknown field stands in for messages).
fn checkpoint(id: &str, step: u32, job_seq: u64) -> Checkpoint {
    let text = "lorem ipsum dolor sit amet ".repeat(40);
    let mut cp: Checkpoint = serde_json::from_value(json!({
        "id": id, "jobId": "bench-job", "runId": "run1",
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

/// A stored run event with `job_seq`.
fn event(step: u32, job_seq: u64) -> Event {
    serde_json::from_value(json!({
        "type": "completeStreamingRunResult", "id": format!("e{job_seq}"), "expertKey": "coord",
        "timestamp": 1_700_000_000_000u64 + job_seq, "jobId": "bench-job", "runId": "run1",
        "stepNumber": step, "text": "lorem ipsum dolor sit amet ".repeat(10), "jobSeq": job_seq
    }))
    .expect("an event")
}

fn bench_store(c: &mut Criterion) {
    let Some(server) = support::NatsServer::start("store bench") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a multi-thread tokio runtime");
    let store = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let store = JetStreamStorage::new(
            client,
            JetStreamConfig::default().write_timeout(Duration::from_secs(5)),
        );
        store.ensure_ready().await.expect("streams and buckets");
        store
    });
    let claim = rt.block_on(store.claim("bench-job")).expect("claim");
    let seq = Arc::new(AtomicU64::new(0));
    let next = || seq.fetch_add(1, Ordering::Relaxed) + 1;

    let mut group = c.benchmark_group("jetstream");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    group.bench_function("checkpoint", |b| {
        b.to_async(&rt).iter(|| {
            let n = next();
            let cp = checkpoint(&format!("c{n}"), (n % 1000) as u32 + 1, n);
            let store = store.clone();
            async move {
                store
                    .store_checkpoint(&cp)
                    .await
                    .expect("checkpoint stored")
            }
        });
    });
    group.bench_function("event", |b| {
        b.to_async(&rt).iter(|| {
            let n = next();
            let e = event((n % 1000) as u32 + 1, n);
            let store = store.clone();
            async move { store.store_event(&e).await.expect("event stored") }
        });
    });
    group.bench_function("step", |b| {
        b.to_async(&rt).iter(|| {
            let n = next();
            let cp = checkpoint(&format!("c{n}"), (n % 1000) as u32 + 1, n);
            let e = event((n % 1000) as u32 + 1, n);
            let store = store.clone();
            async move {
                store
                    .store_checkpoint(&cp)
                    .await
                    .expect("checkpoint stored");
                store.store_event(&e).await.expect("event stored");
            }
        });
    });
    let jobs = AtomicU64::new(0);
    group.bench_function("claim", |b| {
        b.to_async(&rt).iter(|| {
            let job = format!("claim-{}", jobs.fetch_add(1, Ordering::Relaxed));
            let store = store.clone();
            async move { drop(store.claim(&job).await.expect("claimed")) }
        });
    });
    group.finish();
    assert!(!claim.is_lost(), "the bench's claim was lost");
    drop(claim);
    drop(rt);
    drop(server);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_store(&mut c);
    c.final_summary();
}
