//! What only the file-system store has: the exact layout, atomicity, corrupt and stray files.

use std::fs;
use std::path::Path;

use super::layout::parse_event_file_name;
use super::*;
use crate::storage::tests::{checkpoint, delta, job, run_event, run_setting, runtime_event};

fn store() -> (tempfile::TempDir, FsStorage) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStorage::new(dir.path().join("perstack"));
    (dir, store)
}

/// File names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn files_are_laid_out_and_named_exactly_as_perstack_does() {
    let (_dir, store) = store();
    let base = store.base().to_path_buf();
    store.store_job(&job("job1", 10)).await.unwrap();
    store
        .store_checkpoint(&checkpoint("job1", "run1", "ck1", 1))
        .await
        .unwrap();
    store
        .store_run_setting(&run_setting("job1", "run1", "m", 1))
        .await
        .unwrap();
    store
        .store_event(&delta("job1", "run1", "d", 1795729279442, 3))
        .await
        .unwrap();
    store
        .store_event(&runtime_event("job1", "run1"))
        .await
        .unwrap();

    assert_eq!(names(&base), ["jobs"]);
    assert_eq!(names(&base.join("jobs")), ["job1"]);
    assert_eq!(
        names(&base.join("jobs/job1")),
        // `audit`: the job's chain and runtime side log, beside Perstack's files.
        ["audit", "checkpoints", "job.json", "runs"]
    );
    assert_eq!(names(&base.join("jobs/job1/checkpoints")), ["ck1.json"]);
    assert_eq!(names(&base.join("jobs/job1/runs")), ["run1"]);
    assert_eq!(
        names(&base.join("jobs/job1/runs/run1")),
        [
            "event-1795729279442-3-streamRunResult.json",
            "run-setting.json"
        ]
    );

    let job_json = fs::read_to_string(base.join("jobs/job1/job.json")).unwrap();
    assert!(
        job_json.starts_with("{\n  \"id\": \"job1\",\n  \"status\": \"running\""),
        "{job_json}"
    );
    for compact in [
        "jobs/job1/checkpoints/ck1.json",
        "jobs/job1/runs/run1/run-setting.json",
        "jobs/job1/runs/run1/event-1795729279442-3-streamRunResult.json",
    ] {
        let text = fs::read_to_string(base.join(compact)).unwrap();
        assert!(
            !text.contains('\n') && text.starts_with('{'),
            "{compact}: {text}"
        );
    }
    let event = fs::read_to_string(
        base.join("jobs/job1/runs/run1/event-1795729279442-3-streamRunResult.json"),
    )
    .unwrap();
    assert!(event.starts_with(
        r#"{"type":"streamRunResult","id":"d","expertKey":"coord","timestamp":1795729279442"#
    ));
}

#[tokio::test]
async fn files_written_by_perstack_are_read_back() {
    let (_dir, store) = store();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/perstack-traces/s01-attempt-completion"
    );
    let result: Checkpoint =
        serde_json::from_str(&fs::read_to_string(format!("{fixture}/result.json")).unwrap())
            .unwrap();
    let checkpoints = store
        .base()
        .join("jobs")
        .join(&result.job_id)
        .join("checkpoints");
    fs::create_dir_all(&checkpoints).unwrap();
    fs::write(
        checkpoints.join(format!("{}.json", result.id)),
        serde_json::to_vec(&result).unwrap(),
    )
    .unwrap();
    assert_eq!(
        store
            .retrieve_checkpoint(&result.job_id, &result.id)
            .await
            .unwrap(),
        result
    );

    // Every run event of the recorded trace, written under Perstack's own file names.
    let run_dir = store
        .base()
        .join("jobs")
        .join(&result.job_id)
        .join("runs")
        .join(&result.run_id);
    fs::create_dir_all(&run_dir).unwrap();
    let events: Vec<Event> = fs::read_to_string(format!("{fixture}/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(Event::is_run_event)
        .collect();
    for e in &events {
        let name = event_file_name(e.timestamp, e.step_number.unwrap(), e.kind());
        fs::write(run_dir.join(name), serde_json::to_vec(e).unwrap()).unwrap();
    }
    // Same-millisecond events of different types come back in the order the runtime wrote them.
    let read = store
        .event_contents(&result.job_id, &result.run_id, None)
        .await
        .unwrap();
    assert_eq!(read, events);
}

#[tokio::test]
async fn hostile_ids_never_touch_the_disk() {
    let (_dir, store) = store();
    for bad in ["../x", "a/b", "", "..", "/etc"] {
        assert!(
            store
                .store_checkpoint(&checkpoint(bad, "r", "c", 1))
                .await
                .is_err()
        );
        assert!(
            store
                .store_checkpoint(&checkpoint("j", "r", bad, 1))
                .await
                .is_err()
        );
        assert!(store.store_job(&job(bad, 1)).await.is_err());
        assert!(
            store
                .store_event(&delta("j", bad, "d", 1, 1))
                .await
                .is_err()
        );
        assert!(
            store
                .store_run_setting(&run_setting(bad, "r", "m", 1))
                .await
                .is_err()
        );
    }
    assert!(!store.base().exists());
    assert!(!store.base().parent().unwrap().join("x").exists());
}

#[tokio::test]
async fn a_corrupt_checkpoint_is_reported_with_its_path() {
    let (_dir, store) = store();
    store
        .store_checkpoint(&checkpoint("job1", "run1", "good", 1))
        .await
        .unwrap();
    let bad = store.base().join("jobs/job1/checkpoints/bad.json");
    fs::write(&bad, b"{\"id\":\"bad\",\"jobId\":").unwrap();

    let err = store.retrieve_checkpoint("job1", "bad").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if *path == bad),
        "{err}"
    );
    assert!(err.to_string().contains("bad.json"), "{err}");

    let err = store.checkpoints_by_job("job1").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if *path == bad),
        "{err}"
    );
    assert_eq!(
        store.retrieve_checkpoint("job1", "good").await.unwrap().id,
        "good"
    );
}

#[tokio::test]
async fn corrupt_jobs_run_settings_and_events_are_reported_too() {
    let (_dir, store) = store();
    store.store_job(&job("job1", 1)).await.unwrap();
    store
        .store_run_setting(&run_setting("job1", "run1", "m", 1))
        .await
        .unwrap();
    store
        .store_event(&delta("job1", "run1", "d", 1, 1))
        .await
        .unwrap();
    let base = store.base().join("jobs/job1");
    fs::write(base.join("job.json"), b"[]").unwrap();
    fs::write(base.join("runs/run1/run-setting.json"), b"").unwrap();
    fs::write(base.join("runs/run1/event-1-1-streamRunResult.json"), b"{").unwrap();

    let corrupt = |r: Result<(), StoreError>, file: &str| match r {
        Err(StoreError::Corrupt { path, .. }) => {
            assert!(path.ends_with(file), "{}", path.display())
        }
        other => panic!("expected Corrupt for {file}, got {other:?}"),
    };
    corrupt(store.retrieve_job("job1").await.map(drop), "job.json");
    corrupt(store.all_jobs().await.map(drop), "job.json");
    corrupt(store.all_run_settings().await.map(drop), "run-setting.json");
    corrupt(
        store
            .store_run_setting(&run_setting("job1", "run1", "m", 2))
            .await,
        "run-setting.json",
    );
    corrupt(
        store.event_contents("job1", "run1", None).await.map(drop),
        "event-1-1-streamRunResult.json",
    );

    fs::write(base.join("runs/run1/event-x-1.json"), b"{}").unwrap();
    corrupt(
        store.events_by_run("job1", "run1").await.map(drop),
        "event-x-1.json",
    );
}

#[tokio::test]
async fn leftover_temp_files_are_ignored() {
    let (_dir, store) = store();
    store.store_job(&job("job1", 1)).await.unwrap();
    store
        .store_checkpoint(&checkpoint("job1", "run1", "c1", 1))
        .await
        .unwrap();
    store
        .store_run_setting(&run_setting("job1", "run1", "m", 1))
        .await
        .unwrap();
    store
        .store_event(&delta("job1", "run1", "d", 1, 1))
        .await
        .unwrap();
    let job_dir = store.base().join("jobs/job1");
    // What a crash between write and rename leaves behind, half written.
    for dir in [
        store.base().join("jobs"),
        job_dir.clone(),
        job_dir.join("checkpoints"),
        job_dir.join("runs/run1"),
    ] {
        fs::write(dir.join(".tmp-abc123"), b"{\"id\":").unwrap();
    }
    fs::create_dir(job_dir.join("runs/.tmp-dir")).unwrap();

    assert_eq!(store.checkpoints_by_job("job1").await.unwrap().len(), 1);
    assert_eq!(store.all_jobs().await.unwrap().len(), 1);
    assert_eq!(store.all_run_settings().await.unwrap().len(), 1);
    assert_eq!(store.events_by_run("job1", "run1").await.unwrap().len(), 1);
    assert_eq!(
        store
            .event_contents("job1", "run1", None)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn writes_leave_no_temp_files_behind() {
    let (_dir, store) = store();
    store
        .store_checkpoint(&checkpoint("job1", "run1", "c1", 1))
        .await
        .unwrap();
    store
        .store_checkpoint(&checkpoint("job1", "run1", "c1", 2))
        .await
        .unwrap();
    store.store_job(&job("job1", 1)).await.unwrap();
    store
        .store_run_setting(&run_setting("job1", "run1", "m", 1))
        .await
        .unwrap();
    store
        .store_run_setting(&run_setting("job1", "run1", "m", 2))
        .await
        .unwrap();
    store
        .store_event(&delta("job1", "run1", "d", 1, 1))
        .await
        .unwrap();
    store
        .store_event(&delta("job1", "run1", "d", 1, 1))
        .await
        .unwrap();
    let job_dir = store.base().join("jobs/job1");
    assert_eq!(
        names(&job_dir),
        ["audit", "checkpoints", "job.json", "runs"]
    );
    assert_eq!(names(&job_dir.join("checkpoints")), ["c1.json"]);
    assert_eq!(
        names(&job_dir.join("runs/run1")),
        [
            "event-1-1-streamRunResult.json",
            "event-2-1-streamRunResult.json",
            "run-setting.json"
        ]
    );
}

#[tokio::test]
async fn same_millisecond_collisions_get_the_next_free_millisecond_in_the_name_only() {
    let (_dir, store) = store();
    store
        .store_event(&delta("job1", "run1", "a", 100, 1))
        .await
        .unwrap();
    store
        .store_event(&delta("job1", "run1", "b", 100, 1))
        .await
        .unwrap();
    let run_dir = store.base().join("jobs/job1/runs/run1");
    assert_eq!(
        names(&run_dir),
        [
            "event-100-1-streamRunResult.json",
            "event-101-1-streamRunResult.json"
        ]
    );
    let second: Event = serde_json::from_slice(
        &fs::read(run_dir.join("event-101-1-streamRunResult.json")).unwrap(),
    )
    .unwrap();
    assert_eq!((second.id.as_str(), second.timestamp), ("b", 100));
    let metas = store.events_by_run("job1", "run1").await.unwrap();
    assert_eq!(
        metas.iter().map(|m| m.timestamp).collect::<Vec<_>>(),
        [100, 101]
    );
}

#[tokio::test]
async fn concurrent_same_millisecond_events_all_survive() {
    let (_dir, store) = store();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .store_event(&delta("job1", "run1", &format!("d{i}"), 100, 1))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut ids: Vec<String> = store
        .event_contents("job1", "run1", None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..32).map(|i| format!("d{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn same_millisecond_events_of_different_types_follow_the_step_lifecycle() {
    let (_dir, store) = store();
    // Written out of order on purpose: the directory cannot tell write order apart.
    store
        .store_event(&run_event(
            "job1",
            "run1",
            "completeStreamingRunResult",
            7,
            1,
        ))
        .await
        .unwrap();
    store
        .store_event(&run_event("job1", "run1", "startStreamingRunResult", 7, 1))
        .await
        .unwrap();
    store
        .store_event(&run_event("job1", "run1", "startStreamingRunResult", 7, 2))
        .await
        .unwrap();
    let kinds: Vec<(u32, &str)> = store
        .event_contents("job1", "run1", None)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.step_number.unwrap(), e.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            (1, "startStreamingRunResult"),
            (1, "completeStreamingRunResult"),
            (2, "startStreamingRunResult")
        ]
    );
}

#[test]
fn event_file_names_parse_as_perstack_splits_them() {
    assert_eq!(
        parse_event_file_name("event-1795729279442-3-callTools.json"),
        Some((1795729279442, 3, "callTools"))
    );
    assert_eq!(
        parse_event_file_name("event-1-2-some-odd-type.json"),
        Some((1, 2, "some-odd-type"))
    );
    assert_eq!(parse_event_file_name("event-1-2-.json"), None);
    assert_eq!(parse_event_file_name("event-x-2-callTools.json"), None);
    assert_eq!(parse_event_file_name("event-1-2-callTools.txt"), None);
    assert_eq!(parse_event_file_name("run-setting.json"), None);
    assert!(
        crate::storage::lifecycle_rank("startGeneration")
            < crate::storage::lifecycle_rank("callTools")
    );
    assert!(
        crate::storage::lifecycle_rank("completeRun")
            < crate::storage::lifecycle_rank("somethingNew")
    );
}

#[tokio::test]
async fn releasing_a_claim_closes_the_jobs_chain_and_a_later_write_reopens_it() {
    let (_dir, store) = store();
    let claim = store.claim("job1").await.unwrap();
    store
        .store_checkpoint(&checkpoint("job1", "run1", "c1", 1))
        .await
        .unwrap();
    assert_eq!(store.chains.held(), 1);
    drop(claim);
    assert_eq!(
        store.chains.held(),
        0,
        "the released job's chain stays open"
    );
    store
        .store_checkpoint(&checkpoint("job1", "run1", "c2", 2))
        .await
        .unwrap();
    assert_eq!(store.chains.held(), 1);
    let chain = fs::read_to_string(
        store
            .job_dir("job1")
            .join(crate::storage::chain::CHAIN_FILE),
    )
    .unwrap();
    assert!(
        chain.contains("c1.json") && chain.contains("c2.json"),
        "{chain}"
    );
}
