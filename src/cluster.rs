//! The cluster: jobs submitted to a NATS JetStream work queue and run by `perstack worker`
//! processes, each on its own local [`Engine`](crate::engine::Engine).
//!
//! | file | owns |
//! | --- | --- |
//! | `connect` | connecting to NATS: URL, user/password, token, credentials file, TLS (secrets never printed) |
//! | `message` | the job message (resolved Experts and their digest, env var names, options) and why one is refused |
//! | `queue` | the subjects, streams and the durable consumer, created on first use; the dead-letter subject |
//! | `output` | a job's events on its own subject: publishing them (worker) and following them (client) |
//! | `worker` | the worker loop: pull, run, heartbeat, ack; drain on SIGTERM; cancel |
//! | `delegate` | `--placement cluster`: children as messages, results and the join in key-value entries, the parent resumed by whoever stores the last result |
//! | `client` | [`Client`]: the embedding API to submit, follow, cancel and wait |
//!
//! What flows where:
//!
//! ```text
//! client --JobMessage--> perstack.jobs (work queue, durable consumer "workers")
//!                              |  pull, explicit ack, progress heartbeats, bounded redelivery
//!                              v
//!                         worker: Engine per job, workspace <work-dir>/jobs/<jobId>
//!                              |  every stdout line of the job, in order (header: jobSeq)
//!                              v
//! client <--follow------- perstack.output.<jobId>  (ends with an end record: the job's status)
//!                          perstack.output.<jobId>.~<invocation>  (a continuation's own)
//! refused messages -----> perstack.dead (the reason in a header, the message as it came)
//! --placement cluster:    perstack.delegations (one per child) -> perstack.joins (see delegate)
//! Ctrl-C: client -------> perstack.cancel.<jobId> (every worker listens; the holder cancels)
//! ```
//!
//! The worker stays the only writer of its jobs' events (its bus), and a job is written by the
//! holder of its [`Claim`](crate::storage::Claim) only. Nothing here stores checkpoints: that
//! is the [`Storage`](crate::storage::Storage) the worker is given.

mod client;
pub(crate) mod connect;
pub(crate) mod delegate;
pub(crate) mod message;
pub(crate) mod output;
pub(crate) mod queue;
pub(crate) mod worker;

pub use client::{Client, ClusterError, Followed, Invocation, JobEnd};
pub use connect::{ConnectError, NatsOptions, Secret};
pub use message::Placement;
pub use queue::QueueError;
