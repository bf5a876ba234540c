//! The subjects, streams and consumer of the cluster, created on first use by whoever comes
//! first (a worker or a submitter) with the same settings.
//!
//! | stream | subjects | retention | limits |
//! | --- | --- | --- | --- |
//! | `PERSTACK_JOBS` | `perstack.jobs`, `perstack.delegations`, `perstack.joins` | work queue (a message leaves when a worker acks it) | 2 min dedupe window (job id; delegation and join ids, see `delegate`) |
//! | `PERSTACK_OUTPUT` | `perstack.output.<jobId>` | limits | 7 days, 2 min dedupe window |
//! | `PERSTACK_DEAD` | `perstack.dead` | limits | 30 days |
//! | `PERSTACK_CANCEL` | `perstack.cancel.<jobId>` (`.~<invocation>` for a continuation) | limits, the last message per subject | 7 days |
//!
//! The durable consumer `workers` on `PERSTACK_JOBS` is shared by every worker: explicit ack,
//! an ack wait of one lease (a worker sends progress every third of it while a job runs, so a
//! paused or dead worker's job comes back after one lease), at most [`MAX_DELIVER`]
//! deliveries. All streams have one replica; on a clustered server, raise `num_replicas` with
//! `nats stream edit` (the settings here are only used to create what is missing).
//! A cancel (`perstack.cancel.<jobId>`) reaches the worker running the invocation at once (it
//! subscribes), and stays in `PERSTACK_CANCEL` for an invocation still in the queue: the
//! worker that takes it looks there first, and ends it cancelled without running it.
//! Delegations placed on the cluster (`delegate`) keep their join state in the key-value
//! bucket `perstack_delegations` and each child's result (its printed lines, checkpoints and
//! run settings) in the object store `perstack_delegation_results`, both kept [`KEPT_FOR`]
//! (7 days, as the output) and then dropped by the server: a job still waiting for its children
//! after that can no longer be joined.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

/// The work-queue subject.
pub(crate) const JOBS_SUBJECT: &str = "perstack.jobs";
/// The work-queue subject of delegated runs placed on the cluster (`delegate`).
pub(crate) const DELEGATION_SUBJECT: &str = "perstack.delegations";
/// The work-queue subject of joins: a parent whose children all reported, to resume.
pub(crate) const JOIN_SUBJECT: &str = "perstack.joins";
/// The key-value bucket of delegation results and join records.
pub(crate) const DELEGATION_BUCKET: &str = "perstack_delegations";
/// The object store of the children's results.
pub(crate) const RESULT_OBJECTS: &str = "perstack_delegation_results";
/// How long the server keeps a job's printed lines, cancels and delegation records.
pub(crate) const KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// The dead-letter subject.
pub(crate) const DEAD_SUBJECT: &str = "perstack.dead";
const JOBS_STREAM: &str = "PERSTACK_JOBS";
const OUTPUT_STREAM: &str = "PERSTACK_OUTPUT";
const DEAD_STREAM: &str = "PERSTACK_DEAD";
const CANCEL_STREAM: &str = "PERSTACK_CANCEL";
const CONSUMER: &str = "workers";

/// How often one job message is delivered before the worker that gets it the last time
/// dead-letters it: a job that crashed its worker this many times will not run anywhere.
pub(crate) const MAX_DELIVER: i64 = 10;

/// A job's event subject.
pub(crate) fn output_subject(job_id: &str) -> String {
    format!("perstack.output.{job_id}")
}

/// The cancel subject of a job.
pub(crate) fn cancel_subject(job_id: &str) -> String {
    format!("perstack.cancel.{job_id}")
}

/// Every worker's cancel subscription (job ids may hold dots; a continuation's subject has one
/// more token).
pub(crate) const CANCEL_ALL: &str = "perstack.cancel.>";

/// Why the streams or the consumer could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up JetStream {what}: {message}")]
pub struct QueueError {
    what: &'static str,
    message: String,
}

fn err(what: &'static str) -> impl Fn(String) -> QueueError {
    move |message| QueueError { what, message }
}

/// The output stream (created when missing); followers read from it.
pub(crate) async fn output_stream(js: &jetstream::Context) -> Result<stream::Stream, QueueError> {
    js.get_or_create_stream(stream::Config {
        name: OUTPUT_STREAM.into(),
        subjects: vec!["perstack.output.>".into()],
        max_age: KEPT_FOR,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| err("output stream")(e.to_string()))
}

/// The cancel stream (created when missing): the last cancel of each invocation.
pub(crate) async fn cancel_stream(js: &jetstream::Context) -> Result<stream::Stream, QueueError> {
    js.get_or_create_stream(stream::Config {
        name: CANCEL_STREAM.into(),
        subjects: vec![CANCEL_ALL.into()],
        max_age: KEPT_FOR,
        max_messages_per_subject: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| err("cancel stream")(e.to_string()))
}

/// Whether a cancel of the invocation whose cancel subject is `subject` is stored.
pub(crate) async fn cancel_requested(
    js: &jetstream::Context,
    subject: &str,
) -> Result<bool, QueueError> {
    let stream = cancel_stream(js).await?;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(err("cancel stream")(e.to_string())),
    }
}

/// Every stream (created when missing), for a submitter.
pub(crate) async fn ensure_streams(js: &jetstream::Context) -> Result<stream::Stream, QueueError> {
    cancel_stream(js).await?;
    js.get_or_create_stream(stream::Config {
        name: DEAD_STREAM.into(),
        subjects: vec![DEAD_SUBJECT.into()],
        max_age: Duration::from_secs(30 * 24 * 3600),
        ..Default::default()
    })
    .await
    .map_err(|e| err("dead-letter stream")(e.to_string()))?;
    output_stream(js).await?;
    let subjects = [JOBS_SUBJECT, DELEGATION_SUBJECT, JOIN_SUBJECT];
    let mut jobs = js
        .get_or_create_stream(stream::Config {
            name: JOBS_STREAM.into(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| err("job stream")(e.to_string()))?;
    // A stream made by a version before delegations were placed on the cluster lacks their
    // subjects: add them (nothing else of an existing stream is changed).
    let mut config = jobs.cached_info().config.clone();
    let missing: Vec<String> = subjects
        .iter()
        .filter(|s| !config.subjects.iter().any(|c| c == *s))
        .map(|s| (*s).to_owned())
        .collect();
    if !missing.is_empty() {
        config.subjects.extend(missing);
        js.update_stream(&config)
            .await
            .map_err(|e| err("job stream")(e.to_string()))?;
        jobs = js
            .get_stream(JOBS_STREAM)
            .await
            .map_err(|e| err("job stream")(e.to_string()))?;
    }
    Ok(jobs)
}

/// The shared durable consumer, its ack wait one `lease`.
pub(crate) async fn consumer(
    js: &jetstream::Context,
    lease: Duration,
) -> Result<consumer::PullConsumer, QueueError> {
    let jobs = ensure_streams(js).await?;
    jobs.get_or_create_consumer(
        CONSUMER,
        consumer::pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: lease,
            max_deliver: MAX_DELIVER,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| err("consumer")(e.to_string()))
}

/// The delegation bucket and the result object store (created when missing).
pub(crate) async fn delegation_stores(
    js: &jetstream::Context,
) -> Result<(jetstream::kv::Store, jetstream::object_store::ObjectStore), QueueError> {
    let kv = match js.get_key_value(DELEGATION_BUCKET).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(jetstream::kv::Config {
                bucket: DELEGATION_BUCKET.into(),
                history: 1,
                max_age: KEPT_FOR,
                ..Default::default()
            })
            .await
            .map_err(|e| err("delegation bucket")(e.to_string()))?,
    };
    let objects = match js.get_object_store(RESULT_OBJECTS).await {
        Ok(o) => o,
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: RESULT_OBJECTS.into(),
                max_age: KEPT_FOR,
                ..Default::default()
            })
            .await
            .map_err(|e| err("delegation result store")(e.to_string()))?,
    };
    Ok((kv, objects))
}
