//! What the suites share, so that each helper exists once: the `perstack` binary and the
//! example Expert trees, running the binary and reading its events, perstack.toml builders for
//! the scripted provider, the list of state events, bounded waits, and the provider fixtures
//! (a tool, a request, the chat history every provider test maps).
//!
//! Nothing here asserts on what a suite tests; helpers only panic when their own set-up fails
//! (a binary that cannot start, a line on stdout that is not JSON).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use perstack::llm::{GenerationRequest, ToolSpec};
use perstack::schema::{Checkpoint, Message, MessagePart, ToolCallPart, ToolResult};
use serde_json::{Map, Value, json};

#[path = "../../src/tests/support.rs"]
mod support;
pub(crate) use support::{
    CountingServer, NatsServer, everything_entry, fixture_bin, start_everything_http,
};

/// The `perstack` binary built for this test run.
pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_perstack")
}

/// The `perstack.toml` of the example tree `experts/<name>`.
pub(crate) fn experts(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("experts")
        .join(name)
        .join("perstack.toml")
}

/// `perstack <args>` in `dir`, not yet started.
pub(crate) fn perstack(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(dir);
    cmd
}

/// The `status` of a job's stored `job.json` under `dir`, if there is one.
pub(crate) fn job_status(dir: &Path, job: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(dir.join("perstack/jobs").join(job).join("job.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["status"].as_str().map(str::to_owned)
}

/// Every checkpoint stored for `job` under `dir`, in directory order (none when there is no
/// directory yet).
pub(crate) fn stored(dir: &Path, job: &str) -> Vec<Checkpoint> {
    let Ok(entries) = std::fs::read_dir(dir.join("perstack/jobs").join(job).join("checkpoints"))
    else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap())
        .collect()
}

/// The JSON events of a stdout, one per line; panics on a line that is not JSON.
pub(crate) fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

/// A finished `perstack` process: exit code (-1 when killed by a signal), events, stderr.
pub(crate) struct Finished {
    pub(crate) code: i32,
    pub(crate) events: Vec<Value>,
    pub(crate) stderr: String,
}

/// Run `cmd` to its end within `limit`, without blocking the test's runtime: its output, or
/// `None` when it did not end in time, and then it is killed (a test that gives up must not
/// wait for it).
pub(crate) async fn output_within(cmd: Command, limit: Duration) -> Option<Output> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output()).await.ok()?;
    Some(out.expect("spawn perstack"))
}

impl Finished {
    /// Run `cmd` to its end.
    pub(crate) fn of(cmd: &mut Command) -> Finished {
        Finished::from_output(cmd.output().expect("spawn perstack"))
    }

    /// [`output_within`], as a [`Finished`].
    pub(crate) async fn within(cmd: Command, limit: Duration) -> Option<Finished> {
        output_within(cmd, limit).await.map(Finished::from_output)
    }

    pub(crate) fn from_output(out: Output) -> Finished {
        Finished {
            code: out.status.code().unwrap_or(-1),
            events: events(&out.stdout),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// As a tuple, for the suites that destructure it.
    pub(crate) fn parts(self) -> (i32, Vec<Value>, String) {
        (self.code, self.events, self.stderr)
    }
}

/// The `[provider]` table of a project on the scripted provider reading `script.toml`.
pub(crate) const SCRIPTED: &str = r#"
[provider]
providerName = "scripted"
[provider.setting]
script = "script.toml"
"#;

/// A perstack.toml on the scripted provider with `experts` (the `[experts."…"]` tables).
pub(crate) fn scripted(experts: &str) -> String {
    format!("{SCRIPTED}{experts}")
}

/// `experts` tables of one Expert `solo` that answers.
pub(crate) const SOLO: &str = r#"[experts."solo"]
instruction = "Answer."
"#;

/// Write `perstack.toml` and `script.toml` into `dir`; the perstack.toml path.
pub(crate) fn write_project(dir: &Path, toml: &str, script: &str) -> PathBuf {
    std::fs::write(dir.join("script.toml"), script).unwrap();
    let path = dir.join("perstack.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// A new directory holding `perstack.toml` and `script.toml`.
pub(crate) fn project(toml: &str, script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_project(dir.path(), toml, script);
    dir
}

/// The 17 state event types (REFERENCE §3.5).
pub(crate) const STATE_KINDS: [&str; 17] = [
    "startRun",
    "startGeneration",
    "retry",
    "callTools",
    "callInteractiveTool",
    "callDelegate",
    "resolveToolResults",
    "attemptCompletion",
    "finishToolCall",
    "resumeToolCalls",
    "finishAllToolCalls",
    "continueToNextStep",
    "stopRunByInteractiveTool",
    "stopRunByDelegate",
    "stopRunByExceededMaxSteps",
    "stopRunByError",
    "completeRun",
];

/// Whether `check` holds within `limit`, checked every 10 ms: for conditions no signal
/// announces (reference counts, files of another process). The limit bounds the wait; it is
/// never what a test measures.
pub(crate) async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(limit, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

/// A tool offered to a provider: `path` as its one string property.
pub(crate) fn read_tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: Some(format!("The {name} tool")),
        input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
    }
}

/// One generation of the Expert `coord` on `model`.
pub(crate) fn request(
    model: &str,
    messages: Vec<Message>,
    tools: Vec<ToolSpec>,
    budget: &str,
) -> GenerationRequest {
    GenerationRequest {
        expert_key: "coord".into(),
        model: model.into(),
        messages,
        tools: Arc::new(tools),
        reasoning_budget: budget.parse().unwrap(),
    }
}

/// The model's call `id` of `readTextFile` on `path`, as it sits in a history.
pub(crate) fn read_call(id: &str, path: &str) -> MessagePart {
    MessagePart::ToolCallPart(ToolCallPart {
        id: "p".into(),
        tool_call_id: id.into(),
        tool_name: "readTextFile".into(),
        args: json!({"path": path}).into(),
        extra: Map::new(),
    })
}

/// The base skill's `readTextFile` result `text` for call `id`.
pub(crate) fn read_result(id: &str, text: &str) -> ToolResult {
    ToolResult {
        id: id.into(),
        skill_name: "@perstack/base".into(),
        tool_name: "readTextFile".into(),
        result: vec![MessagePart::text(text)],
        is_error: false,
        extra: Map::new(),
    }
}

/// The chat history every provider test maps: an instruction, a user query, the Expert's turn
/// (`thinking` parts, a text, two `readTextFile` calls with ids `ids`), the two results (in
/// the order of `results`, indexes into `ids`) and a follow-up query.
pub(crate) fn read_both_history(
    thinking: Vec<MessagePart>,
    ids: [&str; 2],
    results: [usize; 2],
) -> Vec<Message> {
    let files = [("a.txt", "contents of a"), ("b.txt", "contents of b")];
    let mut turn = thinking;
    turn.push(MessagePart::text("Reading."));
    turn.extend((0..2).map(|i| read_call(ids[i], files[i].0)));
    let answers: Vec<_> = results
        .iter()
        .map(|&i| read_result(ids[i], files[i].1))
        .collect();
    vec![
        Message::instruction("sys"),
        Message::user("Read a.txt and b.txt"),
        Message::expert(turn),
        Message::tool(&answers),
        Message::user("Now summarise."),
    ]
}

/// The smallest history: Perstack's instruction and a greeting.
pub(crate) fn hi() -> Vec<Message> {
    vec![
        Message::instruction("You are Perstack."),
        Message::user("Hi"),
    ]
}

/// The text of every tool result in `events`, with its tool-call id, in event order.
pub(crate) fn tool_results(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["type"] == "resolveToolResults")
        .flat_map(|e| e["toolResults"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let text = r["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>();
            (r["id"].as_str().unwrap_or_default().to_owned(), text)
        })
        .collect()
}
