//! [`SkillError`]: what can go wrong between the engine and a skill, with its policy.
//!
//! A tool-level failure the model can react to (bad arguments, unknown tool, a timeout, a
//! malformed reply) is fed back to the model as an error tool result; a broken connection or a
//! server that never started is an engine fault that stops the run. Callers ask
//! [`SkillError::feeds_back_to_model`] instead of matching on messages.

use std::time::Duration;

use rmcp::service::ServiceError;

/// An error talking to a skill.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SkillError {
    /// The server answered with a JSON-RPC error (unknown tool, invalid parameters, an
    /// internal error). Displayed like the TypeScript SDK's `McpError` message.
    #[error("MCP error {code}: {message}")]
    Mcp {
        /// The skill that answered.
        skill: String,
        /// The tool that was called.
        tool: String,
        /// JSON-RPC error code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The arguments could not even be sent (for example they were not a JSON object).
    #[error("invalid arguments for tool {tool}: {message}")]
    InvalidArguments {
        /// The tool that was called.
        tool: String,
        /// What was wrong.
        message: String,
    },
    /// The call did not finish in time.
    #[error("no answer within {} ms", .after.as_millis())]
    Timeout {
        /// The skill that was called.
        skill: String,
        /// The tool that was called.
        tool: String,
        /// How long the engine waited.
        after: Duration,
    },
    /// The server answered with something that is not a tool result.
    #[error("unexpected response from skill {skill} to tool {tool}: {detail}")]
    UnexpectedResponse {
        /// The skill that answered.
        skill: String,
        /// The tool that was called.
        tool: String,
        /// What came back.
        detail: String,
    },
    /// The connection to the skill is gone (the server exited or was closed).
    #[error("connection to skill {skill} is closed")]
    TransportClosed {
        /// The skill.
        skill: String,
    },
    /// A message could not be written to the skill's transport.
    #[error("could not send to skill {skill}: {message}")]
    Transport {
        /// The skill.
        skill: String,
        /// The transport's error.
        message: String,
    },
    /// The MCP handshake or the tool listing failed.
    #[error("could not connect to skill {skill}: {message}")]
    Connect {
        /// The skill.
        skill: String,
        /// What failed.
        message: String,
    },
    /// The skill's process could not be started.
    #[error("could not start skill {skill}: {source}")]
    Spawn {
        /// The skill.
        skill: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The call was cancelled before it finished (the run is stopping).
    #[error("call to tool {tool} on skill {skill} was cancelled")]
    Cancelled {
        /// The skill.
        skill: String,
        /// The tool that was called.
        tool: String,
    },
}

impl SkillError {
    /// Whether this failure goes back to the model as a tool result it can react to (`true`),
    /// or is an engine fault that stops the run (`false`).
    pub(crate) fn feeds_back_to_model(&self) -> bool {
        match self {
            SkillError::Mcp { .. }
            | SkillError::InvalidArguments { .. }
            | SkillError::Timeout { .. }
            | SkillError::UnexpectedResponse { .. } => true,
            SkillError::TransportClosed { .. }
            | SkillError::Transport { .. }
            | SkillError::Connect { .. }
            | SkillError::Spawn { .. }
            | SkillError::Cancelled { .. } => false,
        }
    }

    /// Classifies an rmcp error from a call to `tool` on `skill`.
    pub(crate) fn from_service(skill: &str, tool: &str, err: ServiceError) -> Self {
        let skill = skill.to_owned();
        let tool = tool.to_owned();
        match err {
            ServiceError::McpError(e) => SkillError::Mcp {
                skill,
                tool,
                code: e.code.0,
                message: e.message.into_owned(),
            },
            ServiceError::TransportClosed => SkillError::TransportClosed { skill },
            ServiceError::TransportSend(e) => SkillError::Transport {
                skill,
                message: e.to_string(),
            },
            ServiceError::Timeout { timeout } => SkillError::Timeout {
                skill,
                tool,
                after: timeout,
            },
            ServiceError::Cancelled { .. } => SkillError::Cancelled { skill, tool },
            other => SkillError::UnexpectedResponse {
                skill,
                tool,
                detail: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::ErrorData;

    #[test]
    fn tool_level_failures_feed_back_and_connection_failures_do_not() {
        let not_found = SkillError::from_service(
            "s",
            "nope",
            ServiceError::McpError(ErrorData::invalid_params("tool not found", None)),
        );
        assert!(not_found.feeds_back_to_model());
        assert_eq!(not_found.to_string(), "MCP error -32602: tool not found");

        let timeout = SkillError::from_service(
            "s",
            "t",
            ServiceError::Timeout {
                timeout: Duration::from_secs(1),
            },
        );
        assert!(timeout.feeds_back_to_model());

        let closed = SkillError::from_service("s", "t", ServiceError::TransportClosed);
        assert!(!closed.feeds_back_to_model());
        let spawn = SkillError::Spawn {
            skill: "s".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(!spawn.feeds_back_to_model());
    }
}
