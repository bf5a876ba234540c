//! The egress proxy: an HTTP `CONNECT` proxy on a Unix socket in the engine, the only way out
//! of a sandbox's network namespace (the in-sandbox [`super::forwarder`] carries each loopback
//! connection to this socket).
//!
//! For each connection it reads the request head (bounded in size and time), asks the
//! [`AllowList`], and either opens a tunnel to port 443 of the named host and splices bytes both
//! ways until either side closes or the tunnel goes idle, or answers with an error status. Every
//! decision becomes one [`ProxyAccess`] on the events channel **before** the client gets its
//! answer: `allowed` once the upstream connection is open, `blocked` with the reason otherwise
//! (including an upstream that cannot be reached, because then no tunnel was opened). Requests
//! without a parseable target (`400`) and connections refused at the connection limit (`503`,
//! closed before anything is read) name no destination and make no event.
//!
//! Upstream addresses: the host is resolved and only public unicast addresses are connected to
//! ([`crate::skill::mcp::endpoint::blocked_range`] is the one list of refused ranges, as Squid's
//! `internal_nets` in Perstack). The **test switch** [`LoopbackTargets`] maps allow-listed names
//! to ports on 127.0.0.1 instead; it is empty unless a test or the [`LOOPBACK_TARGETS_ENV`]
//! variable fills it, and it never bypasses the allow-list.
//!
//! It never spawns processes and never publishes on the event bus itself: its owner drains the
//! events channel.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::Map;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::rules::{AllowList, Blocked};
use super::socket_dir::SocketDir;
use crate::schema::{ProxyAccess, ProxyAction};
use crate::skill::mcp::endpoint::blocked_range;

/// The test switch's variable: `name=port[,name=port...]` maps allow-listed names to ports on
/// 127.0.0.1. Only tests set it.
pub(crate) const LOOPBACK_TARGETS_ENV: &str = "PERSTACK_EGRESS_TEST_LOOPBACK";

/// How many decisions may wait for the owner to drain them; at the limit, connections wait
/// before answering their client (every decision is reported, none is dropped).
const EVENTS_CAPACITY: usize = 256;

/// The bounds of one proxy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once (tunnels and requests still being read). At the limit a new
    /// connection gets `503` and is closed, so a process cannot exhaust the engine's sockets.
    pub(crate) max_connections: usize,
    /// Bytes of request line and headers. Beyond it the client gets `431` and a blocked event.
    pub(crate) max_header_bytes: usize,
    /// Time a client has to send its request head; then the connection is closed.
    pub(crate) header_timeout: Duration,
    /// Time to resolve and connect to the upstream; then the client gets `502`.
    pub(crate) connect_timeout: Duration,
    /// A tunnel with no bytes in either direction for this long is closed.
    pub(crate) idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_header_bytes: 8 * 1024,
            header_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The test switch: allow-listed names served by a port on 127.0.0.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LoopbackTargets(BTreeMap<String, u16>);

impl LoopbackTargets {
    /// Maps `name` to `127.0.0.1:port`.
    pub(crate) fn insert(&mut self, name: &str, port: u16) {
        self.0.insert(name.to_ascii_lowercase(), port);
    }

    /// The switch as [`LOOPBACK_TARGETS_ENV`] sets it (empty when unset). Malformed pairs are
    /// ignored.
    pub(crate) fn from_env() -> LoopbackTargets {
        std::env::var(LOOPBACK_TARGETS_ENV)
            .map(|v| LoopbackTargets::parse(&v))
            .unwrap_or_default()
    }

    fn parse(spec: &str) -> LoopbackTargets {
        let mut targets = LoopbackTargets::default();
        for pair in spec.split(',') {
            if let Some((name, port)) = pair.trim().split_once('=')
                && let Ok(port) = port.trim().parse()
            {
                targets.insert(name.trim(), port);
            }
        }
        targets
    }

    fn get(&self, host: &str) -> Option<u16> {
        self.0.get(host).copied()
    }
}

/// What a proxy allows and how it is bounded.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxySettings {
    /// The destinations.
    pub(crate) allow: AllowList,
    /// The test switch (empty in production).
    pub(crate) loopback: LoopbackTargets,
    /// The bounds.
    pub(crate) limits: Limits,
}

/// The proxy's decisions, in order, for its owner to publish.
pub(crate) type ProxyEvents = mpsc::Receiver<ProxyAccess>;

/// A running proxy. Dropping it stops accepting, ends every tunnel and removes the socket.
#[derive(Debug)]
pub(crate) struct EgressProxy {
    /// The socket's private directory, locked while the proxy runs (removed on drop).
    _dir: SocketDir,
    socket: PathBuf,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl EgressProxy {
    /// Binds a socket in a fresh private directory under the temp directory (sweeping the
    /// directories of dead engines first, see [`SocketDir`]) and starts serving on the current
    /// tokio runtime.
    pub(crate) fn start(settings: ProxySettings) -> io::Result<(EgressProxy, ProxyEvents)> {
        let dir = SocketDir::create(&std::env::temp_dir())?;
        let socket = dir.path().join("proxy.sock");
        let listener = UnixListener::bind(&socket)?;
        let (tx, rx) = mpsc::channel(EVENTS_CAPACITY);
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            settings,
            events: tx,
        });
        let task = tokio::spawn(accept_loop(listener, shared, cancel.clone()));
        Ok((
            EgressProxy {
                _dir: dir,
                socket,
                cancel,
                task,
            },
            rx,
        ))
    }

    /// The socket the forwarder connects to.
    pub(crate) fn socket_path(&self) -> &Path {
        &self.socket
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

struct Shared {
    settings: ProxySettings,
    events: mpsc::Sender<ProxyAccess>,
}

impl Shared {
    async fn report(&self, domain: &str, port: u16, outcome: Result<(), &Blocked>) {
        let (action, reason) = match outcome {
            Ok(()) => (ProxyAction::Allowed, None),
            Err(b) => (ProxyAction::Blocked, Some(b.to_string())),
        };
        // A closed channel means the owner is shutting down; the decision still stands.
        let _ = self
            .events
            .send(ProxyAccess {
                action,
                domain: domain.to_owned(),
                port,
                reason,
                extra: Map::new(),
            })
            .await;
    }
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(shared.settings.limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut client, _)) = accepted else {
            // Out of descriptors and the like: the next accept may succeed.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("egress proxy at its connection limit; refusing a connection");
            tokio::spawn(async move {
                let _ = client.write_all(&response(Blocked::Busy.status())).await;
            });
            continue;
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = serve(client, &shared) => {}
            }
            drop(permit);
        });
    }
}

/// A request head as far as the proxy needs it.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    host: String,
    port: u16,
}

async fn serve(mut client: UnixStream, shared: &Shared) {
    let limits = shared.settings.limits;
    let head = match tokio::time::timeout(
        limits.header_timeout,
        read_head(&mut client, limits.max_header_bytes),
    )
    .await
    {
        Ok(Ok(head)) => head,
        Ok(Err(_)) | Err(_) => return,
    };
    let Some(req) = head.request_line().and_then(parse_request_line) else {
        let _ = client.write_all(&response("400 Bad Request")).await;
        return;
    };
    let Some(end) = head.end else {
        return refuse(client, shared, &req, Blocked::HeadersTooLarge).await;
    };
    if !req.method.eq_ignore_ascii_case("CONNECT") {
        let method = req.method.clone();
        return refuse(client, shared, &req, Blocked::Method(method)).await;
    }
    let host = match shared.settings.allow.check(&req.host, req.port) {
        Ok(host) => host,
        Err(blocked) => return refuse(client, shared, &req, blocked).await,
    };
    let upstream = match tokio::time::timeout(
        limits.connect_timeout,
        connect(&host, req.port, &shared.settings.loopback),
    )
    .await
    {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(blocked)) => return refuse(client, shared, &req, blocked).await,
        Err(_) => {
            let blocked = Blocked::Unreachable("connection timed out".into());
            return refuse(client, shared, &req, blocked).await;
        }
    };
    shared.report(&req.host, req.port, Ok(())).await;
    let mut upstream = upstream;
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    // Bytes the client sent right behind its head (a pipelined TLS hello) go first.
    if let Some(early) = head.bytes.get(end..).filter(|b| !b.is_empty())
        && upstream.write_all(early).await.is_err()
    {
        return;
    }
    splice(client, upstream, limits.idle_timeout).await;
}

async fn refuse(mut client: UnixStream, shared: &Shared, req: &Request, blocked: Blocked) {
    shared.report(&req.host, req.port, Err(&blocked)).await;
    let _ = client.write_all(&response(blocked.status())).await;
    let _ = client.shutdown().await;
}

fn response(status: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The bytes read while looking for the end of the head; `end` is the offset just past
/// `\r\n\r\n`, or `None` when the limit came first.
struct Head {
    bytes: Vec<u8>,
    end: Option<usize>,
}

impl Head {
    fn request_line(&self) -> Option<&str> {
        let line_end = self.bytes.windows(2).position(|w| w == b"\r\n")?;
        std::str::from_utf8(&self.bytes[..line_end]).ok()
    }
}

/// Reads until the end of the head or `max` bytes, whichever comes first; an early EOF is an
/// error.
async fn read_head(client: &mut UnixStream, max: usize) -> io::Result<Head> {
    let mut bytes = Vec::with_capacity(1024.min(max));
    let mut chunk = [0u8; 1024];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let scan_from = bytes.len().saturating_sub(3);
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(pos) = bytes[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = scan_from + pos + 4;
            if end > max {
                return Ok(Head { bytes, end: None });
            }
            return Ok(Head {
                bytes,
                end: Some(end),
            });
        }
        if bytes.len() >= max {
            return Ok(Head { bytes, end: None });
        }
    }
}

/// `CONNECT host:port HTTP/1.1`, or `METHOD http://host[:port]/... HTTP/1.x` (which is then
/// refused by method, but reported with its destination).
fn parse_request_line(line: &str) -> Option<Request> {
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let (authority, default_port) = if method.eq_ignore_ascii_case("CONNECT") {
        (target, None)
    } else {
        let (scheme, rest) = target.split_once("://")?;
        let port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = rest.split(['/', '?', '#']).next()?;
        (
            authority.rsplit_once('@').map_or(authority, |(_, a)| a),
            Some(port),
        )
    };
    let (host, port) = split_authority(authority, default_port)?;
    Some(Request {
        method: method.to_owned(),
        host: host.to_owned(),
        port,
    })
}

/// `host:port` / `[v6]:port` / (with a default) `host`.
fn split_authority(authority: &str, default_port: Option<u16>) -> Option<(&str, u16)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            match after.strip_prefix(':') {
                Some(port) => (&authority[..v6.len() + 2], Some(port)),
                None if after.is_empty() => (&authority[..v6.len() + 2], None),
                None => return None,
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port?,
    };
    (!host.is_empty()).then_some((host, port))
}

async fn connect(host: &str, port: u16, loopback: &LoopbackTargets) -> Result<TcpStream, Blocked> {
    if let Some(local) = loopback.get(host) {
        return TcpStream::connect((Ipv4Addr::LOCALHOST, local))
            .await
            .map_err(|e| Blocked::Unreachable(e.to_string()));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Blocked::Unreachable(e.to_string()))?
        .collect();
    let public: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| blocked_range(a.ip()).is_none())
        .collect();
    if public.is_empty() {
        return Err(match addrs.first().and_then(|a| blocked_range(a.ip())) {
            Some(range) => Blocked::NonPublicAddress(range),
            None => Blocked::Unreachable("no address".into()),
        });
    }
    let mut last = None;
    for addr in public {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(Blocked::Unreachable(
        last.map_or_else(|| "no address".into(), |e| e.to_string()),
    ))
}

/// Copies both ways until both sides are done, or until no byte moved for `idle`.
async fn splice(client: UnixStream, upstream: TcpStream, idle: Duration) {
    let activity = Arc::new(AtomicU64::new(0));
    let mut a = Counted {
        inner: client,
        activity: activity.clone(),
    };
    let mut b = Counted {
        inner: upstream,
        activity: activity.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = &mut copy => return,
            _ = tokio::time::sleep(idle) => {
                let now = activity.load(Ordering::Relaxed);
                if now == seen {
                    return;
                }
                seen = now;
            }
        }
    }
}

/// A stream that counts its reads, so the idle watchdog can tell a quiet tunnel from a busy one.
struct Counted<S> {
    inner: S,
    activity: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_to_their_destination() {
        let req = |m: &str, h: &str, p| {
            Some(Request {
                method: m.into(),
                host: h.into(),
                port: p,
            })
        };
        assert_eq!(
            parse_request_line("CONNECT example.com:443 HTTP/1.1"),
            req("CONNECT", "example.com", 443)
        );
        assert_eq!(
            parse_request_line("CONNECT [::1]:8443 HTTP/1.1"),
            req("CONNECT", "[::1]", 8443)
        );
        assert_eq!(
            parse_request_line("GET http://user@example.com/x?y HTTP/1.1"),
            req("GET", "example.com", 80)
        );
        assert_eq!(
            parse_request_line("POST https://example.com:8443 HTTP/1.0"),
            req("POST", "example.com", 8443)
        );
        for bad in [
            "CONNECT example.com HTTP/1.1",
            "CONNECT example.com:99999 HTTP/1.1",
            "GET /relative HTTP/1.1",
            "GET ftp://example.com/ HTTP/1.1",
            "CONNECT example.com:443",
            "CONNECT :443 HTTP/1.1",
            "CONNECT a:443 HTTP/2 extra",
        ] {
            assert_eq!(parse_request_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_test_switch_parses_name_port_pairs() {
        let t = LoopbackTargets::parse("Allowed.test=8080, other.test = 9 ,bad,x=notaport");
        assert_eq!(t.get("allowed.test"), Some(8080));
        assert_eq!(t.get("other.test"), Some(9));
        assert_eq!(t.get("bad"), None);
        assert_eq!(t.get("x"), None);
    }
}
