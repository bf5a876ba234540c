//! Failures that say so (issue 9, item 6): when the store fails (a full disk), every run of the
//! job still ends with a terminal event naming the cause, the job ends `stoppedByError`, and
//! `--continue-job` finishes the job once the store works again. A reader that closes stdout
//! early cancels the job cleanly, with every run's end stored.
//!
//! The store fails on demand: a wrapper that refuses every write (`ENOSPC`) after N checkpoint
//! writes, through the embedding API at every possible N; and, through the CLI, a file size
//! limit (`prlimit --fsize`, which root obeys too) on the real filesystem store.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use perstack::engine::{ContinueInput, ContinueRequest, Engine, JobRequest, Sequenced, Settings};
use perstack::llm::scripted::ScriptedModel;
use perstack::schema::{Checkpoint, Event, JobStatus};
use perstack::storage::{Storage, StoreError};

use super::common;
use super::hooked::{Hooked, Write, WriteHook};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ANSWER: &str = "Both halves are done: first half done, second half done.";

/// A disk that refuses every write with "No space left on device" once `allowed` checkpoint
/// writes have succeeded, until [`FullDisk::free_space`].
struct FullDisk {
    allowed: AtomicUsize,
    checkpoint_writes: AtomicUsize,
    full: AtomicBool,
}

impl FullDisk {
    fn new(allowed: usize) -> Hooked<Self> {
        Hooked::new(FullDisk {
            allowed: AtomicUsize::new(allowed),
            checkpoint_writes: AtomicUsize::new(0),
            full: AtomicBool::new(false),
        })
    }

    fn free_space(&self) {
        self.allowed.store(usize::MAX, Ordering::SeqCst);
        self.full.store(false, Ordering::SeqCst);
    }

    fn refuse(&self) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: "/workspace/perstack/jobs".into(),
                source: std::io::Error::from_raw_os_error(28),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl WriteHook for FullDisk {
    async fn before(&self, write: Write<'_>) -> Result<(), StoreError> {
        self.refuse()?;
        if let Write::Checkpoint(_) = write
            && self.checkpoint_writes.fetch_add(1, Ordering::SeqCst)
                >= self.allowed.load(Ordering::SeqCst)
        {
            self.full.store(true, Ordering::SeqCst);
            self.refuse()?;
        }
        Ok(())
    }
}

/// An engine on `experts/fanout` with a fresh scripted model (a new process, as far as the
/// script is concerned) over `storage`.
fn engine(storage: Arc<dyn Storage>, workspace: &Path) -> Engine {
    let config = perstack::config::load(&Path::new(ROOT).join("experts/fanout/perstack.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let model = ScriptedModel::load(&config.resolve_relative("script.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut settings = Settings::new(config.experts);
    settings.workspace = workspace.to_path_buf();
    Engine::builder()
        .settings(settings)
        .model(Arc::new(model))
        .storage(storage)
        .build()
}

const TERMINAL: [&str; 5] = [
    "completeRun",
    "stopRunByError",
    "stopRunByExceededMaxSteps",
    "stopRunByInteractiveTool",
    "stopRunByDelegate",
];

/// Every run that started ends with exactly one terminal event, and nothing of it follows.
fn assert_every_run_ends_once(events: &[Arc<Event>], context: &str) {
    let mut started: Vec<&str> = Vec::new();
    let mut ends: HashMap<&str, usize> = HashMap::new();
    for e in events {
        let kind = e.kind();
        if kind == "startRun" {
            started.push(&e.run_id);
        }
        if TERMINAL.contains(&kind) {
            *ends.entry(&e.run_id).or_default() += 1;
        } else if e.step_number.is_some() && ends.contains_key(e.run_id.as_str()) {
            panic!("{context}: {kind} of run {} after its end", e.run_id);
        }
    }
    assert!(!started.is_empty(), "{context}: no run started");
    for run in started {
        assert_eq!(
            ends.get(run).copied().unwrap_or(0),
            1,
            "{context}: run {run} has not exactly one terminal event: {:?}",
            events
                .iter()
                .filter(|e| e.run_id == run)
                .map(|e| e.kind())
                .collect::<Vec<_>>()
        );
    }
}

async fn run_job(engine: &Engine, request: JobRequest) -> (JobStatus, Vec<Arc<Event>>, String) {
    let mut job = engine.start(request.subscribe()).await.unwrap();
    let job_id = job.job_id.clone();
    let mut rx = job.take_events().unwrap();
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(Sequenced { event, .. }) = rx.recv().await {
            events.push(event);
        }
        events
    });
    let outcome = tokio::time::timeout(Duration::from_secs(20), job.wait())
        .await
        .expect("the job hangs")
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(5), collect)
        .await
        .expect("the event stream never closed")
        .unwrap();
    (outcome.job.status, events, job_id)
}

#[tokio::test]
async fn issue_9_a_full_disk_at_any_write_ends_every_run_and_continue_job_finishes_the_job() {
    let workspace = tempfile::tempdir().unwrap();
    // How many checkpoints an undisturbed job stores.
    let counting = Arc::new(FullDisk::new(usize::MAX));
    let (status, events, _) = run_job(
        &engine(counting.clone(), workspace.path()),
        JobRequest::new("coordinator", "hello"),
    )
    .await;
    assert_eq!(status, JobStatus::Completed);
    assert_every_run_ends_once(&events, "undisturbed");
    let writes = counting.hook.checkpoint_writes.load(Ordering::SeqCst);
    assert!(writes >= 5, "{writes}");

    for allowed in 0..writes {
        let context = format!("disk full after {allowed} checkpoints");
        let disk = Arc::new(FullDisk::new(allowed));
        let storage: Arc<dyn Storage> = disk.clone();
        let first = engine(storage.clone(), workspace.path());
        let (status, events, job_id) =
            run_job(&first, JobRequest::new("coordinator", "hello")).await;
        first.shutdown().await;
        assert_eq!(status, JobStatus::StoppedByError, "{context}");
        assert_every_run_ends_once(&events, &context);
        let storage_stops: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind() == "stopRunByError")
            .map(|e| e.as_ref())
            .collect();
        assert!(!storage_stops.is_empty(), "{context}");
        for e in &storage_stops {
            let cp = e.checkpoint().unwrap();
            let error = cp.error.as_ref().unwrap();
            assert_eq!(error.name, "StorageError", "{context}");
            assert!(
                error.message.contains("No space left on device")
                    && error.message.contains("could not be stored"),
                "{context}: {}",
                error.message
            );
            // Shown, not stored: the store keeps the last durable step.
            let stored = storage.retrieve_checkpoint(&job_id, &cp.id).await;
            assert!(
                stored.map_or(true, |s| s.status != cp.status),
                "{context}: the StorageError stop was stored"
            );
        }

        disk.hook.free_space();
        let second = engine(storage.clone(), workspace.path());
        let handle = second
            .continue_job(ContinueRequest {
                job_id: Some(job_id.clone()),
                expert_key: "coordinator".into(),
                resume_from: None,
                input: ContinueInput::Query("hello".into()),
                subscribe: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let outcome = tokio::time::timeout(Duration::from_secs(20), handle.wait())
            .await
            .expect("the continued job hangs")
            .unwrap();
        second.shutdown().await;
        assert_eq!(
            outcome.job.status,
            JobStatus::Completed,
            "{context}: {:?}",
            outcome.checkpoint.error
        );
        assert_eq!(outcome.text.as_deref(), Some(ANSWER), "{context}");
    }
}

// ---- Through the CLI -------------------------------------------------------------------------

/// A coordinator that delegates to two children, each with a tool step; every turn takes a
/// little while, so a closed output lands mid-job.
const CONFIG: &str = r#"
[provider]
providerName = "scripted"
[provider.setting]
script = "script.toml"

[experts."coordinator"]
instruction = "Delegate both halves, then summarise."
delegates = ["child-a", "child-b"]

[experts."child-a"]
description = "first half"
instruction = "Do the first half."

[experts."child-b"]
description = "second half"
instruction = "Do the second half."
"#;

fn script(delay_ms: u64) -> String {
    format!(
        r#"
[[turns]]
expert = "coordinator"
delayMs = {delay_ms}
toolCalls = [
  {{ id = "call_a", name = "child-a", args = {{ query = "first" }} }},
  {{ id = "call_b", name = "child-b", args = {{ query = "second" }} }},
]
[[turns]]
expert = "child-a"
delayMs = {delay_ms}
toolCalls = [{{ id = "a1", name = "healthCheck" }}]
[[turns]]
expert = "child-a"
text = "A done."
[[turns]]
expert = "child-b"
delayMs = {delay_ms}
toolCalls = [{{ id = "b1", name = "healthCheck" }}]
[[turns]]
expert = "child-b"
text = "B done."
[[turns]]
expert = "coordinator"
toolCalls = [{{ id = "c2", name = "attemptCompletion" }}]
[[turns]]
expert = "coordinator"
text = "Summary: A done. B done."
"#
    )
}

fn project(delay_ms: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("perstack.toml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("script.toml"), script(delay_ms)).unwrap();
    dir
}

fn perstack(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perstack"));
    c.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn lines(stdout: &[u8]) -> Vec<Arc<Event>> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| Arc::new(serde_json::from_str::<Event>(l).unwrap_or_else(|e| panic!("{e}: {l}"))))
        .collect()
}

#[test]
fn issue_9_through_the_cli_a_store_refusing_writes_ends_every_run_and_continue_job_completes() {
    // `prlimit --fsize` makes every write past the limit fail with EFBIG (SIGXFSZ ignored, as
    // the shell's trap passes on through exec), root included: bigger checkpoints and event
    // files fail, smaller ones still go through. Several limits put the failure at different
    // points of the job.
    let mut mid_job = 0;
    for limit in [1_500u32, 2_500, 3_500, 5_000, 7_000, 10_000, 14_000] {
        let dir = project(0);
        let job = format!("job-fsize-{limit}");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap '' XFSZ; exec prlimit --fsize={limit} \"$0\" run --job-id {job} coordinator go"
            ))
            .arg(env!("CARGO_BIN_EXE_perstack"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let events = lines(&out.stdout);
        if out.status.code() == Some(0) {
            continue; // every file fitted: nothing failed
        }
        let context = format!("limit {limit}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{context}");
        assert_every_run_ends_once(&events, &context);
        let storage = events
            .iter()
            .filter(|e| e.kind() == "stopRunByError")
            .filter_map(|e| e.checkpoint()?.error.clone())
            .find(|e| e.name == "StorageError")
            .unwrap_or_else(|| panic!("{context}: no StorageError stop"));
        assert!(
            storage.message.contains("File too large")
                && storage.message.contains("could not be stored"),
            "{context}: {}",
            storage.message
        );
        // The last line is the coordinator's end, not a skill event.
        let last_state = events
            .iter()
            .rev()
            .find(|e| e.step_number.is_some())
            .unwrap();
        assert_eq!(last_state.kind(), "stopRunByError", "{context}");
        assert_ne!(
            common::job_status(dir.path(), &job).as_deref(),
            Some("completed"),
            "{context}"
        );
        if events
            .iter()
            .any(|e| e.kind() == "startRun" && e.expert_key.as_deref() == Some("child-a"))
        {
            mid_job += 1;
        }

        // Space is back: the job finishes.
        let out = perstack(dir.path())
            .args(["run", "--continue-job", &job, "coordinator", "go"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "limit {limit}: {stderr}");
        let events = lines(&out.stdout);
        let done = events
            .iter()
            .rev()
            .find(|e| e.kind() == "completeRun")
            .unwrap();
        assert_eq!(done.expert_key.as_deref(), Some("coordinator"));
        assert_eq!(
            common::job_status(dir.path(), &job).as_deref(),
            Some("completed")
        );
    }
    assert!(
        mid_job >= 1,
        "no limit made the store fail after the children started"
    );
}

#[test]
fn issue_9_a_reader_that_closes_stdout_after_two_lines_cancels_the_job_with_its_ends_stored() {
    use std::io::BufRead;
    let dir = project(300);
    let job = "job-head";
    let mut child = perstack(dir.path())
        .args(["run", "--job-id", job, "coordinator", "go"])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = std::io::BufReader::new(stdout);
    for _ in 0..2 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "{line:?}");
    }
    drop(reader); // `| head -2`
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("perstack did not exit after its output was closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    // Not killed by SIGPIPE, no panic: a stopped job's exit code.
    assert_eq!(status.code(), Some(1), "{status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        common::job_status(dir.path(), job).as_deref(),
        Some("stoppedByError"),
        "{stderr}"
    );
    // Every run's last stored checkpoint is an end, and the coordinator's names the cause.
    let cps = common::stored(dir.path(), job);
    let rank = |c: &Checkpoint| match c.status.as_str() {
        "init" => 0,
        "proceeding" => 1,
        _ => 2,
    };
    let mut last: HashMap<&str, &Checkpoint> = HashMap::new();
    for c in &cps {
        let e = last.entry(c.run_id.as_str()).or_insert(c);
        if (c.step_number, rank(c)) > (e.step_number, rank(e)) {
            *e = c;
        }
    }
    assert!(!last.is_empty());
    for (run, c) in &last {
        assert!(
            !matches!(c.status.as_str(), "proceeding" | "init"),
            "run {run} ended without a stored end: {}",
            c.status.as_str()
        );
    }
    let coordinator_end = cps
        .iter()
        .filter(|c| c.delegated_by.is_none() && c.status.as_str() == "stoppedByError")
        .max_by_key(|c| c.step_number)
        .unwrap_or_else(|| panic!("no stored coordinator end: {stderr}"));
    assert_eq!(coordinator_end.error.as_ref().unwrap().name, "OutputClosed");
}
