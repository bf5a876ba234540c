//! The instruction message (system prompt) of a run, composed as Perstack composes it
//! (REFERENCE §1.8): preamble, meta-instruction, environment, the Expert's instruction, skill
//! rules, delegates. The wording is this engine's own; the structure is Perstack's.

use std::fmt::Write as _;
use std::path::Path;

use crate::schema::Expert;

const PREAMBLE: &str = "You are Perstack, an AI expert that completes the tasks users give you by \
using the tools available to you.";

const META: &str = "How you work:
- You work in a loop. Each turn you may call one or more tools; their results come back to you \
in the next turn.
- When the task is done, call the `attemptCompletion` tool WITHOUT writing any text in the same \
turn. A final answer is requested from you separately after that.
- If you answer with text and no tool call, that text is taken as your final answer and the run ends.
- If the task is out of your scope, impossible, or unintelligible, say so briefly and finish.
- Other experts you delegate to see only the query you give them, never this conversation.";

/// Build the instruction text for `expert`, listing `delegates` (already resolved Experts).
pub(crate) fn instruction_text(
    expert: &Expert,
    delegates: &[&Expert],
    started_at_ms: u64,
    cwd: &Path,
) -> String {
    let mut s = String::with_capacity(1024 + expert.instruction.len());
    s.push_str(PREAMBLE);
    s.push_str("\n\n");
    s.push_str(META);
    let _ = write!(
        s,
        "\n\nEnvironment:\n- Current time: {}\n- Working directory: {}\n\n",
        iso8601(started_at_ms),
        cwd.display()
    );
    s.push_str("Your instruction:\n");
    s.push_str(&expert.instruction);
    for (name, skill) in &expert.skills {
        if let Some(rule) = skill.rule() {
            let _ = write!(s, "\n\n\"{name}\" skill rules:\n{rule}");
        }
    }
    if !delegates.is_empty() {
        s.push_str(
            "\n\nYou can delegate tasks to the following experts by calling delegate expert name as a tool:",
        );
        for d in delegates {
            let _ = write!(
                s,
                "\n\nAbout \"{}\":\n{}",
                d.name,
                d.description.as_deref().unwrap_or("")
            );
        }
    }
    // It stays in the run's history for the run's life: no spare capacity.
    s.shrink_to_fit();
    s
}

/// `2026-11-26T22:21:38.000Z` for an epoch-millisecond time (what JS `toISOString` prints).
pub(crate) fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_matches_javascript() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_729_279_341), "2026-11-26T21:41:19.341Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
