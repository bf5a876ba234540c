//! What one model call produced, assembled from its stream, and how it can fail.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::schema::Usage;

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end.
    Stop,
    /// It called tools.
    ToolCalls,
    /// The output limit cut it off.
    Length,
    /// Anything else (content filter, error, ...).
    Other(String),
}

/// One reasoning block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Thinking {
    /// Reasoning text.
    pub text: String,
    /// Provider signature, passed back on later turns.
    pub signature: Option<String>,
}

/// One tool call as the model made it.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToolCall {
    /// Provider's call id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments object.
    pub args: Value,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Generation {
    /// Reasoning blocks, in order.
    pub thinking: Vec<Thinking>,
    /// All text deltas concatenated.
    pub text: String,
    /// Tool calls, in the order the model made them.
    pub tool_calls: Vec<GeneratedToolCall>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Tokens.
    pub usage: Usage,
}

/// A failed generation, classified once, where it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationError {
    /// Error class (`APICallError`, `TimeoutError`, ...), written into `stopRunByError`.
    pub name: String,
    /// Message; never contains an API key.
    pub message: String,
    /// HTTP status, when there was one.
    pub status_code: Option<u16>,
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// How long the server asked us to wait before trying again (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl GenerationError {
    /// An error the API reported inside a stream (the body of an error event or chunk), with
    /// the HTTP status it stands for: `kind: message` (just `message` without a kind),
    /// retryable as that status would be.
    pub fn api_call(status: u16, kind: &str, message: &str) -> Self {
        GenerationError {
            name: "APICallError".into(),
            message: if kind.is_empty() {
                message.to_string()
            } else {
                format!("{kind}: {message}")
            },
            status_code: Some(status),
            retryable: crate::llm::http::is_retryable_status(status),
            retry_after: None,
        }
    }

    /// The provider answered something that is not its wire format (unparsable JSON, a
    /// malformed event stream): retryable, as the next answer may be fine.
    pub fn invalid_response(message: String) -> Self {
        GenerationError {
            name: "InvalidResponseDataError".into(),
            message,
            status_code: None,
            retryable: true,
            retry_after: None,
        }
    }
}

impl GeneratedToolCall {
    /// Arguments from the model's raw JSON text (Anthropic's `input_json_delta`s, OpenAI's
    /// `arguments` fragments, joined): empty text means `{}`; anything but a JSON object is a
    /// retryable `InvalidToolCallJSON` error, since the model may do better on the next try.
    pub fn parse_args(name: &str, id: &str, raw: &str) -> Result<Value, GenerationError> {
        if raw.trim().is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(invalid_args(name, id, "not a JSON object", raw)),
            Err(e) => Err(invalid_args(name, id, &e.to_string(), raw)),
        }
    }

    /// Arguments sent as a JSON value (Gemini's `args`, Ollama's `arguments`): an object as it
    /// is, a missing value as `{}`, a string as raw JSON text (some gateways send one), and
    /// anything else as an `InvalidToolCallJSON` error.
    pub fn args_from_value(
        name: &str,
        id: &str,
        v: Option<&Value>,
    ) -> Result<Value, GenerationError> {
        match v {
            None | Some(Value::Null) => Ok(Value::Object(Map::new())),
            Some(v @ Value::Object(_)) => Ok(v.clone()),
            Some(Value::String(s)) => Self::parse_args(name, id, s),
            Some(other) => Err(invalid_args(
                name,
                id,
                "not a JSON object",
                &other.to_string(),
            )),
        }
    }
}

fn invalid_args(name: &str, id: &str, why: &str, raw: &str) -> GenerationError {
    GenerationError {
        name: "InvalidToolCallJSON".into(),
        message: format!(
            "The model produced invalid JSON arguments for tool {name:?} (call {id}): {why}: {}",
            crate::llm::http::truncate(raw, 200)
        ),
        status_code: None,
        retryable: true,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::GeneratedToolCall;

    #[test]
    fn arguments_must_be_a_json_object() {
        let parse = |raw| GeneratedToolCall::parse_args("f", "c1", raw);
        assert_eq!(parse("").unwrap(), json!({}));
        assert_eq!(parse(r#"{"a":1}"#).unwrap(), json!({"a": 1}));
        for bad in [r#"{"a":"#, "[1]", "5", "\"s\"", "null"] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.retryable && e.name == "InvalidToolCallJSON",
                "{bad}: {e:?}"
            );
        }
        let value = |v: Option<serde_json::Value>| {
            GeneratedToolCall::args_from_value("f", "c1", v.as_ref())
        };
        assert_eq!(value(None).unwrap(), json!({}));
        assert_eq!(value(Some(json!({"a": 1}))).unwrap(), json!({"a": 1}));
        assert_eq!(value(Some(json!(r#"{"b":2}"#))).unwrap(), json!({"b": 2}));
        assert!(value(Some(json!(r#"{"b":"#))).is_err());
        assert!(value(Some(json!([1]))).is_err());
    }
}
