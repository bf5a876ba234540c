//! The stderr relay of a stdio MCP server: what becomes `skillStderr` events.
//!
//! A task reads the child's stderr and sends each line, trimmed, with every `requiredEnv`
//! value replaced by `***`, into a bounded channel ([`StderrStream`]). Empty lines are skipped.
//! A line longer than [`MAX_STDERR_CHUNK`] bytes is cut into chunks of that size (a secret
//! that straddles a cut is not recognised).
//!
//! **Lossy by design:** the relay never waits for the consumer. When the channel is full, the
//! line is dropped and counted ([`StderrStream::dropped`]), so a slow event bus can never
//! fill the pipe and block the child. The relay keeps reading (and discarding) after the
//! stream is dropped, for the same reason; it ends when the child closes its stderr.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// The longest chunk the relay sends; a longer line is split.
pub(crate) const MAX_STDERR_CHUNK: usize = 8 * 1024;

/// What replaces a secret in relayed stderr.
pub(crate) const REDACTED: &str = "***";

/// Replaces known secret values in text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    /// Non-empty secrets, longest first (so a secret containing another is replaced whole).
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for `secrets` (empty values are ignored).
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

/// The server's stderr, line by line: trimmed, redacted, never empty.
///
/// Implements [`futures::Stream`]; ends when the child closes its stderr (it exited, or the
/// connection was closed). See the module docs for the drop policy.
#[derive(Debug)]
pub(crate) struct StderrStream {
    rx: mpsc::Receiver<String>,
    /// Lines dropped because the stream was not read fast enough (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    dropped: Arc<AtomicU64>,
}

impl StderrStream {
    /// The next line, or `None` once the child's stderr is closed and everything was read.
    pub(crate) async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }

    /// How many lines were dropped so far because this stream was not read fast enough.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl futures::Stream for StderrStream {
    type Item = String;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        self.rx.poll_recv(cx)
    }
}

/// Starts relaying `reader` into a new stream holding at most `capacity` lines.
pub(crate) fn spawn_relay<R>(reader: R, redactor: Redactor, capacity: usize) -> StderrStream
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    tokio::spawn(relay(reader, redactor, tx, Arc::clone(&dropped)));
    StderrStream { rx, dropped }
}

async fn relay<R: AsyncRead + Unpin>(
    reader: R,
    redactor: Redactor,
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
) {
    let mut reader = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let (consumed, complete) = {
            let buf = match reader.fill_buf().await {
                Ok(buf) => buf,
                Err(e) => {
                    tracing::debug!(error = %e, "reading a skill's stderr failed");
                    break;
                }
            };
            if buf.is_empty() {
                break;
            }
            let room = MAX_STDERR_CHUNK - line.len();
            match buf.iter().take(room).position(|b| *b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&buf[..i]);
                    (i + 1, true)
                }
                None => {
                    let take = buf.len().min(room);
                    line.extend_from_slice(&buf[..take]);
                    (take, line.len() >= MAX_STDERR_CHUNK)
                }
            }
        };
        reader.consume(consumed);
        if complete {
            // A chunk cut by the size limit keeps the bytes of a character it would split for
            // the next chunk, so no event ever carries half a character.
            let tail = if line.len() >= MAX_STDERR_CHUNK {
                incomplete_utf8_tail(&line)
            } else {
                0
            };
            let whole = line.len() - tail;
            emit(&line[..whole], &redactor, &tx, &dropped);
            line.drain(..whole);
        }
    }
    emit(&line, &redactor, &tx, &dropped);
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character that is not
/// complete (0 to 3): where to cut a buffer so that no character is split.
pub(crate) fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    for k in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - k];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match b {
            0xF0..=0xFF => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if needed > k { k } else { 0 };
    }
    0
}

fn emit(line: &[u8], redactor: &Redactor, tx: &mpsc::Sender<String>, dropped: &AtomicU64) {
    let text = String::from_utf8_lossy(line);
    let trimmed = text.trim();
    if trimmed.is_empty() || tx.is_closed() {
        return;
    }
    if tx.try_send(redactor.redact(trimmed)).is_err() {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn redaction_replaces_every_secret_longest_first() {
        let r = Redactor::new(["abc".to_owned(), "abcdef".to_owned(), String::new()]);
        assert_eq!(r.redact("x abcdef y abc z"), "x *** y *** z");
        assert_eq!(Redactor::default().redact("plain"), "plain");
    }

    #[tokio::test]
    async fn lines_are_trimmed_redacted_and_split_when_long() {
        let (mut w, r) = tokio::io::duplex(1024);
        let mut stream = spawn_relay(r, Redactor::new(["s3cr3t".to_owned()]), 16);
        let long = "y".repeat(MAX_STDERR_CHUNK + 10);
        let input = format!("  hello s3cr3t \n\n   \r\n{long}\nlast without newline");
        tokio::spawn(async move {
            w.write_all(input.as_bytes()).await.unwrap();
        });
        let mut got = Vec::new();
        while let Some(line) = stream.recv().await {
            got.push(line);
        }
        assert_eq!(
            got.len(),
            4,
            "{:?}",
            got.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(got[0], "hello ***");
        assert_eq!(got[1].len(), MAX_STDERR_CHUNK);
        assert_eq!(got[2], "y".repeat(10));
        assert_eq!(got[3], "last without newline");
        assert_eq!(stream.dropped(), 0);
    }

    #[tokio::test]
    async fn a_long_line_of_multi_byte_characters_is_split_between_characters() {
        let (mut w, r) = tokio::io::duplex(1000);
        let mut stream = spawn_relay(r, Redactor::default(), 16);
        // 3 bytes each, and 1 byte in front: the size limit falls inside a character.
        let long = format!("x{}", "日".repeat(MAX_STDERR_CHUNK));
        let input = format!("{long}\n");
        tokio::spawn(async move {
            w.write_all(input.as_bytes()).await.unwrap();
        });
        let mut got = Vec::new();
        while let Some(line) = stream.recv().await {
            got.push(line);
        }
        assert!(got.len() > 1, "{}", got.len());
        for chunk in &got {
            assert!(
                !chunk.contains('\u{FFFD}'),
                "a character was cut: {chunk:.40}"
            );
            assert!(chunk.len() <= MAX_STDERR_CHUNK);
        }
        assert_eq!(got.concat(), long);
    }

    #[test]
    fn the_incomplete_tail_is_the_start_of_a_cut_character() {
        let s = "aé日😀".as_bytes(); // a | c3 a9 | e6 97 a5 | f0 9f 98 80
        let tails: Vec<usize> = (0..=s.len())
            .map(|n| incomplete_utf8_tail(&s[..n]))
            .collect();
        assert_eq!(tails, [0, 0, 1, 0, 1, 2, 0, 1, 2, 3, 0]);
        assert_eq!(
            incomplete_utf8_tail(&[0x80; 8]),
            0,
            "not UTF-8: nothing to keep back"
        );
    }

    #[tokio::test]
    async fn a_slow_consumer_loses_lines_but_never_blocks_the_writer() {
        let (mut w, r) = tokio::io::duplex(64);
        let mut stream = spawn_relay(r, Redactor::default(), 2);
        // Far more than the pipe and the channel hold: this only finishes if the relay keeps
        // reading while nobody consumes.
        let writer = tokio::spawn(async move {
            for i in 0..500 {
                w.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("writer blocked")
            .unwrap();
        let mut got = 0;
        while stream.recv().await.is_some() {
            got += 1;
        }
        assert_eq!(got, 2);
        assert_eq!(stream.dropped(), 498);
    }
}
