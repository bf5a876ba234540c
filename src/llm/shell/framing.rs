//! Framing: how a streamed response body is cut into frames, and the one driver that feeds the
//! frames to a provider's [`Decoder`] and yields a [`PartStream`].
//!
//! | framing | frame | used by |
//! | --- | --- | --- |
//! | [`Sse`] | one server-sent event (`event:` name and `data:` text) | Anthropic, OpenAI-compatible, Gemini |
//! | [`Ndjson`] | one line of newline-delimited JSON (bytes, newline included) | Ollama |
//! | [`AwsEventStream`] | one binary event-stream message (headers and payload, CRCs checked by `aws-smithy-eventstream`) | Bedrock |
//!
//! The driver owns what every provider has in common: a transport error mid-stream is a
//! retryable "stream broke off", a malformed frame is a retryable `InvalidResponseDataError`,
//! the first error ends the stream, nothing after a complete answer is read, and every error is
//! scrubbed of the provider's secrets. It never interprets a frame: the decoders own the wire
//! format and decide when an answer is complete.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

use crate::llm::http::{redact_error, transport_error};
use crate::llm::{GenerationError, PartStream, StreamPart};

/// A response body as the HTTP client delivers it.
pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// The frames of one body; the first error ends it.
pub(crate) type FrameStream<F> = Pin<Box<dyn Stream<Item = Result<F, GenerationError>> + Send>>;

/// How a body is cut into frames.
pub(crate) trait Framing: Send + 'static {
    /// One frame, as the decoder takes it.
    type Frame: Send + 'static;

    /// The frames of `body`. A transport failure is reported with [`broke_off`]; a body that
    /// cannot be framed with [`GenerationError::invalid_response`].
    fn frames(body: ByteStream) -> FrameStream<Self::Frame>;
}

/// One provider's wire format over its [`Framing`]: a pure state machine fed one frame at a
/// time, so it is unit-tested without a network.
pub(crate) trait Decoder: Default + Send + 'static {
    /// How this provider's bodies are framed.
    type Framing: Framing;

    /// Take one frame.
    fn frame(
        &mut self,
        frame: <Self::Framing as Framing>::Frame,
    ) -> Result<Vec<StreamPart>, GenerationError>;

    /// The body ended: the last parts, or why the answer is incomplete.
    fn end_of_body(&mut self) -> Result<Vec<StreamPart>, GenerationError>;

    /// Whether the answer is complete; nothing after it is read.
    fn is_done(&self) -> bool;
}

/// Server-sent events.
pub(crate) struct Sse;

/// One server-sent event.
#[derive(Debug)]
pub(crate) struct SseEvent {
    /// The `event:` field; `message` when absent (the SSE default).
    pub(crate) name: String,
    /// The `data:` text.
    pub(crate) data: String,
}

impl Framing for Sse {
    type Frame = SseEvent;

    fn frames(body: ByteStream) -> FrameStream<SseEvent> {
        Box::pin(body.eventsource().map(|item| match item {
            Ok(ev) => Ok(SseEvent {
                name: ev.event,
                data: ev.data,
            }),
            Err(EventStreamError::Transport(e)) => Err(broke_off(e)),
            Err(other) => Err(GenerationError::invalid_response(format!(
                "invalid event stream: {other}"
            ))),
        }))
    }
}

/// Newline-delimited JSON: one frame per line. A line may span chunks and a chunk may hold
/// many lines; a last line without its newline is a frame too.
pub(crate) struct Ndjson;

impl Framing for Ndjson {
    type Frame = Vec<u8>;

    fn frames(body: ByteStream) -> FrameStream<Vec<u8>> {
        struct Lines {
            body: ByteStream,
            /// Bytes received but not yet cut into lines.
            pending: Vec<u8>,
            ended: bool,
        }
        let lines = Lines {
            body,
            pending: Vec::new(),
            ended: false,
        };
        Box::pin(futures::stream::unfold(lines, |mut st| async move {
            loop {
                if let Some(end) = st.pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = st.pending.drain(..=end).collect();
                    return Some((Ok(line), st));
                }
                if st.ended {
                    return None;
                }
                match st.body.next().await {
                    Some(Ok(bytes)) => st.pending.extend_from_slice(&bytes),
                    Some(Err(e)) => {
                        st.ended = true;
                        st.pending.clear();
                        return Some((Err(broke_off(e)), st));
                    }
                    None => {
                        st.ended = true;
                        if !st.pending.is_empty() {
                            return Some((Ok(std::mem::take(&mut st.pending)), st));
                        }
                    }
                }
            }
        }))
    }
}

/// AWS's binary event stream (`application/vnd.amazon.eventstream`): length-prefixed
/// messages with typed headers and CRC-checked prelude and body, decoded by
/// `aws-smithy-eventstream`. A message may span chunks and a chunk may hold many; bytes left
/// over at the end of the body are a cut-off message.
pub(crate) struct AwsEventStream;

impl Framing for AwsEventStream {
    type Frame = aws_smithy_types::event_stream::Message;

    fn frames(body: ByteStream) -> FrameStream<Self::Frame> {
        use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
        struct Messages {
            body: ByteStream,
            decoder: MessageFrameDecoder,
            /// Bytes received but not yet decoded (the decoder keeps a read prelude itself).
            pending: bytes::BytesMut,
            /// Whether the decoder holds a prelude whose message is not complete yet.
            started: bool,
            ended: bool,
        }
        let messages = Messages {
            body,
            decoder: MessageFrameDecoder::new(),
            pending: bytes::BytesMut::new(),
            started: false,
            ended: false,
        };
        Box::pin(futures::stream::unfold(messages, |mut st| async move {
            loop {
                if st.ended {
                    return None;
                }
                let before = st.pending.len();
                match st.decoder.decode_frame(&mut st.pending) {
                    Ok(DecodedFrame::Complete(message)) => {
                        st.started = false;
                        return Some((Ok(message), st));
                    }
                    Ok(DecodedFrame::Incomplete) => st.started |= st.pending.len() < before,
                    Err(e) => {
                        st.ended = true;
                        let e = GenerationError::invalid_response(format!(
                            "invalid AWS event stream message: {e}"
                        ));
                        return Some((Err(e), st));
                    }
                }
                match st.body.next().await {
                    Some(Ok(bytes)) => st.pending.extend_from_slice(&bytes),
                    Some(Err(e)) => {
                        st.ended = true;
                        return Some((Err(broke_off(e)), st));
                    }
                    None => {
                        st.ended = true;
                        if st.started || !st.pending.is_empty() {
                            let e = GenerationError::invalid_response(
                                "the AWS event stream ended inside a message".into(),
                            );
                            return Some((Err(e), st));
                        }
                    }
                }
            }
        }))
    }
}

/// A transport failure after the answer began: a retryable error saying the stream broke off.
/// Its message is scrubbed again by the driver, which knows the secrets.
pub(crate) fn broke_off(e: reqwest::Error) -> GenerationError {
    let mut e = transport_error(e, &[] as &[&str]);
    e.message = format!("The stream broke off: {}", e.message);
    e
}

/// The parts of one response body, framed by `D`'s framing and decoded by `D`. Every error is
/// scrubbed of `secrets`.
pub(crate) fn parts<D, S>(body: S, secrets: Arc<Vec<String>>) -> PartStream
where
    D: Decoder,
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    struct State<F, D> {
        frames: F,
        decoder: D,
        queue: VecDeque<Result<StreamPart, GenerationError>>,
        finished: bool,
        secrets: Arc<Vec<String>>,
    }
    let state = State {
        frames: D::Framing::frames(Box::pin(body)),
        decoder: D::default(),
        queue: VecDeque::new(),
        finished: false,
        secrets,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.queue.pop_front() {
                let item = item.map_err(|e| redact_error(e, &st.secrets));
                return Some((item, st));
            }
            if st.finished {
                return None;
            }
            let step = match st.frames.next().await {
                Some(Ok(frame)) => st.decoder.frame(frame),
                Some(Err(e)) => Err(e),
                None => st.decoder.end_of_body(),
            };
            match step {
                Ok(parts) => {
                    st.queue.extend(parts.into_iter().map(Ok));
                    st.finished = st.decoder.is_done();
                }
                Err(e) => {
                    st.queue.push_back(Err(e));
                    st.finished = true;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&str]) -> ByteStream {
        let chunks: Vec<Result<Bytes, reqwest::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c.as_bytes())))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    async fn lines(chunks: &[&str]) -> Vec<String> {
        Ndjson::frames(body(chunks))
            .map(|l| String::from_utf8(l.unwrap()).unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn ndjson_cuts_lines_across_chunks_and_keeps_a_last_line_without_newline() {
        assert_eq!(lines(&["a\nb", "c\n\nd"]).await, ["a\n", "bc\n", "\n", "d"]);
        assert_eq!(lines(&["a\n"]).await, ["a\n"]);
        assert!(lines(&[]).await.is_empty());
    }

    fn message(event: &str, payload: &str) -> Vec<u8> {
        use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
        let m = Message::new(payload.as_bytes().to_vec())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(event.to_string().into()),
            ));
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&m, &mut out).unwrap();
        out
    }

    fn binary(chunks: Vec<Vec<u8>>) -> ByteStream {
        let chunks: Vec<Result<Bytes, reqwest::Error>> =
            chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
        Box::pin(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn aws_event_stream_messages_are_cut_across_and_within_chunks() {
        let (a, b) = (message("one", "{\"a\":1}"), message("two", "{}"));
        let both = [a.clone(), b.clone()].concat();
        // Byte by byte, and both messages in one chunk.
        let bytes: Vec<Vec<u8>> = both.iter().map(|x| vec![*x]).collect();
        for chunks in [bytes, vec![both.clone()]] {
            let got: Vec<_> = AwsEventStream::frames(binary(chunks))
                .map(|m| String::from_utf8(m.unwrap().payload().to_vec()).unwrap())
                .collect()
                .await;
            assert_eq!(got, ["{\"a\":1}", "{}"]);
        }
        // A cut-off message and a corrupted one are retryable invalid responses.
        for broken in [both[..both.len() - 3].to_vec(), {
            let mut x = a.clone();
            let last = x.len() - 1;
            x[last] ^= 0xff;
            x
        }] {
            let got: Vec<_> = AwsEventStream::frames(binary(vec![broken])).collect().await;
            let e = got.into_iter().find_map(Result::err).unwrap();
            assert!(e.retryable && e.name == "InvalidResponseDataError", "{e:?}");
        }
    }

    #[tokio::test]
    async fn sse_yields_named_events_with_their_data() {
        let events: Vec<_> = Sse::frames(body(&["event: a\ndata: 1\n\nda", "ta: 2\n\n"]))
            .map(|e| e.unwrap())
            .map(|e| (e.name, e.data))
            .collect()
            .await;
        assert_eq!(
            events,
            [
                ("a".to_string(), "1".to_string()),
                ("message".into(), "2".into())
            ]
        );
    }
}
