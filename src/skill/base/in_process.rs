//! The base skill served in-process: an rmcp server and an rmcp client joined by two bounded
//! channels of typed JSON-RPC messages, with no subprocess and no JSON encoding in between
//! (Perstack does the same with the MCP SDK's `InMemoryTransport`).
//!
//! [`connect_in_process`] performs the MCP handshake and records the timings the
//! `skillConnected` event reports. The tool list is the same for every instance, so it is
//! listed over the protocol once per process and reused. [`InProcessBase`] owns both ends:
//! dropping it aborts the server task; [`InProcessBase::close`] shuts both down in order.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientJsonRpcMessage,
    Implementation, ServerJsonRpcMessage,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::{ServiceExt, handler::server::ServerHandler};
use serde::Serialize;
use serde_json::Value;
use tokio_util::task::AbortOnDropHandle;

use super::{BASE_SKILL_NAME, BaseSkill};
use crate::skill::{SkillError, ToolDefinition};

/// Messages either direction holds before the sender waits for the receiver.
const CHANNEL_BUFFER: usize = 32;

/// The base skill's tools, listed over the protocol by the first connection of this process.
static TOOLS: OnceLock<Vec<ToolDefinition>> = OnceLock::new();

/// How long [`InProcessBase::close`] waits for the server task to finish before aborting it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The server's `{name, version}` from the handshake, as `skillConnected` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerIdentity {
    /// Server name (`@perstack/base`).
    pub name: String,
    /// Server version (this crate's version).
    pub version: String,
}

/// Connection timings in whole milliseconds, with `skillConnected`'s meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectTimings {
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

/// A connected in-process base skill: the rmcp client, the server task and the tool list.
#[derive(Debug)]
pub struct InProcessBase {
    /// The rmcp client; visible to the base module's tests.
    pub(super) client: RunningService<RoleClient, ClientConfig>,
    /// The server's task; aborted if this handle is dropped without [`InProcessBase::close`].
    server: AbortOnDropHandle<()>,
    tools: Vec<ToolDefinition>,
    server_identity: ServerIdentity,
    timings: ConnectTimings,
}

/// Serves `skill` over an in-memory pipe, connects a client, and lists its tools.
pub async fn connect_in_process(skill: BaseSkill) -> Result<InProcessBase, SkillError> {
    let started = Instant::now();
    let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL_BUFFER);
    let (to_client, from_server) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_BUFFER);
    let server = AbortOnDropHandle::new(tokio::spawn(serve(skill, (to_client, from_client))));
    let spawn = started.elapsed();

    let handshake_started = Instant::now();
    let client = client_config()
        .serve((to_server, from_server))
        .await
        .map_err(|e| connect_error(format!("MCP handshake failed: {e}")))?;
    let handshake = handshake_started.elapsed();

    let discovery_started = Instant::now();
    let tools = match TOOLS.get() {
        Some(tools) => tools.clone(),
        None => {
            let listed = client
                .list_all_tools()
                .await
                .map_err(|e| connect_error(format!("tools/list failed: {e}")))?;
            let tools: Vec<ToolDefinition> = listed
                .iter()
                .map(|t| ToolDefinition::from_mcp(BASE_SKILL_NAME, t))
                .collect();
            TOOLS.get_or_init(|| tools).clone()
        }
    };
    let discovery = discovery_started.elapsed();

    let server_identity = client
        .peer_info()
        .and_then(|info| info.server_info.clone())
        .map(|i| ServerIdentity {
            name: i.name,
            version: i.version,
        })
        .unwrap_or_else(|| ServerIdentity {
            name: BASE_SKILL_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        });
    let timings = ConnectTimings {
        spawn_duration_ms: millis(spawn),
        handshake_duration_ms: millis(handshake),
        tool_discovery_duration_ms: millis(discovery),
        connect_duration_ms: millis(spawn + handshake),
        total_duration_ms: millis(started.elapsed()),
    };
    Ok(InProcessBase {
        client,
        server,
        tools,
        server_identity,
        timings,
    })
}

impl InProcessBase {
    /// The skill's name (`@perstack/base`).
    pub fn skill_name(&self) -> &str {
        BASE_SKILL_NAME
    }

    /// The tools, as listed once at connect time.
    pub fn tools(&self) -> &[ToolDefinition] {
        &self.tools
    }

    /// The server's `{name, version}` from the handshake.
    pub fn server_identity(&self) -> &ServerIdentity {
        &self.server_identity
    }

    /// How long connecting took.
    pub fn timings(&self) -> ConnectTimings {
        self.timings
    }

    /// Whether the connection is gone (the server task ended).
    pub fn is_closed(&self) -> bool {
        self.client.is_transport_closed()
    }

    /// Calls tool `name` with `args` (a JSON object, or `null` for none). Calls may run
    /// concurrently. A protocol-level failure (unknown tool, invalid arguments) is an
    /// `Err` whose [`SkillError::feeds_back_to_model`] is true.
    pub async fn call(&self, name: &str, args: Value) -> Result<CallToolResult, SkillError> {
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
        self.client
            .call_tool(params)
            .await
            .map_err(|e| SkillError::from_service(BASE_SKILL_NAME, name, e))
    }

    /// Closes the client, then waits briefly for the server task to end (aborting it if it
    /// does not).
    pub async fn close(self) {
        if let Err(e) = self.client.cancel().await {
            tracing::debug!(error = %e, "base skill client task failed while closing");
        }
        // The server sees end-of-stream once the client's sender is dropped.
        match tokio::time::timeout(CLOSE_GRACE, self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "base skill server task failed"),
            Err(_) => tracing::debug!("base skill server did not stop in time; aborted"),
        }
    }
}

/// Runs the server side until the client goes away.
async fn serve<S: ServerHandler>(
    server: S,
    transport: (
        mpsc::Sender<ServerJsonRpcMessage>,
        mpsc::Receiver<ClientJsonRpcMessage>,
    ),
) {
    match server.serve(transport).await {
        Ok(running) => {
            if let Err(e) = running.waiting().await {
                tracing::debug!(error = %e, "base skill server task failed");
            }
        }
        Err(e) => tracing::debug!(error = %e, "base skill server handshake failed"),
    }
}

fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("perstack-rs", env!("CARGO_PKG_VERSION")),
    )
}

fn connect_error(message: String) -> SkillError {
    SkillError::Connect {
        skill: BASE_SKILL_NAME.to_owned(),
        message,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
