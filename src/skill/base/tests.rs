//! End-to-end tests of the base skill through a real rmcp client, compared with the result
//! texts recorded from Perstack (tests/fixtures/perstack-traces/s15-todo, s03, s05).
//!
//! The file, directory, media and exec tools have their own files under `tests/`, sharing the
//! [`Fixture`] below (a temporary workspace with a connected skill); `tests/security.rs` holds
//! the escape attempts.

mod dir_tools;
mod exec_tool;
mod file_tools;
mod media_tools;
mod security;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use super::*;
use crate::skill::SkillError;
use crate::skill::mcp_result::{mcp_error_text, to_message_parts};

/// A temporary workspace (canonical path `root`), a second temporary directory standing for
/// "outside the workspace", and a skill connected in-process. `HOME` is the outside directory,
/// so `~` leads out of the workspace.
struct Fixture {
    _workspace: tempfile::TempDir,
    _outside: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    base: InProcessBase,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_env(BTreeMap::new()).await
    }

    /// A fixture whose skill is configured with `PATH`, `HOME` and `extra`.
    async fn with_env(extra: BTreeMap<String, String>) -> Fixture {
        let workspace = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(workspace.path()).unwrap();
        let outside_path = std::fs::canonicalize(outside.path()).unwrap();
        let mut env = BTreeMap::from([
            (
                "PATH".to_owned(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            ),
            ("HOME".to_owned(), outside_path.display().to_string()),
        ]);
        env.extend(extra);
        let base = connect_in_process(BaseSkill::with_workspace_env(&root, &env))
            .await
            .unwrap();
        Fixture {
            _workspace: workspace,
            _outside: outside,
            root,
            outside: outside_path,
            base,
        }
    }

    /// `rel` inside the workspace.
    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `rel` inside the outside directory.
    fn out(&self, rel: &str) -> PathBuf {
        self.outside.join(rel)
    }

    /// Writes `text` to `rel` in the workspace, creating parents.
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.at(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The result text of a call (one text content, no `isError`).
    async fn text(&self, name: &str, args: Value) -> String {
        call_text(&self.base, name, args).await
    }

    /// The result of a call, parsed.
    async fn call(&self, name: &str, args: Value) -> Value {
        serde_json::from_str(&self.text(name, args).await).unwrap()
    }

    /// Calls and asserts a `{"error":"Error","message":..}` answer containing `needle` and
    /// nothing from the outside directory; returns the message.
    async fn refused(&self, name: &str, args: Value, needle: &str) -> String {
        let v = self.call(name, args.clone()).await;
        assert_error(&v, needle, &format!("{name} {args}"));
        let message = v["message"].as_str().unwrap().to_owned();
        assert!(
            !message.contains(&self.outside.display().to_string())
                || args
                    .to_string()
                    .contains(&self.outside.display().to_string()),
            "{name} leaked an outside path: {message}"
        );
        message
    }
}

/// Asserts `v` is exactly `{"error":"Error","message":<containing needle>}`.
fn assert_error(v: &Value, needle: &str, context: &str) {
    assert_eq!(v["error"], "Error", "{context}: {v}");
    assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{context}: {v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{context}: {message:?} lacks {needle:?}"
    );
}

/// Creates a symlink at `link` pointing to `target`.
fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

async fn connect() -> InProcessBase {
    connect_in_process(BaseSkill::new("/workspace"))
        .await
        .unwrap()
}

/// The single text content of a call's result.
async fn call_text(base: &InProcessBase, name: &str, args: Value) -> String {
    let result = base.call(name, args).await.unwrap();
    assert_eq!(result.content.len(), 1, "{result:?}");
    assert_eq!(result.is_error, None, "{result:?}");
    result.content[0].as_text().unwrap().text.clone()
}

#[tokio::test]
async fn lists_perstacks_seventeen_tools_with_simple_schemas() {
    let base = connect().await;
    let mut names: Vec<_> = base.tools().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "appendTextFile",
            "attemptCompletion",
            "clearTodo",
            "createDirectory",
            "deleteDirectory",
            "deleteFile",
            "editTextFile",
            "exec",
            "getFileInfo",
            "healthCheck",
            "listDirectory",
            "moveFile",
            "readImageFile",
            "readPdfFile",
            "readTextFile",
            "todo",
            "writeTextFile",
        ]
    );
    for tool in base.tools() {
        assert_eq!(tool.skill_name, "@perstack/base");
        assert!(tool.description.as_deref().is_some_and(|d| !d.is_empty()));
        assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
        let text = tool.input_schema.to_string();
        assert!(!text.contains("null"), "{}: {text}", tool.name);
        for required in tool.input_schema["required"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap();
            let property = &tool.input_schema["properties"][key];
            assert!(property["description"].is_string(), "{}.{key}", tool.name);
        }
        if ["attemptCompletion", "clearTodo", "healthCheck"].contains(&tool.name.as_str()) {
            assert_eq!(
                tool.input_schema,
                json!({"type": "object", "properties": {}}),
                "{}",
                tool.name
            );
        }
    }
    let exec = base
        .tools()
        .iter()
        .find(|t| t.name == super::EXEC_TOOL)
        .unwrap();
    assert_eq!(
        exec.input_schema["required"],
        json!(["command", "args", "env", "cwd", "stdout", "stderr"])
    );
    let todo = base.tools().iter().find(|t| t.name == "todo").unwrap();
    assert_eq!(todo.input_schema["properties"]["newTodos"]["type"], "array");
    assert_eq!(
        todo.input_schema["properties"]["completedTodos"]["items"]["type"],
        "integer"
    );
    assert!(todo.input_schema.get("required").is_none());

    assert_eq!(base.server_identity().name, "@perstack/base");
    assert_eq!(base.server_identity().version, env!("CARGO_PKG_VERSION"));
    let t = base.timings();
    assert_eq!(
        t.connect_duration_ms,
        t.spawn_duration_ms + t.handshake_duration_ms
    );
    assert!(t.total_duration_ms >= t.connect_duration_ms);
    base.close().await;
}

#[tokio::test]
async fn the_todo_flow_matches_perstacks_trace() {
    let base = connect().await;
    // s15-todo, step 1..4.
    assert_eq!(
        call_text(&base, "todo", json!({"newTodos": ["one"]})).await,
        r#"{"todos":[{"id":0,"title":"one","completed":false}]}"#
    );
    assert_eq!(
        call_text(&base, "attemptCompletion", json!({})).await,
        r#"{"remainingTodos":[{"id":0,"title":"one","completed":false}]}"#
    );
    assert_eq!(
        call_text(&base, "todo", json!({"completedTodos": [0]})).await,
        r#"{"todos":[{"id":0,"title":"one","completed":true}]}"#
    );
    assert_eq!(call_text(&base, "attemptCompletion", json!({})).await, "{}");
    base.close().await;
}

#[tokio::test]
async fn todo_ids_increment_and_clear_todo_resets_them() {
    let base = connect().await;
    call_text(&base, "todo", json!({"newTodos": ["a", "b"]})).await;
    assert_eq!(
        call_text(
            &base,
            "todo",
            json!({"newTodos": ["c"], "completedTodos": [1, 2]})
        )
        .await,
        r#"{"todos":[{"id":0,"title":"a","completed":false},{"id":1,"title":"b","completed":true},{"id":2,"title":"c","completed":true}]}"#
    );
    // Null fields and no arguments at all are both accepted.
    assert_eq!(
        call_text(&base, "todo", json!({"newTodos": null})).await,
        call_text(&base, "todo", Value::Null).await
    );
    assert_eq!(
        call_text(&base, "clearTodo", json!({})).await,
        r#"{"todos":[]}"#
    );
    assert_eq!(
        call_text(&base, "attemptCompletion", Value::Null).await,
        "{}"
    );
    assert_eq!(
        call_text(&base, "todo", json!({"newTodos": ["again"]})).await,
        r#"{"todos":[{"id":0,"title":"again","completed":false}]}"#
    );
    base.close().await;
}

#[tokio::test]
async fn two_instances_do_not_share_todos() {
    let first = connect().await;
    let second = connect().await;
    call_text(&first, "todo", json!({"newTodos": ["only in the first"]})).await;
    assert_eq!(
        call_text(&second, "todo", json!({})).await,
        r#"{"todos":[]}"#
    );
    assert_eq!(
        call_text(&second, "attemptCompletion", json!({})).await,
        "{}"
    );
    assert!(
        call_text(&first, "attemptCompletion", json!({}))
            .await
            .starts_with(r#"{"remainingTodos":"#)
    );
    first.close().await;
    second.close().await;
}

#[tokio::test]
async fn a_skill_instance_exposes_its_todos() {
    let skill = BaseSkill::new("/w");
    skill.lock_todos().apply(vec!["x".into()], &[]);
    assert_eq!(
        skill.todos(),
        [TodoItem {
            id: 0,
            title: "x".into(),
            completed: false
        }]
    );
    assert_eq!(skill.workspace(), std::path::Path::new("/w"));
}

#[tokio::test]
async fn health_check_has_perstacks_keys_and_shapes() {
    let base = connect().await;
    let text = call_text(&base, "healthCheck", json!({})).await;
    // Key order as in s05: status, workspace, uptime, memory{heapUsed, heapTotal}, pid.
    let keys: Vec<_> = [
        "\"status\"",
        "\"workspace\"",
        "\"uptime\"",
        "\"memory\"",
        "\"heapUsed\"",
        "\"heapTotal\"",
        "\"pid\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap())
    .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["workspace"], "/workspace");
    assert_eq!(v["uptime"], "0s");
    assert_eq!(v["pid"], std::process::id());
    for key in ["heapUsed", "heapTotal"] {
        let s = v["memory"][key].as_str().unwrap();
        assert!(
            s.ends_with("MB") && s[..s.len() - 2].parse::<u64>().is_ok(),
            "{s}"
        );
    }
    base.close().await;
}

#[tokio::test]
async fn protocol_errors_feed_back_to_the_model() {
    let base = connect().await;
    let err = base.call("noSuchTool", json!({})).await.unwrap_err();
    assert!(err.feeds_back_to_model(), "{err:?}");
    assert!(
        mcp_error_text("noSuchTool", &err)
            .starts_with("Error calling tool noSuchTool: MCP error -32602")
    );

    // rmcp reports arguments that do not deserialise as an `isError` result, not a protocol
    // error; either way the model reads it.
    let bad = base
        .call("todo", json!({"newTodos": "not a list"}))
        .await
        .unwrap();
    assert_eq!(bad.is_error, Some(true));
    let out = to_message_parts("todo", &json!({}), &bad);
    assert!(out.is_error);
    assert!(
        out.parts[0]
            .as_text()
            .unwrap()
            .contains("failed to deserialize parameters")
    );
    let err = base.call("todo", json!([1])).await.unwrap_err();
    assert!(
        matches!(err, SkillError::InvalidArguments { .. }),
        "{err:?}"
    );
    // The connection survives all of that.
    assert_eq!(
        call_text(&base, "clearTodo", json!({})).await,
        r#"{"todos":[]}"#
    );
    base.close().await;
}

#[tokio::test]
async fn results_convert_to_the_parts_perstack_records() {
    let base = connect().await;
    let args = json!({"newTodos": ["one"]});
    let result = base.call("todo", args.clone()).await.unwrap();
    let out = to_message_parts("todo", &args, &result);
    assert!(!out.is_error);
    assert_eq!(out.parts.len(), 1);
    assert_eq!(
        out.parts[0].as_text(),
        Some(r#"{"todos":[{"id":0,"title":"one","completed":false}]}"#)
    );
    base.close().await;
}

#[tokio::test]
async fn concurrent_calls_all_succeed() {
    let base = connect().await;
    let calls = (0..32).map(|i| base.call("todo", json!({"newTodos": [format!("t{i}")]})));
    for r in futures::future::join_all(calls).await {
        assert!(r.is_ok());
    }
    assert_eq!(
        serde_json::from_str::<Value>(&call_text(&base, "todo", json!({})).await).unwrap()["todos"]
            .as_array()
            .unwrap()
            .len(),
        32
    );
    base.close().await;
}

#[tokio::test]
async fn calls_after_close_fail_without_feedback() {
    let base = connect().await;
    assert!(base.call("clearTodo", json!({})).await.is_ok());
    base.closed
        .store(true, std::sync::atomic::Ordering::Release);
    assert!(base.is_closed());
    let err = base.call("clearTodo", json!({})).await.unwrap_err();
    assert!(!err.feeds_back_to_model(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_in_process_call_latency() {
    let base = connect().await;
    println!("connect timings: {:?}", base.timings());
    for _ in 0..100 {
        base.call("attemptCompletion", json!({})).await.unwrap();
    }
    const N: u32 = 1000;
    let started = Instant::now();
    for _ in 0..N {
        base.call("attemptCompletion", json!({})).await.unwrap();
    }
    let per_call = started.elapsed() / N;
    let started = Instant::now();
    for _ in 0..N {
        base.call("todo", json!({"completedTodos": [0]}))
            .await
            .unwrap();
    }
    let per_todo = started.elapsed() / N;
    println!(
        "in-process base skill: attemptCompletion {per_call:?}/call, todo {per_todo:?}/call (mean of {N}, multi-thread runtime)"
    );
    base.close().await;
}

#[test]
fn only_a_versioned_package_or_argument_pins_the_base_skill() {
    let skill = |package: Option<&str>, args: &[&str]| crate::schema::McpStdioSkill {
        name: crate::schema::BASE_SKILL.into(),
        description: None,
        rule: None,
        pick: vec![],
        omit: vec![],
        command: "npx".into(),
        package_name: package.map(str::to_owned),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        required_env: vec![],
        lazy_init: false,
        allowed_domains: None,
    };
    assert!(!is_pinned(&skill(Some("@perstack/base"), &[])));
    assert!(is_pinned(&skill(Some("@perstack/base@0.0.40"), &[])));
    assert!(is_pinned(&skill(None, &["-y", "@perstack/base@0.0.40"])));
    assert!(!is_pinned(&skill(None, &["-y", "@perstack/base-extra"])));
}
