//! What a finished job leaves behind: nothing. Every part of a job (the job task, its run
//! actors, their skills) holds the job's `JobContext`, and every `JobContext` holds one
//! reference to the engine's model and one to its storage. Counting those references is
//! therefore a probe for "some part of a finished job is still alive": once the job's outcome
//! is in, the counts must drop back to what the engine itself holds, while the engine is still
//! running (a long-lived engine must not grow with every job it ever ran).
//!
//! The release happens on actor tasks after the outcome is sent, so the tests poll for it for
//! a bounded time instead of assuming how fast the machine is.

use std::sync::Arc;
use std::time::Duration;

use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::LanguageModel;
use perstack::llm::scripted::ScriptedModel;
use perstack::schema::JobStatus;
use perstack::storage::{MemoryStorage, Storage};

/// How long the release may take on a slow, busy machine. Passing tests return as soon as the
/// counts drop; only a leak waits this long.
const RELEASE_WITHIN: Duration = Duration::from_secs(10);

/// A coordinator delegating to two children in one turn; every Expert has the base skill, so
/// the job has a job task, three run actors and three base skills (called in place).
const CONFIG: &str = r#"
[experts."coordinator"]
instruction = "Delegate."
delegates = ["child-a", "child-b"]
[experts."coordinator".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion", "todo"]

[experts."child-a"]
description = "a"
instruction = "a"
[experts."child-a".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion", "todo"]

[experts."child-b"]
description = "b"
instruction = "b"
[experts."child-b".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion", "todo"]
"#;

/// The turns of job `i` (started with the query `go-{i}`): the coordinator delegates to both
/// children, child-a calls a tool (so a skill actor is used), child-b fails, and the
/// coordinator completes with both results. Queries are unique per job, so concurrent jobs
/// never take each other's turns.
fn job_turns(i: usize) -> String {
    format!(
        r#"
[[turns]]
expert = "coordinator"
query = "go-{i}"
toolCalls = [
  {{ name = "child-a", args = {{ query = "a-{i}" }} }},
  {{ name = "child-b", args = {{ query = "b-{i}" }} }},
]
[[turns]]
expert = "child-a"
query = "a-{i}"
toolCalls = [ {{ name = "todo", args = {{ newTodos = ["one"] }} }} ]
[[turns]]
expert = "child-a"
query = "a-{i}"
text = "A"
[[turns]]
expert = "child-b"
query = "b-{i}"
error = {{ status = 400, message = "Bad request" }}
[[turns]]
expert = "coordinator"
query = "go-{i}"
text = "done"
"#
    )
}

/// The model and storage references held by the engine alone, and the engine itself.
struct Probe {
    model: Arc<dyn LanguageModel>,
    storage: Arc<dyn Storage>,
    engine: Engine,
    _workspace: tempfile::TempDir,
}

impl Probe {
    fn new(jobs: usize) -> Probe {
        let config = perstack::config::parse(CONFIG, std::path::Path::new("perstack.toml"))
            .unwrap_or_else(|e| panic!("invalid test configuration: {e}"));
        let script: String = (0..jobs).map(job_turns).collect();
        let model: Arc<dyn LanguageModel> = Arc::new(
            ScriptedModel::parse(&script, "script.toml")
                .unwrap_or_else(|e| panic!("invalid test script: {e}")),
        );
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let workspace = tempfile::tempdir().unwrap();
        let mut settings = Settings::new(config.experts);
        settings.workspace = workspace.path().to_path_buf();
        let engine = Engine::builder()
            .settings(settings)
            .model(model.clone())
            .storage(storage.clone())
            .build();
        Probe {
            model,
            storage,
            engine,
            _workspace: workspace,
        }
    }

    /// `(model, storage)` reference counts, this probe's own references excluded.
    fn counts(&self) -> (usize, usize) {
        (
            Arc::strong_count(&self.model) - 1,
            Arc::strong_count(&self.storage) - 1,
        )
    }

    /// Wait until the counts are back to `idle`, for at most [`RELEASE_WITHIN`]; the counts
    /// last seen.
    async fn released(&self, idle: (usize, usize)) -> (usize, usize) {
        super::common::eventually(RELEASE_WITHIN, || self.counts() == idle).await;
        self.counts()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_delegating_job_releases_every_actor_and_its_context() {
    let probe = Probe::new(1);
    let idle = probe.counts();
    let handle = probe
        .engine
        .start(JobRequest::new("coordinator", "go-0"))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .expect("the job did not finish within 60 s")
        .unwrap();
    assert_eq!(
        outcome.job.status,
        JobStatus::Completed,
        "{:?}",
        outcome.checkpoint.error
    );
    assert_eq!(outcome.text.as_deref(), Some("done"));
    // The whole tree ran: both children left checkpoints, child-a after its tool call.
    let experts: std::collections::BTreeSet<String> = probe
        .storage
        .checkpoints_by_job(&outcome.job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.expert.key)
        .collect();
    assert_eq!(
        experts.into_iter().collect::<Vec<_>>(),
        ["child-a", "child-b", "coordinator"]
    );
    drop(outcome);
    assert_eq!(
        probe.released(idle).await,
        idle,
        "(model, storage) references still held {RELEASE_WITHIN:?} after the job finished: \
         some actor, spawn argument or task of the job is still alive"
    );
    probe.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_jobs_leave_nothing_behind_on_a_running_engine() {
    const JOBS: usize = 20;
    let probe = Probe::new(JOBS);
    let idle = probe.counts();
    let mut handles = Vec::new();
    for i in 0..JOBS {
        handles.push(
            probe
                .engine
                .start(JobRequest::new("coordinator", format!("go-{i}")))
                .await
                .unwrap(),
        );
    }
    for h in handles {
        let outcome = tokio::time::timeout(Duration::from_secs(60), h.wait())
            .await
            .expect("a job did not finish within 60 s")
            .unwrap();
        assert_eq!(outcome.job.status, JobStatus::Completed);
        assert_eq!(outcome.text.as_deref(), Some("done"));
    }
    assert_eq!(
        probe.released(idle).await,
        idle,
        "(model, storage) references still held {RELEASE_WITHIN:?} after {JOBS} jobs finished"
    );
    probe.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_releases_every_actor_and_its_context() {
    let probe = Probe::new(1);
    let idle = probe.counts();
    let handle = probe
        .engine
        .start(JobRequest::new("coordinator", "go-0"))
        .await
        .unwrap();
    handle.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .expect("the cancelled job did not finish within 60 s")
        .unwrap();
    assert_ne!(outcome.job.status, JobStatus::Running);
    drop(outcome);
    assert_eq!(
        probe.released(idle).await,
        idle,
        "(model, storage) references still held {RELEASE_WITHIN:?} after the cancelled job ended"
    );
    probe.engine.shutdown().await;
}
