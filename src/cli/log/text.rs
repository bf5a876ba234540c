//! Short texts for `perstack log`'s listing: one-line event details, message parts, snippets,
//! UTC times and durations. Pure functions.

use crate::schema::{Event, EventPayload, Message, MessagePart, ProxyAction};

/// One message part as short text; texts are cut at `limit` characters.
pub(super) fn part_text(part: &MessagePart, limit: usize) -> String {
    match part {
        MessagePart::TextPart(t) => snippet(&t.text, limit),
        MessagePart::ThinkingPart(t) => format!("(thinking) {}", snippet(&t.thinking, limit)),
        MessagePart::ToolCallPart(t) => format!(
            "call {}({})",
            t.tool_name,
            snippet(&t.args.to_string(), limit)
        ),
        MessagePart::ToolResultPart(t) => {
            let text: Vec<&str> = t.contents.iter().filter_map(MessagePart::as_text).collect();
            let err = if t.is_error == Some(true) {
                " (error)"
            } else {
                ""
            };
            format!(
                "result {}{err}: {}",
                t.tool_name,
                snippet(&text.join(" "), limit)
            )
        }
        MessagePart::ImageUrlPart(u) | MessagePart::FileUrlPart(u) => {
            format!("({}) {}", u.mime_type, u.url)
        }
        MessagePart::ImageInlinePart(i) | MessagePart::FileInlinePart(i) => {
            format!("({} inline)", i.mime_type)
        }
        MessagePart::ImageBinaryPart(b) | MessagePart::FileBinaryPart(b) => {
            format!("({} binary)", b.mime_type)
        }
    }
}

/// The short description after an event's type.
pub(super) fn detail(e: &Event) -> String {
    let names = |calls: &[crate::schema::ToolCall]| {
        calls
            .iter()
            .map(|c| c.tool_name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &e.payload {
        EventPayload::StartRun(p) => {
            let query = p.input_messages.iter().rev().find_map(|m| match m {
                Message::UserMessage(_) => m.first_text(),
                _ => None,
            });
            match query {
                Some(q) => format!("query: {}", snippet(q, 60)),
                None => format!("from {} checkpoint", p.initial_checkpoint.status.as_str()),
            }
        }
        EventPayload::StartGeneration(p) => plural(p.messages.len(), "message"),
        EventPayload::Retry(p) => format!("reason: {}", snippet(&p.reason, 80)),
        EventPayload::CallTools(p) => names(&p.tool_calls),
        EventPayload::CallInteractiveTool(p) => p.tool_call.tool_name.clone(),
        EventPayload::CallDelegate(p) => format!("delegate to {}", names(&p.tool_calls)),
        EventPayload::ResolveToolResults(p) => p
            .tool_results
            .iter()
            .map(|r| format!("{}: {}", r.tool_name, snippet(&r.text(), 40)))
            .collect::<Vec<_>>()
            .join("; "),
        EventPayload::AttemptCompletion(p) => snippet(&p.tool_result.text(), 60),
        EventPayload::FinishToolCall(p) | EventPayload::FinishAllToolCalls(p) => {
            plural(p.new_messages.len(), "message")
        }
        EventPayload::ResumeToolCalls(p) => {
            format!(
                "{} pending, {} done",
                p.pending_tool_calls.len(),
                p.partial_tool_results.len()
            )
        }
        EventPayload::ContinueToNextStep(p) => {
            format!("next step {}", p.next_checkpoint.step_number)
        }
        EventPayload::StopRunByInteractiveTool(p) => {
            format!(
                "waiting for {}",
                names(
                    p.checkpoint
                        .pending_tool_calls
                        .as_deref()
                        .unwrap_or_default()
                )
            )
        }
        EventPayload::StopRunByDelegate(p) => {
            let keys: Vec<&str> = p
                .checkpoint
                .delegate_to
                .iter()
                .flatten()
                .map(|d| d.expert.key.as_str())
                .collect();
            format!("waiting for {}", keys.join(", "))
        }
        EventPayload::StopRunByExceededMaxSteps(p) => {
            format!("step limit reached at step {}", p.checkpoint.step_number)
        }
        EventPayload::StopRunByError(p) => {
            let status = p
                .error
                .status_code
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            format!(
                "{}{status}: {}",
                p.error.name,
                snippet(&p.error.message, 80)
            )
        }
        EventPayload::CompleteRun(p) => format!("result: {}", snippet(&p.text, 80)),
        EventPayload::StreamReasoning(d) | EventPayload::StreamRunResult(d) => {
            snippet(&d.delta, 60)
        }
        EventPayload::CompleteStreamingReasoning(t)
        | EventPayload::CompleteStreamingRunResult(t) => snippet(&t.text, 60),
        EventPayload::StartStreamingReasoning(_) | EventPayload::StartStreamingRunResult(_) => {
            String::new()
        }
        EventPayload::InitializeRuntime(p) => format!("{} on {}", p.expert_name, p.model),
        EventPayload::SkillStarting(p) => format!("{} ({})", p.skill_name, p.command),
        EventPayload::SkillConnected(p) => p.skill_name.clone(),
        EventPayload::SkillStderr(p) => format!("{}: {}", p.skill_name, snippet(&p.message, 60)),
        EventPayload::SkillDisconnected(p) => p.skill_name.clone(),
        EventPayload::JobTakenOver(p) => format!("by {}", p.worker),
        EventPayload::ProxyAccess(p) => {
            let verdict = match p.action {
                ProxyAction::Allowed => "allowed",
                ProxyAction::Blocked => "blocked",
            };
            let reason = p
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            format!("{verdict} {}:{}{reason}", p.domain, p.port)
        }
    }
}

/// `1 message`, `2 messages`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// One line of at most `max` characters: runs of whitespace collapsed, `…` when cut.
fn snippet(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `HH:MM:SS.mmm` (UTC) of an epoch-ms timestamp.
pub(super) fn clock(ms: u64) -> String {
    let (_, _, _, h, m, s) = civil(ms);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

/// `YYYY-MM-DD HH:MM:SS UTC` of an epoch-ms timestamp.
pub(super) fn datetime(ms: u64) -> String {
    let (y, mo, d, h, m, s) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

/// Calendar fields (UTC) of an epoch-ms timestamp (Howard Hinnant's `civil_from_days`).
fn civil(ms: u64) -> (u64, u64, u64, u64, u64, u64) {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `850ms`, `12.3s`, `4m05s`.
pub(super) fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations_render_in_utc() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(datetime(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(datetime(1_795_733_856_709), "2026-11-26 22:57:36 UTC");
        assert_eq!(clock(1_795_733_856_709), "22:57:36.709");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(245_000), "4m05s");
    }

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(snippet("a\n  b", 10), "a b");
        assert_eq!(snippet("abcdef", 4), "abc…");
        assert_eq!(plural(1, "message"), "1 message");
        assert_eq!(plural(0, "message"), "0 messages");
    }
}
