//! `exec` through the rmcp client (RELIABILITY.md check 27): result shapes, no shell, the
//! working directory check, the filtered environment, the timeout killing the whole process
//! group, and the output cap.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Fixture, symlink};

/// `exec` arguments with Perstack's required fields filled in.
fn exec(command: &str, args: &[&str]) -> Value {
    json!({
        "command": command,
        "args": args,
        "env": {},
        "cwd": ".",
        "stdout": true,
        "stderr": true
    })
}

fn with(mut args: Value, key: &str, value: Value) -> Value {
    args[key] = value;
    args
}

#[tokio::test]
async fn exec_answers_output_or_perstacks_no_output_sentence() {
    let f = Fixture::new().await;
    assert_eq!(
        f.text("exec", exec("echo", &["hello", "world"])).await,
        r#"{"output":"hello world\n"}"#
    );
    assert_eq!(
        f.text(
            "exec",
            with(exec("echo", &["hidden"]), "stdout", json!(false))
        )
        .await,
        r#"{"output":"Command executed successfully, but produced no output."}"#
    );
    assert_eq!(
        f.call("exec", exec("sh", &["-c", "echo out; echo err >&2"]))
            .await,
        json!({"output": "out\nerr\n"})
    );
    assert_eq!(
        f.call(
            "exec",
            with(
                exec("sh", &["-c", "echo out; echo err >&2"]),
                "stdout",
                json!(false)
            )
        )
        .await,
        json!({"output": "err\n"})
    );
    // Only `command` is really needed; the rest defaults.
    assert_eq!(
        f.call("exec", json!({"command": "pwd"})).await,
        json!({"output": format!("{}\n", f.root.display())})
    );
}

#[tokio::test]
async fn a_failing_command_answers_error_stdout_and_stderr() {
    let f = Fixture::new().await;
    let v = f
        .call(
            "exec",
            exec("sh", &["-c", "echo out; echo err >&2; exit 3"]),
        )
        .await;
    assert_eq!(
        v,
        json!({
            "error": "Command failed with exit code 3: sh -c echo out; echo err >&2; exit 3",
            "stdout": "out\n",
            "stderr": "err\n"
        })
    );
    let v = f
        .call(
            "exec",
            with(
                exec("sh", &["-c", "echo err >&2; exit 1"]),
                "stderr",
                json!(false),
            ),
        )
        .await;
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    let v = f.call("exec", exec("no-such-command-xyz", &[])).await;
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("Failed to run no-such-command-xyz"),
        "{v}"
    );
}

#[tokio::test]
async fn shell_metacharacters_reach_argv_literally() {
    let f = Fixture::new().await;
    let victim = f.write("x", "still here");
    assert_eq!(
        f.call(
            "exec",
            exec("echo", &["a; rm -rf x", "$(rm x)", "`rm x`", "*"])
        )
        .await,
        json!({"output": "a; rm -rf x $(rm x) `rm x` *\n"})
    );
    assert!(victim.exists());
}

#[tokio::test]
async fn the_working_directory_must_be_inside_the_workspace() {
    let f = Fixture::new().await;
    std::fs::create_dir(f.at("sub")).unwrap();
    assert_eq!(
        f.call("exec", with(exec("pwd", &[]), "cwd", json!("sub")))
            .await,
        json!({"output": format!("{}\n", f.at("sub").display())})
    );
    let outside = f.outside.display().to_string();
    symlink(&f.outside, &f.at("out-link"));
    for cwd in [
        "..",
        "/",
        "/tmp",
        outside.as_str(),
        "~",
        "out-link",
        "sub/../..",
    ] {
        f.refused(
            "exec",
            with(exec("pwd", &[]), "cwd", json!(cwd)),
            "Access denied",
        )
        .await;
    }
    f.write("perstack/x", "");
    f.refused(
        "exec",
        with(exec("pwd", &[]), "cwd", json!("Perstack")),
        "perstack directory is not allowed",
    )
    .await;
    f.refused(
        "exec",
        with(exec("pwd", &[]), "cwd", json!("missing")),
        "Directory missing does not exist.",
    )
    .await;
    f.write("file", "");
    f.refused(
        "exec",
        with(exec("pwd", &[]), "cwd", json!("file")),
        "not a directory",
    )
    .await;
}

#[tokio::test]
async fn the_environment_is_the_safe_base_plus_unprotected_additions() {
    let f = Fixture::with_env(BTreeMap::from([
        ("SECRET_TOKEN".to_owned(), "c4n4ry1".to_owned()),
        ("TERM".to_owned(), "xterm-test".to_owned()),
    ]))
    .await;
    let env = json!({
        "MY_VAR": "mine",
        "PATH": "/evil",
        "Path": "/evil",
        "pAtH": "/evil",
        "HOME": "/evil",
        "LD_PRELOAD": "/evil.so",
        "ld_audit": "/evil.so",
        "NODE_OPTIONS": "--require /evil.js",
        "PYTHONPATH": "/evil",
        "BASH_ENV": "/evil.sh",
        "DYLD_INSERT_LIBRARIES": "/evil.dylib"
    });
    let v = f.call("exec", with(exec("env", &[]), "env", env)).await;
    let output = v["output"].as_str().unwrap();
    let mut names: Vec<_> = output
        .lines()
        .map(|l| l.split('=').next().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["HOME", "MY_VAR", "PATH", "TERM"], "{output}");
    assert!(
        !output.contains("c4n4ry1") && !output.contains("evil"),
        "{output}"
    );
    assert!(output.contains(&format!("HOME={}", f.outside.display())));
    assert!(output.contains("TERM=xterm-test"));
}

#[tokio::test]
async fn the_process_environment_does_not_leak_by_default() {
    // `BaseSkill::new` keeps only the safe variables of this process (cargo sets CARGO_* for
    // the test binary, which must not reach the command).
    let f = Fixture::new().await;
    let output = f.call("exec", exec("env", &[])).await["output"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!output.contains("CARGO"), "{output}");
}

#[tokio::test]
async fn a_timeout_kills_the_command_and_everything_it_started() {
    let f = Fixture::new().await;
    let started = Instant::now();
    let v = f
        .call("exec", with(exec("sleep", &["30"]), "timeout", json!(500)))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(v, json!({"error": "Command timed out after 500ms."}));

    // A background child keeps the pipes open; the whole group goes when time is up.
    let script = "sleep 30 & echo $! > bg.pid; echo started; wait";
    let started = Instant::now();
    let v = f
        .call(
            "exec",
            with(exec("sh", &["-c", script]), "timeout", json!(500)),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        v,
        json!({"error": "Command timed out after 500ms.", "stdout": "started\n"})
    );
    let pid = std::fs::read_to_string(f.at("bg.pid")).unwrap();
    assert!(
        process_gone(pid.trim()).await,
        "background sleep {pid} survived"
    );
}

/// Whether process `pid` is gone (or a zombie awaiting its new parent), within 2 s.
async fn process_gone(pid: &str) -> bool {
    for _ in 0..40 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                return true;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    false
}

#[tokio::test]
async fn output_beyond_ten_megabytes_stops_the_command_and_is_truncated() {
    let f = Fixture::new().await;
    let started = Instant::now();
    let v = f.call("exec", exec("yes", &[])).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("exceeded 10485760 bytes"), "{error}");
    let stdout = v["stdout"].as_str().unwrap();
    assert_eq!(stdout.len(), 10 * 1024 * 1024);
    assert!(stdout.starts_with("y\ny\n"));
    // Both streams share the cap.
    let v = f
        .call(
            "exec",
            exec(
                "sh",
                &["-c", "yes | head -c 6000000; yes | head -c 6000000 >&2"],
            ),
        )
        .await;
    let kept = v["stdout"].as_str().map_or(0, str::len) + v["stderr"].as_str().map_or(0, str::len);
    assert_eq!(kept, 10 * 1024 * 1024, "{}", v["error"]);
}
