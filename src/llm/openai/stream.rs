//! Decoding the Chat Completions SSE stream into [`StreamPart`]s.
//!
//! [`Decoder`] is a pure state machine fed one `data:` payload at a time (unit-tested without
//! a network); the provider shell's SSE framing drives it over a
//! response body.
//!
//! | chunk field | part |
//! | --- | --- |
//! | `choices[0].delta.reasoning_content` (DeepSeek; `reasoning` on some gateways) | `ReasoningDelta`, closed by `ReasoningEnd` before the first text or call, or at the end |
//! | `choices[0].delta.content` | `TextDelta` |
//! | `choices[0].delta.tool_calls[]` | accumulated per `index`; one `ToolCall` each once the choice finishes |
//! | `choices[0].finish_reason` | the `Finish` reason |
//! | `usage` (the last chunk, thanks to `stream_options.include_usage`) | the `Finish` usage |
//! | `error` | a classified [`GenerationError`] |
//!
//! `Finish` comes at `data: [DONE]`, or when the body ends after a `finish_reason`. A body that
//! ends or breaks before either ends with a retryable error. Unknown fields are ignored.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::llm::http::truncate;
use crate::llm::{FinishReason, GeneratedToolCall, GenerationError, StreamPart};
use crate::schema::Usage;

/// A tool call being streamed.
#[derive(Debug, Default)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
}

/// The state of one streamed completion.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    /// Open tool calls by their `index`; a `BTreeMap` so they come out in index order.
    calls: BTreeMap<u64, PendingCall>,
    /// Whether a reasoning block is open (a `ReasoningEnd` is owed).
    reasoning: bool,
    finish_reason: Option<String>,
    usage: Usage,
    done: bool,
}

impl Decoder {
    /// Whether the stream is complete (`Finish` has been produced).
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// Take one SSE `data:` payload.
    pub(super) fn data(&mut self, data: &str) -> Result<Vec<StreamPart>, GenerationError> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        if data == "[DONE]" {
            return self.finish();
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            GenerationError::invalid_response(format!(
                "unparsable chunk ({e}): {}",
                truncate(data, 200)
            ))
        })?;
        if let Some(error) = v.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(error));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = usage(u);
        }
        let mut out = Vec::new();
        let choice = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["index"].as_u64().unwrap_or(0) == 0));
        let Some(choice) = choice else {
            return Ok(out);
        };
        let delta = &choice["delta"];
        let reasoning = delta["reasoning_content"]
            .as_str()
            .or_else(|| delta["reasoning"].as_str())
            .unwrap_or("");
        if !reasoning.is_empty() {
            self.reasoning = true;
            out.push(StreamPart::ReasoningDelta(reasoning.to_string()));
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.end_reasoning(&mut out);
            out.push(StreamPart::TextDelta(text.to_string()));
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            self.end_reasoning(&mut out);
            for c in calls {
                self.call_fragment(c);
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_string());
            self.end_reasoning(&mut out);
            out.extend(self.take_calls()?);
        }
        Ok(out)
    }

    /// The body ended without `[DONE]`: finish if the choice finished, else fail.
    pub(super) fn end_of_body(&mut self) -> Result<Vec<StreamPart>, GenerationError> {
        if self.finish_reason.is_some() {
            return self.finish();
        }
        Err(GenerationError {
            name: "StreamClosed".into(),
            message: "The model stream ended before its finish_reason and [DONE].".into(),
            status_code: None,
            retryable: true,
            retry_after: None,
        })
    }

    fn finish(&mut self) -> Result<Vec<StreamPart>, GenerationError> {
        let mut out = Vec::new();
        self.end_reasoning(&mut out);
        let had_calls = !self.calls.is_empty();
        out.extend(self.take_calls()?);
        let reason = match self.finish_reason.as_deref() {
            None if had_calls => FinishReason::ToolCalls,
            r => finish_reason(r),
        };
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

    /// Merge one `tool_calls[]` fragment. Without an `index` (some compatible servers), a
    /// fragment with a new id opens a new call and one without continues the last call.
    fn call_fragment(&mut self, c: &Value) {
        let id = c["id"].as_str().filter(|s| !s.is_empty());
        let index = c["index"].as_u64().unwrap_or_else(|| {
            let last = self
                .calls
                .last_key_value()
                .map(|(k, v)| (*k, v.id.as_str()));
            match (id, last) {
                (Some(id), Some((k, last_id))) if id != last_id => k + 1,
                (_, Some((k, _))) => k,
                (_, None) => 0,
            }
        });
        let call = self.calls.entry(index).or_default();
        if let Some(id) = id
            && call.id.is_empty()
        {
            call.id = id.to_string();
        }
        if let Some(name) = c["function"]["name"].as_str()
            && call.name.is_empty()
        {
            call.name = name.to_string();
        }
        if let Some(args) = c["function"]["arguments"].as_str() {
            call.arguments.push_str(args);
        }
    }

    /// Every open call, parsed, in index order.
    fn take_calls(&mut self) -> Result<Vec<StreamPart>, GenerationError> {
        std::mem::take(&mut self.calls)
            .into_values()
            .map(|c| {
                if c.id.is_empty() || c.name.is_empty() {
                    return Err(GenerationError::invalid_response(format!(
                        "a streamed tool call lacks its id or name (id {:?}, name {:?})",
                        c.id, c.name
                    )));
                }
                let args = GeneratedToolCall::parse_args(&c.name, &c.id, &c.arguments)?;
                Ok(StreamPart::ToolCall(GeneratedToolCall {
                    id: c.id,
                    name: c.name,
                    args,
                }))
            })
            .collect()
    }
}

/// A `usage` object → [`Usage`]. DeepSeek reports cache hits as `prompt_cache_hit_tokens`.
fn usage(u: &Value) -> Usage {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64);
    let input = n("/prompt_tokens").unwrap_or(0);
    let output = n("/completion_tokens").unwrap_or(0);
    Usage {
        input_tokens: input,
        output_tokens: output,
        reasoning_tokens: n("/completion_tokens_details/reasoning_tokens").unwrap_or(0),
        total_tokens: n("/total_tokens").unwrap_or(input + output),
        cached_input_tokens: n("/prompt_tokens_details/cached_tokens")
            .or_else(|| n("/prompt_cache_hit_tokens"))
            .unwrap_or(0),
    }
}

/// Chat Completions `finish_reason` → [`FinishReason`] (the AI SDK's mapping).
pub(super) fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop") => FinishReason::Stop,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::Other("content-filter".into()),
        Some(other) => FinishReason::Other(other.to_string()),
        None => FinishReason::Other("unknown".into()),
    }
}

/// An in-stream `error` object, classified like the HTTP status its type or code stands for.
fn stream_error(e: &Value) -> GenerationError {
    let s = |k: &str| e.get(k).and_then(Value::as_str);
    let code = e.get("code").map(|c| match c {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let kind = s("type").map(str::to_string).or(code).unwrap_or_default();
    let status = match kind.as_str() {
        k if k.contains("rate_limit") => 429,
        "invalid_request_error" | "context_length_exceeded" => 400,
        "authentication_error" | "invalid_api_key" => 401,
        "permission_error" => 403,
        _ => 500,
    };
    let message = s("message").unwrap_or("stream error");
    GenerationError::api_call(status, &kind, message)
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

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        json!({"id": "c", "object": "chat.completion.chunk", "choices":
            [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    }

    #[test]
    fn reasoning_closes_before_text_and_usage_lands_in_finish() {
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for data in [
            chunk(
                json!({"role": "assistant", "reasoning_content": "hm"}),
                None,
            ),
            chunk(json!({"content": "ok"}), Some("stop")),
            json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3,
                "total_tokens": 8, "prompt_cache_hit_tokens": 2}})
            .to_string(),
            "[DONE]".into(),
        ] {
            got.extend(d.data(&data).unwrap());
        }
        assert_eq!(
            got,
            vec![
                StreamPart::ReasoningDelta("hm".into()),
                StreamPart::ReasoningEnd { signature: None },
                StreamPart::TextDelta("ok".into()),
                StreamPart::Finish {
                    reason: FinishReason::Stop,
                    usage: Usage {
                        input_tokens: 5,
                        output_tokens: 3,
                        reasoning_tokens: 0,
                        total_tokens: 8,
                        cached_input_tokens: 2,
                    },
                },
            ]
        );
        assert!(d.is_done());
    }

    #[test]
    fn fragments_without_an_index_are_grouped_by_id() {
        let mut d = Decoder::default();
        let call = |id: Option<&str>, name: Option<&str>, args: &str| {
            let mut c = json!({"function": {"arguments": args}});
            if let Some(id) = id {
                c["id"] = json!(id);
            }
            if let Some(name) = name {
                c["function"]["name"] = json!(name);
            }
            chunk(json!({"tool_calls": [c]}), None)
        };
        for data in [
            call(Some("a"), Some("f"), "{\"x\":"),
            call(None, None, "1}"),
            call(Some("b"), Some("g"), "{}"),
        ] {
            assert_eq!(d.data(&data).unwrap(), vec![]);
        }
        let got = d.end_of_body();
        assert!(got.is_err(), "no finish_reason yet: {got:?}");
        let got = d.data(&chunk(json!({}), Some("tool_calls"))).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| match p {
                StreamPart::ToolCall(c) => (c.id.as_str(), c.args.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, vec![("a", json!({"x": 1})), ("b", json!({}))]);
        let end = d.end_of_body().unwrap();
        assert!(matches!(end[..], [StreamPart::Finish { .. }]), "{end:?}");
    }

    #[test]
    fn error_chunks_are_classified_like_their_http_status() {
        let mut d = Decoder::default();
        let e = d
            .data(r#"{"error":{"message":"slow down","type":"rate_limit_exceeded"}}"#)
            .unwrap_err();
        assert_eq!((e.status_code, e.retryable), (Some(429), true));
        let e = d
            .data(r#"{"error":{"message":"bad","type":"invalid_request_error"}}"#)
            .unwrap_err();
        assert_eq!((e.status_code, e.retryable), (Some(400), false));
        let e = d.data("{not json").unwrap_err();
        assert_eq!(
            (e.name.as_str(), e.retryable),
            ("InvalidResponseDataError", true)
        );
        assert_eq!(finish_reason(Some("length")), FinishReason::Length);
        assert_eq!(
            finish_reason(Some("content_filter")),
            FinishReason::Other("content-filter".into())
        );
    }
}
