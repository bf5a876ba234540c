//! A job's events on its own JetStream subject (`perstack.output.<jobId>`, and one subject per
//! continuation: [`Output`]): a worker publishes every line its job prints, in order;
//! followers read them from the start.
//!
//! A record is one of three kinds, told apart by headers:
//!
//! | record | headers | payload |
//! | --- | --- | --- |
//! | an event | `Perstack-Job-Seq: <n>`, `Nats-Msg-Id: <id>:<n>:<delivery>` | the exact stdout JSON line (no newline) |
//! | a takeover | `Perstack-Takeover: <worker>` | why: the step in flight is repeated |
//! | the end | `Perstack-End: <status>`, `Nats-Msg-Id: <id>:end` | [`JobEnd`] as JSON |
//!
//! (`<id>` is [`Output::id`]: the job id, or `<jobId>:<invocation>` for a continuation.)
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
use async_nats::jetstream::context::PublishErrorKind;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::message::Output;
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
pub(crate) enum OutputError {
    /// Another worker wrote to the job's subject since this one last did (it took the job
    /// over): this worker must write nothing more of the job.
    #[error("job {0}: another worker took the job over; this one writes nothing more of it")]
    Fenced(String),
    /// The server did not answer, or answered with an error.
    #[error("job output on NATS: {0}")]
    Failed(String),
}

/// What is on a job's subject already (for a worker that picks the job up).
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    /// The job sequence number of the last event published, 0 for none.
    pub last_job_seq: u64,
    /// Whether the last record is the end record.
    pub ended: bool,
    /// Whether the subject holds any record (an event, a takeover record, the end).
    pub any: bool,
}

/// The worker side: one job's records, in order, fenced. Each publish expects the subject's
/// last sequence to be the one this publisher saw last (`Nats-Expected-Last-Subject-Sequence`):
/// once another worker wrote a record (its takeover record comes first), the server refuses
/// every further record of this one ([`OutputError::Fenced`]).
pub(crate) struct Publisher {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    subject: String,
    /// [`Output::id`]: the prefix of the records' dedupe ids.
    id: String,
    job_id: String,
    token: u64,
    /// The stream sequence of the last record on the subject that this publisher knows of.
    last: u64,
}

impl Publisher {
    /// A publisher for `output` (`token` makes its message ids its own), positioned after the
    /// subject's last record; also says what that record is.
    pub(crate) async fn open(
        js: jetstream::Context,
        output: &Output,
        token: u64,
    ) -> Result<(Self, Published), OutputError> {
        let stream = queue::output_stream(&js)
            .await
            .map_err(|e| OutputError::Failed(e.to_string()))?;
        let mut publisher = Publisher {
            js,
            stream,
            subject: output.subject(),
            id: output.id(),
            job_id: output.job_id.clone(),
            token,
            last: 0,
        };
        let published = publisher.refresh().await?;
        Ok((publisher, published))
    }

    /// Read the subject's last record (trying through a restarting server).
    async fn refresh(&mut self) -> Result<Published, OutputError> {
        let deadline = tokio::time::Instant::now() + RESEND_FOR;
        loop {
            match self
                .stream
                .get_last_raw_message_by_subject(&self.subject)
                .await
            {
                Ok(m) => {
                    self.last = m.sequence;
                    let ended = m.headers.get(END).is_some();
                    let last_job_seq = m
                        .headers
                        .get(JOB_SEQ)
                        .and_then(|v| v.as_str().parse().ok())
                        .unwrap_or(0);
                    return Ok(Published {
                        last_job_seq,
                        ended,
                        any: true,
                    });
                }
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    self.last = 0;
                    return Ok(Published::default());
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(OutputError::Failed(e.to_string()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// One event: its stdout line and its job sequence number.
    pub(crate) async fn event(&mut self, line: Vec<u8>, job_seq: u64) -> Result<(), OutputError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:{job_seq}:{}", self.id, self.token).as_str(),
        );
        headers.insert(JOB_SEQ, job_seq.to_string().as_str());
        self.send(headers, line.into()).await
    }

    /// Tell followers that `worker` took the job over (the step in flight is repeated), and
    /// fence out the worker that had it: written by the new holder of the job's claim, after
    /// whatever the old one managed to write.
    pub(crate) async fn takeover(&mut self, worker: &str) -> Result<(), OutputError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:takeover:{}", self.id, self.token).as_str(),
        );
        headers.insert(TAKEOVER, worker);
        let body = Bytes::from_static(b"the job was taken over; its step in flight is repeated");
        let mut result = Ok(());
        for _ in 0..5 {
            self.refresh().await?;
            result = self.send(headers.clone(), body.clone()).await;
            if !matches!(result, Err(OutputError::Fenced(_))) {
                break;
            }
        }
        result
    }

    /// The end record; returns once it is acknowledged.
    pub(crate) async fn end(&mut self, end: &JobEnd) -> Result<(), OutputError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:end", self.id).as_str(),
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

    /// Send one record until it is acknowledged, for at most [`RESEND_FOR`]. A copy that had
    /// landed before its ack was lost is recognised (by its message id, as the subject's last
    /// record), never written twice.
    async fn send(&mut self, mut headers: HeaderMap, payload: Bytes) -> Result<(), OutputError> {
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            self.last.to_string().as_str(),
        );
        let msg_id = headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned());
        let deadline = tokio::time::Instant::now() + RESEND_FOR;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = match self
                .js
                .publish_with_headers(self.subject.clone(), headers.clone(), payload.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let e = match sent {
                Ok(ack) => {
                    self.last = ack.sequence;
                    return Ok(());
                }
                Err(e) => e,
            };
            if e.kind() == PublishErrorKind::WrongLastSequence {
                if attempt > 1
                    && let Ok(last) = self
                        .stream
                        .get_last_raw_message_by_subject(&self.subject)
                        .await
                    && last
                        .headers
                        .get(async_nats::header::NATS_MESSAGE_ID)
                        .map(|v| v.as_str().to_owned())
                        == msg_id
                {
                    self.last = last.sequence;
                    return Ok(());
                }
                return Err(OutputError::Fenced(self.job_id.clone()));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OutputError::Failed(format!(
                    "job {}: the server did not acknowledge for {} s: {e}",
                    self.job_id,
                    RESEND_FOR.as_secs()
                )));
            }
            tracing::warn!(error = %e, job = %self.job_id, "no ack; sending again");
            tokio::time::sleep(Duration::from_millis(200)).await;
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
    /// Follow `output` from its first record (an ordered consumer: it recreates itself after
    /// a lost connection and resumes where it was).
    pub(crate) async fn open(
        js: &jetstream::Context,
        output: &Output,
    ) -> Result<Self, OutputError> {
        // A server that is restarting answers again within moments: try for a while.
        let deadline = tokio::time::Instant::now() + OPEN_FOR;
        loop {
            match Self::try_open(js, output).await {
                Ok(follower) => return Ok(follower),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "follow: cannot open yet; again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    async fn try_open(js: &jetstream::Context, output: &Output) -> Result<Self, OutputError> {
        let stream = queue::output_stream(js)
            .await
            .map_err(|e| OutputError::Failed(e.to_string()))?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: output.subject(),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| OutputError::Failed(e.to_string()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| OutputError::Failed(e.to_string()))?;
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
                None => return Err(OutputError::Failed("the job's output stream closed".into())),
            };
            let headers = message.headers.clone().unwrap_or_default();
            if headers.get(END).is_some() {
                let end: JobEnd = serde_json::from_slice(&message.payload)
                    .map_err(|e| OutputError::Failed(format!("bad end record: {e}")))?;
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
