//! One-shot load test of the reference workload (`docs/PERFORMANCE.md`, targets T1 and T2),
//! without criterion: N concurrent fan-out jobs on one engine with an instant model and
//! [`MemoryStorage`], repeated for a number of rounds, each on a fresh engine and store.
//!
//! ```text
//! cargo run --release --example fanout_load -- [N=1000] [ROUNDS=3] [memory|discard] [instant|anthropic]
//! ```
//!
//! `memory` (the default) keeps every event and checkpoint in a [`MemoryStorage`]; `discard`
//! keeps nothing, so the peak RSS is what the engine itself holds for N live jobs.
//!
//! `instant` (the default) answers in-process; `anthropic` (target T2h) goes through the real
//! Anthropic provider over HTTP and SSE to a fake Messages server on 127.0.0.1, which runs in a
//! child process (this program, `serve-anthropic`) so that the CPU time printed is the engine's
//! alone. The child ends with this program (it exits when its stdin closes).
//!
//! Per round it prints wall and CPU time per job and the process RSS, then checks that the
//! round's jobs, engine and store were freed: every actor of a job holds the job's context,
//! which holds one reference to the model and one to the store. Once the jobs are done, only
//! the engine may still hold them; after `shutdown`, nothing but this program (the store is new
//! each round; the model is shared by all rounds). Actors finish stopping on their own tasks
//! after the outcomes are in, so each check waits for the counts to drop, for at most
//! [`RELEASE_WITHIN`]. It exits 1 when something is still held after that (a leak: memory then
//! grows with every job ever run) and panics if a job does not complete.

/// The allocator the `perstack` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/fanout.rs"]
mod support;

#[path = "support/anthropic_fake.rs"]
mod anthropic_fake;

use std::sync::Arc;
use std::time::{Duration, Instant};

use perstack::engine::Engine;
use perstack::llm::LanguageModel;
use perstack::llm::anthropic::{AnthropicConfig, AnthropicModel};
use perstack::storage::MemoryStorage;

use support::{
    DiscardStorage, FanoutModel, peak_rss, process_cpu, reset_peak_rss, run_jobs, status_kib,
};

/// How long finished jobs and a shut-down engine may take to free what they held. A healthy
/// run frees everything within milliseconds; only a leak waits this long.
const RELEASE_WITHIN: Duration = Duration::from_secs(10);

/// References to `storage` and `model` beyond this program's own, once they drop to `idle` or
/// [`RELEASE_WITHIN`] has passed.
async fn references_left(
    storage: &Arc<dyn perstack::storage::Storage>,
    model: &Arc<dyn LanguageModel>,
    idle: (usize, usize),
) -> (usize, usize) {
    let deadline = tokio::time::Instant::now() + RELEASE_WITHIN;
    loop {
        let now = (Arc::strong_count(storage) - 1, Arc::strong_count(model) - 1);
        if now == idle || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("argument {n} must be a number, not {a:?}"))
        })
        .unwrap_or(default)
}

/// The fake Messages server in a child process, killed when dropped.
struct FakeServer {
    child: std::process::Child,
    base_url: String,
}

impl FakeServer {
    fn start() -> Self {
        use std::io::BufRead;
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("own path: {e}"));
        let mut child = std::process::Command::new(exe)
            .arg("serve-anthropic")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start the fake server: {e}"));
        let mut line = String::new();
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("stdout is piped"));
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("the fake server's address: {e}"));
        FakeServer {
            child,
            base_url: format!("http://{}/v1", line.trim()),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve-anthropic`: print the address, serve until stdin closes.
async fn serve_anthropic() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind 127.0.0.1: {e}"));
    println!(
        "{}",
        listener
            .local_addr()
            .unwrap_or_else(|e| panic!("address: {e}"))
    );
    tokio::spawn(anthropic_fake::serve(listener));
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while tokio::io::AsyncReadExt::read(&mut stdin, &mut buf)
        .await
        .is_ok_and(|n| n > 0)
    {}
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("serve-anthropic") {
        serve_anthropic().await;
        return std::process::ExitCode::SUCCESS;
    }
    let n = arg(1, 1_000);
    let rounds = arg(2, 3);
    let discard = match std::env::args().nth(3).as_deref() {
        None | Some("memory") => false,
        Some("discard") => true,
        Some(other) => panic!("argument 3 must be memory or discard, not {other:?}"),
    };
    let mut settings = support::settings();
    let mut server = None;
    let model: Arc<dyn LanguageModel> = match std::env::args().nth(4).as_deref() {
        None | Some("instant") => Arc::new(FanoutModel),
        Some("anthropic") => {
            let fake = server.insert(FakeServer::start());
            let mut config = AnthropicConfig::new("test-key");
            config.base_url = fake.base_url.clone();
            settings.provider_name = "anthropic".into();
            Arc::new(
                AnthropicModel::new(config)
                    .unwrap_or_else(|e| panic!("the Anthropic provider: {e}")),
            )
        }
        Some(other) => panic!("argument 4 must be instant or anthropic, not {other:?}"),
    };
    let rss = || status_kib("VmRSS").map_or(0.0, |kib| kib as f64 / 1024.0);
    println!("before: RSS {:.1} MB", rss());

    let mut leaked = false;
    for round in 1..=rounds {
        let reset = reset_peak_rss();
        let storage: Arc<dyn perstack::storage::Storage> = if discard {
            Arc::new(DiscardStorage)
        } else {
            Arc::new(MemoryStorage::new())
        };
        let engine = Engine::builder()
            .settings(settings.clone())
            .model(model.clone())
            .storage(storage.clone())
            .build();
        // What the engine alone holds: the store (engine and bus) and the model (engine).
        let idle = (
            Arc::strong_count(&storage) - 1,
            Arc::strong_count(&model) - 1,
        );
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        run_jobs(&engine, n).await;
        let wall = t0.elapsed();
        let cpu = process_cpu().saturating_sub(cpu0);
        let rss_done = rss();
        let (jobs_store, jobs_model) = references_left(&storage, &model, idle).await;
        let jobs_left = (
            jobs_store.saturating_sub(idle.0),
            jobs_model.saturating_sub(idle.1),
        );
        engine.shutdown().await;
        let (storage_refs, model_refs) = references_left(&storage, &model, (0, 0)).await;
        drop(storage);
        println!(
            "round {round}: N={n}: {:.3} ms wall/job, {:.3} ms CPU/job, peak RSS {}{}; RSS {rss_done:.1} MB when the jobs were done, {:.1} MB after the engine and the round's store were dropped; references left by finished jobs on the running engine: to the store {}, to the model {}; after shutdown: to this round's store {storage_refs}, to the model {model_refs}",
            wall.as_secs_f64() * 1e3 / n as f64,
            cpu.as_secs_f64() * 1e3 / n as f64,
            peak_rss(),
            if reset { "" } else { " (process peak)" },
            rss(),
            jobs_left.0,
            jobs_left.1,
        );
        if jobs_left != (0, 0) || storage_refs > 0 || model_refs > 0 {
            leaked = true;
        }
    }
    drop(server);
    if leaked {
        eprintln!(
            "leak: finished jobs or the shut-down engine still hold the store or the model (see the counts above)"
        );
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
