//! The storage contract, run against both implementations, and the wire values the tests use.

use serde_json::json;

use super::*;

/// A minimal checkpoint, built from JSON as Perstack writes it.
pub(crate) fn checkpoint(job: &str, run: &str, id: &str, step: u32) -> Checkpoint {
    serde_json::from_value(json!({
        "id": id, "jobId": job, "runId": run,
        "expert": {"key": "coord", "name": "coord", "version": "1.0.0"},
        "stepNumber": step, "status": "proceeding", "messages": [],
        "usage": {"inputTokens": 0, "outputTokens": 0, "reasoningTokens": 0, "totalTokens": 0, "cachedInputTokens": 0},
        "contextWindow": 200000, "contextWindowUsage": 0
    }))
    .unwrap()
}

/// A minimal job record.
pub(crate) fn job(id: &str, started_at: u64) -> Job {
    serde_json::from_value(json!({
        "id": id, "status": "running", "coordinatorExpertKey": "coord", "totalSteps": 0, "maxSteps": 100,
        "usage": {"inputTokens": 0, "outputTokens": 0, "reasoningTokens": 0, "totalTokens": 0, "cachedInputTokens": 0},
        "startedAt": started_at
    }))
    .unwrap()
}

/// A minimal run setting.
pub(crate) fn run_setting(job: &str, run: &str, model: &str, updated_at: u64) -> RunSetting {
    serde_json::from_value(json!({
        "model": model, "providerConfig": {"providerName": "anthropic"},
        "jobId": job, "runId": run, "expertKey": "coord", "input": {"text": "hi"}, "experts": {},
        "reasoningBudget": "low", "maxSteps": 100, "maxRetries": 5, "timeout": 300000,
        "startedAt": 1, "updatedAt": updated_at, "perstackApiBaseUrl": "https://api.perstack.ai", "env": {}
    }))
    .unwrap()
}

/// A streaming delta (a run event) with an id, timestamp and step.
pub(crate) fn delta(job: &str, run: &str, id: &str, timestamp: u64, step: u32) -> Event {
    serde_json::from_value(json!({
        "type": "streamRunResult", "id": id, "expertKey": "coord", "timestamp": timestamp,
        "jobId": job, "runId": run, "stepNumber": step, "delta": id
    }))
    .unwrap()
}

/// A run event of any payload-free or text type.
pub(crate) fn run_event(job: &str, run: &str, kind: &str, timestamp: u64, step: u32) -> Event {
    serde_json::from_value(json!({
        "type": kind, "id": format!("{kind}-{timestamp}"), "expertKey": "coord", "timestamp": timestamp,
        "jobId": job, "runId": run, "stepNumber": step, "text": "done"
    }))
    .unwrap()
}

/// A runtime event: no stepNumber, so never stored.
pub(crate) fn runtime_event(job: &str, run: &str) -> Event {
    serde_json::from_value(json!({
        "type": "skillDisconnected", "id": "rt", "timestamp": 5, "jobId": job, "runId": run,
        "skillName": "@perstack/base"
    }))
    .unwrap()
}

/// Runs `check` against a fresh store of each kind.
macro_rules! for_each_store {
    ($check:ident) => {
        mod $check {
            #[tokio::test]
            async fn on_the_file_system() {
                let dir = tempfile::tempdir().unwrap();
                super::$check(&super::FsStorage::new(dir.path().join("perstack"))).await;
            }

            #[tokio::test]
            async fn in_memory() {
                super::$check(&super::MemoryStorage::new()).await;
            }

            /// On a real `nats-server` of its own (SKIP when none is installed, except in CI).
            #[tokio::test]
            async fn on_jetstream() {
                let test = concat!(stringify!($check), "::on_jetstream");
                let Some(server) = crate::tests::support::NatsServer::start(test) else {
                    return;
                };
                let client = async_nats::connect(server.url()).await.unwrap();
                let store = super::JetStreamStorage::new(
                    client,
                    super::JetStreamConfig::default()
                        .lease(
                            std::time::Duration::from_secs(2),
                            std::time::Duration::from_millis(500),
                        )
                        .write_timeout(std::time::Duration::from_secs(10)),
                );
                super::$check(&store).await;
            }
        }
    };
}

async fn checkpoints_round_trip_and_sort_by_step(store: &impl Storage) {
    let c3 = checkpoint("job1", "run1", "c3", 3);
    let c1 = checkpoint("job1", "run1", "c1", 1);
    let c2a = checkpoint("job1", "run2", "c2a", 2);
    let c2b = checkpoint("job1", "run3", "c2b", 2);
    for c in [&c3, &c1, &c2a, &c2b] {
        store.store_checkpoint(c).await.unwrap();
    }
    store
        .store_checkpoint(&checkpoint("job2", "run9", "other", 1))
        .await
        .unwrap();
    assert_eq!(store.retrieve_checkpoint("job1", "c3").await.unwrap(), c3);
    let steps: Vec<(u32, String)> = store
        .checkpoints_by_job("job1")
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.step_number, c.id))
        .collect();
    assert_eq!(steps[0], (1, "c1".to_owned()));
    assert_eq!(steps[3], (3, "c3".to_owned()));
    assert_eq!(steps.len(), 4);
    let mut step2: Vec<&str> = steps[1..3].iter().map(|(_, id)| id.as_str()).collect();
    step2.sort_unstable();
    assert_eq!(step2, ["c2a", "c2b"]);
    assert!(store.checkpoints_by_job("nobody").await.unwrap().is_empty());
}
for_each_store!(checkpoints_round_trip_and_sort_by_step);

async fn storing_a_checkpoint_again_replaces_it(store: &impl Storage) {
    let mut c = checkpoint("job1", "run1", "c1", 1);
    store.store_checkpoint(&c).await.unwrap();
    c.step_number = 2;
    store.store_checkpoint(&c).await.unwrap();
    assert_eq!(store.checkpoints_by_job("job1").await.unwrap(), [c]);
}
for_each_store!(storing_a_checkpoint_again_replaces_it);

async fn a_missing_checkpoint_is_not_found(store: &impl Storage) {
    let err = store.retrieve_checkpoint("job1", "nope").await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "checkpoint", ref id } if id == "nope"),
        "{err}"
    );
    assert!(!err.is_retryable());
}
for_each_store!(a_missing_checkpoint_is_not_found);

async fn jobs_round_trip_newest_first(store: &impl Storage) {
    assert_eq!(store.retrieve_job("job1").await.unwrap(), None);
    let (old, new, newer) = (job("job-old", 10), job("job-new", 20), job("job-newer", 30));
    for j in [&new, &old, &newer] {
        store.store_job(j).await.unwrap();
    }
    assert_eq!(
        store.retrieve_job("job-new").await.unwrap(),
        Some(new.clone())
    );
    assert_eq!(store.all_jobs().await.unwrap(), [newer, new, old]);
}
for_each_store!(jobs_round_trip_newest_first);

async fn a_second_run_setting_only_bumps_updated_at(store: &impl Storage) {
    store
        .store_run_setting(&run_setting("job1", "run1", "first-model", 100))
        .await
        .unwrap();
    store
        .store_run_setting(&run_setting("job1", "run1", "second-model", 200))
        .await
        .unwrap();
    // An older updatedAt never moves it backwards.
    store
        .store_run_setting(&run_setting("job1", "run1", "third-model", 150))
        .await
        .unwrap();
    assert_eq!(
        store.all_run_settings().await.unwrap(),
        [run_setting("job1", "run1", "first-model", 200)]
    );
}
for_each_store!(a_second_run_setting_only_bumps_updated_at);

async fn run_settings_are_listed_newest_first(store: &impl Storage) {
    let a = run_setting("job1", "run1", "m", 100);
    let b = run_setting("job1", "run2", "m", 300);
    let c = run_setting("job2", "run3", "m", 200);
    for s in [&a, &b, &c] {
        store.store_run_setting(s).await.unwrap();
    }
    assert_eq!(store.all_run_settings().await.unwrap(), [b, c, a]);
}
for_each_store!(run_settings_are_listed_newest_first);

async fn events_round_trip_by_timestamp_and_step(store: &impl Storage) {
    let e1 = run_event("job1", "run1", "startStreamingRunResult", 100, 1);
    let e2 = delta("job1", "run1", "d1", 101, 1);
    let e3 = run_event("job1", "run1", "completeStreamingRunResult", 102, 2);
    for e in [&e3, &e1, &e2] {
        store.store_event(e).await.unwrap();
    }
    store
        .store_event(&runtime_event("job1", "run1"))
        .await
        .unwrap();
    store
        .store_event(&delta("job1", "run2", "elsewhere", 100, 1))
        .await
        .unwrap();
    assert_eq!(
        store.event_contents("job1", "run1", None).await.unwrap(),
        [e1.clone(), e2.clone(), e3]
    );
    assert_eq!(
        store.event_contents("job1", "run1", Some(1)).await.unwrap(),
        [e1, e2]
    );
    let metas = store.events_by_run("job1", "run1").await.unwrap();
    let kinds: Vec<(u64, u32, &str)> = metas
        .iter()
        .map(|m| (m.timestamp, m.step_number, m.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (100, 1, "startStreamingRunResult"),
            (101, 1, "streamRunResult"),
            (102, 2, "completeStreamingRunResult")
        ]
    );
    assert!(
        store
            .event_contents("job1", "nobody", None)
            .await
            .unwrap()
            .is_empty()
    );
}
for_each_store!(events_round_trip_by_timestamp_and_step);

async fn same_millisecond_events_keep_both_in_write_order(store: &impl Storage) {
    let deltas: Vec<Event> = (0..5)
        .map(|i| delta("job1", "run1", &format!("d{i}"), 100, 1))
        .collect();
    for d in &deltas {
        store.store_event(d).await.unwrap();
    }
    let done = run_event("job1", "run1", "completeStreamingRunResult", 100, 1);
    store.store_event(&done).await.unwrap();
    let mut expected = deltas;
    expected.push(done);
    assert_eq!(
        store.event_contents("job1", "run1", None).await.unwrap(),
        expected
    );
}
for_each_store!(same_millisecond_events_keep_both_in_write_order);

async fn hostile_ids_are_rejected(store: &impl Storage) {
    for bad in ["../x", "a/b", "", "..", ".", ".tmp-x", "a\\b"] {
        let invalid = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidId { .. }));
        assert!(
            invalid(
                store
                    .store_checkpoint(&checkpoint(bad, "run1", "c1", 1))
                    .await
            ),
            "{bad:?}"
        );
        assert!(
            invalid(
                store
                    .store_checkpoint(&checkpoint("job1", "run1", bad, 1))
                    .await
            ),
            "{bad:?}"
        );
        assert!(invalid(store.store_job(&job(bad, 1)).await), "{bad:?}");
        assert!(
            invalid(store.store_event(&delta(bad, "run1", "d", 1, 1)).await),
            "{bad:?}"
        );
        assert!(
            invalid(store.store_event(&delta("job1", bad, "d", 1, 1)).await),
            "{bad:?}"
        );
        assert!(
            invalid(
                store
                    .store_run_setting(&run_setting("job1", bad, "m", 1))
                    .await
            ),
            "{bad:?}"
        );
        assert!(
            invalid(store.retrieve_checkpoint("job1", bad).await.map(drop)),
            "{bad:?}"
        );
        assert!(invalid(store.retrieve_job(bad).await.map(drop)), "{bad:?}");
        assert!(
            invalid(store.checkpoints_by_job(bad).await.map(drop)),
            "{bad:?}"
        );
        assert!(
            invalid(store.events_by_run("job1", bad).await.map(drop)),
            "{bad:?}"
        );
        assert!(
            invalid(store.event_contents(bad, "run1", None).await.map(drop)),
            "{bad:?}"
        );
    }
    assert!(store.all_jobs().await.unwrap().is_empty());
    assert!(store.all_run_settings().await.unwrap().is_empty());
}
for_each_store!(hostile_ids_are_rejected);

#[test]
fn errors_name_the_file_and_declare_their_policy() {
    let io = |kind| StoreError::Io {
        path: "/p/jobs/j/job.json".into(),
        source: io::Error::from(kind),
    };
    assert!(io(io::ErrorKind::Interrupted).is_retryable());
    assert!(!io(io::ErrorKind::PermissionDenied).is_retryable());
    assert!(
        io(io::ErrorKind::PermissionDenied)
            .to_string()
            .contains("/p/jobs/j/job.json")
    );
    let corrupt = StoreError::Corrupt {
        path: "/p/c.json".into(),
        message: "EOF".into(),
    };
    assert_eq!(corrupt.to_string(), "corrupt stored file /p/c.json: EOF");
    assert!(!corrupt.is_retryable());
    let invalid = StoreError::InvalidId {
        what: "job",
        id: "../x".into(),
    };
    assert!(invalid.to_string().starts_with("invalid job id \"../x\""));
}

for_each_store!(one_writer_per_job_until_the_claim_is_dropped);
async fn one_writer_per_job_until_the_claim_is_dropped(store: &impl Storage) {
    let first = store.claim("job1").await.unwrap();
    assert_eq!(first.job_id(), "job1");
    assert!(!first.is_lost());
    let first_token = first.token();
    let refused = store.claim("job1").await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Claimed { job_id, .. } if job_id == "job1"),
        "{refused:?}"
    );
    assert_eq!(refused.exit_code(), 2);
    // Another job is independent.
    let other = store.claim("job2").await.unwrap();
    drop(first);
    let second = store.claim("job1").await.unwrap();
    assert!(
        second.token() > first_token,
        "token {} after {first_token}",
        second.token()
    );
    assert!(other.token() >= 1);
    assert!(matches!(
        store.claim("../x").await,
        Err(StoreError::InvalidId { .. })
    ));
}

#[tokio::test]
async fn a_refused_claim_on_disk_names_the_holding_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStorage::new(dir.path().join("perstack"));
    let _held = store.claim("job1").await.unwrap();
    let holder = match FsStorage::new(dir.path().join("perstack"))
        .claim("job1")
        .await
    {
        Err(StoreError::Claimed { holder, .. }) => holder,
        other => panic!("expected Claimed, got {other:?}"),
    };
    assert!(
        holder.starts_with(&format!("pid {} on ", std::process::id())),
        "{holder}"
    );
    // The lock file sits beside Perstack's files and is not taken for a job record.
    assert!(dir.path().join("perstack/jobs/job1/writer.lock").is_file());
    assert!(store.all_jobs().await.unwrap().is_empty());
}
