//! Benchmarks of targets T3–T6 of `docs/PERFORMANCE.md`, in process, through the public API
//! (`Engine`, `JobRequest`, `Settings`, `ScriptedModel`, the `LanguageModel` trait, and the
//! public actors of `perstack::actor`). Every group ends with one summary line per target, and
//! all of them are printed again at the end.
//!
//! * T4, `bus/*`: the [`EventBus`] alone (spawned as the engine spawns it, storage discarded by
//!   [`NullStorage`]) fed a `callTools` event of the reference workload.
//!   - `bus/publish_one`: one producer, one `Publish` ask at a time, sink `tokio::io::sink()`;
//!   - then, without criterion: 1 and 16 producers into `tokio::io::sink()`; 16 producers into an
//!     OS pipe (`std::io::pipe`, written through `tokio::fs::File` like the CLI's stdout, read by
//!     a thread that counts lines) in events/s; and the same pipe with the reader stalled for
//!     [`STALL`] while 64 producers ask and one more tells without waiting: how many events the
//!     bus still takes, how RSS moves, and whether every event arrives once the reader resumes
//!     (bounded waits: it reports rather than hangs).
//! * T5 (a), `skill/*`: `healthCheck`, `todo` (one item) through a [`SkillActor`] of the
//!   in-process base skill (`ask(CallTool)`), `todo` on [`InProcessBase::call`] without the
//!   actor, and connecting a fresh in-process base skill.
//! * T5 and T6, `job/*`: whole jobs on one engine, one at a time, with a [`Probe`] model that
//!   wraps a fresh [`ScriptedModel`] per job and records when each generation is asked for
//!   (entry of `stream`) and when its `Finish` part is read. Criterion times the whole job; the
//!   probe's marks give:
//!   - T6: `engine.start(..)` → the first `stream` call, for `experts/single`'s `assistant`
//!     (only the base skill), without and with a `perstack.lock` (the base skill then starts
//!     on its first call);
//!   - T5 tool step: end of a generation asking for `todo` → the next generation (the whole
//!     step: `callTools`, the call through the skill actor, `resolveToolResults`, checkpoints);
//!   - T5 (b) delegate spawn: end of the coordinator's delegating generation in
//!     `experts/fanout` → the first and the second child's first generation; and the way back,
//!     the last child's final generation → the coordinator's next one.
//! * T3 (opt-in, `PERSTACK_BENCH_T3=1`; `PERSTACK_BENCH_T3_SESSIONS` overrides 10,000): that
//!   many concurrent fan-out jobs with a 50 ms model latency, each subscribed, nothing stored
//!   ([`NullStorage`]). Every model call first waits until all jobs have started, so all are
//!   live at once. Checks that all complete, that every job receives exactly the events of a
//!   reference job and that the engine-wide sequence has no gap; reports RSS per session once
//!   every coordinator waits on its first model call, and at the peak. The scripted
//!   provider's own `delayMs` cannot serve it: its turns are counted per Expert across jobs, so
//!   concurrent jobs would take each other's turns; the bench uses the stateless instant model
//!   of `examples/support/fanout.rs` behind a 50 ms `tokio::time::sleep`, which is what
//!   `delayMs` does.
//!
//! Percentiles are over every timed iteration, criterion's warm-up included. The probe adds a
//! mutex push per mark. Latencies measured on a shared 2-core machine vary; compare ratios.
//!
//! Run with `cargo bench --bench engine` (about a minute once built); `-- job/` runs one group;
//! `PERSTACK_BENCH_T3=1 cargo bench --bench engine -- t3` runs only T3 (no criterion group is
//! named `t3`).

// A benchmark should fail loudly, with a message, when the engine breaks.
#![allow(clippy::expect_used)]

/// The allocator the `perstack` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)] // the helpers are shared with benches/fanout.rs; this bench uses a few
#[path = "../examples/support/fanout.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use kameo::prelude::*;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use perstack::actor::context::JobContext;
use perstack::actor::event_bus::{BUS_MAILBOX, BusArgs, EventBus, Flush, Publish};
use perstack::actor::skill::{CallTool, SKILL_MAILBOX, SkillActor, SkillArgs, SkillKind};
use perstack::config::lockfile::Lockfile;
use perstack::engine::{Engine, JobRequest, Sequenced, Settings, Sink};
use perstack::llm::scripted::{Script, ScriptedModel};
use perstack::llm::{GenerationError, GenerationRequest, LanguageModel, PartStream, StreamPart};
use perstack::schema::{Checkpoint, Event, Job, JobStatus, RunSetting, id::new_id};
use perstack::skill::base::{BASE_SKILL_NAME, InProcessBase, connect_in_process};
use perstack::skill::{BaseSkill, ToolDefinition};
use perstack::storage::{EventMeta, MemoryStorage, Storage, StoreError};

use support::{FanoutModel, peak_rss, process_cpu, reset_peak_rss, status_kib};

/// How long the pipe reader stalls in the T4 back-pressure check.
const STALL: Duration = Duration::from_secs(1);
/// Events per producer-throughput measurement of T4.
const BUS_EVENTS: u64 = 200_000;
/// The model latency of T3.
const T3_LATENCY: Duration = Duration::from_millis(50);
/// The bound on every wait that could hang if the engine lost an event or a reply.
const GIVE_UP: Duration = Duration::from_secs(60);
/// The bound on all T3 jobs finishing.
const T3_GIVE_UP: Duration = Duration::from_secs(600);

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a multi-thread tokio runtime");
    let mut report = Vec::new();
    bench_bus(&mut c, &rt, &mut report);
    bench_skill(&mut c, &rt, &mut report);
    bench_jobs(&mut c, &rt, &mut report);
    if std::env::var_os("PERSTACK_BENCH_T3").is_some_and(|v| v != "0") {
        report.push(t3_sessions(&rt));
    }
    c.final_summary();
    if !report.is_empty() {
        println!("\nSummary ({} cores):", cores());
        for line in &report {
            println!("  {line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// T4: the event bus.

/// A `callTools` event of the reference workload, as Perstack prints it (as in
/// `benches/fanout.rs`).
const CALL_TOOLS: &str = r#"{"type":"callTools","id":"bwgiescld20w6p2hvmp669hi","expertKey":"coordinator","timestamp":1795729279647,"jobId":"kq2y1n5v0d7c3x8m4b6a9z1w","runId":"czh87xqx33fm5efnri0vp050","stepNumber":1,"newMessage":{"type":"expertMessage","contents":[{"type":"thinkingPart","id":"t0b3kq9v8x7c6n5m4l3k2j1h","thinking":"Two independent halves: delegate both at once."},{"type":"toolCallPart","toolCallId":"call_child_a","toolName":"child-a","args":{"query":"Do the first half"},"id":"e8b0m1gux6cyn6vy61zkbo9y"},{"type":"toolCallPart","toolCallId":"call_child_b","toolName":"child-b","args":{"query":"Do the second half"},"id":"i8juirdznq0pp7hukm4pgqfl"}],"id":"mux230rwscs9lw1ca55uasw9"},"toolCalls":[{"id":"call_child_a","skillName":"child-a","toolName":"child-a","args":{"query":"Do the first half"}},{"id":"call_child_b","skillName":"child-b","toolName":"child-b","args":{"query":"Do the second half"}}],"usage":{"inputTokens":120,"outputTokens":30,"reasoningTokens":0,"totalTokens":150,"cachedInputTokens":0}}"#;

/// A store that keeps nothing, so the bus benches measure the bus and its sink only.
struct NullStorage;

#[async_trait::async_trait]
impl Storage for NullStorage {
    async fn store_checkpoint(&self, _: &Checkpoint) -> Result<(), StoreError> {
        Ok(())
    }
    async fn retrieve_checkpoint(&self, job: &str, id: &str) -> Result<Checkpoint, StoreError> {
        MemoryStorage::new().retrieve_checkpoint(job, id).await
    }
    async fn checkpoints_by_job(&self, _: &str) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(Vec::new())
    }
    async fn store_event(&self, _: &Event) -> Result<(), StoreError> {
        Ok(())
    }
    async fn events_by_run(&self, _: &str, _: &str) -> Result<Vec<EventMeta>, StoreError> {
        Ok(Vec::new())
    }
    async fn event_contents(
        &self,
        _: &str,
        _: &str,
        _: Option<u32>,
    ) -> Result<Vec<Event>, StoreError> {
        Ok(Vec::new())
    }
    async fn store_job(&self, _: &Job) -> Result<(), StoreError> {
        Ok(())
    }
    async fn retrieve_job(&self, _: &str) -> Result<Option<Job>, StoreError> {
        Ok(None)
    }
    async fn all_jobs(&self) -> Result<Vec<Job>, StoreError> {
        Ok(Vec::new())
    }
    async fn store_run_setting(&self, _: &RunSetting) -> Result<(), StoreError> {
        Ok(())
    }
    async fn all_run_settings(&self) -> Result<Vec<RunSetting>, StoreError> {
        Ok(Vec::new())
    }
}

/// A bus as `EngineBuilder::build` spawns it, writing to `sink`. Call inside the runtime.
fn spawn_bus(sink: Option<Sink>, storage: Arc<dyn Storage>) -> ActorRef<EventBus> {
    EventBus::spawn_with_mailbox(
        BusArgs {
            sink,
            storage,
            callbacks: Vec::new(),
        },
        kameo::mailbox::bounded(BUS_MAILBOX),
    )
}

async fn stop_bus(bus: ActorRef<EventBus>) {
    let _ = bus.ask(Flush).await;
    let _ = bus.stop_gracefully().await;
    bus.wait_for_shutdown().await;
}

/// `producers` tasks publish `total` events between them, each waiting for every reply (as the
/// runs do); the time until all replies are in.
async fn publish_all(
    bus: &ActorRef<EventBus>,
    event: &Event,
    producers: u64,
    total: u64,
) -> Duration {
    let per = total / producers;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let bus = bus.clone();
            let event = event.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    bus.ask(Publish(event.clone()))
                        .await
                        .expect("the bus accepts the event");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a producer task");
    }
    t0.elapsed()
}

/// The reading end of an OS pipe, drained by a thread that counts lines and can be paused.
struct PipeDrain {
    paused: Arc<AtomicBool>,
    lines: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl PipeDrain {
    /// A pipe whose writing end is returned as a bus sink (through `tokio::fs::File`, which
    /// writes on the blocking pool as `tokio::io::stdout()` does).
    fn new() -> (Self, Sink) {
        let (mut reader, writer) = std::io::pipe().expect("an OS pipe");
        let paused = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(AtomicU64::new(0));
        let thread = {
            let (paused, lines) = (paused.clone(), lines.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    if paused.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let count = buf[..n].iter().filter(|&&b| b == b'\n').count();
                            lines.fetch_add(count as u64, Ordering::Release);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            })
        };
        let file = std::fs::File::from(OwnedFd::from(writer));
        let sink: Sink = Box::new(tokio::fs::File::from_std(file));
        (
            PipeDrain {
                paused,
                lines,
                thread,
            },
            sink,
        )
    }

    fn lines(&self) -> u64 {
        self.lines.load(Ordering::Acquire)
    }

    /// Wait (bounded) until the reader has seen `lines` lines; whether it did.
    async fn wait_for(&self, lines: u64) -> bool {
        let deadline = Instant::now() + GIVE_UP;
        while self.lines() < lines {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }
}

fn bench_bus(c: &mut Criterion, rt: &Runtime, report: &mut Vec<String>) {
    let event: Event = serde_json::from_str(CALL_TOOLS).expect("a valid callTools event");
    let line_len = serde_json::to_vec(&event).expect("serialisable").len() + 1;
    let storage: Arc<dyn Storage> = Arc::new(NullStorage);
    let bus = {
        let _guard = rt.enter();
        spawn_bus(Some(Box::new(tokio::io::sink())), storage.clone())
    };

    let mut ran = false;
    let mut group = c.benchmark_group("bus");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    group.bench_function("publish_one", |b| {
        ran = true;
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    bus.ask(Publish(event.clone()))
                        .await
                        .expect("the bus accepts the event");
                }
                t0.elapsed()
            })
        });
    });
    group.finish();
    if !ran {
        rt.block_on(stop_bus(bus));
        return;
    }

    let rate = |d: Duration, n: u64| n as f64 / d.as_secs_f64() / 1e6;
    let one = rt.block_on(publish_all(&bus, &event, 1, BUS_EVENTS));
    let many = rt.block_on(publish_all(&bus, &event, 16, BUS_EVENTS));
    rt.block_on(stop_bus(bus));
    let line = format!(
        "T4 event bus -> tokio::io::sink() ({line_len}-byte callTools line): {:.2} M events/s with 1 producer, {:.2} M events/s with 16 ({:.0} MB/s)",
        rate(one, BUS_EVENTS),
        rate(many, BUS_EVENTS),
        rate(many, BUS_EVENTS) * line_len as f64,
    );
    println!("{line}");
    report.push(line);

    // The same bus writing to an OS pipe.
    let (drain, sink) = PipeDrain::new();
    let bus = {
        let _guard = rt.enter();
        spawn_bus(Some(sink), storage)
    };
    let piped = rt.block_on(publish_all(&bus, &event, 16, BUS_EVENTS));
    let delivered = rt.block_on(drain.wait_for(BUS_EVENTS));
    let line = format!(
        "T4 event bus -> OS pipe via tokio::fs::File, reader draining: {:.2} M events/s with 16 producers ({:.0} MB/s){}",
        rate(piped, BUS_EVENTS),
        rate(piped, BUS_EVENTS) * line_len as f64,
        if delivered {
            ""
        } else {
            " -- NOT ALL LINES ARRIVED"
        },
    );
    println!("{line}");
    report.push(line);

    let line = rt.block_on(stalled_reader(&bus, &event, &drain, BUS_EVENTS));
    println!("{line}");
    report.push(line);
    rt.block_on(stop_bus(bus));
    let PipeDrain { thread, .. } = drain;
    // The bus dropped the pipe's writing end, so the reader sees end of file.
    let _ = thread.join();
}

/// Stall the pipe reader for [`STALL`] while 64 producers keep publishing and waiting for each
/// reply (as runs do) and one more tells without waiting (the worst case: only the bounded
/// mailbox stops it); report what the bus took and how RSS moved, then resume and check that
/// every event arrives.
async fn stalled_reader(
    bus: &ActorRef<EventBus>,
    event: &Event,
    drain: &PipeDrain,
    already: u64,
) -> String {
    const PRODUCERS: usize = 64;
    drain.paused.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let answered = Arc::new(AtomicU64::new(0));
    let told = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rss0 = status_kib("VmRSS").unwrap_or(0);
    let mut producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (bus, event) = (bus.clone(), event.clone());
            let (answered, stop) = (answered.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    bus.ask(Publish(event.clone()))
                        .await
                        .expect("the bus accepts the event");
                    answered.fetch_add(1, Ordering::AcqRel);
                }
            })
        })
        .collect();
    producers.push({
        let (bus, event) = (bus.clone(), event.clone());
        let (told, stop) = (told.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                bus.tell(Publish(event.clone()))
                    .await
                    .expect("the bus takes the event");
                told.fetch_add(1, Ordering::AcqRel);
            }
        })
    });
    let taken = || answered.load(Ordering::Acquire) + told.load(Ordering::Acquire);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (filled, replies, rss1) = (
        taken(),
        answered.load(Ordering::Acquire),
        status_kib("VmRSS").unwrap_or(0),
    );
    tokio::time::sleep(STALL).await;
    let (later, rss2) = (taken(), status_kib("VmRSS").unwrap_or(0));
    stop.store(true, Ordering::Release);
    drain.paused.store(false, Ordering::Release);
    let joined = tokio::time::timeout(GIVE_UP, futures::future::join_all(producers))
        .await
        .is_ok();
    let _ = bus.ask(Flush).await;
    let total = taken();
    let delivered = joined && drain.wait_for(already + total).await;
    format!(
        "T4 stalled pipe reader, 64 asking producers + 1 telling: the bus took {filled} events ({replies} answered, the rest queued in its {BUS_MAILBOX}-slot mailbox), then +{} over the next {:.1} s; RSS {:+} KiB while filling, {:+} KiB over the stall; after resuming, {}",
        later - filled,
        STALL.as_secs_f64(),
        i128::from(rss1) - i128::from(rss0),
        i128::from(rss2) - i128::from(rss1),
        if delivered {
            format!("all {total} events of the stall phase were read")
        } else {
            format!(
                "only {} of {total} events were read within {} s",
                drain.lines().saturating_sub(already),
                GIVE_UP.as_secs()
            )
        },
    )
}

// ---------------------------------------------------------------------------------------------
// T5 (a): the in-process base skill.

fn bench_skill(c: &mut Criterion, rt: &Runtime, report: &mut Vec<String>) {
    let settings = Arc::new(Settings::new(BTreeMap::new()));
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let (bus, skill, direct) = rt.block_on(async {
        let bus = spawn_bus(None, storage.clone());
        let ctx = Arc::new(JobContext {
            job_id: new_id(),
            settings: settings.clone(),
            model: Arc::new(ScriptedModel::new(Script::default())),
            bus: bus.clone(),
            cancel: CancellationToken::new(),
            storage,
        });
        let skill = SkillActor::spawn_with_mailbox(
            SkillArgs {
                ctx,
                run_id: new_id(),
                name: BASE_SKILL_NAME.into(),
                kind: SkillKind::Base,
                omit: Vec::new(),
                pick: Vec::new(),
                locked_tools: None,
            },
            kameo::mailbox::bounded(SKILL_MAILBOX),
        );
        skill
            .wait_for_startup_with_result(|r| r.map_err(|e| e.to_string()))
            .await
            .expect("the base skill starts");
        let direct = connect_in_process(BaseSkill::new(settings.workspace.clone()))
            .await
            .expect("the base skill connects");
        // One todo item in each, so every timed `todo` call returns the same one-item list.
        let add = json!({ "newTodos": ["measure"] });
        call_actor(&skill, "todo", add.clone()).await;
        direct.call("todo", add).await.expect("todo answers");
        (bus, skill, direct)
    });
    let todo_args = json!({ "completedTodos": [0] });

    let mut actor_todo = Vec::new();
    let mut actor_health = Vec::new();
    let mut direct_todo = Vec::new();
    let mut connect = Vec::new();
    let mut group = c.benchmark_group("skill");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("call_todo_actor", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(iters, &mut actor_todo, || {
                call_actor(&skill, "todo", todo_args.clone())
            }))
        });
    });
    group.bench_function("call_health_check_actor", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(iters, &mut actor_health, || {
                call_actor(&skill, "healthCheck", json!({}))
            }))
        });
    });
    group.bench_function("call_todo_in_process_base", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(iters, &mut direct_todo, || async {
                direct
                    .call("todo", todo_args.clone())
                    .await
                    .expect("todo answers");
            }))
        });
    });
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.bench_function("connect_base", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let skill = BaseSkill::new(settings.workspace.clone());
                    let t0 = Instant::now();
                    let conn: InProcessBase = connect_in_process(skill)
                        .await
                        .expect("the base skill connects");
                    let d = t0.elapsed();
                    total += d;
                    connect.push(d);
                    conn.close().await;
                }
                total
            })
        });
    });
    group.finish();
    rt.block_on(async {
        direct.close().await;
        let _ = skill.stop_gracefully().await;
        skill.wait_for_shutdown().await;
        stop_bus(bus).await;
    });

    for (label, samples) in [
        (
            "T5 base tool call, todo via SkillActor ask(CallTool)",
            actor_todo,
        ),
        (
            "T5 base tool call, healthCheck via SkillActor ask(CallTool)",
            actor_health,
        ),
        (
            "T5 base tool call, todo via InProcessBase::call (no actor)",
            direct_todo,
        ),
        (
            "T5 in-process base skill connect (connect_in_process)",
            connect,
        ),
    ] {
        if let Some(line) = percentiles(label, samples) {
            println!("{line}");
            report.push(line);
        }
    }
}

async fn call_actor(skill: &ActorRef<SkillActor>, tool: &str, args: Value) {
    let outcome = skill
        .ask(CallTool {
            name: tool.into(),
            args,
        })
        .await
        .expect("the skill actor answers");
    assert!(!outcome.is_error, "{tool} failed: {:?}", outcome.parts);
}

/// Run `op` `iters` times, one at a time, recording each duration; the total.
async fn timed<F, Fut>(iters: u64, samples: &mut Vec<Duration>, mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let t0 = Instant::now();
        op().await;
        let d = t0.elapsed();
        total += d;
        samples.push(d);
    }
    total
}

// ---------------------------------------------------------------------------------------------
// T5 and T6 through whole jobs.

/// What a [`Probe`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// `stream` was called.
    Called,
    /// The `Finish` part was read.
    Finished,
}

/// A model wrapper recording, per generation, when it was asked for and when its answer was
/// read to the end. The wrapped model is swapped per job (a [`ScriptedModel`] consumes turns).
struct Probe {
    inner: Mutex<Arc<dyn LanguageModel>>,
    marks: Arc<Mutex<Vec<(Instant, Mark, String)>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Probe {
    fn new() -> Self {
        Probe {
            inner: Mutex::new(Arc::new(ScriptedModel::new(Script::default()))),
            marks: Arc::default(),
        }
    }

    /// Play `model` next, with no marks.
    fn reset(&self, model: Arc<dyn LanguageModel>) {
        *lock(&self.inner) = model;
        lock(&self.marks).clear();
    }

    fn marks(&self) -> Vec<(Instant, Mark, String)> {
        lock(&self.marks).clone()
    }
}

#[async_trait::async_trait]
impl LanguageModel for Probe {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError> {
        let expert = request.expert_key.clone();
        lock(&self.marks).push((Instant::now(), Mark::Called, expert.clone()));
        let inner = lock(&self.inner).clone();
        let stream = inner.stream(request).await?;
        let marks = self.marks.clone();
        Ok(Box::pin(stream.inspect(move |part| {
            if matches!(part, Ok(StreamPart::Finish { .. })) {
                lock(&marks).push((Instant::now(), Mark::Finished, expert.clone()));
            }
        })))
    }
}

/// The `n`-th (from 0) mark of kind `what` by `expert`.
fn nth_mark(marks: &[(Instant, Mark, String)], expert: &str, what: Mark, n: usize) -> Instant {
    marks
        .iter()
        .filter(|(_, m, e)| *m == what && e == expert)
        .nth(n)
        .map(|(at, _, _)| *at)
        .unwrap_or_else(|| panic!("no {what:?} mark #{n} for {expert}: {marks:?}"))
}

/// The single-Expert tree's script: a `todo` step, `attemptCompletion`, the final answer.
const SINGLE_SCRIPT: &str = r#"
[[turns]]
expert = "assistant"
toolCalls = [{ id = "call_todo", name = "todo", args = { newTodos = ["measure"], completedTodos = [0] } }]

[[turns]]
expert = "assistant"
toolCalls = [{ id = "call_done", name = "attemptCompletion" }]

[[turns]]
expert = "assistant"
text = "Done."
"#;

fn experts_dir(tree: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experts")
        .join(tree)
}

/// Run one job of `expert` on `engine`, the probe playing `script` afresh; the instant just
/// before `engine.start`, the job's wall time and the probe's marks. Panics unless it completes.
async fn probed_job(
    engine: &Engine,
    probe: &Probe,
    script: &Script,
    expert: &str,
) -> (Instant, Duration, Vec<(Instant, Mark, String)>) {
    probe.reset(Arc::new(ScriptedModel::new(script.clone())));
    let t0 = Instant::now();
    let handle = engine
        .start(JobRequest::new(expert, "hello"))
        .await
        .expect("the engine starts the job");
    let outcome = handle.wait().await.expect("the job reports an outcome");
    let wall = t0.elapsed();
    assert_eq!(
        outcome.job.status,
        JobStatus::Completed,
        "the job did not complete: {:?}",
        outcome.checkpoint.error
    );
    (t0, wall, probe.marks())
}

fn bench_jobs(c: &mut Criterion, rt: &Runtime, report: &mut Vec<String>) {
    let single = perstack::config::load(&experts_dir("single").join("perstack.toml"))
        .expect("experts/single loads");
    let single_script: Script = toml::from_str(SINGLE_SCRIPT).expect("a valid script");
    let fanout_script: Script = toml::from_str(
        &std::fs::read_to_string(experts_dir("fanout").join("script.toml"))
            .expect("experts/fanout/script.toml"),
    )
    .expect("a valid script");
    let probe = Arc::new(Probe::new());

    // The same Experts with a lockfile listing the base skill's tools.
    let base_tools: Vec<ToolDefinition> = rt.block_on(async {
        let conn = connect_in_process(BaseSkill::new("."))
            .await
            .expect("the base skill connects");
        let tools = conn.tools().to_vec();
        conn.close().await;
        tools
    });
    let locked_settings = {
        let mut s = Settings::new(single.experts.clone());
        let tools = single
            .experts
            .keys()
            .map(|k| (k.clone(), base_tools.clone()))
            .collect();
        s.lockfile = Some(Arc::new(Lockfile::new(
            &experts_dir("single").join("perstack.toml"),
            &single.experts,
            tools,
            0,
        )));
        s
    };

    let engine_with = |settings: Settings| {
        let _guard = rt.enter();
        Engine::builder()
            .settings(settings)
            .model(probe.clone())
            .storage(Arc::new(MemoryStorage::new()))
            .build()
    };
    let single_engine = engine_with(Settings::new(single.experts));
    let locked_engine = engine_with(locked_settings);
    let fanout_engine = engine_with(support::settings());

    let mut first_call = Vec::new();
    let mut first_call_locked = Vec::new();
    let mut tool_step = Vec::new();
    let mut spawn_first = Vec::new();
    let mut spawn_second = Vec::new();
    let mut back = Vec::new();
    let mut group = c.benchmark_group("job");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    group.bench_function("single_base_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (t0, wall, marks) = rt.block_on(probed_job(
                    &single_engine,
                    &probe,
                    &single_script,
                    "assistant",
                ));
                total += wall;
                first_call.push(nth_mark(&marks, "assistant", Mark::Called, 0) - t0);
                tool_step.push(
                    nth_mark(&marks, "assistant", Mark::Called, 1)
                        - nth_mark(&marks, "assistant", Mark::Finished, 0),
                );
            }
            total
        });
    });
    group.bench_function("single_base_only_locked", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (t0, wall, marks) = rt.block_on(probed_job(
                    &locked_engine,
                    &probe,
                    &single_script,
                    "assistant",
                ));
                total += wall;
                first_call_locked.push(nth_mark(&marks, "assistant", Mark::Called, 0) - t0);
            }
            total
        });
    });
    group.bench_function("fanout", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (_, wall, marks) = rt.block_on(probed_job(
                    &fanout_engine,
                    &probe,
                    &fanout_script,
                    support::COORDINATOR,
                ));
                total += wall;
                let delegated = nth_mark(&marks, support::COORDINATOR, Mark::Finished, 0);
                let a = nth_mark(&marks, "child-a", Mark::Called, 0);
                let b = nth_mark(&marks, "child-b", Mark::Called, 0);
                spawn_first.push(a.min(b) - delegated);
                spawn_second.push(a.max(b) - delegated);
                let done = nth_mark(&marks, "child-a", Mark::Finished, 1).max(nth_mark(
                    &marks,
                    "child-b",
                    Mark::Finished,
                    1,
                ));
                back.push(nth_mark(&marks, support::COORDINATOR, Mark::Called, 1) - done);
            }
            total
        });
    });
    group.finish();
    rt.block_on(async {
        single_engine.shutdown().await;
        locked_engine.shutdown().await;
        fanout_engine.shutdown().await;
    });

    for (label, samples) in [
        (
            "T6 time to first model call, base skill only (engine.start -> stream)",
            first_call,
        ),
        (
            "T6 time to first model call, base skill only, with perstack.lock",
            first_call_locked,
        ),
        (
            "T5 base tool step in a job, todo (generation end -> next generation)",
            tool_step,
        ),
        (
            "T5 delegate spawn, first child (coordinator's delegating generation end -> child's first model call)",
            spawn_first,
        ),
        (
            "T5 delegate spawn, second child of the same turn",
            spawn_second,
        ),
        (
            "T5 delegation return (last child's final generation end -> coordinator's next model call)",
            back,
        ),
    ] {
        if let Some(line) = percentiles(label, samples) {
            println!("{line}");
            report.push(line);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// T3: many concurrent sessions with a slow model.

/// A model that waits before answering, as a real provider's latency (the scripted provider's
/// `delayMs` is the same `tokio::time::sleep`), and first until `gate` opens: T3 closes it while
/// it starts the jobs, so that all of them are live at once.
struct Delayed {
    inner: Arc<dyn LanguageModel>,
    delay: Duration,
    gate: watch::Receiver<bool>,
    /// Calls that reached the gate (while it is closed, only each coordinator's first).
    arrived: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl LanguageModel for Delayed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError> {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        tokio::time::sleep(self.delay).await;
        self.inner.stream(request).await
    }
}

/// The engine-wide sequence as the bus hands it to callbacks: every number once, in order.
#[derive(Default)]
struct SeqCheck {
    last: u64,
    gaps: u64,
}

/// What one T3 round saw.
struct Round {
    /// Events received by each job's subscriber.
    counts: Vec<usize>,
    /// RSS (KiB) once every job had started, before the first model call answered.
    rss_started: u64,
    /// From the first start to the last outcome.
    wall: Duration,
}

fn t3_sessions(rt: &Runtime) -> String {
    let n: usize = std::env::var("PERSTACK_BENCH_T3_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seq = Arc::new(Mutex::new(SeqCheck::default()));
    let (gate_tx, gate_rx) = watch::channel(true);
    let arrived = Arc::new(AtomicU64::new(0));
    let gate = Gate {
        open: gate_tx,
        arrived: arrived.clone(),
    };
    let engine = {
        let _guard = rt.enter();
        let seq = seq.clone();
        Engine::builder()
            .settings(support::settings())
            .model(Arc::new(Delayed {
                inner: Arc::new(FanoutModel),
                delay: T3_LATENCY,
                gate: gate_rx,
                arrived,
            }))
            // Nothing stored: the memory measured is the live sessions', not the store's copy
            // of their checkpoints and events.
            .storage(Arc::new(NullStorage))
            .on_event(move |e: &Sequenced| {
                let mut s = lock(&seq);
                if e.seq != s.last + 1 {
                    s.gaps += 1;
                }
                s.last = e.seq;
            })
            .build()
    };

    // One job alone gives the number of events every job must deliver.
    let expected = rt.block_on(subscribed_jobs(&engine, &gate, 1)).counts[0];

    let reset = reset_peak_rss();
    let rss0 = status_kib("VmRSS").unwrap_or(0);
    let cpu0 = process_cpu();
    let round = rt.block_on(subscribed_jobs(&engine, &gate, n));
    let cpu = process_cpu().saturating_sub(cpu0);
    let peak = status_kib("VmHWM").unwrap_or(0);
    rt.block_on(engine.shutdown());

    let short = round.counts.iter().filter(|&&c| c != expected).count();
    let s = lock(&seq);
    let kib_per = |kib: u64| kib as f64 / n as f64;
    let line = format!(
        "T3 {n} concurrent fan-out sessions, {} ms per model call: all completed in {:.2} s wall, {:.2} ms CPU/job; {short} of {n} jobs with other than {expected} events, {} sequence gaps in {} events; RSS {:.1} KiB per session once every coordinator waited on its first model call, peak {:.1} KiB per session (peak RSS {}, {:.1} MiB before){}",
        T3_LATENCY.as_millis(),
        round.wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / n as f64,
        s.gaps,
        s.last,
        kib_per(round.rss_started.saturating_sub(rss0)),
        kib_per(peak.saturating_sub(rss0)),
        peak_rss(),
        rss0 as f64 / 1024.0,
        if reset {
            ""
        } else {
            " (process peak, not reset)"
        },
    );
    println!("{line}");
    line
}

/// The gate of [`Delayed`], from the bench's side.
struct Gate {
    open: watch::Sender<bool>,
    arrived: Arc<AtomicU64>,
}

/// Start `n` subscribed fan-out jobs with the gate closed, wait until each one's coordinator
/// is at its first model call, then open it. Panics unless every job completes within
/// [`T3_GIVE_UP`].
async fn subscribed_jobs(engine: &Engine, gate: &Gate, n: usize) -> Round {
    gate.open.send_replace(false);
    gate.arrived.store(0, Ordering::Release);
    let t0 = Instant::now();
    let mut jobs = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut handle = engine
            .start(JobRequest::new(support::COORDINATOR, "hello").subscribe())
            .await
            .expect("the engine starts the job");
        let mut events = handle.take_events().expect("subscribed");
        readers.push(tokio::spawn(async move {
            let mut count = 0;
            while events.recv().await.is_some() {
                count += 1;
            }
            count
        }));
        jobs.push(handle.wait());
    }
    let deadline = Instant::now() + T3_GIVE_UP;
    while gate.arrived.load(Ordering::Acquire) < n as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} coordinators reached their first model call",
            gate.arrived.load(Ordering::Acquire)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rss_started = status_kib("VmRSS").unwrap_or(0);
    gate.open.send_replace(true);
    let outcomes = tokio::time::timeout(T3_GIVE_UP, futures::future::join_all(jobs))
        .await
        .expect("every job ends within the time limit");
    let wall = t0.elapsed();
    for outcome in outcomes {
        let o = outcome.expect("the job reports an outcome");
        assert_eq!(
            o.job.status,
            JobStatus::Completed,
            "a job did not complete: {:?}",
            o.checkpoint.error
        );
    }
    let mut counts = Vec::with_capacity(n);
    for r in readers {
        let count = tokio::time::timeout(GIVE_UP, r)
            .await
            .expect("the event stream ends after the job")
            .expect("a reader task");
        counts.push(count);
    }
    Round {
        counts,
        rss_started,
        wall,
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting.

/// `label: p50 .. µs, p99 .. µs, max .. µs (n=..)`, or `None` when nothing was measured (the
/// bench was filtered out).
fn percentiles(label: &str, mut samples: Vec<Duration>) -> Option<String> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Some(format!(
        "{label}: p50 {} µs, p99 {} µs, max {} µs (n={})",
        micros(at(0.5)),
        micros(at(0.99)),
        micros(at(1.0)),
        samples.len()
    ))
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
