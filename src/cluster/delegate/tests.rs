use super::*;
use crate::agent::{Machine, MachineSetting};
use crate::cluster::message::{JobOptions, Placement, Rejection};
use crate::schema::{CheckpointStatus, DelegateTo, DelegatedBy, ExpertRef};
use crate::storage::{MemoryStorage, Storage};

fn job() -> JobMessage {
    let cfg = crate::config::parse(
        "[experts.\"p\"]\ninstruction = \"Delegate.\"\ndelegates = [\"c\"]\n[experts.\"c\"]\ndescription = \"child\"\ninstruction = \"Do.\"\n",
        std::path::Path::new("perstack.toml"),
    )
    .unwrap();
    JobMessage::new(
        "job.1".into(),
        "p".into(),
        "go".into(),
        cfg.experts,
        JobOptions {
            provider_name: "scripted".into(),
            model: "m".into(),
            reasoning_budget: Default::default(),
            max_steps: 10,
            max_retries: 1,
            timeout_ms: 1000,
            sandboxed: false,
            placement: Some(Placement::Cluster),
        },
    )
}

fn expert(key: &str) -> ExpertRef {
    ExpertRef {
        key: key.into(),
        name: key.into(),
        version: "1.0.0".into(),
    }
}

fn setting(expert_key: &str, run: &str) -> MachineSetting {
    MachineSetting {
        job_id: "job.1".into(),
        run_id: run.into(),
        expert: expert(expert_key),
        max_steps: 10,
        max_retries: 1,
        context_window: None,
    }
}

fn call(id: &str) -> DelegateTo {
    DelegateTo {
        expert: expert("c"),
        tool_call_id: id.into(),
        tool_name: "c".into(),
        query: format!("do {id}"),
    }
}

#[test]
fn a_child_message_is_checked_as_its_job_message_is() {
    let mut parent = Machine::fresh_checkpoint(&setting("p", "r1"), 1);
    parent.status = CheckpointStatus::StoppedByDelegate;
    let child = ChildMessage {
        version: VERSION,
        job: job(),
        parent_checkpoint_id: parent.id.clone(),
        slot: 1,
        calls: 2,
        checkpoint: Machine::fresh_checkpoint(&setting("c", "r2"), 2),
        query: Some("do it".into()),
        placed_by: "pid 1 on h".into(),
    };
    let bytes = serde_json::to_vec(&child).unwrap();
    let back: ChildMessage = decode(&bytes).unwrap();
    assert_eq!(back.id(), format!("job.1:{}:1", parent.id));
    assert_eq!(back.checkpoint, child.checkpoint);

    // An Expert altered on the way is refused, and the job's followers are told.
    let mut altered = child.clone();
    if let Some(e) = altered.job.experts.get_mut("c") {
        e.instruction = "Do something else.".into();
    }
    let (output, why) = decode::<ChildMessage>(&serde_json::to_vec(&altered).unwrap()).unwrap_err();
    assert!(matches!(why, Rejection::Digest(_)), "{why}");
    assert_eq!(output.unwrap().job_id, "job.1");

    // A version this worker does not know is refused, not guessed at.
    let mut later = child;
    later.version = VERSION + 1;
    let (_, why) = decode::<ChildMessage>(&serde_json::to_vec(&later).unwrap()).unwrap_err();
    assert_eq!(why, Rejection::Version(VERSION + 1));
}

#[test]
fn keys_are_one_token_per_id() {
    assert_eq!(join_key("job.1", "cp"), "job=1.cp.join");
    assert_eq!(result_key("job.1", "cp", 3), "job=1.cp.3");
}

#[tokio::test]
async fn only_the_delegate_calls_not_finished_are_placed() {
    let store = MemoryStorage::new();
    let mut parent = Machine::fresh_checkpoint(&setting("p", "r1"), 1);
    parent.status = CheckpointStatus::StoppedByDelegate;
    parent.delegate_to = Some(vec![call("a"), call("b"), call("c")]);
    store.store_checkpoint(&parent).await.unwrap();
    // The second call's child finished (imported by an earlier join attempt).
    let mut done = Machine::fresh_checkpoint(&setting("c", "r3"), 2);
    done.status = CheckpointStatus::Completed;
    done.delegated_by = Some(DelegatedBy {
        expert: expert("p"),
        tool_call_id: "b".into(),
        tool_name: "c".into(),
        checkpoint_id: parent.id.clone(),
        run_id: "r1".into(),
    });
    store.store_checkpoint(&done).await.unwrap();

    let planned = plan_children(&store, "job.1", 10, 1, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(planned.parent.id, parent.id);
    assert_eq!(planned.calls, 3);
    assert_eq!(planned.done, vec![1]);
    let placed: Vec<(usize, Option<String>)> = planned
        .children
        .iter()
        .map(|(slot, _, q)| (*slot, q.clone()))
        .collect();
    assert_eq!(
        placed,
        vec![(0, Some("do a".into())), (2, Some("do c".into()))]
    );
    for (_, cp, _) in &planned.children {
        let by = cp.delegated_by.as_ref().unwrap();
        assert_eq!(by.checkpoint_id, parent.id);
        assert_eq!(cp.step_number, 2);
    }

    // A job not waiting for children has nothing to place.
    let mut finished = parent.clone();
    finished.id = "later".into();
    finished.step_number = 3;
    finished.status = CheckpointStatus::Completed;
    store.store_checkpoint(&finished).await.unwrap();
    assert!(
        plan_children(&store, "job.1", 10, 1, None)
            .await
            .unwrap()
            .is_none()
    );
}
