//! MCP skills served by other processes: stdio servers the engine spawns, and Streamable
//! HTTP servers it connects to. [`McpConnection`] mirrors the in-process base skill's API
//! ([`crate::skill::base::InProcessBase`]): connect once, list the tools once, call them, close.
//!
//! | File | What |
//! |---|---|
//! | `mcp/command.rs` | [`command_args`]: Perstack's `getCommandArgs` rules |
//! | `mcp/env.rs` | [`child_env`]: the safe list plus `requiredEnv`, protected names refused |
//! | `mcp/stdio.rs` | spawning in a process group; a supervisor that kills and reaps the group |
//! | `mcp/stderr.rs` | [`StderrStream`]: trimmed, redacted stderr lines for `skillStderr` |
//! | `mcp/endpoint.rs` | the SSRF guard for HTTP endpoints |
//! | `mcp/http.rs` | the Streamable HTTP transport, pinned to the checked address |
//!
//! Behaviour the engine relies on:
//!
//! - **Tools** are listed once at connect time, all of them: `pick`/`omit` are applied by the
//!   tool catalog ([`crate::agent::catalog::select`]), whose owner (the skill actor) never
//!   forwards a filtered name. A call to a name the server did not list (or added later)
//!   never reaches the server; it fails with an error the model can read.
//! - **`tools/list_changed`** is recorded ([`McpConnection::tools_changed`]) but the list is not
//!   refreshed: what the model was shown stays what can be called.
//! - **Timeouts:** connecting (spawn, handshake, `tools/list`) is bounded by
//!   [`ConnectOptions::startup_timeout`]. A call has no timer here: the caller bounds it with
//!   the one tool-call timer ([`crate::skill::timeout::bounded`]), so no inner default can cut
//!   a longer configured timeout short. Dropping a call cancels it (rmcp sends
//!   `notifications/cancelled`).
//! - **Crashes:** when the server dies during a call, that call fails with an error that
//!   *feeds back to the model* (the engine turns it into an error tool result and the run
//!   goes on), and [`McpConnection::is_closed`] becomes true; calls made after that fail with
//!   [`SkillError::TransportClosed`] (an engine fault: reconnect or give up).
//! - **Processes:** each stdio server runs in its own process group; [`McpConnection::close`]
//!   and dropping the connection kill the whole group.
//! - **Messages** larger than [`ConnectOptions::max_message_bytes`] are discarded by rmcp; the
//!   call then ends at the caller's timeout.

mod command;
pub(crate) mod endpoint;
pub(crate) mod env;
mod http;
mod stderr;
mod stdio;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, Tool,
};
use rmcp::service::{NotificationContext, RoleClient, RunningService, ServiceError};
use rmcp::transport::IntoTransport;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::Value;

pub(crate) use crate::skill::base::{ConnectTimings, ServerIdentity};
pub(crate) use command::command_args;
pub(crate) use endpoint::check_endpoint;
pub(crate) use env::child_env;
pub(crate) use stderr::incomplete_utf8_tail;
pub(crate) use stderr::{Redactor, StderrStream};

use crate::schema::{McpSseSkill, McpStdioSkill};
use crate::skill::{SkillError, ToolDefinition};

/// The environment variable that opts into private/loopback HTTP endpoints (and plain
/// `http`) when set to `1`; see [`ConnectOptions::allow_private_endpoints`].
pub(crate) const ALLOW_PRIVATE_ENDPOINTS_ENV: &str = "PERSTACK_ALLOW_PRIVATE_MCP_ENDPOINTS";

/// How many lines of a failed server's stderr a connect error quotes.
const STDERR_TAIL_LINES: usize = 5;
/// How long a failed connect waits for the server's last stderr lines.
const STDERR_TAIL_WAIT: Duration = Duration::from_millis(500);

/// Settings for connecting to an MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectOptions {
    /// Working directory of a stdio server (the run's workspace). `None` keeps the engine's
    /// own working directory, as Perstack does.
    pub workspace: Option<PathBuf>,
    /// Limit for spawning (or resolving the endpoint), the MCP handshake and `tools/list`
    /// together. Default 30 s.
    pub startup_timeout: Duration,
    /// How long [`McpConnection::close`] lets a server exit by itself after closing its stdin
    /// before killing its process group. Default 3 s (rmcp's grace period).
    pub close_grace: Duration,
    /// **Security opt-in**, off by default: accept HTTP endpoints on loopback, private,
    /// link-local and other non-public addresses, and plain `http`. Meant for local servers
    /// and tests; the engine sets it from [`ALLOW_PRIVATE_ENDPOINTS_ENV`]`=1`
    /// ([`ConnectOptions::private_endpoints_allowed`]).
    pub allow_private_endpoints: bool,
    /// Lines the stderr stream buffers before it drops (and counts) new ones. Default 256.
    pub stderr_capacity: usize,
    /// Largest single JSON-RPC message accepted from the server. Default 16 MiB (rmcp's).
    pub max_message_bytes: usize,
    /// The sandbox a stdio server is confined in. Default `None` (unconfined): the engine
    /// sets it from its [`Isolation`](crate::sandbox::Isolation), confined unless the
    /// configuration says `runtime = "local"`.
    pub sandbox: Option<crate::sandbox::SandboxScope>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            workspace: None,
            startup_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(3),
            allow_private_endpoints: false,
            stderr_capacity: 256,
            max_message_bytes: 16 * 1024 * 1024,
            sandbox: None,
        }
    }
}

impl ConnectOptions {
    /// Whether `env` opts into private endpoints: [`ALLOW_PRIVATE_ENDPOINTS_ENV`] is `1`.
    pub(crate) fn private_endpoints_allowed(env: &BTreeMap<String, String>) -> bool {
        env.get(ALLOW_PRIVATE_ENDPOINTS_ENV).map(String::as_str) == Some("1")
    }
}

/// A connected MCP server (stdio or Streamable HTTP) and its filtered tool list.
#[derive(Debug)]
pub(crate) struct McpConnection {
    skill_name: String,
    client: RunningService<RoleClient, ClientState>,
    tools: Vec<ToolDefinition>,
    server_identity: ServerIdentity,
    timings: ConnectTimings,
    /// What the server was started with, and whether it announced a tool list change: kept
    /// for the tests of real servers, which check them; nothing else reads them.
    #[cfg_attr(not(test), allow(dead_code))]
    command: String,
    #[cfg_attr(not(test), allow(dead_code))]
    args: Vec<String>,
    close_grace: Duration,
    #[cfg_attr(not(test), allow(dead_code))]
    tools_changed: Arc<AtomicBool>,
    /// The server process (stdio only); dropping it kills the process group.
    child: Option<stdio::ChildHandle>,
}

/// Spawns `skill`'s server with [`child_env`]`(env)`, connects and lists its tools.
///
/// Returns the connection and the server's stderr (see [`StderrStream`]: lossy, never blocks
/// the child). On failure the process group is killed, and the error quotes the last few
/// (redacted) stderr lines.
///
/// # Errors
///
/// [`SkillError::Spawn`] for a bad command line, a missing `requiredEnv` variable or a
/// failed spawn (nothing is started in the first two cases); [`SkillError::Connect`] when
/// the handshake or `tools/list` fails or exceeds [`ConnectOptions::startup_timeout`].
pub(crate) async fn connect_stdio(
    skill: &McpStdioSkill,
    env: &BTreeMap<String, String>,
    opts: &ConnectOptions,
) -> Result<(McpConnection, StderrStream), SkillError> {
    let started = Instant::now();
    let (command, args) = command_args(skill)?;
    let child_env = child_env(&skill.name, &skill.required_env, env)?;
    let redactor = Redactor::new(env::required_values(&skill.required_env, env));
    let spawned = stdio::spawn(
        &skill.name,
        &command,
        &args,
        &child_env,
        opts.workspace.as_deref(),
        opts.sandbox.as_ref(),
    )?;
    let mut stderr = stderr::spawn_relay(spawned.stderr, redactor, opts.stderr_capacity);
    let spawn = started.elapsed();

    let transport = AsyncRwTransport::<RoleClient, _, _>::new(spawned.stdout, spawned.stdin)
        .with_max_line_length(opts.max_message_bytes);
    let state = ClientState::default();
    let remaining = opts.startup_timeout.saturating_sub(spawn);
    let connected = match handshake(&skill.name, state.clone(), transport, remaining).await {
        Ok(connected) => connected,
        Err(message) => {
            spawned.child.kill();
            let tail = stderr_tail(&mut stderr).await;
            return Err(connect_error(&skill.name, format!("{message}{tail}")));
        }
    };
    let connection = McpConnection::new(
        &skill.name,
        connected,
        state,
        (spawn, started),
        (command, args),
        Some(spawned.child),
        opts,
    );
    Ok((connection, stderr))
}

/// Connects to `skill.endpoint` over Streamable HTTP and lists its tools, after the SSRF
/// guard ([`check_endpoint`]) accepted the endpoint; the connection is pinned to the
/// address the guard checked.
///
/// # Errors
///
/// [`SkillError::Connect`] when the guard refuses the endpoint (the message says why), or the
/// handshake or `tools/list` fails or exceeds [`ConnectOptions::startup_timeout`].
pub(crate) async fn connect_http(
    skill: &McpSseSkill,
    opts: &ConnectOptions,
) -> Result<McpConnection, SkillError> {
    let started = Instant::now();
    let checked = tokio::time::timeout(
        opts.startup_timeout,
        check_endpoint(&skill.endpoint, opts.allow_private_endpoints),
    )
    .await
    .map_err(|_| connect_error(&skill.name, "resolving the endpoint timed out".to_owned()))?
    .map_err(|e| connect_error(&skill.name, e.to_string()))?;
    let transport = http::transport(&skill.name, &checked, opts)?;
    let spawn = started.elapsed();
    let state = ClientState::default();
    let remaining = opts.startup_timeout.saturating_sub(spawn);
    let connected = handshake(&skill.name, state.clone(), transport, remaining)
        .await
        .map_err(|message| connect_error(&skill.name, message))?;
    Ok(McpConnection::new(
        &skill.name,
        connected,
        state,
        (spawn, started),
        (skill.endpoint.clone(), Vec::new()),
        None,
        opts,
    ))
}

impl McpConnection {
    #[allow(clippy::too_many_arguments)]
    fn new(
        skill_name: &str,
        connected: Connected,
        state: ClientState,
        (spawn, started): (Duration, Instant),
        (command, args): (String, Vec<String>),
        child: Option<stdio::ChildHandle>,
        opts: &ConnectOptions,
    ) -> Self {
        let listed = connected
            .listed
            .iter()
            .map(|t| ToolDefinition::from_mcp(skill_name, t))
            .collect();
        let server_identity = connected
            .client
            .peer_info()
            .and_then(|info| info.server_info.clone())
            .map(|i| ServerIdentity {
                name: i.name,
                version: i.version,
            })
            .unwrap_or_else(|| ServerIdentity {
                name: skill_name.to_owned(),
                version: String::new(),
            });
        McpConnection {
            skill_name: skill_name.to_owned(),
            client: connected.client,
            tools: listed,
            server_identity,
            timings: ConnectTimings {
                spawn_duration_ms: millis(spawn),
                handshake_duration_ms: millis(connected.handshake),
                tool_discovery_duration_ms: millis(connected.discovery),
                connect_duration_ms: millis(spawn + connected.handshake),
                total_duration_ms: millis(started.elapsed()),
            },
            command,
            args,
            close_grace: opts.close_grace,
            tools_changed: state.tools_changed,
            child,
        }
    }

    /// The server's tools, listed once at connect time (before any `pick`/`omit`).
    pub(crate) fn tools(&self) -> &[ToolDefinition] {
        &self.tools
    }

    /// The server's `{name, version}` from the handshake (the skill's name and an empty
    /// version if the server sent none).
    pub(crate) fn server_identity(&self) -> &ServerIdentity {
        &self.server_identity
    }

    /// How long connecting took, with `skillConnected`'s meanings (for HTTP, "spawn" is the
    /// endpoint check and transport construction).
    pub(crate) fn timings(&self) -> ConnectTimings {
        self.timings
    }

    /// The command and arguments the server was started with (for HTTP: the endpoint and no
    /// arguments). [`command_args`] gives the same before connecting, for `skillStarting`.
    #[cfg(test)]
    pub(crate) fn command_line(&self) -> (&str, &[String]) {
        (&self.command, &self.args)
    }

    /// The server process's id, which is also its process group id (stdio only).
    #[cfg(test)]
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(stdio::ChildHandle::pid)
    }

    /// Whether the server sent `notifications/tools/list_changed` since connecting. The
    /// tool list is not refreshed: new or changed tools stay uncallable until reconnecting.
    #[cfg(test)]
    pub(crate) fn tools_changed(&self) -> bool {
        self.tools_changed.load(Ordering::Relaxed)
    }

    /// Whether the connection is gone (the server exited or closed its end).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_transport_closed()
    }

    /// Calls tool `name` with `args` (a JSON object, or `null` for none), waiting as long as
    /// the server takes: bound it with [`crate::skill::timeout::bounded`]. Calls may run
    /// concurrently.
    ///
    /// # Errors
    ///
    /// Errors whose [`SkillError::feeds_back_to_model`] is true (the model gets an error
    /// tool result): a name not in [`McpConnection::tools`] (`MCP error -32602: Tool X not
    /// found`, the server is not asked), arguments that are not an object, a JSON-RPC error
    /// from the server, an rmcp timeout, and the server dying during this call
    /// ([`SkillError::UnexpectedResponse`]). A call on a connection that was already closed
    /// fails with [`SkillError::TransportClosed`], which does not feed back.
    pub(crate) async fn call(&self, name: &str, args: Value) -> Result<CallToolResult, SkillError> {
        if !self.tools.iter().any(|t| t.name == name) {
            return Err(SkillError::Mcp {
                skill: self.skill_name.clone(),
                tool: name.to_owned(),
                code: rmcp::model::ErrorCode::INVALID_PARAMS.0,
                message: format!("Tool {name} not found"),
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
        if self.is_closed() {
            return Err(SkillError::TransportClosed {
                skill: self.skill_name.clone(),
            });
        }
        let mut params = CallToolRequestParams::new(name.to_owned());
        params.arguments = arguments;
        match self.client.call_tool(params).await {
            Ok(result) => Ok(result),
            Err(ServiceError::TransportClosed) => {
                // The server died (or closed stdout) while this call was in flight. Make
                // sure nothing of it lingers, and let the model know the tool failed.
                if let Some(child) = &self.child {
                    child.kill();
                }
                Err(SkillError::UnexpectedResponse {
                    skill: self.skill_name.clone(),
                    tool: name.to_owned(),
                    detail: "the server closed the connection before answering \
                             (it exited or crashed)"
                        .to_owned(),
                })
            }
            Err(e) => Err(SkillError::from_service(&self.skill_name, name, e)),
        }
    }

    /// Closes the connection: ends the MCP session (closing a stdio server's stdin), lets the
    /// server exit within [`ConnectOptions::close_grace`], then kills its whole process group
    /// and reaps it.
    pub(crate) async fn close(self) {
        let McpConnection {
            client,
            child,
            close_grace,
            skill_name,
            ..
        } = self;
        match tokio::time::timeout(close_grace, client.cancel()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(skill = skill_name, error = %e, "MCP client task failed"),
            Err(_) => tracing::debug!(skill = skill_name, "MCP client did not stop in time"),
        }
        if let Some(child) = child {
            child.shutdown(close_grace).await;
        }
    }
}

/// The rmcp client handler: names the client and records `tools/list_changed`.
#[derive(Debug, Clone, Default)]
struct ClientState {
    tools_changed: Arc<AtomicBool>,
}

impl ClientHandler for ClientState {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("perstack-rs", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.store(true, Ordering::Relaxed);
    }
}

/// A client after the handshake and `tools/list`.
struct Connected {
    client: RunningService<RoleClient, ClientState>,
    listed: Vec<Tool>,
    handshake: Duration,
    discovery: Duration,
}

/// The MCP handshake then `tools/list`, both within `limit`. The error is a message for
/// [`SkillError::Connect`].
async fn handshake<T, E, A>(
    skill: &str,
    state: ClientState,
    transport: T,
    limit: Duration,
) -> Result<Connected, String>
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let deadline = tokio::time::Instant::now() + limit;
    let started = Instant::now();
    let client = tokio::time::timeout_at(deadline, state.serve(transport))
        .await
        .map_err(|_| format!("the MCP handshake did not finish within {limit:?}"))?
        .map_err(|e| format!("MCP handshake failed: {e}"))?;
    let handshake = started.elapsed();
    let started = Instant::now();
    let listed = tokio::time::timeout_at(deadline, client.list_all_tools())
        .await
        .map_err(|_| format!("tools/list did not finish within {limit:?}"))?
        .map_err(|e| format!("tools/list failed: {e}"))?;
    tracing::debug!(skill, tools = listed.len(), "MCP server connected");
    Ok(Connected {
        client,
        listed,
        handshake,
        discovery: started.elapsed(),
    })
}

/// `"; stderr: a | b"` with the last lines a failed server wrote, or nothing.
async fn stderr_tail(stderr: &mut StderrStream) -> String {
    let mut lines = Vec::new();
    let _ = tokio::time::timeout(STDERR_TAIL_WAIT, async {
        while let Some(line) = stderr.recv().await {
            lines.push(line);
        }
    })
    .await;
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    let tail: Vec<String> = lines[start..]
        .iter()
        .map(|l| l.chars().take(300).collect())
        .collect();
    format!("; stderr: {}", tail.join(" | "))
}

fn connect_error(skill: &str, message: String) -> SkillError {
    SkillError::Connect {
        skill: skill.to_owned(),
        message,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real servers: the fixture (`examples/mcp_fixture_server.rs`) and server-everything.
    mod real_servers;

    #[test]
    fn the_private_endpoint_opt_in_is_exactly_one() {
        let mut env = BTreeMap::new();
        assert!(!ConnectOptions::private_endpoints_allowed(&env));
        env.insert(ALLOW_PRIVATE_ENDPOINTS_ENV.to_owned(), "true".to_owned());
        assert!(!ConnectOptions::private_endpoints_allowed(&env));
        env.insert(ALLOW_PRIVATE_ENDPOINTS_ENV.to_owned(), "1".to_owned());
        assert!(ConnectOptions::private_endpoints_allowed(&env));
        assert!(!ConnectOptions::default().allow_private_endpoints);
    }
}
