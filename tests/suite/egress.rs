//! Egress from the sandbox end to end through `perstack run`: the base skill's `exec` runs curl
//! inside the sandbox, where `HTTPS_PROXY`/`HTTP_PROXY` lead to the engine's proxy. An allowed
//! domain (mapped by the test switch to an HTTP server on 127.0.0.1) answers through a tunnel;
//! a domain not in the list gets 403 and a blocked `proxyAccess` event; a direct connection to
//! the same server fails, because the sandbox has no network but the forwarder. Nothing goes
//! beyond 127.0.0.1.

use std::path::Path;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::{self, CountingServer, Finished};

const GREETING: &str = "hello from allowed.test";

/// An HTTP server on 127.0.0.1 answering every request with [`GREETING`]; it counts the
/// connections it accepted and stops when dropped.
async fn target() -> CountingServer {
    CountingServer::start(|mut s: TcpStream| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{GREETING}",
            GREETING.len()
        );
        let _ = s.write_all(reply.as_bytes()).await;
    })
    .await
}

fn curl_installed() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An `exec` call of curl with `args` (bounded by curl's own `--max-time`).
fn curl_call(id: &str, args: &[&str]) -> String {
    let args: Vec<String> = ["-sS", "--max-time", "20"]
        .iter()
        .chain(args)
        .map(|a| format!("{a:?}"))
        .collect();
    format!(
        r#"{{ id = "{id}", name = "exec", args = {{ command = "curl", args = [{}], env = {{}}, cwd = ".", stdout = true, stderr = true }} }}"#,
        args.join(", ")
    )
}

fn run(dir: &Path, env: Vec<(String, String)>) -> Finished {
    let mut cmd = common::perstack(dir, &["run", "worker", "go"]);
    cmd.envs(env);
    Finished::of(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_exec_reaches_an_allowed_domain_through_the_proxy_and_nothing_else() {
    if !curl_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "curl is not installed: .ci/run installs it, and CI must not skip this test"
        );
        eprintln!("curl is not installed: skipping");
        return;
    }
    let target = target().await;
    let port = target.port.to_string();
    let direct = format!("http://127.0.0.1:{port}/");
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
[experts."worker"]
instruction = "Fetch."

[experts."worker".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["exec", "attemptCompletion"]
allowedDomains = ["allowed.test"]
"#;
    let script = format!(
        r#"
[[turns]]
expert = "worker"
toolCalls = [
  {},
  {},
  {},
]
[[turns]]
expert = "worker"
toolCalls = [{{ id = "done", name = "attemptCompletion" }}]
[[turns]]
expert = "worker"
text = "Fetched."
"#,
        // `-p`: tunnel through the proxy with CONNECT even for http:// (the target speaks
        // plain HTTP behind the tunnel, so no certificate is involved).
        curl_call("allowed", &["-p", "http://allowed.test:443/"]),
        curl_call("blocked", &["-p", "http://evil.test:443/"]),
        curl_call("direct", &["--noproxy", "*", &direct]),
    );
    common::write_project(dir.path(), &common::scripted(toml), &script);
    let env = vec![(
        "PERSTACK_EGRESS_TEST_LOOPBACK".to_owned(),
        format!("allowed.test={port},evil.test={port}"),
    )];
    let path = dir.path().to_owned();
    let done = tokio::task::spawn_blocking(move || run(&path, env))
        .await
        .unwrap();
    assert_eq!(done.code, 0, "{}", done.stderr);

    let r = common::tool_results(&done.events);
    let get = |id: &str| {
        r.iter()
            .find(|(i, _)| i == id)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    };
    assert!(get("allowed").contains(GREETING), "{r:?}");
    assert!(!get("blocked").contains(GREETING), "{r:?}");
    assert!(get("blocked").contains("403"), "{r:?}");
    assert!(!get("direct").contains(GREETING), "{r:?}");
    // Only the tunnel reached the server: the blocked and the direct attempt never did.
    assert_eq!(target.accepted.load(Ordering::SeqCst), 1);

    let access: Vec<(String, String, u64, Option<String>)> = done
        .events
        .iter()
        .filter(|e| e["type"] == "proxyAccess")
        .map(|e| {
            assert!(e["jobId"].is_string() && e["runId"].is_string() && e["id"].is_string());
            assert!(e.get("stepNumber").is_none() && e.get("expertKey").is_none());
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["domain"].as_str().unwrap_or_default().to_owned(),
                e["port"].as_u64().unwrap_or_default(),
                e["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert!(
        access.contains(&("allowed".into(), "allowed.test".into(), 443, None)),
        "{access:?}"
    );
    assert!(
        access.contains(&(
            "blocked".into(),
            "evil.test".into(),
            443,
            Some("Domain not in allowlist".into())
        )),
        "{access:?}"
    );
    assert_eq!(access.len(), 2, "{access:?}");
}
