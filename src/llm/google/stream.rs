//! Decoding the `streamGenerateContent?alt=sse` stream into [`StreamPart`]s.
//!
//! [`Decoder`] is a pure state machine fed one `data:` payload (a `GenerateContentResponse`)
//! at a time, unit-tested without a network; the provider shell's SSE framing drives it over a
//! response body.
//!
//! | response field | part |
//! | --- | --- |
//! | `candidates[0].content.parts[].text` with `thought: true` | `ReasoningDelta`; the block ends (`ReasoningEnd`) at the first other part, or at the end |
//! | `candidates[0].content.parts[].text` | `TextDelta` |
//! | `candidates[0].content.parts[].functionCall` | `ToolCall` with the id `call_<n>_<name>` |
//! | `thoughtSignature` on a thought part | the signature of that reasoning block |
//! | `thoughtSignature` on a text or function-call part | a `ReasoningEnd` of its own, without text (the request puts it back on the call or the text) |
//! | `candidates[0].finishReason`, `promptFeedback.blockReason` | the `Finish` reason |
//! | `usageMetadata` (the last one wins) | the `Finish` usage |
//! | `error` | a classified [`GenerationError`] |
//!
//! Gemini sends no end marker: `Finish` comes when the body ends after a finish reason. A body
//! that ends or breaks before one ends with a retryable error. Unknown fields are ignored.

use serde_json::{Map, Value};

use crate::llm::http::truncate;
use crate::llm::{FinishReason, GeneratedToolCall, GenerationError, StreamPart};
use crate::schema::Usage;

/// The state of one streamed response.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// Whether a reasoning block is open (a `ReasoningEnd` is owed).
    reasoning: bool,
    /// Function calls so far: the next call's number.
    calls: usize,
    finish_reason: Option<String>,
    usage: Usage,
    done: bool,
}

impl Decoder {
    /// Whether `Finish` has been produced.
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// Take one SSE `data:` payload: a response object (or, from a server that ignores
    /// `alt=sse`, an array of them).
    pub(super) fn data(&mut self, data: &str) -> Result<Vec<StreamPart>, GenerationError> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            GenerationError::invalid_response(format!(
                "unparsable chunk ({e}): {}",
                truncate(data, 200)
            ))
        })?;
        let mut out = Vec::new();
        match &v {
            Value::Array(items) => {
                for item in items {
                    self.response(item, &mut out)?;
                }
            }
            other => self.response(other, &mut out)?,
        }
        Ok(out)
    }

    fn response(&mut self, v: &Value, out: &mut Vec<StreamPart>) -> Result<(), GenerationError> {
        if let Some(error) = v.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(error));
        }
        if let Some(u) = v.get("usageMetadata").filter(|u| u.is_object()) {
            self.usage = usage(u);
        }
        if let Some(reason) = v
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
        {
            self.finish_reason = Some(reason.to_string());
        }
        let candidate = v
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["index"].as_u64().unwrap_or(0) == 0)
                    .or_else(|| cs.first())
            });
        let Some(candidate) = candidate else {
            return Ok(());
        };
        let parts = candidate
            .pointer("/content/parts")
            .and_then(Value::as_array);
        for part in parts.into_iter().flatten() {
            if let Value::Object(part) = part {
                self.part(part, out)?;
            }
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
            self.end_reasoning(out);
        }
        Ok(())
    }

    fn part(
        &mut self,
        part: &Map<String, Value>,
        out: &mut Vec<StreamPart>,
    ) -> Result<(), GenerationError> {
        let signature = part
            .get("thoughtSignature")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let text = part.get("text").and_then(Value::as_str);
        let thought = part.get("thought").and_then(Value::as_bool) == Some(true);
        if let Some(call) = part.get("functionCall") {
            self.end_reasoning(out);
            if signature.is_some() {
                out.push(StreamPart::ReasoningEnd { signature });
            }
            let name = call["name"].as_str().unwrap_or_default().to_string();
            if name.is_empty() {
                return Err(GenerationError::invalid_response(format!(
                    "a function call lacks its name: {}",
                    truncate(&call.to_string(), 200)
                )));
            }
            let id = format!("call_{}_{name}", self.calls);
            self.calls += 1;
            let args = GeneratedToolCall::args_from_value(&name, &id, call.get("args"))?;
            out.push(StreamPart::ToolCall(GeneratedToolCall { id, name, args }));
        } else if thought {
            if let Some(t) = text.filter(|t| !t.is_empty()) {
                self.reasoning = true;
                out.push(StreamPart::ReasoningDelta(t.to_string()));
            }
            if signature.is_some() {
                self.reasoning = false;
                out.push(StreamPart::ReasoningEnd { signature });
            }
        } else if text.is_some() || signature.is_some() {
            self.end_reasoning(out);
            if let Some(t) = text.filter(|t| !t.is_empty()) {
                out.push(StreamPart::TextDelta(t.to_string()));
            }
            if signature.is_some() {
                out.push(StreamPart::ReasoningEnd { signature });
            }
        }
        Ok(())
    }

    /// The body ended: finish if a finish reason came, else fail.
    pub(super) fn end_of_body(&mut self) -> Result<Vec<StreamPart>, GenerationError> {
        let Some(reason) = self.finish_reason.as_deref() else {
            return Err(GenerationError {
                name: "StreamClosed".into(),
                message: "The model stream ended before its finishReason.".into(),
                status_code: None,
                retryable: true,
                retry_after: None,
            });
        };
        let reason = match finish_reason(reason) {
            FinishReason::Stop if self.calls > 0 => FinishReason::ToolCalls,
            r => r,
        };
        let mut out = Vec::new();
        self.end_reasoning(&mut out);
        out.push(StreamPart::Finish {
            reason,
            usage: self.usage,
        });
        self.done = true;
        Ok(out)
    }

    fn end_reasoning(&mut self, out: &mut Vec<StreamPart>) {
        if std::mem::take(&mut self.reasoning) {
            out.push(StreamPart::ReasoningEnd { signature: None });
        }
    }
}

/// A `usageMetadata` object → [`Usage`] (the AI SDK's reading: output excludes thoughts).
fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let input = n("promptTokenCount").unwrap_or(0);
    let output = n("candidatesTokenCount").unwrap_or(0);
    let reasoning = n("thoughtsTokenCount").unwrap_or(0);
    Usage {
        input_tokens: input,
        output_tokens: output,
        reasoning_tokens: reasoning,
        total_tokens: n("totalTokenCount").unwrap_or(input + output + reasoning),
        cached_input_tokens: n("cachedContentTokenCount").unwrap_or(0),
    }
}

/// Gemini `finishReason` (or `blockReason`) → [`FinishReason`] (the AI SDK's mapping; `STOP`
/// becomes `ToolCalls` when the response called functions).
pub(super) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::Other("content-filter".into())
        }
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" => FinishReason::Other("error".into()),
        "OTHER" | "FINISH_REASON_UNSPECIFIED" | "BLOCK_REASON_UNSPECIFIED" => {
            FinishReason::Other("other".into())
        }
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

/// An in-stream `error` object (`{code, message, status}`), classified by its HTTP code.
fn stream_error(e: &Value) -> GenerationError {
    let status_name = e.get("status").and_then(Value::as_str).unwrap_or_default();
    let code = e
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c));
    let status = code.unwrap_or(match status_name {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "RESOURCE_EXHAUSTED" => 429,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    });
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("stream error");
    GenerationError::api_call(status, status_name, message)
}

impl crate::llm::shell::Decoder for Decoder {
    type Framing = crate::llm::shell::framing::Sse;

    fn frame(
        &mut self,
        event: crate::llm::shell::framing::SseEvent,
    ) -> Result<Vec<StreamPart>, GenerationError> {
        self.data(&event.data)
    }

    fn end_of_body(&mut self) -> Result<Vec<StreamPart>, GenerationError> {
        Decoder::end_of_body(self)
    }

    fn is_done(&self) -> bool {
        Decoder::is_done(self)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chunk(parts: Value, finish: Option<&str>) -> String {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        json!({"candidates": [c], "modelVersion": "gemini-2.5-flash"}).to_string()
    }

    fn feed(d: &mut Decoder, chunks: &[String]) -> Vec<StreamPart> {
        let mut got = Vec::new();
        for c in chunks {
            got.extend(d.data(c).unwrap());
        }
        got.extend(d.end_of_body().unwrap());
        got
    }

    #[test]
    fn thoughts_close_before_text_and_signatures_follow_their_parts() {
        let mut d = Decoder::default();
        let got = feed(
            &mut d,
            &[
                chunk(json!([{"text": "Plan", "thought": true}]), None),
                chunk(
                    json!([{"text": "ned.", "thought": true, "thoughtSignature": "s1"}]),
                    None,
                ),
                chunk(json!([{"text": "Hi"}]), None),
                chunk(
                    json!([{"text": "", "thoughtSignature": "s2"}]),
                    Some("STOP"),
                ),
            ],
        );
        assert_eq!(
            got,
            vec![
                StreamPart::ReasoningDelta("Plan".into()),
                StreamPart::ReasoningDelta("ned.".into()),
                StreamPart::ReasoningEnd {
                    signature: Some("s1".into())
                },
                StreamPart::TextDelta("Hi".into()),
                StreamPart::ReasoningEnd {
                    signature: Some("s2".into())
                },
                StreamPart::Finish {
                    reason: FinishReason::Stop,
                    usage: Usage::default()
                },
            ]
        );
        assert!(d.is_done());
    }

    #[test]
    fn function_calls_get_numbered_ids_and_finish_with_tool_calls() {
        let mut d = Decoder::default();
        let usage = json!({"usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4,
            "thoughtsTokenCount": 3, "totalTokenCount": 16, "cachedContentTokenCount": 2}});
        let got = feed(
            &mut d,
            &[
                chunk(json!([{"text": "hm", "thought": true}]), None),
                chunk(
                    json!([{"functionCall": {"name": "f", "args": {"a": 1}},
                            "thoughtSignature": "sig"},
                           {"functionCall": {"name": "g"}}]),
                    Some("STOP"),
                ),
                usage.to_string(),
            ],
        );
        let call = |id: &str, name: &str, args: Value| {
            StreamPart::ToolCall(GeneratedToolCall {
                id: id.into(),
                name: name.into(),
                args,
            })
        };
        assert_eq!(
            got,
            vec![
                StreamPart::ReasoningDelta("hm".into()),
                StreamPart::ReasoningEnd { signature: None },
                StreamPart::ReasoningEnd {
                    signature: Some("sig".into())
                },
                call("call_0_f", "f", json!({"a": 1})),
                call("call_1_g", "g", json!({})),
                StreamPart::Finish {
                    reason: FinishReason::ToolCalls,
                    usage: Usage {
                        input_tokens: 9,
                        output_tokens: 4,
                        reasoning_tokens: 3,
                        total_tokens: 16,
                        cached_input_tokens: 2,
                    },
                },
            ]
        );
    }

    #[test]
    fn errors_blocks_and_truncation_are_classified() {
        let mut d = Decoder::default();
        let e = d
            .data(r#"{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}"#)
            .unwrap_err();
        assert_eq!((e.status_code, e.retryable), (Some(503), true));
        assert_eq!(e.message, "UNAVAILABLE: overloaded");
        let e = d.data(r#"{"error":{"message":"bad","status":"INVALID_ARGUMENT"}}"#);
        assert_eq!(e.unwrap_err().status_code, Some(400));
        let e = d.data("{\"candidates\": [").unwrap_err();
        assert_eq!(
            (e.name.as_str(), e.retryable),
            ("InvalidResponseDataError", true)
        );
        let e = Decoder::default().end_of_body().unwrap_err();
        assert_eq!((e.name.as_str(), e.retryable), ("StreamClosed", true));
        let mut d = Decoder::default();
        let got = feed(
            &mut d,
            &[r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#.into()],
        );
        let blocked = FinishReason::Other("content-filter".into());
        assert!(matches!(&got[..], [StreamPart::Finish { reason, .. }] if *reason == blocked));
        assert_eq!(finish_reason("MAX_TOKENS"), FinishReason::Length);
        assert_eq!(finish_reason("OTHER"), FinishReason::Other("other".into()));
        assert_eq!(finish_reason("RECITATION"), blocked);
    }
}
