//! A tiny HTTP/1.1 server on 127.0.0.1:0 for provider tests (Anthropic, OpenAI, Google,
//! Ollama, Vertex, Bedrock): it records every request and answers from a queue of canned [`Reply`]s, one per
//! request, in order. SSE replies are sent chunked, one flush per chunk, and can break off
//! mid-stream (a clean close, or a TCP reset). No TLS, no request bodies in chunked encoding.
//!
//! ```ignore
//! let server = FakeServer::start(vec![
//!     Reply::status(429).header("retry-after", "1").json(json!({"error": {"message": "slow"}})),
//!     Reply::sse(vec![sse_event("message_stop", &json!({"type": "message_stop"}))]),
//! ]).await;
//! // ... point the provider at server.url() ...
//! let requests = server.requests().await;
//! ```

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// How a reply's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Complete body; the connection stays open for the next request.
    Complete,
    /// Close the connection after the chunks without finishing the chunked body.
    Close,
    /// Reset the connection (TCP RST) after the chunks.
    Reset,
}

/// One canned answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    chunks: Vec<Vec<u8>>,
    /// Sent with `Transfer-Encoding: chunked`, one flush per chunk.
    streamed: bool,
    /// Pause before each chunk, and before a mid-stream break (so the client has read what
    /// came before it; a reset may discard unread data).
    delay: Duration,
    ending: Ending,
}

impl Reply {
    /// An empty reply with this status.
    pub(crate) fn status(status: u16) -> Self {
        let (headers, chunks, streamed) = (Vec::new(), Vec::new(), false);
        let (delay, ending) = (Duration::ZERO, Ending::Complete);
        Reply {
            status,
            headers,
            chunks,
            streamed,
            delay,
            ending,
        }
    }

    /// A 200 reply of `content_type` sending each string as its own flushed chunk
    /// (`application/x-ndjson` lines for Ollama, say).
    pub(crate) fn stream(content_type: &str, chunks: Vec<String>) -> Self {
        let mut r = Reply::status(200).header("content-type", content_type);
        r.chunks = chunks.into_iter().map(String::into_bytes).collect();
        r.streamed = true;
        r
    }

    /// A 200 reply of `content_type` sending each byte string as its own flushed chunk (AWS
    /// event-stream frames for Bedrock).
    pub(crate) fn binary(content_type: &str, chunks: Vec<Vec<u8>>) -> Self {
        let mut r = Reply::status(200).header("content-type", content_type);
        r.chunks = chunks;
        r.streamed = true;
        r
    }

    /// A 200 `text/event-stream` reply sending each string as its own chunk.
    pub(crate) fn sse(chunks: Vec<String>) -> Self {
        Reply::stream("text/event-stream", chunks)
    }

    /// Add a header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A JSON body.
    pub(crate) fn json(self, body: Value) -> Self {
        let mut r = self.header("content-type", "application/json");
        r.chunks = vec![body.to_string().into_bytes()];
        r
    }

    /// Wait this long before each chunk.
    pub(crate) fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Close the connection after the chunks, leaving the body unfinished.
    pub(crate) fn close_mid_stream(mut self) -> Self {
        (self.streamed, self.ending) = (true, Ending::Close);
        self
    }

    /// Reset the connection after the chunks.
    pub(crate) fn reset_mid_stream(mut self) -> Self {
        (self.streamed, self.ending) = (true, Ending::Reset);
        self
    }
}

/// `event: {name}\ndata: {json}\n\n`.
pub(crate) fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// A recorded request.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    /// Path and query.
    pub(crate) path: String,
    /// Lower-case names.
    pub(crate) headers: BTreeMap<String, String>,
    /// The body as JSON; `Null` when empty or not JSON.
    pub(crate) body: Value,
    pub(crate) raw_body: String,
}

/// The server; stops when dropped.
pub(crate) struct FakeServer {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    routed: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

/// Fixed answers by path: a request whose path starts with a route's prefix gets that reply
/// (every time, without using the queue) and is recorded apart from the queued requests (a
/// token or credentials endpoint beside the model API).
type Routes = Arc<Vec<(String, Reply)>>;

impl FakeServer {
    /// Listen on 127.0.0.1:0 and answer with `replies` in order; once they run out, 500 with
    /// `{"error":{"message":"fake server: no reply queued"}}`.
    pub(crate) async fn start(replies: Vec<Reply>) -> Self {
        Self::start_routed(replies, Vec::new()).await
    }

    /// As [`FakeServer::start`], with `routes` answered by path prefix (see [`Routes`]).
    pub(crate) async fn start_routed(replies: Vec<Reply>, routes: Vec<(&str, Reply)>) -> Self {
        let routes: Routes = Arc::new(
            routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect(),
        );
        let routed = Arc::new(Mutex::new(Vec::new()));
        let routed_log = routed.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (routes, routed) = (routes.clone(), routed_log.clone());
                tokio::spawn(serve(
                    socket,
                    queue.clone(),
                    recorded.clone(),
                    routes,
                    routed,
                ));
            }
        });
        FakeServer {
            addr,
            requests,
            routed,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub(crate) async fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().await.clone()
    }

    /// Every request answered by a route, in arrival order.
    pub(crate) async fn routed_requests(&self) -> Vec<Recorded> {
        self.routed.lock().await.clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    socket: TcpStream,
    queue: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    routes: Routes,
    routed: Arc<Mutex<Vec<Recorded>>>,
) {
    let mut reader = BufReader::new(socket);
    while let Some(req) = read_request(&mut reader).await {
        if let Some((_, reply)) = routes
            .iter()
            .find(|(p, _)| req.path.starts_with(p.as_str()))
        {
            routed.lock().await.push(req);
            if !write_reply(reader.get_mut(), reply).await {
                return;
            }
            continue;
        }
        requests.lock().await.push(req);
        let reply = queue.lock().await.pop_front().unwrap_or_else(|| {
            Reply::status(500)
                .json(serde_json::json!({"error": {"message": "fake server: no reply queued"}}))
        });
        if !write_reply(reader.get_mut(), &reply).await {
            return;
        }
    }
}

async fn read_request(r: &mut BufReader<TcpStream>) -> Option<Recorded> {
    let mut line = String::new();
    r.read_line(&mut line).await.ok().filter(|n| *n > 0)?;
    let mut first = line.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.ok().filter(|n| *n > 0)?;
        let Some((k, v)) = line.split_once(':') else {
            break;
        };
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len = headers.get("content-length").and_then(|v| v.parse().ok());
    let mut body = vec![0u8; len.unwrap_or(0)];
    r.read_exact(&mut body).await.ok()?;
    let raw_body = String::from_utf8_lossy(&body).into_owned();
    let body = serde_json::from_str(&raw_body).unwrap_or(Value::Null);
    Some(Recorded {
        method,
        path,
        headers,
        body,
        raw_body,
    })
}

/// Whether the connection can serve another request.
async fn write_reply(socket: &mut TcpStream, reply: &Reply) -> bool {
    let mut head = format!("HTTP/1.1 {} Fake\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if reply.streamed {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
    } else {
        let len: usize = reply.chunks.iter().map(Vec::len).sum();
        head.push_str(&format!("content-length: {len}\r\n\r\n"));
    }
    if socket.write_all(head.as_bytes()).await.is_err() || socket.flush().await.is_err() {
        return false;
    }
    for chunk in &reply.chunks {
        tokio::time::sleep(reply.delay).await;
        let frame = match reply.streamed {
            true => [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat(),
            false => chunk.clone(),
        };
        if socket.write_all(&frame).await.is_err() || socket.flush().await.is_err() {
            return false;
        }
    }
    if reply.ending != Ending::Complete {
        tokio::time::sleep(reply.delay).await;
    }
    match reply.ending {
        Ending::Complete if reply.streamed => socket.write_all(b"0\r\n\r\n").await.is_ok(),
        Ending::Complete => true,
        Ending::Close => {
            let _ = socket.shutdown().await;
            false
        }
        Ending::Reset => {
            let _ = socket.set_zero_linger();
            false
        }
    }
}
