//! A job's events on its own JetStream subject (`perstack.output.<jobId>`): a worker publishes
//! every line its job prints, in order; followers read them from the start.
//!
//! A record is one of three kinds, told apart by headers:
//!
//! | record | headers | payload |
//! | --- | --- | --- |
//! | an event | `Perstack-Job-Seq: <n>`, `Nats-Msg-Id: <jobId>:<n>:<claim token>` | the exact stdout JSON line (no newline) |
//! | a takeover | `Perstack-Takeover: <worker>` | why: the step in flight is repeated |
//! | the end | `Perstack-End: <status>`, `Nats-Msg-Id: <jobId>:end` | [`JobEnd`] as JSON |
//!
//! The dedupe ids make a publish that is sent again (after a lost ack, a server restart)
//! land once. A worker sends a job's records one at a time, each once the one before is
//! acknowledged (a job's records are few; the worker's jobs publish concurrently): with
//! several in flight, one lost in a dying connection would be sent again after later ones had
//! landed, out of order. A record the server does not acknowledge is sent again until it is,
//! for at most [`RESEND_FOR`]; so a follower sees every line exactly once and in order.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::queue;
use crate::schema::JobStatus;

/// How long a worker keeps sending a record the server does not acknowledge (a restarting
/// server) before it gives the job up (the job message then comes back to a worker).
pub(crate) const RESEND_FOR: Duration = Duration::from_secs(60);

/// How long a follower keeps trying to open its consumer (a server restarting).
const OPEN_FOR: Duration = Duration::from_secs(30);

const JOB_SEQ: &str = "Perstack-Job-Seq";
const TAKEOVER: &str = "Perstack-Takeover";
const END: &str = "Perstack-End";

/// How a job ended, as its followers learn it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEnd {
    /// The job's terminal status; `None` when no worker ran it (refused).
    pub status: Option<JobStatus>,
    /// Why the job was refused, when it was.
    pub reason: Option<String>,
    /// The exit code `perstack run` ends with for this job (as a local run would).
    pub exit_code: u8,
}

impl JobEnd {
    /// The end of a job that reached `status`.
    pub(crate) fn finished(status: JobStatus) -> Self {
        let exit_code = match status {
            JobStatus::Completed | JobStatus::StoppedByInteractiveTool => 0,
            _ => 1,
        };
        JobEnd {
            status: Some(status),
            reason: None,
            exit_code,
        }
    }

    /// The end of a job a worker refused.
    pub(crate) fn refused(rejection: &super::message::Rejection) -> Self {
        JobEnd {
            status: None,
            reason: Some(rejection.to_string()),
            exit_code: rejection.exit_code(),
        }
    }
}

/// Why a record could not be published or read.
#[derive(Debug, thiserror::Error)]
#[error("job output on NATS: {0}")]
pub(crate) struct OutputError(pub(crate) String);

/// The worker side: one job's records, in order.
pub(crate) struct Publisher {
    js: jetstream::Context,
    subject: String,
    job_id: String,
    token: u64,
}

impl Publisher {
    /// A publisher for `job_id`, whose claim has fencing `token`.
    pub(crate) fn new(js: jetstream::Context, job_id: &str, token: u64) -> Self {
        Publisher {
            js,
            subject: queue::output_subject(job_id),
            job_id: job_id.to_owned(),
            token,
        }
    }

    /// One event: its stdout line and its job sequence number.
    pub(crate) async fn event(&mut self, line: Vec<u8>, job_seq: u64) -> Result<(), OutputError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:{job_seq}:{}", self.job_id, self.token).as_str(),
        );
        headers.insert(JOB_SEQ, job_seq.to_string().as_str());
        self.send(headers, line.into()).await
    }

    /// Tell followers that `worker` took the job over: the step in flight is repeated.
    pub(crate) async fn takeover(&mut self, worker: &str) -> Result<(), OutputError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:takeover:{}", self.job_id, self.token).as_str(),
        );
        headers.insert(TAKEOVER, worker);
        self.send(
            headers,
            Bytes::from_static(b"the job was taken over; its step in flight is repeated"),
        )
        .await
    }

    /// The end record; returns once it is acknowledged.
    pub(crate) async fn end(&mut self, end: &JobEnd) -> Result<(), OutputError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:end", self.job_id).as_str(),
        );
        let status = end.status.map_or("refused".to_owned(), |s| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        });
        headers.insert(END, status.as_str());
        let body = serde_json::to_vec(end).unwrap_or_default();
        self.send(headers, body.into()).await
    }

    /// Send one record until it is acknowledged (the dedupe id drops a copy that had
    /// landed), for at most [`RESEND_FOR`].
    async fn send(&mut self, headers: HeaderMap, payload: Bytes) -> Result<(), OutputError> {
        let deadline = tokio::time::Instant::now() + RESEND_FOR;
        loop {
            let sent = self
                .js
                .publish_with_headers(self.subject.clone(), headers.clone(), payload.clone())
                .await;
            let acked = match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(OutputError(format!(
                        "job {}: the server did not acknowledge for {} s: {e}",
                        self.job_id,
                        RESEND_FOR.as_secs()
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, job = %self.job_id, "no ack; sending again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// One record of a job's output, as a follower reads it.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    /// An event: its stdout line (without newline) and job sequence number.
    Event { line: Bytes, job_seq: Option<u64> },
    /// Another worker took the job over (the text says what that means).
    Takeover { worker: String },
    /// The job ended.
    End(JobEnd),
}

/// The follower side: a job's records from the first, in order.
pub(crate) struct Follower {
    messages: jetstream::consumer::pull::Ordered,
}

impl Follower {
    /// Follow `job_id` from its first record (an ordered consumer: it recreates itself after
    /// a lost connection and resumes where it was).
    pub(crate) async fn open(js: &jetstream::Context, job_id: &str) -> Result<Self, OutputError> {
        // A server that is restarting answers again within moments: try for a while.
        let deadline = tokio::time::Instant::now() + OPEN_FOR;
        loop {
            match Self::try_open(js, job_id).await {
                Ok(follower) => return Ok(follower),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "follow: cannot open yet; again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    async fn try_open(js: &jetstream::Context, job_id: &str) -> Result<Self, OutputError> {
        let stream = queue::output_stream(js)
            .await
            .map_err(|e| OutputError(e.to_string()))?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: queue::output_subject(job_id),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| OutputError(e.to_string()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| OutputError(e.to_string()))?;
        Ok(Follower { messages })
    }

    /// The next record; waits for it.
    pub(crate) async fn next(&mut self) -> Result<Record, OutputError> {
        loop {
            let message = match self.messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "follow: consumer hiccup; going on");
                    continue;
                }
                None => return Err(OutputError("the job's output stream closed".into())),
            };
            let headers = message.headers.clone().unwrap_or_default();
            if headers.get(END).is_some() {
                let end: JobEnd = serde_json::from_slice(&message.payload)
                    .map_err(|e| OutputError(format!("bad end record: {e}")))?;
                return Ok(Record::End(end));
            }
            if let Some(worker) = headers.get(TAKEOVER) {
                return Ok(Record::Takeover {
                    worker: worker.to_string(),
                });
            }
            let job_seq = headers
                .get(JOB_SEQ)
                .and_then(|v| v.as_str().parse::<u64>().ok());
            return Ok(Record::Event {
                line: message.payload.clone(),
                job_seq,
            });
        }
    }
}
