//! [`ToolDefinition`]: one tool as a skill reports it, in Perstack's lockfile shape.
//!
//! Every skill kind (the bundled base, stdio/SSE MCP servers, interactive tools, delegates)
//! describes its tools this way; the tool catalog hands them to the model.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool as a skill reports it: `{skillName, name, description?, inputSchema}`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolDefinition {
    /// The owning skill (`@perstack/base`, a skill key, or a delegate Expert's name).
    pub skill_name: String,
    /// The tool's name as the model sees it (no skill prefix).
    pub name: String,
    /// What the tool does, for the model.
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub input_schema: Value,
}

impl ToolDefinition {
    /// The definition of an MCP tool served by `skill_name`.
    pub fn from_mcp(skill_name: &str, tool: &rmcp::model::Tool) -> Self {
        ToolDefinition {
            skill_name: skill_name.to_owned(),
            name: tool.name.to_string(),
            description: tool.description.as_ref().map(|d| d.to_string()),
            input_schema: Value::Object(tool.input_schema.as_ref().clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_in_camel_case_and_omits_a_missing_description() {
        let def = ToolDefinition {
            skill_name: "@perstack/base".into(),
            name: "clearTodo".into(),
            description: None,
            input_schema: json!({"type": "object", "properties": {}}),
        };
        assert_eq!(
            serde_json::to_value(&def).unwrap(),
            json!({
                "skillName": "@perstack/base",
                "name": "clearTodo",
                "inputSchema": {"type": "object", "properties": {}}
            })
        );
    }
}
