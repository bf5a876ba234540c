//! The `/api/chat` request body: Perstack messages → Ollama `messages` (REFERENCE §1.8), tools
//! as `function` tools, and the reasoning budget as `think`.
//!
//! | Perstack | Ollama |
//! | --- | --- |
//! | instruction message | `system` message (text) |
//! | user message | `user` message: `content` text, `images` (base64); text files decoded into the text |
//! | expert message | `assistant` message: `content`, `thinking`, `tool_calls [{function: {name, arguments}}]` |
//! | tool message | one `tool` message per result: `content`, `tool_name`, `images` |
//!
//! `think` is `true` unless the budget is `none` or 0 (Ollama has no token budget). `cache` is
//! ignored (Ollama keeps the prompt prefix of a loaded model by itself).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::llm::{GenerationError, GenerationRequest};
use crate::schema::{Message, MessagePart};

/// The JSON body of one streaming chat call.
pub(super) fn body(req: &GenerationRequest) -> Result<Value, GenerationError> {
    let mut messages = Vec::new();
    for m in &req.messages {
        match m {
            Message::InstructionMessage(b) => {
                let text = joined_text(b.contents.iter());
                if !text.is_empty() {
                    messages.push(json!({"role": "system", "content": text}));
                }
            }
            Message::UserMessage(b) => {
                if let Some(m) = user(&b.contents)? {
                    messages.push(m);
                }
            }
            Message::ExpertMessage(b) => messages.extend(assistant(&b.contents)),
            Message::ToolMessage(b) => {
                for part in &b.contents {
                    let MessagePart::ToolResultPart(r) = part else {
                        continue;
                    };
                    let mut m = Map::new();
                    m.insert("role".into(), json!("tool"));
                    m.insert("content".into(), json!(joined_text(r.contents.iter())));
                    m.insert("tool_name".into(), json!(r.tool_name));
                    let images = images(&r.contents);
                    if !images.is_empty() {
                        m.insert("images".into(), Value::Array(images));
                    }
                    messages.push(Value::Object(m));
                }
            }
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
    }
    out.insert("stream".into(), Value::Bool(true));
    out.insert(
        "think".into(),
        Value::Bool(req.reasoning_budget.tokens().is_some()),
    );
    Ok(Value::Object(out))
}

/// A `user` message, or `None` when it carries nothing.
fn user(contents: &[MessagePart]) -> Result<Option<Value>, GenerationError> {
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for p in contents {
        match p {
            MessagePart::TextPart(t) if !t.text.is_empty() => texts.push(t.text.clone()),
            MessagePart::ImageInlinePart(i) | MessagePart::FileInlinePart(i) => {
                media(&i.mime_type, &i.encoded_data, &mut texts, &mut images)?;
            }
            MessagePart::ImageBinaryPart(b) | MessagePart::FileBinaryPart(b) => match &b.data {
                Value::String(data) => media(&b.mime_type, data, &mut texts, &mut images)?,
                _ => {
                    return Err(unsupported(&format!(
                        "binary {} data that is not a base64 string",
                        b.mime_type
                    )));
                }
            },
            MessagePart::ImageUrlPart(u) | MessagePart::FileUrlPart(u) => {
                return Err(unsupported(&format!(
                    "{} by URL (Ollama takes inline base64 images only)",
                    u.mime_type
                )));
            }
            _ => {}
        }
    }
    if texts.is_empty() && images.is_empty() {
        return Ok(None);
    }
    let mut m = Map::new();
    m.insert("role".into(), json!("user"));
    m.insert("content".into(), json!(texts.join("\n\n")));
    if !images.is_empty() {
        m.insert("images".into(), Value::Array(images));
    }
    Ok(Some(Value::Object(m)))
}

/// Base64 data: an image goes to `images`, a text file into the text; anything else fails.
fn media(
    mime: &str,
    data: &str,
    texts: &mut Vec<String>,
    images: &mut Vec<Value>,
) -> Result<(), GenerationError> {
    if mime.starts_with("image/") {
        images.push(json!(data.trim()));
        return Ok(());
    }
    if mime.starts_with("text/") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| unsupported(&format!("a {mime} file whose base64 is invalid ({e})")))?;
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
        return Ok(());
    }
    Err(unsupported(&format!("files of type {mime}")))
}

/// The `assistant` message of an expert turn, or `None` when it is empty.
fn assistant(contents: &[MessagePart]) -> Option<Value> {
    let text = joined_text(contents.iter());
    let thinking: Vec<&str> = contents
        .iter()
        .filter_map(|p| match p {
            MessagePart::ThinkingPart(t) if !t.thinking.is_empty() => Some(t.thinking.as_str()),
            _ => None,
        })
        .collect();
    let calls: Vec<Value> = contents
        .iter()
        .filter_map(|p| match p {
            MessagePart::ToolCallPart(c) => {
                let arguments = c.args_object();
                Some(json!({"function": {"name": c.tool_name, "arguments": arguments}}))
            }
            _ => None,
        })
        .collect();
    if text.is_empty() && thinking.is_empty() && calls.is_empty() {
        return None;
    }
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    m.insert("content".into(), json!(text));
    if !thinking.is_empty() {
        m.insert("thinking".into(), json!(thinking.join("\n\n")));
    }
    if !calls.is_empty() {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    Some(Value::Object(m))
}

/// The inline images among a tool result's contents, as base64 strings.
fn images(contents: &[MessagePart]) -> Vec<Value> {
    contents
        .iter()
        .filter_map(|p| match p {
            MessagePart::ImageInlinePart(i) | MessagePart::FileInlinePart(i)
                if i.mime_type.starts_with("image/") =>
            {
                Some(json!(i.encoded_data.trim()))
            }
            _ => None,
        })
        .collect()
}

/// The text parts, joined by blank lines.
fn joined_text<'a>(contents: impl Iterator<Item = &'a MessagePart>) -> String {
    let texts: Vec<&str> = contents
        .filter_map(MessagePart::as_text)
        .filter(|t| !t.is_empty())
        .collect();
    texts.join("\n\n")
}

fn unsupported(what: &str) -> GenerationError {
    GenerationError {
        name: "UnsupportedFunctionalityError".into(),
        message: format!("The Ollama provider cannot send {what}."),
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
    use crate::schema::{InlinePart, MessageBody, ToolCallPart, UrlPart};

    fn request(messages: Vec<Message>, budget: &str) -> GenerationRequest {
        GenerationRequest {
            expert_key: "e".into(),
            model: "gpt-oss:20b".into(),
            messages,
            tools: Arc::new(vec![ToolSpec {
                name: "t".into(),
                description: None,
                input_schema: json!({"type": "object"}),
            }]),
            reasoning_budget: budget.parse().unwrap(),
        }
    }

    fn inline(mime: &str, data: &str) -> InlinePart {
        InlinePart {
            id: "i".into(),
            encoded_data: data.into(),
            mime_type: mime.into(),
            extra: Map::new(),
        }
    }

    #[test]
    fn user_media_goes_to_images_or_text_and_think_follows_the_budget() {
        let user = Message::UserMessage(
            MessageBody::new(vec![
                MessagePart::text("see"),
                MessagePart::ImageInlinePart(inline("image/png", "iVBO")),
                MessagePart::FileInlinePart(inline("text/plain", "aGVsbG8=")),
            ])
            .into(),
        );
        let b = body(&request(vec![user], "none")).unwrap();
        assert_eq!(
            b["messages"],
            json!([{"role": "user", "content": "see\n\nhello", "images": ["iVBO"]}])
        );
        assert_eq!(b["think"], false);
        assert_eq!(
            b["tools"],
            json!([{"type": "function", "function": {"name": "t",
                    "parameters": {"type": "object"}}}])
        );
        let b = body(&request(vec![Message::user("q")], "minimal")).unwrap();
        assert_eq!(
            (b["think"].clone(), b["stream"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(body(&request(vec![], "0")).unwrap()["think"], false);
    }

    #[test]
    fn urls_and_unknown_files_are_non_retryable_errors() {
        let url = MessagePart::ImageUrlPart(UrlPart {
            id: "u".into(),
            url: "https://example.com/a.png".into(),
            mime_type: "image/png".into(),
            extra: Map::new(),
        });
        let zip = MessagePart::FileInlinePart(inline("application/zip", "AAAA"));
        for part in [url, zip] {
            let m = Message::UserMessage(MessageBody::new(vec![part]).into());
            let e = body(&request(vec![m], "low")).unwrap_err();
            assert!(
                !e.retryable && e.name == "UnsupportedFunctionalityError",
                "{e:?}"
            );
        }
    }

    #[test]
    fn empty_expert_turns_are_dropped_and_null_args_become_objects() {
        let call = MessagePart::ToolCallPart(ToolCallPart {
            id: "p".into(),
            tool_call_id: "call_0_t".into(),
            tool_name: "t".into(),
            args: Value::Null.into(),
            extra: Map::new(),
        });
        let msgs = vec![Message::expert(vec![]), Message::expert(vec![call])];
        let b = body(&request(msgs, "low")).unwrap();
        assert_eq!(
            b["messages"],
            json!([{"role": "assistant", "content": "",
                    "tool_calls": [{"function": {"name": "t", "arguments": {}}}]}])
        );
    }
}
