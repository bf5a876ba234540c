//! A fake Anthropic Messages server for measurements (`fanout_load ... anthropic`): plain HTTP/1.1
//! on 127.0.0.1 with keep-alive and `TCP_NODELAY` (with Nagle on, every reply would wait ~40 ms
//! for the client's delayed ACK), answering the reference workload instantly over SSE, chosen
//! from the request as [`super::FanoutModel`] chooses:
//!
//! * no tools offered: the run-result generation -> text;
//! * the coordinator (it is offered `child-a`) before any tool result -> `child-a` and `child-b`;
//! * otherwise -> `attemptCompletion`.
//!
//! It runs in its own process so that the measuring process's CPU time is the engine's alone.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Serve on `listener` until the process ends.
pub(crate) async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream));
    }
}

/// One keep-alive connection: requests in order, each answered in full.
async fn connection(stream: TcpStream) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match read.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let sse = answer(&request);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
            sse.len()
        );
        if write.write_all(head.as_bytes()).await.is_err()
            || write.write_all(sse.as_bytes()).await.is_err()
        {
            return;
        }
    }
}

fn event(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or("?")
    )
}

fn tool_use(index: usize, id: &str, name: &str, input: &str) -> String {
    [
        event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})),
        event(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": input}})),
        event(json!({"type": "content_block_stop", "index": index})),
    ]
    .concat()
}

/// The SSE body answering `request`.
fn answer(request: &Value) -> String {
    let tools: Vec<&str> = request["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    let after_tools = request["messages"].as_array().is_some_and(|messages| {
        messages.iter().any(|m| {
            m["content"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"))
        })
    });
    let (blocks, stop) = if tools.is_empty() {
        let text = [
            event(json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})),
            event(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Done: "}})),
            event(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "both halves."}})),
            event(json!({"type": "content_block_stop", "index": 0})),
        ];
        (text.concat(), "end_turn")
    } else if tools.contains(&"child-a") && !after_tools {
        let calls = [
            tool_use(0, "toolu_a", "child-a", r#"{"query":"Do the first half"}"#),
            tool_use(1, "toolu_b", "child-b", r#"{"query":"Do the second half"}"#),
        ];
        (calls.concat(), "tool_use")
    } else {
        (
            tool_use(0, "toolu_done", "attemptCompletion", "{}"),
            "tool_use",
        )
    };
    [
        event(
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 100, "output_tokens": 1}}}),
        ),
        blocks,
        event(
            json!({"type": "message_delta", "delta": {"stop_reason": stop},
            "usage": {"output_tokens": 20}}),
        ),
        event(json!({"type": "message_stop"})),
    ]
    .concat()
}
