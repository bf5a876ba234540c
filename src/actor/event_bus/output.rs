//! [`Output`]: the bus's sink (stdout for the CLI) behind one reusable buffer.
//!
//! Each event is serialised once, straight into the buffer. The buffer goes to the sink in
//! one write when it passes [`WRITE_AT`] bytes, and is written and flushed whenever the bus
//! has nothing else to do ([`Output::write_out`] with `flush`), so a burst of events costs one
//! write and one flush and no line waits for a later event. A failed write or flush drops
//! the sink: every later event reports the same error and nothing is written again.

use std::io;

use tokio::io::AsyncWriteExt;

use super::Sink;
use crate::schema::Event;

/// Buffered bytes past which the buffer is written out without waiting for the bus to be
/// idle. Bounds the memory a burst holds; larger writes cost fewer system calls. At the limit
/// the bus waits for the sink (a stalled reader stalls the bus, and with it the producers).
const WRITE_AT: usize = 256 * 1024;

/// The sink and its buffer.
pub(super) struct Output {
    sink: Option<Sink>,
    /// Lines not written yet; kept (cleared, not freed) between writes.
    buf: Vec<u8>,
    /// Set when the sink failed: it was dropped, and every later event reports this.
    failed: Option<(io::ErrorKind, String)>,
}

impl Output {
    pub(super) fn new(sink: Option<Sink>) -> Self {
        Output {
            buf: Vec::with_capacity(if sink.is_some() { WRITE_AT + 4096 } else { 0 }),
            sink,
            failed: None,
        }
    }

    /// Append `event`'s JSON line (Perstack's form), or the earlier failure of the sink.
    pub(super) fn push(&mut self, event: &Event) -> io::Result<()> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        if self.sink.is_none() {
            return Ok(());
        }
        let start = self.buf.len();
        match serde_json::to_writer(&mut self.buf, event) {
            Ok(()) => self.buf.push(b'\n'),
            // Never for the engine's types (no maps with non-string keys); no half line.
            Err(e) => {
                self.buf.truncate(start);
                tracing::warn!(error = %e, kind = event.kind(), "could not serialise event");
            }
        }
        Ok(())
    }

    /// Write the buffer out if it passed [`WRITE_AT`].
    pub(super) async fn write_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= WRITE_AT {
            self.write_out(false).await
        } else {
            Ok(())
        }
    }

    /// Write the buffer to the sink (and flush it when `flush`).
    pub(super) async fn write_out(&mut self, flush: bool) -> io::Result<()> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        let mut result = Ok(());
        if !self.buf.is_empty() {
            result = sink.write_all(&self.buf).await;
            self.buf.clear();
        }
        if flush && result.is_ok() {
            result = sink.flush().await;
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, "the event output failed; no more events are written to it");
            self.failed = Some((e.kind(), e.to_string()));
            self.sink = None;
            self.buf = Vec::new();
        }
        result
    }
}
