//! Skills as the model sees them: tool definitions, tool calls and their results.
//!
//! A skill is a set of tools served over MCP. This module owns:
//!
//! - [`base`]: the bundled `@perstack/base` MCP server ([`BaseSkill`]) and its in-process
//!   connection ([`base::connect_in_process`]), one instance per run.
//! - [`tool_definition`]: [`ToolDefinition`], the shape every skill kind reports its tools in.
//! - [`mcp_result`]: MCP `CallToolResult` → message parts, Perstack's conversion rules.
//! - [`error`]: [`SkillError`] and its policy (`feeds_back_to_model`).
//!
//! It never writes events or checkpoints; the run actor turns what these functions return into
//! `skillConnected`, `callTools` and `resolveToolResults` events.

pub mod base;
pub mod error;
pub mod mcp;
pub mod mcp_result;
pub mod tool_definition;

pub use base::BaseSkill;
pub use error::SkillError;
pub use tool_definition::ToolDefinition;
