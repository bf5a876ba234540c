//! Unit tests of one turn's delegation bookkeeping, without actors.

use super::*;
use crate::schema::{Message, RunError};

fn expert(k: &str) -> ExpertRef {
    ExpertRef {
        key: k.into(),
        name: k.into(),
        version: "1.0.0".into(),
    }
}

fn call(id: &str, key: &str) -> DelegateTo {
    DelegateTo {
        expert: expert(key),
        tool_call_id: id.into(),
        tool_name: key.into(),
        query: format!("do {key}"),
    }
}

fn parent_setting() -> MachineSetting {
    MachineSetting {
        job_id: "job".into(),
        run_id: "run-coord".into(),
        expert: expert("coord"),
        max_steps: 100,
        max_retries: 5,
        context_window: Some(1000),
    }
}

fn parent(step: u32, calls: &[DelegateTo]) -> Checkpoint {
    let mut cp = Machine::fresh_checkpoint(&parent_setting(), step);
    cp.id = "cp-parent".into();
    cp.status = CheckpointStatus::StoppedByDelegate;
    cp.delegate_to = Some(calls.to_vec());
    cp
}

fn usage(input: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: 1,
        reasoning_tokens: 0,
        total_tokens: input + 1,
        cached_input_tokens: 0,
    }
}

/// A child's final checkpoint.
fn child(key: &str, step: u32, status: CheckpointStatus, input_tokens: u64) -> Checkpoint {
    let setting = MachineSetting {
        expert: expert(key),
        run_id: format!("run-{key}"),
        ..parent_setting()
    };
    let mut cp = Machine::fresh_checkpoint(&setting, step);
    cp.status = status;
    cp.usage = usage(input_tokens);
    if status == CheckpointStatus::Completed {
        cp.messages = vec![Message::expert(vec![MessagePart::text(format!(
            "{key} done"
        ))])];
    }
    cp
}

fn texts(r: &Resumed) -> Vec<String> {
    r.results.iter().map(ToolResult::text).collect()
}

#[test]
fn results_stay_in_call_order_whatever_order_the_children_report_in() {
    let calls = [call("ca", "a"), call("cb", "b"), call("cc", "c")];
    let mut d = Delegation::new(calls.to_vec(), &parent(2, &calls));
    let started: Vec<usize> = std::iter::from_fn(|| d.next_child(&parent_setting(), 16))
        .map(|c| c.slot)
        .collect();
    assert_eq!(started, [0, 1, 2]);
    assert_eq!(d.pending(), [0, 1, 2]);
    assert!(d.child_finished(
        2,
        &child("c", 7, CheckpointStatus::Completed, 30),
        Some("C".into())
    ));
    assert!(d.child_finished(
        0,
        &child("a", 4, CheckpointStatus::Completed, 10),
        Some("A".into())
    ));
    assert_eq!(d.pending(), [1]);
    assert!(!d.is_done());
    assert!(d.child_finished(
        1,
        &child("b", 5, CheckpointStatus::Completed, 20),
        Some("B".into())
    ));
    assert!(d.is_done());
    let r = d.into_resumed();
    assert_eq!(texts(&r), ["A", "B", "C"]);
    assert_eq!(
        r.results.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["ca", "cb", "cc"]
    );
    assert_eq!(r.results[1].skill_name, "delegate/b");
    assert_eq!(r.last_step, 7, "the highest step any child reached");
    assert_eq!(r.usage.input_tokens, 60, "the children's usage summed");
    assert_eq!(r.usage.total_tokens, 63);
    let answer = r.announced_answer().unwrap();
    assert_eq!(
        (answer.tool_call_id.as_str(), answer.text.as_str()),
        ("ca", "A")
    );
}

#[test]
fn children_start_at_most_max_parallel_at_a_time_and_the_rest_wait_for_a_place() {
    let calls = [call("ca", "a"), call("cb", "b"), call("cc", "c")];
    let mut d = Delegation::new(calls.to_vec(), &parent(3, &calls));
    let first = d.next_child(&parent_setting(), 1).unwrap();
    assert!(
        d.next_child(&parent_setting(), 1).is_none(),
        "one place only"
    );
    assert_eq!(first.slot, 0);
    assert_eq!(first.expert_key, "a");
    assert!(matches!(&first.start, Start::Query(q) if q == "do a"));
    let cp = &first.checkpoint;
    assert_eq!(cp.status, CheckpointStatus::Init);
    assert_eq!(
        cp.step_number, 4,
        "a child starts at the step after its parent's"
    );
    assert_eq!(cp.job_id, "job");
    assert_eq!(cp.context_window, Some(1000));
    let by = cp.delegated_by.as_ref().unwrap();
    assert_eq!(
        (
            by.checkpoint_id.as_str(),
            by.run_id.as_str(),
            by.tool_call_id.as_str()
        ),
        ("cp-parent", "run-coord", "ca")
    );
    d.child_finished(0, &child("a", 5, CheckpointStatus::Completed, 1), None);
    assert_eq!(d.next_child(&parent_setting(), 1).map(|c| c.slot), Some(1));
    assert!(d.next_child(&parent_setting(), 0).is_none(), "0 means 1");
}

#[test]
fn a_failed_or_crashed_child_becomes_an_error_result_naming_it_and_a_repeated_report_is_ignored() {
    let calls = [call("ca", "a"), call("cb", "b")];
    let mut d = Delegation::new(calls.to_vec(), &parent(1, &calls));
    while d.next_child(&parent_setting(), 16).is_some() {}
    let mut failed = child("a", 3, CheckpointStatus::StoppedByError, 5);
    failed.error = Some(RunError {
        name: "APICallError".into(),
        message: "Overloaded".into(),
        status_code: Some(529),
        is_retryable: true,
    });
    assert!(d.child_finished(0, &failed, None));
    assert!(!d.child_finished(
        0,
        &child("a", 9, CheckpointStatus::Completed, 99),
        Some("late".into())
    ));
    assert!(d.child_crashed(1, "panicked"));
    assert!(!d.child_crashed(1, "again"));
    assert!(!d.child_crashed(7, "not a slot"));
    let r = d.into_resumed();
    assert_eq!(
        texts(&r),
        [
            "Delegation to expert \"a\" failed: it stopped with status stoppedByError: APICallError: Overloaded",
            "Delegation to expert \"b\" failed: the run crashed (panicked)",
        ]
    );
    assert_eq!(r.last_step, 3, "the ignored late report counts for nothing");
    assert_eq!(r.usage.input_tokens, 5);
}

#[test]
fn a_turn_whose_delegate_calls_were_all_malformed_is_done_at_once() {
    let mut d = Delegation::new(Vec::new(), &parent(2, &[]));
    assert!(d.is_done());
    assert!(d.next_child(&parent_setting(), 4).is_none());
    let r = d.into_resumed();
    assert!(r.results.is_empty());
    assert_eq!(r.last_step, 2);
    assert!(r.announced_answer().is_none());
}

#[test]
fn a_recovered_delegation_counts_finished_children_and_restarts_only_the_others() {
    let calls = [
        call("ca", "a"),
        call("cb", "b"),
        call("cc", "c"),
        call("cd", "d"),
    ];
    let parent_cp = parent(1, &calls);
    let mut mid = child("b", 3, CheckpointStatus::Proceeding, 0);
    mid.id = "cp-b".into();
    let mut waiting = child("d", 2, CheckpointStatus::StoppedByDelegate, 0);
    waiting.id = "cp-d".into();
    let leaf = call("cl", "leaf");
    waiting.delegate_to = Some(vec![leaf.clone()]);
    let children = vec![
        (
            calls[0].clone(),
            Resumption::Done {
                checkpoint: child("a", 4, CheckpointStatus::Completed, 10),
            },
        ),
        (calls[1].clone(), Resumption::Continue { checkpoint: mid }),
        (
            calls[2].clone(),
            Resumption::Fresh {
                call: calls[2].clone(),
            },
        ),
        (
            calls[3].clone(),
            Resumption::AwaitChildren {
                checkpoint: waiting,
                children: vec![(leaf.clone(), Resumption::Fresh { call: leaf })],
            },
        ),
    ];
    let mut d = Delegation::recover(children, &parent_cp);
    assert_eq!(d.pending(), [1, 2, 3]);
    let b = d.next_child(&parent_setting(), 16).unwrap();
    assert_eq!(b.slot, 1);
    assert!(matches!(b.start, Start::Resume));
    assert_eq!(b.checkpoint.step_number, 4, "the step after the stored one");
    assert_ne!(b.checkpoint.id, "cp-b", "a new segment");
    let c = d.next_child(&parent_setting(), 16).unwrap();
    assert!(matches!(&c.start, Start::Query(q) if q == "do c"));
    let dd = d.next_child(&parent_setting(), 16).unwrap();
    assert_eq!(
        dd.checkpoint.id, "cp-d",
        "a waiting child keeps its checkpoint, new run id"
    );
    assert_ne!(dd.checkpoint.run_id, "run-d");
    let Start::AfterDelegation(inner) = &dd.start else {
        panic!("a child waiting for its own children resumes them")
    };
    assert_eq!(inner.pending(), [0]);
    assert!(d.next_child(&parent_setting(), 16).is_none());
    for slot in 1..4 {
        d.child_finished(
            slot,
            &child("x", 2, CheckpointStatus::Completed, 1),
            Some(format!("{slot}")),
        );
    }
    let r = d.into_resumed();
    assert_eq!(texts(&r), ["a done", "1", "2", "3"]);
    assert_eq!(
        r.usage.input_tokens, 13,
        "the finished child's usage counts once"
    );
}

#[test]
fn next_segment_gives_new_ids_and_the_next_step() {
    let cp = child("a", 3, CheckpointStatus::Proceeding, 0);
    let next = next_segment(cp.clone());
    assert_ne!(next.id, cp.id);
    assert_ne!(next.run_id, cp.run_id);
    assert_eq!(next.step_number, 4);
    assert_eq!(next.messages, cp.messages);
}

#[test]
fn the_final_text_is_the_first_text_of_a_completed_runs_last_expert_message() {
    assert_eq!(
        final_text(&child("a", 3, CheckpointStatus::Completed, 0)).as_deref(),
        Some("a done")
    );
    let mut stopped = child("a", 3, CheckpointStatus::Completed, 0);
    stopped.status = CheckpointStatus::StoppedByError;
    assert_eq!(final_text(&stopped), None);
}

/// A queued child is the size of a checkpoint (a `Resumption`): once every child started, the
/// parent, which waits for them, holds no queue.
#[test]
fn the_queue_is_freed_once_every_child_started() {
    let calls = [call("ca", "a"), call("cb", "b")];
    let mut d = Delegation::new(calls.to_vec(), &parent(3, &calls));
    assert!(d.queue.capacity() >= 2);
    assert_eq!(d.next_child(&parent_setting(), 2).map(|c| c.slot), Some(0));
    assert!(d.queue.capacity() >= 1, "one child still waits");
    assert_eq!(d.next_child(&parent_setting(), 2).map(|c| c.slot), Some(1));
    assert_eq!(d.queue.capacity(), 0);
    assert!(d.next_child(&parent_setting(), 2).is_none());
}
