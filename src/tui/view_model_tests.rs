use super::*;
use crate::engine::ContinueInput;
use crate::tui::testing;

fn shape(vm: &ViewModel) -> Vec<String> {
    vm.tree()
        .into_iter()
        .map(|(i, depth)| {
            let r = &vm.runs[i];
            format!(
                "{}{} {} s{}",
                "  ".repeat(depth),
                r.expert_key,
                r.status.label(),
                r.step
            )
        })
        .collect()
}

#[tokio::test]
async fn a_fan_out_becomes_a_tree_with_children_under_the_delegating_run() {
    let engine = testing::engine("experts/fanout/perstack.toml", None);
    let events = testing::run(&engine, "j", "coordinator", "hello").await;
    let vm = testing::view_model(&events);
    assert_eq!(
        shape(&vm),
        [
            "coordinator wait s1",
            "  child-a done s2",
            "  child-b done s2",
            "coordinator done s4",
        ]
    );
    assert_eq!(vm.job_id.as_deref(), Some("j"));
    assert_eq!(vm.settings.model, "claude-sonnet-4-5");
    assert_eq!(vm.settings.max_steps, Some(100));
    // 120+30, 80+10+90+8 twice, 200+10+220+20: every generation counted once.
    assert_eq!(
        vm.usage.input_tokens + vm.usage.output_tokens,
        150 + 188 * 2 + 450
    );
    let coordinator = &vm.runs[vm.tree()[0].0];
    assert_eq!(coordinator.query.as_deref(), Some("hello"));
    assert!(
        coordinator
            .reasoning
            .as_str()
            .starts_with("Two independent halves")
    );
    let results: Vec<_> = coordinator.tools.iter().map(|t| t.result.clone()).collect();
    assert_eq!(
        results,
        [
            Some("First half done.".into()),
            Some("Second half done.".into())
        ],
        "each delegate call shows its child's result"
    );
    assert_eq!(vm.running(), 0);
    engine.shutdown().await;
}

#[tokio::test]
async fn children_are_ordered_by_delegation_call_order_whatever_order_they_start_in() {
    let engine = testing::engine("experts/fanout/perstack.toml", None);
    let mut events = testing::run(&engine, "j", "coordinator", "hello").await;
    // child-b's events first: as if it had started before child-a.
    events.sort_by_key(|e| e.expert_key.as_deref() != Some("child-b"));
    let coordinator_first: Vec<Event> = events
        .iter()
        .filter(|e| e.expert_key.as_deref() == Some("coordinator") && e.step_number == Some(1))
        .cloned()
        .collect();
    let rest = events
        .iter()
        .filter(|e| !(e.expert_key.as_deref() == Some("coordinator") && e.step_number == Some(1)))
        .cloned();
    let reordered: Vec<Event> = coordinator_first.into_iter().chain(rest).collect();
    let vm = testing::view_model(&reordered);
    let children: Vec<_> = vm
        .tree()
        .into_iter()
        .filter(|(_, d)| *d == 1)
        .map(|(i, _)| vm.runs[i].expert_key.clone())
        .collect();
    assert_eq!(children, ["child-a", "child-b"]);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_interactive_stop_is_pending_until_the_answer_starts_a_new_run() {
    let engine = testing::engine("tests/fixtures/tui/perstack.toml", None);
    let mut events = testing::run(&engine, "j", "coordinator", "hello").await;
    let mut vm = testing::view_model(&events);
    let pending = vm.pending.clone().expect("pending call");
    assert_eq!(pending.tool_name, "askUser");
    assert_eq!(pending.expert_key, "coordinator");
    assert!(pending.args.contains("Merge both halves?"));
    assert_eq!(vm.runs[vm.tree()[3].0].status, RunStatus::WaitingForUser);
    let answer = pending.answer("yes");
    let more =
        testing::continue_with(&engine, "j", "coordinator", ContinueInput::Answer(answer)).await;
    for e in &more {
        vm.apply(e);
    }
    events.extend(more);
    assert!(vm.pending.is_none());
    assert_eq!(
        shape(&vm).last().map(String::as_str),
        Some("coordinator done s6")
    );
    engine.shutdown().await;
}

#[test]
fn capped_text_keeps_the_tail_at_a_character_boundary() {
    let mut t = CappedText::default();
    for _ in 0..TEXT_CAP {
        t.push("é");
    }
    t.push("end");
    assert!(t.as_str().len() <= TEXT_CAP);
    assert!(t.as_str().ends_with("éend"));
    t.set("short");
    assert_eq!(t.as_str(), "short");
}

#[test]
fn summaries_are_one_line_and_bounded() {
    let long = "x\n".repeat(1000);
    let s = shorten(&long);
    assert!(!s.contains('\n'));
    assert_eq!(s.chars().count(), 300);
    assert!(s.ends_with('…'));
}
