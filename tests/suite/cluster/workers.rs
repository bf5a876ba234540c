//! `perstack worker` processes and `perstack run --nats` against a real `nats-server` on
//! 127.0.0.1 (one per test, with a fresh port and store directory; see `common::NatsServer`).
//!
//! The tests run one at a time (`harness::SERIAL`): each starts several processes and a server on a
//! 2-core machine. Each has a deadline; every process is killed when its guard drops.

use std::time::Duration;

use perstack::cluster::{Client, NatsOptions};
use perstack::sandbox::Isolation;
use perstack::schema::JobStatus;

use super::harness::{
    SERIAL, Worker, assert_committed_once, assert_gapless, assert_takeovers_announced, cli, finish,
    follow, follow_all, interrupt, missed_deadline, output, queue_left, records, script, settings,
    shape, spawn_run, submit_all, toml, wait_until_running_two,
};
use crate::suite::common::{self, NatsServer};

#[tokio::test]
async fn three_workers_run_300_jobs_each_exactly_once_with_gapless_events() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("three_workers_run_300_jobs") else {
        return;
    };
    let project = common::project(&toml(), &script(0));
    let work = project.path().join("work");
    let workers: Vec<Worker> = (0..3)
        .map(|n| Worker::start(&server, project.path(), &work, n, &[]))
        .collect();
    let run = async {
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        let settings = settings(project.path());
        let mut jobs = Vec::new();
        for i in 0..300 {
            let id = format!("job-{i}");
            jobs.push(
                client
                    .submit(&settings, "coordinator", &format!("query {i}"), Some(id))
                    .await
                    .unwrap(),
            );
        }
        let seen = follow_all(&client, &jobs).await;
        assert_eq!(seen.len(), 300);
        for (job, seen) in &seen {
            assert_eq!(
                seen.end.status,
                Some(JobStatus::Completed),
                "job {job}: {:?}",
                seen.end
            );
            assert_eq!(seen.end.exit_code, 0);
            assert_eq!(
                seen.takeovers, 0,
                "job {job}: nobody died, nobody took over"
            );
            assert_gapless(job, seen);
            assert_committed_once(&server, job).await;
        }
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .unwrap_or_else(|_| missed_deadline("300 jobs did not finish within 150 s", &workers));
}

#[tokio::test]
async fn a_cli_run_on_the_cluster_prints_what_a_local_run_prints() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("a_cli_run_on_the_cluster") else {
        return;
    };
    let project = common::project(&toml(), &script(0));
    let work = project.path().join("work");
    let _worker = Worker::start(&server, project.path(), &work, 0, &[]);
    let local_dir = tempfile::tempdir().unwrap();
    common::write_project(local_dir.path(), &toml(), &script(0));
    let url = server.url();
    let local = common::Finished::of(&mut common::perstack(
        local_dir.path(),
        &["run", "coordinator", "q"],
    ));
    let cluster = cli(project.path(), &["run", "--nats", &url, "coordinator", "q"]).await;
    assert_eq!(local.code, 0, "{}", local.stderr);
    assert_eq!(cluster.code, 0, "{}", cluster.stderr);
    // The same events in the same order, with the same payload fields (ids and times differ).
    let (mut a, mut b) = (shape(&local.events), shape(&cluster.events));
    // Children run concurrently, so the interleaving differs: compare the events as a set (the
    // order of one job's events is checked through jobSeq by the other tests).
    a.sort();
    b.sort();
    pretty_assertions::assert_eq!(a, b);

    // An unknown Expert is refused before anything is submitted, as locally.
    let unknown = common::Finished::of(&mut common::perstack(
        project.path(),
        &["run", "--nats", &server.url(), "coordinatr", "q"],
    ));
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("did you mean \"coordinator\""),
        "{}",
        unknown.stderr
    );

    // --detach prints the job id and returns; the job still runs to its end.
    let url = server.url();
    let detached = output(
        project.path(),
        &[
            "run",
            "--nats",
            &url,
            "--detach",
            "--job-id",
            "detached-1",
            "coordinator",
            "q",
        ],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&detached.stdout).trim(),
        "detached-1"
    );
    let client = Client::connect(&NatsOptions::url(server.url()))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(60), client.wait("detached-1"))
        .await
        .expect("the detached job did not end within 60 s")
        .unwrap();
    assert_eq!(end.status, Some(JobStatus::Completed));

    // `perstack log --nats` reads the cluster's store as `perstack log` reads the local one.
    async fn log(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
        let out = output(dir, args).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
    let types = |log: &serde_json::Value| -> Vec<String> {
        let mut t: Vec<String> = log["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    };
    let local_job = local.events[0]["jobId"].as_str().unwrap().to_owned();
    let local_log = log(
        local_dir.path(),
        &["log", "--job", &local_job, "--json", "--take", "0"],
    )
    .await;
    let cluster_log = log(
        project.path(),
        &[
            "log",
            "--nats",
            &url,
            "--job",
            "detached-1",
            "--json",
            "--take",
            "0",
        ],
    )
    .await;
    assert_eq!(cluster_log["job"]["id"], "detached-1");
    assert_eq!(cluster_log["job"]["status"], "completed");
    assert!(!types(&cluster_log).is_empty());
    pretty_assertions::assert_eq!(types(&local_log), types(&cluster_log));
    // A run and a checkpoint are found without --job, as locally.
    let some_event = &cluster_log["events"][0];
    let run = some_event["runId"].as_str().unwrap();
    let by_run = log(
        project.path(),
        &["log", "--nats", &url, "--run", run, "--json"],
    )
    .await;
    assert_eq!(by_run["job"]["id"], "detached-1");
    let checkpoint = cluster_log["events"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["checkpoint"]["id"].as_str())
        .unwrap();
    let by_checkpoint = log(
        project.path(),
        &["log", "--nats", &url, "--checkpoint", checkpoint, "--json"],
    )
    .await;
    assert_eq!(by_checkpoint["job"]["id"], "detached-1");
    let unknown = output(project.path(), &["log", "--nats", &url, "--job", "nope"]).await;
    assert_eq!(unknown.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&unknown.stdout).contains("No data found"));
    let verify = output(project.path(), &["log", "--nats", &url, "--verify"]).await;
    assert_eq!(verify.status.code(), Some(2));
}

#[tokio::test]
async fn killing_a_worker_mid_run_loses_no_job_and_commits_no_step_twice() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("killing_a_worker_mid_run") else {
        return;
    };
    let project = common::project(&toml(), &script(150));
    let work = project.path().join("work");
    let workers: Vec<Worker> = (0..3)
        .map(|n| Worker::start(&server, project.path(), &work, n, &[]))
        .collect();
    let run = async {
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        let settings = settings(project.path());
        let jobs = submit_all(&client, &settings, "k", 24).await;
        // Kill worker 0 while it holds running jobs (its pid is in their leases).
        wait_until_running_two(&server, &workers[0], &jobs).await;
        workers[0].signal(nix::sys::signal::Signal::SIGKILL);
        let seen = follow_all(&client, &jobs).await;
        let mut taken_over = 0;
        for (job, seen) in &seen {
            assert_eq!(
                seen.end.status,
                Some(JobStatus::Completed),
                "job {job}: {:?}",
                seen.end
            );
            taken_over += seen.takeovers;
            assert_committed_once(&server, job).await;
            assert_takeovers_announced(&server, job, seen).await;
        }
        assert!(
            taken_over >= 1,
            "no job was taken over from the killed worker"
        );
        // `perstack log --nats` shows the takeover in the job's history.
        let (job, _) = seen.iter().find(|(_, s)| s.takeovers > 0).unwrap();
        let url = server.url();
        let log = output(
            project.path(),
            &[
                "log",
                "--nats",
                &url,
                "--job",
                job,
                "--type",
                "jobTakenOver",
                "--json",
            ],
        )
        .await;
        let log = String::from_utf8_lossy(&log.stdout);
        assert!(
            log.contains("\"jobTakenOver\"") && log.contains("pid "),
            "{log}"
        );
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .unwrap_or_else(|_| {
            missed_deadline("the jobs did not finish within 90 s of the kill", &workers)
        });
}

#[tokio::test]
async fn refused_job_messages_go_to_the_dead_letter_subject_and_never_block_the_queue() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("refused_job_messages") else {
        return;
    };
    let project = common::project(&toml(), &script(0));
    let work = project.path().join("work");
    // A worker that cannot sandbox (the probe says no).
    let worker = Worker::start(
        &server,
        project.path(),
        &work,
        0,
        &[(perstack::sandbox::PROBE_OVERRIDE_ENV, "unavailable")],
    );
    let run = async {
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        let nats = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(nats);
        // Not JSON.
        js.publish("perstack.jobs", "{not a job".into())
            .await
            .unwrap()
            .await
            .unwrap();
        // A job of an Expert its message does not define (digest of the empty map).
        let unknown = serde_json::json!({
            "version": 1, "jobId": "unknown-1", "expertKey": "nobody", "query": "q",
            "experts": {}, "envNames": [],
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "options": {"providerName": "scripted", "model": "m", "reasoningBudget": "low",
                        "maxSteps": 10, "maxRetries": 1, "timeoutMs": 1000, "sandboxed": false}
        });
        js.publish(
            "perstack.jobs",
            serde_json::to_vec(&unknown).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        // A job that needs the sandbox, on a worker that cannot sandbox.
        let mut confined = settings(project.path());
        confined.isolation = Isolation::Sandboxed;
        client
            .submit(&confined, "coordinator", "q", Some("confined-1".into()))
            .await
            .unwrap();
        // And a good job behind them.
        client
            .submit(
                &settings(project.path()),
                "coordinator",
                "q",
                Some("good-1".into()),
            )
            .await
            .unwrap();

        let good = follow(&client, "good-1").await;
        assert_eq!(good.end.status, Some(JobStatus::Completed));
        let unknown = client.wait("unknown-1").await.unwrap();
        assert_eq!(unknown.status, None);
        assert_eq!(unknown.exit_code, 2);
        assert!(
            unknown
                .reason
                .as_deref()
                .unwrap()
                .contains("expert \"nobody\" is not defined"),
            "{unknown:?}"
        );
        let confined = client.wait("confined-1").await.unwrap();
        assert!(
            confined
                .reason
                .as_deref()
                .unwrap()
                .contains("cannot sandbox"),
            "{confined:?}"
        );

        // Three dead letters, each with its reason.
        let dead = js.get_stream("PERSTACK_DEAD").await.unwrap();
        let mut reasons = Vec::new();
        for seq in 1..=3 {
            let m = dead.get_raw_message(seq).await.unwrap();
            reasons.push(m.headers.get("Perstack-Reason").unwrap().to_string());
        }
        reasons.sort();
        assert!(reasons[0].starts_with("expert \"nobody\""), "{reasons:?}");
        assert!(
            reasons[1].starts_with("malformed job message"),
            "{reasons:?}"
        );
        assert!(reasons[2].contains("cannot sandbox"), "{reasons:?}");
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("not done within 60 s: {}", worker.stderr()));
}

#[tokio::test]
async fn sigterm_drains_a_worker_and_ctrl_c_cancels_a_job_on_its_worker() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("sigterm_drains_a_worker") else {
        return;
    };
    let project = common::project(&toml(), &script(400));
    let work = project.path().join("work");
    let mut first = Worker::start(&server, project.path(), &work, 0, &[]);
    let run = async {
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        let settings = settings(project.path());
        client
            .submit(&settings, "coordinator", "q", Some("drained-1".into()))
            .await
            .unwrap();
        let mut followed = client.follow("drained-1").await.unwrap();
        followed.next_event().await.unwrap().unwrap();
        // Running: SIGTERM. The job finishes; the worker takes nothing new and exits 0.
        first.signal(nix::sys::signal::Signal::SIGTERM);
        while followed.next_event().await.unwrap().is_some() {}
        assert_eq!(followed.end().unwrap().status, Some(JobStatus::Completed));
        let status = first.exit().await;
        assert!(status.success(), "{status:?}");
        client
            .submit(&settings, "coordinator", "q", Some("later-1".into()))
            .await
            .unwrap();
        assert_eq!(
            queue_left(&server).await.0,
            1,
            "the drained worker took a job"
        );

        // A new worker takes it; Ctrl-C on `perstack run --nats` cancels a job on its worker.
        let _second = Worker::start(&server, project.path(), &work, 1, &[]);
        assert_eq!(
            client.wait("later-1").await.unwrap().status,
            Some(JobStatus::Completed)
        );
        let url = server.url();
        let cli = spawn_run(
            project.path(),
            &[
                "--nats",
                &url,
                "--job-id",
                "cancelled-1",
                "coordinator",
                "q",
            ],
        );
        let mut followed = client.follow("cancelled-1").await.unwrap();
        followed.next_event().await.unwrap().unwrap();
        interrupt(&cli);
        let out = finish(cli).await;
        assert_eq!(out.code, 1, "a cancelled job exits 1, as locally");
        assert!(
            out.events
                .iter()
                .any(|e| e["type"] == "stopRunByError" && e["expertKey"] == "coordinator"),
            "{:?}",
            out.events
        );
        while followed.next_event().await.unwrap().is_some() {}
        assert_eq!(
            followed.end().unwrap().status,
            Some(JobStatus::StoppedByError)
        );
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("not done within 90 s");
}

#[tokio::test]
async fn a_server_restart_mid_run_loses_no_event_and_no_job() {
    let _serial = SERIAL.lock().await;
    let Some(mut server) = NatsServer::start("a_server_restart_mid_run") else {
        return;
    };
    let project = common::project(&toml(), &script(100));
    let work = project.path().join("work");
    let workers: Vec<Worker> = (0..2)
        .map(|n| Worker::start(&server, project.path(), &work, n, &[]))
        .collect();
    let run = async {
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        let settings = settings(project.path());
        let jobs = submit_all(&client, &settings, "r", 16).await;
        let mut first = client.follow("r-0").await.unwrap();
        first.next_event().await.unwrap().unwrap();
        server.restart();
        let seen = follow_all(&client, &jobs).await;
        for (job, seen) in &seen {
            if seen.end.status != Some(JobStatus::Completed) {
                // What stopped it, and what the workers said (one CI run saw a job stop here).
                let errors: Vec<_> = seen
                    .events
                    .iter()
                    .filter(|e| e.kind() == "stopRunByError")
                    .map(|e| serde_json::to_string(e).unwrap())
                    .collect();
                missed_deadline(
                    &format!("job {job} ended {:?}: {errors:?}", seen.end),
                    &workers,
                );
            }
            if seen.takeovers == 0 {
                assert_gapless(job, seen);
            }
            assert_committed_once(&server, job).await;
        }
        assert_eq!(queue_left(&server).await, (0, 0), "the work queue is empty");
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| missed_deadline("not done within 120 s of the restart", &workers));
}

#[tokio::test]
async fn a_worker_paused_past_its_lease_loses_its_jobs_and_writes_nothing_when_resumed() {
    let _serial = SERIAL.lock().await;
    let Some(server) = NatsServer::start("a_worker_paused_past_its_lease") else {
        return;
    };
    let project = common::project(&toml(), &script(300));
    let work = project.path().join("work");
    let workers: Vec<Worker> = (0..2)
        .map(|n| Worker::start(&server, project.path(), &work, n, &[]))
        .collect();
    let run = async {
        let client = Client::connect(&NatsOptions::url(server.url()))
            .await
            .unwrap();
        let settings = settings(project.path());
        let jobs = submit_all(&client, &settings, "p", 6).await;
        wait_until_running_two(&server, &workers[0], &jobs).await;
        workers[0].signal(nix::sys::signal::Signal::SIGSTOP);
        // The other worker finishes every job, those of the paused one after its lease.
        let seen = follow_all(&client, &jobs).await;
        let mut taken: Vec<String> = Vec::new();
        for (job, seen) in &seen {
            assert_eq!(
                seen.end.status,
                Some(JobStatus::Completed),
                "job {job}: {:?}",
                seen.end
            );
            if seen.takeovers > 0 {
                taken.push(job.clone());
            }
        }
        assert!(
            !taken.is_empty(),
            "no job was taken over from the paused worker"
        );
        // Resumed, the paused worker finds its jobs gone and stops them.
        workers[0].signal(nix::sys::signal::Signal::SIGCONT);
        assert!(
            common::eventually(Duration::from_secs(30), || workers[0]
                .stderr()
                .contains("taken over by another worker"))
            .await,
            "the resumed worker did not notice: {}",
            workers[0].stderr()
        );
        for job in &jobs {
            assert_committed_once(&server, job).await;
            let records = records(&server, job).await;
            assert_eq!(
                records.iter().filter(|r| r.2).count(),
                1,
                "job {job}: one end record"
            );
            // Nothing of the first delivery (the paused worker's) after the takeover.
            if let Some(at) = records.iter().position(|r| r.1) {
                let stale: Vec<_> = records[at..]
                    .iter()
                    .filter(|r| r.0.ends_with(":1"))
                    .collect();
                assert!(
                    stale.is_empty(),
                    "job {job}: the paused worker wrote {stale:?}"
                );
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .unwrap_or_else(|_| missed_deadline("not done within 90 s", &workers));
}
