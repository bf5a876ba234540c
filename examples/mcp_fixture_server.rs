//! A fixture MCP server for the engine's tests (`tests/suite/mcp.rs`).
//!
//! ```text
//! cargo run --example mcp_fixture_server [-- --stdio]  # MCP over stdio
//! cargo run --example mcp_fixture_server -- --http 0   # Streamable HTTP on 127.0.0.1
//! ```
//!
//! With `--http PORT` (0 picks a free port) it prints `listening on http://127.0.0.1:PORT/mcp`
//! as its first stdout line and serves one MCP session over Streamable HTTP (JSON responses,
//! no SSE), through a small bridge in `tests/mcp_fixture_server/http_bridge.rs`, so no extra
//! rmcp feature is needed.
//!
//! Tools:
//!
//! | Tool | Does |
//! |---|---|
//! | `echo {text}` | returns `text` |
//! | `crash` | exits the process (code 3) without answering |
//! | `hang` | never answers; writes `hang: cancelled` to stderr when cancelled |
//! | `sleep {ms}` | answers `slept <ms> ms` after `ms` milliseconds |
//! | `huge {bytes}` | returns a text of `bytes` `x` characters (at most 256 MiB) |
//! | `env` | returns its environment as a JSON object |
//! | `log {text}` | writes `text` to stderr |
//! | `add_tool {name}` | adds a tool `name` and sends `notifications/tools/list_changed` |
//! | `spawn_child` | starts `sleep 300` (in the server's process group), returns its pid |
//! | `pid` | returns the server's own pid |

#[path = "../tests/mcp_fixture_server/http_bridge.rs"]
mod http_bridge;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, Peer, ServerHandler, ServiceExt, schemars, tool, tool_router};
use tokio_util::sync::CancellationToken;

/// The largest `huge` result.
const MAX_HUGE: usize = 256 * 1024 * 1024;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct TextArgs {
    /// The text.
    text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct HugeArgs {
    /// How many bytes of text to return.
    bytes: usize,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct SleepArgs {
    /// How long to wait before answering, in milliseconds.
    ms: u64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct NameArgs {
    /// The new tool's name.
    name: String,
}

#[derive(Clone)]
struct Fixture {
    tool_router: ToolRouter<Fixture>,
    /// Tools added by `add_tool`.
    extra: Arc<Mutex<Vec<String>>>,
}

#[tool_router]
impl Fixture {
    fn new() -> Self {
        Fixture {
            tool_router: Self::tool_router(),
            extra: Arc::default(),
        }
    }

    fn extra(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.extra
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[tool(description = "Return the text unchanged")]
    async fn echo(&self, Parameters(a): Parameters<TextArgs>) -> String {
        a.text
    }

    #[tool(description = "Exit the server process without answering")]
    async fn crash(&self) -> String {
        eprintln!("crash: exiting");
        std::process::exit(3)
    }

    #[tool(description = "Never answer")]
    async fn hang(&self, cancelled: CancellationToken) -> String {
        // rmcp cancels this token on `notifications/cancelled`; the task itself is not dropped.
        cancelled.cancelled().await;
        eprintln!("hang: cancelled");
        String::new()
    }

    #[tool(description = "Answer after the given number of milliseconds")]
    async fn sleep(&self, Parameters(a): Parameters<SleepArgs>) -> String {
        tokio::time::sleep(std::time::Duration::from_millis(a.ms)).await;
        format!("slept {} ms", a.ms)
    }

    #[tool(description = "Return a text of the given number of bytes")]
    async fn huge(&self, Parameters(a): Parameters<HugeArgs>) -> Result<String, String> {
        if a.bytes > MAX_HUGE {
            return Err(format!("at most {MAX_HUGE} bytes"));
        }
        Ok("x".repeat(a.bytes))
    }

    #[tool(description = "Return the server's environment as a JSON object")]
    async fn env(&self) -> String {
        let vars: BTreeMap<String, String> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        serde_json::to_string(&vars).unwrap_or_default()
    }

    #[tool(description = "Write the text to stderr")]
    async fn log(&self, Parameters(a): Parameters<TextArgs>) -> String {
        eprintln!("{}", a.text);
        "logged".to_owned()
    }

    #[tool(description = "Add a tool and announce it with tools/list_changed")]
    async fn add_tool(
        &self,
        peer: Peer<RoleServer>,
        Parameters(a): Parameters<NameArgs>,
    ) -> String {
        self.extra().push(a.name.clone());
        if let Err(e) = peer.notify_tool_list_changed().await {
            eprintln!("add_tool: notify failed: {e}");
        }
        format!("added {}", a.name)
    }

    #[tool(description = "Start `sleep 300` in this server's process group; return its pid")]
    async fn spawn_child(&self) -> Result<String, String> {
        let child = std::process::Command::new("sleep")
            .arg("300")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(child.id().to_string())
    }

    #[tool(description = "Return this server's pid")]
    async fn pid(&self) -> String {
        std::process::id().to_string()
    }
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("mcp-fixture", "1.0.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.tool_router.list_all();
        let schema = serde_json::json!({"type": "object", "properties": {}});
        let schema = Arc::new(schema.as_object().cloned().unwrap_or_default());
        for name in self.extra().iter() {
            tools.push(Tool::new(
                name.clone(),
                "Added at run time",
                Arc::clone(&schema),
            ));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        if self.extra().contains(&name) {
            let text = format!("{name} was called");
            return Ok(CallToolResponse::Complete(CallToolResult::success(vec![
                ContentBlock::text(text),
            ])));
        }
        let context = ToolCallContext::new(self, request, context);
        self.tool_router.call(context).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["--stdio"] => {
            let running = Fixture::new().serve(rmcp::transport::stdio()).await?;
            running.waiting().await?;
        }
        ["--http", port] => {
            let port: u16 = port.parse()?;
            http_bridge::serve_http(port, Fixture::new).await?;
        }
        _ => return Err("usage: mcp_fixture_server [--stdio | --http PORT]".into()),
    }
    Ok(())
}
