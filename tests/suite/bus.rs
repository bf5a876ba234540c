//! The event bus and the actor tree under load: one global order, per-job streams that lose
//! nothing, checkpoints durable before their events are visible, bounded delegation fan-out.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::scripted::ScriptedModel;
use perstack::schema::JobStatus;
use perstack::storage::StoreError;

use super::hooked::{Hooked, Write, WriteHook};

const FANOUT: &str = r#"
[experts."coordinator"]
instruction = "Delegate."
delegates = ["child-a", "child-b", "child-c"]
[experts."child-a"]
description = "a"
instruction = "a"
[experts."child-b"]
description = "b"
instruction = "b"
[experts."child-c"]
description = "c"
instruction = "c"
"#;

fn fanout_script(jobs: usize) -> String {
    let mut s = String::new();
    for _ in 0..jobs {
        s.push_str(
            r#"
[[turns]]
expert = "coordinator"
toolCalls = [
  { name = "child-a", args = { query = "a" } },
  { name = "child-b", args = { query = "b" } },
  { name = "child-c", args = { query = "c" } },
]
[[turns]]
expert = "child-a"
delayMs = 5
text = "A"
[[turns]]
expert = "child-b"
delayMs = 5
text = "B"
[[turns]]
expert = "child-c"
delayMs = 5
text = "C"
[[turns]]
expert = "coordinator"
text = "done"
"#,
        );
    }
    s
}

fn settings() -> Settings {
    let cfg = perstack::config::parse(FANOUT, std::path::Path::new("perstack.toml")).unwrap();
    Settings::new(cfg.experts)
}

/// A slow disk that remembers which checkpoints were stored, to check visibility order.
#[derive(Default)]
struct Recording {
    stored: Mutex<HashSet<String>>,
}

#[async_trait::async_trait]
impl WriteHook for Recording {
    async fn before(&self, write: Write<'_>) -> Result<(), StoreError> {
        if let Write::Checkpoint(_) = write {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }
    fn after(&self, write: Write<'_>) {
        if let Write::Checkpoint(c) = write {
            self.stored.lock().unwrap().insert(c.id.clone());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_get_one_global_order_and_complete_streams_with_durable_checkpoints() {
    const JOBS: usize = 20;
    let storage = Arc::new(Hooked::new(Recording::default()));
    let seen_total = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let last_seq = Arc::new(AtomicU64::new(0));
    let engine = {
        let (storage2, seen, bad, last) = (
            storage.clone(),
            seen_total.clone(),
            violations.clone(),
            last_seq.clone(),
        );
        Engine::builder()
            .settings(settings())
            .model(Arc::new(
                ScriptedModel::parse(&fanout_script(JOBS), "s").unwrap(),
            ))
            .storage(storage.clone())
            .on_event(move |e| {
                seen.fetch_add(1, Ordering::SeqCst);
                // One global, strictly increasing order.
                if last.swap(e.seq, Ordering::SeqCst) >= e.seq {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
                // A carried checkpoint is stored before anyone sees the event.
                if let Some(cp) = e.event.checkpoint()
                    && !storage2.hook.stored.lock().unwrap().contains(&cp.id)
                {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
            })
            .build()
    };
    let mut handles = Vec::new();
    for i in 0..JOBS {
        let mut req = JobRequest::new("coordinator", "go").subscribe();
        req.buffer = 1; // the smallest stream: the bus must wait, never drop
        let mut h = engine.start(req.job_id(format!("job-{i}"))).await.unwrap();
        let mut rx = h.take_events().unwrap();
        let reader = tokio::spawn(async move {
            let mut n = 0u64;
            let mut jobs = HashSet::new();
            while let Some(e) = rx.recv().await {
                jobs.insert(e.event.job_id.clone());
                n += 1;
                if n.is_multiple_of(7) {
                    tokio::time::sleep(Duration::from_millis(1)).await; // a slow reader
                }
            }
            (n, jobs)
        });
        handles.push((h, reader));
    }
    let mut per_job_total = 0;
    for (i, (h, reader)) in handles.into_iter().enumerate() {
        let outcome = h.wait().await.unwrap();
        assert_eq!(outcome.job.status, JobStatus::Completed);
        assert_eq!(outcome.text.as_deref(), Some("done"));
        let (n, jobs) = reader.await.unwrap();
        assert_eq!(
            jobs.into_iter().collect::<Vec<_>>(),
            vec![format!("job-{i}")],
            "a stream sees only its job"
        );
        per_job_total += n;
    }
    engine.shutdown().await;
    assert_eq!(violations.load(Ordering::SeqCst), 0);
    assert_eq!(
        per_job_total,
        seen_total.load(Ordering::SeqCst),
        "every event reached its job's stream"
    );
    assert!(per_job_total > 20 * JOBS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_fan_out_is_bounded() {
    let mut s = settings();
    s.max_parallel_delegates = 1;
    let engine = Engine::builder()
        .settings(s)
        .model(Arc::new(
            ScriptedModel::parse(&fanout_script(1), "s").unwrap(),
        ))
        .build();
    let mut h = engine
        .start(JobRequest::new("coordinator", "go").subscribe())
        .await
        .unwrap();
    let mut rx = h.take_events().unwrap();
    let outcome = h.wait().await.unwrap();
    assert_eq!(outcome.job.status, JobStatus::Completed);
    // With one slot, a child starts only after the previous one completed.
    let mut running = 0i32;
    let mut max_running = 0;
    while let Ok(e) = rx.try_recv() {
        if e.event
            .expert_key
            .as_deref()
            .is_some_and(|k| k.starts_with("child"))
        {
            match e.event.kind() {
                "startRun" => running += 1,
                "completeRun" | "stopRunByError" => running -= 1,
                _ => {}
            }
            max_running = max_running.max(running);
        }
    }
    assert_eq!(max_running, 1);
    engine.shutdown().await;
}

/// Lines are written in bursts and flushed once the bus is idle: every line of every finished
/// job reaches the sink's reader without a shutdown or an explicit flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_reaches_the_sink_reader_while_the_engine_keeps_running() {
    use tokio::io::AsyncBufReadExt;
    const JOBS: usize = 20;
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    let published = Arc::new(AtomicU64::new(0));
    let counted = published.clone();
    let engine = Engine::builder()
        .settings(settings())
        .model(Arc::new(
            ScriptedModel::parse(&fanout_script(JOBS), "s").unwrap(),
        ))
        .sink(Box::new(writer))
        .on_event(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let read = Arc::new(AtomicU64::new(0));
    let lines_read = read.clone();
    // The reader announces each line it read, so the test waits on that, not on a clock.
    let (announce, mut announced) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            serde_json::from_str::<serde_json::Value>(&line).unwrap();
            let n = lines_read.fetch_add(1, Ordering::SeqCst) + 1;
            announce.send_replace(n);
        }
    });
    let mut handles = Vec::new();
    for i in 0..JOBS {
        let req = JobRequest::new("coordinator", "go").job_id(format!("sink-{i}"));
        handles.push(engine.start(req).await.unwrap());
    }
    for h in handles {
        assert_eq!(h.wait().await.unwrap().job.status, JobStatus::Completed);
    }
    // No shutdown, no flush: the bus went idle, so everything written must be readable.
    let all_read = announced.wait_for(|&n| n >= published.load(Ordering::SeqCst));
    let _ = tokio::time::timeout(Duration::from_secs(10), all_read).await;
    assert_eq!(
        read.load(Ordering::SeqCst),
        published.load(Ordering::SeqCst),
        "lines stuck in the bus's buffer"
    );
    engine.shutdown().await;
    reader.await.unwrap();
}
