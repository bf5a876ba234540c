//! MCP over Streamable HTTP (the fixture's `--http` mode, through the SSRF guard), and the
//! optional `@modelcontextprotocol/server-everything` over stdio and Streamable HTTP.

use std::time::Duration;

use crate::schema::McpSseSkill;
use crate::skill::mcp::{ConnectOptions, connect_http};
use crate::tests::support::{everything_entry, fixture_bin, start_everything_http};
use serde_json::json;

use super::{connect, opts, process_gone, stdio_skill, text, tool_names};

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
    let offered = crate::agent::catalog::select(conn.tools(), &skill.pick, &skill.omit);
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

// ---- @modelcontextprotocol/server-everything ------------------------------------------

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
