//! Decoding the Messages API event stream into [`StreamPart`]s.
//!
//! [`Decoder`] is a pure state machine fed one SSE event at a time (unit-tested without a
//! network); the provider shell's SSE framing drives it over a
//! response body. Tool-call arguments arrive as partial
//! JSON per content-block index and are parsed once, at `content_block_stop`. The stream ends
//! after `message_stop`; if the body ends or breaks first, the last item is a retryable error.

use std::collections::HashMap;

use serde_json::Value;

use crate::llm::http::truncate;
use crate::llm::{FinishReason, GeneratedToolCall, GenerationError, StreamPart};
use crate::schema::Usage;

/// One open content block.
#[derive(Debug)]
enum Block {
    Thinking {
        signature: String,
    },
    ToolUse {
        id: String,
        name: String,
        json: String,
        initial: Value,
    },
    /// Text (streamed as it comes) and kinds this engine does not replay (redacted thinking,
    /// server tools).
    Passive,
}

/// The state of one streamed message.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    blocks: HashMap<u64, Block>,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    stop_reason: Option<String>,
    done: bool,
}

impl Decoder {
    /// Whether `message_stop` was seen.
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// Take one event (`name` is the SSE `event:` field; the JSON `type` wins when present).
    pub(super) fn event(
        &mut self,
        name: &str,
        data: &str,
    ) -> Result<Vec<StreamPart>, GenerationError> {
        if data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            GenerationError::invalid_response(format!(
                "unparsable {name} event ({e}): {}",
                truncate(data, 200)
            ))
        })?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let mut out = Vec::new();
        match kind {
            "message_start" => self.usage(v.pointer("/message/usage")),
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                let s = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or("");
                let b = match s("type") {
                    "text" => {
                        push_text(&mut out, StreamPart::TextDelta, s("text"));
                        Block::Passive
                    }
                    "thinking" => {
                        push_text(&mut out, StreamPart::ReasoningDelta, s("thinking"));
                        Block::Thinking {
                            signature: s("signature").to_string(),
                        }
                    }
                    "tool_use" => Block::ToolUse {
                        id: s("id").to_string(),
                        name: s("name").to_string(),
                        json: String::new(),
                        initial: block.get("input").cloned().unwrap_or(Value::Null),
                    },
                    _ => Block::Passive,
                };
                self.blocks.insert(index, b);
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                let s = |k: &str| delta.get(k).and_then(Value::as_str).unwrap_or("");
                match (s("type"), self.blocks.get_mut(&index)) {
                    ("text_delta", _) => push_text(&mut out, StreamPart::TextDelta, s("text")),
                    ("thinking_delta", _) => {
                        push_text(&mut out, StreamPart::ReasoningDelta, s("thinking"));
                    }
                    ("signature_delta", Some(Block::Thinking { signature })) => {
                        signature.push_str(s("signature"));
                    }
                    ("input_json_delta", Some(Block::ToolUse { json, .. })) => {
                        json.push_str(s("partial_json"));
                    }
                    _ => {}
                }
            }
            "content_block_stop" => match self.blocks.remove(&index) {
                Some(Block::Thinking { signature }) => out.push(StreamPart::ReasoningEnd {
                    signature: (!signature.is_empty()).then_some(signature),
                }),
                Some(Block::ToolUse {
                    id,
                    name,
                    json,
                    initial,
                }) => {
                    let args = match (json.trim().is_empty(), initial) {
                        (true, Value::Null) => Value::Object(Default::default()),
                        (true, v) => v,
                        (false, _) => GeneratedToolCall::parse_args(&name, &id, &json)?,
                    };
                    out.push(StreamPart::ToolCall(GeneratedToolCall { id, name, args }));
                }
                Some(Block::Passive) | None => {}
            },
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_string());
                }
                self.usage(v.get("usage"));
            }
            "message_stop" => {
                self.done = true;
                out.push(StreamPart::Finish {
                    reason: finish_reason(self.stop_reason.as_deref()),
                    usage: Usage {
                        input_tokens: self.input_tokens,
                        output_tokens: self.output_tokens,
                        reasoning_tokens: 0,
                        total_tokens: self.input_tokens + self.output_tokens,
                        cached_input_tokens: self.cached_input_tokens,
                    },
                });
            }
            "error" => return Err(stream_error(&v)),
            _ => {} // ping and event types added after this was written
        }
        Ok(out)
    }

    /// Usage numbers are cumulative; later events overwrite earlier ones.
    fn usage(&mut self, usage: Option<&Value>) {
        let Some(u) = usage else { return };
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(x) = n("input_tokens") {
            self.input_tokens = x;
        }
        if let Some(x) = n("output_tokens") {
            self.output_tokens = x;
        }
        if let Some(x) = n("cache_read_input_tokens") {
            self.cached_input_tokens = x;
        }
    }
}

fn push_text(out: &mut Vec<StreamPart>, make: fn(String) -> StreamPart, text: &str) {
    if !text.is_empty() {
        out.push(make(text.to_string()));
    }
}

/// Anthropic `stop_reason` → [`FinishReason`] (the AI SDK's mapping).
pub(super) fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("end_turn" | "stop_sequence" | "pause_turn") => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("refusal") => FinishReason::Other("content-filter".into()),
        Some(other) => FinishReason::Other(other.to_string()),
        None => FinishReason::Other("unknown".into()),
    }
}

/// An in-stream `error` event, classified like the HTTP status its type stands for.
fn stream_error(v: &Value) -> GenerationError {
    let s = |k: &str| v.pointer(k).and_then(Value::as_str);
    let kind = s("/error/type").unwrap_or("api_error");
    let status = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    };
    GenerationError::api_call(status, kind, s("/error/message").unwrap_or("stream error"))
}

impl crate::llm::shell::Decoder for Decoder {
    type Framing = crate::llm::shell::framing::Sse;

    fn frame(
        &mut self,
        event: crate::llm::shell::framing::SseEvent,
    ) -> Result<Vec<StreamPart>, GenerationError> {
        Decoder::event(self, &event.name, &event.data)
    }

    fn end_of_body(&mut self) -> Result<Vec<StreamPart>, GenerationError> {
        Err(GenerationError {
            name: "StreamClosed".into(),
            message: "The model stream ended before its message_stop event.".into(),
            status_code: None,
            retryable: true,
            retry_after: None,
        })
    }

    fn is_done(&self) -> bool {
        Decoder::is_done(self)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::llm::shell::framing::parts;

    async fn collect(sse: &str) -> Vec<Result<StreamPart, GenerationError>> {
        let body = futures::stream::iter(
            sse.as_bytes()
                .chunks(7)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        parts::<Decoder, _>(body, Arc::new(vec!["SECRET".into()]))
            .collect()
            .await
    }

    #[tokio::test]
    async fn tool_json_split_across_deltas_and_chunks_is_assembled() {
        let sse = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" 1}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let got: Vec<_> = collect(sse).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            vec![
                StreamPart::ToolCall(GeneratedToolCall {
                    id: "toolu_1".into(),
                    name: "f".into(),
                    args: serde_json::json!({"a": 1}),
                }),
                StreamPart::Finish {
                    reason: FinishReason::ToolCalls,
                    usage: Usage {
                        input_tokens: 10,
                        output_tokens: 7,
                        reasoning_tokens: 0,
                        total_tokens: 17,
                        cached_input_tokens: 4,
                    },
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_body_ending_before_message_stop_ends_with_a_retryable_error() {
        let sse = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
        let got = collect(sse).await;
        assert_eq!(got[0], Ok(StreamPart::TextDelta("Hi".into())));
        let e = got[1].clone().unwrap_err();
        assert!(e.retryable && e.name == "StreamClosed", "{e:?}");
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn error_events_are_classified_like_their_http_status() {
        let mut d = Decoder::default();
        let e = d
            .event(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .unwrap_err();
        assert_eq!((e.status_code, e.retryable), (Some(529), true));
        let e = d
            .event(
                "error",
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"x"}}"#,
            )
            .unwrap_err();
        assert_eq!((e.status_code, e.retryable), (Some(400), false));
        assert_eq!(finish_reason(Some("max_tokens")), FinishReason::Length);
        assert_eq!(finish_reason(Some("end_turn")), FinishReason::Stop);
    }
}
