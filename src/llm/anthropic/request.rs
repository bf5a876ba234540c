//! The Messages API request body: Perstack messages → Anthropic `system` and `messages`
//! (REFERENCE §1.8), tools, and the thinking budget.
//!
//! Instruction messages become system blocks; user and tool messages become `user` turns and
//! expert messages `assistant` turns, with consecutive turns of one role merged (the API wants
//! strict alternation). A message with `cache: true` puts `cache_control: ephemeral` on its
//! last block. Thinking without a signature cannot be replayed and is dropped; empty text
//! blocks are dropped (the API rejects them), and so are messages left with no block.

use serde_json::{Map, Value, json};

use crate::llm::{GenerationError, GenerationRequest};
use crate::schema::{BinaryPart, InlinePart, Message, MessagePart, ToolResultPart, UrlPart};

/// The smallest thinking budget the API accepts; smaller budgets are raised to it.
pub(super) const MIN_THINKING_BUDGET: u64 = 1024;

/// The output limit of `model` as the AI SDK's Anthropic provider knows it, and whether the
/// model is known at all (an unknown one gets 4096 and no clamping).
pub(super) fn max_output_tokens(model: &str) -> (u64, bool) {
    let has = |s: &str| model.contains(s);
    if has("claude-sonnet-4-5") || has("claude-opus-4-5") || has("claude-haiku-4-5") {
        (64_000, true)
    } else if has("claude-opus-4-1") || has("claude-opus-4-") {
        (32_000, true)
    } else if has("claude-sonnet-4-") || has("claude-3-7-sonnet") {
        (64_000, true)
    } else if has("claude-3-5-haiku") {
        (8_192, true)
    } else if has("claude-3-haiku") {
        (4_096, true)
    } else {
        (4_096, false)
    }
}

/// The JSON body of one streaming Messages call, as the AI SDK's Anthropic provider builds it
/// for Perstack: `max_tokens` is `limit` (default: the model's maximum) plus the thinking
/// budget, clamped to the model's maximum when the model is known; `tool_choice` is `auto`
/// whenever tools are offered.
pub(super) fn body(req: &GenerationRequest, limit: Option<u32>) -> Result<Value, GenerationError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let (role, body) = match m {
            Message::InstructionMessage(b) => ("system", b),
            Message::UserMessage(b) | Message::ToolMessage(b) => ("user", b),
            Message::ExpertMessage(b) => ("assistant", b),
        };
        let mut blocks = Vec::new();
        for part in &body.contents {
            if let Some(block) = convert_part(part, role)? {
                blocks.push(block);
            }
        }
        if body.cache == Some(true)
            && let Some(Value::Object(last)) = blocks.last_mut()
        {
            last.insert("cache_control".into(), json!({"type": "ephemeral"}));
        }
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            _ if role == "system" => system.extend(blocks),
            Some((r, existing)) if *r == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));
    let (model_max, known) = max_output_tokens(&req.model);
    let mut max_tokens = limit.map_or(model_max, u64::from);
    if let Some(budget) = req.reasoning_budget.tokens() {
        let budget = budget.max(MIN_THINKING_BUDGET);
        max_tokens += budget;
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    if known {
        max_tokens = max_tokens.min(model_max);
    }
    out.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert(
        "messages".into(),
        turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
    );
    if !req.tools.is_empty() {
        let tools = req.tools.iter().map(|t| {
            let mut tool = Map::new();
            tool.insert("name".into(), json!(t.name));
            if let Some(d) = &t.description {
                tool.insert("description".into(), json!(d));
            }
            tool.insert("input_schema".into(), t.input_schema.clone());
            Value::Object(tool)
        });
        out.insert("tools".into(), tools.collect());
        out.insert("tool_choice".into(), json!({"type": "auto"}));
    }
    out.insert("stream".into(), Value::Bool(true));
    Ok(Value::Object(out))
}

/// One part as a content block of a `role` turn, or `None` when the role cannot carry it.
fn convert_part(part: &MessagePart, role: &str) -> Result<Option<Value>, GenerationError> {
    let user = role == "user";
    Ok(match part {
        MessagePart::TextPart(t) if t.text.is_empty() => None,
        MessagePart::TextPart(t) => Some(json!({"type": "text", "text": t.text})),
        MessagePart::ThinkingPart(t) if role == "assistant" => match &t.signature {
            Some(sig) if !sig.is_empty() => Some(json!({
                "type": "thinking", "thinking": t.thinking, "signature": sig
            })),
            _ => None,
        },
        MessagePart::ToolCallPart(c) if role == "assistant" => {
            let input = c.args_object();
            Some(
                json!({"type": "tool_use", "id": c.tool_call_id, "name": c.tool_name, "input": input}),
            )
        }
        MessagePart::ToolResultPart(r) if user => Some(tool_result(r)?),
        MessagePart::ImageInlinePart(p) | MessagePart::FileInlinePart(p) if user => {
            Some(inline(p)?)
        }
        MessagePart::ImageUrlPart(p) | MessagePart::FileUrlPart(p) if user => Some(url(p)?),
        MessagePart::ImageBinaryPart(p) | MessagePart::FileBinaryPart(p) if user => {
            Some(binary(p)?)
        }
        _ => None,
    })
}

fn tool_result(r: &ToolResultPart) -> Result<Value, GenerationError> {
    let mut content = Vec::new();
    for p in &r.contents {
        match p {
            MessagePart::TextPart(t) if !t.text.is_empty() => {
                content.push(json!({"type": "text", "text": t.text}));
            }
            MessagePart::ImageInlinePart(p) | MessagePart::FileInlinePart(p) => {
                content.push(inline(p)?);
            }
            _ => {}
        }
    }
    let mut block = Map::new();
    block.insert("type".into(), json!("tool_result"));
    block.insert("tool_use_id".into(), json!(r.tool_call_id));
    // One text is sent as a plain string (Perstack's `output: {type: "text"}`), anything else
    // as a list of blocks.
    match content.as_mut_slice() {
        [] => {}
        [one] if one["type"] == "text" => {
            block.insert("content".into(), one["text"].take());
        }
        _ => {
            block.insert("content".into(), Value::Array(content));
        }
    }
    if let Some(e) = r.is_error {
        block.insert("is_error".into(), Value::Bool(e));
    }
    Ok(Value::Object(block))
}

/// Base64 data as an image (image/*), a PDF document, or a plain-text document.
fn inline(p: &InlinePart) -> Result<Value, GenerationError> {
    base64_block(&p.mime_type, &p.encoded_data)
}

fn base64_block(mime: &str, data: &str) -> Result<Value, GenerationError> {
    let source = json!({"type": "base64", "media_type": mime, "data": data});
    if mime.starts_with("image/") {
        return Ok(json!({"type": "image", "source": source}));
    }
    if mime == "application/pdf" {
        return Ok(json!({"type": "document", "source": source}));
    }
    if mime.starts_with("text/") {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| unsupported(&format!("a {mime} file whose base64 is invalid ({e})")))?;
        let text = String::from_utf8_lossy(&bytes);
        return Ok(json!({"type": "document", "source": {
            "type": "text", "media_type": "text/plain", "data": text
        }}));
    }
    Err(unsupported(&format!("files of type {mime}")))
}

fn url(p: &UrlPart) -> Result<Value, GenerationError> {
    let source = json!({"type": "url", "url": p.url});
    if p.mime_type.starts_with("image/") {
        Ok(json!({"type": "image", "source": source}))
    } else if p.mime_type == "application/pdf" {
        Ok(json!({"type": "document", "source": source}))
    } else {
        Err(unsupported(&format!("file URLs of type {}", p.mime_type)))
    }
}

/// Perstack's binary parts, when their data is a base64 string.
fn binary(p: &BinaryPart) -> Result<Value, GenerationError> {
    match &p.data {
        Value::String(s) => base64_block(&p.mime_type, s),
        _ => Err(unsupported(&format!(
            "binary {} data that is not a base64 string",
            p.mime_type
        ))),
    }
}

fn unsupported(what: &str) -> GenerationError {
    GenerationError {
        name: "UnsupportedFunctionalityError".into(),
        message: format!("The Anthropic provider cannot send {what}."),
        status_code: None,
        retryable: false,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::llm::ToolSpec;
    use crate::schema::{ReasoningBudget, ReasoningLevel, ThinkingPart, ToolCallPart};

    fn request(messages: Vec<Message>, budget: ReasoningBudget) -> GenerationRequest {
        GenerationRequest {
            expert_key: "e".into(),
            model: "claude-sonnet-4-5".into(),
            messages,
            tools: Arc::new(vec![ToolSpec {
                name: "t".into(),
                description: None,
                input_schema: json!({"type": "object"}),
            }]),
            reasoning_budget: budget,
        }
    }

    #[test]
    fn consecutive_user_turns_merge_and_unsigned_thinking_is_dropped() {
        let thinking = |sig: Option<&str>| {
            MessagePart::ThinkingPart(ThinkingPart {
                id: "p".into(),
                thinking: "hm".into(),
                signature: sig.map(str::to_string),
                extra: Map::new(),
            })
        };
        let call = MessagePart::ToolCallPart(ToolCallPart {
            id: "p".into(),
            tool_call_id: "toolu_1".into(),
            tool_name: "t".into(),
            args: Value::Null.into(),
            extra: Map::new(),
        });
        let msgs = vec![
            Message::instruction("sys"),
            Message::user("a"),
            Message::user("b"),
            Message::expert(vec![thinking(None), thinking(Some("s")), call]),
            Message::expert(vec![thinking(None)]),
        ];
        let b = body(&request(msgs, ReasoningBudget::Tokens(10)), None).unwrap();
        assert_eq!(
            b["system"],
            json!([{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}])
        );
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
        assert_eq!(b["messages"][0]["content"].as_array().unwrap().len(), 2);
        assert_eq!(
            b["messages"][1]["content"],
            json!([
                {"type":"thinking","thinking":"hm","signature":"s"},
                {"type":"tool_use","id":"toolu_1","name":"t","input":{}}
            ])
        );
        assert_eq!(b["thinking"]["budget_tokens"], 1024);
        assert_eq!(
            b["tools"],
            json!([{"name":"t","input_schema":{"type":"object"}}])
        );
    }

    #[test]
    fn max_tokens_is_the_model_limit_plus_the_budget_clamped_for_known_models() {
        let high = ReasoningBudget::Level(ReasoningLevel::High);
        let none = ReasoningBudget::Level(ReasoningLevel::None);
        let with = |model: &str, budget: ReasoningBudget, limit: Option<u32>| {
            let mut r = request(vec![Message::user("q")], budget);
            r.model = model.into();
            body(&r, limit).unwrap()
        };
        // A known model: its maximum, with or without thinking.
        assert_eq!(with("claude-sonnet-4-5", high, None)["max_tokens"], 64_000);
        assert_eq!(with("claude-opus-4-1", none, None)["max_tokens"], 32_000);
        // An explicit limit leaves room for the budget, within the model's maximum.
        assert_eq!(
            with("claude-sonnet-4-5", high, Some(8192))["max_tokens"],
            18_192
        );
        assert_eq!(
            with("claude-3-5-haiku-latest", high, Some(8192))["max_tokens"],
            8192
        );
        // An unknown model: 4096 plus the budget, not clamped.
        let b = with("my-proxy-model", high, None);
        assert_eq!(b["max_tokens"], 14_096);
        let b = with("my-proxy-model", none, None);
        assert_eq!(b["max_tokens"], 4096);
        assert!(b.get("thinking").is_none());
    }

    #[test]
    fn unsupported_files_are_non_retryable_errors() {
        let part = MessagePart::FileInlinePart(InlinePart {
            id: "p".into(),
            encoded_data: "AAAA".into(),
            mime_type: "application/zip".into(),
            extra: Map::new(),
        });
        let m = Message::UserMessage(crate::schema::MessageBody::new(vec![part]).into());
        let e = body(&request(vec![m], ReasoningBudget::default()), None).unwrap_err();
        assert!(
            !e.retryable && e.message.contains("application/zip"),
            "{e:?}"
        );
    }
}
