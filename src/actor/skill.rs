//! The skill actor: one per skill per run. It owns the skill's MCP connection (for now the
//! in-process base skill, with per-run state) and answers tool calls with message parts.
//!
//! Calls run concurrently: each call is spawned off the mailbox with a delegated reply, so a
//! slow tool never blocks the next one. Tool-level failures come back as results the model can
//! read; the actor itself only fails if its connection does.

use std::sync::Arc;

use kameo::prelude::*;
use serde_json::Value;

use crate::schema::MessagePart;
use crate::skill::base::{ConnectTimings, InProcessBase, ServerIdentity, connect_in_process};
use crate::skill::mcp_result::{mcp_error_text, to_message_parts};
use crate::skill::{BaseSkill, SkillError, ToolDefinition};

/// The mailbox size of a skill actor: calls queue here while the run waits for results.
pub const SKILL_MAILBOX: usize = 64;

/// What a skill actor starts with.
#[derive(Clone)]
pub struct SkillArgs {
    /// The skill's name (`@perstack/base`).
    pub name: String,
    /// The workspace the base skill works in.
    pub workspace: std::path::PathBuf,
    /// Tool names to drop.
    pub omit: Vec<String>,
    /// Tool names to keep (empty: all).
    pub pick: Vec<String>,
}

/// A connected skill.
pub struct SkillActor {
    name: String,
    conn: Option<Arc<InProcessBase>>,
    tools: Vec<ToolDefinition>,
}

impl Actor for SkillActor {
    type Args = SkillArgs;
    type Error = SkillError;

    async fn on_start(args: SkillArgs, _: ActorRef<Self>) -> Result<Self, SkillError> {
        let conn = connect_in_process(BaseSkill::new(args.workspace)).await?;
        let tools = conn
            .tools()
            .iter()
            .filter(|t| !args.omit.contains(&t.name))
            .filter(|t| args.pick.is_empty() || args.pick.contains(&t.name))
            .cloned()
            .collect();
        Ok(SkillActor {
            name: args.name,
            conn: Some(Arc::new(conn)),
            tools,
        })
    }

    async fn on_stop(
        &mut self,
        _: WeakActorRef<Self>,
        _: ActorStopReason,
    ) -> Result<(), SkillError> {
        if let Some(conn) = self.conn.take()
            && let Ok(conn) = Arc::try_unwrap(conn)
        {
            conn.close().await;
        }
        Ok(())
    }
}

/// What the skill offers, and how its connection went.
#[derive(Debug, Clone, Reply)]
pub struct Described {
    /// Tools after pick/omit.
    pub tools: Vec<ToolDefinition>,
    /// Server `{name, version}`.
    pub server: Option<ServerIdentity>,
    /// Connection timings.
    pub timings: ConnectTimings,
}

/// Ask for the tool list and connection details.
#[derive(Debug)]
pub struct Describe;

impl Message<Describe> for SkillActor {
    type Reply = Described;

    async fn handle(&mut self, _: Describe, _: &mut Context<Self, Self::Reply>) -> Described {
        Described {
            tools: self.tools.clone(),
            server: self.conn.as_ref().map(|c| c.server_identity().clone()),
            timings: self.conn.as_ref().map(|c| c.timings()).unwrap_or_default(),
        }
    }
}

/// Call one tool; the reply is the result's parts (errors included, as text for the model).
#[derive(Debug)]
pub struct CallTool {
    /// Tool name.
    pub name: String,
    /// Arguments.
    pub args: Value,
}

/// A tool call's outcome.
#[derive(Debug, Clone, Reply)]
pub struct ToolOutcome {
    /// Result parts.
    pub parts: Vec<MessagePart>,
    /// The server flagged an error.
    pub is_error: bool,
}

impl Message<CallTool> for SkillActor {
    type Reply = DelegatedReply<ToolOutcome>;

    async fn handle(
        &mut self,
        call: CallTool,
        ctx: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let known = self.tools.iter().any(|t| t.name == call.name);
        let conn = self.conn.clone();
        let skill = self.name.clone();
        ctx.spawn(async move {
            if !known {
                return ToolOutcome {
                    parts: vec![MessagePart::text(format!(
                        "Tool {} not found in skill {skill}",
                        call.name
                    ))],
                    is_error: true,
                };
            }
            let Some(conn) = conn else {
                return ToolOutcome {
                    parts: vec![MessagePart::text(format!(
                        "Error calling tool {}: skill {skill} is closed",
                        call.name
                    ))],
                    is_error: true,
                };
            };
            match conn.call(&call.name, call.args.clone()).await {
                Ok(r) => {
                    let c = to_message_parts(&call.name, &call.args, &r);
                    ToolOutcome {
                        parts: c.parts,
                        is_error: c.is_error,
                    }
                }
                Err(e) => ToolOutcome {
                    parts: vec![MessagePart::text(mcp_error_text(&call.name, &e))],
                    is_error: true,
                },
            }
        })
    }
}
