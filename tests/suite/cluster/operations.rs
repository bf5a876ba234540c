//! Operating the cluster: cancelling a job that waits in the queue, handing jobs back when a
//! worker is stopped, and continuations of one job submitted at once.

use std::time::Duration;

use perstack::cluster::{Client, NatsOptions};
use perstack::schema::JobStatus;
use perstack::storage::Storage;
use serde_json::Value;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::harness::{
    SERIAL, Worker, assert_committed_once, assert_takeovers_announced, finish, follow, interrupt,
    missed_deadline, queue_left, script, settings, spawn_run, store, toml,
};
use crate::suite::common::{self, NatsServer};

/// The coordinator's last event: its type and, for `stopRunByError`, the error's name.
fn coordinator_end(events: &[Value]) -> (String, String) {
    let last = events
        .iter()
        .rev()
        .find(|e| e["expertKey"] == "coordinator")
        .expect("no coordinator event");
    (
        last["type"].as_str().unwrap().to_owned(),
        last["error"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Nothing of the job ran: no model answer was acted on, no Expert was delegated to.
fn assert_not_run(events: &[Value]) {
    for e in events {
        let kind = e["type"].as_str().unwrap();
        assert!(
            ![
                "callTools",
                "callDelegate",
                "completeRun",
                "continueToNextStep"
            ]
            .contains(&kind),
            "the cancelled job ran: {kind}"
        );
        assert_eq!(
            e["expertKey"].as_str().unwrap_or("coordinator"),
            "coordinator"
        );
    }
}

/// Waits (at most 20 s) until stream `stream` holds `n` messages; `false` if it never did.
async fn holds(server: &NatsServer, stream: &str, n: u64) -> bool {
    let nats = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let stored = async {
        loop {
            if let Ok(mut s) = js.get_stream(stream).await
                && s.info().await.unwrap().state.messages >= n
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), stored)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_job_cancelled_while_queued_never_runs_and_ends_as_a_cancelled_local_job() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("a_job_cancelled_while_queued") else {
        return;
    };
    let project = common::project(&toml(), &script(1500));
    let work = project.path().join("work");
    let run = async {
        // A local job, Ctrl-C after its first line.
        let mut local = spawn_run(project.path(), &["--job-id", "local-1", "coordinator", "q"]);
        let mut stdout = String::new();
        let mut lines = BufReader::new(local.stdout.take().unwrap());
        lines.read_line(&mut stdout).await.unwrap();
        interrupt(&local);
        lines.read_to_string(&mut stdout).await.unwrap();
        let local_code = finish(local).await.code;
        let local_events = common::events(stdout.as_bytes());
        assert_eq!(local_code, 1, "{stdout}");
        assert_eq!(
            common::job_status(project.path(), "local-1").as_deref(),
            Some("stoppedByError")
        );

        // No worker: `perstack run --nats` waits with its job in the queue; Ctrl-C.
        let url = server.url();
        let cli = spawn_run(
            project.path(),
            &["--nats", &url, "--job-id", "queued-1", "coordinator", "q"],
        );
        assert!(
            holds(&server, "PERSTACK_JOBS", 1).await,
            "the job was not queued"
        );
        interrupt(&cli);
        // The embedding client cancels a queued job the same way.
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        client
            .submit(
                &settings(project.path()),
                "coordinator",
                "q",
                Some("queued-2".into()),
            )
            .await
            .unwrap();
        client.cancel("queued-2").await.unwrap();
        assert!(
            holds(&server, "PERSTACK_CANCEL", 2).await,
            "the cancels were not stored"
        );
        assert!(holds(&server, "PERSTACK_JOBS", 2).await, "both jobs queued");

        // A worker comes: it takes both, runs neither, and ends each as cancelled.
        let worker = Worker::start(&server, project.path(), &work, 0, &[]);
        let (code, events, stderr) = finish(cli).await.parts();
        assert_eq!(code, local_code, "exit code as a local Ctrl-C: {stderr}");
        assert_eq!(
            coordinator_end(&events),
            coordinator_end(&local_events),
            "the same end as the local job"
        );
        assert_eq!(coordinator_end(&events).1, "Cancelled");
        assert_not_run(&events);
        let second = client.wait("queued-2").await.unwrap();
        assert_eq!(second.status, Some(JobStatus::StoppedByError));
        assert_eq!(second.exit_code, 1);
        let store = store(&server).await;
        for job in ["queued-1", "queued-2"] {
            let stored = store.retrieve_job(job).await.unwrap().unwrap();
            assert_eq!(stored.status, JobStatus::StoppedByError, "{job}");
            assert_eq!(stored.total_steps, 1, "{job}");
        }
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
        drop(worker);
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("not done within 90 s");
}

const SOLO: &str = r#"
[experts."solo"]
instruction = "Answer."
"#;

/// Four answers of `solo`, each taking `delay` ms: a continued job takes the turn after the
/// model turns already in its history.
fn solo_script(delay: u64) -> String {
    (1..=4)
        .map(|n| {
            format!("[[turns]]\nexpert = \"solo\"\ndelayMs = {delay}\ntext = \"answer {n}\"\n")
        })
        .collect()
}

#[tokio::test]
async fn continuations_of_one_job_submitted_at_once_run_one_after_the_other() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("continuations_submitted_at_once") else {
        return;
    };
    let toml = format!("runtime = \"local\"\n{}", common::scripted(SOLO));
    let project = common::project(&toml, &solo_script(300));
    let work = project.path().join("work");
    let workers: Vec<Worker> = (0..2)
        .map(|n| Worker::start(&server, project.path(), &work, n, &[]))
        .collect();
    let run = async {
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        let settings = settings(project.path());
        client
            .submit(&settings, "solo", "first", Some("c-1".into()))
            .await
            .unwrap();
        assert_eq!(
            client.wait("c-1").await.unwrap().status,
            Some(JobStatus::Completed)
        );
        // Three continuations at once, on two workers.
        let mut invocations = Vec::new();
        for q in ["q2", "q3", "q4"] {
            let request = perstack::engine::ContinueRequest {
                job_id: Some("c-1".into()),
                expert_key: "solo".into(),
                resume_from: None,
                input: perstack::engine::ContinueInput::Query(q.into()),
                subscribe: None,
            };
            invocations.push((q, client.continue_job(&settings, request).await.unwrap()));
        }
        let seen = futures::future::join_all(invocations.iter().map(|(q, inv)| {
            let client = client.clone();
            async move {
                let mut followed = client.follow(inv).await.unwrap();
                let mut events = Vec::new();
                while let Some(e) = followed.next_event().await.unwrap() {
                    events.push(e);
                }
                (*q, events, followed.end().cloned().unwrap())
            }
        }))
        .await;
        let mut blocks = Vec::new();
        let mut answers = Vec::new();
        for (q, events, end) in &seen {
            assert_eq!(end.status, Some(JobStatus::Completed), "{q}: {end:?}");
            // Only its own lines: its query, one completion, job sequence numbers in one
            // unbroken block.
            let queries: Vec<String> = events
                .iter()
                .filter_map(|e| match &e.payload {
                    perstack::schema::EventPayload::InitializeRuntime(p) => p.query.clone(),
                    _ => None,
                })
                .collect();
            assert_eq!(queries, vec![q.to_string()], "{q}: its own run only");
            let completions: Vec<String> = events
                .iter()
                .filter_map(|e| match &e.payload {
                    perstack::schema::EventPayload::CompleteRun(c) => Some(c.text.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(completions.len(), 1, "{q}: {completions:?}");
            answers.push(completions[0].clone());
            let seqs: Vec<u64> = events.iter().map(|e| e.job_seq.unwrap()).collect();
            let first = seqs[0];
            assert_eq!(
                seqs,
                (first..first + seqs.len() as u64).collect::<Vec<_>>(),
                "{q}: its events are one unbroken block of the job's history"
            );
            blocks.push((first, first + seqs.len() as u64 - 1));
        }
        // Never interleaved: the blocks follow one another.
        blocks.sort();
        for pair in blocks.windows(2) {
            assert!(pair[0].1 < pair[1].0, "interleaved: {blocks:?}");
        }
        answers.sort();
        assert_eq!(answers, ["answer 2", "answer 3", "answer 4"]);
        let stored = store(&server)
            .await
            .retrieve_job("c-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, JobStatus::Completed);
        assert_eq!(
            stored.job_seq,
            Some(blocks[2].1),
            "the job ends with the last one"
        );
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| missed_deadline("not done within 60 s", &workers));
}

#[tokio::test]
async fn a_stopped_worker_hands_its_job_back_at_a_step_boundary_and_another_takes_it_over_at_once()
{
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("a_stopped_worker_hands_its_job_back") else {
        return;
    };
    let project = common::project(&toml(), &script(700));
    let work = project.path().join("work");
    // A 60 s lease: had the job waited for it to expire, the deadline below would pass first.
    let options = ["--lease-ms", "60000", "--drain-timeout-ms", "300"];
    let url = server.url();
    let mut first = Worker::start_with(&url, project.path(), &work, 0, &[], &options);
    let run = async {
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        client
            .submit(
                &settings(project.path()),
                "coordinator",
                "q",
                Some("handed-1".into()),
            )
            .await
            .unwrap();
        let mut followed = client.follow("handed-1").await.unwrap();
        followed.next_event().await.unwrap().unwrap();
        // Running on the first worker (its model takes 700 ms a turn): a second one comes,
        // then the first is told to stop.
        let second = Worker::start_with(&url, project.path(), &work, 1, &[], &options);
        first.signal(nix::sys::signal::Signal::SIGTERM);
        let seen = follow(&client, "handed-1").await;
        assert_eq!(
            seen.end.status,
            Some(JobStatus::Completed),
            "{:?}",
            seen.end
        );
        assert_eq!(seen.takeovers, 1, "taken over once, by the second worker");
        assert_takeovers_announced(&server, "handed-1", &seen).await;
        assert_committed_once(&server, "handed-1").await;
        // Stopped at a step boundary: no step was begun twice.
        let mut begun = std::collections::HashSet::new();
        for e in seen.events.iter().filter(|e| e.kind() == "startGeneration") {
            assert!(
                begun.insert((e.run_id.clone(), e.step_number)),
                "step {:?} of run {} begun twice",
                e.step_number,
                e.run_id
            );
        }
        let status = (first.exit().await, first.stderr());
        assert!(status.0.success(), "{status:?}");
        assert!(status.1.contains("handed back"), "{}", status.1);
        let taken = &seen.events[seen.after_takeover[0]];
        let perstack::schema::EventPayload::JobTakenOver(p) = &taken.payload else {
            unreachable!()
        };
        assert!(
            p.worker.starts_with(&format!("pid {} ", second.pid())),
            "{p:?}"
        );
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("not done within 30 s: the job waited for its lease");
}
