//! The skill actor: one per skill per run. It owns the skill's MCP connection (the in-process
//! base skill with per-run state, a stdio server, or a Streamable HTTP server), publishes its
//! `skillStarting` / `skillConnected` / `skillStderr` / `skillDisconnected` events, and answers
//! tool calls with message parts.
//!
//! Calls run concurrently: each is spawned off the mailbox with a delegated reply, so a slow
//! tool never blocks the next one. A failed call is decided by its [`SkillError`]'s own policy:
//! what the model can fix comes back as a result it can read, anything else (a call on a
//! connection already closed, a lazily started server that does not start) as a fault that
//! stops the run.
//! When the server dies, the call in flight gets an error result and the actor fails on
//! purpose: its supervisor (the run) restarts it, which reconnects, within a bounded budget
//! (`SKILL_RESTARTS` in `SKILL_RESTART_WINDOW`); past it the skill stays down and calls get an
//! error result naming it.
//!
//! The in-process base skill needs none of that when it starts no process through an egress
//! proxy and is not started lazily: its connection cannot die and its calls need no mailbox.
//! The run then holds it as an [`InlineSkill`] (`inline`), with the same events and the same
//! results, and without an actor's task, mailbox (a block of 32 slots, 3 KiB) and kept spawn
//! arguments. A run's skills are [`SkillRef`]s, either kind.

mod inline;

pub(crate) use inline::{InlineSkill, SkillRef};

use std::sync::Arc;
use std::time::Duration;

use kameo::prelude::*;
use serde_json::{Map, Value, json};

use super::context::{JobContext, now_ms};
use crate::agent::RunFailure;
use crate::sandbox::egress::{
    self,
    proxy::{EgressProxy, ProxyEvents},
};
use crate::schema::{
    Envelope, EventPayload, McpSseSkill, McpStdioSkill, MessagePart, SkillConnected,
    SkillDisconnected, SkillStarting, SkillStderr,
};
use crate::skill::base::{ConnectTimings, InProcessBase, ServerIdentity, connect_in_process};
use crate::skill::mcp::{ConnectOptions, McpConnection, command_args, connect_http, connect_stdio};
use crate::skill::mcp_result::{ConvertedResult, mcp_error_text, to_message_parts};
use crate::skill::{BaseSkill, SkillError, ToolDefinition};

/// The mailbox size of a skill actor: calls queue here while the run waits for results.
pub(crate) const SKILL_MAILBOX: usize = 64;
/// Restarts allowed within [`SKILL_RESTART_WINDOW`] before a dead server stays down.
pub(crate) const SKILL_RESTARTS: u32 = 3;
/// The window of the restart budget.
pub(crate) const SKILL_RESTART_WINDOW: Duration = Duration::from_secs(60);

/// How to reach the skill.
#[derive(Clone, Debug)]
pub(crate) enum SkillKind {
    /// The bundled `@perstack/base`, in process.
    Base,
    /// A stdio MCP server (a pinned `@perstack/base@x.y.z` included).
    Stdio(McpStdioSkill),
    /// A Streamable HTTP MCP server.
    Http(McpSseSkill),
}

/// What a skill actor starts with.
#[derive(Clone)]
pub(crate) struct SkillArgs {
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
    /// The domains the skill's sandboxed processes may reach through the egress proxy (its
    /// `allowedDomains`; for the base skill's `exec`, those of every skill of the Expert).
    pub allowed_domains: Vec<String>,
}

enum Conn {
    Base(InProcessBase),
    Mcp(McpConnection),
}

impl Conn {
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
    /// The result as the model sees it (the base skill adds its own step).
    async fn message_parts(
        &self,
        name: &str,
        args: &Value,
        result: &rmcp::model::CallToolResult,
    ) -> ConvertedResult {
        match self {
            Conn::Base(c) => c.message_parts(name, args, result).await,
            Conn::Mcp(_) => to_message_parts(name, args, result),
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
pub(crate) struct SkillActor {
    /// Boxed: kameo's task future holds the actor's state (and its arguments) several times
    /// over.
    args: Box<SkillArgs>,
    conn: Option<Arc<Conn>>,
    /// The egress proxy of the connection's sandboxed processes; dropped with the actor (or
    /// on close), which ends their tunnels and removes its socket.
    egress: Option<EgressProxy>,
    /// Shared with the run's [`Described`] reply rather than copied into it.
    tools: Arc<[ToolDefinition]>,
}

impl Actor for SkillActor {
    type Args = Box<SkillArgs>;
    type Error = SkillError;

    async fn on_start(args: Box<SkillArgs>, _: ActorRef<Self>) -> Result<Self, SkillError> {
        // Boxed: this hook is inlined into the actor's task, which would otherwise be as
        // large as its largest await for the actor's whole life.
        Box::pin(async move {
            if let Some(locked) = &args.locked_tools {
                // Lazy: the lockfile says what the tools are; connect on the first call.
                let tools = filter(locked, &args).into();
                return Ok(SkillActor {
                    args,
                    conn: None,
                    egress: None,
                    tools,
                });
            }
            let (conn, egress) = connect(&args).await?;
            let tools = connected_tools(&conn, &args);
            Ok(SkillActor {
                args,
                conn: Some(Arc::new(conn)),
                egress,
                tools,
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
pub(crate) struct Close;

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
        self.egress = None;
        publish(&self.args, disconnected(&self.args.name)).await;
        ctx.stop();
    }
}

/// Whether a skill of this kind, with this `pick`/`omit`, can start processes (and so, when
/// sandboxed, needs an egress proxy): a stdio server always, the base skill only through its
/// `exec` tool, an HTTP server never.
fn starts_processes(kind: &SkillKind, pick: &[String], omit: &[String]) -> bool {
    match kind {
        SkillKind::Http(_) => false,
        SkillKind::Base => {
            crate::agent::catalog::is_selected(crate::skill::base::EXEC_TOOL, pick, omit)
        }
        SkillKind::Stdio(_) => true,
    }
}

/// The tools the model may call: `omit`, then `pick` (the catalog's rule, applied only here).
fn filter(tools: &[ToolDefinition], args: &SkillArgs) -> Vec<ToolDefinition> {
    crate::agent::catalog::select(tools, &args.pick, &args.omit)
}

/// [`filter`] of a connected skill's tools. The in-process base skill's are the same for every
/// run with the same `pick`/`omit`: shared ([`crate::skill::base::selected_tools`]).
fn connected_tools(conn: &Conn, args: &SkillArgs) -> Arc<[ToolDefinition]> {
    match conn {
        Conn::Base(_) => crate::skill::base::selected_tools(&args.pick, &args.omit),
        Conn::Mcp(c) => filter(c.tools(), args).into(),
    }
}

/// Connect the skill, publishing `skillStarting` (stdio) and `skillConnected`; a sandboxed
/// skill that starts processes (a stdio server; the base skill only when its `exec` tool is
/// selected) gets its egress proxy, whose decisions become `proxyAccess` events.
async fn connect(args: &SkillArgs) -> Result<(Conn, Option<EgressProxy>), SkillError> {
    let started = now_ms();
    // Boxed: opening the connection needs large futures and options, and a run holds this
    // future while `skillConnected` waits for a busy bus; it should hold only the connection
    // then.
    let (conn, egress) = Box::pin(open(args)).await?;
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
    Ok((conn, egress))
}

/// Open the connection of [`connect`]: the egress proxy when one is needed, `skillStarting`
/// (stdio), the handshake.
async fn open(args: &SkillArgs) -> Result<(Conn, Option<EgressProxy>), SkillError> {
    let settings = args.ctx.settings.clone();
    let mut sandbox = settings.sandbox_scope();
    let egress = match &mut sandbox {
        Some(scope) if starts_processes(&args.kind, &args.pick, &args.omit) => {
            let (proxy, events) =
                egress::start_proxy(scope, &args.allowed_domains).map_err(|source| {
                    SkillError::Spawn {
                        skill: args.name.clone(),
                        source,
                    }
                })?;
            forward_proxy_access(args.clone(), events);
            Some(proxy)
        }
        _ => None,
    };
    let opts = ConnectOptions {
        workspace: Some(settings.workspace.clone()),
        allow_private_endpoints: ConnectOptions::private_endpoints_allowed(&settings.env),
        sandbox: sandbox.clone(),
        ..ConnectOptions::default()
    };
    let conn = match &args.kind {
        SkillKind::Base => {
            let skill = BaseSkill::with_workspace_env(settings.workspace.clone(), &settings.env)
                .with_sandbox(sandbox);
            Conn::Base(connect_in_process(skill).await?)
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
            // Boxed, as the HTTP connection below: a connection's handshake is a large future,
            // and inline it would make every skill's `connect` (the in-process base skill's
            // too, which a waiting run holds) that large.
            let (conn, stderr) = Box::pin(connect_stdio(skill, &settings.env, &opts)).await?;
            forward_stderr(args.clone(), stderr);
            Conn::Mcp(conn)
        }
        SkillKind::Http(skill) => Conn::Mcp(Box::pin(connect_http(skill, &opts)).await?),
    };
    Ok((conn, egress))
}

async fn publish(args: &SkillArgs, payload: EventPayload) {
    publish_for(&args.ctx, &args.run_id, payload).await;
}

/// Publish a skill event of run `run_id`.
async fn publish_for(ctx: &JobContext, run_id: &str, payload: EventPayload) {
    let event = Envelope::runtime(ctx.job_id.as_str(), run_id).into_event(now_ms(), payload);
    let _ = ctx.publish(event).await;
}

/// `skillDisconnected` of skill `name`.
fn disconnected(name: &str) -> EventPayload {
    EventPayload::SkillDisconnected(SkillDisconnected {
        skill_name: name.to_owned(),
        extra: Map::new(),
    })
}

/// The egress proxy's decisions become `proxyAccess` events, in order; the task ends when the
/// proxy is dropped.
fn forward_proxy_access(args: SkillArgs, mut events: ProxyEvents) {
    tokio::spawn(async move {
        while let Some(access) = events.recv().await {
            publish(&args, EventPayload::ProxyAccess(access)).await;
        }
    });
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
pub(crate) struct Described {
    /// Tools after pick/omit.
    pub tools: Arc<[ToolDefinition]>,
}

/// Ask for the tool list.
#[derive(Debug)]
pub(crate) struct Describe;

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
pub(crate) struct CallTool {
    /// Tool name.
    pub name: String,
    /// Arguments.
    pub args: Value,
}

/// A tool call's outcome.
#[derive(Debug, Clone, Reply)]
pub(crate) struct ToolOutcome {
    /// Result parts.
    pub parts: Vec<MessagePart>,
    /// The server flagged the result as an error (`isError: true`); the model sees the flag.
    pub is_error: bool,
    /// Set when the call failed in a way the model cannot fix
    /// ([`SkillError::feeds_back_to_model`] is false): the run stops with it instead of
    /// handing `parts` to the model.
    pub fault: Option<RunFailure>,
}

impl ToolOutcome {
    /// A call that got no result (timeout, protocol error, skill down): the text Perstack gives
    /// the model, not flagged as an error result, as in Perstack.
    fn error(text: String) -> Self {
        ToolOutcome {
            parts: vec![MessagePart::text(text)],
            is_error: false,
            fault: None,
        }
    }

    /// A failed call, decided by the error's own policy: an error result for the model, or a
    /// fault that stops the run.
    fn failed(tool: &str, skill: &str, e: &SkillError) -> Self {
        let mut outcome = ToolOutcome::error(mcp_error_text(tool, e));
        if !e.feeds_back_to_model() {
            outcome.fault = Some(match e {
                SkillError::Spawn { .. } | SkillError::Connect { .. } => {
                    RunFailure::Configuration(format!("skill \"{skill}\" failed to start: {e}"))
                }
                _ => RunFailure::Skill(format!("Error calling tool {tool}: {e}")),
            });
        }
        outcome
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
                Ok((conn, egress)) => {
                    self.conn = Some(Arc::new(conn));
                    self.egress = egress;
                }
                Err(e) => {
                    let outcome = ToolOutcome::failed(&call.name, &self.args.name, &e);
                    return ctx.spawn(async move { outcome });
                }
            }
        }
        let conn = self.conn.clone();
        let skill = self.args.name.clone();
        let me = ctx.actor_ref().clone();
        let timeout = self.args.ctx.settings.tool_timeout;
        ctx.spawn(async move {
            if !known {
                return unknown_tool(&call, &skill);
            }
            let Some(conn) = conn else {
                return ToolOutcome::error(format!(
                    "Error calling tool {}: skill {skill} is closed",
                    call.name
                ));
            };
            match call_on(&conn, &skill, &call, timeout).await {
                Ok(outcome) => outcome,
                Err(outcome) => {
                    if conn.is_closed() {
                        // Restart through the supervisor; the next call reconnects.
                        let _ = me.tell(ConnectionLost).try_send();
                    }
                    outcome
                }
            }
        })
    }
}

/// The answer to a call of a tool the skill does not offer.
fn unknown_tool(call: &CallTool, skill: &str) -> ToolOutcome {
    ToolOutcome::error(format!("Tool {} not found in skill {skill}", call.name))
}

/// Call `call` on `conn` within `timeout`: the result's parts, or (`Err`) the outcome of the
/// failure.
async fn call_on(
    conn: &Conn,
    skill: &str,
    call: &CallTool,
    timeout: Duration,
) -> Result<ToolOutcome, ToolOutcome> {
    let result = crate::skill::timeout::bounded(
        timeout,
        skill,
        &call.name,
        conn.call(&call.name, call.args.clone()),
    )
    .await;
    match result {
        Ok(r) => {
            let c = conn.message_parts(&call.name, &call.args, &r).await;
            Ok(ToolOutcome {
                parts: c.parts,
                is_error: c.is_error,
                fault: None,
            })
        }
        Err(e) => Err(ToolOutcome::failed(&call.name, skill, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::{SkillKind, starts_processes};

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_base_skill_starts_processes_only_when_exec_is_selected() {
        let base = SkillKind::Base;
        assert!(starts_processes(&base, &[], &[]));
        assert!(starts_processes(
            &base,
            &names(&["exec", "readTextFile"]),
            &[]
        ));
        assert!(!starts_processes(
            &base,
            &names(&["attemptCompletion"]),
            &[]
        ));
        assert!(!starts_processes(&base, &[], &names(&["exec"])));
        assert!(!starts_processes(
            &base,
            &names(&["exec"]),
            &names(&["exec"])
        ));
    }
}
