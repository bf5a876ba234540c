//! The execution view: the job's runs as a live tree, the selected run's reasoning, tool calls
//! and result (or its events), the status panel, the answer / follow-up input and the help
//! line.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::{Theme, elapsed, fit, footer, tokens, wrap};
use crate::schema::JobStatus;
use crate::tui::app::{App, Phase};
use crate::tui::view_model::{RunStatus, ViewModel};

const HELP_RUNNING: &str = "↑/↓ run · e events · Ctrl-C cancel";
const HELP_DONE: &str =
    "↑/↓ run · i/Enter input · e events · c checkpoints · n new · h history · q quit";

pub(super) fn draw(frame: &mut Frame<'_>, app: &App, vm: &ViewModel, now_ms: u64) {
    let theme = Theme::of(app);
    let area = frame.area();
    let help = match app.phase {
        Phase::Running | Phase::Cancelling => HELP_RUNNING,
        _ => HELP_DONE,
    };
    let body = footer(frame, app, area, help);
    let [title, main, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(body);
    draw_title(frame, app, vm, title);
    let tree_width = (main.width * 11 / 20).max(30).min(main.width);
    let [tree, detail] =
        Layout::horizontal([Constraint::Length(tree_width), Constraint::Min(0)]).areas(main);
    let order = vm.tree();
    let selected = app.selected(vm);
    draw_tree(frame, theme, vm, &order, selected, tree, now_ms);
    draw_detail(frame, app, vm, order.get(selected).map(|&(i, _)| i), detail);
    draw_status(frame, theme, vm, status);
}

fn draw_title(frame: &mut Frame<'_>, app: &App, vm: &ViewModel, area: Rect) {
    let theme = Theme::of(app);
    let (job, expert) = app.job.clone().unwrap_or_default();
    let (state, style) = match app.phase {
        Phase::Idle => ("starting".to_owned(), theme.busy()),
        Phase::Running => (
            format!("running {} of {} runs", vm.running(), vm.runs.len()),
            theme.busy(),
        ),
        Phase::Cancelling => ("cancelling".to_owned(), theme.bad()),
        Phase::Finished(status) => (
            status_word(status).to_owned(),
            match status {
                JobStatus::Completed | JobStatus::StoppedByInteractiveTool => theme.ok(),
                _ => theme.bad(),
            },
        ),
    };
    let head = format!(" {expert} · job {} · ", super::select::short_id(&job));
    let width = area.width as usize;
    let line = Line::from(vec![
        Span::styled(fit(&head, width), theme.title()),
        Span::styled(
            fit(&state, width.saturating_sub(head.chars().count())),
            style,
        ),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn status_word(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Completed => "completed",
        JobStatus::StoppedByInteractiveTool => "waiting for your answer",
        JobStatus::StoppedByMaxSteps => "stopped: max steps",
        JobStatus::StoppedByError => "stopped by error",
        _ => "stopped",
    }
}

fn draw_tree(
    frame: &mut Frame<'_>,
    theme: Theme,
    vm: &ViewModel,
    order: &[(usize, usize)],
    selected: usize,
    area: Rect,
    now_ms: u64,
) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(" Runs ", theme.title()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = inner.height as usize;
    let width = inner.width as usize;
    // Keep the selected run in view.
    let offset = (selected + 1).saturating_sub(height);
    let lines: Vec<Line<'_>> = order
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(pos, &(i, depth))| {
            let run = &vm.runs[i];
            let (mark, style) = mark(theme, &run.status);
            let indent = "  ".repeat(depth.min(6));
            // Columns go from the right when the panel is narrow: the name keeps 10 characters.
            let full = format!(
                " {:<5} s{:<3}{:>6} {:>6}",
                run.status.label(),
                run.step,
                tokens(run.usage.input_tokens + run.usage.output_tokens),
                elapsed(run.elapsed_ms(now_ms)),
            );
            let short = format!(" {:<5} s{}", run.status.label(), run.step);
            let fixed = indent.len() + 3;
            let stats = [full, short]
                .into_iter()
                .find(|s| width >= fixed + s.chars().count() + 10)
                .unwrap_or_default();
            let room = width.saturating_sub(stats.chars().count() + fixed);
            let cursor = if pos == selected { '›' } else { ' ' };
            let name = format!(
                "{cursor}{indent}{mark} {:<room$}",
                fit(&run.expert_key, room)
            );
            let text = format!("{name}{stats}");
            if pos == selected {
                Line::styled(format!("{text:width$}"), theme.selected())
            } else {
                Line::from(vec![Span::raw(name), Span::styled(stats, style)])
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn mark(theme: Theme, status: &RunStatus) -> (&'static str, Style) {
    match status {
        RunStatus::Running => ("●", theme.busy()),
        RunStatus::Delegating => ("◆", theme.dim()),
        RunStatus::WaitingForUser => ("?", theme.busy()),
        RunStatus::Completed => ("✓", theme.ok()),
        RunStatus::MaxSteps | RunStatus::Error(_) => ("✗", theme.bad()),
    }
}

fn draw_detail(frame: &mut Frame<'_>, app: &App, vm: &ViewModel, run: Option<usize>, area: Rect) {
    let theme = Theme::of(app);
    let Some(run) = run.map(|i| &vm.runs[i]) else {
        let block = Block::default().borders(Borders::ALL);
        frame.render_widget(block, area);
        return;
    };
    let what = if app.show_events { "events" } else { "step" };
    let title = format!(" {} · {what} {} ", run.expert_key, run.step);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, theme.title()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let mut lines: Vec<(String, Style)> = Vec::new();
    let add = |text: &str, style: Style, lines: &mut Vec<(String, Style)>| {
        let mut wrapped = Vec::new();
        wrap(text, width, &mut wrapped);
        lines.extend(wrapped.into_iter().map(|l| (l, style)));
    };
    if app.show_events {
        for (step, kind) in &run.events {
            add(&format!("{step:>3} {kind}"), Style::default(), &mut lines);
        }
    } else {
        if let Some(q) = &run.query {
            add(&format!("› {q}"), theme.title(), &mut lines);
        }
        if !run.reasoning.as_str().is_empty() {
            add(run.reasoning.as_str(), theme.dim(), &mut lines);
        }
        for tool in &run.tools {
            add(
                &format!("→ {} {}", tool.name, tool.args),
                theme.busy(),
                &mut lines,
            );
            if let Some(result) = &tool.result {
                add(&format!("  ← {result}"), Style::default(), &mut lines);
            }
        }
        if let RunStatus::Error(message) = &run.status {
            add(&format!("error: {message}"), theme.bad(), &mut lines);
        }
        if !run.result.as_str().is_empty() {
            add(run.result.as_str(), theme.ok(), &mut lines);
        }
        if run.status == RunStatus::WaitingForUser
            && let Some(pending) = &vm.pending
        {
            add(
                &format!("? {} waits for your answer", pending.tool_name),
                theme.title(),
                &mut lines,
            );
        }
    }
    // Follow the end of the text, as a terminal does.
    let skip = lines.len().saturating_sub(inner.height as usize);
    let lines: Vec<Line<'_>> = lines
        .into_iter()
        .skip(skip)
        .map(|(text, style)| Line::styled(text, style))
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_status(frame: &mut Frame<'_>, theme: Theme, vm: &ViewModel, area: Rect) {
    let s = &vm.settings;
    let max_steps = s.max_steps.map_or("∞".to_owned(), |m| m.to_string());
    let first = format!(
        " {} · {} · {} · step {}/{} · retries {} · timeout {}s",
        s.model,
        s.provider,
        s.runtime,
        vm.step,
        max_steps,
        s.max_retries,
        s.timeout_ms / 1000
    );
    let context = match (s.context_usage, s.context_window) {
        (Some(u), Some(w)) => format!("context {:.1}% of {}", u * 100.0, tokens(w)),
        (Some(u), None) => format!("context {:.1}%", u * 100.0),
        _ => "context n/a".to_owned(),
    };
    let second = format!(
        " tokens {} in / {} out · {context}",
        tokens(vm.usage.input_tokens),
        tokens(vm.usage.output_tokens),
    );
    let width = area.width as usize;
    frame.render_widget(
        Paragraph::new(vec![
            Line::styled(fit(&first, width), theme.dim()),
            Line::styled(fit(&second, width), theme.dim()),
        ]),
        area,
    );
}
