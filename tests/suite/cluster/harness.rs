//! What the worker tests share: the project and script they run, a `perstack worker` process
//! guard, following jobs through the client, reading the workers' store, and the assertions
//! every test makes (each step committed once, gapless job sequence numbers).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use perstack::cluster::{Client, JobEnd};
use perstack::engine::{RunOverrides, Settings};
use perstack::sandbox::Isolation;
use perstack::schema::{Checkpoint, CheckpointStatus, Event, JobStatus};
use perstack::storage::{JetStreamConfig, JetStreamStorage, Storage};

use crate::suite::common::{self, Finished, NatsServer};

/// One cluster test at a time.
pub(super) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Lease (and ack wait) of the test workers: a dead worker's jobs move after this.
pub(super) const LEASE_MS: &str = "2000";

pub(super) const EXPERTS: &str = r#"

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

/// The project: unconfined (`runtime = "local"`), the scripted provider, [`EXPERTS`].
pub(super) fn toml() -> String {
    format!("runtime = \"local\"\n{}", common::scripted(EXPERTS))
}

/// A coordinator that delegates to two children (one uses a tool), then completes; every turn
/// waits `delay` ms (simulated model latency).
pub(super) fn script(delay: u64) -> String {
    format!(
        r#"
[[turns]]
expert = "coordinator"
delayMs = {delay}
toolCalls = [
  {{ id = "call_a", name = "child-a", args = {{ query = "first" }} }},
  {{ id = "call_b", name = "child-b", args = {{ query = "second" }} }},
]
[[turns]]
expert = "child-a"
delayMs = {delay}
toolCalls = [{{ id = "a1", name = "healthCheck" }}]
[[turns]]
expert = "child-a"
delayMs = {delay}
text = "A done."
[[turns]]
expert = "child-b"
delayMs = {delay}
text = "B done."
[[turns]]
expert = "coordinator"
delayMs = {delay}
toolCalls = [{{ id = "c2", name = "attemptCompletion" }}]
[[turns]]
expert = "coordinator"
delayMs = {delay}
text = "Summary: A done. B done."
"#
    )
}

/// A `perstack worker` process, killed (SIGKILL) and reaped when dropped.
pub(super) struct Worker {
    pub(super) child: Child,
    log: PathBuf,
}

impl Worker {
    pub(super) fn start(
        server: &NatsServer,
        project: &Path,
        work: &Path,
        n: usize,
        env: &[(&str, &str)],
    ) -> Worker {
        Worker::start_with(&server.url(), project, work, n, env, &[])
    }

    /// A worker of the server at `url`, with extra options (connection, drain).
    pub(super) fn start_with(
        url: &str,
        project: &Path,
        work: &Path,
        n: usize,
        env: &[(&str, &str)],
        options: &[&str],
    ) -> Worker {
        let log = project.join(format!("worker-{n}.log"));
        let mut cmd = Command::new(common::bin());
        cmd.args(["worker", "--nats", url, "--concurrency", "4"])
            .arg("--config")
            .arg(project.join("perstack.toml"))
            .arg("--work-dir")
            .arg(work)
            .args(options)
            .current_dir(project)
            .env("PERSTACK_LOG", "perstack=info")
            .env_remove("PERSTACK_NATS_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if !options.contains(&"--lease-ms") {
            cmd.args(["--lease-ms", LEASE_MS]);
        }
        Worker {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(super) fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    pub(super) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the worker to exit, on the test's runtime (a blocking `wait` would keep the
    /// runtime from shutting down after a missed deadline); the test's own deadline bounds
    /// it, and a worker still running when dropped is killed.
    pub(super) async fn exit(&mut self) -> std::process::ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a `perstack` command of the cluster tests may take before the test fails.
pub(super) const CLI_LIMIT: Duration = Duration::from_secs(60);

/// `perstack <args>` in `dir` without `PERSTACK_NATS_URL`, to its end within [`CLI_LIMIT`];
/// `None` when it did not end in time (it is killed then).
pub(super) async fn cli_within(dir: &Path, args: &[&str]) -> Option<Finished> {
    let mut cmd = common::perstack(dir, args);
    cmd.env_remove("PERSTACK_NATS_URL");
    Finished::within(cmd, CLI_LIMIT).await
}

/// `perstack run <args>` in `dir` without `PERSTACK_NATS_URL`, its stdout and stderr piped,
/// killed when dropped (a test that misses its deadline leaves nothing running).
pub(super) fn spawn_run(dir: &Path, args: &[&str]) -> tokio::process::Child {
    let mut cmd = common::perstack(dir, &["run"]);
    cmd.args(args)
        .env_remove("PERSTACK_NATS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// `perstack <args>` in `dir` without `PERSTACK_NATS_URL`: its raw output (for commands
/// whose stdout is not events), failing the test when it did not end within [`CLI_LIMIT`]
/// (it is killed then).
pub(super) async fn output(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = common::perstack(dir, args);
    cmd.env_remove("PERSTACK_NATS_URL");
    common::output_within(cmd, CLI_LIMIT)
        .await
        .unwrap_or_else(|| panic!("perstack {args:?} did not end within {CLI_LIMIT:?}"))
}

/// Ctrl-C to a [`spawn_run`] command still running.
pub(super) fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().expect("the command is still running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
}

/// Waits for a [`spawn_run`] command to end, at most [`CLI_LIMIT`] (it is killed then and the
/// test fails).
pub(super) async fn finish(child: tokio::process::Child) -> Finished {
    tokio::time::timeout(CLI_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("perstack run did not end within {CLI_LIMIT:?}"))
        .map(Finished::from_output)
        .unwrap()
}

/// [`cli_within`], failing the test when the command did not end in time.
pub(super) async fn cli(dir: &Path, args: &[&str]) -> Finished {
    cli_within(dir, args)
        .await
        .unwrap_or_else(|| panic!("perstack {args:?} did not end within {CLI_LIMIT:?}"))
}

/// Fails a test that missed its deadline, printing every worker's stderr first (the only clue
/// to what the workers were doing).
pub(super) fn missed_deadline<'a>(what: &str, workers: impl IntoIterator<Item = &'a Worker>) -> ! {
    for w in workers {
        eprintln!("{}", w.stderr());
    }
    panic!("{what}");
}

/// The project's settings as `perstack run` resolves them, unconfined.
pub(super) fn settings(project: &Path) -> Settings {
    let cfg = perstack::config::load(&project.join("perstack.toml")).unwrap();
    let mut s = Settings::resolve(&cfg, &RunOverrides::default());
    s.isolation = Isolation::Unconfined;
    s
}

/// What a follower saw of one job.
pub(super) struct Seen {
    pub(super) events: Vec<Event>,
    pub(super) end: JobEnd,
    pub(super) takeovers: usize,
    /// The index in `events` of the first event after each takeover record.
    pub(super) after_takeover: Vec<usize>,
}

pub(super) async fn follow(client: &Client, job: &str) -> Seen {
    let mut followed = client.follow(job).await.unwrap();
    let mut events = Vec::new();
    let mut after_takeover = Vec::new();
    let mut takeovers = 0;
    while let Some(e) = followed.next_event().await.unwrap() {
        if followed.takeovers().len() > takeovers {
            takeovers = followed.takeovers().len();
            after_takeover.push(events.len());
        }
        events.push(e);
    }
    Seen {
        events,
        end: followed.end().cloned().unwrap(),
        takeovers: followed.takeovers().len(),
        after_takeover,
    }
}

/// After each takeover, the first event the follower sees is the `jobTakenOver` runtime event
/// naming the worker that took the job over, numbered after everything before it; the job's
/// stored history holds it too.
pub(super) async fn assert_takeovers_announced(server: &NatsServer, job: &str, seen: &Seen) {
    let announced: Vec<&Event> = seen
        .events
        .iter()
        .filter(|e| e.kind() == "jobTakenOver")
        .collect();
    assert_eq!(
        announced.len(),
        seen.takeovers,
        "job {job}: one jobTakenOver per takeover"
    );
    for &at in &seen.after_takeover {
        let event = &seen.events[at];
        assert_eq!(event.kind(), "jobTakenOver", "job {job}: event {at}");
        let perstack::schema::EventPayload::JobTakenOver(p) = &event.payload else {
            unreachable!()
        };
        assert!(p.worker.starts_with("pid "), "{p:?}");
        assert_eq!(event.expert_key.as_deref(), Some("coordinator"));
        let seq = event.job_seq.unwrap();
        assert!(
            seen.events[..at].iter().all(|e| e.job_seq.unwrap() < seq),
            "job {job}: jobTakenOver is numbered after the events before it"
        );
        let stored = store(server)
            .await
            .event_contents(job, &event.run_id, None)
            .await
            .unwrap();
        assert!(
            stored.iter().any(|e| e.id == event.id),
            "job {job}: jobTakenOver is stored with its run"
        );
    }
}

/// Follow every job to its end, 32 at a time.
pub(super) async fn follow_all(client: &Client, jobs: &[String]) -> Vec<(String, Seen)> {
    futures::stream::iter(jobs.iter().cloned())
        .map(|job| async move {
            let seen = follow(client, &job).await;
            (job, seen)
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// The workers' shared store, read from the test.
pub(super) async fn store(server: &NatsServer) -> JetStreamStorage {
    let client = async_nats::connect(server.url()).await.unwrap();
    JetStreamStorage::new(client, JetStreamConfig::default())
}

/// The job was committed once: each run's steps stored once, each Expert completed once.
pub(super) async fn assert_committed_once(server: &NatsServer, job: &str) {
    let cps: Vec<Checkpoint> = store(server).await.checkpoints_by_job(job).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for cp in &cps {
        assert!(
            seen.insert((cp.run_id.clone(), cp.step_number, cp.status.as_str())),
            "job {job}: step {} of run {} stored twice",
            cp.step_number,
            cp.run_id
        );
    }
    for expert in ["coordinator", "child-a", "child-b"] {
        let completed = cps
            .iter()
            .filter(|c| c.expert.key == expert && c.status == CheckpointStatus::Completed)
            .count();
        assert_eq!(
            completed, 1,
            "job {job}: {expert} completed {completed} times"
        );
    }
}

/// Gapless job sequence numbers from 1, and one `completeRun` of the coordinator.
pub(super) fn assert_gapless(job: &str, seen: &Seen) {
    let seqs: Vec<u64> = seen.events.iter().map(|e| e.job_seq.unwrap()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "job {job}: events out of order or with gaps"
    );
    let completions = seen
        .events
        .iter()
        .filter(|e| e.kind() == "completeRun" && e.expert_key.as_deref() == Some("coordinator"))
        .count();
    assert_eq!(completions, 1, "job {job}");
}

/// What two runs' printed events must share: each event's type, Expert and field names (ids
/// and times differ).
pub(super) fn shape(events: &[serde_json::Value]) -> Vec<(String, Option<String>, Vec<String>)> {
    events
        .iter()
        .map(|e| {
            let mut keys: Vec<String> = e.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            (
                e["type"].as_str().unwrap().to_owned(),
                e["expertKey"].as_str().map(str::to_owned),
                keys,
            )
        })
        .collect()
}

/// Messages still in the work queue (waiting or unacknowledged).
pub(super) async fn queue_left(server: &NatsServer) -> (u64, usize) {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("workers", "PERSTACK_JOBS")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

/// Every record on job `job`'s output subject: (message id, whether it is the end record).
pub(super) async fn records(server: &NatsServer, job: &str) -> Vec<(String, bool, bool)> {
    let nats = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let mut stream = js.get_stream("PERSTACK_OUTPUT").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let subject = format!("perstack.output.{job}");
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await
            && m.subject.as_str() == subject
        {
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.to_string())
                .unwrap_or_default();
            out.push((
                id,
                m.headers.get("Perstack-Takeover").is_some(),
                m.headers.get("Perstack-End").is_some(),
            ));
        }
    }
    out
}

/// Submits `n` coordinator jobs with ids `<prefix>-<i>` and queries `q<i>`.
pub(super) async fn submit_all(
    client: &Client,
    settings: &Settings,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let mut jobs = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        jobs.push(
            client
                .submit(settings, "coordinator", &format!("q{i}"), Some(id))
                .await
                .unwrap(),
        );
    }
    jobs
}

/// Waits (at most 30 s) until `worker` holds the leases of at least two of `jobs` that are
/// running, so that one finishing in between still leaves one to take over.
pub(super) async fn wait_until_running_two(server: &NatsServer, worker: &Worker, jobs: &[String]) {
    let victim = format!("pid {} ", worker.pid());
    let nats = async_nats::connect(server.url()).await.unwrap();
    let leases = async_nats::jetstream::new(nats);
    let store = store(server).await;
    let holding = async {
        loop {
            if let Ok(kv) = leases.get_key_value("perstack_leases").await {
                let mut held = 0;
                for j in jobs {
                    if let Ok(Some(v)) = kv.get(j).await
                        && String::from_utf8_lossy(&v).contains(&victim)
                        && store
                            .retrieve_job(j)
                            .await
                            .ok()
                            .flatten()
                            .is_some_and(|r| r.status == JobStatus::Running)
                    {
                        held += 1;
                    }
                }
                if held >= 2 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), holding)
        .await
        .expect("the worker never ran two jobs at once");
}
