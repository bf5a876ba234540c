//! Skills as the model sees them: tool definitions, tool calls and their results.
//!
//! A skill is a set of tools served over MCP. This module owns:
//!
//! - [`base`]: the bundled `@perstack/base` MCP server ([`BaseSkill`]) and its in-process
//!   connection ([`base::connect_in_process`]), one instance per run.
//! - [`tool_definition`]: [`ToolDefinition`], the shape every skill kind reports its tools in.
//! - [`mcp_result`]: MCP `CallToolResult` → message parts, Perstack's conversion rules.
//! - [`error`]: [`SkillError`] and its policy (`feeds_back_to_model`).
//! - [`launcher`]: the one place a process is started for an Expert (stdio MCP servers,
//!   `exec`); where the sandbox plugs in.
//! - [`timeout`]: the one timeout of a tool call ([`timeout::bounded`]), 60 s or
//!   `PERSTACK_TOOL_TIMEOUT_MS`.
//!
//! It never writes events or checkpoints; the run actor turns what these functions return into
//! `skillConnected`, `callTools` and `resolveToolResults` events.

pub(crate) mod base;
pub(crate) mod error;
pub(crate) mod launcher;
pub(crate) mod mcp;
pub(crate) mod mcp_result;
pub(crate) mod timeout;
pub(crate) mod tool_definition;

pub(crate) use base::BaseSkill;
pub(crate) use error::SkillError;
pub(crate) use timeout::tool_timeout;
pub(crate) use tool_definition::ToolDefinition;
