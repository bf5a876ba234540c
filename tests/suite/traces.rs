//! The engine reproduces recorded Perstack runs: the same scripted model answers, run in-process,
//! give per run segment the same state-event sequence (`type@stepNumber`), the same stored
//! checkpoint statuses and the same final checkpoint as the recordings in
//! `tests/fixtures/perstack-traces/`.
//!
//! Every expectation is read from the recording, never hard-coded. Ids, timestamps, usage and
//! the instruction prompt are ignored; streaming and runtime events are left out because
//! Perstack emits runtime events per segment and this engine per real connection
//! (COMPATIBILITY.md). Parallel children interleave differently from run to run, so the
//! comparison is per segment: segments are the run ids in order of first appearance, matched to
//! the recording's in order per Expert key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use perstack::engine::{Engine, JobOutcome, JobRequest, Settings};
use perstack::llm::scripted::ScriptedModel;
use perstack::schema::{Checkpoint, Event, EventPayload, Message};
use perstack::storage::{MemoryStorage, Storage};
use pretty_assertions::assert_eq;

use super::common::STATE_KINDS;

/// Whether `e` is one of the 17 state events (not streaming, not runtime).
pub(super) fn is_state_event(e: &Event) -> bool {
    STATE_KINDS.contains(&e.kind())
}

/// A finished in-process job: its outcome, every event it published and its storage.
pub(super) struct JobRun {
    pub(super) outcome: JobOutcome,
    pub(super) events: Vec<Event>,
    pub(super) storage: Arc<dyn Storage>,
}

/// Parse `config_toml` (a perstack.toml text) and `script_toml`, run `query` on `coordinator`
/// through the engine with a memory storage, and collect the subscribed events.
pub(super) async fn run_job(
    config_toml: &str,
    script_toml: &str,
    coordinator: &str,
    query: &str,
) -> JobRun {
    run_job_with(
        Arc::new(MemoryStorage::new()),
        config_toml,
        script_toml,
        coordinator,
        query,
    )
    .await
}

/// [`run_job`] with the given storage.
pub(super) async fn run_job_with(
    storage: Arc<dyn Storage>,
    config_toml: &str,
    script_toml: &str,
    coordinator: &str,
    query: &str,
) -> JobRun {
    let config = perstack::config::parse(config_toml, Path::new("perstack.toml"))
        .unwrap_or_else(|e| panic!("invalid test configuration: {e}"));
    let model = ScriptedModel::parse(script_toml, "script.toml")
        .unwrap_or_else(|e| panic!("invalid test script: {e}"));
    let workspace = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(config.experts.clone());
    if let Some(n) = config.max_steps {
        settings.max_steps = n;
    }
    if let Some(n) = config.max_retries {
        settings.max_retries = n;
    }
    settings.workspace = workspace.path().to_path_buf();
    let engine = Engine::builder()
        .settings(settings)
        .model(Arc::new(model))
        .storage(storage.clone())
        .build();
    let mut handle = engine
        .start(JobRequest::new(coordinator, query).subscribe())
        .await
        .unwrap();
    let mut rx = handle.take_events().unwrap();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(s) = rx.recv().await {
            events.push(Arc::unwrap_or_clone(s.event));
        }
        events
    });
    let outcome = tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .expect("the job did not finish within 60 s")
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .expect("the event stream was not closed after the job ended")
        .unwrap();
    engine.shutdown().await;
    drop(workspace);
    JobRun {
        outcome,
        events,
        storage,
    }
}

/// The state events of one run id.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub(super) run_id: String,
    pub(super) expert: String,
    /// `type@stepNumber` of each state event.
    pub(super) trail: Vec<String>,
    /// `status@stepNumber` of each checkpoint carried by the segment's events.
    pub(super) checkpoints: Vec<String>,
    /// What the model did and got back, where a scripted run can reproduce it.
    pub(super) details: Vec<String>,
}

/// Group the state events by run id, in order of first appearance.
pub(super) fn segments<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for e in events.into_iter().filter(|e| is_state_event(e)) {
        let expert = e
            .expert_key
            .clone()
            .expect("state events have an expertKey");
        let step = e.step_number.expect("state events have a stepNumber");
        let i = match out.iter().position(|s| s.run_id == e.run_id) {
            Some(i) => i,
            None => {
                out.push(Segment {
                    run_id: e.run_id.clone(),
                    expert: expert.clone(),
                    trail: Vec::new(),
                    checkpoints: Vec::new(),
                    details: Vec::new(),
                });
                out.len() - 1
            }
        };
        let seg = &mut out[i];
        assert_eq!(seg.expert, expert, "one run id, two Experts: {}", e.run_id);
        seg.trail.push(format!("{}@{step}", e.kind()));
        if let Some(cp) = e.checkpoint() {
            assert_eq!(
                cp.run_id,
                e.run_id,
                "{} carries another run's checkpoint",
                e.kind()
            );
            seg.checkpoints
                .push(format!("{}@{}", cp.status.as_str(), cp.step_number));
        }
        if let Some(d) = detail(e) {
            seg.details.push(d);
        }
    }
    out
}

/// A comparable summary of what the model asked for and what it got back. Health-check results
/// (uptime, memory, pid) and usage differ between runs and are left out.
fn detail(e: &Event) -> Option<String> {
    let calls = |calls: &[perstack::schema::ToolCall]| {
        calls
            .iter()
            .map(|c| format!("{}/{}{}", c.skill_name, c.tool_name, c.args))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let result = |r: &perstack::schema::ToolResult| {
        if r.tool_name == "healthCheck" {
            format!("{}/{}", r.skill_name, r.tool_name)
        } else {
            format!("{}/{} -> {}", r.skill_name, r.tool_name, r.text())
        }
    };
    Some(match &e.payload {
        EventPayload::CallTools(p) => format!("callTools [{}]", calls(&p.tool_calls)),
        EventPayload::CallDelegate(p) => format!("callDelegate [{}]", calls(&p.tool_calls)),
        EventPayload::ResolveToolResults(p) => format!(
            "resolveToolResults [{}]",
            p.tool_results
                .iter()
                .map(result)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        EventPayload::AttemptCompletion(p) => {
            format!("attemptCompletion {}", result(&p.tool_result))
        }
        EventPayload::CompleteRun(p) => format!("completeRun {:?}", p.text),
        EventPayload::StopRunByError(p) => {
            format!("stopRunByError {}: {}", p.error.name, p.error.message)
        }
        _ => return None,
    })
}

/// `f(segment)` for each segment, grouped by Expert key in order.
pub(super) fn per_expert<T>(
    segs: &[Segment],
    f: impl Fn(&Segment) -> T,
) -> BTreeMap<String, Vec<T>> {
    let mut m: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for s in segs {
        m.entry(s.expert.clone()).or_default().push(f(s));
    }
    m
}

/// A recorded Perstack run.
struct Recording {
    dir: PathBuf,
    events: Vec<Event>,
    /// `stored-checkpoints.txt`: (run id, status@step), in file order.
    stored: Vec<(String, String)>,
    result: Checkpoint,
}

fn trace_dir(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/perstack-traces")
        .join(scenario)
}

pub(super) fn script(scenario: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scripts")
        .join(format!("{scenario}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Recording {
    fn load(scenario: &str) -> Recording {
        let dir = trace_dir(scenario);
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
        };
        let events = read("events.jsonl")
            .lines()
            .enumerate()
            .map(|(n, l)| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}/events.jsonl:{}: {e}", dir.display(), n + 1))
            })
            .collect();
        // Lines: `<id> step=<n> status=<status> run=<runId> expert=<key>`.
        let stored = read("stored-checkpoints.txt")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let field = |k: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .unwrap_or_else(|| panic!("no {k} in {l:?}"))
                        .to_string()
                };
                (
                    field("run="),
                    format!("{}@{}", field("status="), field("step=")),
                )
            })
            .collect();
        let result = serde_json::from_str(&read("result.json")).unwrap();
        Recording {
            dir,
            events,
            stored,
            result,
        }
    }

    /// The query of the first `initializeRuntime`, and its maxSteps and maxRetries.
    fn settings(&self) -> (String, Option<u32>, u32) {
        self.events
            .iter()
            .find_map(|e| match &e.payload {
                EventPayload::InitializeRuntime(i) => Some((
                    i.query.clone().expect("the first segment has a query"),
                    i.max_steps,
                    i.max_retries,
                )),
                _ => None,
            })
            .expect("the recording has an initializeRuntime event")
    }
}

/// Checkpoint statuses per segment, in segment order, from `(run id, status@step)` pairs.
fn stored_per_expert(
    segs: &[Segment],
    stored: &[(String, String)],
) -> BTreeMap<String, Vec<Vec<String>>> {
    for (run, _) in stored {
        assert!(
            segs.iter().any(|s| &s.run_id == run),
            "a checkpoint of run {run} was stored, but that run has no state events"
        );
    }
    per_expert(segs, |s| {
        stored
            .iter()
            .filter(|(run, _)| run == &s.run_id)
            .map(|(_, st)| st.clone())
            .collect()
    })
}

/// The perstack.toml of the recordings: `coord` delegates to `helper-a` and `@org/helper-b`
/// (version 2.0.0); everyone has the base skill. `top` holds top-level settings.
pub(super) fn scenario_config(top: &str) -> String {
    format!(
        r#"model = "claude-sonnet-4-5"
{top}

[experts."coord"]
description = "Coordinates the helpers"
instruction = "Do the thing, delegating to the helpers when useful."
delegates = ["helper-a", "@org/helper-b"]

[experts."coord".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"

[experts."helper-a"]
description = "Helper A"
instruction = "Do A."

[experts."helper-a".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion", "healthCheck"]

[experts."@org/helper-b"]
version = "2.0.0"
description = "Helper B"
instruction = "Do B."

[experts."@org/helper-b".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]
"#
    )
}

/// Run `scenario`'s script under a configuration with `top` settings and compare with the
/// recording.
async fn reproduce(scenario: &str, top: &str) {
    let rec = Recording::load(scenario);
    let config_text = scenario_config(top);
    let config = perstack::config::parse(&config_text, Path::new("perstack.toml")).unwrap();
    let (query, rec_max_steps, rec_max_retries) = rec.settings();
    // The configuration must set what the recorded run was started with.
    assert_eq!(
        (
            config.max_steps.unwrap_or(100),
            config.max_retries.unwrap_or(5)
        ),
        (rec_max_steps.unwrap_or(100), rec_max_retries),
        "{scenario}: maxSteps/maxRetries differ from the recording's initializeRuntime"
    );
    let run = run_job(
        &config_text,
        &script(scenario),
        &rec.result.expert.key,
        &query,
    )
    .await;

    let theirs = segments(&rec.events);
    let ours = segments(&run.events);
    assert!(!theirs.is_empty(), "{}: no state events", rec.dir.display());

    // 1. State events per segment.
    assert_eq!(
        per_expert(&ours, |s| s.trail.clone()),
        per_expert(&theirs, |s| s.trail.clone()),
        "{scenario}: state events (type@step) per segment differ"
    );

    // 2. What the model called and got back, and the result texts.
    assert_eq!(
        per_expert(&ours, |s| s.details.clone()),
        per_expert(&theirs, |s| s.details.clone()),
        "{scenario}: tool calls, tool results or result texts differ"
    );

    // 3. Stored checkpoints per segment: the recording's file agrees with its own events, and
    // ours (events and storage) agree with the recording's file.
    let rec_stored = stored_per_expert(&theirs, &rec.stored);
    assert_eq!(
        per_expert(&theirs, |s| s.checkpoints.clone()),
        rec_stored,
        "{scenario}: the recording's events disagree with its stored-checkpoints.txt"
    );
    assert_eq!(
        per_expert(&ours, |s| s.checkpoints.clone()),
        rec_stored,
        "{scenario}: checkpoints carried by our events differ from the recording's stored ones"
    );
    let our_stored: Vec<(String, String)> = run
        .storage
        .checkpoints_by_job(&run.outcome.job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                c.run_id.clone(),
                format!("{}@{}", c.status.as_str(), c.step_number),
            )
        })
        .collect();
    assert_eq!(
        our_stored.len(),
        rec.stored.len(),
        "{scenario}: number of stored checkpoints: {our_stored:?}"
    );
    assert_eq!(
        stored_per_expert(&ours, &our_stored),
        rec_stored,
        "{scenario}: stored checkpoints per segment differ"
    );

    // 4. The final checkpoint.
    let cp = &run.outcome.checkpoint;
    assert_eq!(
        (cp.status, cp.step_number, cp.expert.key.as_str()),
        (
            rec.result.status,
            rec.result.step_number,
            rec.result.expert.key.as_str()
        ),
        "{scenario}: final checkpoint status/step/expert"
    );
    assert_eq!(
        cp.run_id,
        ours.iter()
            .rev()
            .find(|s| s.expert == cp.expert.key)
            .unwrap()
            .run_id,
        "{scenario}: the final checkpoint belongs to the Expert's last segment"
    );
    // The result text is the last expert message's text, as in the recording.
    let last_text = |m: &[Message]| {
        m.iter()
            .rev()
            .find(|m| m.is_expert())
            .and_then(|m| m.first_text().map(str::to_string))
    };
    assert_eq!(
        last_text(&cp.messages),
        last_text(&rec.result.messages),
        "{scenario}: the final expert message's text"
    );
    assert_eq!(
        run.outcome.job.status,
        perstack::schema::JobStatus::from_checkpoint(rec.result.status),
        "{scenario}: job status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_completion_without_text_generates_the_run_result_as_recorded_in_s01() {
    reproduce("s01-attempt-completion", "maxRetries = 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_only_answer_completes_implicitly_as_recorded_in_s02() {
    reproduce("s02-text-only", "maxRetries = 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_calls_then_text_with_attempt_completion_complete_at_once_as_recorded_in_s03() {
    reproduce("s03-mcp-then-complete-with-text", "maxRetries = 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_delegation_runs_child_then_resumes_parent_in_a_new_segment_as_recorded_in_s04() {
    reproduce("s04-single-delegation", "maxRetries = 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_delegation_runs_both_children_then_resumes_parent_as_recorded_in_s05() {
    reproduce("s05-parallel-delegation", "maxRetries = 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_stops_after_the_third_step_with_max_steps_3_as_recorded_in_s09() {
    reproduce("s09-max-steps", "maxSteps = 3\nmaxRetries = 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_generations_retry_once_then_stop_by_error_with_max_retries_1_as_recorded_in_s10() {
    reproduce("s10-empty", "maxRetries = 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_completion_is_refused_while_todos_remain_as_recorded_in_s15() {
    reproduce("s15-todo", "maxRetries = 0").await;
}

#[test]
fn the_recording_parser_reads_the_expected_segments_of_s05() {
    // Guards the comparison itself: if the parser lost events, every reproduction would pass
    // vacuously.
    let rec = Recording::load("s05-parallel-delegation");
    let segs = segments(&rec.events);
    let experts: Vec<&str> = segs.iter().map(|s| s.expert.as_str()).collect();
    assert_eq!(experts, ["coord", "helper-a", "@org/helper-b", "coord"]);
    assert_eq!(
        segs[1].trail,
        [
            "startRun@2",
            "startGeneration@2",
            "callTools@2",
            "resolveToolResults@2",
            "finishToolCall@2",
            "continueToNextStep@2",
            "startGeneration@3",
            "completeRun@3"
        ]
    );
    assert_eq!(rec.stored.len(), 6);
    assert_eq!(
        segs[3].checkpoints,
        ["proceeding@4", "completed@5"],
        "coord's resumed segment"
    );
}
