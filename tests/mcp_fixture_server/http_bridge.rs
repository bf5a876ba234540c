//! A minimal Streamable HTTP front for an rmcp server, for the fixture MCP server
//! (`examples/mcp_fixture_server.rs --http PORT`), so tests need no rmcp HTTP-server feature.
//!
//! The rmcp server runs over an in-memory pipe. Each `POST` body (one JSON-RPC message) is
//! written to it as a line; a request's answer is the server line with the same `id`, sent
//! back as `application/json`. Notifications and responses from the client get `202
//! Accepted`; `GET` (the optional SSE stream) and other methods get `405`. Server-to-client
//! messages other than responses (notifications) are dropped. One MCP session per process,
//! no session id, one request per TCP connection (`Connection: close`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::{ServerHandler, ServiceExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the server's answer, by JSON-encoded id.
type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>;

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Serves `make()` on `127.0.0.1:port` (0 picks a port), printing
/// `listening on http://127.0.0.1:PORT/mcp` first. Runs until the process ends.
pub(crate) async fn serve_http<S: ServerHandler>(
    port: u16,
    make: impl FnOnce() -> S,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("listening on http://{addr}/mcp\n").as_bytes())
        .await?;
    stdout.flush().await?;

    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let server = make();
    tokio::spawn(async move {
        match server.serve(theirs).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => eprintln!("http bridge: MCP server failed: {e}"),
        }
    });
    let (read, write) = tokio::io::split(ours);
    let pending = Pending::default();
    tokio::spawn(route_answers(read, Arc::clone(&pending)));
    let (to_server, lines) = mpsc::channel::<String>(64);
    tokio::spawn(write_lines(write, lines));
    loop {
        let (stream, _) = listener.accept().await?;
        let pending = Arc::clone(&pending);
        let to_server = to_server.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, pending, to_server).await {
                eprintln!("http bridge: {e}");
            }
        });
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<String>>> {
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hands each response line from the server to the request waiting for it.
async fn route_answers<R: AsyncRead + Unpin>(read: R, pending: Pending) {
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let is_response = msg.get("result").is_some() || msg.get("error").is_some();
        let Some(id) = msg.get("id").filter(|_| is_response) else {
            continue;
        };
        if let Some(waiter) = lock(&pending).remove(&id.to_string()) {
            let _ = waiter.send(line);
        }
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(mut write: W, mut lines: mpsc::Receiver<String>) {
    while let Some(line) = lines.recv().await {
        if write.write_all(line.as_bytes()).await.is_err() || write.write_all(b"\n").await.is_err()
        {
            break;
        }
    }
}

async fn handle(
    stream: TcpStream,
    pending: Pending,
    to_server: mpsc::Sender<String>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let method = request_line
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let (status, body) = if method != "POST" {
        ("405 Method Not Allowed", String::new())
    } else if content_length > MAX_BODY {
        ("413 Payload Too Large", String::new())
    } else {
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body).await?;
        forward(&body, &pending, &to_server).await
    };
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = reader.into_inner();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Sends one client message to the server; a request waits for its answer.
async fn forward(
    body: &[u8],
    pending: &Pending,
    to_server: &mpsc::Sender<String>,
) -> (&'static str, String) {
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return ("400 Bad Request", String::new());
    };
    let line = msg.to_string();
    let request_id = msg
        .get("id")
        .filter(|_| msg.get("method").is_some())
        .map(Value::to_string);
    let Some(id) = request_id else {
        let _ = to_server.send(line).await;
        return ("202 Accepted", String::new());
    };
    let (tx, rx) = oneshot::channel();
    lock(pending).insert(id, tx);
    if to_server.send(line).await.is_err() {
        return ("503 Service Unavailable", String::new());
    }
    match rx.await {
        Ok(answer) => ("200 OK", answer),
        Err(_) => ("503 Service Unavailable", String::new()),
    }
}
