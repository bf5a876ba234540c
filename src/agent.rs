//! The agent loop as pure functions over plain data.
//!
//! [`Machine`] holds one run's checkpoint and step and moves through Perstack's states; the run
//! actor executes its [`Effect`]s and feeds back [`Input`]s. [`instruction_text`] builds the
//! system prompt; [`ToolCatalog`] applies every tool-name rule (pick/omit, claims, delegate
//! tools) and yields the [`ToolIndex`] that says who owns each tool name; [`RunFailure`] says
//! why a run stopped by error and what that means for the job; [`Delegation`] keeps one turn's
//! children (slots, results in call order, usage) and says what the parent resumes with.
//! Nothing here awaits, spawns, reads the clock or touches a file.

pub mod catalog;
mod delegation;
mod failure;
mod instruction;
mod machine;
mod recovery;
mod tools;

pub use catalog::{CatalogError, ToolCatalog};
pub use delegation::{ChildRun, Delegation, Resumed, final_text, next_segment};
pub use failure::RunFailure;
pub use instruction::{instruction_text, iso8601};
pub use machine::{Effect, Input, Machine, MachineSetting, Output, Start};
pub use recovery::{Resumption, latest_coordinator, plan};
pub use tools::{ATTEMPT_COMPLETION, BASE_SKILL, ToolIndex, ToolOwner, delegate_tool_name};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
