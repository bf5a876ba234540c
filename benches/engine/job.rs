//! T5 and T6, `job/*`: whole jobs on one engine, one at a time, with a [`Probe`] model that
//! wraps a fresh [`ScriptedModel`] per job and records when each generation is asked for (entry
//! of `stream`) and when its `Finish` part is read. Criterion times the whole job; the probe's
//! marks give:
//!
//! - T6: `engine.start(..)` → the first `stream` call, for `experts/single`'s `assistant` (only
//!   the base skill), without and with a `perstack.lock` (the base skill then starts on its first
//!   call);
//! - T5 tool step: end of a generation asking for `todo` → the next generation (the whole step:
//!   `callTools`, the call to the in-process base skill, `resolveToolResults`, checkpoints);
//! - T5 (b) delegate spawn: end of the coordinator's delegating generation in `experts/fanout` →
//!   the first and the second child's first generation; and the way back, the last child's final
//!   generation → the coordinator's next one.
//!
//! The probe adds a mutex push per mark.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use tokio::runtime::Runtime;

use perstack::config::lockfile::{LOCKFILE_NAME, Lockfile};
use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::scripted::{Script, ScriptedModel};
use perstack::llm::{GenerationError, GenerationRequest, LanguageModel, PartStream, StreamPart};
use perstack::schema::JobStatus;
use perstack::storage::MemoryStorage;

use crate::{lock, percentiles, support};

/// What a [`Probe`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// `stream` was called.
    Called,
    /// The `Finish` part was read.
    Finished,
}

/// A model wrapper recording, per generation, when it was asked for and when its answer was
/// read to the end. The wrapped model is swapped per job (a [`ScriptedModel`] consumes turns).
pub(crate) struct Probe {
    inner: Mutex<Arc<dyn LanguageModel>>,
    marks: Arc<Mutex<Vec<(Instant, Mark, String)>>>,
}

impl Probe {
    pub(crate) fn new() -> Self {
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
pub(crate) fn nth_mark(
    marks: &[(Instant, Mark, String)],
    expert: &str,
    what: Mark,
    n: usize,
) -> Instant {
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

pub(crate) fn experts_dir(tree: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experts")
        .join(tree)
}

/// Run one job of `expert` on `engine`, the probe playing `script` afresh; the instant just
/// before `engine.start`, the job's wall time and the probe's marks. Panics unless it completes.
pub(crate) async fn probed_job(
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

pub(crate) fn bench_jobs(c: &mut Criterion, rt: &Runtime, report: &mut Vec<String>) {
    let single = perstack::config::load(&experts_dir("single").join("perstack.toml"))
        .expect("experts/single loads");
    let single_script: Script = toml::from_str(SINGLE_SCRIPT).expect("a valid script");
    let fanout_script: Script = toml::from_str(
        &std::fs::read_to_string(experts_dir("fanout").join("script.toml"))
            .expect("experts/fanout/script.toml"),
    )
    .expect("a valid script");
    let probe = Arc::new(Probe::new());

    // The same Experts with the lockfile `perstack install` writes (the base skill's tools).
    let locked_settings = {
        let mut s = Settings::new(single.experts.clone());
        s.lockfile = Some(Arc::new(installed_lockfile("single")));
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

/// `perstack install` on a copy of `experts/<tree>/perstack.toml`, read back.
fn installed_lockfile(tree: &str) -> Lockfile {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("perstack.toml");
    std::fs::copy(experts_dir(tree).join("perstack.toml"), &config).expect("copy perstack.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_perstack"))
        .args(["install", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .expect("run perstack install");
    assert!(
        out.status.success(),
        "perstack install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Lockfile::load(&dir.path().join(LOCKFILE_NAME)).expect("the written lockfile loads")
}
