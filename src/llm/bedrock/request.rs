//! The Converse API request body: Perstack messages → Bedrock `system` and `messages`, tools
//! as `toolConfig`, and the thinking budget as Claude's `thinking` in
//! `additionalModelRequestFields`.
//!
//! Instruction messages become `system` blocks; user and tool messages become `user` turns and
//! expert messages `assistant` turns, consecutive turns of one role merged (Converse wants
//! strict alternation). A message with `cache: true` is followed by a `cachePoint` block.
//! Thinking without a signature cannot be replayed and is dropped, as are empty texts and
//! messages left with no block. Images and documents travel as bytes (base64 in JSON).

use serde_json::{Map, Value, json};

use crate::llm::{GenerationError, GenerationRequest};
use crate::schema::{BinaryPart, InlinePart, Message, MessagePart, ToolResultPart};

/// The output limit asked for when thinking is on: the thinking budget comes on top of it
/// (as the AI SDK's Bedrock provider does).
const MAX_TOKENS_WITH_THINKING: u64 = 4096;

/// The smallest thinking budget Claude accepts; smaller budgets are raised to it.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Whether `model` (an id, an inference profile like `us.anthropic.claude-…`, or an ARN) is an
/// Anthropic Claude model, the only family that takes a thinking budget through Converse.
pub(super) fn is_claude(model: &str) -> bool {
    model.contains("anthropic.claude") || model.contains("claude-")
}

/// The JSON body of one ConverseStream call.
pub(super) fn body(req: &GenerationRequest) -> Result<Value, GenerationError> {
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
        if blocks.is_empty() {
            continue;
        }
        if body.cache == Some(true) {
            blocks.push(json!({"cachePoint": {"type": "default"}}));
        }
        match turns.last_mut() {
            _ if role == "system" => system.extend(blocks),
            Some((r, existing)) if *r == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let mut out = Map::new();
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
    if let Some(budget) = req.reasoning_budget.tokens()
        && is_claude(&req.model)
    {
        let budget = budget.max(MIN_THINKING_BUDGET);
        out.insert(
            "inferenceConfig".into(),
            json!({"maxTokens": MAX_TOKENS_WITH_THINKING + budget}),
        );
        out.insert(
            "additionalModelRequestFields".into(),
            json!({"thinking": {"type": "enabled", "budget_tokens": budget}}),
        );
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut spec = Map::new();
                spec.insert("name".into(), json!(t.name));
                if let Some(d) = t.description.as_deref().filter(|d| !d.is_empty()) {
                    spec.insert("description".into(), json!(d));
                }
                spec.insert("inputSchema".into(), json!({"json": t.input_schema}));
                json!({"toolSpec": spec})
            })
            .collect();
        out.insert(
            "toolConfig".into(),
            json!({"tools": tools, "toolChoice": {"auto": {}}}),
        );
    }
    Ok(Value::Object(out))
}

/// One part as a content block of a `role` turn, or `None` when the role cannot carry it.
fn convert_part(part: &MessagePart, role: &str) -> Result<Option<Value>, GenerationError> {
    let user = role == "user";
    Ok(match part {
        MessagePart::TextPart(t) if t.text.is_empty() => None,
        MessagePart::TextPart(t) => Some(json!({"text": t.text})),
        MessagePart::ThinkingPart(t) if role == "assistant" => match &t.signature {
            Some(sig) if !sig.is_empty() => Some(json!({"reasoningContent": {
                "reasoningText": {"text": t.thinking, "signature": sig}
            }})),
            _ => None,
        },
        MessagePart::ToolCallPart(c) if role == "assistant" => {
            let input = c.args_object();
            Some(
                json!({"toolUse": {"toolUseId": c.tool_call_id, "name": c.tool_name,
                "input": input}}),
            )
        }
        MessagePart::ToolResultPart(r) if user => Some(tool_result(r)?),
        MessagePart::ImageInlinePart(p) | MessagePart::FileInlinePart(p) if user => {
            Some(inline(p)?)
        }
        MessagePart::ImageBinaryPart(p) | MessagePart::FileBinaryPart(p) if user => {
            Some(binary(p)?)
        }
        MessagePart::ImageUrlPart(_) | MessagePart::FileUrlPart(_) if user => {
            return Err(unsupported(
                "images or files by URL (Converse takes bytes only)",
            ));
        }
        _ => None,
    })
}

fn tool_result(r: &ToolResultPart) -> Result<Value, GenerationError> {
    let mut content = Vec::new();
    for p in &r.contents {
        match p {
            MessagePart::TextPart(t) if !t.text.is_empty() => {
                content.push(json!({"text": t.text}));
            }
            MessagePart::ImageInlinePart(p) | MessagePart::FileInlinePart(p) => {
                content.push(inline(p)?);
            }
            _ => {}
        }
    }
    if content.is_empty() {
        content.push(json!({"text": ""}));
    }
    let status = if r.is_error == Some(true) {
        "error"
    } else {
        "success"
    };
    Ok(
        json!({"toolResult": {"toolUseId": r.tool_call_id, "content": content,
        "status": status}}),
    )
}

fn inline(p: &InlinePart) -> Result<Value, GenerationError> {
    bytes_block(&p.mime_type, &p.encoded_data, &p.id)
}

fn binary(p: &BinaryPart) -> Result<Value, GenerationError> {
    match &p.data {
        Value::String(s) => bytes_block(&p.mime_type, s, &p.id),
        _ => Err(unsupported(&format!(
            "binary {} data that is not a base64 string",
            p.mime_type
        ))),
    }
}

/// Base64 data as an image or a document block of Converse's formats.
fn bytes_block(mime: &str, data: &str, id: &str) -> Result<Value, GenerationError> {
    let image = match mime {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    };
    if let Some(format) = image {
        return Ok(json!({"image": {"format": format, "source": {"bytes": data.trim()}}}));
    }
    let document = match mime {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "text/html" => "html",
        "text/markdown" => "md",
        m if m.starts_with("text/") => "txt",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        other => return Err(unsupported(&format!("files of type {other}"))),
    };
    // Converse document names allow letters, digits, spaces, hyphens, parentheses, brackets.
    let name: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    Ok(
        json!({"document": {"format": document, "name": format!("file-{name}"),
        "source": {"bytes": data.trim()}}}),
    )
}

fn unsupported(what: &str) -> GenerationError {
    GenerationError {
        name: "UnsupportedFunctionalityError".into(),
        message: format!("The amazon-bedrock provider cannot send {what}."),
        status_code: None,
        retryable: false,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::llm::ToolSpec;
    use crate::schema::{ThinkingPart, ToolCallPart};

    fn request(model: &str, messages: Vec<Message>, budget: &str) -> GenerationRequest {
        GenerationRequest {
            expert_key: "e".into(),
            model: model.into(),
            messages,
            tools: Arc::new(vec![ToolSpec {
                name: "readTextFile".into(),
                description: Some("Read".into()),
                input_schema: json!({"type": "object"}),
            }]),
            reasoning_budget: budget.parse().unwrap(),
        }
    }

    #[test]
    fn messages_tools_thinking_and_cache_points_take_the_converse_shape() {
        // Instructions are always marked for caching.
        let instruction = Message::instruction("You are Perstack.");
        let thinking = MessagePart::ThinkingPart(ThinkingPart {
            id: "t".into(),
            thinking: "hmm".into(),
            signature: Some("sig".into()),
            extra: Default::default(),
        });
        let call = MessagePart::ToolCallPart(ToolCallPart {
            id: "c".into(),
            tool_call_id: "tooluse_1".into(),
            tool_name: "readTextFile".into(),
            args: json!({"path": "a"}).into(),
            extra: Default::default(),
        });
        let result = MessagePart::ToolResultPart(ToolResultPart {
            id: "r".into(),
            tool_call_id: "tooluse_1".into(),
            tool_name: "readTextFile".into(),
            contents: vec![MessagePart::text("hello")],
            is_error: None,
            extra: Default::default(),
        });
        let messages = vec![
            instruction,
            Message::user("Hi"),
            Message::expert(vec![thinking, call]),
            Message::ToolMessage(Arc::new(crate::schema::MessageBody::new(vec![result]))),
        ];
        let body = body(&request(
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            messages,
            "low",
        ))
        .unwrap();
        assert_eq!(
            body["system"],
            json!([{"text": "You are Perstack."}, {"cachePoint": {"type": "default"}}])
        );
        assert_eq!(
            body["messages"][0],
            json!({"role": "user", "content": [{"text": "Hi"}]})
        );
        assert_eq!(
            body["messages"][1]["content"],
            json!([
                {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "readTextFile",
                    "input": {"path": "a"}}}
            ])
        );
        assert_eq!(
            body["messages"][2]["content"][0]["toolResult"],
            json!({"toolUseId": "tooluse_1", "content": [{"text": "hello"}],
                "status": "success"})
        );
        assert_eq!(
            body["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 2048}})
        );
        assert_eq!(body["inferenceConfig"]["maxTokens"], 4096 + 2048);
        assert_eq!(
            body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"],
            json!({"json": {"type": "object"}})
        );
        assert_eq!(body["toolConfig"]["toolChoice"], json!({"auto": {}}));
        // No thinking for other model families, nor with budget none.
        let nova = body_of("amazon.nova-pro-v1:0", "low");
        assert!(nova.get("additionalModelRequestFields").is_none());
        let off = body_of("anthropic.claude-3-7-sonnet-20250219-v1:0", "none");
        assert!(off.get("additionalModelRequestFields").is_none());
    }

    fn body_of(model: &str, budget: &str) -> Value {
        body(&request(model, vec![Message::user("Hi")], budget)).unwrap()
    }
}
