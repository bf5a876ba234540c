//! Snapshots of each screen at 80x24 (golden files under tests/fixtures/tui/, rewritten with
//! `UPDATE_GOLDEN=1`), from real jobs on the scripted provider with stable timestamps.

use ratatui::style::Color;

use super::*;
use crate::schema::JobStatus;
use crate::tui::app::{Catalog, ExpertItem, JobItem, Phase, Tab};
use crate::tui::input::LineInput;
use crate::tui::testing;
use crate::tui::view_model::TEXT_CAP;

fn catalog() -> Catalog {
    Catalog {
        config: "tests/fixtures/tui/perstack.toml".into(),
        experts: vec![
            ExpertItem {
                key: "coordinator".into(),
                description: "Splits a task in two, asks the user, then merges the answers".into(),
                recent: true,
            },
            ExpertItem {
                key: "child-a".into(),
                description: "Handles the first half of a task".into(),
                recent: false,
            },
            ExpertItem {
                key: "child-b".into(),
                description: "Handles the second half of a task".into(),
                recent: false,
            },
        ],
        jobs: vec![JobItem {
            id: "k3v9x2m1q8".into(),
            expert: "coordinator".into(),
            status: "completed".into(),
            steps: 4,
            started_ms: 0,
        }],
    }
}

fn finished_app(job: &str, status: JobStatus) -> App {
    let mut app = App::new(catalog(), true);
    app.started(job.into(), "coordinator".into());
    app.finished(status);
    app
}

/// The last event's time plus one second: the "now" of a finished job's screen.
fn now(vm: &ViewModel) -> u64 {
    vm.runs
        .iter()
        .filter_map(|r| r.finished_ms)
        .max()
        .unwrap_or(0)
        + 1_000
}

#[test]
fn the_selection_screen_lists_experts_recent_first_with_details() {
    let app = App::new(catalog(), true);
    testing::golden(
        "select",
        &testing::render(&app, &ViewModel::default(), 80, 24, 0),
    );
}

#[test]
fn the_history_screen_lists_stored_jobs() {
    let mut app = App::new(catalog(), true);
    app.screen = Screen::Select(Tab::History);
    let screen = testing::render(&app, &ViewModel::default(), 80, 24, 0);
    assert!(screen.contains("Job history"), "{screen}");
    assert!(
        screen.contains("› k3v9x2m1 coordinator completed"),
        "{screen}"
    );
    assert!(screen.contains("Enter/c checkpoints"), "{screen}");
}

#[tokio::test]
async fn the_execution_view_of_a_completed_fan_out() {
    let engine = testing::engine("experts/fanout/perstack.toml", None);
    let events = testing::run(&engine, "job-fanout", "coordinator", "hello").await;
    let vm = testing::view_model(&events);
    let app = finished_app("job-fanout", JobStatus::Completed);
    testing::golden("execution", &testing::render(&app, &vm, 80, 24, now(&vm)));
    engine.shutdown().await;
}

#[tokio::test]
async fn the_execution_view_asks_the_pending_interactive_call() {
    let engine = testing::engine("tests/fixtures/tui/perstack.toml", None);
    let events = testing::run(&engine, "job-ask", "coordinator", "hello").await;
    let vm = testing::view_model(&events);
    let mut app = finished_app("job-ask", JobStatus::StoppedByInteractiveTool);
    app.selected_run = 3;
    if let Some((_, input)) = &mut app.input {
        for c in "yes".chars() {
            input.key(&crossterm::event::KeyEvent::from(
                crossterm::event::KeyCode::Char(c),
            ));
        }
    }
    testing::golden("interactive", &testing::render(&app, &vm, 80, 24, now(&vm)));
    engine.shutdown().await;
}

#[tokio::test]
async fn the_execution_view_while_children_run_shows_elapsed_time_from_the_injected_clock() {
    let engine = testing::engine("experts/fanout/perstack.toml", None);
    let events = testing::run(&engine, "job-live", "coordinator", "hello").await;
    // Up to child-a's attemptCompletion: both children are still running.
    let cut = events
        .iter()
        .position(|e| e.kind() == "attemptCompletion")
        .unwrap();
    let vm = testing::view_model(&events[..cut]);
    let mut app = App::new(catalog(), true);
    app.started("job-live".into(), "coordinator".into());
    let screen = testing::render(&app, &vm, 80, 24, 1_012_345);
    assert!(screen.contains("running"), "{screen}");
    let tree: Vec<String> = screen
        .lines()
        .map(|l| l.chars().take(44).collect())
        .collect();
    let running: Vec<&String> = tree
        .iter()
        .filter(|l| l.contains("child-") && l.contains('●'))
        .collect();
    assert!(!running.is_empty(), "{screen}");
    // Started at step 2's stable time (1_002_000 + 10 ms): 10.3 s before the injected now.
    for line in running {
        assert!(line.contains("run") && line.ends_with("10s│"), "{line}");
    }
    assert!(screen.contains("Ctrl-C cancel"), "{screen}");
    engine.shutdown().await;
}

#[tokio::test]
async fn fifty_parallel_children_with_long_outputs_fit_80x24_and_follow_the_selection() {
    let mut script = String::from("[[turns]]\nexpert = \"coordinator\"\ntoolCalls = [\n");
    for i in 0..50 {
        script.push_str(&format!(
            "  {{ id = \"c{i:02}\", name = \"worker\", args = {{ query = \"part {i:02}\" }} }},\n"
        ));
    }
    script.push_str("]\n");
    let long = "lorem ipsum ".repeat(2_000);
    for i in 0..50 {
        script.push_str(&format!(
            "[[turns]]\nexpert = \"worker\"\nquery = \"part {i:02}\"\ntext = \"{long}part {i:02} done\"\n"
        ));
    }
    script.push_str("[[turns]]\nexpert = \"coordinator\"\ntext = \"all fifty done\"\n");
    let engine = testing::engine("tests/fixtures/tui/fifty.toml", Some(&script));
    let events = testing::run(&engine, "job-fifty", "coordinator", "go").await;
    let vm = testing::view_model(&events);
    assert_eq!(vm.runs.len(), 52);
    assert!(vm.runs.iter().all(|r| r.result.as_str().len() <= TEXT_CAP));
    let children: Vec<String> = vm
        .tree()
        .into_iter()
        .filter(|(_, d)| *d == 1)
        .map(|(i, _)| vm.runs[i].query.clone().unwrap_or_default())
        .collect();
    let expected: Vec<String> = (0..50).map(|i| format!("part {i:02}")).collect();
    assert_eq!(children, expected, "delegation call order");
    let mut app = finished_app("job-fifty", JobStatus::Completed);
    app.follow = false;
    app.selected_run = 40;
    let screen = testing::render(&app, &vm, 80, 24, now(&vm));
    assert_eq!(screen.lines().count(), 24);
    assert!(screen.lines().all(|l| l.chars().count() <= 80));
    let selected = screen.lines().find(|l| l.contains('›')).unwrap_or_default();
    assert!(
        selected.contains("worker"),
        "the selected child is in view:\n{screen}"
    );
    assert!(
        screen.contains("part 39 done"),
        "its result's end is shown:\n{screen}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn without_colour_no_cell_has_a_colour_and_every_size_renders() {
    let engine = testing::engine("experts/fanout/perstack.toml", None);
    let events = testing::run(&engine, "job-plain", "coordinator", "hello").await;
    let vm = testing::view_model(&events);
    for color in [true, false] {
        let mut app = finished_app("job-plain", JobStatus::Completed);
        app.color = color;
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| draw(f, &app, &vm, now(&vm))).unwrap();
        let coloured = terminal
            .backend()
            .buffer()
            .content
            .iter()
            .any(|c| c.fg != Color::Reset || c.bg != Color::Reset);
        assert_eq!(coloured, color, "colour = {color}");
    }
    let app = finished_app("job-plain", JobStatus::Completed);
    for (w, h) in [(80, 24), (40, 10), (20, 5), (200, 60), (1, 1)] {
        let screen = testing::render(&app, &vm, w, h, now(&vm));
        assert_eq!(screen.lines().count(), h as usize);
    }
    engine.shutdown().await;
}

#[test]
fn the_input_line_keeps_the_end_of_a_long_answer_in_view() {
    let mut app = finished_app("j", JobStatus::StoppedByInteractiveTool);
    let mut input = LineInput::default();
    for c in "a".repeat(200).chars().chain("THE END".chars()) {
        input.key(&crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char(c),
        ));
    }
    app.input = Some((Purpose::Answer, input));
    app.phase = Phase::Finished(JobStatus::StoppedByInteractiveTool);
    let screen = testing::render(&app, &ViewModel::default(), 80, 24, 0);
    let line = screen.lines().find(|l| l.starts_with("answer › ")).unwrap();
    assert!(line.contains("THE END"), "{line}");
}

#[test]
fn wrapping_and_short_forms() {
    let mut out = Vec::new();
    wrap("one two three fourfivesix", 5, &mut out);
    assert_eq!(out, ["one", "two", "three", "fourf", "ivesi", "x"]);
    assert_eq!(tokens(950), "950");
    assert_eq!(tokens(12_345), "12.3k");
    assert_eq!(elapsed(400), "0.4s");
    assert_eq!(elapsed(125_000), "2m05s");
    assert_eq!(fit("abcdef", 4), "abc…");
}

#[tokio::test]
async fn the_selection_follows_the_newest_run_until_an_arrow_key_is_pressed() {
    let engine = testing::engine("experts/fanout/perstack.toml", None);
    let events = testing::run(&engine, "job-follow", "coordinator", "hello").await;
    let mut app = finished_app("job-follow", JobStatus::Completed);
    let cut = events
        .iter()
        .position(|e| e.kind() == "attemptCompletion")
        .unwrap();
    let vm = testing::view_model(&events[..cut]);
    let newest = vm.runs.len() - 1;
    assert_eq!(
        vm.tree()[app.selected(&vm)].0,
        newest,
        "follows the newest run"
    );
    let vm = testing::view_model(&events);
    assert_eq!(app.selected(&vm), 3, "the coordinator's last run");
    let up = crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Up);
    app.key(&up, &vm);
    assert!(!app.follow);
    assert_eq!(app.selected(&vm), 2);
    engine.shutdown().await;
}

#[tokio::test]
async fn e_shows_the_selected_runs_event_types() {
    let engine = testing::engine("experts/fanout/perstack.toml", None);
    let events = testing::run(&engine, "job-events", "coordinator", "hello").await;
    let vm = testing::view_model(&events);
    let mut app = finished_app("job-events", JobStatus::Completed);
    app.input = None;
    app.key(
        &crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Char('e')),
        &vm,
    );
    assert!(app.show_events);
    let screen = testing::render(&app, &vm, 80, 24, now(&vm));
    assert!(screen.contains("coordinator · events 4"), "{screen}");
    for kind in ["startRun", "finishAllToolCalls", "completeRun"] {
        assert!(screen.contains(kind), "{kind}:\n{screen}");
    }
    assert!(
        !screen.contains("streamRunResult"),
        "deltas are not listed:\n{screen}"
    );
    engine.shutdown().await;
}

#[test]
fn the_readme_shows_the_execution_snapshot() {
    let readme = std::fs::read_to_string(testing::root("README.md")).unwrap();
    let snapshot =
        std::fs::read_to_string(testing::root("tests/fixtures/tui/execution.txt")).unwrap();
    assert!(
        readme.contains(&format!("```text\n{snapshot}```")),
        "README.md's \"perstack start\" capture differs from tests/fixtures/tui/execution.txt"
    );
}

#[tokio::test]
async fn a_narrow_terminal_keeps_the_expert_names_and_drops_columns() {
    let engine = testing::engine("experts/fanout/perstack.toml", None);
    let events = testing::run(&engine, "job-narrow", "coordinator", "hello").await;
    let vm = testing::view_model(&events);
    let app = finished_app("job-narrow", JobStatus::Completed);
    let screen = testing::render(&app, &vm, 50, 14, now(&vm));
    for name in ["coordinator", "child-a", "child-b"] {
        assert!(screen.contains(name), "{name}:\n{screen}");
    }
    assert!(screen.contains("done  s2"), "{screen}");
    engine.shutdown().await;
}
