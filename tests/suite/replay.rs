//! Deterministic replay (issue 15, item 3): `perstack replay` runs a recorded job again with its
//! recorded model answers and tool results and finds it identical (Perstack's own recordings,
//! and a job of each example tree); an edited tool result or model answer diverges at its step,
//! naming the run; `--tools live` re-executes the tools in a scratch workspace and reports a
//! result that no longer matches; unknown jobs and unreadable files are usage errors.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::common::{SCRIPTED, bin, experts, fixture_bin, write_project};
use super::traces::scenario_config;

/// `perstack <args>` in `dir`, with its signing key under `dir/.config` and the default store.
fn perstack(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join(".config"))
        .env_remove("PERSTACK_STORAGE_PATH");
    c
}

/// Exit code, stdout, stderr.
fn output(mut c: Command) -> (i32, String, String) {
    let out = c.output().expect("spawn perstack");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `perstack run --config <config> <expert> <query> --job-id <job>` in `dir`; its stdout.
fn run_job(dir: &Path, config: &Path, expert: &str, query: &str, job: &str) -> String {
    let (code, stdout, stderr) = output(perstack(
        dir,
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            expert,
            query,
            "--job-id",
            job,
        ],
    ));
    assert_eq!(code, 0, "the job must complete: {stderr}");
    stdout
}

/// The number of state events in a stdout recording (what an identical replay must count).
fn state_events(jsonl: &str) -> usize {
    const STREAMING: [&str; 6] = [
        "startStreamingReasoning",
        "streamReasoning",
        "completeStreamingReasoning",
        "startStreamingRunResult",
        "streamRunResult",
        "completeStreamingRunResult",
    ];
    jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| {
            e.get("stepNumber").is_some()
                && !STREAMING.contains(&e["type"].as_str().unwrap_or_default())
        })
        .count()
}

/// Asserts an identical replay of job `job` that compared `events` state events.
fn assert_identical(code: i32, stdout: &str, stderr: &str, job: &str, events: usize) {
    assert_eq!(
        code, 0,
        "replay must find the job identical:\n{stdout}{stderr}"
    );
    let summary = format!("replay: job {job}: ");
    assert!(stdout.starts_with(&summary), "{stdout}");
    assert!(
        stdout.contains(&format!(" {events} state events ")),
        "every recorded state event is compared ({events}): {stdout}"
    );
}

/// The JSON after `label: ` on the line starting with it.
fn json_line(stdout: &str, label: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label} line in {stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{label} is not JSON ({e}): {line}"))
}

/// The only run directory of `job` under `dir` whose events include `kind`, and that file.
fn event_file(dir: &Path, job: &str, kind: &str) -> (String, PathBuf) {
    let runs = dir.join("perstack/jobs").join(job).join("runs");
    for run in fs::read_dir(&runs).unwrap() {
        let run = run.unwrap();
        for f in fs::read_dir(run.path()).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(&format!("-{kind}.json")) {
                return (run.file_name().into_string().unwrap(), p);
            }
        }
    }
    panic!("no {kind} event in {}", runs.display());
}

/// A project whose one Expert reads `notes.txt` with the base skill, then completes.
fn reader_project(dir: &Path) -> PathBuf {
    let toml = format!(
        r#"{SCRIPTED}
[experts."reader"]
description = "Reads the notes"
instruction = "Read notes.txt, then answer."

[experts."reader".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["readTextFile", "attemptCompletion"]
"#
    );
    let script = r#"
[[turns]]
expert = "reader"
toolCalls = [{ id = "call_read", name = "readTextFile", args = { path = "notes.txt" } }]

[[turns]]
expert = "reader"
toolCalls = [{ id = "call_done", name = "attemptCompletion" }]

[[turns]]
expert = "reader"
text = "The notes say hello."
"#;
    fs::write(dir.join("notes.txt"), "hello notes\n").unwrap();
    write_project(dir, &toml, script)
}

/// A finished reader job `job` in a new directory.
fn reader_job(job: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = reader_project(dir.path());
    run_job(dir.path(), &config, "reader", "read the notes", job);
    dir
}

#[test]
fn every_perstack_recording_replays_identically() {
    let traces = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perstack-traces");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("perstack.toml");
    fs::write(&config, scenario_config("")).unwrap();
    let mut scenarios: Vec<PathBuf> = fs::read_dir(&traces)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scenarios.sort();
    assert_eq!(scenarios.len(), 8, "the recordings of tests/fixtures");
    for scenario in scenarios {
        let recording = scenario.join("events.jsonl");
        let jsonl = fs::read_to_string(&recording).unwrap();
        let job = serde_json::from_str::<Value>(jsonl.lines().next().unwrap()).unwrap()["jobId"]
            .as_str()
            .unwrap()
            .to_owned();
        let (code, stdout, stderr) = output(perstack(
            dir.path(),
            &[
                "replay",
                recording.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
        ));
        assert_identical(code, &stdout, &stderr, &job, state_events(&jsonl));
    }
}

#[test]
fn a_job_of_each_example_tree_replays_identically_from_the_store_and_from_its_stdout() {
    for (tree, expert, query) in [
        ("fanout", "coordinator", "hello"),
        ("single", "assistant", "are you healthy?"),
        ("chain", "chain", "go"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = experts(tree);
        let job = format!("job-{tree}");
        let stdout = run_job(dir.path(), &config, expert, query, &job);
        let events = state_events(&stdout);
        let (code, out, err) = output(perstack(dir.path(), &["replay", &job]));
        assert_identical(code, &out, &err, &job, events);

        let recording = dir.path().join("events.jsonl");
        fs::write(&recording, &stdout).unwrap();
        let (code, out, err) = output(perstack(
            dir.path(),
            &[
                "replay",
                "events.jsonl",
                "--config",
                config.to_str().unwrap(),
            ],
        ));
        assert_identical(code, &out, &err, &job, events);
    }
}

#[test]
fn an_edited_tool_result_diverges_at_its_step_and_names_the_run() {
    let original = reader_job("edited-tool");
    // The edit goes into a copy of the job; the original still replays identically.
    let copy = tempfile::tempdir().unwrap();
    let jobs = copy.path().join("perstack/jobs");
    fs::create_dir_all(&jobs).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(original.path().join("perstack/jobs/edited-tool"))
        .arg(&jobs)
        .status()
        .unwrap();
    assert!(status.success());
    let (run, file) = event_file(copy.path(), "edited-tool", "resolveToolResults");
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains("hello notes"), "{text}");
    fs::write(&file, text.replace("hello notes", "HELLO notes")).unwrap();

    let (code, stdout, stderr) = output(perstack(copy.path(), &["replay", "edited-tool"]));
    assert_eq!(
        code, 1,
        "an edited tool result must diverge:\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("diverges in run {run} ")) && stdout.contains(", step 1:"),
        "the output names the run and the step: {stdout}"
    );
    let expected = json_line(&stdout, "expected");
    let replayed = json_line(&stdout, "replayed");
    assert_ne!(expected, replayed);
    assert!(expected.to_string().contains("hello notes"), "{expected}");
    assert!(replayed.to_string().contains("HELLO notes"), "{replayed}");

    let (code, stdout, _) = output(perstack(original.path(), &["replay", "edited-tool"]));
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn an_edited_model_answer_whose_next_state_differs_diverges() {
    let dir = reader_job("edited-model");
    // The model's first answer becomes a text without tool calls: the run would complete at
    // step 1 instead of calling readTextFile.
    let (run, file) = event_file(dir.path(), "edited-model", "callTools");
    let mut event: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    event["newMessage"]["contents"] =
        serde_json::json!([{"type": "textPart", "id": "edited", "text": "Nothing to read."}]);
    fs::write(&file, event.to_string()).unwrap();

    let (code, stdout, stderr) = output(perstack(dir.path(), &["replay", "edited-model"]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("diverges in run {run} ")),
        "{stdout}"
    );
    assert_eq!(
        json_line(&stdout, "expected")["type"],
        "callTools",
        "{stdout}"
    );
    assert_eq!(
        json_line(&stdout, "replayed")["type"],
        "completeRun",
        "{stdout}"
    );
    assert_eq!(json_line(&stdout, "replayed")["text"], "Nothing to read.");
}

#[test]
fn live_tools_find_no_difference_then_report_the_result_after_the_workspace_file_changes() {
    let dir = reader_job("live");
    let (code, stdout, stderr) =
        output(perstack(dir.path(), &["replay", "live", "--tools", "live"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("tools re-executed, 0 result(s) differ"),
        "{stdout}"
    );

    fs::write(dir.path().join("notes.txt"), "changed since\n").unwrap();
    let (code, stdout, stderr) =
        output(perstack(dir.path(), &["replay", "live", "--tools", "live"]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    let (run, _) = event_file(dir.path(), "live", "resolveToolResults");
    assert!(
        stdout.contains(&format!(
            "tool result differs in run {run} (Expert \"reader\"), step 1, call call_read (@perstack/base/readTextFile)"
        )),
        "{stdout}"
    );
    assert!(
        json_line(&stdout, "expected")
            .to_string()
            .contains("hello notes")
    );
    assert!(
        json_line(&stdout, "live")
            .to_string()
            .contains("changed since")
    );
    // The live run worked on a scratch copy: the workspace holds no trace of a second run.
    let jobs: Vec<_> = fs::read_dir(dir.path().join("perstack/jobs"))
        .unwrap()
        .collect();
    assert_eq!(jobs.len(), 1);
}

#[test]
fn an_unknown_job_or_an_unreadable_recording_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(perstack(dir.path(), &["replay", "no-such-job"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no job no-such-job"), "{stderr}");

    let (code, _, stderr) = output(perstack(dir.path(), &["replay", "missing/events.jsonl"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");

    fs::write(dir.path().join("bad.jsonl"), "{not json\n").unwrap();
    let (code, _, stderr) = output(perstack(dir.path(), &["replay", "bad.jsonl"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.jsonl:1"), "{stderr}");

    // Perstack's recordings carry no Expert definitions: without a perstack.toml, exit 2.
    let trace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/perstack-traces/s01-attempt-completion/events.jsonl");
    let (code, _, stderr) = output(perstack(dir.path(), &["replay", trace.to_str().unwrap()]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");
}

#[test]
fn playback_starts_no_skill_process_while_live_tools_run_the_sandboxed_server_again() {
    // A stdio MCP server that needs FIXTURE_TOKEN: the job runs it (sandboxed, the default).
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"{SCRIPTED}
[experts."worker"]
instruction = "Call the fixture."

[experts."worker".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]

[experts."worker".skills."fixture"]
type = "mcpStdioSkill"
command = "{}"
args = ["--stdio"]
requiredEnv = ["FIXTURE_TOKEN"]
"#,
        fixture_bin().display()
    );
    let script = r#"
[[turns]]
expert = "worker"
toolCalls = [{ id = "c1", name = "echo", args = { text = "same again" } }]
[[turns]]
expert = "worker"
text = "Echoed."
"#;
    let config = write_project(dir.path(), &toml, script);
    let mut run = perstack(
        dir.path(),
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "worker",
            "go",
            "--job-id",
            "echo",
        ],
    );
    run.env("FIXTURE_TOKEN", "t");
    let (code, stdout, stderr) = output(run);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("same again"), "{stdout}");

    // Playback: no process starts, so the server's variable is not needed.
    let mut playback = perstack(dir.path(), &["replay", "echo"]);
    playback.env_remove("FIXTURE_TOKEN");
    let (code, out, err) = output(playback);
    assert_identical(code, &out, &err, "echo", state_events(&stdout));

    // Live: the server starts again (and needs its variable), and answers as recorded.
    let mut live = perstack(dir.path(), &["replay", "echo", "--tools", "live"]);
    live.env_remove("FIXTURE_TOKEN");
    let (code, _, err) = output(live);
    assert_eq!(
        code, 2,
        "live tools start the server, which needs FIXTURE_TOKEN: {err}"
    );
    assert!(err.contains("FIXTURE_TOKEN"), "{err}");
    let mut live = perstack(dir.path(), &["replay", "echo", "--tools", "live"]);
    live.env("FIXTURE_TOKEN", "t");
    let (code, out, err) = output(live);
    assert_identical(code, &out, &err, "echo", state_events(&stdout));
    assert!(
        out.contains("tools re-executed, 0 result(s) differ"),
        "{out}"
    );
}

#[test]
fn a_job_answered_with_i_then_continued_replays_identically_invocation_by_invocation() {
    // The mixed turn of continue_job.rs: an MCP call, a delegation and an interactive call; the
    // job stops for the user, is answered with -i, then continued with a new query.
    let dir = tempfile::tempdir().unwrap();
    let config = write_project(
        dir.path(),
        &super::common::scripted(super::continue_job::EXPERTS),
        super::continue_job::SCRIPT,
    );
    let config = config.to_str().unwrap();
    let mut stdout = String::new();
    for args in [
        vec![
            "run", "--config", config, "--job-id", "cont", "coord", "start",
        ],
        vec![
            "run",
            "--config",
            config,
            "--continue-job",
            "cont",
            "-i",
            "coord",
            "yes",
        ],
        vec![
            "run",
            "--config",
            config,
            "--continue-job",
            "cont",
            "coord",
            "more?",
        ],
    ] {
        let (code, out, err) = output(perstack(dir.path(), &args));
        assert_eq!(code, 0, "{args:?}: {err}");
        stdout.push_str(&out);
    }
    assert!(stdout.contains("stopRunByInteractiveTool") && stdout.contains("Follow-up answered."));
    let events = state_events(&stdout);
    let (code, out, err) = output(perstack(dir.path(), &["replay", "cont"]));
    assert_identical(code, &out, &err, "cont", events);
    assert!(
        out.contains(" 5 runs, "),
        "both continuations were replayed: {out}"
    );

    fs::write(dir.path().join("all.jsonl"), &stdout).unwrap();
    let (code, out, err) = output(perstack(
        dir.path(),
        &["replay", "all.jsonl", "--config", config],
    ));
    assert_identical(code, &out, &err, "cont", events);
}
