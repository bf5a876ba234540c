//! Target T8 of `docs/PERFORMANCE.md`: what the native sandbox adds to starting a skill
//! process (target: at most 5 ms per process).
//!
//! Through the public API: one job of a scripted Expert whose turn calls `exec` on `/bin/true`
//! `CALLS` times in a row, then completes; the job runs with
//! [`Isolation::Unconfined`](perstack::sandbox::Isolation) and with the sandbox. The difference
//! of the two wall times divided by `CALLS` is the cost the sandbox adds per process: building
//! the policy, the trampoline's two stages, the namespaces, the mount view, Landlock and the
//! limits, and the teardown of its PID namespace.
//!
//! Run with `cargo bench --bench sandbox` (the `perstack-sandbox` binary next to the bench is
//! the trampoline; `cargo bench` builds it). The last line is the summary: both medians, the
//! cost added per process, whether the target is met, and the machine's load average.

#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::scripted::{Script, ScriptedModel};
use perstack::sandbox::Isolation;
use perstack::schema::JobStatus;
use perstack::storage::MemoryStorage;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `exec` calls per job (one after the other, one per turn).
const CALLS: usize = 10;

const EXPERT: &str = r#"
[experts."w"]
instruction = "Run true."
"#;

fn script() -> Script {
    let mut text = String::new();
    for i in 0..CALLS {
        text.push_str(&format!(
            "[[turns]]\nexpert = \"w\"\ntoolCalls = [{{ id = \"t{i}\", name = \"exec\", args = \
             {{ command = \"/bin/true\", args = [], env = {{}}, cwd = \".\", stdout = true, \
             stderr = true }} }}]\n"
        ));
    }
    text.push_str(
        "[[turns]]\nexpert = \"w\"\ntoolCalls = [{ id = \"done\", name = \"attemptCompletion\" }]\n\
         [[turns]]\nexpert = \"w\"\ntext = \"done\"\n",
    );
    toml::from_str(&text).expect("a valid script")
}

/// One job's wall time.
async fn job(settings: &Settings, script: &Script) -> Duration {
    let engine = Engine::builder()
        .settings(settings.clone())
        .model(Arc::new(ScriptedModel::new(script.clone())))
        .storage(Arc::new(MemoryStorage::new()))
        .build();
    let started = Instant::now();
    let handle = engine
        .start(JobRequest::new("w", "go"))
        .await
        .expect("the job starts");
    let outcome = handle.wait().await.expect("the job ends");
    let wall = started.elapsed();
    assert_eq!(outcome.job.status, JobStatus::Completed);
    engine.shutdown().await;
    wall
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = perstack::sandbox::check_available() {
        println!("SKIP sandbox bench: {e}");
        return;
    }
    let workspace = tempfile::tempdir().expect("a workspace");
    let config = perstack::config::parse(EXPERT, &workspace.path().join("perstack.toml"))
        .expect("a valid perstack.toml");
    let settings = |isolation| {
        let mut s = Settings::new(config.experts.clone());
        s.workspace = workspace.path().to_path_buf();
        s.env = [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into();
        s.isolation = isolation;
        s
    };
    let unconfined = settings(Isolation::Unconfined);
    let sandboxed = settings(Isolation::Sandboxed);
    let script = script();

    let mut group = c.benchmark_group("sandbox");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("job_10_execs/unconfined", |b| {
        b.to_async(&rt).iter(|| job(&unconfined, &script));
    });
    group.bench_function("job_10_execs/sandboxed", |b| {
        b.to_async(&rt).iter(|| job(&sandboxed, &script));
    });
    group.finish();
    c.final_summary();

    // The summary line, from our own samples (medians of 15 jobs each): wall time, and CPU time
    // of this process and its reaped children (the trampolines and programs), which a loaded
    // machine inflates less than wall time. The kernel's own clean-up of a network namespace
    // runs in a kernel worker and is in neither.
    let median = |settings: &Settings| {
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..15 {
            let before = cpu_time();
            walls.push(rt.block_on(job(settings, &script)));
            cpus.push(cpu_time().saturating_sub(before));
        }
        walls.sort_unstable();
        cpus.sort_unstable();
        (walls[walls.len() / 2], cpus[cpus.len() / 2])
    };
    let (plain, plain_cpu) = median(&unconfined);
    let (confined, confined_cpu) = median(&sandboxed);
    let calls = u32::try_from(CALLS).expect("a small count");
    let added = confined.saturating_sub(plain) / calls;
    let added_cpu = confined_cpu.saturating_sub(plain_cpu) / calls;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "\nT8 sandboxed process start: a job of {CALLS} exec calls of /bin/true, median of 15: \
         unconfined {} µs, sandboxed {} µs; added per process {} µs wall (target <= 5000 µs: \
         {}), {} µs CPU; load average {}",
        plain.as_micros(),
        confined.as_micros(),
        added.as_micros(),
        if added <= Duration::from_millis(5) {
            "met"
        } else {
            "not met"
        },
        added_cpu.as_micros(),
        load.join(" ")
    );
}

/// CPU time (user and system) of this process and of its children that have been reaped.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN]
        .into_iter()
        .filter_map(|who| getrusage(who).ok())
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(
                    u64::try_from(tv.tv_sec()).unwrap_or(0),
                    u32::try_from(tv.tv_usec()).unwrap_or(0) * 1000,
                )
            };
            t(u.user_time()) + t(u.system_time())
        })
        .sum()
}
