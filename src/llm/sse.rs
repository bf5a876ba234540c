//! The server-sent-events driver shared by the Anthropic, OpenAI-compatible and Gemini
//! providers: response bytes → SSE events → the provider's [`SseDecoder`] → a [`PartStream`].
//!
//! It owns what the three have in common: a transport error mid-stream is a retryable
//! "stream broke off", a malformed event stream is a retryable `InvalidResponseDataError`, the
//! first error ends the stream, and every error is scrubbed of the provider's secrets. The
//! decoders own the wire format and decide when a stream is complete.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

use super::http::{redact_error, transport_error};
use super::{GenerationError, PartStream, StreamPart};

/// One provider's SSE wire format.
pub(crate) trait SseDecoder: Default + Send + 'static {
    /// One event: its `event:` name (empty when absent) and its `data:` text.
    fn event(&mut self, name: &str, data: &str) -> Result<Vec<StreamPart>, GenerationError>;

    /// The body ended: the last parts, or why the answer is incomplete.
    fn end_of_body(&mut self) -> Result<Vec<StreamPart>, GenerationError>;

    /// Whether the answer is complete; nothing after it is read.
    fn is_done(&self) -> bool;
}

/// The parts of one SSE response body, decoded by `D`.
pub(crate) fn parts<D, S>(body: S, secrets: Arc<Vec<String>>) -> PartStream
where
    D: SseDecoder,
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    struct State<E, D> {
        events: E,
        decoder: D,
        queue: VecDeque<Result<StreamPart, GenerationError>>,
        finished: bool,
        secrets: Arc<Vec<String>>,
    }
    let state = State {
        events: Box::pin(body.eventsource()),
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
            let step = match st.events.next().await {
                Some(Ok(ev)) => st.decoder.event(&ev.event, &ev.data),
                Some(Err(EventStreamError::Transport(e))) => {
                    let mut e = transport_error(e, &st.secrets);
                    e.message = format!("The stream broke off: {}", e.message);
                    Err(e)
                }
                Some(Err(other)) => Err(GenerationError::invalid_response(format!(
                    "invalid event stream: {other}"
                ))),
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
