//! What the event bus keeps per job (its sequence number and subscribers) is forgotten when
//! the job ends, on every way a job ends here: completed after delegating, with a child that
//! failed, subscribed or not. A long-lived engine must not keep an entry per job it ever ran
//! (`examples/fanout_load.rs` runs rounds of 1,000 jobs in one process on this).

// Tests may panic on unexpected errors; the no-unwrap rule is for the engine's own code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use super::fanout_config_tests::FANOUT as CONFIG;
use super::{Engine, JobRequest, Settings};
use crate::actor::event_bus::OpenJobs;
use crate::llm::scripted::ScriptedModel;
use crate::schema::JobStatus;
use crate::storage::MemoryStorage;

/// Job `i`: the coordinator delegates to both children; child-a answers, child-b's model
/// call fails; the coordinator completes.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_forgets_every_job_once_it_ends() {
    const JOBS: usize = 6;
    let config = crate::config::parse(CONFIG, std::path::Path::new("perstack.toml")).unwrap();
    let script: String = (0..JOBS).map(job_turns).collect();
    let model = Arc::new(ScriptedModel::parse(&script, "script.toml").unwrap());
    let workspace = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(config.experts);
    settings.workspace = workspace.path().to_path_buf();
    let engine = Engine::builder()
        .settings(settings)
        .model(model)
        .storage(Arc::new(MemoryStorage::new()))
        .build();
    let mut handles = Vec::new();
    for i in 0..JOBS {
        let mut request = JobRequest::new("coordinator", format!("go-{i}"));
        if i % 2 == 0 {
            request = request.subscribe();
        }
        handles.push(engine.start(request).await.unwrap());
    }
    for mut h in handles {
        // A subscriber reads to the end, as an embedder would.
        let reader = h
            .take_events()
            .map(|mut events| tokio::spawn(async move { while events.recv().await.is_some() {} }));
        let outcome = tokio::time::timeout(Duration::from_secs(60), h.wait())
            .await
            .expect("a job did not finish within 60 s")
            .unwrap();
        assert_eq!(
            outcome.job.status,
            JobStatus::Completed,
            "{:?}",
            outcome.checkpoint.error
        );
        if let Some(r) = reader {
            tokio::time::timeout(Duration::from_secs(60), r)
                .await
                .expect("the event stream did not end within 60 s")
                .unwrap();
        }
    }
    // The job task closes its job on the bus before it sends the outcome.
    assert_eq!(
        engine.bus.actor().ask(OpenJobs).await.unwrap(),
        0,
        "the bus still holds entries of finished jobs"
    );
    engine.shutdown().await;
}
