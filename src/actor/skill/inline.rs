//! The in-process base skill without an actor of its own, and [`SkillRef`], a run's handle on
//! either kind of skill.
//!
//! An [`InlineSkill`] is what a [`SkillActor`] would be for the bundled base skill when that
//! starts no process through an egress proxy and is not started lazily (see [`InlineSkill::fits`]):
//! it publishes the same `skillConnected` when the run sets up and the same `skillDisconnected`
//! when the run closes it, and answers calls with the same results, in the caller's task. Its
//! connection cannot die, so there is nothing to restart; a panicking tool becomes an error
//! result, as the actor's dropped reply does.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use kameo::prelude::*;

use super::{
    CallTool, Conn, SkillActor, SkillArgs, SkillKind, ToolOutcome, call_on, connect,
    connected_tools, disconnected, publish_for, starts_processes, unknown_tool,
};
use crate::actor::context::JobContext;
use crate::skill::{SkillError, ToolDefinition};

/// The base skill of one run, called in place.
pub(crate) struct InlineSkill {
    ctx: Arc<JobContext>,
    run_id: String,
    name: String,
    conn: Conn,
    /// After pick/omit.
    tools: Arc<[ToolDefinition]>,
}

impl InlineSkill {
    /// Whether the skill `args` describe can go without an actor: the bundled base skill,
    /// started at once (not from `perstack.lock`), with no egress proxy to own.
    pub(crate) fn fits(args: &SkillArgs) -> bool {
        matches!(args.kind, SkillKind::Base)
            && args.locked_tools.is_none()
            && (args.ctx.settings.sandbox_scope().is_none()
                || !starts_processes(&args.kind, &args.pick, &args.omit))
    }

    /// Connect it (publishing `skillConnected`, as the actor does when it starts). The
    /// arguments stay boxed: a run holds this future while the bus is busy.
    pub(crate) async fn connect(args: Box<SkillArgs>) -> Result<Self, SkillError> {
        // No proxy: `fits` rules out a skill that would get one.
        let (conn, _) = connect(&args).await?;
        let tools = connected_tools(&conn, &args);
        let SkillArgs {
            ctx, run_id, name, ..
        } = *args;
        Ok(InlineSkill {
            ctx,
            run_id,
            name,
            conn,
            tools,
        })
    }

    /// The tools after pick/omit.
    pub(crate) fn tools(&self) -> &Arc<[ToolDefinition]> {
        &self.tools
    }

    /// Close the connection and publish `skillDisconnected`.
    pub(crate) async fn close(&self) {
        if let Conn::Base(c) = &self.conn {
            c.close().await;
        }
        publish_for(&self.ctx, &self.run_id, disconnected(&self.name)).await;
    }

    async fn call(&self, call: CallTool) -> ToolOutcome {
        if !self.tools.iter().any(|t| t.name == call.name) {
            return unknown_tool(&call, &self.name);
        }
        let timeout = self.ctx.settings.tool_timeout;
        let answer = call_on(&self.conn, &self.name, &call, timeout);
        match AssertUnwindSafe(answer).catch_unwind().await {
            Ok(Ok(outcome) | Err(outcome)) => outcome,
            Err(_) => ToolOutcome::error(format!(
                "Error calling tool {}: skill {} failed during the call",
                call.name, self.name
            )),
        }
    }
}

/// A run's handle on one of its skills.
#[derive(Clone)]
pub(crate) enum SkillRef {
    /// A skill with an actor of its own (an MCP server, or a base skill that needs one).
    Actor(ActorRef<SkillActor>),
    /// The in-process base skill, called in place.
    Inline(Arc<InlineSkill>),
}

impl SkillRef {
    /// Call a tool: its outcome, or why the skill could not be asked (the text after
    /// `Error calling tool <name>: `).
    pub(crate) async fn call(&self, call: CallTool) -> Result<ToolOutcome, String> {
        match self {
            SkillRef::Actor(actor) => actor.ask(call).await.map_err(|e| e.to_string()),
            SkillRef::Inline(skill) => Ok(skill.call(call).await),
        }
    }
}
