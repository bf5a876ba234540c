//! The selection screen: the Experts of perstack.toml (recently used ones first), the job
//! history, and a job's coordinator checkpoints to resume from.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::{Theme, fit, footer, wrap};
use crate::tui::app::{App, Tab};

const HELP_EXPERTS: &str = "↑/↓ move · Enter select · h history · q quit";
const HELP_HISTORY: &str = "↑/↓ move · Enter/c checkpoints · n new run · b back · q quit";
const HELP_CHECKPOINTS: &str = "↑/↓ move · Enter resume from here · b back · q quit";

pub(super) fn draw(frame: &mut Frame<'_>, app: &App, tab: Tab) {
    let theme = Theme::of(app);
    let area = frame.area();
    let help = match tab {
        Tab::Experts => HELP_EXPERTS,
        Tab::History => HELP_HISTORY,
        Tab::Checkpoints => HELP_CHECKPOINTS,
    };
    let body = footer(frame, app, area, help);
    let [title, main] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(body);
    let heading = format!(" perstack start · {}", app.catalog.config);
    frame.render_widget(
        Paragraph::new(Line::styled(
            fit(&heading, area.width as usize),
            theme.title(),
        )),
        title,
    );
    let [list, detail] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(main);
    let cursor = app.cursor[tab as usize];
    let (name, rows, about): (String, Vec<String>, String) = match tab {
        Tab::Experts => (
            "Experts".into(),
            app.catalog
                .experts
                .iter()
                .map(|e| {
                    if e.recent {
                        format!("{}  (recent)", e.key)
                    } else {
                        e.key.clone()
                    }
                })
                .collect(),
            app.catalog
                .experts
                .get(cursor)
                .map(|e| e.description.clone())
                .unwrap_or_else(|| "No Experts in perstack.toml".into()),
        ),
        Tab::History => (
            "Job history".into(),
            app.catalog
                .jobs
                .iter()
                .map(|j| format!("{} {} {}", short_id(&j.id), j.expert, j.status))
                .collect(),
            app.catalog
                .jobs
                .get(cursor)
                .map(|j| {
                    format!(
                        "job {}\nExpert {}\nstatus {}\nsteps {}",
                        j.id, j.expert, j.status, j.steps
                    )
                })
                .unwrap_or_else(|| "No jobs stored yet".into()),
        ),
        Tab::Checkpoints => (
            format!(
                "Checkpoints of {}",
                short_id(app.checkpoints_of.as_deref().unwrap_or(""))
            ),
            app.checkpoints
                .iter()
                .map(|c| format!("step {:>3} {}", c.step, c.status.as_str()))
                .collect(),
            app.checkpoints
                .get(cursor)
                .map(|c| {
                    format!(
                        "checkpoint {}\nExpert {}\nEnter continues the job from here",
                        c.id, c.expert
                    )
                })
                .unwrap_or_else(|| "No coordinator checkpoints".into()),
        ),
    };
    draw_list(frame, app, list, &name, &rows, cursor);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(" Details ", theme.title()));
    let inner = block.inner(detail);
    frame.render_widget(block, detail);
    let mut lines = Vec::new();
    wrap(&about, inner.width as usize, &mut lines);
    lines.truncate(inner.height as usize);
    frame.render_widget(
        Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()),
        inner,
    );
}

fn draw_list(
    frame: &mut Frame<'_>,
    app: &App,
    area: Rect,
    name: &str,
    rows: &[String],
    cursor: usize,
) {
    let theme = Theme::of(app);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(format!(" {name} "), theme.title()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = inner.height as usize;
    let offset = (cursor + 1).saturating_sub(height);
    let width = inner.width as usize;
    let lines: Vec<Line<'_>> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, row)| {
            let marker = if i == cursor { "› " } else { "  " };
            let text = format!("{marker}{}", fit(row, width.saturating_sub(2)));
            if i == cursor {
                Line::styled(format!("{text:width$}"), theme.selected())
            } else {
                Line::raw(text)
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The first 8 characters of an id.
pub(super) fn short_id(id: &str) -> &str {
    id.char_indices().nth(8).map_or(id, |(i, _)| &id[..i])
}
