//! The cluster on NATS JetStream, against a real `nats-server` on 127.0.0.1 (one per test, with
//! a fresh port and store directory; see `common::NatsServer`).

use std::sync::Arc;
use std::time::Duration;

use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::scripted::ScriptedModel;
use perstack::schema::JobStatus;
use perstack::storage::{JetStreamConfig, JetStreamStorage, Storage, StoreError};

use super::common::{self, NatsServer};

mod connect;
mod continuation;
mod delegation;
mod harness;
mod operations;
mod workers;

/// The harness itself: a JetStream key-value entry written before a server restart is read back
/// after it, through a client that reconnected on its own.
#[tokio::test]
async fn nats_server_keeps_jetstream_state_across_a_restart() {
    let Some(mut server) = NatsServer::start("nats_server_keeps_jetstream_state_across_a_restart")
    else {
        return;
    };
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "harness".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    kv.put("k", "v1".into()).await.unwrap();

    server.restart();

    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match kv.get("k").await {
                Ok(Some(value)) => return value,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the value was not readable within 20 s of the restart");
    assert_eq!(&read[..], b"v1");
}

const EXPERTS: &str = r#"
[experts."coord"]
instruction = "Delegate, then answer."
delegates = ["helper-a", "helper-b"]

[experts."helper-a"]
description = "Helps"
instruction = "Help."

[experts."helper-b"]
description = "Helps too"
instruction = "Help."

[experts."slow"]
instruction = "Answer, slowly."
"#;

const SCRIPT: &str = r#"
[[turns]]
expert = "coord"
toolCalls = [
  { name = "helper-a", args = { query = "a" } },
  { name = "helper-b", args = { query = "b" } },
]
[[turns]]
expert = "helper-a"
text = "A"
[[turns]]
expert = "helper-b"
text = "B"
[[turns]]
expert = "coord"
text = "done"
[[turns]]
expert = "slow"
delayMs = 60000
text = "too late"
"#;

/// A store on `server` through a client of its own, with the 2 s lease of the cluster tests.
async fn store(server: &NatsServer) -> JetStreamStorage {
    let client = async_nats::connect(server.url()).await.unwrap();
    JetStreamStorage::new(
        client,
        JetStreamConfig::default()
            .lease(Duration::from_secs(2), Duration::from_millis(500))
            .write_timeout(Duration::from_secs(10)),
    )
}

/// An engine on the scripted model whose every write goes to `storage`.
fn engine(dir: &std::path::Path, storage: JetStreamStorage) -> Engine {
    let cfg =
        perstack::config::parse(&common::scripted(EXPERTS), &dir.join("perstack.toml")).unwrap();
    let mut settings = Settings::new(cfg.experts);
    settings.workspace = dir.to_path_buf();
    Engine::builder()
        .settings(settings)
        .storage(Arc::new(storage))
        .model(Arc::new(
            ScriptedModel::parse(SCRIPT, "script.toml").unwrap(),
        ))
        .build()
}

/// Embedding on JetStream: `Engine::builder().storage(Arc::new(JetStreamStorage::new(..)))`
/// runs a delegating job; a second store on another connection reads back its job record,
/// checkpoints, run settings and events, numbered without gaps or repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_on_jetstream_stores_a_job_that_another_store_reads_back() {
    let Some(server) =
        NatsServer::start("an_engine_on_jetstream_stores_a_job_that_another_store_reads_back")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), store(&server).await);
    let job = engine
        .start(JobRequest::new("coord", "go").job_id("job-embedded"))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), job.wait())
        .await
        .expect("the job did not end within 30 s")
        .unwrap();
    assert_eq!(outcome.job.status, JobStatus::Completed);
    assert!(!outcome.claim_lost);
    engine.shutdown().await;

    let reader = store(&server).await;
    let stored = reader.retrieve_job("job-embedded").await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Completed);
    let last = stored.job_seq.unwrap();
    assert_eq!(reader.last_job_seq("job-embedded").await.unwrap(), last);

    let runs: Vec<String> = reader
        .all_run_settings()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.job_id == "job-embedded")
        .map(|s| s.run_id)
        .collect();
    // The coordinator (its run before and after the delegation) and two helpers.
    assert!(runs.len() >= 3, "{runs:?}");
    let checkpoints = reader.checkpoints_by_job("job-embedded").await.unwrap();
    let final_cp = checkpoints.last().unwrap();
    assert_eq!(final_cp.expert.key, "coord");
    assert_eq!(outcome.checkpoint.id, final_cp.id);
    let mut seqs = Vec::new();
    for run in &runs {
        let events = reader
            .event_contents("job-embedded", run, None)
            .await
            .unwrap();
        assert!(!events.is_empty(), "run {run} has no stored events");
        seqs.extend(events.iter().map(|e| e.job_seq.unwrap()));
    }
    seqs.sort_unstable();
    let distinct = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), distinct, "an event was stored twice");
    assert!(*seqs.last().unwrap() <= last);
    // The job's claim was released when it ended: anyone can continue it.
    drop(reader.claim("job-embedded").await.unwrap());
}

/// A worker cut off from the server past its lease (simulated by the lease disappearing, as
/// the server's TTL would make it) loses the job to another store: its engine stops the job at
/// once, reports the loss, and nothing it does after the takeover reaches the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_claim_is_lost_stops_and_writes_nothing_more() {
    let Some(server) = NatsServer::start("a_job_whose_claim_is_lost_stops_and_writes_nothing_more")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), store(&server).await);
    let job = engine
        .start(JobRequest::new("slow", "go").job_id("job-lost"))
        .await
        .unwrap();
    let taker = store(&server).await;
    assert!(matches!(
        taker.claim("job-lost").await,
        Err(StoreError::Claimed { .. })
    ));

    // The lease goes away under the holder, and another store takes the job.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut delete = async_nats::HeaderMap::new();
    delete.insert("KV-Operation", "DEL");
    js.publish_with_headers("$KV.perstack_leases.job-lost", delete, "".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let taken = taker.claim("job-lost").await.unwrap();

    let outcome = tokio::time::timeout(Duration::from_secs(20), job.wait())
        .await
        .expect("the job did not stop within 20 s of losing its claim")
        .unwrap();
    assert!(outcome.claim_lost);
    assert_eq!(outcome.checkpoint.error.as_ref().unwrap().name, "ClaimLost");
    engine.shutdown().await;

    // The store holds the job as the first holder left it before the takeover: running, with
    // no stop of the lost holder's.
    let job = taker.retrieve_job("job-lost").await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    for cp in taker.checkpoints_by_job("job-lost").await.unwrap() {
        assert_ne!(
            cp.status,
            perstack::schema::CheckpointStatus::StoppedByError
        );
    }
    for setting in taker.all_run_settings().await.unwrap() {
        for event in taker
            .event_contents("job-lost", &setting.run_id, None)
            .await
            .unwrap()
        {
            assert_ne!(event.kind(), "stopRunByError");
        }
    }
    drop(taken);
}
