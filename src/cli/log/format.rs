//! Rendering for `perstack log`: the human listing (ANSI colours only when asked) and the JSON
//! document `{ job, events, summary, checkpoint?, checkpoints? }`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::data::Loaded;
use super::filter::{DELEGATION_TYPES, ERROR_TYPES, Selected, TOOL_TYPES};
use super::text::{clock, datetime, detail, duration, part_text};
use crate::schema::{Checkpoint, Event, Job, Message, Usage};

/// How the human listing looks.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Options {
    /// ANSI colours.
    pub(super) color: bool,
    /// Full event JSON under each line; full message texts.
    pub(super) verbose: bool,
    /// The checkpoint's message history.
    pub(super) messages: bool,
    /// The summary instead of the event lines.
    pub(super) summary: bool,
    /// Mark matches (`>`) apart from context lines.
    pub(super) mark_matches: bool,
}

/// Counts over the shown events.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Summary<'a> {
    /// Events shown (matches and context).
    total_events: usize,
    /// `stopRunByError` and `retry` among them.
    error_count: usize,
    /// `callTools`, `resolveToolResults` and `callInteractiveTool` among them.
    tool_call_count: usize,
    /// `callDelegate` and `stopRunByDelegate` among them.
    delegation_count: usize,
    /// Events that passed the filters, before `--offset`/`--take`.
    matched_events: usize,
    /// Lowest and highest step shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    step_range: Option<StepRange>,
    /// Events per type, in order of first appearance (a JSON object `{type: count}`).
    #[serde(serialize_with = "type_counts")]
    events_by_type: Vec<TypeCount<'a>>,
    /// Time from the first to the last event in scope, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    /// The job's (or checkpoint's, or run's last) status.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    /// The job's usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct StepRange {
    min: u32,
    max: u32,
}

#[derive(Debug, Clone, Copy)]
struct TypeCount<'a> {
    kind: &'a str,
    count: usize,
}

fn type_counts<S: serde::Serializer>(counts: &[TypeCount<'_>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(counts.len()))?;
    for t in counts {
        map.serialize_entry(t.kind, &t.count)?;
    }
    map.end()
}

/// Summarises the shown events of `loaded`.
pub(super) fn summary<'a>(loaded: &'a Loaded, selected: &Selected) -> Summary<'a> {
    let shown: Vec<&Event> = selected
        .shown
        .iter()
        .map(|&(i, _)| &loaded.events[i])
        .collect();
    let count = |set: &[&str]| shown.iter().filter(|e| set.contains(&e.kind())).count();
    let steps: Vec<u32> = shown.iter().filter_map(|e| e.step_number).collect();
    let mut by_type: Vec<TypeCount<'a>> = Vec::new();
    for e in &shown {
        match by_type.iter_mut().find(|t| t.kind == e.kind()) {
            Some(t) => t.count += 1,
            None => by_type.push(TypeCount {
                kind: e.kind(),
                count: 1,
            }),
        }
    }
    let duration_ms = match (loaded.events.first(), loaded.events.last()) {
        (Some(a), Some(b)) => Some(b.timestamp.saturating_sub(a.timestamp)),
        _ => None,
    };
    let status = match (&loaded.checkpoint, &loaded.run, &loaded.job) {
        (Some(c), _, _) => Some(c.status.as_str()),
        (None, Some(_), _) => loaded
            .events
            .iter()
            .rev()
            .find_map(|e| e.checkpoint())
            .map(|c| c.status.as_str()),
        (None, None, Some(job)) => Some(job_status(job)),
        (None, None, None) => None,
    };
    Summary {
        total_events: shown.len(),
        error_count: count(ERROR_TYPES),
        tool_call_count: count(TOOL_TYPES),
        delegation_count: count(DELEGATION_TYPES),
        matched_events: selected.matched,
        step_range: match (steps.iter().min(), steps.iter().max()) {
            (Some(&min), Some(&max)) => Some(StepRange { min, max }),
            _ => None,
        },
        events_by_type: by_type,
        duration_ms,
        status,
        usage: loaded.job.as_ref().map(|j| j.usage),
    }
}

/// The `--json` document, in Perstack's key order.
#[derive(Serialize)]
struct JsonOut<'a> {
    job: Option<&'a Job>,
    events: Vec<&'a Event>,
    summary: Summary<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<&'a Checkpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoints: Option<&'a [Checkpoint]>,
}

/// `{ job, events, summary, checkpoint?, checkpoints? }`, compact or pretty (2-space).
pub(super) fn json(
    loaded: &Loaded,
    selected: &Selected,
    pretty: bool,
) -> serde_json::Result<String> {
    let out = JsonOut {
        job: loaded.job.as_ref(),
        events: selected
            .shown
            .iter()
            .map(|&(i, _)| &loaded.events[i])
            .collect(),
        summary: summary(loaded, selected),
        checkpoint: loaded.checkpoint.as_ref(),
        checkpoints: loaded.checkpoints.as_deref().filter(|c| !c.is_empty()),
    };
    if pretty {
        serde_json::to_string_pretty(&out)
    } else {
        serde_json::to_string(&out)
    }
}

/// ANSI styling, a no-op when colours are off.
#[derive(Debug, Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn on(self, code: &str, s: &str) -> String {
        if self.0 && !s.is_empty() && !code.is_empty() {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

const DIM: &str = "2";
const BOLD: &str = "1";
const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const BLUE: &str = "34";
const MAGENTA: &str = "35";
const CYAN: &str = "36";

/// The human listing: header, optional checkpoint and messages, then the events or the summary.
pub(super) fn human(loaded: &Loaded, selected: &Selected, opts: Options, storage: &str) -> String {
    let p = Paint(opts.color);
    let mut out = String::new();
    if loaded.latest {
        out.push_str(&p.on(DIM, "(showing latest job)"));
        out.push('\n');
    }
    let _ = writeln!(out, "Storage: {storage}");
    header(&mut out, loaded, p);
    if let Some(c) = &loaded.checkpoint {
        out.push('\n');
        checkpoint(&mut out, c, p);
        if opts.messages {
            messages(&mut out, &c.messages, opts.verbose, p);
        }
    }
    out.push('\n');
    if opts.summary {
        summary_lines(&mut out, &summary(loaded, selected), p);
        return out;
    }
    if selected.shown.is_empty() {
        out.push_str("No data found\n");
        if selected.matched > 0 {
            let _ = writeln!(
                out,
                "({} events match, all skipped by --offset)",
                selected.matched
            );
        }
        return out;
    }
    let matches = selected.shown.iter().filter(|(_, m)| *m).count();
    let _ = writeln!(
        out,
        "{}",
        p.on(
            BOLD,
            &format!("Events ({matches} of {} matching):", selected.matched)
        )
    );
    let shown: Vec<(&Event, bool)> = selected
        .shown
        .iter()
        .map(|&(i, m)| (&loaded.events[i], m))
        .collect();
    let expert_w = shown
        .iter()
        .map(|(e, _)| e.expert_key.as_deref().map_or(1, str::len))
        .max()
        .unwrap_or(0);
    let type_w = shown.iter().map(|(e, _)| e.kind().len()).max().unwrap_or(0);
    for (e, is_match) in shown {
        let mark = match (opts.mark_matches, is_match) {
            (false, _) => "",
            (true, true) => "> ",
            (true, false) => "  ",
        };
        let step = e
            .step_number
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        let expert = e.expert_key.as_deref().unwrap_or("-");
        // Context lines are dimmed as a whole, without the colours of their parts.
        let lp = if is_match { p } else { Paint(false) };
        let line = format!(
            "{mark}{}  {}  {}  {}  {}",
            lp.on(DIM, &clock(e.timestamp)),
            lp.on(CYAN, &format!("{:>5}", format!("#{step}"))),
            lp.on(BLUE, &format!("{expert:<expert_w$}")),
            lp.on(type_color(e.kind()), &format!("{:<type_w$}", e.kind())),
            detail(e),
        );
        let line = line.trim_end();
        let line = if is_match {
            line.to_owned()
        } else {
            p.on(DIM, line)
        };
        let _ = writeln!(out, "{line}");
        if opts.verbose
            && let Ok(json) = serde_json::to_string_pretty(e)
        {
            for l in json.lines() {
                let _ = writeln!(out, "      {l}");
            }
        }
    }
    if matches < selected.matched {
        let note = format!(
            "({matches} of {} matching events shown; use --offset/--take to page, --take 0 for all)",
            selected.matched
        );
        let _ = writeln!(out, "{}", p.on(DIM, &note));
    }
    out
}

fn header(out: &mut String, loaded: &Loaded, p: Paint) {
    let Some(job) = &loaded.job else {
        let _ = writeln!(out, "Job: {} (no job record or checkpoints)", loaded.job_id);
        return;
    };
    let _ = writeln!(
        out,
        "Job: {} ({})",
        p.on(BOLD, &job.id),
        p.on(status_color(job_status(job)), job_status(job))
    );
    let _ = writeln!(out, "Expert: {}", job.coordinator_expert_key);
    let mut started = format!("Started: {}", datetime(job.started_at));
    if let Some(end) = job.finished_at {
        let _ = write!(
            started,
            "  Finished: {} ({})",
            datetime(end),
            duration(end.saturating_sub(job.started_at))
        );
    }
    let _ = writeln!(out, "{started}");
    let u = job.usage;
    let _ = writeln!(
        out,
        "Steps: {}  Usage: {} in / {} out / {} total tokens",
        job.total_steps, u.input_tokens, u.output_tokens, u.total_tokens
    );
    if let Some(cps) = &loaded.checkpoints {
        let runs: BTreeSet<&str> = cps.iter().map(|c| c.run_id.as_str()).collect();
        let _ = writeln!(
            out,
            "Checkpoints: {}  Runs with checkpoints: {}",
            cps.len(),
            runs.len()
        );
    }
    if let Some(run) = &loaded.run {
        let _ = writeln!(out, "Run: {run}");
    }
}

fn checkpoint(out: &mut String, c: &Checkpoint, p: Paint) {
    let _ = writeln!(
        out,
        "Checkpoint: {} ({})",
        p.on(BOLD, &c.id),
        p.on(status_color(c.status.as_str()), c.status.as_str())
    );
    let _ = writeln!(
        out,
        "  Run: {}  Step: {}  Expert: {}",
        c.run_id, c.step_number, c.expert.key
    );
    let u = c.usage;
    let _ = writeln!(
        out,
        "  Usage: {} in / {} out / {} total tokens",
        u.input_tokens, u.output_tokens, u.total_tokens
    );
    if let Some(by) = &c.delegated_by {
        let _ = writeln!(out, "  Delegated by: {} ({})", by.expert.key, by.tool_name);
    }
    if let Some(to) = c.delegate_to.as_deref().filter(|d| !d.is_empty()) {
        let keys: Vec<&str> = to.iter().map(|d| d.expert.key.as_str()).collect();
        let _ = writeln!(out, "  Delegates to: {}", keys.join(", "));
    }
    if let Some(pending) = c.pending_tool_calls.as_deref().filter(|d| !d.is_empty()) {
        let names: Vec<&str> = pending.iter().map(|t| t.tool_name.as_str()).collect();
        let _ = writeln!(out, "  Pending: {}", names.join(", "));
    }
    if let Some(err) = &c.error {
        let _ = writeln!(
            out,
            "  Error: {}",
            p.on(RED, &format!("{}: {}", err.name, err.message))
        );
    }
}

fn messages(out: &mut String, messages: &[Message], verbose: bool, p: Paint) {
    let _ = writeln!(out, "\nMessages ({}):", messages.len());
    let limit = if verbose { usize::MAX } else { 100 };
    for m in messages {
        let kind = match m {
            Message::InstructionMessage(_) => "instructionMessage",
            Message::UserMessage(_) => "userMessage",
            Message::ExpertMessage(_) => "expertMessage",
            Message::ToolMessage(_) => "toolMessage",
        };
        let parts: Vec<String> = m
            .body()
            .contents
            .iter()
            .map(|part| part_text(part, limit))
            .collect();
        let _ = writeln!(
            out,
            "  {} {}",
            p.on(CYAN, &format!("[{kind}]")),
            parts.join(" | ")
        );
    }
}

fn summary_lines(out: &mut String, s: &Summary<'_>, p: Paint) {
    let _ = writeln!(out, "{}", p.on(BOLD, "Summary:"));
    if let Some(status) = s.status {
        let _ = writeln!(out, "  Status: {}", p.on(status_color(status), status));
    }
    let _ = writeln!(
        out,
        "  Events: {} (matching: {})",
        s.total_events, s.matched_events
    );
    for t in &s.events_by_type {
        let _ = writeln!(out, "    {:<28}{:>5}", t.kind, t.count);
    }
    let _ = writeln!(
        out,
        "  Errors: {}  Tool events: {}  Delegation events: {}",
        s.error_count, s.tool_call_count, s.delegation_count
    );
    if let Some(r) = s.step_range {
        let _ = writeln!(out, "  Steps: {} - {}", r.min, r.max);
    }
    if let Some(u) = s.usage {
        let _ = writeln!(
            out,
            "  Usage: {} in / {} out / {} reasoning / {} cached / {} total tokens",
            u.input_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            u.cached_input_tokens,
            u.total_tokens
        );
    }
    if let Some(d) = s.duration_ms {
        let _ = writeln!(out, "  Duration: {}", duration(d));
    }
}

fn job_status(job: &Job) -> &'static str {
    match job.status {
        crate::schema::JobStatus::Running => "running",
        crate::schema::JobStatus::Completed => "completed",
        crate::schema::JobStatus::StoppedByMaxSteps => "stoppedByMaxSteps",
        crate::schema::JobStatus::StoppedByInteractiveTool => "stoppedByInteractiveTool",
        crate::schema::JobStatus::StoppedByError => "stoppedByError",
    }
}

fn status_color(status: &str) -> &'static str {
    match status {
        "completed" => GREEN,
        "stoppedByError" => RED,
        "running" | "proceeding" | "init" => CYAN,
        _ => YELLOW,
    }
}

fn type_color(kind: &str) -> &'static str {
    if ERROR_TYPES.contains(&kind) {
        RED
    } else if TOOL_TYPES.contains(&kind) {
        YELLOW
    } else if DELEGATION_TYPES.contains(&kind) {
        MAGENTA
    } else if kind == "completeRun" {
        GREEN
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_adds_ansi_codes_only_when_on() {
        assert_eq!(Paint(false).on(RED, "x"), "x");
        assert_eq!(Paint(true).on(RED, "x"), "\x1b[31mx\x1b[0m");
        assert_eq!(Paint(true).on("", "x"), "x");
        assert_eq!(type_color("stopRunByError"), RED);
        assert_eq!(type_color("callDelegate"), MAGENTA);
        assert_eq!(status_color("completed"), GREEN);
    }
}
