//! Tamper-evident history (issue 15, items 2 and 4): `perstack log --verify` names every kind
//! of tampering, tells a crash cut from it, reports a job without a chain as unchained, and an
//! audit export verifies in a fresh directory but not after one byte changes or a re-signing; a
//! job killed with SIGKILL mid-run verifies as cut or intact, never as tampered.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::common::{bin, experts};

/// A finished fanout job in a temp dir, its key in `<dir>/config`.
struct Job {
    dir: tempfile::TempDir,
    id: String,
}

impl Job {
    fn run() -> Job {
        let dir = tempfile::tempdir().unwrap();
        let config = experts("fanout");
        let out = cmd(dir.path(), &dir.path().join("config"))
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "coordinator",
                "hello",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = fs::read_dir(dir.path().join("perstack/jobs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name()
            .into_string()
            .unwrap();
        Job { dir, id }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("perstack/jobs").join(&self.id)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// `perstack log --verify <extra>` with this job's key; exit code and stdout.
    fn verify(&self, extra: &[&str]) -> (i32, String) {
        let mut c = cmd(self.dir.path(), &self.config());
        c.args(["log", "--verify"]).args(extra);
        output(c)
    }

    /// Relative paths of the job's event files, sorted.
    fn events(&self) -> Vec<String> {
        let mut v = Vec::new();
        for run in fs::read_dir(self.path().join("runs")).unwrap() {
            let run = run.unwrap();
            for f in fs::read_dir(run.path()).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                if name.starts_with("event-") {
                    v.push(format!(
                        "runs/{}/{name}",
                        run.file_name().into_string().unwrap()
                    ));
                }
            }
        }
        v.sort();
        v
    }

    fn checkpoints(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path().join("checkpoints"))
            .unwrap()
            .map(|e| {
                format!(
                    "checkpoints/{}",
                    e.unwrap().file_name().into_string().unwrap()
                )
            })
            .collect();
        v.sort();
        v
    }
}

fn cmd(cwd: &Path, config: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(cwd)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("PERSTACK_STORAGE_PATH");
    c
}

fn output(mut c: Command) -> (i32, String) {
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        stdout + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_finished_job_verifies_intact_and_its_runtime_events_are_in_the_chained_side_log() {
    let job = Job::run();
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("job {}: intact (", job.id)), "{out}");
    assert!(!out.contains("cut"), "{out}");
    let side = fs::read_to_string(job.path().join("audit/runtime.jsonl")).unwrap();
    assert!(side.contains("\"type\":\"initializeRuntime\""), "{side}");
    // Perstack's readers still see only their files: every event file parses as JSON.
    for e in job.events() {
        serde_json::from_slice::<Value>(&fs::read(job.path().join(e)).unwrap()).unwrap();
    }
}

#[test]
fn a_byte_edited_in_a_checkpoint_is_named_as_changed() {
    let job = Job::run();
    let cp = job.checkpoints()[0].clone();
    let path = job.path().join(&cp);
    let mut bytes = fs::read(&path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
    fs::write(&path, bytes).unwrap();
    let (code, out) = job.verify(&["--job", &job.id]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("changed: {cp}")), "{out}");
    assert!(out.contains("TAMPERED"), "{out}");
}

#[test]
fn a_deleted_event_file_is_named_as_removed() {
    let job = Job::run();
    let event = job.events()[3].clone();
    fs::remove_file(job.path().join(&event)).unwrap();
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("removed: {event}")), "{out}");
}

#[test]
fn an_added_event_file_is_named_as_added() {
    let job = Job::run();
    let event = job.events()[0].clone();
    let mut v: Value = serde_json::from_slice(&fs::read(job.path().join(&event)).unwrap()).unwrap();
    v["id"] = Value::from("forged");
    let run_dir = job.path().join(Path::new(&event).parent().unwrap());
    let added = run_dir.join("event-1000-1-callTools.json");
    fs::write(&added, serde_json::to_vec(&v).unwrap()).unwrap();
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 1, "{out}");
    let rel = added
        .strip_prefix(job.path())
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(out.contains(&format!("added: {rel}")), "{out}");
}

#[test]
fn two_swapped_event_files_are_named_as_reordered() {
    let job = Job::run();
    let events = job.events();
    let (a, b) = (&events[1], &events[2]);
    let (pa, pb) = (job.path().join(a), job.path().join(b));
    let tmp = job.path().join("swap");
    fs::rename(&pa, &tmp).unwrap();
    fs::rename(&pb, &pa).unwrap();
    fs::rename(&tmp, &pb).unwrap();
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("reordered: {a} holds what was written as {b}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("reordered: {b} holds what was written as {a}")),
        "{out}"
    );
}

#[test]
fn an_edited_runtime_event_in_the_side_log_is_named() {
    let job = Job::run();
    let path = job.path().join("audit/runtime.jsonl");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        text.replacen("initializeRuntime", "initializeRuntimX", 1),
    )
    .unwrap();
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("changed: audit/runtime.jsonl#0"), "{out}");
}

/// The chain as a crash leaves it when the last fsync covered only its first `keep` lines
/// (and the next record was half written): what follows is lost, the files stay.
fn cut_chain(job: &Job, keep: usize) {
    let path = job.path().join("audit/chain.jsonl");
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut cut: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
    cut.push_str(&lines[keep][..10]);
    fs::write(&path, cut).unwrap();
}

#[test]
fn a_crash_between_files_and_their_chain_records_is_a_cut_not_tampering() {
    let job = Job::run();
    let text = fs::read_to_string(job.path().join("audit/chain.jsonl")).unwrap();
    // Keep the chain up to a head in the middle of the job.
    let heads: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("\"kind\":\"head\""))
        .map(|(i, _)| i)
        .collect();
    assert!(heads.len() >= 3, "{text}");
    cut_chain(&job, heads[heads.len() / 2] + 1);
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact, cut by a crash"), "{out}");
    assert!(out.contains("cut by a crash (not tampering)"), "{out}");
    assert!(out.contains("job.json"), "{out}");
    assert!(!out.contains("TAMPERED"), "{out}");

    // Continuing the job adopts what the crash left unrecorded: a `recovered` record.
    let config = experts("fanout");
    let out = cmd(job.dir.path(), &job.config())
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--continue-job",
            &job.id,
            "coordinator",
            "again",
        ])
        .output()
        .unwrap();
    // The script has no turn for the new query: the run stops by error (exit 1), after
    // writing its run setting, events, a checkpoint and the final job.json.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("recovered after a crash"), "{out}");
    assert!(out.contains(&format!("job {}: intact (", job.id)), "{out}");
}

#[test]
fn a_job_written_without_a_chain_is_unchained_not_tampered() {
    let job = Job::run();
    // The layout Perstack writes: its files, no audit directory.
    fs::remove_dir_all(job.path().join("audit")).unwrap();
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unchained"), "{out}");
}

/// Signs every head of `chain` again with `key` and relinks the records after them.
fn re_sign(job_id: &str, chain: &str, key: &SigningKey) -> String {
    let mut out = String::new();
    let mut prev = "0".repeat(64);
    for line in chain.lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        v["prev"] = Value::from(prev.clone());
        if v["kind"] == "head" {
            let message = format!("perstack-chain-v1\n{job_id}\n{}\n{prev}", v["n"]);
            v["key"] = Value::from(hex(key.verifying_key().as_bytes()));
            v["sig"] = Value::from(hex(&key.sign(message.as_bytes()).to_bytes()));
        }
        let line = serde_json::to_string(&v).unwrap();
        prev = hex(&Sha256::digest(line.as_bytes()));
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_chain_re_signed_with_another_key_is_refused() {
    let job = Job::run();
    let path = job.path().join("audit/chain.jsonl");
    let chain = fs::read_to_string(&path).unwrap();
    // Sanity: re-signing with the same key yields an intact chain, so the check below is
    // about the key, not about the re-signing.
    let own = fs::read_to_string(job.config().join("perstack/chain-signing-key")).unwrap();
    let mut secret = [0u8; 32];
    for (i, b) in secret.iter_mut().enumerate() {
        *b = u8::from_str_radix(&own.trim()[2 * i..2 * i + 2], 16).unwrap();
    }
    fs::write(
        &path,
        re_sign(&job.id, &chain, &SigningKey::from_bytes(&secret)),
    )
    .unwrap();
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 0, "{out}");

    fs::write(
        &path,
        re_sign(&job.id, &chain, &SigningKey::from_bytes(&[7; 32])),
    )
    .unwrap();
    let (code, out) = job.verify(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not by the trusted key"), "{out}");
}

#[test]
fn an_export_verifies_in_a_fresh_directory_and_fails_after_one_byte_changes() {
    let job = Job::run();
    let archive = job.dir.path().join("job.audit.json");
    let mut c = cmd(job.dir.path(), &job.config());
    c.args([
        "log",
        "--job",
        &job.id,
        "--export",
        archive.to_str().unwrap(),
    ]);
    let (code, out) = output(c);
    assert_eq!(code, 0, "{out}");
    let public = fs::read_to_string(&archive).unwrap();
    let key: Value = serde_json::from_str(&public).unwrap();
    let key = key["publicKey"].as_str().unwrap().to_owned();
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("a.json");
    fs::copy(&archive, &copy).unwrap();
    let verify = |extra: &[&str]| {
        let mut c = cmd(elsewhere.path(), &elsewhere.path().join("no-config"));
        c.args(["log", "--verify", copy.to_str().unwrap()])
            .args(extra);
        output(c)
    };
    let (code, out) = verify(&["--key", &key]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("job {}: intact (", job.id)), "{out}");

    // One byte of one file's content changed (decoded, edited, encoded again).
    let mut v: Value = serde_json::from_str(&public).unwrap();
    let files = v["files"].as_object_mut().unwrap();
    let (name, content) = files
        .iter_mut()
        .find(|(k, _)| k.starts_with("checkpoints/"))
        .unwrap();
    let name = name.clone();
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(content.as_str().unwrap())
        .unwrap();
    bytes[10] ^= 1;
    *content = Value::from(base64::engine::general_purpose::STANDARD.encode(bytes));
    fs::write(&copy, serde_json::to_vec(&v).unwrap()).unwrap();
    let (code, out) = verify(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("changed: {name}")), "{out}");

    // One raw byte of the archive changed.
    let mut raw = public.clone().into_bytes();
    let i = raw.len() / 2;
    raw[i] = if raw[i] == b'A' { b'B' } else { b'A' };
    fs::write(&copy, raw).unwrap();
    let (code, out) = verify(&[]);
    assert_eq!(code, 1, "{out}");

    // Re-signed with another key: refused against the signer's key.
    let mut v: Value = serde_json::from_str(&public).unwrap();
    let chain = base64::engine::general_purpose::STANDARD
        .decode(v["chain"].as_str().unwrap())
        .unwrap();
    let other = SigningKey::from_bytes(&[9; 32]);
    let resigned = re_sign(&job.id, std::str::from_utf8(&chain).unwrap(), &other);
    v["chain"] = Value::from(base64::engine::general_purpose::STANDARD.encode(resigned));
    v["publicKey"] = Value::from(hex(other.verifying_key().as_bytes()));
    fs::write(&copy, serde_json::to_vec(&v).unwrap()).unwrap();
    let (code, out) = verify(&["--key", &key]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not by the trusted key"), "{out}");
}

/// Run a job whose second generation takes 10 minutes, `kill -9` it once stdout shows an event
/// of type `after`, and return the job's directory (the process is gone).
fn killed_after(after: &str) -> Job {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let script = r#"
[[turns]]
expert = "slow"
toolCalls = [{ id = "call_health", name = "healthCheck" }]

[[turns]]
expert = "slow"
delayMs = 600000
text = "never reached"
"#;
    let toml = format!(
        r#"{}
[experts."slow"]
instruction = "Check, then answer slowly."

[experts."slow".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["healthCheck", "attemptCompletion"]
"#,
        super::common::SCRIPTED
    );
    let config = super::common::write_project(dir.path(), &toml, script);
    let id = format!("killed-after-{after}");
    let mut child = cmd(dir.path(), &dir.path().join("config"))
        .args(["run", "--config", config.to_str().unwrap(), "slow", "go"])
        .args(["--job-id", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let seen = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(&format!("\"type\":\"{after}\"")) => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(seen, "no {after} event within 60 s");
    Job { dir, id }
}

#[test]
fn a_job_killed_with_sigkill_mid_run_verifies_as_cut_or_intact_never_as_tampered() {
    // At the first event (writes in flight), after a tool step, and while the model call of
    // the next step is pending.
    for after in ["startRun", "callTools", "continueToNextStep"] {
        let job = killed_after(after);
        assert!(
            job.path().join("audit/chain.jsonl").exists(),
            "{after}: the chain was started"
        );
        let (code, out) = job.verify(&["--job", &job.id]);
        assert_eq!(code, 0, "{after}: {out}");
        assert!(
            out.contains(&format!("job {}: intact", job.id)),
            "{after}: a killed job is intact (possibly cut): {out}"
        );
        for tampering in ["TAMPERED", "changed:", "removed:", "added:", "reordered"] {
            assert!(!out.contains(tampering), "{after}: {tampering} in {out}");
        }
        // What was recorded before the kill replays identically; the replay says where the
        // recording ends.
        let mut replay = cmd(job.dir.path(), &job.config());
        replay.args(["replay", &job.id]);
        let (code, out) = output(replay);
        assert_eq!(code, 0, "{after}: {out}");
        assert!(
            out.contains("the recording ends mid-run in 1 run(s)"),
            "{after}: {out}"
        );
    }
}
