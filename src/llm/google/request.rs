//! The `streamGenerateContent` request body: Perstack messages → Gemini `systemInstruction` and
//! `contents` (REFERENCE §1.8), tools as `functionDeclarations`, and the reasoning budget as
//! `thinkingConfig`.
//!
//! | Perstack | Gemini |
//! | --- | --- |
//! | instruction message | `systemInstruction.parts[]` (text) |
//! | user message | `user` content: `text`, `inlineData` (base64) and `fileData` (URL) parts |
//! | expert message | `model` content: thought parts, `text`, `functionCall` parts |
//! | tool message | `user` content: one `functionResponse {name, response: {content}}` per result, in the order of the calls, then the results' images as `inlineData` |
//!
//! Thought signatures: a thinking part with text becomes `{text, thought: true,
//! thoughtSignature}`; a signature that arrived without thought text (on a function call or a
//! text part) is stored as an empty thinking part, and goes back on the message's first
//! `functionCall` part, or else on its text. Gemini 3 rejects a function call in the history
//! without a signature, so one from another provider gets Google's documented placeholder.
//! `cache` is ignored (Gemini caches implicitly).

use serde_json::{Map, Value, json};

use super::schema::normalize_schema;
use crate::llm::{GenerationError, GenerationRequest};
use crate::schema::{BinaryPart, InlinePart, Message, MessagePart, ToolResultPart};

/// The signature Google documents for function calls whose real signature is unknown.
pub(super) const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";

/// The JSON body of one streaming `generateContent` call.
pub(super) fn body(req: &GenerationRequest) -> Result<Value, GenerationError> {
    let mut system = Vec::new();
    let mut contents = Vec::new();
    // The ids of the last expert message's calls, to put its results in the same order.
    let mut last_calls: Vec<&str> = Vec::new();
    for m in &req.messages {
        match m {
            Message::InstructionMessage(b) => system.extend(
                b.contents
                    .iter()
                    .filter_map(MessagePart::as_text)
                    .filter(|t| !t.is_empty())
                    .map(|t| json!({"text": t})),
            ),
            Message::UserMessage(b) => {
                let mut parts = Vec::new();
                for p in &b.contents {
                    if let Some(part) = user_part(p)? {
                        parts.push(part);
                    }
                }
                push_content(&mut contents, "user", parts);
            }
            Message::ExpertMessage(b) => {
                last_calls = b
                    .contents
                    .iter()
                    .filter_map(|p| match p {
                        MessagePart::ToolCallPart(c) => Some(c.tool_call_id.as_str()),
                        _ => None,
                    })
                    .collect();
                let parts = model_parts(&b.contents, needs_signatures(&req.model));
                push_content(&mut contents, "model", parts);
            }
            Message::ToolMessage(b) => {
                push_content(&mut contents, "user", tool_parts(&b.contents, &last_calls));
            }
        }
    }
    let mut out = Map::new();
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    out.insert("contents".into(), Value::Array(contents));
    if !req.tools.is_empty() {
        let declarations: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), json!(t.name));
                if let Some(desc) = &t.description {
                    d.insert("description".into(), json!(desc));
                }
                if let Some(parameters) = normalize_schema(&t.input_schema) {
                    d.insert("parameters".into(), parameters);
                }
                Value::Object(d)
            })
            .collect();
        out.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
        // Perstack's `toolChoice: "auto"`, as the AI SDK writes it for Gemini.
        out.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": {"mode": "AUTO"}}),
        );
    }
    if let Some(budget) = req.reasoning_budget.tokens() {
        out.insert(
            "generationConfig".into(),
            json!({"thinkingConfig": {"thinkingBudget": budget, "includeThoughts": true}}),
        );
    }
    Ok(Value::Object(out))
}

/// Whether the model rejects function calls without thought signatures (Gemini 3 and later).
pub(super) fn needs_signatures(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    let Some(version) = name.strip_prefix("gemini-") else {
        return false;
    };
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse::<u32>().is_ok_and(|m| m >= 3)
}

fn push_content(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if !parts.is_empty() {
        contents.push(json!({"role": role, "parts": parts}));
    }
}

/// The parts of a `model` content: thoughts, text, then function calls, as stored.
fn model_parts(contents: &[MessagePart], placeholder: bool) -> Vec<Value> {
    // The last signature stored without thought text, for the first call (or the text).
    let mut loose_signature: Option<&str> = None;
    let mut parts = Vec::new();
    for p in contents {
        match p {
            MessagePart::ThinkingPart(t) if t.thinking.is_empty() => {
                if let Some(sig) = t.signature.as_deref().filter(|s| !s.is_empty()) {
                    loose_signature = Some(sig);
                }
            }
            MessagePart::ThinkingPart(t) => {
                let mut part = json!({"text": t.thinking, "thought": true});
                if let Some(sig) = t.signature.as_deref().filter(|s| !s.is_empty()) {
                    part["thoughtSignature"] = json!(sig);
                }
                parts.push(part);
            }
            MessagePart::TextPart(t) if !t.text.is_empty() => {
                parts.push(json!({"text": t.text}));
            }
            MessagePart::ToolCallPart(c) => {
                let args = c.args_object();
                parts.push(json!({"functionCall": {"name": c.tool_name, "args": args}}));
            }
            _ => {}
        }
    }
    let first_call = parts.iter().position(|p| p.get("functionCall").is_some());
    let target = first_call.or_else(|| {
        parts
            .iter()
            .rposition(|p| p.get("text").is_some() && p.get("thought").is_none())
    });
    if let Some(i) = target {
        let sig = match (loose_signature, first_call.is_some() && placeholder) {
            (Some(sig), _) => Some(sig),
            (None, true) => Some(PLACEHOLDER_SIGNATURE),
            (None, false) => None,
        };
        if let (Some(sig), Some(Value::Object(part))) = (sig, parts.get_mut(i)) {
            part.insert("thoughtSignature".into(), json!(sig));
        }
    }
    parts
}

/// One `functionResponse` per result, ordered like the calls they answer (unknown ids last,
/// in their own order), then the results' images.
fn tool_parts(contents: &[MessagePart], calls: &[&str]) -> Vec<Value> {
    let mut results: Vec<&ToolResultPart> = contents
        .iter()
        .filter_map(|p| match p {
            MessagePart::ToolResultPart(r) => Some(r),
            _ => None,
        })
        .collect();
    results.sort_by_key(|r| {
        calls
            .iter()
            .position(|id| *id == r.tool_call_id)
            .unwrap_or(usize::MAX)
    });
    let mut parts = Vec::new();
    let mut media = Vec::new();
    for r in results {
        let texts: Vec<&str> = r
            .contents
            .iter()
            .filter_map(MessagePart::as_text)
            .filter(|t| !t.is_empty())
            .collect();
        parts.push(json!({"functionResponse": {
            "name": r.tool_name,
            "response": {"content": texts.join("\n\n")},
        }}));
        for p in &r.contents {
            if let MessagePart::ImageInlinePart(i) | MessagePart::FileInlinePart(i) = p {
                media.push(inline(i));
            }
        }
    }
    parts.extend(media);
    parts
}

/// One part of a user message, or `None` when it carries nothing.
fn user_part(part: &MessagePart) -> Result<Option<Value>, GenerationError> {
    Ok(match part {
        MessagePart::TextPart(t) if t.text.is_empty() => None,
        MessagePart::TextPart(t) => Some(json!({"text": t.text})),
        MessagePart::ImageInlinePart(p) | MessagePart::FileInlinePart(p) => Some(inline(p)),
        MessagePart::ImageBinaryPart(p) | MessagePart::FileBinaryPart(p) => Some(binary(p)?),
        MessagePart::ImageUrlPart(p) | MessagePart::FileUrlPart(p) => {
            Some(json!({"fileData": {"mimeType": p.mime_type, "fileUri": p.url}}))
        }
        MessagePart::ToolCallPart(_)
        | MessagePart::ThinkingPart(_)
        | MessagePart::ToolResultPart(_) => None,
    })
}

fn inline(p: &InlinePart) -> Value {
    json!({"inlineData": {"mimeType": p.mime_type, "data": p.encoded_data.trim()}})
}

/// Perstack's binary parts, when their data is a base64 string.
fn binary(p: &BinaryPart) -> Result<Value, GenerationError> {
    match &p.data {
        Value::String(s) => Ok(json!({"inlineData": {"mimeType": p.mime_type, "data": s.trim()}})),
        _ => Err(GenerationError {
            name: "UnsupportedFunctionalityError".into(),
            message: format!(
                "The Google provider cannot send binary {} data that is not a base64 string.",
                p.mime_type
            ),
            status_code: None,
            retryable: false,
            retry_after: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::llm::ToolSpec;
    use crate::schema::{ReasoningBudget, ThinkingPart, ToolCallPart, ToolResult};

    fn request(model: &str, messages: Vec<Message>, budget: &str) -> GenerationRequest {
        GenerationRequest {
            expert_key: "e".into(),
            model: model.into(),
            messages,
            tools: Arc::new(vec![
                ToolSpec {
                    name: "attemptCompletion".into(),
                    description: None,
                    input_schema: json!({"type": "object", "properties": {}}),
                },
                ToolSpec {
                    name: "read".into(),
                    description: Some("Read".into()),
                    input_schema: json!({"type": "object", "$schema": "x",
                        "properties": {"p": {"type": "string"}}}),
                },
            ]),
            reasoning_budget: budget.parse::<ReasoningBudget>().unwrap(),
        }
    }

    fn thinking(text: &str, sig: Option<&str>) -> MessagePart {
        MessagePart::ThinkingPart(ThinkingPart {
            id: "t".into(),
            thinking: text.into(),
            signature: sig.map(str::to_string),
            extra: Map::new(),
        })
    }

    fn call(id: &str, name: &str) -> MessagePart {
        MessagePart::ToolCallPart(ToolCallPart {
            id: "c".into(),
            tool_call_id: id.into(),
            tool_name: name.into(),
            args: Value::Null.into(),
            extra: Map::new(),
        })
    }

    fn result(id: &str, name: &str, text: &str) -> ToolResult {
        ToolResult {
            id: id.into(),
            skill_name: "s".into(),
            tool_name: name.into(),
            result: vec![MessagePart::text(text)],
            is_error: false,
            extra: Map::new(),
        }
    }

    #[test]
    fn signatures_go_back_on_their_parts_and_results_follow_the_call_order() {
        let msgs = vec![
            Message::instruction("sys"),
            Message::user("q"),
            Message::expert(vec![
                thinking("hm", Some("sig-thought")),
                thinking("", Some("sig-call")),
                MessagePart::text("ok"),
                call("call_0_read", "read"),
                call("call_1_list", "list"),
            ]),
            Message::tool(&[
                result("call_1_list", "list", "l"),
                result("call_0_read", "read", "r"),
            ]),
        ];
        let b = body(&request("gemini-2.5-flash", msgs, "none")).unwrap();
        assert_eq!(b["systemInstruction"], json!({"parts": [{"text": "sys"}]}));
        assert_eq!(
            b["contents"],
            json!([
                {"role": "user", "parts": [{"text": "q"}]},
                {"role": "model", "parts": [
                    {"text": "hm", "thought": true, "thoughtSignature": "sig-thought"},
                    {"text": "ok"},
                    {"functionCall": {"name": "read", "args": {}}, "thoughtSignature": "sig-call"},
                    {"functionCall": {"name": "list", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "read", "response": {"content": "r"}}},
                    {"functionResponse": {"name": "list", "response": {"content": "l"}}}
                ]}
            ])
        );
        assert!(b.get("generationConfig").is_none());
        assert_eq!(
            b["tools"],
            json!([{"functionDeclarations": [
                {"name": "attemptCompletion"},
                {"name": "read", "description": "Read",
                 "parameters": {"type": "object", "properties": {"p": {"type": "string"}}}}
            ]}])
        );
    }

    #[test]
    fn gemini_3_gets_a_placeholder_signature_and_budgets_become_thinking_config() {
        let msgs = vec![
            Message::user("q"),
            Message::expert(vec![call("a", "read")]),
            Message::expert(vec![thinking("", Some("s")), MessagePart::text("done")]),
        ];
        let b = body(&request("gemini-3-pro-preview", msgs.clone(), "low")).unwrap();
        assert_eq!(
            b["contents"][1]["parts"][0]["thoughtSignature"],
            PLACEHOLDER_SIGNATURE
        );
        assert_eq!(
            b["contents"][2]["parts"],
            json!([{"text": "done", "thoughtSignature": "s"}])
        );
        assert_eq!(
            b["generationConfig"],
            json!({"thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true}})
        );
        let b = body(&request("gemini-2.5-pro", msgs, "1234")).unwrap();
        assert!(
            b["contents"][1]["parts"][0]
                .get("thoughtSignature")
                .is_none()
        );
        assert_eq!(
            b["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            1234
        );
        assert!(needs_signatures("models/gemini-3-flash"));
        assert!(!needs_signatures("gemini-2.5-flash") && !needs_signatures("gemma-3"));
    }

    #[test]
    fn media_parts_map_to_inline_and_file_data() {
        let inline = |mime: &str| InlinePart {
            id: "i".into(),
            encoded_data: "AAAA\n".into(),
            mime_type: mime.into(),
            extra: Map::new(),
        };
        let user = Message::UserMessage(
            crate::schema::MessageBody::new(vec![
                MessagePart::text("look"),
                MessagePart::ImageInlinePart(inline("image/png")),
                MessagePart::FileUrlPart(crate::schema::UrlPart {
                    id: "u".into(),
                    url: "https://example.com/a.pdf".into(),
                    mime_type: "application/pdf".into(),
                    extra: Map::new(),
                }),
            ])
            .into(),
        );
        let b = body(&request("gemini-2.5-flash", vec![user], "none")).unwrap();
        assert_eq!(
            b["contents"][0]["parts"],
            json!([
                {"text": "look"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"fileData": {"mimeType": "application/pdf",
                              "fileUri": "https://example.com/a.pdf"}}
            ])
        );
        let bad = MessagePart::ImageBinaryPart(BinaryPart {
            id: "b".into(),
            data: json!([1, 2]),
            mime_type: "image/png".into(),
            extra: Map::new(),
        });
        let m = Message::UserMessage(crate::schema::MessageBody::new(vec![bad]).into());
        let e = body(&request("g", vec![m], "none")).unwrap_err();
        assert!(!e.retryable, "{e:?}");
    }
}
