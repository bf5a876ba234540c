//! MCP over Streamable HTTP (the fixture's `--http` mode, through the SSRF guard), and the
//! optional `@modelcontextprotocol/server-everything` over stdio and Streamable HTTP.

use std::path::PathBuf;
use std::time::Duration;

use perstack::schema::McpSseSkill;
use perstack::skill::mcp::{ConnectOptions, connect_http};
use serde_json::{Value, json};

use super::{connect, fixture_bin, opts, process_gone, stdio_skill, text, tool_names};

// ---- Streamable HTTP --------------------------------------------------------------------

fn http_skill(endpoint: &str) -> McpSseSkill {
    McpSseSkill {
        name: "remote".into(),
        description: None,
        rule: None,
        pick: vec![],
        omit: vec!["crash".into()],
        endpoint: endpoint.into(),
        allowed_domains: None,
    }
}

/// Starts the fixture with `--http 0`; returns the process and its endpoint URL.
async fn http_fixture() -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(fixture_bin())
        .args(["--http", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = first.strip_prefix("listening on ").unwrap().to_owned();
    (child, url)
}

#[tokio::test]
async fn http_endpoints_pass_the_guard_only_with_the_opt_in() {
    let (_server, url) = http_fixture().await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let err = connect_http(&http_skill(&url), &opts()).await.unwrap_err();
    assert!(
        err.to_string().contains("must use https, not http"),
        "{err}"
    );
    let https = url.replacen("http:", "https:", 1);
    let err = connect_http(&http_skill(&https), &opts())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    assert!(!err.feeds_back_to_model());

    let allowed = ConnectOptions {
        allow_private_endpoints: true,
        ..opts()
    };
    let conn = connect_http(&http_skill(&url), &allowed).await.unwrap();
    assert_eq!(conn.server_identity().name, "mcp-fixture");
    assert!(tool_names(&conn).contains(&"echo"));
    // The connection lists every tool; `omit` is the tool catalog's, applied once.
    assert!(tool_names(&conn).contains(&"crash"));
    let skill = http_skill(&url);
    let offered = perstack::agent::catalog::select(conn.tools(), &skill.pick, &skill.omit);
    assert!(offered.iter().all(|t| t.name != "crash"));
    assert_eq!(conn.pid(), None);
    assert_eq!(conn.command_line().0, url);
    let result = conn
        .call("echo", json!({"text": "over http"}))
        .await
        .unwrap();
    assert_eq!(text(&result), "over http");
    let big = conn.call("huge", json!({"bytes": 200_000})).await.unwrap();
    assert_eq!(text(&big).len(), 200_000);
    conn.close().await;
}

// ---- @modelcontextprotocol/server-everything (optional) ---------------------------------

/// The installed server-everything package directory, if any.
fn everything_package() -> Option<PathBuf> {
    let mut roots = Vec::new();
    if let Some(dir) = std::env::var_os("MCP_EVERYTHING_DIR") {
        let dir = PathBuf::from(dir);
        roots.push(dir.join("node_modules"));
        roots.push(dir);
    }
    if let Ok(out) = std::process::Command::new("npm")
        .args(["root", "-g"])
        .output()
        && out.status.success()
    {
        roots.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    roots
        .into_iter()
        .map(|root| root.join("@modelcontextprotocol").join("server-everything"))
        .find(|pkg| pkg.join("package.json").is_file())
}

/// `node <bin>` entry of server-everything, or `None` with a skip note.
pub(crate) fn everything_entry(test: &str) -> Option<String> {
    let Some(pkg) = everything_package() else {
        // CI installs it (.ci/run); there, a missing package is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: @modelcontextprotocol/server-everything is not installed"
        );
        println!(
            "SKIP {test}: @modelcontextprotocol/server-everything not installed \
             (npm install -g @modelcontextprotocol/server-everything, or set MCP_EVERYTHING_DIR)"
        );
        return None;
    };
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(pkg.join("package.json")).unwrap()).unwrap();
    let bin = manifest["bin"]["mcp-server-everything"]
        .as_str()
        .unwrap_or("dist/index.js");
    Some(pkg.join(bin).to_str().unwrap().to_owned())
}

/// server-everything (at `entry`) serving Streamable HTTP on a free 127.0.0.1 port, once it
/// listens: the child (killed when dropped) and `127.0.0.1:<port>`.
pub(crate) async fn start_everything_http(entry: &str) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new("node")
        .args([entry, "streamableHttp"])
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server-everything did not listen on {addr}");
}

#[tokio::test]
async fn server_everything_over_stdio() {
    let Some(entry) = everything_entry("server_everything_over_stdio") else {
        return;
    };
    let mut skill = stdio_skill("node", &[&entry, "stdio"]);
    skill.required_env.clear();
    let (conn, _stderr) = connect(&skill, &opts()).await;
    let pid = conn.pid().unwrap();
    assert!(
        tool_names(&conn).contains(&"echo"),
        "{:?}",
        tool_names(&conn)
    );
    let result = conn
        .call("echo", json!({"message": "hi there"}))
        .await
        .unwrap();
    assert!(text(&result).contains("hi there"), "{result:?}");
    conn.close().await;
    assert!(process_gone(pid));
}

#[tokio::test]
async fn server_everything_over_streamable_http() {
    let Some(entry) = everything_entry("server_everything_over_streamable_http") else {
        return;
    };
    let (_server, addr) = start_everything_http(&entry).await;
    let allowed = ConnectOptions {
        allow_private_endpoints: true,
        ..opts()
    };
    let conn = connect_http(&http_skill(&format!("http://{addr}/mcp")), &allowed)
        .await
        .unwrap();
    assert!(
        tool_names(&conn).contains(&"echo"),
        "{:?}",
        tool_names(&conn)
    );
    let result = conn
        .call("echo", json!({"message": "via http"}))
        .await
        .unwrap();
    assert!(text(&result).contains("via http"), "{result:?}");
    conn.close().await;
}
