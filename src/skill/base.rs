//! The bundled `@perstack/base` skill: an rmcp MCP server that runs inside the engine.
//!
//! [`BaseSkill`] is the server. In the engine, [`connect_in_process`] calls its tools directly
//! through the server's own rmcp tool router (same arguments, results and protocol errors as
//! over MCP, without a transport or a task); `perstack base` serves it over stdio for other MCP
//! clients and for `perstackBaseSkillCommand`. Each run gets its own instance: state such as the todo list lives in the instance,
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
//! | `base/files.rs` | `readTextFile`, `writeTextFile`, `appendTextFile`, `editTextFile`, `deleteFile` |
//! | `base/info.rs` | `getFileInfo` |
//! | `base/dirs.rs` | `listDirectory`, `createDirectory`, `deleteDirectory`, `moveFile` |
//! | `base/media.rs` | `readImageFile`, `readPdfFile` (and [`read_inline_file`] for the runtime) |
//! | `base/exec.rs` | `exec` |
//!
//! Each file adds its tools with its own `#[tool_router(router = ..)]` block; [`BaseSkill::new`]
//! merges the routers. Every file tool and `exec`'s working directory go through
//! `base/path.rs`, which confines them to the workspace (outside `perstack/`) without the
//! symlink and TOCTOU holes of Perstack's `validatePath`. This module never touches the event
//! stream or checkpoints.

mod dirs;
mod exec;
mod files;
mod health;
mod in_process;
mod info;
mod media;
mod path;
pub(crate) mod result;
mod todo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::{ServerHandler, tool_handler};

pub(crate) use in_process::{
    ConnectTimings, InProcessBase, ServerIdentity, connect_in_process, selected_tools,
};
pub(crate) use media::inline_media;

/// The base skill's only tool that starts processes (`exec`): a sandboxed base skill needs an
/// egress proxy only when the model may call it. The `#[tool]` attribute in `exec.rs` spells
/// the same name; a unit test checks they agree.
pub(crate) const EXEC_TOOL: &str = "exec";
#[cfg(test)]
use media::read_inline_file;
#[cfg(test)]
use todo::TodoItem;

use crate::schema::BASE_SKILL;

/// The `@perstack/base` MCP server. One instance per run.
#[derive(Debug)]
pub(crate) struct BaseSkill {
    /// The directory the file tools are confined to (canonical when it exists); reported by
    /// `healthCheck`.
    workspace: PathBuf,
    /// The safe subset (`PATH`, `HOME`, `SHELL`, `TERM`, `NODE_PATH`, proxy settings) of the
    /// configured environment: the base of `exec`'s environment, and `HOME` for `~`. Nothing
    /// else is kept, so no secret can reach a command through it.
    env: BTreeMap<String, String>,
    /// When this instance was created; `healthCheck`'s uptime counts from here.
    started: Instant,
    /// The sandbox `exec` confines its commands in; `None` (the default of a bare
    /// [`BaseSkill`]) runs them with the engine's rights. The engine sets it from its
    /// [`Isolation`](crate::sandbox::Isolation).
    sandbox: Option<crate::sandbox::SandboxScope>,
    /// This run's todo list. Locked only for in-memory edits, never across an `.await`.
    todos: Arc<Mutex<todo::TodoList>>,
    /// Every tool, merged from the per-file routers; shared by every instance.
    tool_router: Arc<ToolRouter<BaseSkill>>,
}

impl BaseSkill {
    /// A fresh base skill (empty todo list) for the given workspace directory.
    ///
    /// The path is canonicalised once, here (Perstack uses the realpath of the working
    /// directory); if that fails (it does not exist) it is kept as given. The environment is
    /// the safe subset of this process's environment; see [`BaseSkill::with_workspace_env`].
    pub(crate) fn new(workspace: impl Into<PathBuf>) -> Self {
        let process_env = std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
        Self::build(workspace.into(), exec::safe_env(process_env))
    }

    /// A fresh base skill for `workspace` whose environment is the safe subset of `env` (the
    /// run's environment: the process environment merged with the env files), without
    /// looking at this process's. `exec`'s base environment and `~`'s `HOME` come from it.
    pub(crate) fn with_workspace_env(
        workspace: impl Into<PathBuf>,
        env: &BTreeMap<String, String>,
    ) -> Self {
        let safe = env.iter().map(|(k, v)| (k.clone(), v.clone()));
        Self::build(workspace.into(), exec::safe_env(safe))
    }

    fn build(workspace: PathBuf, env: BTreeMap<String, String>) -> Self {
        BaseSkill {
            workspace: std::fs::canonicalize(&workspace).unwrap_or(workspace),
            env,
            started: Instant::now(),
            sandbox: None,
            todos: Arc::default(),
            tool_router: Self::router(),
        }
    }

    /// The tools' MCP definitions, sorted by name as `tools/list` gives them.
    pub(crate) fn list_tools() -> Vec<rmcp::model::Tool> {
        Self::router().list_all()
    }

    /// Every tool, merged from the per-file routers. Building it generates the input schemas,
    /// so it is built once per process and shared.
    fn router() -> Arc<ToolRouter<BaseSkill>> {
        static ROUTER: std::sync::OnceLock<Arc<ToolRouter<BaseSkill>>> = std::sync::OnceLock::new();
        ROUTER
            .get_or_init(|| {
                Arc::new(
                    Self::todo_router()
                        + Self::health_router()
                        + Self::files_router()
                        + Self::info_router()
                        + Self::dirs_router()
                        + Self::media_router()
                        + Self::exec_router(),
                )
            })
            .clone()
    }

    /// Confines `exec`'s commands in `sandbox` (`None`: the engine's rights).
    pub(crate) fn with_sandbox(mut self, sandbox: Option<crate::sandbox::SandboxScope>) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// The workspace directory.
    pub(crate) fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// A snapshot of the todo list, in creation order.
    #[cfg(test)]
    pub(crate) fn todos(&self) -> Vec<TodoItem> {
        self.lock_todos().items().to_vec()
    }

    /// The confinement the file tools work in.
    fn ws(&self) -> path::Workspace {
        let home = self.env.get("HOME").map(PathBuf::from);
        path::Workspace::from_canonical(self.workspace.clone(), home)
    }

    fn lock_todos(&self) -> std::sync::MutexGuard<'_, todo::TodoList> {
        // A panic while holding the lock cannot leave the list half-edited in a way that
        // matters to the model, so a poisoned lock is simply taken over.
        self.todos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BaseSkill {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(
            rmcp::model::ServerCapabilities::builder()
                .enable_tools()
                .build(),
        )
        .with_server_info(rmcp::model::Implementation::new(
            BASE_SKILL,
            env!("CARGO_PKG_VERSION"),
        ))
    }
}

/// Whether `skill` pins a published `@perstack/base` version (`@perstack/base@x.y.z` as its
/// package or in its arguments): then it runs as a stdio server instead of in process.
pub(crate) fn is_pinned(skill: &crate::schema::McpStdioSkill) -> bool {
    let pinned = format!("{BASE_SKILL}@");
    skill
        .package_name
        .iter()
        .chain(skill.args.iter())
        .any(|a| a.starts_with(&pinned))
}

#[cfg(test)]
mod tests;
