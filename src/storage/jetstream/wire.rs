//! The store's only conversation with the server: a publish that returns once JetStream
//! acknowledged it (retried through disconnects under one deadline, made idempotent by its
//! `Nats-Msg-Id`), the last message of a subject, and a scan of the messages under a filter.
//!
//! It decides nothing about records: callers build subjects and headers ([`super::names`]) and
//! choose the fencing headers ([`super::lease`]). Every server error becomes a [`StoreError`]
//! here, and only here, without the connection URL or anything else that may hold a secret.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::context::{Context, PublishError, PublishErrorKind};
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use crate::storage::StoreError;

/// Pause between two attempts of an operation the server did not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why a publish did not land.
#[derive(Debug)]
pub(crate) enum PublishFailure {
    /// The expected-last-sequence check failed: someone else wrote under the filter (a new
    /// holder's fence record, or a competing claimant).
    WrongLastSequence,
    /// Anything else, already a store error.
    Store(StoreError),
}

/// A message read from a stream: its sequence, headers and body.
#[derive(Debug)]
pub(crate) struct Stored {
    pub sequence: u64,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl Stored {
    /// The value of header `name`, if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }

    /// Whether this is a deletion (a key-value `DEL`/`PURGE`, or the marker the server leaves
    /// when a key's TTL expired) rather than a value.
    pub(crate) fn is_deletion(&self) -> bool {
        self.header(super::names::KV_OPERATION)
            .is_some_and(|op| op == "DEL" || op == "PURGE")
            || self.header(super::names::MARKER_REASON).is_some()
    }

    fn from_stream(m: StreamMessage) -> Self {
        Stored {
            sequence: m.sequence,
            headers: m.headers,
            payload: m.payload,
        }
    }
}

/// The JetStream context plus the deadline every operation gets.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    js: Context,
    /// How long one operation keeps trying while the server does not answer (a restart, a
    /// partition) before it fails with [`StoreError::Unavailable`]. A write that returns `Ok`
    /// was acknowledged; one that fails this way may or may not have landed (a retry with the
    /// same message id cannot duplicate it).
    deadline: Duration,
}

impl Wire {
    pub(crate) fn new(js: Context, deadline: Duration) -> Self {
        Wire { js, deadline }
    }

    pub(crate) fn context(&self) -> &Context {
        &self.js
    }

    /// Publishes and waits for the acknowledgement; returns the stream sequence. `headers`
    /// must carry a `Nats-Msg-Id`, which makes a repeated attempt harmless. When an attempt
    /// after the first fails the expected-sequence check, the first may have landed before its
    /// acknowledgement was lost: if the last message under `verify` carries this message id,
    /// the write succeeded.
    pub(crate) async fn publish(
        &self,
        operation: &'static str,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
        verify: Option<(&Stream, &str)>,
    ) -> Result<u64, PublishFailure> {
        let started = Instant::now();
        let msg_id = headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned());
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let message = PublishMessage::build()
                .headers(headers.clone())
                .payload(payload.clone());
            let result = match self.js.send_publish(subject.to_owned(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => e,
            };
            match error.kind() {
                PublishErrorKind::WrongLastSequence => {
                    if attempt > 1
                        && let (Some((stream, filter)), Some(id)) = (verify, msg_id.as_deref())
                        && let Ok(Some(last)) = self.last(stream, filter).await
                        && last.header("Nats-Msg-Id") == Some(id)
                    {
                        return Ok(last.sequence);
                    }
                    return Err(PublishFailure::WrongLastSequence);
                }
                _ if !is_unanswered(&error) => {
                    return Err(PublishFailure::Store(rejected(operation, &error)));
                }
                _ if started.elapsed() < self.deadline => tokio::time::sleep(RETRY_PAUSE).await,
                _ => return Err(PublishFailure::Store(unavailable(operation, &error))),
            }
        }
    }

    /// The last message stored on `subject` (a filter with wildcards is allowed), or `None`.
    pub(crate) async fn last(
        &self,
        stream: &Stream,
        subject: &str,
    ) -> Result<Option<Stored>, StoreError> {
        let started = Instant::now();
        loop {
            match stream.direct_get_last_for_subject(subject).await {
                Ok(m) => return Ok(Some(Stored::from_stream(m))),
                Err(e) => match e.kind() {
                    DirectGetErrorKind::NotFound => return Ok(None),
                    // Not answered (yet): a disconnect, or JetStream still starting after a
                    // restart (no responders).
                    kind if is_transient(&kind) && started.elapsed() < self.deadline => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    kind if is_transient(&kind) => return Err(unavailable("read", &e)),
                    _ => return Err(rejected("read", &e)),
                },
            }
        }
    }

    /// Every message under `filter` (all of them, or the last of each subject), in stream
    /// order, through an ordered consumer that the server forgets on its own.
    pub(crate) async fn scan(
        &self,
        stream: &Stream,
        filter: &str,
        last_per_subject: bool,
    ) -> Result<Vec<Stored>, StoreError> {
        let started = Instant::now();
        loop {
            match tokio::time::timeout(
                self.deadline,
                self.scan_once(stream, filter, last_per_subject),
            )
            .await
            {
                Ok(Ok(found)) => return Ok(found),
                Ok(Err(e)) if started.elapsed() < self.deadline => {
                    tracing::debug!(error = %e, "scan failed; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(unavailable("read", &"no answer in time")),
            }
        }
    }

    async fn scan_once(
        &self,
        stream: &Stream,
        filter: &str,
        last_per_subject: bool,
    ) -> Result<Vec<Stored>, StoreError> {
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.to_owned(),
                deliver_policy: if last_per_subject {
                    DeliverPolicy::LastPerSubject
                } else {
                    DeliverPolicy::All
                },
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("read", &e))?;
        let pending = consumer.cached_info().num_pending;
        let mut found = Vec::with_capacity(usize::try_from(pending).unwrap_or(0));
        if pending == 0 {
            return Ok(found);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable("read", &e))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| unavailable("read", &e))?;
            let info = message.info().map_err(|e| rejected("read", &e))?;
            let (sequence, left) = (info.stream_sequence, info.pending);
            found.push(Stored {
                sequence,
                headers: message.headers.clone().unwrap_or_default(),
                payload: message.payload.clone(),
            });
            if left == 0 {
                break;
            }
        }
        Ok(found)
    }
}

/// Whether a publish failed for want of a working server rather than by a refusal: no
/// answer (a disconnect, a timeout, no responders while the stream is not back yet), or
/// JetStream's answer that it cannot take writes for now: an API error with status 503, such
/// as err 10008 ("JetStream system temporarily unavailable") from a server that restarted and
/// is still recovering its streams. `async-nats` reports those as `Other`, as it does a
/// refusal.
fn is_unanswered(e: &PublishError) -> bool {
    match e.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => true,
        PublishErrorKind::Other => std::error::Error::source(e)
            .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
            .is_some_and(|api| api.code() == UNAVAILABLE),
        PublishErrorKind::WrongLastSequence
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::MaxPayloadExceeded => false,
    }
}

/// The status of a JetStream API error that says "not now" rather than "no".
const UNAVAILABLE: usize = 503;

/// Whether a direct get failed for want of an answer rather than by a refusal.
fn is_transient(kind: &DirectGetErrorKind) -> bool {
    match kind {
        DirectGetErrorKind::TimedOut | DirectGetErrorKind::Request | DirectGetErrorKind::Other => {
            true
        }
        DirectGetErrorKind::ErrorResponse(status, _) => {
            *status == async_nats::StatusCode::NO_RESPONDERS
        }
        DirectGetErrorKind::NotFound | DirectGetErrorKind::InvalidSubject => false,
    }
}

/// The server did not answer (or the connection is down): worth trying again later.
pub(crate) fn unavailable(operation: &'static str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        operation,
        message: redact(&e.to_string()),
    }
}

/// The server answered with a refusal that repeating will not change.
pub(crate) fn rejected(operation: &'static str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Rejected {
        operation,
        message: redact(&e.to_string()),
    }
}

/// Removes `user:password@` (or `token@`) from anything that looks like a URL, so a server
/// address with credentials never reaches an error message.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == ',')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("[redacted]@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};

    use super::{is_unanswered, redact};

    /// A publish that JetStream answered with an API error of `code` (status) and `err_code`.
    fn answered(code: u16, err_code: u64, description: &str) -> PublishError {
        let api: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": code,
            "err_code": err_code,
            "description": description,
        }))
        .expect("an API error");
        PublishError::with_source(PublishErrorKind::Other, api)
    }

    #[test]
    fn a_server_that_cannot_take_writes_yet_is_retried_and_a_refusal_is_not() {
        // What a restarted server answers while it recovers its streams.
        let recovering = answered(503, 10008, "JetStream system temporarily unavailable");
        assert!(is_unanswered(&recovering), "{recovering}");
        assert!(is_unanswered(&PublishError::new(
            PublishErrorKind::TimedOut
        )));
        assert!(is_unanswered(&PublishError::new(
            PublishErrorKind::StreamNotFound
        )));
        // Refusals: repeating them changes nothing.
        let full = answered(400, 10047, "insufficient resources");
        assert!(!is_unanswered(&full), "{full}");
        assert!(!is_unanswered(&PublishError::new(PublishErrorKind::Other)));
        assert!(!is_unanswered(&PublishError::new(
            PublishErrorKind::WrongLastMessageId
        )));
        assert!(!is_unanswered(&PublishError::new(
            PublishErrorKind::MaxPayloadExceeded
        )));
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact("cannot reach nats://alice:s3cret@10.0.0.1:4222, giving up"),
            "cannot reach nats://[redacted]@10.0.0.1:4222, giving up"
        );
        assert_eq!(
            redact("tls://tok@host and nats://plain:4222"),
            "tls://[redacted]@host and nats://plain:4222"
        );
        assert_eq!(redact("no url here"), "no url here");
    }
}
