//! Turning a stream of [`StreamPart`]s into a [`Generation`], and saying which streaming
//! events to emit on the way (REFERENCE §3.6 emission rules).

use super::{FinishReason, GeneratedToolCall, Generation, GenerationError, StreamPart, Thinking};
use crate::schema::Usage;

/// A streaming signal for the run actor to turn into a streaming event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Signal {
    /// First reasoning delta: `startStreamingReasoning`.
    ReasoningStart,
    /// `streamReasoning`.
    ReasoningDelta(String),
    /// `completeStreamingReasoning` with everything streamed.
    ReasoningComplete(String),
    /// First text delta: `startStreamingRunResult`.
    TextStart,
    /// `streamRunResult`.
    TextDelta(String),
    /// `completeStreamingRunResult`.
    TextComplete(String),
}

/// Accumulates one generation.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    thinking: Vec<Thinking>,
    reasoning_open: Option<String>,
    reasoning_streamed: String,
    text: String,
    text_started: bool,
    tool_calls: Vec<GeneratedToolCall>,
    finish: Option<(FinishReason, Usage)>,
}

impl Assembler {
    /// A fresh assembler.
    pub(crate) fn new() -> Self {
        Assembler::default()
    }

    /// Take one part; returns the signals it causes, in order.
    pub(crate) fn push(&mut self, part: StreamPart) -> Vec<Signal> {
        let mut out = Vec::new();
        match part {
            StreamPart::ReasoningDelta(d) => {
                if self.reasoning_open.is_none() {
                    self.reasoning_open = Some(String::new());
                    if self.reasoning_streamed.is_empty() {
                        out.push(Signal::ReasoningStart);
                    }
                }
                if let Some(r) = self.reasoning_open.as_mut() {
                    r.push_str(&d);
                }
                self.reasoning_streamed.push_str(&d);
                out.push(Signal::ReasoningDelta(d));
            }
            StreamPart::ReasoningEnd { signature } => {
                let text = self.reasoning_open.take().unwrap_or_default();
                self.thinking.push(Thinking { text, signature });
            }
            StreamPart::TextDelta(d) => {
                self.close_reasoning(&mut out);
                if !self.text_started {
                    self.text_started = true;
                    out.push(Signal::TextStart);
                }
                self.text.push_str(&d);
                out.push(Signal::TextDelta(d));
            }
            StreamPart::ToolCall(c) => self.tool_calls.push(c),
            StreamPart::Finish { reason, usage } => self.finish = Some((reason, usage)),
        }
        out
    }

    fn close_reasoning(&mut self, out: &mut Vec<Signal>) {
        if let Some(text) = self.reasoning_open.take() {
            self.thinking.push(Thinking {
                text,
                signature: None,
            });
        }
        if !self.reasoning_streamed.is_empty() {
            out.push(Signal::ReasoningComplete(std::mem::take(
                &mut self.reasoning_streamed,
            )));
        }
    }

    /// End of stream: the closing signals and the generation. A stream without a finish part
    /// was cut off and is a retryable error.
    pub(crate) fn finish(mut self) -> (Vec<Signal>, Result<Generation, GenerationError>) {
        let mut out = Vec::new();
        self.close_reasoning(&mut out);
        if self.text_started {
            out.push(Signal::TextComplete(self.text.clone()));
        }
        let Some((finish_reason, usage)) = self.finish else {
            return (
                out,
                Err(GenerationError {
                    name: "StreamClosed".into(),
                    message: "The model stream ended before its finish message.".into(),
                    status_code: None,
                    retryable: true,
                    retry_after: None,
                }),
            );
        };
        (
            out,
            Ok(Generation {
                thinking: self.thinking,
                text: self.text,
                tool_calls: self.tool_calls,
                finish_reason,
                usage,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_completes_when_text_starts_and_text_completes_at_the_end() {
        let mut a = Assembler::new();
        let mut sig = Vec::new();
        sig.extend(a.push(StreamPart::ReasoningDelta("th".into())));
        sig.extend(a.push(StreamPart::ReasoningDelta("ink".into())));
        sig.extend(a.push(StreamPart::ReasoningEnd {
            signature: Some("sig".into()),
        }));
        sig.extend(a.push(StreamPart::TextDelta("Hi".into())));
        sig.extend(a.push(StreamPart::Finish {
            reason: FinishReason::Stop,
            usage: Usage::default(),
        }));
        let (end, g) = a.finish();
        sig.extend(end);
        assert_eq!(
            sig,
            vec![
                Signal::ReasoningStart,
                Signal::ReasoningDelta("th".into()),
                Signal::ReasoningDelta("ink".into()),
                Signal::ReasoningComplete("think".into()),
                Signal::TextStart,
                Signal::TextDelta("Hi".into()),
                Signal::TextComplete("Hi".into()),
            ]
        );
        let g = g.unwrap();
        assert_eq!(
            g.thinking,
            vec![Thinking {
                text: "think".into(),
                signature: Some("sig".into())
            }]
        );
        assert_eq!(g.text, "Hi");
    }

    #[test]
    fn a_stream_without_finish_is_a_retryable_error() {
        let mut a = Assembler::new();
        a.push(StreamPart::TextDelta("partial".into()));
        let (_, g) = a.finish();
        assert!(g.unwrap_err().retryable);
    }
}
