//! Delegation across workers (`--placement cluster`): the children of a job run as messages of
//! their own on any worker, their results go into key-value entries, and the last one resumes
//! the parent wherever it lands. Against a real `nats-server`, three `perstack worker`
//! processes, one test at a time (`harness::SERIAL`), each with a deadline; every process is
//! killed when its guard drops.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use perstack::cluster::{Client, NatsOptions, Placement};
use perstack::schema::JobStatus;
use perstack::storage::{FsStorage, Storage};

use super::harness::{
    SERIAL, Worker, assert_committed_once, assert_gapless, cli, follow, missed_deadline,
    queue_left, script, settings, shape, store, toml,
};
use crate::suite::common::{self, NatsServer};

/// Per Expert: the kinds of its stored events, run after run in the order the runs started,
/// and the statuses of its stored checkpoints (ids, times and sequence numbers differ between
/// two runs of one job; this is what must not).
async fn stored_per_expert(
    store: &dyn Storage,
    job: &str,
) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut runs: Vec<_> = store
        .all_run_settings()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.job_id == job)
        .collect();
    runs.sort_by_key(|s| s.started_at);
    let mut out: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for run in &runs {
        let events = store.event_contents(job, &run.run_id, None).await.unwrap();
        out.entry(run.expert_key.clone())
            .or_default()
            .0
            .extend(events.iter().map(|e| e.kind().to_owned()));
    }
    for cp in store.checkpoints_by_job(job).await.unwrap() {
        out.entry(cp.expert.key.clone())
            .or_default()
            .1
            .push(cp.status.as_str().to_owned());
    }
    for (_, statuses) in out.values_mut() {
        statuses.sort();
    }
    out
}

/// The join record and result entries of `job`'s delegations: who placed them, who ran each.
async fn placements(server: &NatsServer, job: &str) -> Vec<(String, Vec<String>)> {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = js.get_key_value("perstack_delegations").await.unwrap();
    // Delegation records are dropped by the server after a week (as a job's output), never
    // kept forever.
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    assert_eq!(kv.status().await.unwrap().max_age(), week);
    let mut results = js
        .get_stream("OBJ_perstack_delegation_results")
        .await
        .unwrap();
    assert_eq!(results.info().await.unwrap().config.max_age, week);
    let mut keys: Vec<String> = futures::TryStreamExt::try_collect(kv.keys().await.unwrap())
        .await
        .unwrap();
    keys.sort();
    let prefix = format!("{}.", job.replace('.', "="));
    let mut out = Vec::new();
    for key in keys
        .iter()
        .filter(|k| k.starts_with(&prefix) && k.ends_with(".join"))
    {
        let record: serde_json::Value =
            serde_json::from_slice(&kv.get(key).await.unwrap().unwrap()).unwrap();
        let parent = key.trim_end_matches(".join");
        let mut ran = Vec::new();
        for slot in 0..record["calls"].as_u64().unwrap() {
            let result: serde_json::Value =
                serde_json::from_slice(&kv.get(format!("{parent}.{slot}")).await.unwrap().unwrap())
                    .unwrap();
            ran.push(result["worker"].as_str().unwrap().to_owned());
        }
        out.push((record["placedBy"].as_str().unwrap().to_owned(), ran));
    }
    out
}

/// The pid in a worker name (`pid <pid> on <host>`).
fn pid_of(name: &str) -> i32 {
    name.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn with_cluster_placement_children_run_on_other_workers_and_the_job_is_stored_as_locally() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("cluster_placement_children_elsewhere") else {
        return;
    };
    let project = common::project(&toml(), &script(0));
    let workers: Vec<Worker> = (0..3)
        .map(|n| {
            let work = project.path().join(format!("work-{n}"));
            Worker::start(&server, project.path(), &work, n, &[])
        })
        .collect();
    let local_dir = tempfile::tempdir().unwrap();
    common::write_project(local_dir.path(), &toml(), &script(0));
    let run = async {
        let url = server.url();
        let cluster = cli(
            project.path(),
            &[
                "run",
                "--nats",
                &url,
                "--placement",
                "cluster",
                "--job-id",
                "fan-1",
                "coordinator",
                "q",
            ],
        )
        .await;
        let local = common::Finished::of(&mut common::perstack(
            local_dir.path(),
            &["run", "--job-id", "fan-1", "coordinator", "q"],
        ));
        assert_eq!(local.code, 0, "{}", local.stderr);
        assert_eq!(cluster.code, 0, "{}", cluster.stderr);
        // The same run events printed (children interleave differently: compared as a
        // set). The parent resumed through the resume path prints the runtime events of a
        // resumed run besides (its skills connect again; COMPATIBILITY.md).
        let run_events = |events: &[serde_json::Value]| {
            let kept: Vec<serde_json::Value> = events
                .iter()
                .filter(|e| e.get("stepNumber").is_some())
                .cloned()
                .collect();
            shape(&kept)
        };
        let (mut a, mut b) = (run_events(&local.events), run_events(&cluster.events));
        a.sort();
        b.sort();
        pretty_assertions::assert_eq!(a, b);

        // Followers see every event once, numbered without gaps, then the end.
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        let seen = follow(&client, "fan-1").await;
        assert_eq!(seen.end.status, Some(JobStatus::Completed));
        assert_gapless("fan-1", &seen);

        // The stored job equals the local run's, run by run.
        let cluster_store = store(&server).await;
        let local_store = FsStorage::new(local_dir.path().join("perstack"));
        pretty_assertions::assert_eq!(
            stored_per_expert(&local_store, "fan-1").await,
            stored_per_expert(&cluster_store, "fan-1").await
        );
        let job = cluster_store.retrieve_job("fan-1").await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Completed);
        assert_committed_once(&server, "fan-1").await;

        // Each child ran on a worker other than its parent's.
        let placed = placements(&server, "fan-1").await;
        assert_eq!(placed.len(), 1, "{placed:?}");
        let (parent, children) = &placed[0];
        assert_eq!(children.len(), 2);
        for child in children {
            assert_ne!(
                child, parent,
                "a child ran on its parent's worker: {placed:?}"
            );
        }
        assert!(
            workers.iter().any(|w| w.pid() == pid_of(parent)),
            "{parent}"
        );
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| missed_deadline("the job did not finish within 60 s", &workers));
}

/// Submits one fan-out job placed on the cluster.
async fn submit(server: &NatsServer, project: &Path, id: &str) -> Client {
    let client = Client::connect(&NatsOptions::url(server.url()))
        .await
        .unwrap()
        .with_placement(Placement::Cluster);
    client
        .submit(&settings(project), "coordinator", "q", Some(id.to_owned()))
        .await
        .unwrap();
    client
}

/// Waits (at most 30 s) for `f` to name a worker.
async fn wait_for<F: std::future::Future<Output = Option<usize>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> usize {
    let found = async {
        loop {
            if let Some(n) = f().await {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), found)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 30 s"))
}

#[tokio::test]
async fn a_child_whose_worker_is_killed_runs_again_elsewhere_and_completes_once() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("a_child_whose_worker_is_killed") else {
        return;
    };
    let project = common::project(&toml(), &script(1500));
    let mut workers: Vec<Option<Worker>> = (0..3)
        .map(|n| {
            let work = project.path().join(format!("work-{n}"));
            Some(Worker::start(&server, project.path(), &work, n, &[]))
        })
        .collect();
    let run = async {
        let client = submit(&server, project.path(), "kill-child").await;
        // A worker that is not the parent's starts a child: kill it mid-run.
        let victim = wait_for("a child starting on a worker", || {
            let workers = &workers;
            let server = &server;
            async move {
                let placed = placements_placer(server, "kill-child").await?;
                workers.iter().position(|w| {
                    w.as_ref().is_some_and(|w| {
                        w.pid() != placed && w.stderr().contains("running a delegated run")
                    })
                })
            }
        })
        .await;
        let killed = workers[victim].as_ref().map_or(0, Worker::pid);
        if let Some(w) = workers[victim].as_mut() {
            w.signal(nix::sys::signal::Signal::SIGKILL);
        }
        workers[victim] = None;
        let seen = follow(&client, "kill-child").await;
        assert_eq!(
            seen.end.status,
            Some(JobStatus::Completed),
            "{:?}",
            seen.end
        );
        assert_gapless("kill-child", &seen);
        assert_committed_once(&server, "kill-child").await;
        // The killed worker's child was run again by another and committed by it only.
        let placed = placements(&server, "kill-child").await;
        for (_, children) in &placed {
            assert!(
                children.iter().all(|c| pid_of(c) != killed),
                "the killed worker committed a result: {placed:?}"
            );
        }
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| {
            missed_deadline(
                "the job did not finish within 60 s",
                workers.iter().flatten(),
            )
        });
}

#[tokio::test]
async fn a_parent_whose_worker_is_killed_after_delegating_is_resumed_elsewhere() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("a_parent_whose_worker_is_killed") else {
        return;
    };
    let project = common::project(&toml(), &script(500));
    let mut workers: Vec<Option<Worker>> = (0..3)
        .map(|n| {
            let work = project.path().join(format!("work-{n}"));
            Some(Worker::start(&server, project.path(), &work, n, &[]))
        })
        .collect();
    let run = async {
        let client = submit(&server, project.path(), "kill-parent").await;
        let victim = wait_for("the children's placement", || {
            let workers = &workers;
            let server = &server;
            async move {
                let placed = placements_placer(server, "kill-parent").await?;
                workers
                    .iter()
                    .position(|w| w.as_ref().is_some_and(|w| w.pid() == placed))
            }
        })
        .await;
        let killed = workers[victim].as_ref().map_or(0, Worker::pid);
        if let Some(w) = workers[victim].as_mut() {
            w.signal(nix::sys::signal::Signal::SIGKILL);
        }
        workers[victim] = None;
        let seen = follow(&client, "kill-parent").await;
        assert_eq!(
            seen.end.status,
            Some(JobStatus::Completed),
            "{:?}",
            seen.end
        );
        assert_gapless("kill-parent", &seen);
        assert_committed_once(&server, "kill-parent").await;
        // The killed worker placed the children; the others ran them and resumed the parent.
        let placed = placements(&server, "kill-parent").await;
        assert_eq!(placed.len(), 1, "{placed:?}");
        let (parent, children) = &placed[0];
        assert_eq!(pid_of(parent), killed, "{placed:?}");
        assert!(children.iter().all(|c| pid_of(c) != killed), "{placed:?}");
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| {
            missed_deadline(
                "the job did not finish within 60 s",
                workers.iter().flatten(),
            )
        });
}

/// The pid of the worker that placed `job`'s children, once they are placed.
async fn placements_placer(server: &NatsServer, job: &str) -> Option<i32> {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.ok()?);
    let kv = js.get_key_value("perstack_delegations").await.ok()?;
    let mut keys = kv.keys().await.ok()?;
    let prefix = format!("{job}.");
    while let Some(Ok(key)) = futures::StreamExt::next(&mut keys).await {
        if key.starts_with(&prefix) && key.ends_with(".join") {
            let record: serde_json::Value =
                serde_json::from_slice(&kv.get(&key).await.ok()??).ok()?;
            return Some(pid_of(record["placedBy"].as_str()?));
        }
    }
    None
}

#[tokio::test]
async fn a_cancel_while_the_children_run_elsewhere_stops_them_and_the_job() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("a_cancel_while_the_children_run_elsewhere") else {
        return;
    };
    let project = common::project(&toml(), &script(1500));
    let workers: Vec<Worker> = (0..3)
        .map(|n| {
            let work = project.path().join(format!("work-{n}"));
            Worker::start(&server, project.path(), &work, n, &[])
        })
        .collect();
    let run = async {
        let client = submit(&server, project.path(), "cancel-children").await;
        wait_for("a child starting", || {
            let workers = &workers;
            async move {
                workers
                    .iter()
                    .position(|w| w.stderr().contains("running a delegated run"))
            }
        })
        .await;
        client.cancel("cancel-children").await.unwrap();
        let seen = follow(&client, "cancel-children").await;
        // As a local job cancelled mid-run: stopped by error, exit 1.
        assert_eq!(
            seen.end.status,
            Some(JobStatus::StoppedByError),
            "{:?}",
            seen.end
        );
        assert_eq!(seen.end.exit_code, 1);
        assert_gapless_ends_stopped(&seen);
        // The running children were stopped (no child completed).
        let cps = store(&server)
            .await
            .checkpoints_by_job("cancel-children")
            .await
            .unwrap();
        assert!(
            !cps.iter().any(|c| c.expert.key != "coordinator"
                && c.status == perstack::schema::CheckpointStatus::Completed),
            "a child completed after the cancel"
        );
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| missed_deadline("the job did not end within 60 s", &workers));
}

/// Gapless job sequence numbers from 1, ending with the coordinator's `stopRunByError`.
fn assert_gapless_ends_stopped(seen: &super::harness::Seen) {
    let seqs: Vec<u64> = seen.events.iter().map(|e| e.job_seq.unwrap()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "events out of order or with gaps");
    let last_state = seen
        .events
        .iter()
        .rev()
        .find(|e| e.step_number.is_some())
        .unwrap();
    assert_eq!(last_state.kind(), "stopRunByError");
    assert_eq!(last_state.expert_key.as_deref(), Some("coordinator"));
}

#[tokio::test]
async fn a_child_worker_paused_past_its_lease_commits_nothing_when_it_wakes_up() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("a_child_worker_paused_past_its_lease") else {
        return;
    };
    let project = common::project(&toml(), &script(1500));
    let workers: Vec<Worker> = (0..3)
        .map(|n| {
            let work = project.path().join(format!("work-{n}"));
            Worker::start(&server, project.path(), &work, n, &[])
        })
        .collect();
    let run = async {
        let client = submit(&server, project.path(), "pause-child").await;
        let paused = wait_for("a child starting on a worker", || {
            let workers = &workers;
            let server = &server;
            async move {
                let placed = placements_placer(server, "pause-child").await?;
                workers.iter().position(|w| {
                    w.pid() != placed && w.stderr().contains("running a delegated run")
                })
            }
        })
        .await;
        workers[paused].signal(nix::sys::signal::Signal::SIGSTOP);
        let seen = follow(&client, "pause-child").await;
        assert_eq!(
            seen.end.status,
            Some(JobStatus::Completed),
            "{:?}",
            seen.end
        );
        assert_gapless("pause-child", &seen);
        let before = store(&server)
            .await
            .checkpoints_by_job("pause-child")
            .await
            .unwrap()
            .len();

        // Woken up, it finishes its copy of the child and finds the result committed.
        workers[paused].signal(nix::sys::signal::Signal::SIGCONT);
        wait_for("the woken worker finishing its copy", || {
            let w = &workers[paused];
            async move {
                w.stderr()
                    .contains("another attempt of this delegated run committed first")
                    .then_some(0)
            }
        })
        .await;
        let pid = workers[paused].pid();
        let placed = placements(&server, "pause-child").await;
        for (_, children) in &placed {
            assert!(
                children.iter().all(|c| pid_of(c) != pid),
                "the paused worker's result was committed: {placed:?}"
            );
        }
        let after = store(&server)
            .await
            .checkpoints_by_job("pause-child")
            .await
            .unwrap()
            .len();
        assert_eq!(before, after, "the woken worker wrote to the job");
        assert_committed_once(&server, "pause-child").await;
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| {
            for w in &workers {
                w.signal(nix::sys::signal::Signal::SIGCONT);
                eprintln!("{}", w.stderr());
            }
            panic!("the job did not finish within 60 s");
        });
}
