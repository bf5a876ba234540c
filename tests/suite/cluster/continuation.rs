//! Continuing cluster jobs: `perstack run --nats` with `--continue-job`, `-i`,
//! `--resume-from` and `--continue` prints what the same commands print locally, only the continuation's events
//! and its end; an unknown job or checkpoint exits 2 before anything is submitted; a finished
//! job's or continuation's message delivered again only finds its end, never runs again.

use std::path::Path;
use std::time::Duration;

use perstack::cluster::{Client, NatsOptions};
use perstack::engine::{ContinueInput, ContinueRequest};
use perstack::schema::{CheckpointStatus, JobStatus};
use perstack::storage::Storage;
use serde_json::Value;

use super::harness::{SERIAL, Worker, cli, output, records, settings, shape, store};
use crate::suite::common::{self, NatsServer};

const EXPERTS: &str = r#"
[experts."asker"]
instruction = "Ask the user, then answer."

[experts."asker".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]

[experts."asker".skills."ui"]
type = "interactiveSkill"

[experts."asker".skills."ui".tools."askUser"]
description = "Ask the user a question"
inputJsonSchema = '{"type":"object","properties":{"question":{"type":"string"}},"required":["question"]}'
"#;

const SCRIPT: &str = r#"
[[turns]]
expert = "asker"
toolCalls = [{ id = "ask", name = "askUser", args = { question = "ok?" } }]
[[turns]]
expert = "asker"
text = "The user said yes."
[[turns]]
expert = "asker"
text = "Follow-up answered."
[[turns]]
expert = "asker"
text = "Again answered."
"#;

/// The same command on the cluster (`--nats <url>` inserted after `run`) and locally: both
/// exit `code`, with the same events (type, Expert, fields) in the same order.
async fn same_as_local(
    cluster_dir: &Path,
    local_dir: &Path,
    url: &str,
    args: &[&str],
    code: i32,
) -> (Vec<Value>, Vec<Value>) {
    let mut on_cluster = vec!["run", "--nats", url];
    on_cluster.extend_from_slice(args);
    let mut local = vec!["run"];
    local.extend_from_slice(args);
    let cluster = cli(cluster_dir, &on_cluster).await;
    let local = cli(local_dir, &local).await;
    assert_eq!(local.code, code, "local {args:?}: {}", local.stderr);
    assert_eq!(cluster.code, code, "cluster {args:?}: {}", cluster.stderr);
    pretty_assertions::assert_eq!(shape(&local.events), shape(&cluster.events), "{args:?}");
    (cluster.events, local.events)
}

/// Waits (at most 30 s) until the work queue holds no message.
async fn queue_drained(server: &NatsServer) {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let drained = async {
        loop {
            let mut jobs = js.get_stream("PERSTACK_JOBS").await.unwrap();
            if jobs.info().await.unwrap().state.messages == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .expect("the work queue was not drained within 30 s");
}

/// The last message in the work queue, as it was submitted (the test's worker is stopped).
async fn last_queued(server: &NatsServer) -> bytes::Bytes {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut jobs = js.get_stream("PERSTACK_JOBS").await.unwrap();
    let last = jobs.info().await.unwrap().state.last_sequence;
    jobs.get_raw_message(last).await.unwrap().payload
}

/// Sends `body` to the work queue again, as a redelivery would bring it.
async fn queue_again(server: &NatsServer, body: bytes::Bytes, id: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    js.publish_with_headers("perstack.jobs", headers, body)
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn continuing_a_cluster_job_prints_what_continuing_it_locally_prints() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("continuing_a_cluster_job") else {
        return;
    };
    let toml = format!("runtime = \"local\"\n{}", common::scripted(EXPERTS));
    let project = common::project(&toml, SCRIPT);
    let work = project.path().join("work");
    let local_dir = tempfile::tempdir().unwrap();
    common::write_project(local_dir.path(), &toml, SCRIPT);
    let (dir, local, url) = (project.path(), local_dir.path(), server.url());

    // The first submission, queued while no worker runs, so its message can be read back.
    let detached = output(
        dir,
        &[
            "run", "--nats", &url, "--detach", "--job-id", "c1", "asker", "start",
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&detached.stdout).trim(), "c1");
    let first_message = last_queued(&server).await;
    let worker = Worker::start(&server, dir, &work, 0, &[]);
    let client = Client::connect(&NatsOptions::url(&url)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(60), client.wait("c1"))
        .await
        .expect("the first run did not end within 60 s")
        .unwrap();
    assert_eq!(first.status, Some(JobStatus::StoppedByInteractiveTool));
    let local_first = cli(local, &["run", "--job-id", "c1", "asker", "start"]).await;
    assert_eq!(local_first.code, 0, "{}", local_first.stderr);

    // -i answers the pending call: the continuation's events only, as locally.
    let (answered, _) = same_as_local(
        dir,
        local,
        &url,
        &["--continue-job", "c1", "-i", "asker", "yes"],
        0,
    )
    .await;
    // Only this invocation: it opens with its own runtime start, carrying the answer.
    assert_eq!(
        answered[0]["type"], "initializeRuntime",
        "{:?}",
        answered[0]
    );
    assert_eq!(answered[0]["interactiveToolCall"]["text"], "yes");
    let start = answered.iter().find(|e| e["type"] == "startRun").unwrap();
    assert_eq!(
        start["initialCheckpoint"]["status"],
        "stoppedByInteractiveTool"
    );
    assert!(answered.iter().any(|e| e["type"] == "completeRun"));
    // A new query continues the completed job.
    let (followed_up, _) = same_as_local(
        dir,
        local,
        &url,
        &["--continue-job", "c1", "asker", "more"],
        0,
    )
    .await;
    let done = followed_up
        .iter()
        .find(|e| e["type"] == "completeRun")
        .unwrap();
    assert_eq!(done["text"], "Follow-up answered.", "{done}");
    // The first submission's output still ends where it ended: one end record.
    let ends = |r: &[(String, bool, bool)]| r.iter().filter(|(_, _, end)| *end).count();
    assert_eq!(ends(&records(&server, "c1").await), 1);

    // Unknown job and checkpoint: exit 2 before anything is submitted.
    for args in [
        vec![
            "run",
            "--nats",
            &url,
            "--continue-job",
            "nope",
            "asker",
            "q",
        ],
        vec![
            "run",
            "--nats",
            &url,
            "--continue-job",
            "c1",
            "--resume-from",
            "nocp",
            "asker",
            "q",
        ],
    ] {
        let refused = cli(dir, &args).await;
        assert_eq!(refused.code, 2, "{args:?}: {}", refused.stderr);
        assert!(refused.events.is_empty());
    }

    // --resume-from the interactive stop, through the embedding API, with no worker running
    // (so the continuation's message can be read back), then on a worker.
    drop(worker);
    let stop_of = |events: &[Value]| -> String {
        events
            .iter()
            .find(|e| e["type"] == "stopRunByInteractiveTool")
            .and_then(|e| e["checkpoint"]["id"].as_str())
            .unwrap()
            .to_owned()
    };
    let storage = store(&server).await;
    let cluster_stop = storage
        .checkpoints_by_job("c1")
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.status == CheckpointStatus::StoppedByInteractiveTool)
        .map(|c| c.id)
        .unwrap();
    let invocation = client
        .continue_job(
            &settings(dir),
            ContinueRequest {
                job_id: Some("c1".into()),
                expert_key: "asker".into(),
                resume_from: Some(cluster_stop.clone()),
                input: ContinueInput::Answer("yes again".into()),
                subscribe: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(invocation.job_id, "c1");
    let continuation_message = last_queued(&server).await;
    let _worker = Worker::start(&server, dir, &work, 1, &[]);
    let mut followed = client.follow(&invocation).await.unwrap();
    let mut resumed = Vec::new();
    let read = async {
        while let Some(e) = followed.next_event().await.unwrap() {
            resumed.push(serde_json::to_value(&e).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the resumed run did not end within 60 s");
    assert_eq!(followed.end().unwrap().exit_code, 0);
    let local_stop = stop_of(&local_first.events);
    let local_resumed = cli(
        local,
        &[
            "run",
            "--continue-job",
            "c1",
            "--resume-from",
            &local_stop,
            "-i",
            "asker",
            "yes again",
        ],
    )
    .await;
    assert_eq!(local_resumed.code, 0, "{}", local_resumed.stderr);
    let start = resumed.iter().find(|e| e["type"] == "startRun").unwrap();
    assert_eq!(
        start["initialCheckpoint"]["status"],
        "stoppedByInteractiveTool"
    );
    assert_eq!(resumed[0]["interactiveToolCall"]["text"], "yes again");
    let kinds = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    pretty_assertions::assert_eq!(kinds(&local_resumed.events), kinds(&resumed));

    // The first submission and the continuation delivered again (their acks lost): each only
    // finds its end; nothing runs, nothing is written.
    let last_seq = storage.last_job_seq("c1").await.unwrap();
    let first_records = records(&server, "c1").await.len();
    queue_again(&server, first_message, "c1-again").await;
    queue_again(&server, continuation_message, "c1-continuation-again").await;
    queue_drained(&server).await;
    let job = storage.retrieve_job("c1").await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(storage.last_job_seq("c1").await.unwrap(), last_seq);
    assert_eq!(records(&server, "c1").await.len(), first_records);
    let again = tokio::time::timeout(Duration::from_secs(30), client.wait(&invocation))
        .await
        .expect("the continuation's end is there")
        .unwrap();
    assert_eq!(again.status, Some(JobStatus::Completed));

    // --continue picks the job started last in the cluster's store, as locally in its own.
    let (latest, _) = same_as_local(dir, local, &url, &["--continue", "asker", "again"], 0).await;
    assert!(latest.iter().all(|e| e["jobId"] == "c1"));
    assert!(latest.iter().any(|e| e["type"] == "completeRun"));
}
