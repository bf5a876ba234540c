//! Delegation beyond the recorded runs: a failing child next to a succeeding sibling, a
//! three-level chain, the job-wide step limit reached inside a child, and the job record and
//! checkpoints a delegating job leaves in storage.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use perstack::schema::{
    CheckpointStatus, Event, EventPayload, JobStatus, Message, MessagePart, ToolResultPart,
};
use perstack::storage::{FsStorage, MemoryStorage, Storage};
use pretty_assertions::assert_eq;

use super::traces::{JobRun, per_expert, run_job, run_job_with, scenario_config, script, segments};

/// An Expert table with the base skill limited to `pick`.
fn expert(key: &str, delegates: &[&str], pick: &[&str]) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[experts."{key}"]
description = "Expert {key}"
instruction = "Do what you are asked."
delegates = [{}]

[experts."{key}".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = [{}]
"#,
        list(delegates),
        list(pick)
    )
}

/// The tool-result part answering `call_id` in `messages`.
fn tool_result<'a>(messages: &'a [Message], call_id: &str) -> &'a ToolResultPart {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::ToolMessage(b) => Some(b),
            _ => None,
        })
        .flat_map(|b| &b.contents)
        .find_map(|p| match p {
            MessagePart::ToolResultPart(r) if r.tool_call_id == call_id => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tool result for {call_id} in {messages:#?}"))
}

fn text_of(r: &ToolResultPart) -> String {
    r.contents
        .iter()
        .filter_map(MessagePart::as_text)
        .collect::<Vec<_>>()
        .join("")
}

fn trails(run: &JobRun) -> BTreeMap<String, Vec<Vec<String>>> {
    per_expert(&segments(&run.events), |s| s.trail.clone())
}

fn owned(v: &[&[&str]]) -> Vec<Vec<String>> {
    v.iter()
        .map(|s| s.iter().map(|x| x.to_string()).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_child_becomes_an_error_tool_result_and_its_sibling_and_parent_complete() {
    let config = format!(
        "{}{}{}",
        expert(
            "coord",
            &["helper-a", "@org/helper-b"],
            &["attemptCompletion"]
        ),
        expert("helper-a", &[], &["attemptCompletion"]),
        expert("@org/helper-b", &[], &["attemptCompletion"]),
    )
    .replace(
        "[experts.\"@org/helper-b\"]\n",
        "[experts.\"@org/helper-b\"]\nversion = \"2.0.0\"\n",
    );
    let script = r#"
        [[turns]]
        expert = "coord"
        toolCalls = [
          { id = "call_a", name = "helper-a", args = { query = "do A" } },
          { id = "call_b", name = "helper-b", args = { query = "do B" } },
        ]

        [[turns]]
        expert = "helper-a"
        text = "A result."

        [[turns]]
        expert = "@org/helper-b"
        error = { status = 400, message = "bad request" }

        [[turns]]
        expert = "coord"
        text = "Handled the failure."
    "#;
    let run = run_job(&config, script, "coord", "please do the thing").await;

    assert_eq!(run.outcome.job.status, JobStatus::Completed);
    assert_eq!(run.outcome.checkpoint.status, CheckpointStatus::Completed);
    assert_eq!(run.outcome.text.as_deref(), Some("Handled the failure."));
    assert_eq!(run.outcome.checkpoint.expert.key, "coord");

    let messages = &run.outcome.checkpoint.messages;
    let failed = text_of(tool_result(messages, "call_b"));
    assert!(
        failed.contains("@org/helper-b") && failed.contains("failed"),
        "failed child's tool result: {failed:?}"
    );
    assert!(
        failed.contains("stoppedByError") && failed.contains("bad request"),
        "the failed child's tool result should say how and why it stopped: {failed:?}"
    );
    assert_eq!(text_of(tool_result(messages, "call_a")), "A result.");

    assert_eq!(
        trails(&run),
        BTreeMap::from([
            (
                "coord".to_string(),
                owned(&[
                    &[
                        "startRun@1",
                        "startGeneration@1",
                        "callTools@1",
                        "callDelegate@1",
                        "stopRunByDelegate@1"
                    ],
                    &[
                        "startRun@3",
                        "finishAllToolCalls@3",
                        "continueToNextStep@3",
                        "startGeneration@4",
                        "completeRun@4"
                    ],
                ])
            ),
            (
                "helper-a".to_string(),
                owned(&[&["startRun@2", "startGeneration@2", "completeRun@2"]])
            ),
            (
                "@org/helper-b".to_string(),
                owned(&[&["startRun@2", "startGeneration@2", "stopRunByError@2"]])
            ),
        ])
    );
    let stop = run
        .events
        .iter()
        .find_map(|e| match &e.payload {
            EventPayload::StopRunByError(p) => Some(p),
            _ => None,
        })
        .unwrap();
    assert_eq!(stop.checkpoint.status, CheckpointStatus::StoppedByError);
    assert_eq!(stop.checkpoint.expert.key, "@org/helper-b");
    assert_eq!(stop.checkpoint.expert.version, "2.0.0");
    assert_eq!(stop.error.status_code, Some(400));
    assert_eq!(stop.error.message, "bad request");
    assert!(!stop.error.is_retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_level_chain_completes_from_the_innermost_expert_outwards() {
    let config = format!(
        "{}{}{}",
        expert("coord", &["level1"], &["attemptCompletion"]),
        expert("level1", &["level2"], &["attemptCompletion"]),
        expert("level2", &[], &["attemptCompletion"]),
    );
    let script = r#"
        [[turns]]
        expert = "coord"
        toolCalls = [{ id = "call_l1", name = "level1", args = { query = "go one level down" } }]

        [[turns]]
        expert = "level1"
        toolCalls = [{ id = "call_l2", name = "level2", args = { query = "go two levels down" } }]

        [[turns]]
        expert = "level2"
        text = "L2 done."

        [[turns]]
        expert = "level1"
        text = "L1 done."

        [[turns]]
        expert = "coord"
        text = "All done."
    "#;
    let run = run_job(&config, script, "coord", "start the chain").await;

    assert_eq!(run.outcome.job.status, JobStatus::Completed);
    assert_eq!(run.outcome.text.as_deref(), Some("All done."));

    let completes: Vec<(String, u32, String)> = run
        .events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::CompleteRun(p) => Some((
                e.expert_key.clone().unwrap(),
                e.step_number.unwrap(),
                p.text.clone(),
            )),
            _ => None,
        })
        .collect();
    // Each resumed parent uses one step for the delegation result, as in Perstack (REFERENCE
    // §2.2): level2 completes at 3, level1 resumes at 4 and completes at 5, coord at 6 and 7.
    assert_eq!(
        completes,
        [
            ("level2".to_string(), 3, "L2 done.".to_string()),
            ("level1".to_string(), 5, "L1 done.".to_string()),
            ("coord".to_string(), 7, "All done.".to_string()),
        ]
    );
    assert!(completes.windows(2).all(|w| w[0].1 < w[1].1));

    // Each level got its child's answer as the delegate call's tool result.
    assert_eq!(
        text_of(tool_result(&run.outcome.checkpoint.messages, "call_l1")),
        "L1 done."
    );
    let level1_final = run
        .events
        .iter()
        .filter(|e| e.expert_key.as_deref() == Some("level1"))
        .find_map(Event::checkpoint)
        .filter(|c| c.status == CheckpointStatus::StoppedByDelegate)
        .map(|c| c.step_number);
    assert_eq!(level1_final, Some(2), "level1 delegates at step 2");
    let level1_done = run
        .events
        .iter()
        .find_map(|e| match &e.payload {
            EventPayload::CompleteRun(p) if e.expert_key.as_deref() == Some("level1") => {
                Some(p.checkpoint.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(
        text_of(tool_result(&level1_done.messages, "call_l2")),
        "L2 done."
    );

    let t = trails(&run);
    assert_eq!(
        t["coord"].len(),
        2,
        "coord: delegating and resumed segments"
    );
    assert_eq!(
        t["level1"].len(),
        2,
        "level1: delegating and resumed segments"
    );
    assert_eq!(
        t["level2"],
        owned(&[&["startRun@3", "startGeneration@3", "completeRun@3"]])
    );
    assert_eq!(
        t["level1"][1],
        [
            "startRun@4",
            "finishAllToolCalls@4",
            "continueToNextStep@4",
            "startGeneration@5",
            "completeRun@5"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_step_limit_reached_inside_a_child_stops_the_child_and_then_the_parent() {
    let config = format!(
        "maxSteps = 3\n{}{}",
        expert("coord", &["helper-a"], &["attemptCompletion"]),
        expert("helper-a", &[], &["attemptCompletion", "healthCheck"]),
    );
    let script = r#"
        [[turns]]
        expert = "coord"
        toolCalls = [{ id = "call_a", name = "helper-a", args = { query = "do A" } }]

        [[turns]]
        expert = "helper-a"
        toolCalls = [{ id = "call_h1", name = "healthCheck" }]

        [[turns]]
        expert = "helper-a"
        toolCalls = [{ id = "call_h2", name = "healthCheck" }]

        # Never reached: the limit stops helper-a after step 3 and coord right after resuming.
        [[turns]]
        expert = "helper-a"
        text = "This turn must not be used."

        [[turns]]
        expert = "coord"
        text = "This turn must not be used."
    "#;
    let run = run_job(&config, script, "coord", "please do the thing").await;

    assert_eq!(run.outcome.job.status, JobStatus::StoppedByMaxSteps);
    assert_eq!(
        (
            run.outcome.checkpoint.status,
            run.outcome.checkpoint.step_number
        ),
        (CheckpointStatus::StoppedByExceededMaxSteps, 4)
    );
    assert_eq!(run.outcome.text, None);

    let t = trails(&run);
    assert_eq!(
        t["helper-a"],
        owned(&[&[
            "startRun@2",
            "startGeneration@2",
            "callTools@2",
            "resolveToolResults@2",
            "finishToolCall@2",
            "continueToNextStep@2",
            "startGeneration@3",
            "callTools@3",
            "resolveToolResults@3",
            "finishToolCall@3",
            "stopRunByExceededMaxSteps@3",
        ]])
    );
    assert_eq!(
        t["coord"],
        owned(&[
            &[
                "startRun@1",
                "startGeneration@1",
                "callTools@1",
                "callDelegate@1",
                "stopRunByDelegate@1"
            ],
            &[
                "startRun@4",
                "finishAllToolCalls@4",
                "stopRunByExceededMaxSteps@4"
            ],
        ])
    );
    let text = text_of(tool_result(&run.outcome.checkpoint.messages, "call_a"));
    assert!(
        text.contains("helper-a")
            && text.contains("failed")
            && text.contains("stoppedByExceededMaxSteps"),
        "the parent's tool result for the stopped child: {text:?}"
    );
}

/// The job record and the stored checkpoints of the recorded parallel-delegation scenario
/// (s05: four segments, helper-a taking two steps).
async fn job_record_and_checkpoints(storage: Arc<dyn Storage>) {
    let run = run_job_with(
        storage,
        &scenario_config("maxRetries = 0"),
        &script("s05-parallel-delegation"),
        "coord",
        "please do the thing",
    )
    .await;
    let final_cp = &run.outcome.checkpoint;
    assert_eq!(final_cp.status, CheckpointStatus::Completed);

    let job = run
        .storage
        .retrieve_job(&run.outcome.job.id)
        .await
        .unwrap()
        .expect("the job record is stored");
    assert_eq!(job, run.outcome.job, "stored and returned job records");
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.total_steps, final_cp.step_number);
    assert_eq!(job.total_steps, 5);
    assert_eq!(job.coordinator_expert_key, "coord");
    assert_eq!(job.max_steps, Some(100));
    assert_eq!(job.usage, final_cp.usage);
    assert!(job.finished_at.is_some_and(|f| f >= job.started_at));

    let stored = run.storage.checkpoints_by_job(&job.id).await.unwrap();
    let carried: Vec<_> = run.events.iter().filter_map(Event::checkpoint).collect();
    let key = |c: &perstack::schema::Checkpoint| {
        (
            c.run_id.clone(),
            c.step_number,
            c.status.as_str(),
            c.id.clone(),
        )
    };
    assert_eq!(
        stored.iter().map(key).collect::<BTreeSet<_>>(),
        carried.iter().map(|c| key(c)).collect::<BTreeSet<_>>(),
        "stored checkpoints are exactly those carried by events"
    );
    assert_eq!(stored.len(), carried.len(), "no checkpoint stored twice");
    assert!(
        stored
            .windows(2)
            .all(|w| w[0].step_number <= w[1].step_number),
        "checkpoints by ascending step"
    );
    // One checkpoint per step end of every run: each segment's stored steps are the steps its
    // state events cover, each once.
    for seg in segments(&run.events) {
        let steps: BTreeSet<u32> = seg
            .trail
            .iter()
            .map(|t| t.rsplit('@').next().unwrap().parse().unwrap())
            .collect();
        let mut stored_steps: Vec<u32> = stored
            .iter()
            .filter(|c| c.run_id == seg.run_id)
            .map(|c| c.step_number)
            .collect();
        stored_steps.sort_unstable();
        assert_eq!(
            stored_steps,
            steps.into_iter().collect::<Vec<_>>(),
            "{} run {}",
            seg.expert,
            seg.run_id
        );
    }
    assert_eq!(stored.len(), 6);
    assert_eq!(
        stored.last().map(|c| (c.id.as_str(), c.status)),
        Some((final_cp.id.as_str(), CheckpointStatus::Completed))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegating_job_stores_its_final_record_and_one_checkpoint_per_step_end_in_memory() {
    job_record_and_checkpoints(Arc::new(MemoryStorage::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegating_job_stores_its_final_record_and_one_checkpoint_per_step_end_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    job_record_and_checkpoints(Arc::new(FsStorage::new(dir.path().join("perstack")))).await;
}
