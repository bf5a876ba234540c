//! The cluster benchmark (target T7 of `docs/PERFORMANCE.md`): the fan-out workload
//! (`experts/fanout`: a coordinator delegating to two children at once, 7 model calls per job)
//! with a 50 ms model delay per turn, run
//!
//! * in one process on the embedded engine ([`Engine`] with an [`FsStorage`] in a temp
//!   directory, then with a [`MemoryStorage`]; an instant fan-out model behind a 50 ms sleep),
//!   at most `C` jobs at a time, the concurrency one worker gets;
//! * through a local `nats-server` (a fresh port and store directory per row, killed at the end)
//!   with 1, 2 and 4 `perstack worker` processes of the built binary (`--concurrency C`, the
//!   scripted provider playing `experts/fanout/script.toml` with `delayMs = 50` on every turn),
//!   jobs submitted with [`Client::submit`] and followed to their end with [`Client::wait`].
//!
//! Every row submits all jobs at once and measures, from that moment: jobs/s, p50/p99
//! submit-to-completion latency, CPU per job of the engine (the bench process for the embedded
//! row, the sum of the worker processes' `utime + stime` from `/proc/<pid>/stat` otherwise) and
//! of the NATS server. A last row measures the time from `kill -9` of a worker holding running
//! jobs to each of those jobs being held again by the other worker (a new lease seen on the
//! lease bucket's watch), with the workers' `--lease-ms` short.
//!
//! Every job must complete, or the bench panics; every wait is bounded and every process it
//! starts is killed when its guard drops. Only 127.0.0.1 is used.
//!
//! `cargo bench --bench cluster` (release) or, quicker to build,
//! `cargo bench --profile dev --bench cluster`. Needs `nats-server` (`NATS_SERVER_BIN` or on
//! `PATH`); without one it prints SKIP. Environment: `PERSTACK_BENCH_JOBS` (jobs per row,
//! default 100), `PERSTACK_BENCH_CONCURRENCY` (jobs at once per worker, default 16),
//! `PERSTACK_BENCH_LEASE_MS` (lease of the kill row's workers, default 1000).

// A benchmark should fail loudly, with a message, when the engine breaks.
#![allow(clippy::expect_used, clippy::unwrap_used)]

/// The allocator the `perstack` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../examples/support/fanout.rs"]
#[allow(dead_code)] // shared with benches/fanout.rs; this bench uses a few
mod support;

#[path = "../src/tests/support.rs"]
#[allow(dead_code, unreachable_pub)] // the test helpers; this bench uses the NATS server
mod harness;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use perstack::cluster::{Client, NatsOptions};
use perstack::engine::{Engine, JobRequest, RunOverrides, Settings};
use perstack::llm::{GenerationError, GenerationRequest, LanguageModel, PartStream};
use perstack::sandbox::Isolation;
use perstack::schema::JobStatus;
use perstack::storage::{FsStorage, MemoryStorage, Storage};

use harness::NatsServer;
use support::{COORDINATOR, FanoutModel, process_cpu};

/// Simulated model latency per turn.
const MODEL_DELAY_MS: u64 = 50;
/// The longest one row may take before the bench gives up.
const ROW_DEADLINE: Duration = Duration::from_secs(600);

/// The knobs, from the environment.
struct Knobs {
    jobs: usize,
    concurrency: usize,
    lease_ms: u64,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            jobs: env_num("PERSTACK_BENCH_JOBS", 100) as usize,
            concurrency: env_num("PERSTACK_BENCH_CONCURRENCY", 16) as usize,
            lease_ms: env_num("PERSTACK_BENCH_LEASE_MS", 1000),
        }
    }
}

/// The instant fan-out model behind a fixed delay per generation: stateless, so one instance
/// serves every job of the embedded row (the scripted provider counts turns per model).
struct DelayedFanout;

#[async_trait::async_trait]
impl LanguageModel for DelayedFanout {
    fn name(&self) -> &str {
        "delayed-fanout"
    }

    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError> {
        tokio::time::sleep(Duration::from_millis(MODEL_DELAY_MS)).await;
        FanoutModel.stream(request).await
    }
}

/// One row of the table.
struct Row {
    setup: String,
    jobs: usize,
    wall: Duration,
    latencies: Vec<Duration>,
    engine_cpu: Duration,
    server_cpu: Option<Duration>,
}

impl Row {
    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i]
    }

    fn print(&self) {
        let per_job = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3 / self.jobs as f64);
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.0} | {:.0} | {} | {} |",
            self.setup,
            self.jobs,
            self.wall.as_secs_f64(),
            self.jobs as f64 / self.wall.as_secs_f64(),
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            per_job(self.engine_cpu),
            self.server_cpu.map_or_else(|| "-".into(), per_job),
        );
    }
}

/// User + system CPU time of process `pid` (all threads), from `/proc/<pid>/stat`, in
/// `USER_HZ` (100/s) ticks; zero once the process is gone.
fn pid_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Duration::from_millis((ticks(11).unwrap_or(0) + ticks(12).unwrap_or(0)) * 10)
}

/// The project the workers run: `experts/fanout`'s Experts and script, every turn delayed.
fn write_project(dir: &Path) {
    let fanout = Path::new(env!("CARGO_MANIFEST_DIR")).join("experts/fanout");
    let toml = std::fs::read_to_string(fanout.join("perstack.toml")).unwrap();
    std::fs::write(dir.join("perstack.toml"), toml).unwrap();
    let script = std::fs::read_to_string(fanout.join("script.toml")).unwrap();
    let mut delayed = String::new();
    for line in script.lines() {
        delayed.push_str(line);
        delayed.push('\n');
        if line.starts_with("expert = ") {
            delayed.push_str(&format!("delayMs = {MODEL_DELAY_MS}\n"));
        }
    }
    std::fs::write(dir.join("script.toml"), delayed).unwrap();
}

/// The settings `perstack run --nats` would submit with, unconfined.
fn cluster_settings(project: &Path) -> Settings {
    let cfg = perstack::config::load(&project.join("perstack.toml")).unwrap();
    let mut s = Settings::resolve(&cfg, &RunOverrides::default());
    s.isolation = Isolation::Unconfined;
    s
}

/// A `perstack worker` process, killed and reaped when dropped.
struct Worker(Child);

impl Worker {
    fn start(
        server: &NatsServer,
        project: &Path,
        n: usize,
        concurrency: usize,
        lease_ms: u64,
    ) -> Worker {
        let log = std::fs::File::create(project.join(format!("worker-{n}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_perstack"))
            .args(["worker", "--nats", &server.url()])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--lease-ms", &lease_ms.to_string()])
            .arg("--config")
            .arg(project.join("perstack.toml"))
            .arg("--work-dir")
            .arg(project.join(format!("work-{n}")))
            .current_dir(project)
            .env("PERSTACK_LOG", "perstack=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start perstack worker");
        Worker(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Submit one job (id `id`) and wait for its end; panics unless it completed. The time from
/// submit to the end.
async fn submit_and_wait(client: &Client, settings: &Settings, id: String) -> Duration {
    let t0 = Instant::now();
    let job = client
        .submit(settings, COORDINATOR, &format!("task {id}"), Some(id))
        .await
        .expect("submit");
    let end = client.wait(&job).await.expect("follow the job to its end");
    assert_eq!(
        end.status,
        Some(JobStatus::Completed),
        "job {job} did not complete: {end:?}"
    );
    t0.elapsed()
}

/// Waits (at most 20 s) until `n` workers have pull requests open on the work queue, so that
/// the timed batch does not include a worker's start-up.
async fn wait_for_workers(server: &NatsServer, n: usize) {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let ready = async {
        loop {
            if let Ok(mut consumer) = js
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    "workers",
                    "PERSTACK_JOBS",
                )
                .await
                && let Ok(info) = consumer.info().await
                && info.num_waiting >= n
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), ready)
        .await
        .is_err()
    {
        println!("note: fewer than {n} workers were pulling after 20 s; measuring anyway");
    }
}

/// The embedded rows: the same jobs on one engine in this process, `concurrency` at a time,
/// on the file store (as `perstack run`) or in memory.
async fn embedded(knobs: &Knobs, on_disk: bool) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = if on_disk {
        Arc::new(FsStorage::with_key_dir(dir.path().join("perstack"), None))
    } else {
        Arc::new(MemoryStorage::new())
    };
    let engine = Engine::builder()
        .settings(support::settings())
        .model(Arc::new(DelayedFanout))
        .storage(storage)
        .build();
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let engine = &engine;
    let latencies: Vec<Duration> = futures::stream::iter(0..knobs.jobs)
        .map(|_| async move {
            let handle = engine
                .start(JobRequest::new(COORDINATOR, "hello"))
                .await
                .expect("the engine takes the job");
            let outcome = handle.wait().await.expect("an outcome");
            assert_eq!(outcome.job.status, JobStatus::Completed);
            // From the batch's start, as the cluster rows (all submitted at once).
            t0.elapsed()
        })
        .buffer_unordered(knobs.concurrency)
        .collect()
        .await;
    let wall = t0.elapsed();
    let engine_cpu = process_cpu().saturating_sub(cpu0);
    Row {
        setup: format!(
            "one process (embedded, {}, {} at once)",
            if on_disk {
                "FsStorage"
            } else {
                "MemoryStorage"
            },
            knobs.concurrency
        ),
        jobs: knobs.jobs,
        wall,
        latencies,
        engine_cpu,
        server_cpu: None,
    }
}

/// A row through the cluster with `workers` worker processes.
async fn cluster(knobs: &Knobs, project: &Path, workers: usize) -> Row {
    let server = NatsServer::start("cluster bench").expect("nats-server was found before");
    let procs: Vec<Worker> = (0..workers)
        .map(|n| Worker::start(&server, project, n, knobs.concurrency, 30_000))
        .collect();
    let client = Client::connect(&NatsOptions::url(server.url()))
        .await
        .expect("connect to nats-server");
    let settings = cluster_settings(project);
    wait_for_workers(&server, workers).await;
    // One warm-up job (streams, buckets and consumers exist after it).
    submit_and_wait(&client, &settings, format!("warm-{workers}")).await;

    let pids: Vec<u32> = procs.iter().map(Worker::pid).collect();
    let server_pid = server.pid().expect("the server runs");
    let cpu = |pids: &[u32]| pids.iter().map(|&p| pid_cpu(p)).sum::<Duration>();
    let (workers0, server0) = (cpu(&pids), pid_cpu(server_pid));
    let t0 = Instant::now();
    let latencies = futures::future::join_all(
        (0..knobs.jobs).map(|i| submit_and_wait(&client, &settings, format!("b{workers}-{i}"))),
    )
    .await;
    let wall = t0.elapsed();
    let (workers1, server1) = (cpu(&pids), pid_cpu(server_pid));
    drop(procs);
    Row {
        setup: format!(
            "{workers} worker process{} (--concurrency {})",
            if workers == 1 { "" } else { "es" },
            knobs.concurrency
        ),
        jobs: knobs.jobs,
        wall,
        latencies,
        engine_cpu: workers1.saturating_sub(workers0),
        server_cpu: Some(server1.saturating_sub(server0)),
    }
}

/// What the kill row measured.
struct Takeover {
    lease_ms: u64,
    victims: usize,
    retaken: Vec<Duration>,
    all_done: Duration,
}

/// Two workers with a short lease; `kill -9` of the first once it holds running jobs; the time
/// until each of its jobs is held by the other worker, and until every job completed.
async fn takeover(knobs: &Knobs, project: &Path) -> Takeover {
    let server = NatsServer::start("cluster bench kill").expect("nats-server was found before");
    let mut procs: Vec<Worker> = (0..2)
        .map(|n| Worker::start(&server, project, 10 + n, knobs.concurrency, knobs.lease_ms))
        .collect();
    let client = Client::connect(&NatsOptions::url(server.url()))
        .await
        .expect("connect to nats-server");
    let settings = cluster_settings(project);
    wait_for_workers(&server, 2).await;
    submit_and_wait(&client, &settings, "warm-kill".into()).await;

    let jobs: Vec<String> = (0..2 * knobs.concurrency)
        .map(|i| format!("k-{i}"))
        .collect();
    let waits = tokio::spawn({
        let (client, settings, jobs) = (client.clone(), settings.clone(), jobs.clone());
        async move {
            futures::future::join_all(
                jobs.into_iter()
                    .map(|j| submit_and_wait(&client, &settings, j)),
            )
            .await
        }
    });

    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let victim_pid = procs[0].pid();
    let mark = format!("pid {victim_pid} ");
    let held_by_victim = async |kv: &async_nats::jetstream::kv::Store| {
        let mut held = Vec::new();
        for j in &jobs {
            if let Ok(Some(v)) = kv.get(j).await
                && String::from_utf8_lossy(&v).contains(&mark)
            {
                held.push(j.clone());
            }
        }
        held
    };
    let (kv, mut watch) = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(kv) = js.get_key_value("perstack_leases").await
                && held_by_victim(&kv).await.len() >= 2
            {
                let watch = kv.watch_all().await.expect("watch the lease bucket");
                return (kv, watch);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("worker 0 never held two running jobs");

    let _ = procs[0].0.kill(); // SIGKILL
    let killed = Instant::now();
    let _ = procs[0].0.wait();
    let mut victims = held_by_victim(&kv).await;
    let count = victims.len();
    let mut retaken = Vec::new();
    let moved = tokio::time::timeout(Duration::from_secs(120), async {
        while !victims.is_empty() {
            let Some(Ok(entry)) = watch.next().await else {
                panic!("the lease watch ended");
            };
            let holder = String::from_utf8_lossy(&entry.value);
            if entry.operation == async_nats::jetstream::kv::Operation::Put
                && !holder.contains(&mark)
                && let Some(i) = victims.iter().position(|j| *j == entry.key)
            {
                victims.swap_remove(i);
                retaken.push(killed.elapsed());
            }
        }
    })
    .await;
    assert!(
        moved.is_ok(),
        "the killed worker's jobs did not move within 120 s"
    );
    tokio::time::timeout(Duration::from_secs(300), waits)
        .await
        .expect("the jobs finished within 300 s of the kill")
        .expect("the waiting task");
    Takeover {
        lease_ms: knobs.lease_ms,
        victims: count,
        retaken,
        all_done: killed.elapsed(),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: run it with `cargo bench --bench cluster`");
        return;
    }
    // The skip check (and the note) of the tests' harness; the server is dropped at once.
    if NatsServer::start("cluster bench").is_none() {
        return;
    }
    let knobs = Knobs::from_env();
    let project = tempfile::tempdir().unwrap();
    write_project(project.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a multi-thread tokio runtime");
    let bounded = |name: &str, f: std::pin::Pin<Box<dyn Future<Output = Row> + '_>>| {
        rt.block_on(async { tokio::time::timeout(ROW_DEADLINE, f).await })
            .unwrap_or_else(|_| panic!("{name} took longer than {ROW_DEADLINE:?}"))
    };

    println!(
        "cluster bench: fan-out workload (7 model calls/job, {MODEL_DELAY_MS} ms each), {} jobs per row, all submitted at once; {} profile",
        knobs.jobs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let mut rows = vec![
        bounded("embedded", Box::pin(embedded(&knobs, true))),
        bounded("embedded", Box::pin(embedded(&knobs, false))),
    ];
    for workers in [1, 2, 4] {
        rows.push(bounded(
            "cluster",
            Box::pin(cluster(&knobs, project.path(), workers)),
        ));
    }
    let kill = rt
        .block_on(async {
            tokio::time::timeout(ROW_DEADLINE, takeover(&knobs, project.path())).await
        })
        .expect("the kill row took too long");

    println!();
    println!(
        "| setup | jobs | wall s | jobs/s | p50 ms | p99 ms | engine CPU ms/job | nats-server CPU ms/job |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in &rows {
        row.print();
    }
    let mut retaken = kill.retaken.clone();
    retaken.sort();
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!();
    println!(
        "kill -9 of a worker holding {} running jobs (2 workers, --lease-ms {}): running again on the other worker after min {:.0} ms, median {:.0} ms, max {:.0} ms; every job completed {:.0} ms after the kill",
        kill.victims,
        kill.lease_ms,
        ms(retaken.first()),
        ms(retaken.get(retaken.len() / 2)),
        ms(retaken.last()),
        kill.all_done.as_secs_f64() * 1e3,
    );
}
