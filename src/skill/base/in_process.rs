//! The base skill in-process: its tools are called directly through the skill's rmcp tool
//! router, with no transport, no JSON encoding and no task per run (Perstack joins an MCP
//! client and server with the SDK's `InMemoryTransport`; the effect on the wire is the same).
//!
//! [`connect_in_process`] wraps a [`BaseSkill`] (one per run: it owns the run's todo list) and
//! records the timings the `skillConnected` event reports. The tool list is the same for every
//! instance, so it is built once per process and shared. The same skill is served over stdio by
//! `perstack base` for `perstackBaseSkillCommand` and for other MCP clients.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage, NumberOrString,
    ServerJsonRpcMessage,
};
use rmcp::service::{Peer, RequestContext, RoleServer};
use serde::Serialize;
use serde_json::Value;

use super::BaseSkill;
use crate::schema::BASE_SKILL;
use crate::skill::mcp_result::{ConvertedResult, to_message_parts};
use crate::skill::{SkillError, ToolDefinition};

/// The server's `{name, version}` from the handshake, as `skillConnected` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ServerIdentity {
    /// Server name (`@perstack/base`).
    pub name: String,
    /// Server version (this crate's version).
    pub version: String,
}

/// Connection timings in whole milliseconds, with `skillConnected`'s meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConnectTimings {
    /// Creating the pipe and spawning the server task.
    pub spawn_duration_ms: u64,
    /// The MCP `initialize` handshake.
    pub handshake_duration_ms: u64,
    /// `tools/list`.
    pub tool_discovery_duration_ms: u64,
    /// `spawn + handshake`, as Perstack defines it.
    pub connect_duration_ms: u64,
    /// Everything, tool discovery included.
    pub total_duration_ms: u64,
}

/// A connected in-process base skill: the run's [`BaseSkill`] and the shared tool list.
#[derive(Debug)]
pub(crate) struct InProcessBase {
    skill: BaseSkill,
    tools: Arc<[ToolDefinition]>,
    server_identity: ServerIdentity,
    timings: ConnectTimings,
    /// Set by [`InProcessBase::close`]; visible to the base module's tests.
    pub(super) closed: AtomicBool,
    next_request: AtomicI64,
}

/// The base skill's tools, in the order MCP's `tools/list` gives them.
fn tools() -> Arc<[ToolDefinition]> {
    static TOOLS: OnceLock<Arc<[ToolDefinition]>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            BaseSkill::list_tools()
                .iter()
                .map(|t| ToolDefinition::from_mcp(BASE_SKILL, t))
                .collect()
        })
        .clone()
}

/// The base skill's tools after `pick`/`omit` ([`select`](crate::agent::catalog::select)),
/// shared: the tools are the same for every instance, so every run with the same selection
/// holds the same list instead of a copy of its own (input schemas included). One entry per
/// distinct selection the process has seen, which the configurations bound.
pub(crate) fn selected_tools(pick: &[String], omit: &[String]) -> Arc<[ToolDefinition]> {
    type Selections = Vec<(Vec<String>, Vec<String>, Arc<[ToolDefinition]>)>;
    static SELECTED: OnceLock<Mutex<Selections>> = OnceLock::new();
    let mut kept = SELECTED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some((_, _, tools)) = kept.iter().find(|(p, o, _)| p == pick && o == omit) {
        return tools.clone();
    }
    let selected: Arc<[ToolDefinition]> =
        crate::agent::catalog::select(&tools(), pick, omit).into();
    kept.push((pick.to_vec(), omit.to_vec(), selected.clone()));
    selected
}

/// The peer handed to tools in their request context. The base tools never talk back to the
/// client, so one detached peer (its service stopped at once) serves every call.
fn detached_peer() -> Peer<RoleServer> {
    static PEER: OnceLock<Peer<RoleServer>> = OnceLock::new();
    PEER.get_or_init(|| {
        let (to_client, _) = mpsc::channel::<ServerJsonRpcMessage>(1);
        let (_, from_client) = mpsc::channel::<ClientJsonRpcMessage>(1);
        let service = rmcp::service::serve_directly::<RoleServer, _, _, _, _>(
            super::BaseSkill::new("."),
            (to_client, from_client),
            None,
        );
        let peer = service.peer().clone();
        // Dropping the running service stops it; the peer stays a valid value.
        drop(service);
        peer
    })
    .clone()
}

/// Wraps `skill` for direct calls. Never fails; async and fallible like the MCP connections
/// it stands beside.
pub(crate) async fn connect_in_process(skill: BaseSkill) -> Result<InProcessBase, SkillError> {
    let started = Instant::now();
    let tools = tools();
    let elapsed = millis(started.elapsed());
    Ok(InProcessBase {
        skill,
        tools,
        server_identity: ServerIdentity {
            name: BASE_SKILL.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        timings: ConnectTimings {
            spawn_duration_ms: 0,
            handshake_duration_ms: 0,
            tool_discovery_duration_ms: elapsed,
            connect_duration_ms: 0,
            total_duration_ms: elapsed,
        },
        closed: AtomicBool::new(false),
        next_request: AtomicI64::new(0),
    })
}

impl InProcessBase {
    /// The tools (shared by every instance).
    pub(crate) fn tools(&self) -> &[ToolDefinition] {
        &self.tools
    }

    /// The server's `{name, version}`, as a handshake would report it.
    pub(crate) fn server_identity(&self) -> &ServerIdentity {
        &self.server_identity
    }

    /// How long connecting took.
    pub(crate) fn timings(&self) -> ConnectTimings {
        self.timings
    }

    /// Whether [`InProcessBase::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Calls tool `name` with `args` (a JSON object, or `null` for none). Calls may run
    /// concurrently. A protocol-level failure (unknown tool, invalid arguments) is an
    /// `Err` whose [`SkillError::feeds_back_to_model`] is true, exactly as over MCP.
    pub(crate) async fn call(&self, name: &str, args: Value) -> Result<CallToolResult, SkillError> {
        if self.is_closed() {
            return Err(SkillError::TransportClosed {
                skill: BASE_SKILL.to_owned(),
            });
        }
        let arguments = match args {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                return Err(SkillError::InvalidArguments {
                    tool: name.to_owned(),
                    message: format!("arguments must be a JSON object, got {other}"),
                });
            }
        };
        let mut params = CallToolRequestParams::new(name.to_owned());
        params.arguments = arguments;
        let id = NumberOrString::Number(self.next_request.fetch_add(1, Ordering::Relaxed));
        let context = ToolCallContext::new(
            &self.skill,
            params,
            RequestContext::new(id, detached_peer()),
        );
        match self.skill.tool_router.call(context).await {
            Ok(CallToolResponse::Complete(result)) => Ok(result),
            Ok(other) => Err(SkillError::UnexpectedResponse {
                skill: BASE_SKILL.to_owned(),
                tool: name.to_owned(),
                detail: format!("{other:?}"),
            }),
            Err(e) => Err(SkillError::Mcp {
                skill: BASE_SKILL.to_owned(),
                tool: name.to_owned(),
                code: e.code.0,
                message: e.message.into_owned(),
            }),
        }
    }

    /// `result` of calling `name` with `args` as the model sees it: the MCP conversion
    /// ([`to_message_parts`]), then the base skill's own step, `readImageFile`/`readPdfFile`
    /// answers replaced by the file they name ([`super::inline_media`]).
    pub(crate) async fn message_parts(
        &self,
        name: &str,
        args: &Value,
        result: &CallToolResult,
    ) -> ConvertedResult {
        let mut converted = to_message_parts(name, args, result);
        converted.parts = super::inline_media(self.skill.workspace(), name, converted.parts).await;
        converted
    }

    /// Ends the connection: later calls fail with `TransportClosed`.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
