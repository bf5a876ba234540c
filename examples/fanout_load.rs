//! Probe (temporary).
#![allow(clippy::expect_used)]
use std::sync::Arc;
use std::time::Instant;
use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::scripted::ScriptedModel;
use perstack::schema::JobStatus;
use perstack::storage::MemoryStorage;

fn kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("status");
    s.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')).expect("key").split_whitespace().next().expect("n").parse().expect("num")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experts/fanout");
    let config = perstack::config::load(&dir.join("perstack.toml")).expect("config");
    let one = std::fs::read_to_string(dir.join("script.toml")).expect("script");
    let script = one.repeat(n);
    let model = ScriptedModel::parse(&script, "x").expect("model");
    println!("start: rss {} KiB", kib("VmRSS"));
    let engine = Engine::builder().settings(Settings::new(config.experts.clone())).model(Arc::new(model)).storage(Arc::new(MemoryStorage::new())).build();
    println!("built: rss {} KiB", kib("VmRSS"));
    let t0 = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..n { hs.push(engine.start(JobRequest::new("coordinator", "hello")).await.expect("start")); }
    println!("started: rss {} KiB hwm {} {:?}", kib("VmRSS"), kib("VmHWM"), t0.elapsed());
    for h in hs { let o = h.wait().await.expect("wait"); assert_eq!(o.job.status, JobStatus::Completed); }
    println!("done: rss {} KiB hwm {} {:?}", kib("VmRSS"), kib("VmHWM"), t0.elapsed());
    engine.shutdown().await;
    println!("shutdown: rss {} KiB hwm {}", kib("VmRSS"), kib("VmHWM"));
}
