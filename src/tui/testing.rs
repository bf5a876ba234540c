//! Test helpers of the workbench: real jobs on the scripted provider, their events collected
//! and their timestamps made stable, and screens rendered to text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::App;
use super::view_model::ViewModel;
use crate::engine::{ContinueInput, ContinueRequest, Engine, JobRequest, Settings};
use crate::llm::scripted::ScriptedModel;
use crate::schema::Event;
use crate::storage::MemoryStorage;

/// `path` under the crate root.
pub(crate) fn root(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// An engine for the tree at `config` (a perstack.toml path under the crate root), with
/// `script` (default: the tree's script.toml).
pub(crate) fn engine(config: &str, script: Option<&str>) -> Engine {
    let cfg = crate::config::load(&root(config)).unwrap();
    let model = match script {
        Some(text) => ScriptedModel::parse(text, "inline.toml").unwrap(),
        None => ScriptedModel::load(&cfg.resolve_relative("script.toml")).unwrap(),
    };
    Engine::builder()
        .settings(Settings::new(cfg.experts))
        .model(Arc::new(model))
        .storage(Arc::new(MemoryStorage::new()))
        .build()
}

/// Run a job of `expert` with `query` as `job_id` and return its events in order.
pub(crate) async fn run(engine: &Engine, job_id: &str, expert: &str, query: &str) -> Vec<Event> {
    let request = JobRequest {
        buffer: 100_000,
        ..JobRequest::new(expert, query).job_id(job_id).subscribe()
    };
    let mut handle = engine.start(request).await.unwrap();
    collect(&mut handle).await
}

/// Continue `job_id` with `input` and return the new events.
pub(crate) async fn continue_with(
    engine: &Engine,
    job_id: &str,
    expert: &str,
    input: ContinueInput,
) -> Vec<Event> {
    let mut handle = engine
        .continue_job(ContinueRequest {
            job_id: Some(job_id.into()),
            expert_key: expert.into(),
            resume_from: None,
            input,
            subscribe: Some(100_000),
        })
        .await
        .unwrap();
    collect(&mut handle).await
}

async fn collect(handle: &mut crate::engine::JobHandle) -> Vec<Event> {
    let mut rx = handle.take_events().unwrap();
    let mut events = Vec::new();
    let deadline = std::time::Duration::from_secs(60);
    tokio::time::timeout(deadline, async {
        while let Some(e) = rx.recv().await {
            events.push((*e.event).clone());
        }
    })
    .await
    .unwrap();
    stable_times(&mut events);
    events
}

/// Give every event a timestamp that depends only on its run's own history (its step and its
/// place among the run's events), not on how parallel runs interleaved on this machine.
pub(crate) fn stable_times(events: &mut [Event]) {
    let mut per_run: std::collections::HashMap<String, u64> = Default::default();
    for e in events.iter_mut() {
        let n = per_run.entry(e.run_id.clone()).or_default();
        *n += 1;
        e.timestamp = 1_000_000 + u64::from(e.step_number.unwrap_or(0)) * 1_000 + *n * 10;
    }
}

/// The view model after `events`.
pub(crate) fn view_model(events: &[Event]) -> ViewModel {
    let mut vm = ViewModel::new("scripted");
    for e in events {
        vm.apply(e);
    }
    vm
}

/// The screen as text: one line per row, trailing spaces trimmed.
pub(crate) fn render(app: &App, vm: &ViewModel, width: u16, height: u16, now_ms: u64) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| super::views::draw(frame, app, vm, now_ms))
        .unwrap();
    text(terminal.backend().buffer())
}

/// A buffer as text.
pub(crate) fn text(buffer: &ratatui::buffer::Buffer) -> String {
    let width = buffer.area.width as usize;
    let mut out = String::new();
    for (i, cell) in buffer.content.iter().enumerate() {
        out.push_str(cell.symbol());
        if (i + 1) % width == 0 {
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        }
    }
    out
}

/// Compare `actual` with the golden file `tests/fixtures/tui/<name>.txt`; `UPDATE_GOLDEN=1`
/// rewrites it instead.
pub(crate) fn golden(name: &str, actual: &str) {
    let path = root(&format!("tests/fixtures/tui/{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    pretty_assertions::assert_eq!(expected, actual, "{name} differs from {}", path.display());
}
