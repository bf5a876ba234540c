//! The runtime form of an Expert and its skills, as Perstack's `expertSchema` parses them.
//!
//! These are the shapes that travel inside `run-setting.json` and `perstack.lock`; `config`
//! builds them from `perstack.toml` (applying Perstack's defaults), nothing else constructs them
//! from user input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One Expert, with its key injected and every default applied.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Expert {
    /// The key under `[experts."<key>"]`.
    pub key: String,
    /// The Expert's name; Perstack sets it equal to the key.
    pub name: String,
    /// Semver version, default `1.0.0`.
    pub version: String,
    /// Shown to parents as the delegate tool's description.
    pub description: Option<String>,
    /// The Expert's instruction, placed in its system prompt.
    pub instruction: String,
    /// Skills by name.
    #[serde(default)]
    pub skills: BTreeMap<String, Skill>,
    /// Keys of the Experts this one may delegate to.
    #[serde(default)]
    pub delegates: Vec<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Provider-native tools (parsed, not used by the local runtime, as in Perstack).
    pub provider_tools: Option<Vec<String>>,
    /// Anthropic Agent Skills (parsed, not used).
    pub provider_skills: Option<Value>,
    /// Options for provider-native tools (parsed, not used).
    pub provider_tool_options: Option<Value>,
}

impl Expert {
    /// The `{key, name, version}` reference used in checkpoints.
    pub fn reference(&self) -> crate::schema::ExpertRef {
        crate::schema::ExpertRef {
            key: self.key.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }
}

/// A skill, discriminated by `type` exactly as Perstack spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Skill {
    /// A local MCP server over stdio.
    McpStdioSkill(McpStdioSkill),
    /// A remote MCP server over HTTP.
    McpSseSkill(McpSseSkill),
    /// Tools answered by the caller; the run stops when one is called.
    InteractiveSkill(InteractiveSkill),
}

impl Skill {
    /// The skill's name.
    pub fn name(&self) -> &str {
        match self {
            Skill::McpStdioSkill(s) => &s.name,
            Skill::McpSseSkill(s) => &s.name,
            Skill::InteractiveSkill(s) => &s.name,
        }
    }

    /// The skill's `rule`, appended to the system prompt.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Skill::McpStdioSkill(s) => s.rule.as_deref(),
            Skill::McpSseSkill(s) => s.rule.as_deref(),
            Skill::InteractiveSkill(s) => s.rule.as_deref(),
        }
    }
}

/// `type = "mcpStdioSkill"`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpStdioSkill {
    /// Skill name (the table key).
    pub name: String,
    /// Human description.
    pub description: Option<String>,
    /// Usage rule for the system prompt.
    pub rule: Option<String>,
    /// Allow-list of tool names (empty = all).
    #[serde(default)]
    pub pick: Vec<String>,
    /// Deny-list of tool names, applied before `pick`.
    #[serde(default)]
    pub omit: Vec<String>,
    /// The command to spawn.
    pub command: String,
    /// The package to run (exactly one of `packageName` and `args`).
    pub package_name: Option<String>,
    /// Command arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variable names passed to the server.
    #[serde(default)]
    pub required_env: Vec<String>,
    /// Start in the background instead of before the first step.
    #[serde(default)]
    pub lazy_init: bool,
    /// Docker-runtime egress allow-list (unused by the local runtime).
    pub allowed_domains: Option<Vec<String>>,
}

/// `type = "mcpSseSkill"`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpSseSkill {
    /// Skill name (the table key).
    pub name: String,
    /// Human description.
    pub description: Option<String>,
    /// Usage rule for the system prompt.
    pub rule: Option<String>,
    /// Allow-list of tool names (empty = all).
    #[serde(default)]
    pub pick: Vec<String>,
    /// Deny-list of tool names.
    #[serde(default)]
    pub omit: Vec<String>,
    /// The server's URL.
    pub endpoint: String,
    /// Docker-runtime egress allow-list (unused by the local runtime).
    pub allowed_domains: Option<Vec<String>>,
}

/// `type = "interactiveSkill"`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InteractiveSkill {
    /// Skill name (the table key).
    pub name: String,
    /// Human description.
    pub description: Option<String>,
    /// Usage rule for the system prompt.
    pub rule: Option<String>,
    /// Tools by name.
    #[serde(default)]
    pub tools: BTreeMap<String, InteractiveTool>,
}

/// One interactive tool.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InteractiveTool {
    /// Tool name (the table key).
    pub name: String,
    /// Description shown to the model.
    pub description: Option<String>,
    /// JSON Schema of the input, as a JSON string (Perstack's form).
    pub input_json_schema: String,
}
