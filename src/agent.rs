//! The agent loop as pure functions over plain data.
//!
//! [`Machine`] holds one run's checkpoint and step and moves through Perstack's states; the run
//! actor executes its [`Effect`]s and feeds back [`Input`]s. [`instruction_text`] builds the
//! system prompt; [`ToolIndex`] says who owns each tool name. Nothing here awaits, spawns,
//! reads the clock or touches a file.

mod instruction;
mod machine;
mod recovery;
mod tools;

pub use instruction::{instruction_text, iso8601};
pub use machine::{Effect, Input, Machine, MachineSetting, Output, RunStart};
pub use recovery::{Resumption, latest_coordinator, plan};
pub use tools::{ATTEMPT_COMPLETION, BASE_SKILL, ToolIndex, ToolOwner, delegate_tool_name};

#[cfg(test)]
mod tests;
