//! The one timeout of a tool call: [`bounded`] is the only timer between the engine and a
//! tool's answer, whatever the skill kind (the in-process base skill, a stdio server, a
//! Streamable HTTP server).
//!
//! Its limit is a setting of its own, not the run's `timeout` (which bounds each generation, as
//! in Perstack): [`defaults::TOOL_TIMEOUT`] (60 s, what Perstack's MCP SDK applies to every
//! request), or [`TOOL_TIMEOUT_ENV`] in milliseconds ([`tool_timeout`]). The MCP transports add
//! no timer of their own, so a configured value above 60 s is the one that applies. `exec`
//! keeps its own `timeout` argument (it kills the command's process group when it runs out);
//! this timer still bounds the call around it.
//!
//! This module never retries and never decides what the model sees: the skill actor turns its
//! [`SkillError::Timeout`] into the tool result. Dropping the timed-out call cancels it (rmcp
//! sends `notifications/cancelled`).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::config::defaults;
use crate::skill::SkillError;

/// The environment variable that sets the tool-call timeout, in milliseconds.
pub(crate) const TOOL_TIMEOUT_ENV: &str = "PERSTACK_TOOL_TIMEOUT_MS";

/// [`TOOL_TIMEOUT_ENV`] holds something other than a positive whole number of milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{TOOL_TIMEOUT_ENV} must be a positive whole number of milliseconds, got \"{value}\"")]
pub(crate) struct InvalidToolTimeout {
    /// The value found.
    pub value: String,
}

/// The tool-call timeout the run environment `env` asks for: [`TOOL_TIMEOUT_ENV`] when set,
/// else [`defaults::TOOL_TIMEOUT`].
///
/// # Errors
///
/// [`InvalidToolTimeout`] when the variable is not a positive whole number.
pub(crate) fn tool_timeout(env: &BTreeMap<String, String>) -> Result<Duration, InvalidToolTimeout> {
    let Some(value) = env.get(TOOL_TIMEOUT_ENV) else {
        return Ok(defaults::TOOL_TIMEOUT);
    };
    match value.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(InvalidToolTimeout {
            value: value.clone(),
        }),
    }
}

/// Waits at most `after` for `call` (a call of `tool` of skill `skill`); past it, the call is
/// dropped and the answer is [`SkillError::Timeout`] (which feeds back to the model).
///
/// # Errors
///
/// `call`'s own error, or [`SkillError::Timeout`].
pub(crate) async fn bounded<T>(
    after: Duration,
    skill: &str,
    tool: &str,
    call: impl Future<Output = Result<T, SkillError>>,
) -> Result<T, SkillError> {
    match tokio::time::timeout(after, call).await {
        Ok(result) => result,
        Err(_) => Err(SkillError::Timeout {
            skill: skill.to_owned(),
            tool: tool.to_owned(),
            after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(value: Option<&str>) -> BTreeMap<String, String> {
        value
            .map(|v| (TOOL_TIMEOUT_ENV.to_owned(), v.to_owned()))
            .into_iter()
            .collect()
    }

    #[test]
    fn the_tool_timeout_is_sixty_seconds_unless_the_variable_sets_it() {
        assert_eq!(tool_timeout(&env(None)), Ok(Duration::from_secs(60)));
        assert_eq!(
            tool_timeout(&env(Some("90000"))),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(
            tool_timeout(&env(Some(" 250 "))),
            Ok(Duration::from_millis(250))
        );
        for bad in ["0", "-5", "1.5", "soon", ""] {
            let err = tool_timeout(&env(Some(bad))).unwrap_err();
            assert!(err.to_string().contains(TOOL_TIMEOUT_ENV), "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_gets_exactly_the_configured_time_even_above_sixty_seconds() {
        let after = Duration::from_secs(90);
        let started = tokio::time::Instant::now();
        let never = std::future::pending::<Result<(), SkillError>>();
        let err = bounded(after, "s", "t", never).await.unwrap_err();
        assert_eq!(started.elapsed(), after);
        assert!(
            matches!(&err, SkillError::Timeout { after: a, .. } if *a == after),
            "{err}"
        );
        assert!(err.feeds_back_to_model());
        assert_eq!(err.to_string(), "no answer within 90000 ms");

        let slow = async {
            tokio::time::sleep(Duration::from_secs(89)).await;
            Ok::<_, SkillError>("answer")
        };
        assert_eq!(bounded(after, "s", "t", slow).await.unwrap(), "answer");
    }
}
