//! The agent loop as pure functions over plain data.
//!
//! [`Machine`] holds one run's checkpoint and step and moves through Perstack's states; the run
//! actor executes its [`Effect`]s and feeds back [`Input`]s. [`instruction_text`] builds the
//! system prompt; [`ToolCatalog`] applies every tool-name rule (pick/omit, claims, delegate
//! tools) and yields the [`ToolIndex`] that says who owns each tool name; [`RunFailure`] says
//! why a run stopped by error and what that means for the job; [`Delegation`] keeps one turn's
//! children (slots, results in call order, usage) and says what the parent resumes with.
//! Nothing here awaits, spawns, reads the clock or touches a file.

pub(crate) mod catalog;
mod delegation;
mod failure;
mod instruction;
mod machine;
mod recovery;
mod tools;

pub(crate) use catalog::{CatalogError, ToolCatalog, ToolLists};
#[cfg(test)]
use delegation::Resumed;
pub(crate) use delegation::{Delegation, next_segment};
pub(crate) use failure::RunFailure;
pub(crate) use instruction::{instruction_text, iso8601};
pub(crate) use machine::{Effect, Input, Machine, MachineSetting, Output, Start};
pub(crate) use recovery::{Resumption, latest_coordinator, plan};
pub(crate) use tools::{BASE_SKILL, ToolIndex, ToolOwner};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
