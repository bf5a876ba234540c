//! The model side of a replay: [`ReplayModel`], a provider (the [`LanguageModel`] seam) that
//! answers each generation with exactly what the recorded run's model produced: reasoning,
//! text, tool calls, finish reason and usage, or the error it failed with.
//!
//! What a generation produced is read from the state event that follows each `startGeneration`
//! (and each `attemptCompletion`: the run-result generation has no `startGeneration`) in its run: `callTools` (its new expert message), `completeRun` (the text and the last
//! expert message's reasoning), `retry` (an empty answer, a cut-off tool call or a provider
//! error, by its reason) or `stopRunByError` (the error, or the answer that exhausted the
//! retries). Generations are queued per Expert and handed out in recorded order, preferring
//! those whose conversation starts with the same user message as the request's (two children
//! of one Expert running at once are told apart by their queries). Never calls a model.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::stream;
use serde_json::{Value, json};

use super::Recording;
use super::compare::segments;
use crate::llm::{
    FinishReason, GeneratedToolCall, GenerationError, GenerationRequest, LanguageModel, PartStream,
    StreamPart,
};
use crate::schema::{Event, EventPayload, Message, MessagePart, Usage};

/// One recorded model answer.
#[derive(Debug, Clone, PartialEq)]
enum Played {
    /// The model answered.
    Answer {
        thinking: Vec<(String, Option<String>)>,
        text: String,
        tool_calls: Vec<GeneratedToolCall>,
        finish: FinishReason,
        usage: Usage,
    },
    /// The call failed.
    Fails(GenerationError),
}

#[derive(Debug)]
struct Entry {
    /// The text of the conversation's first user message.
    lineage: String,
    played: Played,
    used: bool,
}

/// Plays a recording's model answers back (see the module docs).
#[derive(Debug)]
pub(crate) struct ReplayModel {
    /// Recorded answers per Expert, in recorded order.
    queues: Mutex<BTreeMap<String, Vec<Entry>>>,
}

impl ReplayModel {
    /// The model answers recorded in `rec`.
    pub(crate) fn new(rec: &Recording) -> Self {
        let mut queues: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for seg in segments(&rec.events) {
            let mut lineage = String::new();
            for pair in seg.events.windows(2) {
                // A generation follows `startGeneration`, and `attemptCompletion` (the run
                // result, which has no `startGeneration` of its own).
                match &pair[0].payload {
                    EventPayload::StartGeneration(start) => {
                        lineage = first_user_text(&start.messages);
                    }
                    EventPayload::AttemptCompletion(_) => {}
                    _ => continue,
                }
                if let Some(played) = answer(pair[1]) {
                    queues.entry(seg.expert.clone()).or_default().push(Entry {
                        lineage: lineage.clone(),
                        played,
                        used: false,
                    });
                }
            }
        }
        ReplayModel {
            queues: Mutex::new(queues),
        }
    }

    fn next(&self, expert: &str, lineage: &str) -> Option<Played> {
        let mut queues = self.queues.lock().ok()?;
        let queue = queues.get_mut(expert)?;
        let i = queue
            .iter()
            .position(|e| !e.used && e.lineage == lineage)
            .or_else(|| queue.iter().position(|e| !e.used))?;
        queue[i].used = true;
        Some(queue[i].played.clone())
    }
}

#[async_trait::async_trait]
impl LanguageModel for ReplayModel {
    fn name(&self) -> &str {
        "replay"
    }

    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError> {
        let lineage = first_user_text(&request.messages);
        let Some(played) = self.next(&request.expert_key, &lineage) else {
            return Err(GenerationError {
                name: "NotRecorded".into(),
                message: format!(
                    "The recording has no further model answer for Expert \"{}\".",
                    request.expert_key
                ),
                status_code: None,
                retryable: false,
                retry_after: None,
            });
        };
        let (thinking, text, tool_calls, finish, usage) = match played {
            Played::Fails(e) => return Err(e),
            Played::Answer {
                thinking,
                text,
                tool_calls,
                finish,
                usage,
            } => (thinking, text, tool_calls, finish, usage),
        };
        let mut parts = Vec::new();
        for (text, signature) in thinking {
            parts.push(StreamPart::ReasoningDelta(text));
            parts.push(StreamPart::ReasoningEnd { signature });
        }
        if !text.is_empty() {
            parts.push(StreamPart::TextDelta(text));
        }
        parts.extend(tool_calls.into_iter().map(StreamPart::ToolCall));
        parts.push(StreamPart::Finish {
            reason: finish,
            usage,
        });
        Ok(Box::pin(stream::iter(parts.into_iter().map(Ok))))
    }
}

/// The text of the first user message, empty when there is none.
fn first_user_text(messages: &[Message]) -> String {
    messages
        .iter()
        .find(|m| matches!(m, Message::UserMessage(_)))
        .and_then(Message::first_text)
        .unwrap_or_default()
        .to_owned()
}

/// What the model produced, read from the state event after its `startGeneration`.
fn answer(outcome: &Event) -> Option<Played> {
    match &outcome.payload {
        EventPayload::CallTools(p) => Some(from_message(
            &p.new_message,
            FinishReason::ToolCalls,
            p.usage,
        )),
        EventPayload::CallDelegate(p) => Some(from_message(
            &p.new_message,
            FinishReason::ToolCalls,
            p.usage,
        )),
        EventPayload::CallInteractiveTool(p) => Some(from_message(
            &p.new_message,
            FinishReason::ToolCalls,
            p.usage,
        )),
        EventPayload::CompleteRun(p) => {
            let thinking = p
                .checkpoint
                .messages
                .iter()
                .rev()
                .find(|m| m.is_expert())
                .map(thinking_of)
                .unwrap_or_default();
            Some(Played::Answer {
                thinking,
                text: p.text.clone(),
                tool_calls: Vec::new(),
                finish: FinishReason::Stop,
                usage: p.usage,
            })
        }
        EventPayload::Retry(p) => {
            let (error, message) = reason(&p.reason);
            Some(match error.as_str() {
                "Error: No tool call or text generated" | "Error: No text generated" => {
                    empty(p.usage)
                }
                "Error: Tool call generation failed" => p
                    .new_messages
                    .iter()
                    .find(|m| m.is_expert())
                    .map(|m| from_message(m, FinishReason::Length, p.usage))
                    .unwrap_or_else(|| cut_off(p.usage)),
                _ => Played::Fails(GenerationError {
                    name: error,
                    message,
                    status_code: None,
                    retryable: true,
                    retry_after: None,
                }),
            })
        }
        EventPayload::StopRunByError(p) => {
            let e = &p.error;
            Some(match e.name.as_str() {
                "MaxRetriesExceeded" if e.message.ends_with("Generation length exceeded") => {
                    cut_off(Usage::default())
                }
                "MaxRetriesExceeded" => empty(Usage::default()),
                "UnexpectedFinishReason" => {
                    let reason = e
                        .message
                        .split_once("finish reason ")
                        .and_then(|(_, r)| serde_json::from_str::<String>(r).ok())
                        .unwrap_or_default();
                    Played::Answer {
                        thinking: Vec::new(),
                        text: String::new(),
                        tool_calls: vec![placeholder_call()],
                        finish: FinishReason::Other(reason),
                        usage: Usage::default(),
                    }
                }
                _ => match e
                    .message
                    .strip_prefix("Max retries (")
                    .and_then(|m| m.split_once(") exceeded: "))
                {
                    Some((_, message)) => Played::Fails(GenerationError {
                        name: e.name.clone(),
                        message: message.to_owned(),
                        status_code: e.status_code,
                        retryable: true,
                        retry_after: None,
                    }),
                    None => Played::Fails(GenerationError {
                        name: e.name.clone(),
                        message: e.message.clone(),
                        status_code: e.status_code,
                        retryable: false,
                        retry_after: None,
                    }),
                },
            })
        }
        _ => None,
    }
}

/// The answer an expert message records: its reasoning, text and tool calls.
fn from_message(m: &Message, finish: FinishReason, usage: Usage) -> Played {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for part in &m.body().contents {
        match part {
            MessagePart::TextPart(t) => text.push_str(&t.text),
            MessagePart::ToolCallPart(c) => tool_calls.push(GeneratedToolCall {
                id: c.tool_call_id.clone(),
                name: c.tool_name.clone(),
                args: Value::clone(&c.args),
            }),
            _ => {}
        }
    }
    Played::Answer {
        thinking: thinking_of(m),
        text,
        tool_calls,
        finish,
        usage,
    }
}

fn thinking_of(m: &Message) -> Vec<(String, Option<String>)> {
    m.body()
        .contents
        .iter()
        .filter_map(|p| match p {
            MessagePart::ThinkingPart(t) => Some((t.thinking.clone(), t.signature.clone())),
            _ => None,
        })
        .collect()
}

fn empty(usage: Usage) -> Played {
    Played::Answer {
        thinking: Vec::new(),
        text: String::new(),
        tool_calls: Vec::new(),
        finish: FinishReason::Stop,
        usage,
    }
}

fn cut_off(usage: Usage) -> Played {
    Played::Answer {
        thinking: Vec::new(),
        text: String::new(),
        tool_calls: vec![placeholder_call()],
        finish: FinishReason::Length,
        usage,
    }
}

/// A call for answers whose recorded stop kept no call (the machine only needs one to exist).
fn placeholder_call() -> GeneratedToolCall {
    GeneratedToolCall {
        id: "replay-placeholder".into(),
        name: "replay-placeholder".into(),
        args: json!({}),
    }
}

/// `{"error": .., "message": ..}` of a retry reason; the whole reason as the message otherwise.
fn reason(text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match (v.get("error").and_then(Value::as_str), v.get("message")) {
        (Some(e), Some(Value::String(m))) => (e.to_owned(), m.clone()),
        _ => ("Error".to_owned(), text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{Played, answer};
    use crate::llm::FinishReason;
    use crate::schema::Event;

    const S10: &str = include_str!("../../tests/fixtures/perstack-traces/s10-empty/events.jsonl");

    /// The first event of `kind` in the s10 recording, with `edit` applied.
    fn event(kind: &str, edit: impl FnOnce(&mut Value)) -> Event {
        let mut v: Value = S10
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["type"] == kind)
            .unwrap();
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    fn fails(p: Option<Played>) -> (String, String, bool) {
        match p {
            Some(Played::Fails(e)) => (e.name, e.message, e.retryable),
            other => panic!("expected a failed call, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_answer_is_played_back_for_a_retry_and_for_the_stop_that_exhausted_retries() {
        let retry = answer(&event("retry", |_| {})).unwrap();
        let Played::Answer {
            text, tool_calls, ..
        } = &retry
        else {
            panic!("{retry:?}");
        };
        assert!(text.is_empty() && tool_calls.is_empty());
        let stop = answer(&event("stopRunByError", |_| {})).unwrap();
        assert!(
            matches!(&stop, Played::Answer { text, tool_calls, finish: FinishReason::Stop, .. } if text.is_empty() && tool_calls.is_empty()),
            "{stop:?}"
        );
    }

    #[test]
    fn provider_errors_are_played_back_with_their_name_message_and_retry_class() {
        let retry = event("retry", |e| {
            e["reason"] =
                json!(json!({"error": "APICallError", "message": "Overloaded"}).to_string());
        });
        assert_eq!(
            fails(answer(&retry)),
            ("APICallError".into(), "Overloaded".into(), true)
        );
        let exhausted = event("stopRunByError", |e| {
            e["error"] = json!({"name": "APICallError", "message": "Max retries (1) exceeded: Overloaded", "isRetryable": false});
        });
        assert_eq!(
            fails(answer(&exhausted)),
            ("APICallError".into(), "Overloaded".into(), true)
        );
        let fatal = event("stopRunByError", |e| {
            e["error"] = json!({"name": "APICallError", "message": "invalid x-api-key", "statusCode": 401, "isRetryable": false});
        });
        assert_eq!(
            fails(answer(&fatal)),
            ("APICallError".into(), "invalid x-api-key".into(), false)
        );
        let odd = event("stopRunByError", |e| {
            e["error"] = json!({"name": "UnexpectedFinishReason", "message": "The model stopped with finish reason \"content-filter\"", "isRetryable": false});
        });
        assert!(
            matches!(answer(&odd), Some(Played::Answer { finish: FinishReason::Other(r), .. }) if r == "content-filter")
        );
    }
}
