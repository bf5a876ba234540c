//! Drawing `perstack start`: one function per screen, from the [`App`] and the
//! [`ViewModel`] to a ratatui frame.
//!
//! Owns layout, wording and styles. Views read state only; the time is passed in (`now_ms`),
//! so a snapshot of a view is the same on every machine. Styles carry colour only when
//! [`App::color`] is set (`NO_COLOR` unset); selection is shown in reverse video either way.

mod execution;
mod select;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::app::{App, Purpose, Screen};
use super::view_model::ViewModel;

/// Draw the screen up.
pub(crate) fn draw(frame: &mut Frame<'_>, app: &App, vm: &ViewModel, now_ms: u64) {
    match app.screen {
        Screen::Select(tab) => select::draw(frame, app, tab),
        Screen::Execution => execution::draw(frame, app, vm, now_ms),
    }
}

/// Styles, with or without colour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Theme {
    color: bool,
}

impl Theme {
    pub(crate) fn of(app: &App) -> Self {
        Theme { color: app.color }
    }

    fn fg(self, color: Color) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }

    /// Titles.
    pub(crate) fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// Secondary text.
    pub(crate) fn dim(self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default()
        }
    }

    /// The selected line.
    pub(crate) fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    /// Success.
    pub(crate) fn ok(self) -> Style {
        self.fg(Color::Green)
    }

    /// Running.
    pub(crate) fn busy(self) -> Style {
        self.fg(Color::Yellow)
    }

    /// Errors.
    pub(crate) fn bad(self) -> Style {
        self.fg(Color::Red)
    }
}

/// The input line (when open) or the notice, then the help line, at the bottom of `area`;
/// returns what is left above them.
fn footer(frame: &mut Frame<'_>, app: &App, area: Rect, help: &str) -> Rect {
    let theme = Theme::of(app);
    let mut rows = area.height;
    let help_area = Rect {
        y: area.y + rows.saturating_sub(1),
        height: 1.min(rows),
        ..area
    };
    frame.render_widget(
        Paragraph::new(Line::styled(fit(help, area.width as usize), theme.dim())),
        help_area,
    );
    rows = rows.saturating_sub(1);
    let line = if let Some((purpose, input)) = &app.input {
        let prompt = match purpose {
            Purpose::Query(expert) => format!("query for {expert} › "),
            Purpose::FollowUp => "follow-up › ".to_owned(),
            Purpose::Answer => "answer › ".to_owned(),
            Purpose::Resume { answer: true, .. } => "answer › ".to_owned(),
            Purpose::Resume { .. } => "query › ".to_owned(),
        };
        // Keep the end of a long input in view.
        let room = (area.width as usize).saturating_sub(prompt.chars().count() + 1);
        let text: String = tail_chars(input.text(), room);
        Some(Line::from(vec![
            Span::styled(prompt, theme.title()),
            Span::raw(text),
            Span::styled("▏", theme.busy()),
        ]))
    } else {
        app.notice
            .as_ref()
            .map(|n| Line::styled(fit(n, area.width as usize), theme.busy()))
    };
    if let Some(line) = line {
        let input_area = Rect {
            y: area.y + rows.saturating_sub(1),
            height: 1.min(rows),
            ..area
        };
        frame.render_widget(Paragraph::new(line), input_area);
        rows = rows.saturating_sub(1);
    }
    Rect {
        height: rows,
        ..area
    }
}

/// `s` cut to `width` characters (with `…` when cut).
pub(crate) fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// The last `n` characters of `s`.
fn tail_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

/// `text` wrapped to `width` characters per line (at spaces when possible).
pub(crate) fn wrap(text: &str, width: usize, out: &mut Vec<String>) {
    let width = width.max(1);
    for raw in text.split('\n') {
        let mut line = String::new();
        let mut len = 0;
        for word in raw.split(' ') {
            let wlen = word.chars().count();
            if len > 0 && len + 1 + wlen > width {
                out.push(std::mem::take(&mut line));
                len = 0;
            }
            if len > 0 {
                line.push(' ');
                len += 1;
            }
            let mut rest = word;
            while rest.chars().count() > width - len {
                let cut: String = rest.chars().take(width - len).collect();
                rest = &rest[cut.len()..];
                line.push_str(&cut);
                out.push(std::mem::take(&mut line));
                len = 0;
            }
            line.push_str(rest);
            len += rest.chars().count();
        }
        out.push(line);
    }
}

/// Tokens in a short form: `950`, `12.3k`, `4.1M`.
pub(crate) fn tokens(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1000.0),
        _ => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

/// Milliseconds in a short form: `0.4s`, `12s`, `3m05s`.
pub(crate) fn elapsed(ms: u64) -> String {
    let s = ms / 1000;
    if s < 10 {
        format!("{}.{}s", s, (ms % 1000) / 100)
    } else if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
#[path = "views_tests.rs"]
mod tests;
