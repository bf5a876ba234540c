//! `perstack log` end to end: jobs produced by `perstack run` on the example Expert trees, then
//! read back with every option, as a listing and as JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::common::{SOLO, experts, project, scripted};

fn perstack(dir: &Path, args: &[&str]) -> Output {
    super::common::perstack(dir, args)
        .env_remove("PERSTACK_STORAGE_PATH")
        .output()
        .expect("spawn perstack")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `perstack log <args>`, which must exit 0; its stdout.
fn log_ok(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["log"];
    all.extend_from_slice(args);
    let out = perstack(dir, &all);
    assert_eq!(out.status.code(), Some(0), "log {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `perstack log --json <args>`, parsed.
fn log_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = log_ok(dir, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}: {text}"))
}

/// Asserts that `text` contains every one of the `|`-separated `parts`.
fn has(text: &str, parts: &str) {
    for p in parts.split('|') {
        assert!(text.contains(p), "{p:?} missing from:\n{text}");
    }
}

fn events(doc: &Value) -> &Vec<Value> {
    doc["events"].as_array().expect("events array")
}

fn ids(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["id"].as_str().unwrap()).collect()
}

/// Runs `expert` of `experts/<tree>` in `dir`, returning the job id.
fn run_tree(dir: &Path, tree: &str, expert: &str, query: &str) -> String {
    let config = experts(tree);
    let out = perstack(
        dir,
        &["run", "--config", config.to_str().unwrap(), expert, query],
    );
    assert!(out.status.success(), "{tree}: {}", stderr(&out));
    let first = stdout(&out).lines().next().unwrap().to_owned();
    let event: Value = serde_json::from_str(&first).unwrap();
    event["jobId"].as_str().unwrap().to_owned()
}

/// A directory holding a fanout job, then (the latest) a single-expert job.
struct Jobs {
    dir: tempfile::TempDir,
    fanout: String,
    single: String,
}

fn jobs() -> Jobs {
    let dir = tempfile::tempdir().unwrap();
    let fanout = run_tree(dir.path(), "fanout", "coordinator", "hello");
    let single = run_tree(dir.path(), "single", "assistant", "hello");
    Jobs {
        dir,
        fanout,
        single,
    }
}

impl Jobs {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn job_dir(&self, job: &str) -> PathBuf {
        self.path().join("perstack/jobs").join(job)
    }

    /// Every stored event of `job`, in the order `perstack log` lists them.
    fn all(&self, job: &str) -> Vec<Value> {
        events(&log_json(self.path(), &["--job", job, "--take", "0"])).clone()
    }

    /// The event files of the job's run directories.
    fn event_paths(&self, job: &str) -> Vec<PathBuf> {
        let runs = std::fs::read_dir(self.job_dir(job).join("runs")).unwrap();
        let files = runs.flat_map(|run| std::fs::read_dir(run.unwrap().path()).unwrap());
        let paths = files.map(|f| f.unwrap().path());
        paths
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("event-")
            })
            .collect()
    }

    /// How many event files the job's run directories hold.
    fn event_files(&self, job: &str) -> usize {
        self.event_paths(job).len()
    }

    /// The id of the stored checkpoint of `expert` (the first by file name), and the
    /// checkpoint as Perstack's tools read it (see [`perstack_view`]).
    fn checkpoint_of(&self, job: &str, expert: &str) -> (String, Value) {
        for f in std::fs::read_dir(self.job_dir(job).join("checkpoints")).unwrap() {
            let path = f.unwrap().path();
            let cp = perstack_view(
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap(),
            );
            if cp["expert"]["key"] == expert {
                return (cp["id"].as_str().unwrap().to_owned(), cp);
            }
        }
        panic!("no checkpoint of {expert}");
    }
}

/// A stored file as Perstack's readers see it: without the `jobSeq` this engine adds (which
/// `perstack log` does not print, as Perstack's does not).
fn perstack_view(mut stored: Value) -> Value {
    assert!(
        stored["jobSeq"].is_u64(),
        "stored with its job sequence: {stored}"
    );
    stored.as_object_mut().unwrap().remove("jobSeq");
    stored
}

/// A directory holding one job that stopped by error (a 400 from the provider).
fn error_job() -> tempfile::TempDir {
    let dir = project(
        &scripted(SOLO),
        "[[turns]]\nexpert = \"solo\"\nerror = { status = 400, message = \"bad\" }\n",
    );
    let out = perstack(dir.path(), &["run", "solo", "q"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    dir
}

#[test]
fn the_default_shows_the_latest_job_as_plain_text_when_piped() {
    let j = jobs();
    let text = log_ok(j.path(), &[]);
    assert!(text.starts_with("(showing latest job)\n"), "{text}");
    let storage = format!("Storage: {}", j.path().join("perstack").display());
    let job = format!("Job: {} (completed)", j.single);
    let result = "result: Yes: the workspace is reachable";
    let want = format!("{storage}|{job}|Expert: assistant|callTools|healthCheck|{result}");
    has(&text, &want);
    assert!(!text.contains(&j.fanout), "{text}");
    assert!(!text.contains('\x1b'), "no colours when piped: {text:?}");
    // One line per event: as many event lines as stored events.
    let lines = text.lines().filter(|l| l.contains("  assistant  ")).count();
    assert_eq!(lines, j.event_files(&j.single), "{text}");
}

#[test]
fn job_run_and_checkpoint_select_what_is_shown() {
    let j = jobs();
    let text = log_ok(j.path(), &["--job", &j.fanout]);
    assert!(!text.contains("(showing latest job)"), "{text}");
    let job = format!("Job: {} (completed)", j.fanout);
    let want = format!("{job}|delegate to child-a, child-b|result: First half done.");
    has(&text, &want);
    let doc = log_json(j.path(), &["--job", &j.fanout]);
    assert_eq!(events(&doc).len(), j.event_files(&j.fanout));
    assert_eq!(doc["job"]["id"], j.fanout.as_str());
    assert_eq!(doc["checkpoints"].as_array().unwrap().len(), 5);

    // --run, found without --job.
    let all = j.all(&j.fanout);
    let run = all.iter().find(|e| e["expertKey"] == "child-a").unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = log_json(j.path(), &["--run", &run]);
    let want: Vec<&Value> = all.iter().filter(|e| e["runId"] == run.as_str()).collect();
    assert_eq!(events(&doc).len(), want.len());
    assert!(events(&doc).iter().all(|e| e["runId"] == run.as_str()));
    assert_eq!(doc["job"]["id"], j.fanout.as_str());
    let text = log_ok(j.path(), &["--job", &j.fanout, "--run", &run]);
    assert!(text.contains(&format!("Run: {run}")), "{text}");
    assert!(!text.contains("child-b"), "{text}");

    // --checkpoint, with and without --messages.
    let (cp, stored) = j.checkpoint_of(&j.fanout, "child-b");
    let text = log_ok(j.path(), &["--checkpoint", &cp]);
    let want = format!("Checkpoint: {cp} (completed)|Expert: child-b");
    has(&text, &want);
    assert!(!text.contains("Messages ("), "{text}");
    let text = log_ok(
        j.path(),
        &["--job", &j.fanout, "--checkpoint", &cp, "--messages"],
    );
    let n = stored["messages"].as_array().unwrap().len();
    let count = format!("Messages ({n}):");
    let user = "[userMessage] Do the second half";
    let want = format!("{count}|{user}|[expertMessage] Second half done.|call attemptCompletion");
    has(&text, &want);
    let doc = log_json(j.path(), &["--checkpoint", &cp]);
    assert_eq!(doc["checkpoint"], stored);
    assert!(
        events(&doc)
            .iter()
            .all(|e| e["runId"] == stored["runId"] && e["expertKey"] == "child-b")
    );
    assert!(!events(&doc).is_empty());
}

#[test]
fn step_type_and_shortcut_filters_select_the_right_events() {
    let j = jobs();
    let all = j.all(&j.fanout);
    let check = |args: &[&str], keep: &dyn Fn(&Value) -> bool| {
        let mut with_job = vec!["--job", j.fanout.as_str()];
        with_job.extend_from_slice(args);
        let doc = log_json(j.path(), &with_job);
        let want: Vec<Value> = all.iter().filter(|e| keep(e)).cloned().collect();
        assert!(!want.is_empty(), "{args:?} selects nothing in the fixture");
        assert_eq!(ids(events(&doc)), ids(&want), "{args:?}");
        assert_eq!(doc["summary"]["totalEvents"], want.len(), "{args:?}");
    };
    let step = |e: &Value| e["stepNumber"].as_u64().unwrap();
    check(&["--step", "1"], &|e| step(e) == 1);
    check(&["--step", ">=3"], &|e| step(e) >= 3);
    check(&["--step", ">3"], &|e| step(e) > 3);
    check(&["--step", "<2"], &|e| step(e) < 2);
    check(&["--step", "<=2"], &|e| step(e) <= 2);
    check(&["--step", "1-2"], &|e| (1..=2).contains(&step(e)));
    check(&["--type", "callTools"], &|e| e["type"] == "callTools");
    check(&["--type", "callTools,completeRun"], &|e| {
        e["type"] == "callTools" || e["type"] == "completeRun"
    });
    check(&["--delegations"], &|e| {
        e["type"] == "callDelegate" || e["type"] == "stopRunByDelegate"
    });
    check(&["--tools"], &|e| {
        ["callTools", "resolveToolResults", "callInteractiveTool"]
            .contains(&e["type"].as_str().unwrap())
    });
    check(&["--tools", "--step", "4"], &|e| {
        e["type"] == "callTools" && step(e) == 4
    });
    let completion = r#".toolCalls[].toolName == "attemptCompletion""#;
    check(&["--filter", completion], &|e| {
        e["toolCalls"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["toolName"] == "attemptCompletion"))
    });
    let doc = log_json(j.path(), &["--job", &j.fanout, "--filter", completion]);
    assert_eq!(events(&doc).len(), 3, "two children and the coordinator");
    assert!(events(&doc).iter().all(|e| e["type"] == "callTools"));

    // --tools on the single job includes the health check's results.
    let doc = log_json(j.path(), &["--tools"]);
    let kinds: Vec<&str> = events(&doc)
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"resolveToolResults"), "{kinds:?}");
    // Nothing matches: the job is still shown, then "No data found".
    let text = log_ok(j.path(), &["--job", &j.fanout, "--errors"]);
    assert!(
        text.contains(&j.fanout) && text.contains("No data found"),
        "{text}"
    );
}

#[test]
fn errors_show_the_stop_by_error_with_its_message() {
    let dir = error_job();
    let text = log_ok(dir.path(), &["--errors"]);
    let want = "(stoppedByError)|stopRunByError|APICallError (400): bad";
    has(&text, want);
    assert!(!text.contains("startRun"), "{text}");
    let doc = log_json(dir.path(), &["--errors"]);
    assert_eq!(events(&doc).len(), 1);
    assert_eq!(events(&doc)[0]["type"], "stopRunByError");
    assert_eq!(events(&doc)[0]["error"]["message"], "bad");
    assert_eq!(doc["summary"]["errorCount"], 1);
    assert_eq!(doc["job"]["status"], "stoppedByError");
    let all = log_json(dir.path(), &[]);
    assert_eq!(all["summary"]["errorCount"], 1);
    assert_eq!(
        all["summary"]["totalEvents"],
        events(&all).len(),
        "counts the listed events"
    );
}

#[test]
fn json_has_perstacks_shape_and_pretty_is_indented() {
    let j = jobs();
    let text = log_ok(j.path(), &["--json"]);
    assert_eq!(text.lines().count(), 1, "compact: one line");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["events", "job", "summary"],
        "no --job: no checkpoints key"
    );
    // Perstack's key order: job, events, summary.
    assert!(text.starts_with("{\"job\":{"), "{text}");
    assert!(
        text.find("\"events\":[") < text.rfind("\"summary\":{"),
        "{text}"
    );
    assert_eq!(doc["job"]["id"], j.single.as_str());
    assert_eq!(doc["job"]["coordinatorExpertKey"], "assistant");
    let n = j.event_files(&j.single);
    assert_eq!(events(&doc).len(), n);
    assert_eq!(doc["summary"]["totalEvents"], n);
    assert_eq!(doc["summary"]["errorCount"], 0);
    assert_eq!(doc["summary"]["status"], "completed");
    // Events are the wire JSON, as stored (less the engine's own `jobSeq`).
    let read = |p: PathBuf| {
        perstack_view(serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
    };
    let stored: Vec<Value> = j.event_paths(&j.single).into_iter().map(read).collect();
    for e in events(&doc) {
        assert!(stored.contains(e), "{e}");
    }
    let pretty = log_ok(j.path(), &["--pretty"]);
    assert!(pretty.starts_with("{\n  \"job\": {"), "{pretty}");
    assert_eq!(serde_json::from_str::<Value>(&pretty).unwrap(), doc);
}

#[test]
fn take_offset_and_context_page_the_matches() {
    let j = jobs();
    let all = j.all(&j.fanout);
    assert!(all.len() > 10);
    let doc = log_json(
        j.path(),
        &["--job", &j.fanout, "--take", "5", "--offset", "3"],
    );
    assert_eq!(ids(events(&doc)), ids(&all[3..8]));
    assert_eq!(doc["summary"]["totalEvents"], 5);
    assert_eq!(doc["summary"]["matchedEvents"], all.len());
    let doc = log_json(j.path(), &["--job", &j.fanout, "--take", "2"]);
    assert_eq!(ids(events(&doc)), ids(&all[..2]));
    let doc = log_json(j.path(), &["--job", &j.fanout, "--offset", "1000"]);
    assert!(events(&doc).is_empty());
    let text = log_ok(j.path(), &["--job", &j.fanout, "--take", "5"]);
    assert!(
        text.contains(&format!("(5 of {} matching events shown", all.len())),
        "{text}"
    );

    // --context 1 around each completeRun: its neighbours from the unfiltered list.
    let doc = log_json(
        j.path(),
        &[
            "--job",
            &j.fanout,
            "--type",
            "completeRun",
            "--context",
            "1",
        ],
    );
    let mut want = std::collections::BTreeSet::new();
    for (i, e) in all.iter().enumerate() {
        if e["type"] == "completeRun" {
            want.extend(i.saturating_sub(1)..=(i + 1).min(all.len() - 1));
        }
    }
    let want: Vec<Value> = want.into_iter().map(|i| all[i].clone()).collect();
    assert_eq!(ids(events(&doc)), ids(&want));
    let text = log_ok(
        j.path(),
        &[
            "--job",
            &j.fanout,
            "--type",
            "completeRun",
            "--context",
            "1",
        ],
    );
    let marked = text.lines().filter(|l| l.starts_with("> ")).count();
    assert_eq!(marked, 3, "matches are marked apart from context: {text}");
}

#[test]
fn summary_counts_types_steps_usage_and_status() {
    let j = jobs();
    let text = log_ok(j.path(), &["--job", &j.fanout, "--summary"]);
    has(
        &text,
        "Summary:|Status: completed|Steps: 1 - 4|Usage: 880 in / 96 out|Duration: ",
    );
    let calls = text
        .lines()
        .find(|l| l.trim_start().starts_with("callTools"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(calls.split_whitespace().last(), Some("4"), "{calls}");
    assert!(!text.contains("result: First"), "no event lines: {text}");
    let doc = log_json(j.path(), &["--job", &j.fanout, "--summary"]);
    assert_eq!(doc["summary"]["eventsByType"]["callTools"], 4);
    assert_eq!(doc["summary"]["eventsByType"]["completeRun"], 3);
    assert_eq!(doc["summary"]["stepRange"]["max"], 4);
    assert_eq!(doc["summary"]["delegationCount"], 2);
}

#[test]
fn help_names_the_command_and_its_options() {
    let out = Command::new(super::common::bin())
        .args(["log", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = stdout(&out);
    let words = "View execution history|--job|--run|--checkpoint|--step|--type|--errors|--tools|\
                 --delegations|--filter|--json|--pretty|--verbose|--take|--offset|--context|\
                 --messages|--summary";
    for word in words.split('|') {
        assert!(help.contains(word), "{word} missing from help:\n{help}");
    }
    let out = Command::new(super::common::bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(stdout(&out).contains("View execution history"));
}

#[test]
fn missing_data_prints_no_data_found_and_exits_0() {
    let empty = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 7] = [
        &[],
        &["--job", "nonexistent-job-id"],
        &["--job", "test-job", "--json"],
        &["--step", "5"],
        &["--type", "callTools"],
        &["--run", "no-such-run"],
        &["--checkpoint", "no-such-checkpoint"],
    ];
    for args in cases {
        let text = log_ok(empty.path(), args);
        assert!(text.starts_with("No data found"), "{args:?}: {text}");
    }
    let j = jobs();
    let text = log_ok(j.path(), &["--job", "nonexistent-job-id"]);
    assert!(text.starts_with("No data found"), "{text}");
    let text = log_ok(j.path(), &["--job", &j.fanout, "--checkpoint", "nope"]);
    assert!(text.starts_with("No data found"), "{text}");
}

#[test]
fn a_corrupt_checkpoint_or_event_is_an_error_naming_the_file() {
    let j = jobs();
    let (cp, _) = j.checkpoint_of(&j.fanout, "child-a");
    let cp_file = j.job_dir(&j.fanout).join(format!("checkpoints/{cp}.json"));
    std::fs::write(&cp_file, "{ not json").unwrap();
    for args in [
        vec!["log", "--checkpoint", cp.as_str()],
        vec!["log", "--job", j.fanout.as_str()],
    ] {
        let out = perstack(j.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("perstack: "), "{err}");
        assert!(err.contains(&format!("{cp}.json")), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // An event file of the latest job.
    let event = j.event_paths(&j.single).remove(0);
    std::fs::write(&event, "[]").unwrap();
    let out = perstack(j.path(), &["log"]);
    assert_eq!(out.status.code(), Some(1));
    let name = event.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
}

#[test]
fn bad_expressions_and_options_exit_2_with_a_clear_message() {
    let j = jobs();
    let cases: [(&[&str], &str); 6] = [
        (&["--step", ">x"], "invalid --step expression \">x\""),
        (&["--step", "5-1"], "start is after its end"),
        (
            &["--filter", "toolName == 1"],
            "invalid --filter expression",
        ),
        (
            &["--filter", ".a == bare"],
            "expected a quoted string, a number, true or false",
        ),
        (&["--messages"], "--checkpoint"),
        (&["--job", "../etc"], "invalid job id"),
    ];
    for (args, want) in cases {
        let mut all = vec!["log"];
        all.extend_from_slice(args);
        let out = perstack(j.path(), &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with("perstack: ") && err.contains(want),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn storage_path_comes_from_the_environment() {
    let j = jobs();
    let elsewhere = tempfile::tempdir().unwrap();
    let storage = j.path().join("perstack");
    let out = Command::new(super::common::bin())
        .args(["log", "--job", &j.fanout])
        .current_dir(elsewhere.path())
        .env("PERSTACK_STORAGE_PATH", &storage)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("Storage: {}", storage.display())),
        "{text}"
    );
    assert!(text.contains(&j.fanout), "{text}");
}

#[test]
fn a_job_without_job_json_is_rebuilt_from_its_checkpoints() {
    // Perstack's CLI never writes job.json; its jobs must still be listed.
    let j = jobs();
    std::fs::remove_file(j.job_dir(&j.fanout).join("job.json")).unwrap();
    let doc = log_json(j.path(), &["--job", &j.fanout]);
    assert_eq!(doc["job"]["id"], j.fanout.as_str());
    assert_eq!(doc["job"]["status"], "completed");
    assert_eq!(doc["job"]["coordinatorExpertKey"], "coordinator");
    assert_eq!(doc["job"]["totalSteps"], 4);
    assert_eq!(doc["job"]["usage"]["inputTokens"], 880);
    assert_eq!(events(&doc).len(), j.event_files(&j.fanout));
}

#[test]
fn at_most_100_events_are_listed_unless_take_says_otherwise() {
    let mut script = String::new();
    for i in 0..25 {
        script.push_str(&format!(
            "[[turns]]\nexpert = \"solo\"\ntoolCalls = [{{ id = \"c{i}\", name = \"healthCheck\" }}]\n"
        ));
    }
    script.push_str("[[turns]]\nexpert = \"solo\"\ntext = \"done\"\n");
    let dir = project(&scripted(SOLO), &script);
    let out = perstack(dir.path(), &["run", "solo", "q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all = events(&log_json(dir.path(), &["--take", "0"])).clone();
    assert!(all.len() > 100, "{}", all.len());
    let doc = log_json(dir.path(), &[]);
    assert_eq!(ids(events(&doc)), ids(&all[..100]));
    assert_eq!(doc["summary"]["matchedEvents"], all.len());
    let text = log_ok(dir.path(), &[]);
    assert!(
        text.contains(&format!("Events (100 of {} matching):", all.len())),
        "{text}"
    );
    // --summary counts everything unless --take is given.
    let doc = log_json(dir.path(), &["--summary"]);
    assert_eq!(doc["summary"]["totalEvents"], all.len());
}
