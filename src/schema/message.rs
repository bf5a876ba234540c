//! Messages and message parts: the conversation an Expert run accumulates.
//!
//! Every message and every part carries an `id`; both are discriminated on `type` with
//! Perstack's names (`textPart`, `expertMessage`, ...). Unknown fields are kept in `extra`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::id::new_id;

/// One part of a message, discriminated on `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum MessagePart {
    /// Plain text.
    TextPart(TextPart),
    /// An image referenced by URL.
    ImageUrlPart(UrlPart),
    /// An image inlined as base64.
    ImageInlinePart(InlinePart),
    /// An image as raw data (Perstack's binary form).
    ImageBinaryPart(BinaryPart),
    /// A file referenced by URL.
    FileUrlPart(UrlPart),
    /// A file inlined as base64.
    FileInlinePart(InlinePart),
    /// A file as raw data.
    FileBinaryPart(BinaryPart),
    /// A tool call inside an expert message.
    ToolCallPart(ToolCallPart),
    /// Model reasoning, with the provider's signature when there is one.
    ThinkingPart(ThinkingPart),
    /// A tool result inside a tool message.
    ToolResultPart(ToolResultPart),
}

/// `textPart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextPart {
    /// Part id.
    pub id: String,
    /// The text.
    pub text: String,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `imageUrlPart` / `fileUrlPart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlPart {
    /// Part id.
    pub id: String,
    /// The URL.
    pub url: String,
    /// MIME type.
    pub mime_type: String,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `imageInlinePart` / `fileInlinePart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlinePart {
    /// Part id.
    pub id: String,
    /// Base64 data.
    pub encoded_data: String,
    /// MIME type.
    pub mime_type: String,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `imageBinaryPart` / `fileBinaryPart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BinaryPart {
    /// Part id.
    pub id: String,
    /// The data as Perstack serialised it.
    pub data: Value,
    /// MIME type.
    pub mime_type: String,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `toolCallPart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallPart {
    /// Part id.
    pub id: String,
    /// The provider's tool-call id.
    pub tool_call_id: String,
    /// Tool name.
    pub tool_name: String,
    /// Arguments, shared with the [`ToolCall`](super::ToolCall) of the same call (serialised as
    /// the object itself).
    pub args: Arc<Value>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ToolCallPart {
    /// The arguments as a provider's request carries them: an object, `{}` for a call
    /// recorded without arguments (`null`).
    pub fn args_object(&self) -> Value {
        match self.args.as_ref() {
            Value::Null => Value::Object(Map::new()),
            v => v.clone(),
        }
    }
}

/// `thinkingPart`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkingPart {
    /// Part id.
    pub id: String,
    /// The reasoning text.
    pub thinking: String,
    /// Provider signature (Anthropic), passed back on later turns.
    pub signature: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `toolResultPart`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResultPart {
    /// Part id.
    pub id: String,
    /// The call this answers.
    pub tool_call_id: String,
    /// Tool name.
    pub tool_name: String,
    /// Result contents (text, inline image, inline file).
    pub contents: Vec<MessagePart>,
    /// Whether the tool reported an error.
    pub is_error: Option<bool>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MessagePart {
    /// A new text part.
    pub fn text(text: impl Into<String>) -> Self {
        MessagePart::TextPart(TextPart {
            id: new_id(),
            text: text.into(),
            extra: Map::new(),
        })
    }

    /// The text of a `textPart`.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            MessagePart::TextPart(t) => Some(&t.text),
            _ => None,
        }
    }

    /// Whether this part may appear inside a tool result (text, inline image, inline file).
    pub fn is_tool_result_content(&self) -> bool {
        matches!(
            self,
            MessagePart::TextPart(_)
                | MessagePart::ImageInlinePart(_)
                | MessagePart::FileInlinePart(_)
        )
    }

    /// The same part with a fresh id (Perstack re-ids parts when it copies them into a message).
    pub fn with_new_id(&self) -> Self {
        let mut p = self.clone();
        let id = match &mut p {
            MessagePart::TextPart(x) => &mut x.id,
            MessagePart::ImageUrlPart(x) | MessagePart::FileUrlPart(x) => &mut x.id,
            MessagePart::ImageInlinePart(x) | MessagePart::FileInlinePart(x) => &mut x.id,
            MessagePart::ImageBinaryPart(x) | MessagePart::FileBinaryPart(x) => &mut x.id,
            MessagePart::ToolCallPart(x) => &mut x.id,
            MessagePart::ThinkingPart(x) => &mut x.id,
            MessagePart::ToolResultPart(x) => &mut x.id,
        };
        *id = new_id();
        p
    }
}

/// A message, discriminated on `type`.
///
/// Messages never change once written, and every event and checkpoint of a run carries the
/// history, so each body is shared: cloning a message (or a whole history) copies pointers,
/// not text. Edit one with [`Arc::make_mut`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Message {
    /// The system prompt.
    InstructionMessage(Arc<MessageBody>),
    /// A user turn.
    UserMessage(Arc<MessageBody>),
    /// A model turn: thinking, then text, then tool calls.
    ExpertMessage(Arc<MessageBody>),
    /// Tool results.
    ToolMessage(Arc<MessageBody>),
}

/// The fields every message has.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    /// Message id.
    pub id: String,
    /// Parts.
    pub contents: Vec<MessagePart>,
    /// Ask the provider to cache the prompt up to here.
    pub cache: Option<bool>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MessageBody {
    /// A body with a fresh id.
    pub fn new(contents: Vec<MessagePart>) -> Self {
        MessageBody {
            id: new_id(),
            contents,
            cache: None,
            extra: Map::new(),
        }
    }
}

impl Message {
    /// The instruction (system) message; always marked for caching.
    pub fn instruction(text: impl Into<String>) -> Self {
        let mut b = MessageBody::new(vec![MessagePart::text(text)]);
        b.cache = Some(true);
        Message::InstructionMessage(Arc::new(b))
    }

    /// A user message holding one text part.
    pub fn user(text: impl Into<String>) -> Self {
        Message::UserMessage(Arc::new(MessageBody::new(vec![MessagePart::text(text)])))
    }

    /// An expert message with the given parts.
    pub fn expert(contents: Vec<MessagePart>) -> Self {
        Message::ExpertMessage(Arc::new(MessageBody::new(contents)))
    }

    /// A tool message with one `toolResultPart` per result, keeping only text, inline image
    /// and inline file contents (Perstack's filter); a result marked as an error gets
    /// `isError: true` (Perstack drops MCP's flag; this engine keeps it).
    pub fn tool(results: &[super::ToolResult]) -> Self {
        let contents = results
            .iter()
            .map(|r| {
                MessagePart::ToolResultPart(ToolResultPart {
                    id: new_id(),
                    tool_call_id: r.id.clone(),
                    tool_name: r.tool_name.clone(),
                    contents: r
                        .result
                        .iter()
                        .filter(|p| p.is_tool_result_content())
                        .map(MessagePart::with_new_id)
                        .collect(),
                    // Set only for errors: Perstack's parts never carry `isError: false`.
                    is_error: r.is_error.then_some(true),
                    extra: Map::new(),
                })
            })
            .collect();
        Message::ToolMessage(Arc::new(MessageBody::new(contents)))
    }

    /// The common fields.
    pub fn body(&self) -> &MessageBody {
        match self {
            Message::InstructionMessage(b)
            | Message::UserMessage(b)
            | Message::ExpertMessage(b)
            | Message::ToolMessage(b) => b,
        }
    }

    /// The first text part's text, if any.
    pub fn first_text(&self) -> Option<&str> {
        self.body().contents.iter().find_map(MessagePart::as_text)
    }

    /// Whether this is an expert message.
    pub fn is_expert(&self) -> bool {
        matches!(self, Message::ExpertMessage(_))
    }
}
