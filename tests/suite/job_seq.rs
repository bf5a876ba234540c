//! The per-job event sequence number (`jobSeq`): every event of a job gets the next one, from
//! 1, gapless and in bus order across the runs of a delegation and across `--continue-job`;
//! the store keeps it with each event, checkpoint and `job.json`; stdout never shows it.

use std::sync::Arc;
use std::time::Duration;

use perstack::engine::{ContinueInput, ContinueRequest, Engine, JobHandle, JobRequest, Settings};
use perstack::llm::scripted::ScriptedModel;
use perstack::schema::JobStatus;
use perstack::storage::{FsStorage, Storage};
use serde_json::Value;

use super::common;

const EXPERTS: &str = r#"
[experts."coord"]
instruction = "Delegate, ask the user, then answer."
delegates = ["helper-a", "helper-b"]

[experts."coord".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]

[experts."coord".skills."ui"]
type = "interactiveSkill"

[experts."coord".skills."ui".tools."askUser"]
description = "Ask the user a question"
inputJsonSchema = '{"type":"object","properties":{"question":{"type":"string"}},"required":["question"]}'

[experts."helper-a"]
description = "Helps"
instruction = "Help."

[experts."helper-b"]
description = "Helps too"
instruction = "Help."
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
toolCalls = [{ id = "ask", name = "askUser", args = { question = "ok?" } }]
[[turns]]
expert = "coord"
text = "done"
"#;

fn engine(dir: &std::path::Path) -> Engine {
    let cfg =
        perstack::config::parse(&common::scripted(EXPERTS), &dir.join("perstack.toml")).unwrap();
    let mut settings = Settings::new(cfg.experts);
    settings.workspace = dir.to_path_buf();
    Engine::builder()
        .settings(settings)
        .storage(Arc::new(FsStorage::new(dir.join("perstack"))))
        .model(Arc::new(
            ScriptedModel::parse(SCRIPT, "script.toml").unwrap(),
        ))
        .build()
}

/// Every event of the job in bus order (`(jobSeq, runId)`), and its final status.
async fn drain(mut job: JobHandle) -> (Vec<(Option<u64>, String)>, JobStatus, Option<u64>) {
    let mut rx = job.take_events().unwrap();
    let collect = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while let Some(e) = rx.recv().await {
            seqs.push((e.job_seq(), e.event.run_id.clone()));
        }
        seqs
    });
    let outcome = tokio::time::timeout(Duration::from_secs(20), job.wait())
        .await
        .expect("the job hangs")
        .unwrap();
    let seqs = tokio::time::timeout(Duration::from_secs(5), collect)
        .await
        .expect("the event stream never closed")
        .unwrap();
    (seqs, outcome.job.status, outcome.job.job_seq)
}

fn stored_json(dir: &std::path::Path, sub: &str) -> Vec<Value> {
    let mut found = Vec::new();
    let mut stack = vec![dir.join("perstack/jobs/j").join(sub)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(match sub {
                    "runs" => "event-",
                    _ => "",
                })
            {
                found.push(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
            }
        }
    }
    found
}

#[tokio::test]
async fn issue_9_the_job_sequence_is_gapless_across_delegations_and_continue_job() {
    let dir = tempfile::tempdir().unwrap();
    let first = engine(dir.path());
    let job = first
        .start(JobRequest::new("coord", "go").job_id("j").subscribe())
        .await
        .unwrap();
    let (seqs, status, last) = drain(job).await;
    first.shutdown().await;
    assert_eq!(status, JobStatus::StoppedByInteractiveTool);
    let n = seqs.len() as u64;
    let numbers: Vec<_> = seqs.iter().map(|(s, _)| *s).collect();
    assert_eq!(numbers, (1..=n).map(Some).collect::<Vec<_>>());
    let runs: std::collections::HashSet<_> = seqs.iter().map(|(_, r)| r).collect();
    assert!(
        runs.len() >= 4,
        "the coordinator's two segments and two children: {runs:?}"
    );
    assert_eq!(last, Some(n), "job.json keeps the last number");
    let record: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("perstack/jobs/j/job.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["jobSeq"], n);

    let second = engine(dir.path());
    let job = second
        .continue_job(ContinueRequest {
            job_id: Some("j".into()),
            expert_key: "coord".into(),
            resume_from: None,
            input: ContinueInput::Answer("yes".into()),
            subscribe: Some(256),
        })
        .await
        .unwrap();
    let (more, status, last) = drain(job).await;
    second.shutdown().await;
    assert_eq!(status, JobStatus::Completed);
    let m = n + more.len() as u64;
    let numbers: Vec<_> = more.iter().map(|(s, _)| *s).collect();
    assert_eq!(numbers, (n + 1..=m).map(Some).collect::<Vec<_>>());
    assert_eq!(last, Some(m));
    assert_eq!(
        FsStorage::new(dir.path().join("perstack"))
            .last_job_seq("j")
            .await
            .unwrap(),
        m
    );

    // Stored events carry distinct numbers of the job's range; each stored checkpoint carries
    // the number of the event that stored it.
    let events = stored_json(dir.path(), "runs");
    let mut numbers: Vec<u64> = events
        .iter()
        .map(|e| e["jobSeq"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), events.len());
    assert!(numbers.iter().all(|&s| (1..=m).contains(&s)));
    let checkpoints = stored_json(dir.path(), "checkpoints");
    assert!(!checkpoints.is_empty());
    for cp in &checkpoints {
        let seq = cp["jobSeq"].as_u64().unwrap();
        let carrier = events
            .iter()
            .find(|e| e["jobSeq"] == seq)
            .expect("the event that stored it is stored");
        assert_eq!(carrier["checkpoint"]["id"], cp["id"]);
    }
}

#[test]
fn issue_9_stdout_lines_carry_no_job_sequence() {
    let dir = common::project(&common::scripted(EXPERTS), SCRIPT);
    let out = common::perstack(dir.path(), &["run", "--job-id", "j", "coord", "go"])
        .output()
        .unwrap();
    let events = common::events(&out.stdout);
    assert!(
        events.len() > 10,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for e in &events {
        assert!(e.get("jobSeq").is_none(), "{e}");
        if let Some(cp) = e.get("checkpoint") {
            assert!(cp.get("jobSeq").is_none(), "{e}");
        }
    }
    let stored = stored_json(dir.path(), "checkpoints");
    assert!(stored.iter().all(|cp| cp["jobSeq"].as_u64().is_some()));
}
