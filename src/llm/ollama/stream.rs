//! Decoding the `/api/chat` NDJSON stream into [`StreamPart`]s.
//!
//! [`Decoder`] is a pure state machine fed one line at a time (unit-tested without a network);
//! the provider shell's NDJSON framing splits a response body into lines (a line may span
//! chunks, and a chunk may hold many lines) and drives it.
//!
//! | line field | part |
//! | --- | --- |
//! | `message.thinking` | `ReasoningDelta`, closed by `ReasoningEnd` before the first text or call, or at the end |
//! | `message.content` | `TextDelta` |
//! | `message.tool_calls[].function {name, arguments}` | one `ToolCall` each, with the id `call_<n>_<name>` |
//! | `done: true` with `done_reason`, `prompt_eval_count`, `eval_count` | `Finish` |
//! | `error` | a retryable `APICallError` |
//!
//! A line that is not JSON, and a body that ends or breaks before `done`, end the stream with a
//! retryable error. Lines after `done` are ignored.

use serde_json::Value;

use crate::llm::http::truncate;
use crate::llm::{FinishReason, GeneratedToolCall, GenerationError, StreamPart};
use crate::schema::Usage;

/// The state of one streamed chat answer.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    /// Whether a reasoning block is open (a `ReasoningEnd` is owed).
    reasoning: bool,
    /// Tool calls so far: the next call's number.
    calls: usize,
    done: bool,
}

impl Decoder {
    /// Whether `done` was seen (`Finish` has been produced).
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// Take one NDJSON line.
    pub(super) fn line(&mut self, line: &str) -> Result<Vec<StreamPart>, GenerationError> {
        let line = line.trim();
        if line.is_empty() || self.done {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(line).map_err(|e| {
            GenerationError::invalid_response(format!(
                "unparsable line ({e}): {}",
                truncate(line, 200)
            ))
        })?;
        if let Some(error) = v.get("error").filter(|e| !e.is_null()) {
            let message = match error {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| error.to_string(), str::to_string),
                other => other.to_string(),
            };
            return Err(GenerationError {
                name: "APICallError".into(),
                message,
                status_code: None,
                retryable: true,
                retry_after: None,
            });
        }
        let mut out = Vec::new();
        let message = &v["message"];
        if let Some(t) = message["thinking"].as_str().filter(|t| !t.is_empty()) {
            self.reasoning = true;
            out.push(StreamPart::ReasoningDelta(t.to_string()));
        }
        if let Some(t) = message["content"].as_str().filter(|t| !t.is_empty()) {
            self.end_reasoning(&mut out);
            out.push(StreamPart::TextDelta(t.to_string()));
        }
        if let Some(calls) = message["tool_calls"].as_array() {
            self.end_reasoning(&mut out);
            for c in calls {
                out.push(self.call(&c["function"])?);
            }
        }
        if v["done"].as_bool() == Some(true) {
            self.end_reasoning(&mut out);
            let reason = match v["done_reason"].as_str() {
                None | Some("stop") if self.calls > 0 => FinishReason::ToolCalls,
                None | Some("stop") => FinishReason::Stop,
                Some("length") => FinishReason::Length,
                Some(other) => FinishReason::Other(other.to_string()),
            };
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            let (input, output) = (n("prompt_eval_count"), n("eval_count"));
            let usage = Usage {
                input_tokens: input,
                output_tokens: output,
                reasoning_tokens: 0,
                total_tokens: input + output,
                cached_input_tokens: 0,
            };
            out.push(StreamPart::Finish { reason, usage });
            self.done = true;
        }
        Ok(out)
    }

    /// One complete `tool_calls[].function`. `arguments` is an object; a JSON string (some
    /// gateways) is parsed.
    fn call(&mut self, f: &Value) -> Result<StreamPart, GenerationError> {
        let name = f["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(GenerationError::invalid_response(format!(
                "a tool call lacks its name: {}",
                truncate(&f.to_string(), 200)
            )));
        }
        let id = format!("call_{}_{name}", self.calls);
        self.calls += 1;
        let args = GeneratedToolCall::args_from_value(&name, &id, f.get("arguments"))?;
        Ok(StreamPart::ToolCall(GeneratedToolCall { id, name, args }))
    }

    /// The body ended: fine after `done`, else a retryable error.
    pub(super) fn end_of_body(&self) -> Result<Vec<StreamPart>, GenerationError> {
        if self.done {
            return Ok(Vec::new());
        }
        Err(GenerationError {
            name: "StreamClosed".into(),
            message: "The model stream ended before its done message.".into(),
            status_code: None,
            retryable: true,
            retry_after: None,
        })
    }

    fn end_reasoning(&mut self, out: &mut Vec<StreamPart>) {
        if std::mem::take(&mut self.reasoning) {
            out.push(StreamPart::ReasoningEnd { signature: None });
        }
    }
}

impl crate::llm::shell::Decoder for Decoder {
    type Framing = crate::llm::shell::framing::Ndjson;

    fn frame(&mut self, line: Vec<u8>) -> Result<Vec<StreamPart>, GenerationError> {
        let line = std::str::from_utf8(&line).map_err(|e| {
            GenerationError::invalid_response(format!("a line that is not UTF-8 ({e})"))
        })?;
        self.line(line)
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

    use std::sync::Arc;

    use bytes::Bytes;
    use futures::StreamExt;

    use super::*;
    use crate::llm::shell::framing::parts;

    async fn collect(body: &str, chunk: usize) -> Vec<Result<StreamPart, GenerationError>> {
        let chunks: Vec<_> = body
            .as_bytes()
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        parts::<Decoder, _>(
            futures::stream::iter(chunks),
            Arc::new(vec!["SECRET".into()]),
        )
        .collect()
        .await
    }

    fn line(v: Value) -> String {
        format!("{v}\n")
    }

    #[tokio::test]
    async fn lines_split_across_chunks_become_thinking_calls_and_finish() {
        let body = [
            line(
                json!({"model": "m", "message": {"role": "assistant", "content": "",
                "thinking": "Hm."}, "done": false}),
            ),
            line(json!({"message": {"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": {"a": "é"}}},
                               {"function": {"name": "g", "arguments": "{\"b\":1}"}}]},
                "done": false})),
            line(
                json!({"message": {"role": "assistant", "content": ""}, "done": true,
                "done_reason": "stop", "prompt_eval_count": 20, "eval_count": 7}),
            ),
        ]
        .concat();
        for chunk in [1, 5, 1000] {
            let got: Vec<_> = collect(&body, chunk)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
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
                    StreamPart::ReasoningDelta("Hm.".into()),
                    StreamPart::ReasoningEnd { signature: None },
                    call("call_0_f", "f", json!({"a": "é"})),
                    call("call_1_g", "g", json!({"b": 1})),
                    StreamPart::Finish {
                        reason: FinishReason::ToolCalls,
                        usage: Usage {
                            input_tokens: 20,
                            output_tokens: 7,
                            reasoning_tokens: 0,
                            total_tokens: 27,
                            cached_input_tokens: 0,
                        },
                    },
                ],
                "chunk size {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn a_final_line_without_newline_counts_and_a_missing_done_fails() {
        let body = r#"{"message":{"content":"ok"},"done":true,"done_reason":"length"}"#;
        let got = collect(body, 7).await;
        assert_eq!(got[0], Ok(StreamPart::TextDelta("ok".into())));
        assert!(matches!(
            &got[1],
            Ok(StreamPart::Finish {
                reason: FinishReason::Length,
                ..
            })
        ));
        let got = collect("{\"message\":{\"content\":\"par\"},\"done\":false}\n", 4).await;
        let e = got[1].clone().unwrap_err();
        assert_eq!((e.name.as_str(), e.retryable), ("StreamClosed", true));
        let got = collect("{\"message\":{\"content\":\"par\"}\n", 4).await;
        let e = got[0].clone().unwrap_err();
        assert_eq!(
            (e.name.as_str(), e.retryable),
            ("InvalidResponseDataError", true)
        );
        let got = collect("{\"error\":\"runner crashed: SECRET\"}\n", 4).await;
        let e = got[0].clone().unwrap_err();
        assert_eq!(e.message, "runner crashed: [REDACTED]");
        assert!(e.retryable);
    }
}
