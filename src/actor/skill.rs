//! The skill actor: one per skill per run. It owns the skill's MCP connection (the in-process
//! base skill with per-run state, a stdio server, or a Streamable HTTP server), publishes its
//! `skillStarting` / `skillConnected` / `skillStderr` / `skillDisconnected` events, and answers
//! tool calls with message parts.
//!
//! Calls run concurrently: each is spawned off the mailbox with a delegated reply, so a slow
//! tool never blocks the next one. Tool-level failures come back as results the model can read.
//! When the server dies, the call in flight gets an error result and the actor fails on
//! purpose: its supervisor (the run) restarts it, which reconnects, within a bounded budget
//! (`SKILL_RESTARTS` in `SKILL_RESTART_WINDOW`); past it the skill stays down and calls get an
//! error result naming it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use kameo::prelude::*;
use serde_json::{Map, Value, json};

use super::context::{JobContext, now_ms};
use crate::schema::{
    Event, EventPayload, InlinePart, McpSseSkill, McpStdioSkill, MessagePart, SkillConnected,
    SkillDisconnected, SkillStarting, SkillStderr, id::new_id,
};
use crate::skill::base::{
    ConnectTimings, InProcessBase, ServerIdentity, connect_in_process, read_inline_file,
};
use crate::skill::mcp::{ConnectOptions, McpConnection, command_args, connect_http, connect_stdio};
use crate::skill::mcp_result::{mcp_error_text, to_message_parts};
use crate::skill::{BaseSkill, SkillError, ToolDefinition};

/// The mailbox size of a skill actor: calls queue here while the run waits for results.
pub const SKILL_MAILBOX: usize = 64;
/// Restarts allowed within [`SKILL_RESTART_WINDOW`] before a dead server stays down.
pub const SKILL_RESTARTS: u32 = 3;
/// The window of the restart budget.
pub const SKILL_RESTART_WINDOW: Duration = Duration::from_secs(60);

/// How to reach the skill.
#[derive(Clone, Debug)]
pub enum SkillKind {
    /// The bundled `@perstack/base`, in process.
    Base,
    /// A stdio MCP server (a pinned `@perstack/base@x.y.z` included).
    Stdio(McpStdioSkill),
    /// A Streamable HTTP MCP server.
    Http(McpSseSkill),
}

/// What a skill actor starts with.
#[derive(Clone)]
pub struct SkillArgs {
    /// The job (settings, bus).
    pub ctx: Arc<JobContext>,
    /// The run these events belong to.
    pub run_id: String,
    /// The skill's name.
    pub name: String,
    /// How to reach it.
    pub kind: SkillKind,
    /// Tool names to drop.
    pub omit: Vec<String>,
    /// Tool names to keep (empty: all).
    pub pick: Vec<String>,
    /// Tool definitions from `perstack.lock`: when set, nothing starts until the first call.
    pub locked_tools: Option<Vec<ToolDefinition>>,
}

enum Conn {
    Base(InProcessBase),
    Mcp(McpConnection),
}

impl Conn {
    fn tools(&self) -> &[ToolDefinition] {
        match self {
            Conn::Base(c) => c.tools(),
            Conn::Mcp(c) => c.tools(),
        }
    }
    fn identity(&self) -> &ServerIdentity {
        match self {
            Conn::Base(c) => c.server_identity(),
            Conn::Mcp(c) => c.server_identity(),
        }
    }
    fn timings(&self) -> ConnectTimings {
        match self {
            Conn::Base(c) => c.timings(),
            Conn::Mcp(c) => c.timings(),
        }
    }
    fn is_closed(&self) -> bool {
        match self {
            Conn::Base(c) => c.is_closed(),
            Conn::Mcp(c) => c.is_closed(),
        }
    }
    async fn call(
        &self,
        name: &str,
        args: Value,
    ) -> Result<rmcp::model::CallToolResult, SkillError> {
        match self {
            Conn::Base(c) => c.call(name, args).await,
            Conn::Mcp(c) => c.call(name, args).await,
        }
    }
    async fn close(self) {
        match self {
            Conn::Base(c) => c.close().await,
            Conn::Mcp(c) => c.close().await,
        }
    }
}

/// A connected skill.
pub struct SkillActor {
    args: SkillArgs,
    conn: Option<Arc<Conn>>,
    tools: Vec<ToolDefinition>,
    /// The base skill's workspace, for inlining images and PDFs safely.
    inline_from: Option<std::path::PathBuf>,
}

impl Actor for SkillActor {
    type Args = SkillArgs;
    type Error = SkillError;

    async fn on_start(args: SkillArgs, _: ActorRef<Self>) -> Result<Self, SkillError> {
        // Boxed: this hook is inlined into the actor's task, which would otherwise be as
        // large as its largest await for the actor's whole life.
        Box::pin(async move {
            if let Some(locked) = &args.locked_tools {
                // Lazy: the lockfile says what the tools are; connect on the first call.
                let tools = filter(locked, &args);
                return Ok(SkillActor {
                    args,
                    conn: None,
                    tools,
                    inline_from: None,
                });
            }
            let (conn, inline_from) = connect(&args).await?;
            let tools = filter(conn.tools(), &args);
            Ok(SkillActor {
                args,
                conn: Some(Arc::new(conn)),
                tools,
                inline_from,
            })
        })
        .await
    }

    async fn on_stop(
        &mut self,
        _: WeakActorRef<Self>,
        _: ActorStopReason,
    ) -> Result<(), SkillError> {
        // Boxed: this hook is inlined into the actor's task, which would otherwise be as
        // large as its largest await for the actor's whole life.
        Box::pin(async move {
            // A crash or a supervisor shutdown: the process must not outlive the actor.
            if let Some(conn) = self.conn.take()
                && let Ok(conn) = Arc::try_unwrap(conn)
            {
                conn.close().await;
            }
            Ok(())
        })
        .await
    }
}

/// Close the connection, publish `skillDisconnected`, then stop. Done in a handler rather than
/// `on_stop` because kameo notifies the supervisor before `on_stop` runs: this way the event is
/// visible before the run learns the skill is down.
#[derive(Debug)]
pub struct Close;

impl Message<Close> for SkillActor {
    type Reply = ();

    async fn handle(&mut self, _: Close, ctx: &mut Context<Self, Self::Reply>) {
        let Some(conn) = self.conn.take() else {
            // A lazy skill that was never called never connected: nothing to close or report.
            ctx.stop();
            return;
        };
        if let Ok(conn) = Arc::try_unwrap(conn) {
            conn.close().await;
        }
        publish(
            &self.args,
            EventPayload::SkillDisconnected(SkillDisconnected {
                skill_name: self.args.name.clone(),
                extra: Map::new(),
            }),
        )
        .await;
        ctx.stop();
    }
}

/// Tools after `omit`, then `pick`.
fn filter(tools: &[ToolDefinition], args: &SkillArgs) -> Vec<ToolDefinition> {
    tools
        .iter()
        .filter(|t| !args.omit.contains(&t.name))
        .filter(|t| args.pick.is_empty() || args.pick.contains(&t.name))
        .cloned()
        .collect()
}

/// Connect the skill, publishing `skillStarting` (stdio) and `skillConnected`.
async fn connect(args: &SkillArgs) -> Result<(Conn, Option<std::path::PathBuf>), SkillError> {
    let started = now_ms();
    let settings = args.ctx.settings.clone();
    let opts = ConnectOptions {
        workspace: Some(settings.workspace.clone()),
        allow_private_endpoints: ConnectOptions::private_endpoints_allowed(&settings.env),
        ..ConnectOptions::default()
    };
    let (conn, inline_from) = match &args.kind {
        SkillKind::Base => {
            let skill = BaseSkill::with_workspace_env(settings.workspace.clone(), &settings.env);
            (
                Conn::Base(connect_in_process(skill).await?),
                Some(settings.workspace.clone()),
            )
        }
        SkillKind::Stdio(skill) => {
            let (command, cmd_args) = command_args(skill)?;
            publish(
                args,
                EventPayload::SkillStarting(SkillStarting {
                    skill_name: args.name.clone(),
                    command,
                    args: cmd_args,
                    extra: Map::new(),
                }),
            )
            .await;
            let (conn, stderr) = connect_stdio(skill, &settings.env, &opts).await?;
            forward_stderr(args.clone(), stderr);
            (Conn::Mcp(conn), None)
        }
        SkillKind::Http(skill) => (Conn::Mcp(connect_http(skill, &opts).await?), None),
    };
    let t = conn.timings();
    let id = conn.identity();
    publish(
        args,
        EventPayload::SkillConnected(SkillConnected {
            skill_name: args.name.clone(),
            server_info: Some(json!({"name": id.name, "version": id.version})),
            spawn_duration_ms: Some(t.spawn_duration_ms),
            handshake_duration_ms: Some(t.handshake_duration_ms),
            tool_discovery_duration_ms: Some(t.tool_discovery_duration_ms),
            connect_duration_ms: Some(t.connect_duration_ms),
            total_duration_ms: Some(now_ms().saturating_sub(started)),
            extra: Map::new(),
        }),
    )
    .await;
    Ok((conn, inline_from))
}

async fn publish(args: &SkillArgs, payload: EventPayload) {
    let event = Event {
        id: new_id(),
        timestamp: now_ms(),
        job_id: args.ctx.job_id.clone(),
        run_id: args.run_id.clone(),
        expert_key: None,
        step_number: None,
        payload,
    };
    let _ = args.ctx.publish(event).await;
}

/// stderr lines (already redacted) become `skillStderr` events.
fn forward_stderr(args: SkillArgs, mut stderr: crate::skill::mcp::StderrStream) {
    tokio::spawn(async move {
        while let Some(line) = stderr.recv().await {
            publish(
                &args,
                EventPayload::SkillStderr(SkillStderr {
                    skill_name: args.name.clone(),
                    message: line,
                    extra: Map::new(),
                }),
            )
            .await;
        }
    });
}

/// What the skill offers, and how its connection went.
#[derive(Debug, Clone, Reply)]
pub struct Described {
    /// Tools after pick/omit.
    pub tools: Vec<ToolDefinition>,
}

/// Ask for the tool list.
#[derive(Debug)]
pub struct Describe;

impl Message<Describe> for SkillActor {
    type Reply = Described;

    async fn handle(&mut self, _: Describe, _: &mut Context<Self, Self::Reply>) -> Described {
        Described {
            tools: self.tools.clone(),
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

impl ToolOutcome {
    fn error(text: String) -> Self {
        ToolOutcome {
            parts: vec![MessagePart::text(text)],
            is_error: true,
        }
    }
}

/// The connection was found dead: fail, so the supervisor restarts (reconnects) this actor.
struct ConnectionLost;

impl Message<ConnectionLost> for SkillActor {
    type Reply = Result<(), SkillError>;

    async fn handle(
        &mut self,
        _: ConnectionLost,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        match &self.conn {
            Some(c) if c.is_closed() => Err(SkillError::TransportClosed {
                skill: self.args.name.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl Message<CallTool> for SkillActor {
    type Reply = DelegatedReply<ToolOutcome>;

    async fn handle(
        &mut self,
        call: CallTool,
        ctx: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let known = self.tools.iter().any(|t| t.name == call.name);
        if known && self.conn.is_none() && self.args.locked_tools.is_some() {
            // First call of a lazily started skill: connect now (later calls queue behind it).
            match connect(&self.args).await {
                Ok((conn, inline_from)) => {
                    self.conn = Some(Arc::new(conn));
                    self.inline_from = inline_from;
                }
                Err(e) => {
                    let text = format!(
                        "Error calling tool {}: skill {} failed to start: {e}",
                        call.name, self.args.name
                    );
                    return ctx.spawn(async move { ToolOutcome::error(text) });
                }
            }
        }
        let conn = self.conn.clone();
        let skill = self.args.name.clone();
        let inline_from = self.inline_from.clone();
        let me = ctx.actor_ref().clone();
        let timeout = self.args.ctx.settings.timeout;
        ctx.spawn(async move {
            if !known {
                return ToolOutcome::error(format!(
                    "Tool {} not found in skill {skill}",
                    call.name
                ));
            }
            let Some(conn) = conn else {
                return ToolOutcome::error(format!(
                    "Error calling tool {}: skill {skill} is closed",
                    call.name
                ));
            };
            let result =
                tokio::time::timeout(timeout, conn.call(&call.name, call.args.clone())).await;
            match result {
                Ok(Ok(r)) => {
                    let c = to_message_parts(&call.name, &call.args, &r);
                    let parts = match inline_from {
                        Some(ws)
                            if matches!(call.name.as_str(), "readImageFile" | "readPdfFile") =>
                        {
                            inline_media(ws, c.parts).await
                        }
                        _ => c.parts,
                    };
                    ToolOutcome {
                        parts,
                        is_error: c.is_error,
                    }
                }
                Ok(Err(e)) => {
                    if conn.is_closed() {
                        // Restart through the supervisor; the next call reconnects.
                        let _ = me.tell(ConnectionLost).try_send();
                    }
                    ToolOutcome::error(mcp_error_text(&call.name, &e))
                }
                Err(_) => ToolOutcome::error(format!(
                    "Error calling tool {}: no answer within {} ms",
                    call.name,
                    timeout.as_millis()
                )),
            }
        })
    }
}

/// `readImageFile` / `readPdfFile` return `{path, mimeType, size}`; the runtime replaces that
/// with the file itself, read through the same path checks (no symlink escape, no race).
async fn inline_media(workspace: std::path::PathBuf, parts: Vec<MessagePart>) -> Vec<MessagePart> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let path = part
            .as_text()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .filter(|v| v.get("error").is_none())
            .and_then(|v| v.get("path").and_then(Value::as_str).map(str::to_owned));
        let Some(path) = path else {
            out.push(part);
            continue;
        };
        let ws = workspace.clone();
        let p = path.clone();
        let read = tokio::task::spawn_blocking(move || read_inline_file(&ws, &p)).await;
        out.push(match read {
            Ok(Ok((bytes, mime))) => {
                let inline = InlinePart {
                    id: new_id(),
                    encoded_data: base64::engine::general_purpose::STANDARD.encode(bytes),
                    mime_type: mime.clone(),
                    extra: Map::new(),
                };
                if mime.starts_with("image/") {
                    MessagePart::ImageInlinePart(inline)
                } else {
                    MessagePart::FileInlinePart(inline)
                }
            }
            Ok(Err(e)) => MessagePart::text(format!("Failed to read file \"{path}\": {e}")),
            Err(e) => MessagePart::text(format!("Failed to read file \"{path}\": {e}")),
        });
    }
    out
}
