//! The egress path with real sockets: a client on 127.0.0.1 talks to the forwarder, which
//! carries it to the proxy's Unix socket, which opens (or refuses) a tunnel to a target on
//! 127.0.0.1 named by the test switch. Every wait is bounded; everything started is dropped.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::forwarder::{self, Forwarder};
use super::proxy::{EgressProxy, Limits, LoopbackTargets, ProxyEvents, ProxySettings};
use super::rules::AllowList;
use super::{FORWARDER_PORT, apply_proxy_env};
use crate::schema::{Event, EventPayload, ProxyAccess, ProxyAction};
use crate::tests::support::CountingServer;

const WAIT: Duration = Duration::from_secs(10);

/// A TCP target on 127.0.0.1 that greets, then echoes; it counts the connections it accepted.
type Target = CountingServer;

async fn target() -> Target {
    CountingServer::start(|mut s: TcpStream| async move {
        let _ = s.write_all(b"hello\n").await;
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// A proxy allowing `entries`, with `allowed.test` and `evil.test` both mapped to the target
/// (so that a wrongly allowed request would reach it), and a forwarder in front of it.
struct Setup {
    target: Target,
    forwarder: Forwarder,
    events: ProxyEvents,
    _proxy: EgressProxy,
}

async fn setup(entries: &[&str], limits: Limits) -> Setup {
    let target = target().await;
    let mut loopback = LoopbackTargets::default();
    for name in ["allowed.test", "evil.test", "sub.allowed.test"] {
        loopback.insert(name, target.port);
    }
    let (proxy, events) = EgressProxy::start(ProxySettings {
        allow: AllowList::new(entries.iter().copied()),
        loopback,
        limits,
    })
    .unwrap();
    let forwarder = forwarder::spawn(0, proxy.socket_path().to_owned()).unwrap();
    Setup {
        target,
        forwarder,
        events,
        _proxy: proxy,
    }
}

impl Setup {
    async fn client(&self) -> TcpStream {
        tokio::time::timeout(WAIT, TcpStream::connect(self.forwarder.addr))
            .await
            .unwrap()
            .unwrap()
    }

    async fn event(&mut self) -> ProxyAccess {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the proxy is running")
    }
}

/// Sends `head` and returns the proxy's status line.
async fn request(client: &mut TcpStream, head: &str) -> String {
    client.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, client.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed before the response head: {got:?}");
        got.push(byte[0]);
    }
    let text = String::from_utf8(got).unwrap();
    text.lines().next().unwrap_or_default().to_owned()
}

async fn read_exact_in_time(client: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, client.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf
}

/// Reads until EOF (bounded), for connections the proxy must close.
async fn closes(client: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    matches!(
        tokio::time::timeout(WAIT, client.read_to_end(&mut sink)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

fn blocked(domain: &str, port: u16, reason: &str) -> (ProxyAction, String, u16, Option<String>) {
    (
        ProxyAction::Blocked,
        domain.into(),
        port,
        Some(reason.into()),
    )
}

fn parts(e: ProxyAccess) -> (ProxyAction, String, u16, Option<String>) {
    (e.action, e.domain, e.port, e.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_domain_gets_a_tunnel_through_forwarder_and_proxy() {
    let mut s = setup(&["allowed.test"], Limits::default()).await;
    let mut c = s.client().await;
    let status = request(
        &mut c,
        "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 Connection established");
    assert_eq!(
        parts(s.event().await),
        (ProxyAction::Allowed, "allowed.test".into(), 443, None)
    );
    assert_eq!(read_exact_in_time(&mut c, 6).await, b"hello\n");
    c.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact_in_time(&mut c, 4).await, b"ping");
    assert_eq!(s.target.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_right_behind_the_connect_reach_the_target() {
    let mut s = setup(&["allowed.test"], Limits::default()).await;
    let mut c = s.client().await;
    let status = request(&mut c, "CONNECT allowed.test:443 HTTP/1.1\r\n\r\nearly").await;
    assert_eq!(status, "HTTP/1.1 200 Connection established");
    assert_eq!(s.event().await.action, ProxyAction::Allowed);
    assert_eq!(read_exact_in_time(&mut c, 11).await, b"hello\nearly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_allows_a_subdomain() {
    let mut s = setup(&["*.allowed.test"], Limits::default()).await;
    let mut c = s.client().await;
    let status = request(&mut c, "CONNECT sub.allowed.test:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 Connection established");
    assert_eq!(s.event().await.domain, "sub.allowed.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_not_in_the_list_gets_403_and_a_blocked_event() {
    let mut s = setup(&["allowed.test"], Limits::default()).await;
    let mut c = s.client().await;
    let status = request(&mut c, "CONNECT evil.test:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert_eq!(
        parts(s.event().await),
        blocked("evil.test", 443, "Domain not in allowlist")
    );
    assert!(closes(&mut c).await);
    assert_eq!(s.target.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn punycode_ip_literals_and_other_ports_are_refused() {
    let mut s = setup(&["*.allowed.test"], Limits::default()).await;
    for (target, event) in [
        (
            "xn--e1afmkfd.allowed.test:443",
            blocked(
                "xn--e1afmkfd.allowed.test",
                443,
                "punycode (xn--) domains are not allowed",
            ),
        ),
        (
            "127.0.0.1:443",
            blocked(
                "127.0.0.1",
                443,
                "IP addresses are not allowed, only domain names",
            ),
        ),
        (
            "allowed.test:80",
            blocked("allowed.test", 80, "Port 80 is not allowed, only 443"),
        ),
    ] {
        let mut c = s.client().await;
        let status = request(&mut c, &format!("CONNECT {target} HTTP/1.1\r\n\r\n")).await;
        assert_eq!(status, "HTTP/1.1 403 Forbidden", "{target}");
        assert_eq!(parts(s.event().await), event, "{target}");
    }
    assert_eq!(s.target.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_through_the_proxy_is_refused() {
    let mut s = setup(&["allowed.test"], Limits::default()).await;
    let mut c = s.client().await;
    let status = request(
        &mut c,
        "GET http://allowed.test/secret HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert_eq!(
        parts(s.event().await),
        blocked(
            "allowed.test",
            80,
            "Only HTTPS through CONNECT is allowed, not GET"
        )
    );
    assert_eq!(s.target.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_a_blocked_event() {
    let limits = Limits {
        max_header_bytes: 1024,
        ..Limits::default()
    };
    let mut s = setup(&["allowed.test"], limits).await;
    let mut c = s.client().await;
    let padding = "a".repeat(4096);
    let status = request(
        &mut c,
        &format!("CONNECT allowed.test:443 HTTP/1.1\r\nX-Pad: {padding}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(
        parts(s.event().await),
        blocked("allowed.test", 443, "Request headers too large")
    );
    assert_eq!(s.target.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_request_gets_400_and_no_event() {
    let mut s = setup(&["allowed.test"], Limits::default()).await;
    let mut c = s.client().await;
    assert_eq!(
        request(&mut c, "HELLO\r\n\r\n").await,
        "HTTP/1.1 400 Bad Request"
    );
    // The next decision is the next event: nothing was reported for the garbled request.
    let mut c = s.client().await;
    request(&mut c, "CONNECT evil.test:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(s.event().await.domain, "evil.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_head_is_disconnected() {
    let limits = Limits {
        header_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let s = setup(&["allowed.test"], limits).await;
    let mut c = s.client().await;
    c.write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\n")
        .await
        .unwrap();
    assert!(closes(&mut c).await);
    assert_eq!(s.target.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let mut s = setup(&["allowed.test"], limits).await;
    let mut c = s.client().await;
    request(&mut c, "CONNECT allowed.test:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(s.event().await.action, ProxyAction::Allowed);
    assert_eq!(read_exact_in_time(&mut c, 6).await, b"hello\n");
    assert!(closes(&mut c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_503() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let mut s = setup(&["allowed.test"], limits).await;
    let mut first = s.client().await;
    request(&mut first, "CONNECT allowed.test:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(s.event().await.action, ProxyAction::Allowed);
    let mut second = s.client().await;
    let mut head = vec![0u8; 12];
    tokio::time::timeout(WAIT, second.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head, b"HTTP/1.1 503");
    // The first tunnel still works.
    assert_eq!(read_exact_in_time(&mut first, 6).await, b"hello\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_allowed_target_gets_502_and_a_blocked_event() {
    // Point the name at a port nobody listens on: bind, note the port, close.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut loopback = LoopbackTargets::default();
    loopback.insert("allowed.test", port);
    let (proxy, mut events) = EgressProxy::start(ProxySettings {
        allow: AllowList::new(["allowed.test"]),
        loopback,
        limits: Limits::default(),
    })
    .unwrap();
    let fwd = forwarder::spawn(0, proxy.socket_path().to_owned()).unwrap();
    let mut c = TcpStream::connect(fwd.addr).await.unwrap();
    let status = request(&mut c, "CONNECT allowed.test:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 502 Bad Gateway");
    let e = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.action, ProxyAction::Blocked);
    assert!(
        e.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("Upstream unreachable")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_whose_proxy_is_gone_closes_its_clients() {
    let s = setup(&["allowed.test"], Limits::default()).await;
    let Setup {
        forwarder, _proxy, ..
    } = s;
    drop(_proxy);
    let mut c = TcpStream::connect(forwarder.addr).await.unwrap();
    let _ = c
        .write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n")
        .await;
    assert!(closes(&mut c).await);
}

#[tokio::test]
async fn dropping_the_proxy_removes_its_socket() {
    let (proxy, _events) = EgressProxy::start(ProxySettings::default()).unwrap();
    let path = proxy.socket_path().to_owned();
    assert!(path.exists());
    drop(proxy);
    assert!(!path.exists());
    assert!(!path.parent().unwrap().exists());
}

#[test]
fn a_proxy_access_event_has_perstacks_wire_shape() {
    let event = Event {
        id: "e1".into(),
        timestamp: 7,
        job_id: "j".into(),
        run_id: "r".into(),
        expert_key: None,
        step_number: None,
        job_seq: None,
        payload: EventPayload::ProxyAccess(ProxyAccess {
            action: ProxyAction::Blocked,
            domain: "evil.test".into(),
            port: 443,
            reason: Some("Domain not in allowlist".into()),
            extra: Default::default(),
        }),
    };
    let json = serde_json::to_string(&event).unwrap();
    assert_eq!(
        json,
        r#"{"type":"proxyAccess","id":"e1","timestamp":7,"jobId":"j","runId":"r","action":"blocked","domain":"evil.test","port":443,"reason":"Domain not in allowlist"}"#
    );
    let back: Event = serde_json::from_str(&json).unwrap();
    assert_eq!(back, event);
    let allowed = r#"{"type":"proxyAccess","id":"e2","timestamp":1,"jobId":"j","runId":"r","action":"allowed","domain":"api.anthropic.com","port":443}"#;
    let parsed: Event = serde_json::from_str(allowed).unwrap();
    assert_eq!(serde_json::to_string(&parsed).unwrap(), allowed);
}

#[test]
fn the_users_proxy_settings_are_replaced_by_the_forwarders() {
    let mut env: BTreeMap<String, String> = [
        ("PATH", "/bin"),
        ("HTTPS_PROXY", "http://corp:8080"),
        ("no_proxy", "*"),
        ("All_Proxy", "socks5://x"),
        ("PERSTACK_PROXY_URL", "http://corp:8080"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut without = env.clone();
    apply_proxy_env(&mut without, false);
    assert_eq!(without.keys().collect::<Vec<_>>(), ["PATH"]);
    apply_proxy_env(&mut env, true);
    let url = format!("http://127.0.0.1:{FORWARDER_PORT}");
    assert_eq!(env.get("PATH").map(String::as_str), Some("/bin"));
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(env.get(name), Some(&url), "{name}");
    }
    assert_eq!(env.get("NODE_USE_ENV_PROXY").map(String::as_str), Some("1"));
    for gone in ["no_proxy", "All_Proxy", "PERSTACK_PROXY_URL"] {
        assert!(!env.contains_key(gone), "{gone}");
    }
}
