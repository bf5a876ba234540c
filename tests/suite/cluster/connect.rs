//! Connecting to a `nats-server` that asks for credentials: user and password, a token, TLS
//! with a CA and server certificate made here (the `openssl` command), and a credentials file
//! (JWT and NKey seed) on a server in operator mode whose JWTs are made here. A job runs through
//! each, submitter and worker alike; wrong credentials exit 2 with a clear message that never
//! holds the secret. And a worker started while the server's JetStream is not ready: it
//! waits for it, and gives up after `--ready-timeout-ms`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::harness::{self, SERIAL, Worker, cli, script, toml};
use crate::suite::common::{self, Finished, NatsServer};

/// A job submitted with `options` runs on a worker started with the same `options`.
async fn a_job_runs_through(url: &str, project: &Path, n: usize, options: &[&str], secret: &str) {
    let work = project.join("work");
    let worker = Worker::start_with(url, project, &work, n, &[], options);
    let run = completes_on(url, project, options, &format!("through-{n}"), &worker).await;
    assert!(!run.stderr.contains(secret) && !worker.stderr().contains(secret));
}

/// `perstack run --nats url <options> --job-id <job_id> coordinator q`, which must exit 0 with
/// the coordinator's `completeRun` (run by `worker`, whose log a failure shows).
async fn completes_on(
    url: &str,
    project: &Path,
    options: &[&str],
    job_id: &str,
    worker: &Worker,
) -> Finished {
    let mut args = vec!["run", "--nats", url];
    args.extend(options);
    args.extend(["--job-id", job_id, "coordinator", "q"]);
    let Some(run) = harness::cli_within(project, &args).await else {
        harness::missed_deadline(&format!("perstack {args:?} did not end"), [worker]);
    };
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, worker.stderr());
    assert!(
        run.events
            .iter()
            .any(|e| e["type"] == "completeRun" && e["expertKey"] == "coordinator"),
        "{:?}",
        run.events
    );
    run
}

/// With `options` (wrong credentials), `perstack run --nats` and `perstack worker` both exit 2
/// naming the server, never printing `secret`.
async fn refused(url: &str, project: &Path, options: &[&str], secret: &str) {
    let mut args = vec!["run", "--nats", url];
    args.extend(options);
    args.extend(["coordinator", "q"]);
    let run = cli(project, &args).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot connect to NATS at nats://127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(secret), "{}", run.stderr);
    assert!(run.events.is_empty());
    let mut args = vec!["worker", "--nats", url, "--work-dir", "work"];
    args.extend(options);
    let worker = cli(project, &args).await;
    assert_eq!(worker.code, 2, "{}", worker.stderr);
    assert!(
        worker.stderr.contains("cannot connect to NATS"),
        "{}",
        worker.stderr
    );
    assert!(!worker.stderr.contains(secret), "{}", worker.stderr);
}

#[tokio::test]
async fn user_and_password_and_token_authenticate_and_wrong_ones_exit_2_without_the_secret() {
    let _serial = SERIAL.lock().await;
    let project = common::project(&toml(), &script(0));
    let Some(server) = NatsServer::start_with_options(
        "user_and_password",
        ["--user", "alice", "--pass", "pw-hunter2"]
            .map(Into::into)
            .to_vec(),
    ) else {
        return;
    };
    let url = server.url();
    let run = async {
        let user = ["--nats-user", "alice", "--nats-password", "pw-hunter2"];
        a_job_runs_through(&url, project.path(), 0, &user, "pw-hunter2").await;
        let wrong = ["--nats-user", "alice", "--nats-password", "pw-wrong-42"];
        refused(&url, project.path(), &wrong, "pw-wrong-42").await;
        // A password in the URL is never printed either.
        let in_url = url.replace("nats://", "nats://alice:pw-in-url-7@");
        refused(&in_url, project.path(), &[], "pw-in-url-7").await;
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("not done within 90 s");
    drop(server);

    let Some(server) = NatsServer::start_with_options(
        "token",
        ["--auth", "tok-s3cret-9"].map(Into::into).to_vec(),
    ) else {
        return;
    };
    let url = server.url();
    let run = async {
        let token = ["--nats-token", "tok-s3cret-9"];
        a_job_runs_through(&url, project.path(), 1, &token, "tok-s3cret-9").await;
        refused(
            &url,
            project.path(),
            &["--nats-token", "tok-wrong-1"],
            "tok-wrong-1",
        )
        .await;
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("not done within 90 s");
}

/// `openssl <args>` in `dir`; panics when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 it signed (`server.pem`, `server.key`), in
/// `dir`; `false` (after a SKIP note, or a failure under CI) without the `openssl` command.
fn certificates(dir: &Path) -> bool {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the openssl command is not installed"
        );
        println!("SKIP tls: the openssl command is not installed");
        return false;
    }
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=perstack test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr);
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.cnf",
            "-out",
            "server.pem",
        ],
    );
    true
}

#[tokio::test]
async fn tls_with_the_servers_ca_runs_a_job_and_an_unknown_ca_exits_2() {
    let _serial = SERIAL.lock().await;
    let project = common::project(&toml(), &script(0));
    let certs = tempfile::tempdir().unwrap();
    if !certificates(certs.path()) {
        return;
    }
    let file = |name: &str| certs.path().join(name).to_str().unwrap().to_owned();
    let Some(server) = NatsServer::start_with_options(
        "tls",
        vec![
            "--tls".into(),
            "--tlscert".into(),
            file("server.pem").into(),
            "--tlskey".into(),
            file("server.key").into(),
        ],
    ) else {
        return;
    };
    let url = server.url();
    let run = async {
        let ca = file("ca.pem");
        a_job_runs_through(
            &url,
            project.path(),
            0,
            &["--nats-tls-ca", &ca],
            "-----BEGIN",
        )
        .await;
        // Without the CA, the server's certificate is not trusted.
        refused(&url, project.path(), &["--nats-tls"], "-----BEGIN").await;
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("not done within 90 s");
}

/// A NATS JWT (`ed25519-nkey`) with `claims`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{subject}-{name}"),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = b64.encode(serde_json::to_vec(&claims).unwrap());
    let signing_input = format!("{header}.{claims}");
    let signature = issuer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64.encode(signature))
}

/// An account's claims with JetStream enabled.
fn account_claims() -> serde_json::Value {
    serde_json::json!({
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        },
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2
    })
}

/// An operator-mode server configuration (an operator, a system account, an account with
/// JetStream, all preloaded) and a credentials file for a user of that account, in `dir`.
/// Returns (configuration file, credentials file, the user's seed).
fn operator_mode(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let mut system_claims = account_claims();
    system_claims["limits"]["mem_storage"] = 0.into();
    system_claims["limits"]["disk_storage"] = 0.into();
    system_claims["limits"]["streams"] = 0.into();
    system_claims["limits"]["consumer"] = 0.into();
    let system_jwt = jwt(&operator, &system.public_key(), "SYS", system_claims);
    let account_jwt = jwt(&operator, &account.public_key(), "app", account_claims());
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "worker",
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    );
    let config = dir.join("operator.conf");
    std::fs::write(
        &config,
        format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {acc}: \"{account_jwt}\"\n}}\n",
            sys = system.public_key(),
            acc = account.public_key(),
        ),
    )
    .unwrap();
    let seed = user.seed().unwrap();
    let creds = dir.join("worker.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    (config, creds, seed)
}

#[tokio::test]
async fn a_credentials_file_authenticates_on_an_operator_mode_server_and_a_missing_one_exits_2() {
    let _serial = SERIAL.lock().await;
    let project = common::project(&toml(), &script(0));
    let keys = tempfile::tempdir().unwrap();
    let (config, creds, seed) = operator_mode(keys.path());
    let Some(server) =
        NatsServer::start_with_options("creds", vec!["-c".into(), config.into_os_string()])
    else {
        return;
    };
    let url = server.url();
    let creds = creds.to_str().unwrap().to_owned();
    let run = async {
        a_job_runs_through(&url, project.path(), 0, &["--nats-creds", &creds], &seed).await;
        // No credentials: refused by the server.
        refused(&url, project.path(), &[], &seed).await;
        // A credentials file that is not there: a clear error naming it.
        let missing = keys.path().join("missing.creds");
        let missing = missing.to_str().unwrap();
        let run = cli(
            project.path(),
            &[
                "run",
                "--nats",
                &url,
                "--nats-creds",
                missing,
                "coordinator",
                "q",
            ],
        )
        .await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("missing.creds"), "{}", run.stderr);
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("not done within 90 s");
}

#[tokio::test]
async fn a_worker_started_before_jetstream_is_ready_waits_for_it_or_gives_up_after_its_timeout() {
    let _serial = SERIAL.lock().await;
    let Some(mut server) =
        NatsServer::start_with_options("worker_waits_for_jetstream", vec!["-js=false".into()])
    else {
        return;
    };
    let project = common::project(&toml(), &script(0));
    let work = project.path().join("work");
    let url = server.url();
    let run = async {
        // JetStream stays off: the worker gives up after its 500 ms, exit code 1.
        let mut gives_up = Worker::start_with(
            &url,
            project.path(),
            &work,
            0,
            &[],
            &["--ready-timeout-ms", "500"],
        );
        let status = gives_up.exit().await;
        assert_eq!(status.code(), Some(1), "{}", gives_up.stderr());
        assert!(
            gives_up.stderr().contains("JetStream is not ready"),
            "{}",
            gives_up.stderr()
        );

        // JetStream comes on while a worker waits: it sets up, then runs a job.
        let waits = Worker::start_with(&url, project.path(), &work, 1, &[], &[]);
        while !waits.stderr().contains("JetStream is not ready") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.restart_with_options(Vec::new());
        completes_on(&url, project.path(), &[], "ready-1", &waits).await;
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("not done within 90 s");
}
