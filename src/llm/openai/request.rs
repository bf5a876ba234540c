//! The Chat Completions request body: Perstack messages → OpenAI `messages` (REFERENCE §1.8),
//! tools as `function` tools, and the reasoning budget as `reasoning_effort`.
//!
//! | Perstack | Chat Completions |
//! | --- | --- |
//! | instruction message | `system` message (text) |
//! | user message | `user` message: a string, or text and `image_url` parts (images as data URLs) |
//! | expert message | `assistant` message: `content` text and `tool_calls` (thinking is dropped) |
//! | tool message | one `tool` message per result, `content` = its text parts |
//!
//! A tool message cannot carry images, so inline images of tool results follow the `tool`
//! messages as one `user` message. `cache` is ignored (the API caches prefixes by itself).

use serde_json::{Map, Value, json};

use super::Flavor;
use crate::llm::{GenerationError, GenerationRequest};
use crate::schema::{
    BinaryPart, InlinePart, Message, MessagePart, ReasoningBudget, ReasoningLevel,
};

/// The JSON body of one streaming Chat Completions call for `flavor`.
pub(super) fn body(req: &GenerationRequest, flavor: Flavor) -> Result<Value, GenerationError> {
    let mut messages = Vec::new();
    for m in &req.messages {
        match m {
            Message::InstructionMessage(b) => {
                let text = joined_text(&b.contents);
                if !text.is_empty() {
                    messages.push(json!({"role": "system", "content": text}));
                }
            }
            Message::UserMessage(b) => {
                let mut parts = Vec::new();
                for p in &b.contents {
                    if let Some(part) = user_part(p, flavor)? {
                        parts.push(part);
                    }
                }
                match parts.as_slice() {
                    [] => {}
                    [only] if only["type"] == "text" => {
                        messages.push(json!({"role": "user", "content": only["text"]}));
                    }
                    _ => messages.push(json!({"role": "user", "content": parts})),
                }
            }
            Message::ExpertMessage(b) => messages.extend(assistant(&b.contents)),
            Message::ToolMessage(b) => tool_messages(&b.contents, flavor, &mut messages)?,
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));
    out.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        let tools = req.tools.iter().map(|t| {
            let mut function = Map::new();
            function.insert("name".into(), json!(t.name));
            if let Some(d) = &t.description {
                function.insert("description".into(), json!(d));
            }
            function.insert("parameters".into(), t.input_schema.clone());
            json!({"type": "function", "function": function})
        });
        out.insert("tools".into(), tools.collect());
        // Perstack asks for `toolChoice: "auto"`, which the AI SDK always writes out.
        out.insert("tool_choice".into(), json!("auto"));
    }
    out.insert("stream".into(), Value::Bool(true));
    out.insert("stream_options".into(), json!({"include_usage": true}));
    if flavor == Flavor::OpenAi
        && is_reasoning_model(&req.model)
        && let Some(effort) = reasoning_effort(req.reasoning_budget)
    {
        out.insert("reasoning_effort".into(), json!(effort));
    }
    Ok(Value::Object(out))
}

/// Perstack's OpenAI mapping of the reasoning budget: `none`/0 → `None`; `minimal` → `low`;
/// otherwise by tokens: ≤ 2048 `low`, ≤ 5000 `medium`, above that `high`.
pub fn reasoning_effort(budget: ReasoningBudget) -> Option<&'static str> {
    let tokens = budget.tokens()?;
    Some(match budget {
        ReasoningBudget::Level(ReasoningLevel::Minimal) => "low",
        _ if tokens <= 2048 => "low",
        _ if tokens <= 5000 => "medium",
        _ => "high",
    })
}

/// Whether the model accepts `reasoning_effort`: the o-series and GPT-5 (not `gpt-5-chat`),
/// as the AI SDK decides. Other models reject the parameter, so it is left out for them.
pub fn is_reasoning_model(model: &str) -> bool {
    let starts = |p: &str| model.starts_with(p);
    (starts("o") || starts("gpt-5") || starts("codex-")) && !starts("gpt-5-chat")
}

/// The `assistant` message of an expert turn, or `None` when it has neither text nor calls.
fn assistant(contents: &[MessagePart]) -> Option<Value> {
    let text = joined_text(contents);
    let calls: Vec<Value> = contents
        .iter()
        .filter_map(|p| match p {
            MessagePart::ToolCallPart(c) => {
                let arguments = c.args_object().to_string();
                Some(json!({"id": c.tool_call_id, "type": "function",
                    "function": {"name": c.tool_name, "arguments": arguments}}))
            }
            _ => None,
        })
        .collect();
    if text.is_empty() && calls.is_empty() {
        return None;
    }
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    let content = (!text.is_empty()).then_some(json!(text));
    m.insert("content".into(), content.unwrap_or(Value::Null));
    if !calls.is_empty() {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    Some(Value::Object(m))
}

/// One `tool` message per result; the results' images, if any, as one `user` message after.
fn tool_messages(
    contents: &[MessagePart],
    flavor: Flavor,
    out: &mut Vec<Value>,
) -> Result<(), GenerationError> {
    let mut images = Vec::new();
    for part in contents {
        let MessagePart::ToolResultPart(r) = part else {
            continue;
        };
        let text = joined_text(&r.contents);
        out.push(json!({"role": "tool", "tool_call_id": r.tool_call_id, "content": text}));
        for p in &r.contents {
            if let MessagePart::ImageInlinePart(i) | MessagePart::FileInlinePart(i) = p
                && i.mime_type.starts_with("image/")
            {
                if images.is_empty() {
                    images.push(json!({"type": "text", "text": "Images returned by the tools:"}));
                }
                images.push(inline(i, flavor)?);
            }
        }
    }
    if !images.is_empty() {
        out.push(json!({"role": "user", "content": images}));
    }
    Ok(())
}

/// The text parts of `contents`, joined by blank lines.
fn joined_text(contents: &[MessagePart]) -> String {
    let texts: Vec<&str> = contents
        .iter()
        .filter_map(MessagePart::as_text)
        .filter(|t| !t.is_empty())
        .collect();
    texts.join("\n\n")
}

/// One part of a user message as a content part, or `None` when it carries nothing.
fn user_part(part: &MessagePart, flavor: Flavor) -> Result<Option<Value>, GenerationError> {
    Ok(match part {
        MessagePart::TextPart(t) if t.text.is_empty() => None,
        MessagePart::TextPart(t) => Some(json!({"type": "text", "text": t.text})),
        MessagePart::ImageInlinePart(p) | MessagePart::FileInlinePart(p) => {
            Some(inline(p, flavor)?)
        }
        MessagePart::ImageBinaryPart(p) | MessagePart::FileBinaryPart(p) => {
            Some(binary(p, flavor)?)
        }
        MessagePart::ImageUrlPart(p) | MessagePart::FileUrlPart(p) => {
            if !p.mime_type.starts_with("image/") {
                return Err(unsupported(
                    flavor,
                    &format!("file URLs of type {}", p.mime_type),
                ));
            }
            Some(json!({"type": "image_url", "image_url": {"url": p.url}}))
        }
        MessagePart::ToolCallPart(_)
        | MessagePart::ThinkingPart(_)
        | MessagePart::ToolResultPart(_) => None,
    })
}

fn inline(p: &InlinePart, flavor: Flavor) -> Result<Value, GenerationError> {
    base64_part(&p.mime_type, &p.encoded_data, flavor)
}

/// Base64 data as an image (data URL), a PDF (`file`), or decoded text (text/*).
fn base64_part(mime: &str, data: &str, flavor: Flavor) -> Result<Value, GenerationError> {
    let data_url = format!("data:{mime};base64,{}", data.trim());
    if mime.starts_with("image/") {
        return Ok(json!({"type": "image_url", "image_url": {"url": data_url}}));
    }
    if mime == "application/pdf" && flavor != Flavor::DeepSeek {
        return Ok(
            json!({"type": "file", "file": {"filename": "document.pdf", "file_data": data_url}}),
        );
    }
    if mime.starts_with("text/") {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| {
                unsupported(
                    flavor,
                    &format!("a {mime} file whose base64 is invalid ({e})"),
                )
            })?;
        let text = String::from_utf8_lossy(&bytes);
        return Ok(json!({"type": "text", "text": text}));
    }
    Err(unsupported(flavor, &format!("files of type {mime}")))
}

/// Perstack's binary parts, when their data is a base64 string.
fn binary(p: &BinaryPart, flavor: Flavor) -> Result<Value, GenerationError> {
    match &p.data {
        Value::String(s) => base64_part(&p.mime_type, s, flavor),
        _ => Err(unsupported(
            flavor,
            &format!("binary {} data that is not a base64 string", p.mime_type),
        )),
    }
}

fn unsupported(flavor: Flavor, what: &str) -> GenerationError {
    GenerationError {
        name: "UnsupportedFunctionalityError".into(),
        message: format!("The {} provider cannot send {what}.", flavor.as_str()),
        status_code: None,
        retryable: false,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::schema::{MessageBody, ThinkingPart, ToolResultPart};

    fn request(model: &str, messages: Vec<Message>, budget: ReasoningBudget) -> GenerationRequest {
        GenerationRequest {
            expert_key: "e".into(),
            model: model.into(),
            messages,
            tools: Arc::new(Vec::new()),
            reasoning_budget: budget,
        }
    }

    #[test]
    fn the_budget_maps_to_an_effort_per_perstacks_table() {
        let cases = [
            ("none", None),
            ("0", None),
            ("minimal", Some("low")),
            ("low", Some("low")),
            ("2048", Some("low")),
            ("2049", Some("medium")),
            ("medium", Some("medium")),
            ("5001", Some("high")),
            ("high", Some("high")),
        ];
        for (budget, want) in cases {
            assert_eq!(reasoning_effort(budget.parse().unwrap()), want, "{budget}");
        }
    }

    #[test]
    fn only_reasoning_models_on_openai_get_an_effort() {
        let high = ReasoningBudget::Level(ReasoningLevel::High);
        let msgs = || vec![Message::user("q")];
        let b = body(&request("gpt-4.1", msgs(), high), Flavor::OpenAi).unwrap();
        assert!(b.get("reasoning_effort").is_none(), "{b}");
        let b = body(&request("o4-mini", msgs(), high), Flavor::AzureOpenAi).unwrap();
        assert!(b.get("reasoning_effort").is_none(), "{b}");
        let b = body(&request("gpt-5", msgs(), high), Flavor::OpenAi).unwrap();
        assert_eq!(b["reasoning_effort"], "high");
        assert!(!is_reasoning_model("gpt-5-chat-latest"));
    }

    #[test]
    fn tool_images_follow_the_tool_messages_and_thinking_only_turns_vanish() {
        let image = MessagePart::ImageInlinePart(InlinePart {
            id: "i".into(),
            encoded_data: "iVBO".into(),
            mime_type: "image/png".into(),
            extra: Map::new(),
        });
        let result = MessagePart::ToolResultPart(ToolResultPart {
            id: "r".into(),
            tool_call_id: "call_1".into(),
            tool_name: "readImageFile".into(),
            contents: vec![MessagePart::text("an image"), image],
            is_error: None,
            extra: Map::new(),
        });
        let thinking = MessagePart::ThinkingPart(ThinkingPart {
            id: "t".into(),
            thinking: "hm".into(),
            signature: None,
            extra: Map::new(),
        });
        let msgs = vec![
            Message::expert(vec![thinking]),
            Message::ToolMessage(MessageBody::new(vec![result]).into()),
        ];
        let b = body(
            &request("m", msgs, ReasoningBudget::default()),
            Flavor::OpenAi,
        )
        .unwrap();
        assert_eq!(
            b["messages"],
            json!([
                {"role": "tool", "tool_call_id": "call_1", "content": "an image"},
                {"role": "user", "content": [
                    {"type": "text", "text": "Images returned by the tools:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
                ]}
            ])
        );
    }

    #[test]
    fn unsupported_files_are_non_retryable_errors_naming_the_provider() {
        let zip = MessagePart::FileInlinePart(InlinePart {
            id: "p".into(),
            encoded_data: "AAAA".into(),
            mime_type: "application/zip".into(),
            extra: Map::new(),
        });
        let m = Message::UserMessage(MessageBody::new(vec![zip]).into());
        let e = body(
            &request("m", vec![m], ReasoningBudget::default()),
            Flavor::DeepSeek,
        )
        .unwrap_err();
        assert!(!e.retryable && e.message.contains("deepseek"), "{e:?}");
        assert!(e.message.contains("application/zip"), "{e:?}");
    }
}
