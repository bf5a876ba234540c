//! The bundled `@perstack/base` skill: an rmcp MCP server that runs inside the engine.
//!
//! [`BaseSkill`] is the server; [`connect_in_process`] serves it over an in-memory duplex pipe
//! and connects an rmcp client to it, so the engine calls it exactly as it calls any other MCP
//! server. Each run gets its own instance: state such as the todo list lives in the instance,
//! never in a global (Perstack's todo list is a module-level singleton shared by every run in
//! the process; ours is not).
//!
//! Every tool answers with one text content holding compact JSON, like Perstack's
//! `JSON.stringify` results; failures the model can fix are JSON `{"error", "message"}` texts,
//! not `isError` results (see [`result`]).
//!
//! | File | Tools |
//! |---|---|
//! | `base/todo.rs` | `todo`, `clearTodo`, `attemptCompletion` |
//! | `base/health.rs` | `healthCheck` |
//!
//! Each file adds its tools with its own `#[tool_router(router = ..)]` block; [`BaseSkill::new`]
//! merges the routers. New tools (exec, the file tools) go in sibling files the same way.
//! This module never touches the event stream or checkpoints.

mod health;
mod in_process;
pub mod result;
mod todo;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::{ServerHandler, tool_handler};

pub use in_process::{ConnectTimings, InProcessBase, ServerIdentity, connect_in_process};
pub use todo::TodoItem;

/// The base skill's name, as servers, tool definitions and events report it.
pub const BASE_SKILL_NAME: &str = "@perstack/base";

/// The `@perstack/base` MCP server. One instance per run.
#[derive(Debug)]
pub struct BaseSkill {
    /// The directory the file tools are confined to; reported by `healthCheck`.
    workspace: PathBuf,
    /// When this instance was created; `healthCheck`'s uptime counts from here.
    started: Instant,
    /// This run's todo list. Locked only for in-memory edits, never across an `.await`.
    todos: Arc<Mutex<todo::TodoList>>,
    /// Every tool, merged from the per-file routers.
    tool_router: ToolRouter<BaseSkill>,
}

impl BaseSkill {
    /// A fresh base skill (empty todo list) for the given workspace directory.
    ///
    /// The path is used as given; pass an absolute, canonical path (Perstack uses the realpath
    /// of the working directory).
    pub fn new(workspace: impl Into<PathBuf>) -> Self {
        BaseSkill {
            workspace: workspace.into(),
            started: Instant::now(),
            todos: Arc::default(),
            tool_router: Self::todo_router() + Self::health_router(),
        }
    }

    /// The workspace directory.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// A snapshot of the todo list, in creation order.
    pub fn todos(&self) -> Vec<TodoItem> {
        self.lock_todos().items().to_vec()
    }

    fn lock_todos(&self) -> std::sync::MutexGuard<'_, todo::TodoList> {
        // A panic while holding the lock cannot leave the list half-edited in a way that
        // matters to the model, so a poisoned lock is simply taken over.
        self.todos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tool_handler(router = self.tool_router, name = "@perstack/base")]
impl ServerHandler for BaseSkill {}

#[cfg(test)]
mod tests;
