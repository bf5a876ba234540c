//! The chain as the file-system store writes it, and verification of what a crash or a
//! Perstack-written job leaves.

use std::fs;
use std::io::Write;

use serde_json::json;

use super::*;
use crate::storage::tests::{checkpoint, job, run_event, run_setting, runtime_event};
use crate::storage::{FsStorage, Storage};

fn store() -> (tempfile::TempDir, FsStorage, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStorage::with_key_dir(dir.path().join("perstack"), Some(dir.path().join("key")));
    let job_dir = dir.path().join("perstack/jobs/j1");
    (dir, store, job_dir)
}

fn trusted(dir: &tempfile::TempDir) -> String {
    key::ChainKey::load(&dir.path().join("key"))
        .unwrap()
        .unwrap()
        .public_hex()
}

async fn write_job(store: &FsStorage) {
    store.store_job(&job("j1", 1)).await.unwrap();
    store
        .store_run_setting(&run_setting("j1", "r1", "m", 1))
        .await
        .unwrap();
    for step in 1..=3u32 {
        let mut e = run_event(
            "j1",
            "r1",
            "startStreamingRunResult",
            100 + u64::from(step),
            step,
        );
        e.job_seq = Some(u64::from(step) * 2);
        store.store_event(&e).await.unwrap();
        let mut cp = checkpoint("j1", "r1", &format!("cp{step}"), step);
        cp.job_seq = Some(u64::from(step) * 2 + 1);
        store.store_checkpoint(&cp).await.unwrap();
    }
    store.store_event(&runtime_event("j1", "r1")).await.unwrap();
}

#[tokio::test]
async fn every_write_is_chained_and_verifies_intact_with_a_head_after_each_checkpoint() {
    let (dir, store, job_dir) = store();
    write_job(&store).await;
    // Before the job ends, the runtime line after the last checkpoint's head is unsigned.
    let report = verify(&load_dir("j1", &job_dir).unwrap(), Some(&trusted(&dir)));
    assert_eq!(
        report.findings,
        vec![Finding::Cut {
            files: vec![],
            unsigned: 1
        }],
        "{report}"
    );
    let mut done = job("j1", 1);
    done.status = crate::schema::JobStatus::Completed;
    store.store_job(&done).await.unwrap();
    let report = verify(&load_dir("j1", &job_dir).unwrap(), Some(&trusted(&dir)));
    assert!(report.chained);
    assert_eq!(report.findings, vec![], "{report}");
    // job.json, run setting, 3 events, 3 checkpoints + 3 heads, 1 runtime line, the final
    // job.json, `closed` and its head.
    assert_eq!(report.records, 15, "{report}");
    assert!(job_dir.join(RUNTIME_FILE).is_file());
}

#[tokio::test]
async fn a_torn_last_record_and_unrecorded_newer_files_are_a_cut() {
    let (dir, store, job_dir) = store();
    write_job(&store).await;
    // The crash: the next event is written, its record half-appended.
    let mut e = run_event("j1", "r1", "startStreamingRunResult", 200, 4);
    e.job_seq = Some(8);
    let path = job_dir.join("runs/r1/event-200-4-startStreamingRunResult.json");
    fs::write(&path, serde_json::to_vec(&e.stored()).unwrap()).unwrap();
    let mut chain = fs::OpenOptions::new()
        .append(true)
        .open(job_dir.join(CHAIN_FILE))
        .unwrap();
    chain.write_all(b"{\"n\":12,\"prev\":").unwrap();
    drop(chain);
    let report = verify(&load_dir("j1", &job_dir).unwrap(), Some(&trusted(&dir)));
    assert!(!report.tampered(), "{report}");
    assert_eq!(
        report.findings,
        vec![Finding::Cut {
            files: vec!["runs/r1/event-200-4-startStreamingRunResult.json".into()],
            unsigned: 1,
        }],
        "{report}"
    );

    // The same file with an old jobSeq is no crash: it was added.
    e.job_seq = Some(3);
    fs::write(&path, serde_json::to_vec(&e.stored()).unwrap()).unwrap();
    let report = verify(&load_dir("j1", &job_dir).unwrap(), Some(&trusted(&dir)));
    assert!(report.findings.contains(&Finding::Added(
        "runs/r1/event-200-4-startStreamingRunResult.json".into()
    )));

    // A writer reopening the job cuts the torn line and adopts the file: intact again.
    let reopened =
        FsStorage::with_key_dir(dir.path().join("perstack"), Some(dir.path().join("key")));
    reopened.store_job(&job("j1", 1)).await.unwrap();
    let report = verify(&load_dir("j1", &job_dir).unwrap(), Some(&trusted(&dir)));
    assert!(!report.tampered(), "{report}");
    assert!(report.findings.iter().any(|f| matches!(f, Finding::Adopted { files, .. } if files == &vec!["runs/r1/event-200-4-startStreamingRunResult.json".to_owned()])), "{report}");
}

#[tokio::test]
async fn a_job_perstack_wrote_is_unchained_and_adopted_when_continued() {
    let (dir, store, job_dir) = store();
    // Perstack's layout, written by hand: no audit directory.
    fs::create_dir_all(job_dir.join("runs/r0")).unwrap();
    fs::write(
        job_dir.join("runs/r0/event-1-1-startRun.json"),
        br#"{"type":"startRun"}"#,
    )
    .unwrap();
    let report = verify(&load_dir("j1", &job_dir).unwrap(), None);
    assert!(!report.chained && !report.tampered(), "{report}");
    assert!(report.to_string().contains("unchained"));

    store.store_job(&job("j1", 1)).await.unwrap();
    let report = verify(&load_dir("j1", &job_dir).unwrap(), Some(&trusted(&dir)));
    assert!(report.chained && !report.tampered(), "{report}");
    assert!(report.findings.iter().any(|f| matches!(f, Finding::Adopted { files, .. } if files == &vec!["runs/r0/event-1-1-startRun.json".to_owned()])), "{report}");
}

#[tokio::test]
async fn a_removed_head_in_the_middle_of_the_chain_is_tampering() {
    let (dir, store, job_dir) = store();
    write_job(&store).await;
    let path = job_dir.join(CHAIN_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("\"kind\":\"head\""))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&path, kept).unwrap();
    let report = verify(&load_dir("j1", &job_dir).unwrap(), Some(&trusted(&dir)));
    assert!(report.tampered(), "{report}");
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::ChainBroken { .. })),
        "{report}"
    );
}

#[test]
fn an_exported_run_setting_has_no_env_values_or_proxy_url() {
    let bytes = serde_json::to_vec(&json!({
        "jobId": "j", "env": {"API_TOKEN": "hunter2"}, "proxyUrl": "http://u:p@127.0.0.1:1"
    }))
    .unwrap();
    let redacted = String::from_utf8(redact_run_setting(&bytes).unwrap()).unwrap();
    assert!(
        !redacted.contains("hunter2") && !redacted.contains("u:p"),
        "{redacted}"
    );
    assert!(
        redacted.contains("\"API_TOKEN\":\"[redacted]\""),
        "{redacted}"
    );
}
