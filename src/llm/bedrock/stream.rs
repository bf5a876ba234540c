//! Decoding the ConverseStream answer (AWS event-stream messages) into [`StreamPart`]s.
//!
//! [`Decoder`] is a pure state machine fed one event-stream message at a time, unit-tested
//! without a network; the shell's [`AwsEventStream`] framing drives it over a response body.
//!
//! | message (`:event-type` / `:exception-type`) | part |
//! | --- | --- |
//! | `contentBlockDelta` `delta.text` | `TextDelta` |
//! | `contentBlockDelta` `delta.reasoningContent.text` / `.signature` | `ReasoningDelta` / the block's signature; `ReasoningEnd` when the block stops |
//! | `contentBlockStart` `start.toolUse` + `delta.toolUse.input` fragments + `contentBlockStop` | `ToolCall` (arguments parsed once, at the stop) |
//! | `messageStop` `stopReason` | the `Finish` reason |
//! | `metadata` `usage` (`inputTokens`, `outputTokens`, `cacheReadInputTokens`, ...) | the `Finish` usage; `Finish` comes at `metadata` after `messageStop`, or at the end of the body |
//! | exception `throttlingException`, `serviceUnavailableException`, `internalServerException`, `modelStreamErrorException` | a retryable `APICallError` (429, 503, 500, 424) |
//! | exception `validationException`, `accessDeniedException`, other | a non-retryable `APICallError` (400, 403, ...) |
//!
//! A body that ends before `messageStop` ends with a retryable error. Unknown events and fields
//! are ignored.

use std::collections::BTreeMap;

use aws_smithy_types::event_stream::{HeaderValue, Message};
use serde_json::Value;

use crate::llm::http::truncate;
use crate::llm::shell::framing::AwsEventStream;
use crate::llm::{FinishReason, GeneratedToolCall, GenerationError, StreamPart};
use crate::schema::Usage;

/// A tool call being streamed.
#[derive(Debug, Default)]
struct OpenCall {
    id: String,
    name: String,
    input: String,
}

/// The state of one streamed answer.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// Tool calls by content block index.
    calls: BTreeMap<u64, OpenCall>,
    /// Reasoning blocks still open (a `ReasoningEnd` is owed), with their signatures.
    reasoning: BTreeMap<u64, Option<String>>,
    stop_reason: Option<String>,
    usage: Usage,
    done: bool,
}

impl Decoder {
    /// Take one event-stream message.
    pub(crate) fn message(
        &mut self,
        message: &Message,
    ) -> Result<Vec<StreamPart>, GenerationError> {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| match h.value() {
                    HeaderValue::String(s) => Some(s.as_str().to_string()),
                    _ => None,
                })
        };
        match header(":message-type").as_deref() {
            Some("event") => {}
            Some("exception") => {
                let kind = header(":exception-type").unwrap_or_default();
                return Err(exception(&kind, message.payload()));
            }
            Some("error") => {
                let code = header(":error-code").unwrap_or_default();
                let text = header(":error-message").unwrap_or_default();
                return Err(exception(&code, text.as_bytes()));
            }
            _ => return Ok(Vec::new()),
        }
        let payload: Value = serde_json::from_slice(message.payload()).map_err(|e| {
            GenerationError::invalid_response(format!(
                "unparsable event ({e}): {}",
                truncate(&String::from_utf8_lossy(message.payload()), 200)
            ))
        })?;
        let event = header(":event-type").unwrap_or_default();
        self.event(&event, &payload)
    }

    fn event(&mut self, event: &str, v: &Value) -> Result<Vec<StreamPart>, GenerationError> {
        let index = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut out = Vec::new();
        match event {
            "contentBlockStart" => {
                if let Some(tool) = v.pointer("/start/toolUse") {
                    let s = |k: &str| tool.get(k).and_then(Value::as_str).unwrap_or_default();
                    self.calls.insert(
                        index,
                        OpenCall {
                            id: s("toolUseId").into(),
                            name: s("name").into(),
                            input: String::new(),
                        },
                    );
                }
            }
            "contentBlockDelta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                if let Some(t) = delta.get("text").and_then(Value::as_str)
                    && !t.is_empty()
                {
                    out.push(StreamPart::TextDelta(t.into()));
                }
                if let Some(r) = delta.get("reasoningContent") {
                    let open = self.reasoning.entry(index).or_default();
                    if let Some(sig) = r.get("signature").and_then(Value::as_str) {
                        *open = Some(sig.into());
                    }
                    if let Some(t) = r.get("text").and_then(Value::as_str)
                        && !t.is_empty()
                    {
                        out.push(StreamPart::ReasoningDelta(t.into()));
                    }
                }
                if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str) {
                    self.calls.entry(index).or_default().input.push_str(input);
                }
            }
            "contentBlockStop" => {
                if let Some(signature) = self.reasoning.remove(&index) {
                    out.push(StreamPart::ReasoningEnd { signature });
                }
                if let Some(call) = self.calls.remove(&index) {
                    let args = GeneratedToolCall::parse_args(&call.name, &call.id, &call.input)?;
                    out.push(StreamPart::ToolCall(GeneratedToolCall {
                        id: call.id,
                        name: call.name,
                        args,
                    }));
                }
            }
            "messageStop" => {
                let reason = v
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                self.stop_reason = Some(reason.into());
            }
            "metadata" => {
                if let Some(u) = v.get("usage") {
                    self.usage = usage(u);
                }
                if self.stop_reason.is_some() {
                    out.extend(self.finish());
                }
            }
            _ => {}
        }
        Ok(out)
    }

    fn finish(&mut self) -> Option<StreamPart> {
        if self.done {
            return None;
        }
        self.done = true;
        let reason = finish_reason(self.stop_reason.as_deref().unwrap_or("end_turn"));
        Some(StreamPart::Finish {
            reason,
            usage: self.usage,
        })
    }
}

fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cache_read = n("cacheReadInputTokens");
    let cache_write = n("cacheWriteInputTokens");
    // Converse counts cached tokens apart from `inputTokens`; Perstack's input is all of them.
    let input = n("inputTokens") + cache_read + cache_write;
    let output = n("outputTokens");
    Usage {
        input_tokens: input,
        output_tokens: output,
        reasoning_tokens: 0,
        total_tokens: n("totalTokens").max(input + output),
        cached_input_tokens: cache_read,
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        other => FinishReason::Other(other.into()),
    }
}

/// An exception message inside a 200 stream, classified as the HTTP status Bedrock gives the
/// same exception before a stream starts.
pub(crate) fn exception(kind: &str, payload: &[u8]) -> GenerationError {
    let message = serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| truncate(String::from_utf8_lossy(payload).trim(), 200));
    let status = match kind {
        "throttlingException" | "ThrottlingException" => 429,
        "serviceUnavailableException" | "ServiceUnavailableException" => 503,
        "internalServerException" | "InternalServerException" => 500,
        // A model failed mid-stream; Bedrock answers it with 424 before a stream.
        "modelStreamErrorException" | "ModelStreamErrorException" => 424,
        "modelTimeoutException" | "ModelTimeoutException" => 408,
        "validationException" | "ValidationException" => 400,
        "accessDeniedException" | "AccessDeniedException" => 403,
        "resourceNotFoundException" | "ResourceNotFoundException" => 404,
        _ => 400,
    };
    let mut e = GenerationError::api_call(status, kind, &message);
    // 424 is not retryable by status alone, but a stream error of the model may pass.
    if status == 424 {
        e.retryable = true;
    }
    e
}

impl crate::llm::shell::Decoder for Decoder {
    type Framing = AwsEventStream;

    fn frame(&mut self, message: Message) -> Result<Vec<StreamPart>, GenerationError> {
        self.message(&message)
    }

    fn end_of_body(&mut self) -> Result<Vec<StreamPart>, GenerationError> {
        if self.stop_reason.is_some() {
            return Ok(self.finish().into_iter().collect());
        }
        Err(GenerationError {
            name: "StreamClosed".into(),
            message: "The model stream ended before its messageStop event.".into(),
            status_code: None,
            retryable: true,
            retry_after: None,
        })
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::event_stream::Header;
    use serde_json::json;

    use super::*;
    use crate::llm::shell::Decoder as _;

    fn event(kind: &str, payload: Value) -> Message {
        Message::new(payload.to_string().into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(kind.to_string().into()),
            ))
    }

    fn exception_message(kind: &str, message: &str) -> Message {
        Message::new(json!({"message": message}).to_string().into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("exception".into()),
            ))
            .add_header(Header::new(
                ":exception-type",
                HeaderValue::String(kind.to_string().into()),
            ))
    }

    fn run(messages: Vec<Message>) -> (Vec<StreamPart>, Option<GenerationError>) {
        let mut d = Decoder::default();
        let mut parts = Vec::new();
        for m in messages {
            match d.frame(m) {
                Ok(p) => parts.extend(p),
                Err(e) => return (parts, Some(e)),
            }
            if d.is_done() {
                return (parts, None);
            }
        }
        match d.end_of_body() {
            Ok(p) => parts.extend(p),
            Err(e) => return (parts, Some(e)),
        }
        (parts, None)
    }

    #[test]
    fn text_reasoning_tool_calls_and_usage_become_parts() {
        let (parts, err) = run(vec![
            event("messageStart", json!({"role": "assistant"})),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0,
                "delta": {"reasoningContent": {"text": "Let me look."}}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0,
                "delta": {"reasoningContent": {"signature": "sig-1"}}}),
            ),
            event("contentBlockStop", json!({"contentBlockIndex": 0})),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1,
                "delta": {"text": "Reading."}}),
            ),
            event("contentBlockStop", json!({"contentBlockIndex": 1})),
            event(
                "contentBlockStart",
                json!({"contentBlockIndex": 2,
                "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "readTextFile"}}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 2,
                "delta": {"toolUse": {"input": "{\"path\":"}}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 2,
                "delta": {"toolUse": {"input": "\"a.txt\"}"}}}),
            ),
            event("contentBlockStop", json!({"contentBlockIndex": 2})),
            event("messageStop", json!({"stopReason": "tool_use"})),
            event(
                "metadata",
                json!({"usage": {"inputTokens": 10, "outputTokens": 5,
                "totalTokens": 15, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 7},
                "metrics": {"latencyMs": 12}}),
            ),
        ]);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            parts,
            vec![
                StreamPart::ReasoningDelta("Let me look.".into()),
                StreamPart::ReasoningEnd {
                    signature: Some("sig-1".into())
                },
                StreamPart::TextDelta("Reading.".into()),
                StreamPart::ToolCall(GeneratedToolCall {
                    id: "tooluse_1".into(),
                    name: "readTextFile".into(),
                    args: json!({"path": "a.txt"}),
                }),
                StreamPart::Finish {
                    reason: FinishReason::ToolCalls,
                    usage: Usage {
                        input_tokens: 117,
                        output_tokens: 5,
                        reasoning_tokens: 0,
                        total_tokens: 122,
                        cached_input_tokens: 100,
                    },
                },
            ]
        );
    }

    #[test]
    fn exceptions_inside_the_stream_carry_their_retry_class() {
        for (kind, status, retryable) in [
            ("throttlingException", 429, true),
            ("modelStreamErrorException", 424, true),
            ("internalServerException", 500, true),
            ("serviceUnavailableException", 503, true),
            ("validationException", 400, false),
        ] {
            let (parts, err) = run(vec![
                event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0,
                    "delta": {"text": "half"}}),
                ),
                exception_message(kind, "went wrong"),
            ]);
            assert_eq!(parts.len(), 1);
            let e = err.unwrap();
            assert_eq!(
                (e.status_code, e.retryable),
                (Some(status), retryable),
                "{kind}: {e:?}"
            );
            assert_eq!(e.message, format!("{kind}: went wrong"));
        }
    }

    #[test]
    fn a_body_without_message_stop_is_a_retryable_error_and_metadata_may_be_missing() {
        let (_, err) = run(vec![event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0,
            "delta": {"text": "half"}}),
        )]);
        assert!(err.unwrap().retryable);
        let (parts, err) = run(vec![event(
            "messageStop",
            json!({"stopReason": "max_tokens"}),
        )]);
        assert!(err.is_none());
        assert!(matches!(
            parts.as_slice(),
            [StreamPart::Finish {
                reason: FinishReason::Length,
                ..
            }]
        ));
        let (_, err) = run(vec![
            event(
                "contentBlockStart",
                json!({"contentBlockIndex": 0,
            "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0,
                "delta": {"toolUse": {"input": "{\"a\""}}}),
            ),
            event("contentBlockStop", json!({"contentBlockIndex": 0})),
        ]);
        assert_eq!(err.unwrap().name, "InvalidToolCallJSON");
    }
}
