//! MCP tool results → message parts, following Perstack's conversion rules.
//!
//! | MCP content | Part |
//! |---|---|
//! | (no content at all) | `textPart` `Tool <name> returned nothing with arguments: <json>` |
//! | `text` | `textPart`; an empty text becomes "Error: No content" |
//! | `image` | `imageInlinePart` |
//! | `resource` with text | `textPart` |
//! | `resource` with a blob | `fileInlinePart` |
//! | `audio`, `resource_link` | dropped |
//!
//! Perstack ignores `isError`; [`to_message_parts`] reports it next to the parts, and the engine
//! keeps it all the way to the model (the `toolResultPart`'s `isError`). Where Perstack throws (and so crashes the run) on malformed content, this module
//! returns a text part explaining the problem instead, so the model can carry on:
//!
//! - an image without data or MIME type becomes the text
//!   "Error: Image part must have both data and mimeType";
//! - a blob resource without a MIME type is inlined as `application/octet-stream`;
//! - a text resource needs no MIME type, and an empty one becomes "Error: No content";
//! - a resource kind newer than rmcp 3.11 becomes "Error: Unsupported resource type".
//!
//! This module does no I/O; the `readImageFile`/`readPdfFile` inlining is the base skill's
//! ([`crate::skill::base::inline_media`]).

use std::fmt::Display;

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::{Map, Value};

use crate::schema::id::new_id;
use crate::schema::{InlinePart, MessagePart};

/// The parts a tool result converts to, with the result's `isError` flag.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConvertedResult {
    /// The parts, in the server's order.
    pub parts: Vec<MessagePart>,
    /// Whether the server flagged the result as an error (`isError: true`).
    pub is_error: bool,
}

/// MIME type used for a blob resource that does not name one.
const FALLBACK_BLOB_MIME_TYPE: &str = "application/octet-stream";

/// Converts the result of calling `tool_name` with `args` into message parts.
pub(crate) fn to_message_parts(
    tool_name: &str,
    args: &Value,
    result: &CallToolResult,
) -> ConvertedResult {
    let is_error = result.is_error.unwrap_or(false);
    if result.content.is_empty() {
        let args = serde_json::to_string(args).unwrap_or_else(|_| "{}".to_owned());
        return ConvertedResult {
            parts: vec![MessagePart::text(format!(
                "Tool {tool_name} returned nothing with arguments: {args}"
            ))],
            is_error,
        };
    }
    let parts = result.content.iter().filter_map(convert_block).collect();
    ConvertedResult { parts, is_error }
}

/// The text Perstack gives the model when a call fails at the protocol level:
/// `Error calling tool <name>: <message>`.
pub(crate) fn mcp_error_text(tool_name: &str, err: &impl Display) -> String {
    format!("Error calling tool {tool_name}: {err}")
}

/// One content block; `None` for the kinds Perstack drops.
fn convert_block(block: &ContentBlock) -> Option<MessagePart> {
    match block {
        ContentBlock::Text(t) => Some(non_empty_text(&t.text)),
        ContentBlock::Image(img) => {
            if img.data.is_empty() || img.mime_type.is_empty() {
                Some(MessagePart::text(
                    "Error: Image part must have both data and mimeType",
                ))
            } else {
                Some(MessagePart::ImageInlinePart(inline(
                    &img.data,
                    &img.mime_type,
                )))
            }
        }
        ContentBlock::Resource(r) => Some(match &r.resource {
            ResourceContents::TextResourceContents { text, .. } => non_empty_text(text),
            ResourceContents::BlobResourceContents {
                blob, mime_type, ..
            } => {
                let mime = mime_type
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .unwrap_or(FALLBACK_BLOB_MIME_TYPE);
                MessagePart::FileInlinePart(inline(blob, mime))
            }
            // A resource kind newer than this engine (Perstack throws here).
            _ => MessagePart::text("Error: Unsupported resource type"),
        }),
        ContentBlock::Audio(_) | ContentBlock::ResourceLink(_) => None,
        // A content kind newer than this engine: dropped, like audio.
        _ => None,
    }
}

fn non_empty_text(text: &str) -> MessagePart {
    if text.is_empty() {
        MessagePart::text("Error: No content")
    } else {
        MessagePart::text(text)
    }
}

fn inline(data: &str, mime_type: &str) -> InlinePart {
    InlinePart {
        id: new_id(),
        encoded_data: data.to_owned(),
        mime_type: mime_type.to_owned(),
        extra: Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skill::SkillError;
    use rmcp::model::{EmbeddedResource, Resource};
    use serde_json::json;

    fn texts(parts: &[MessagePart]) -> Vec<&str> {
        parts.iter().filter_map(MessagePart::as_text).collect()
    }

    #[test]
    fn empty_content_names_the_tool_and_its_arguments() {
        let r = CallToolResult::success(vec![]);
        let out = to_message_parts("listDirectory", &json!({"path": "."}), &r);
        assert_eq!(
            texts(&out.parts),
            ["Tool listDirectory returned nothing with arguments: {\"path\":\".\"}"]
        );
        assert!(!out.is_error);
    }

    #[test]
    fn text_is_kept_and_empty_text_becomes_no_content() {
        let r = CallToolResult::success(vec![ContentBlock::text("{}"), ContentBlock::text("")]);
        let out = to_message_parts("t", &json!({}), &r);
        assert_eq!(texts(&out.parts), ["{}", "Error: No content"]);
    }

    #[test]
    fn images_become_inline_image_parts() {
        let r = CallToolResult::success(vec![ContentBlock::image("aGk=", "image/png")]);
        let out = to_message_parts("t", &json!({}), &r);
        let [MessagePart::ImageInlinePart(p)] = out.parts.as_slice() else {
            panic!("{:?}", out.parts)
        };
        assert_eq!(
            (p.encoded_data.as_str(), p.mime_type.as_str()),
            ("aGk=", "image/png")
        );
        assert_eq!(p.id.len(), 24);
    }

    #[test]
    fn an_image_without_a_mime_type_becomes_an_error_text_instead_of_a_crash() {
        let r = CallToolResult::success(vec![ContentBlock::image("aGk=", "")]);
        let out = to_message_parts("t", &json!({}), &r);
        assert_eq!(
            texts(&out.parts),
            ["Error: Image part must have both data and mimeType"]
        );
    }

    #[test]
    fn text_resources_become_text_and_blobs_become_inline_files() {
        let r = CallToolResult::success(vec![
            ContentBlock::embedded_text("file:///a.txt", "hello"),
            ContentBlock::resource(
                ResourceContents::blob("JVBERi0=", "file:///a.pdf")
                    .with_mime_type("application/pdf"),
            ),
            ContentBlock::resource(ResourceContents::blob("AAA=", "file:///x")),
            ContentBlock::Resource(EmbeddedResource::new(ResourceContents::text(
                "",
                "file:///e",
            ))),
        ]);
        let out = to_message_parts("t", &json!({}), &r);
        assert_eq!(out.parts.len(), 4);
        assert_eq!(out.parts[0].as_text(), Some("hello"));
        let MessagePart::FileInlinePart(pdf) = &out.parts[1] else {
            panic!("{:?}", out.parts[1])
        };
        assert_eq!(
            (pdf.encoded_data.as_str(), pdf.mime_type.as_str()),
            ("JVBERi0=", "application/pdf")
        );
        let MessagePart::FileInlinePart(blob) = &out.parts[2] else {
            panic!("{:?}", out.parts[2])
        };
        assert_eq!(blob.mime_type, "application/octet-stream");
        assert_eq!(out.parts[3].as_text(), Some("Error: No content"));
    }

    #[test]
    fn audio_and_resource_links_are_dropped() {
        let r = CallToolResult::success(vec![
            ContentBlock::audio("AAA=", "audio/wav"),
            ContentBlock::resource_link(Resource::new("file:///a", "a")),
            ContentBlock::text("kept"),
        ]);
        let out = to_message_parts("t", &json!({}), &r);
        assert_eq!(texts(&out.parts), ["kept"]);
    }

    #[test]
    fn only_dropped_kinds_give_no_parts_like_perstack() {
        let r = CallToolResult::success(vec![ContentBlock::audio("AAA=", "audio/wav")]);
        assert!(to_message_parts("t", &json!({}), &r).parts.is_empty());
    }

    #[test]
    fn is_error_is_reported_alongside_the_parts() {
        let r = CallToolResult::error(vec![ContentBlock::text("boom")]);
        let out = to_message_parts("t", &json!({}), &r);
        assert!(out.is_error);
        assert_eq!(texts(&out.parts), ["boom"]);
    }

    #[test]
    fn protocol_errors_read_like_perstacks() {
        let err = SkillError::Mcp {
            skill: "@perstack/base".into(),
            tool: "nope".into(),
            code: -32602,
            message: "tool not found".into(),
        };
        assert_eq!(
            mcp_error_text("nope", &err),
            "Error calling tool nope: MCP error -32602: tool not found"
        );
    }
}
