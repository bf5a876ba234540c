//! The `perstack` binary end to end: the example Expert trees, exit codes, files on disk,
//! configuration errors and signals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::common::{STATE_KINDS, bin, experts, perstack, scripted, write_project};

fn run_in(dir: &Path, args: &[&str]) -> Output {
    perstack(dir, args).output().expect("spawn perstack")
}

fn events(out: &Output) -> Vec<Value> {
    super::common::events(&out.stdout)
}

/// `type@step` of the state events of each run segment, segments in order of first event.
fn segments(events: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
    for e in events {
        let kind = e["type"].as_str().unwrap_or_default();
        if !STATE_KINDS.contains(&kind) {
            continue;
        }
        let run = e["runId"].as_str().unwrap_or_default().to_string();
        let item = format!("{kind}@{}", e["stepNumber"]);
        match out.iter_mut().find(|(r, _, _)| *r == run) {
            Some((_, _, v)) => v.push(item),
            None => out.push((
                run,
                e["expertKey"].as_str().unwrap_or_default().to_string(),
                vec![item],
            )),
        }
    }
    out.into_iter().map(|(_, k, v)| (k, v)).collect()
}

#[test]
fn fanout_follows_the_recorded_parallel_delegation_and_leaves_parseable_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &[
            "run",
            "--config",
            experts("fanout").to_str().unwrap(),
            "coordinator",
            "hello",
        ],
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&out);
    let segs = segments(&evs);
    let want = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // The coordinator's first segment is exactly s05's.
    assert_eq!(segs[0].0, "coordinator");
    assert_eq!(
        segs[0].1,
        want(&[
            "startRun@1",
            "startGeneration@1",
            "callTools@1",
            "callDelegate@1",
            "stopRunByDelegate@1"
        ])
    );
    // Both children start at the parent's step + 1 and complete.
    let mut children: Vec<_> = segs[1..3].to_vec();
    children.sort();
    for (i, key) in ["child-a", "child-b"].iter().enumerate() {
        assert_eq!(children[i].0, *key);
        assert_eq!(
            children[i].1,
            want(&[
                "startRun@2",
                "startGeneration@2",
                "callTools@2",
                "attemptCompletion@2",
                "completeRun@2"
            ])
        );
    }
    // The coordinator resumes as a new segment at the children's last step + 1, as in s05.
    assert_eq!(segs[3].0, "coordinator");
    assert_eq!(
        segs[3].1,
        want(&[
            "startRun@3",
            "finishAllToolCalls@3",
            "continueToNextStep@3",
            "startGeneration@4",
            "callTools@4",
            "attemptCompletion@4",
            "completeRun@4"
        ])
    );
    assert_eq!(segs.len(), 4);
    // Every line is one complete event; the resumed startRun starts from stoppedByDelegate.
    let resumed = evs
        .iter()
        .filter(|e| e["type"] == "startRun")
        .nth(3)
        .unwrap();
    assert_eq!(resumed["initialCheckpoint"]["status"], "stoppedByDelegate");
    assert_eq!(
        resumed["initialCheckpoint"]["partialToolResults"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Files: job.json, run-setting.json, checkpoints and events, all parseable.
    let jobs = dir.path().join("perstack/jobs");
    let job_dir = std::fs::read_dir(&jobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let job: Value =
        serde_json::from_str(&std::fs::read_to_string(job_dir.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["status"], "completed");
    assert_eq!(job["totalSteps"], 4);
    assert_eq!(job["coordinatorExpertKey"], "coordinator");
    let checkpoints: Vec<_> = std::fs::read_dir(job_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // One per step end: coordinator step 1, two children, coordinator steps 3 and 4.
    assert_eq!(checkpoints.len(), 5, "{checkpoints:?}");
    for c in &checkpoints {
        let cp: perstack::schema::Checkpoint =
            serde_json::from_str(&std::fs::read_to_string(c).unwrap()).unwrap();
        assert!(!cp.messages.is_empty());
    }
    let mut settings = 0;
    let mut event_files = 0;
    for run in std::fs::read_dir(job_dir.join("runs")).unwrap() {
        for f in std::fs::read_dir(run.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name == "run-setting.json" {
                settings += 1;
                assert!(!text.contains("apiKey"));
                let _: perstack::schema::RunSetting = serde_json::from_str(&text).unwrap();
            } else {
                assert!(name.starts_with("event-"), "{name}");
                let _: perstack::schema::Event = serde_json::from_str(&text).unwrap();
                event_files += 1;
            }
        }
    }
    assert_eq!(settings, 4, "one run-setting.json per run segment");
    assert!(event_files >= 20, "{event_files}");
}

#[test]
fn the_single_and_chain_examples_complete() {
    for (tree, expert, last) in [
        ("single", "assistant", "completeRun@2"),
        ("chain", "chain", "completeRun@7"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = run_in(
            dir.path(),
            &[
                "run",
                "--config",
                experts(tree).to_str().unwrap(),
                expert,
                "go",
            ],
        );
        assert!(
            out.status.success(),
            "{tree}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let segs = segments(&events(&out));
        assert_eq!(segs.last().unwrap().1.last().unwrap(), last, "{tree}");
    }
}

fn write_config(dir: &Path, toml: &str, script: &str) -> PathBuf {
    write_project(dir, toml, script)
}

fn one_expert() -> String {
    scripted(super::common::SOLO)
}

#[test]
fn a_malformed_perstack_toml_fails_with_exit_code_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "[experts.\"solo\"]\ninstruction = \"x\"\nmaxStep = 3\n",
        "",
    );
    let out = run_in(dir.path(), &["run", "solo", "q"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("perstack.toml") && err.contains(":3"), "{err}");
    assert!(out.stdout.is_empty(), "nothing may run");

    std::fs::write(
        dir.path().join("perstack.toml"),
        "[experts.\"solo\"\ninstruction = 1",
    )
    .unwrap();
    let out = run_in(dir.path(), &["run", "solo", "q"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_delegate_fails_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "{}delegates = [\"helpr\"]\n[experts.\"helper\"]\ninstruction = \"h\"\n",
            one_expert()
        ),
        "",
    );
    let out = run_in(dir.path(), &["run", "solo", "q"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("helpr") && err.contains("helper"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unknown_expert_and_a_missing_config_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &one_expert(), "");
    let out = run_in(dir.path(), &["run", "sol", "q"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean \"solo\""));
    let out = run_in(
        dir.path(),
        &["run", "--config", "nonexistent.toml", "solo", "q"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonexistent.toml"));
}

#[test]
fn a_run_that_stops_by_error_exits_1_with_a_stored_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &one_expert(),
        "[[turns]]\nexpert = \"solo\"\nerror = { status = 401, message = \"invalid x-api-key\" }\n",
    );
    let out = run_in(dir.path(), &["run", "solo", "q"]);
    assert_eq!(out.status.code(), Some(1));
    let evs = events(&out);
    let stop = evs
        .iter()
        .find(|e| e["type"] == "stopRunByError")
        .expect("stopRunByError");
    assert_eq!(stop["error"]["statusCode"], 401);
    assert_eq!(stop["checkpoint"]["error"]["message"], "invalid x-api-key");
    let job_dir = std::fs::read_dir(dir.path().join("perstack/jobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read_dir(job_dir.join("checkpoints"))
            .unwrap()
            .count(),
        1
    );
}

/// Diagnostics redirected to a file (not a terminal) carry no ANSI escape codes: before, the
/// level of every warning came wrapped in colour codes that landed in log files.
#[test]
fn a_warning_written_to_a_redirected_stderr_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!("runtime = \"cursor\"\n{}", one_expert()),
        "[[turns]]\nexpert = \"solo\"\ntext = \"done\"\n",
    );
    let log = dir.path().join("stderr.log");
    let status = Command::new(bin())
        .args(["run", "solo", "q"])
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .expect("spawn perstack");
    assert!(status.code().is_some());
    let err = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&err);
    assert!(
        text.contains("WARN") && text.contains("runtime \"cursor\""),
        "{text}"
    );
    assert!(
        !err.contains(&0x1b),
        "ESC byte in redirected stderr: {text:?}"
    );
}

#[test]
fn help_and_version_work() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("perstack "));
    let out = Command::new(bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "expertKey",
        "query",
        "--config",
        "--max-steps",
        "--reasoning-budget",
        "--job-id",
        "--env-path",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
}

#[cfg(unix)]
/// The lines of a child's stdout (each with its `\n`) as they come, read by a thread of their
/// own; the channel ends with the stream.
fn lines_as_they_come(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (lines, received) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut stdout = std::io::BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match std::io::BufRead::read_until(&mut stdout, b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if lines.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    received
}

/// A script for `one_expert`: a `healthCheck` tool step (its checkpoint stored, then
/// `continueToNextStep`), then the answer `text` after `delay_ms`.
fn a_tool_step_then(delay_ms: u64, text: &str) -> String {
    format!(
        r#"
[[turns]]
expert = "solo"
toolCalls = [{{ id = "c1", name = "healthCheck" }}]
[[turns]]
expert = "solo"
delayMs = {delay_ms}
text = "{text}"
"#
    )
}

#[test]
fn sigterm_cancels_every_run_and_ends_with_a_terminal_event_and_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &one_expert(),
        &a_tool_step_then(60000, "too late"),
    );
    let mut child = Command::new(bin())
        .args(["run", "solo", "q"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stdout, line by line as it comes: the test waits on lines (real signals), each wait
    // bounded.
    let received = lines_as_they_come(child.stdout.take().unwrap());
    let limit = Duration::from_secs(30);
    let mut seen: Vec<u8> = Vec::new();
    // The first step's end is announced after its checkpoint is stored; then signal.
    loop {
        let line = received
            .recv_timeout(limit)
            .expect("first step never finished");
        seen.extend_from_slice(&line);
        if String::from_utf8_lossy(&line).contains("\"continueToNextStep\"") {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    // Everything up to the end of stdout (the process closes it when it exits).
    loop {
        match received.recv_timeout(limit) {
            Ok(line) => seen.extend_from_slice(&line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("did not stop after SIGTERM");
            }
        }
    }
    let mut out = child.wait_with_output().unwrap();
    out.stdout = seen;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with('\n'), "stdout must end on a complete line");
    let evs = events(&out);
    let stop = evs
        .iter()
        .find(|e| e["type"] == "stopRunByError")
        .expect("terminal event");
    assert_eq!(stop["error"]["name"], "Cancelled");
    let job_dir = std::fs::read_dir(dir.path().join("perstack/jobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let job: Value =
        serde_json::from_str(&std::fs::read_to_string(job_dir.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["status"], "stoppedByError");
    let stored: Vec<perstack::schema::Checkpoint> = std::fs::read_dir(job_dir.join("checkpoints"))
        .unwrap()
        .map(|f| {
            serde_json::from_str(&std::fs::read_to_string(f.unwrap().path()).unwrap()).unwrap()
        })
        .collect();
    assert!(
        stored
            .iter()
            .any(|c| c.status == perstack::schema::CheckpointStatus::StoppedByError)
    );
}

/// Stdout that is a pipe gets a 1 MiB kernel buffer (or the most the system allows an
/// unprivileged process), so that the bus's writes of up to a few hundred KiB wake the reader
/// less often; the lines are the same.
#[test]
fn stdout_as_a_pipe_is_widened_to_1_mib_and_carries_every_line() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &one_expert(), &a_tool_step_then(300, "done"));
    let mut child = perstack(dir.path(), &["run", "solo", "q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let probe = std::os::fd::AsFd::as_fd(&stdout)
        .try_clone_to_owned()
        .unwrap();
    let received = lines_as_they_come(stdout);
    let limit = Duration::from_secs(30);
    let first = received.recv_timeout(limit).expect("no first line");
    let size = nix::fcntl::fcntl(&probe, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
    let max: i32 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        size,
        max.min(1 << 20),
        "the pipe's buffer while the job runs"
    );
    let mut all = vec![first];
    while let Ok(line) = received.recv_timeout(limit) {
        all.push(line);
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let events: Vec<Value> = all
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert!(events.iter().any(|e| e["type"] == "completeRun"), "{all:?}");
}
