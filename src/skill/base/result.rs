//! How base tools encode their answers: one text content holding compact JSON.
//!
//! Success is the JSON of the tool's value (Perstack's `successToolResult`); a failure the model
//! can fix is `{"error":"<Name>","message":"..."}` (Perstack's `errorToolResult`), also as plain
//! text and *not* flagged `isError`, so the model simply reads it and corrects itself.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde::Serialize;
use serde_json::Value;

/// A successful result: `value` as compact JSON in one text content.
pub(crate) fn json_result<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_string(value) {
        Ok(text) => text_result(text),
        Err(e) => json_error("SerializationError", &e.to_string()),
    }
}

/// A failure the model can react to: `{"error": name, "message": message}` as text.
pub(crate) fn json_error(name: &str, message: &str) -> CallToolResult {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: &'a str,
        message: &'a str,
    }
    // Two strings always serialise.
    let text = serde_json::to_string(&ErrorBody {
        error: name,
        message,
    })
    .unwrap_or_default();
    text_result(text)
}

/// A tool's input schema from a JSON literal: `{"type":"object","properties":..,"required":..}`.
/// Written by hand, like Perstack's zod shapes, so optional fields stay plain (no
/// `["string","null"]` unions) and every field carries its description.
pub(super) fn input_schema(schema: Value) -> Arc<JsonObject> {
    match schema {
        Value::Object(map) => Arc::new(map),
        _ => Arc::default(),
    }
}

/// One text content, without an `isError` field (Perstack's results have none).
fn text_result(text: String) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.is_error = None;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &CallToolResult) -> &str {
        &r.content[0].as_text().unwrap().text
    }

    #[test]
    fn results_are_single_compact_json_texts_without_is_error() {
        let r = json_result(&serde_json::json!({"a": [1, 2]}));
        assert_eq!(r.content.len(), 1);
        assert_eq!(text(&r), r#"{"a":[1,2]}"#);
        assert_eq!(r.is_error, None);
    }

    #[test]
    fn errors_are_json_texts_not_is_error_results() {
        let r = json_error("Error", "File nope.txt does not exist.");
        assert_eq!(
            text(&r),
            r#"{"error":"Error","message":"File nope.txt does not exist."}"#
        );
        assert_eq!(r.is_error, None);
    }
}
