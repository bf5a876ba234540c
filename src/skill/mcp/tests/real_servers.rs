//! MCP skills over stdio and Streamable HTTP, against the fixture server
//! (`examples/mcp_fixture_server.rs`) and the reference `@modelcontextprotocol/server-everything`
//! (both real processes; see [`crate::tests::support`] for how they are found).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::agent::catalog::select;
use crate::config::SAFE_ENV_VARS;
use crate::schema::McpStdioSkill;
use crate::skill::SkillError;
use crate::skill::mcp::{ConnectOptions, McpConnection, StderrStream, connect_stdio};
use crate::skill::timeout::bounded;
use crate::tests::support::fixture_bin;
use rmcp::model::CallToolResult;
use serde_json::{Value, json};

mod http;

const SECRET: &str = "s3cr3t-t0ken-value";

fn stdio_skill(command: &str, args: &[&str]) -> McpStdioSkill {
    McpStdioSkill {
        name: "fixture".into(),
        description: None,
        rule: None,
        pick: vec![],
        omit: vec![],
        command: command.into(),
        package_name: None,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        required_env: vec!["MY_TOKEN".into()],
        lazy_init: false,
        allowed_domains: None,
    }
}

fn fixture_skill() -> McpStdioSkill {
    stdio_skill(fixture_bin().to_str().unwrap(), &["--stdio"])
}

/// The engine's environment: the real PATH/HOME plus canaries that must not reach servers.
fn engine_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for name in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(name) {
            env.insert(name.to_owned(), v);
        }
    }
    env.insert("MY_TOKEN".into(), SECRET.into());
    env.insert("SECRET_TOKEN".into(), "c4n4ry1".into());
    env.insert("ANTHROPIC_API_KEY".into(), "c4n4ry3".into());
    env.insert("LD_PRELOAD".into(), "/nonexistent/evil.so".into());
    env
}

fn opts() -> ConnectOptions {
    ConnectOptions {
        startup_timeout: Duration::from_secs(20),
        ..ConnectOptions::default()
    }
}

async fn connect(skill: &McpStdioSkill, opts: &ConnectOptions) -> (McpConnection, StderrStream) {
    connect_stdio(skill, &engine_env(), opts).await.unwrap()
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

fn tool_names(conn: &McpConnection) -> Vec<&str> {
    conn.tools().iter().map(|t| t.name.as_str()).collect()
}

/// Whether `pid` is gone (or a zombie nobody reaped yet: it runs no code).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Lines from `stderr` until one contains `needle` (or `limit` passes).
async fn stderr_until(stderr: &mut StderrStream, needle: &str, limit: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(line) = stderr.recv().await {
            let done = line.contains(needle);
            seen.push(line);
            if done {
                break;
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn stdio_fixture_lists_tools_and_echoes() {
    let (conn, _stderr) = connect(&fixture_skill(), &opts()).await;
    let names = tool_names(&conn);
    for tool in ["echo", "crash", "hang", "huge", "env", "add_tool", "log"] {
        assert!(names.contains(&tool), "{tool} missing from {names:?}");
    }
    assert!(conn.tools().iter().all(|t| t.skill_name == "fixture"));
    assert_eq!(conn.server_identity().name, "mcp-fixture");
    assert_eq!(conn.server_identity().version, "1.0.0");
    let (command, args) = conn.command_line();
    assert_eq!(command, fixture_bin().to_str().unwrap());
    assert_eq!(args, ["--stdio"]);
    let t = conn.timings();
    assert!(t.total_duration_ms >= t.connect_duration_ms);
    assert!(t.connect_duration_ms >= t.handshake_duration_ms);

    let result = conn.call("echo", json!({"text": "hello"})).await.unwrap();
    assert_eq!(text(&result), "hello");
    let err = conn
        .call("echo", json!(["not", "an", "object"]))
        .await
        .unwrap_err();
    assert!(err.feeds_back_to_model(), "{err}");
    assert!(!conn.is_closed());
    conn.close().await;
}

/// `pick`/`omit` are applied once, by the tool catalog: the connection lists what the server
/// has, and refuses (without asking the server) only names the server did not list.
#[tokio::test]
async fn the_connection_lists_every_tool_and_unlisted_names_never_reach_the_server() {
    let mut skill = fixture_skill();
    skill.pick = vec!["echo".into(), "log".into(), "nonexistent".into()];
    skill.omit = vec!["log".into()];
    let (conn, _stderr) = connect(&skill, &opts()).await;
    let names = tool_names(&conn);
    for tool in ["echo", "log", "env", "hang"] {
        assert!(names.contains(&tool), "{tool} missing from {names:?}");
    }
    let picked = select(conn.tools(), &skill.pick, &skill.omit);
    assert_eq!(
        picked.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["echo"]
    );
    let err = conn.call("nonexistent", Value::Null).await.unwrap_err();
    assert!(err.feeds_back_to_model(), "{err}");
    assert_eq!(
        err.to_string(),
        "MCP error -32602: Tool nonexistent not found"
    );
    conn.close().await;
}

#[tokio::test]
async fn a_crash_mid_call_is_an_error_for_the_model_and_closes_the_connection() {
    let (conn, _stderr) = connect(&fixture_skill(), &opts()).await;
    let pid = conn.pid().unwrap();
    let started = Instant::now();
    let err = conn.call("crash", json!({})).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.feeds_back_to_model(), "{err}");
    assert!(err.to_string().contains("crash"), "{err}");
    assert!(wait_until(Duration::from_secs(2), || conn.is_closed()).await);
    assert!(wait_until(Duration::from_secs(2), || process_gone(pid)).await);

    let after = conn.call("echo", json!({"text": "x"})).await.unwrap_err();
    assert!(
        matches!(after, SkillError::TransportClosed { .. }),
        "{after}"
    );
    assert!(!after.feeds_back_to_model());
    conn.close().await;
}

#[tokio::test]
async fn a_hanging_call_times_out_and_is_cancelled() {
    let (conn, mut stderr) = connect(&fixture_skill(), &opts()).await;
    let started = Instant::now();
    let call = conn.call("hang", json!({}));
    let err = bounded(Duration::from_millis(500), "fixture", "hang", call)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, SkillError::Timeout { .. }), "{err}");
    assert!(err.feeds_back_to_model());
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // The server heard the cancellation, and the connection still works.
    let lines = stderr_until(&mut stderr, "hang: cancelled", Duration::from_secs(3)).await;
    assert!(lines.iter().any(|l| l == "hang: cancelled"), "{lines:?}");
    assert_eq!(
        text(&conn.call("echo", json!({"text": "ok"})).await.unwrap()),
        "ok"
    );
    conn.close().await;
}

/// Issue 9: the one tool-call timer is the only limit on an MCP call, so a configured value
/// above the MCP SDK's 60 s default applies (the connection had its own 60 s timer, which won).
/// Paused time: the runtime jumps to the next timer while the server sits on the call.
#[tokio::test]
async fn a_tool_timeout_above_sixty_seconds_is_the_one_applied_to_an_mcp_call() {
    let (conn, _stderr) = connect(&fixture_skill(), &opts()).await;
    tokio::time::pause();
    let after = Duration::from_secs(90);
    let started = tokio::time::Instant::now();
    let err = bounded(after, "fixture", "hang", conn.call("hang", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SkillError::Timeout { after: a, .. } if *a == after),
        "{err}"
    );
    assert!(started.elapsed() >= after, "{:?}", started.elapsed());
    tokio::time::resume();
    conn.close().await;
}

#[tokio::test]
async fn a_five_megabyte_result_arrives_whole() {
    let (conn, _stderr) = connect(&fixture_skill(), &opts()).await;
    let result = conn
        .call("huge", json!({"bytes": 5_000_000}))
        .await
        .unwrap();
    let body = text(&result);
    assert_eq!(body.len(), 5_000_000);
    assert!(body.bytes().all(|b| b == b'x'));
    conn.close().await;
}

#[tokio::test]
async fn only_the_safe_list_and_required_env_reach_the_server() {
    let mut skill = fixture_skill();
    skill.required_env = vec!["MY_TOKEN".into(), "LD_PRELOAD".into()];
    let (conn, _stderr) = connect(&skill, &opts()).await;
    let dump = text(&conn.call("env", json!({})).await.unwrap());
    let seen: BTreeMap<String, String> = serde_json::from_str(&dump).unwrap();
    for name in seen.keys() {
        assert!(
            SAFE_ENV_VARS.contains(&name.as_str()) || name == "MY_TOKEN",
            "unexpected variable {name} in {seen:?}"
        );
    }
    assert_eq!(seen.get("MY_TOKEN").map(String::as_str), Some(SECRET));
    assert!(!seen.contains_key("SECRET_TOKEN"));
    assert!(!seen.contains_key("LD_PRELOAD"));
    assert!(!dump.contains("c4n4ry"), "{dump}");
    // The same, straight from the kernel.
    let environ = std::fs::read(format!("/proc/{}/environ", conn.pid().unwrap())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains("c4n4ry") && !environ.contains("LD_PRELOAD"));
    conn.close().await;
}

#[tokio::test]
async fn a_missing_required_variable_fails_before_spawning() {
    let mut env = engine_env();
    env.remove("MY_TOKEN");
    let err = connect_stdio(&fixture_skill(), &env, &opts())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Skill fixture requires environment variable MY_TOKEN"),
        "{msg}"
    );
    assert!(matches!(err, SkillError::Spawn { .. }));

    let mut bad = fixture_skill();
    bad.args.clear();
    let err = connect_stdio(&bad, &engine_env(), &opts())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has no packageName or args"),
        "{err}"
    );
}

#[tokio::test]
async fn stderr_is_relayed_trimmed_with_required_values_redacted() {
    let (conn, mut stderr) = connect(&fixture_skill(), &opts()).await;
    conn.call("log", json!({"text": format!("   token={SECRET} end   ")}))
        .await
        .unwrap();
    let lines = stderr_until(&mut stderr, "token=", Duration::from_secs(3)).await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some("token=*** end"),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains(SECRET)));
    assert_eq!(stderr.dropped(), 0);
    conn.close().await;
}

#[tokio::test]
async fn close_kills_the_whole_process_group() {
    let (conn, _stderr) = connect(&fixture_skill(), &opts()).await;
    let pid = conn.pid().unwrap();
    let grandchild: u32 = text(&conn.call("spawn_child", json!({})).await.unwrap())
        .parse()
        .unwrap();
    assert!(!process_gone(grandchild));
    let started = Instant::now();
    conn.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(process_gone(pid), "server {pid} survived close");
    assert!(
        wait_until(Duration::from_secs(2), || process_gone(grandchild)).await,
        "grandchild {grandchild} survived close"
    );
}

#[tokio::test]
async fn dropping_the_connection_kills_the_process_group() {
    let (conn, _stderr) = connect(&fixture_skill(), &opts()).await;
    let pid = conn.pid().unwrap();
    let grandchild: u32 = text(&conn.call("spawn_child", json!({})).await.unwrap())
        .parse()
        .unwrap();
    drop(conn);
    assert!(wait_until(Duration::from_secs(3), || process_gone(pid)).await);
    assert!(wait_until(Duration::from_secs(3), || process_gone(grandchild)).await);
}

#[tokio::test]
async fn list_changed_is_noticed_but_new_tools_stay_uncallable() {
    let (conn, _stderr) = connect(&fixture_skill(), &opts()).await;
    let before = conn.tools().len();
    assert!(!conn.tools_changed());
    conn.call("add_tool", json!({"name": "surprise"}))
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(2), || conn.tools_changed()).await);
    assert_eq!(conn.tools().len(), before);
    let err = conn.call("surprise", json!({})).await.unwrap_err();
    assert_eq!(err.to_string(), "MCP error -32602: Tool surprise not found");
    conn.close().await;
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_startup_timeout() {
    let skill = stdio_skill("sleep", &["30"]);
    let opts = ConnectOptions {
        startup_timeout: Duration::from_millis(500),
        ..opts()
    };
    let started = Instant::now();
    let err = connect_stdio(&skill, &engine_env(), &opts)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, SkillError::Connect { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("fixture") && msg.contains("did not finish"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_server_that_dies_at_startup_quotes_its_redacted_stderr() {
    let skill = stdio_skill("sh", &["-c", "echo \"boom: $MY_TOKEN\" >&2; exit 1"]);
    let err = connect_stdio(&skill, &engine_env(), &opts())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("stderr: boom: ***"), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");
}

#[tokio::test]
async fn spawn_failures_name_the_skill() {
    let skill = stdio_skill("/nonexistent/mcp-server", &["x"]);
    let err = connect_stdio(&skill, &engine_env(), &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, SkillError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("fixture"), "{err}");
}

#[tokio::test]
async fn the_workspace_is_the_servers_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let skill = stdio_skill("sh", &["-c", "pwd >&2; exit 1"]);
    let opts = ConnectOptions {
        workspace: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let err = connect_stdio(&skill, &engine_env(), &opts)
        .await
        .unwrap_err();
    let canonical = dir.path().canonicalize().unwrap();
    assert!(
        err.to_string()
            .contains(&format!("stderr: {}", canonical.display())),
        "{err}"
    );
}
