//! The claim of a job on JetStream: a lease with fencing.
//!
//! - **Lease.** One key per job in the lease bucket (`perstack_leases`), holding who holds it.
//!   It is created with compare-and-set on the key's last sequence (0, or that of the deletion
//!   or expiry marker it replaces), so of two claimants exactly one wins. Every write carries a
//!   per-message TTL: the **server** removes a lease that was not renewed in time. A heartbeat
//!   task renews it (again with compare-and-set) while the [`Claim`] lives, and deletes it when
//!   the claim is dropped. The holder also watches its own monotonic clock: when no renewal was
//!   acknowledged within one TTL of being sent, it stops trusting the lease. No two machines'
//!   wall clocks are ever compared.
//! - **Fencing token**: the lease's creation sequence, which only grows.
//! - **Fencing.** After winning the lease the new holder first writes a fence record into the
//!   job's key-value subjects and a claim record onto its event subject. Every later write of
//!   the job through this store expects the last sequence it saw itself (key-value writes over
//!   the filter `<job>.>`, events on `perstack.events.<job>`). A holder that lost the lease
//!   (paused past the TTL, partitioned) finds its expectation broken by the new holder's
//!   records: the server refuses its next write, the store marks the claim lost, and refuses
//!   every later write of that job locally (the fence stays until this store claims the job
//!   again). [`Claim::lost`] tells the engine, so it can stop the job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::names;
use super::wire::{PublishFailure, Wire};
use super::{Handles, JetStreamConfig};
use crate::storage::{Claim, StoreError};

/// What a lease entry holds.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseValue {
    /// Who holds it (`pid 123 on host (store 1a2b)`), for messages only.
    holder: String,
    /// The fencing token of the claim (the lease's creation sequence); 0 on the creating write,
    /// which cannot know its own sequence yet.
    token: u64,
}

/// This store's hold on one job: the fencing state every write of the job goes through.
#[derive(Debug)]
pub(crate) struct Fence {
    job_id: String,
    token: u64,
    /// `true` once the claim is lost; the engine watches it through [`Claim::lost`].
    lost: watch::Sender<bool>,
    /// Held across each fenced key-value write and its acknowledgement: the last sequence
    /// under the job's key-value filter that this holder knows of. Writes of one job queue
    /// here (one round trip each); other jobs are not affected.
    pub(crate) kv: tokio::sync::Mutex<u64>,
    /// The same for the job's event subject.
    pub(crate) events: tokio::sync::Mutex<u64>,
    /// Numbers this holder's writes for their message ids.
    writes: AtomicU64,
    /// Set when the [`Claim`] is dropped.
    dropped: AtomicBool,
    /// Set once a dropped claim's lease is released (or given up).
    released: watch::Sender<bool>,
}

impl Fence {
    /// The claim's fencing token.
    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    pub(crate) fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    pub(crate) fn mark_lost(&self) {
        if !self.lost.send_replace(true) {
            tracing::warn!(job = %self.job_id, token = self.token, "the claim of the job was lost; nothing more of it is written");
        }
    }

    /// A message id no other write can have: job, token and a counter.
    pub(crate) fn next_msg_id(&self, what: &str) -> String {
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        format!("{}:{}:{what}:{n}", self.job_id, self.token)
    }

    /// Once the claim is dropped, wait (at most `limit`) until its lease is released.
    pub(crate) async fn settle_release(&self, limit: Duration) {
        if !self.dropped.load(Ordering::Acquire) {
            return;
        }
        let mut released = self.released.subscribe();
        let _ = tokio::time::timeout(limit, released.wait_for(|done| *done)).await;
    }

    pub(crate) fn lost_error(&self) -> StoreError {
        StoreError::ClaimLost {
            job_id: self.job_id.clone(),
        }
    }
}

/// What a [`Claim`] holds: dropping it stops the heartbeat, which then releases the lease.
struct LeaseHold {
    fence: Arc<Fence>,
    _stop: oneshot::Sender<()>,
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.fence.dropped.store(true, Ordering::Release);
    }
}

/// The part of the store the lease works with.
pub(crate) struct Leases<'a> {
    pub wire: &'a Wire,
    pub handles: &'a Handles,
    pub config: &'a JetStreamConfig,
    pub fences: &'a Arc<DashMap<String, Arc<Fence>>>,
    pub holder: &'a str,
    /// Test switch: heartbeats neither renew nor notice anything, as in a paused process.
    pub frozen: &'a Arc<AtomicBool>,
}

impl Leases<'_> {
    /// Takes job `job_id`'s lease, writes the fence records and starts the heartbeat.
    pub(crate) async fn claim(&self, job_id: &str) -> Result<Claim, StoreError> {
        if let Some(previous) = self.fences.get(job_id).map(|f| Arc::clone(&f)) {
            if previous.dropped.load(Ordering::Acquire) {
                // Dropped here a moment ago: let its release land first, so that the caller
                // (who waited for the job to end) gets the job, not a refusal.
                let mut released = previous.released.subscribe();
                let _ = tokio::time::timeout(
                    self.config.write_timeout,
                    released.wait_for(|done| *done),
                )
                .await;
            } else if !previous.is_lost() {
                return Err(StoreError::Claimed {
                    job_id: job_id.to_owned(),
                    holder: self.holder.to_owned(),
                });
            }
        }
        let subject = names::lease_subject(job_id);
        let expected = match self.wire.last(&self.handles.leases, &subject).await? {
            None => 0,
            Some(entry) if entry.is_deletion() => entry.sequence,
            Some(entry) => return Err(self.claimed(job_id, &entry.payload)),
        };
        let created = self
            .write_lease(job_id, expected, 0, &format!("create:{}", nonce()))
            .await;
        let token = match created {
            Ok(sequence) => sequence,
            Err(PublishFailure::WrongLastSequence) => {
                let holder = match self.wire.last(&self.handles.leases, &subject).await? {
                    Some(entry) if !entry.is_deletion() => {
                        return Err(self.claimed(job_id, &entry.payload));
                    }
                    _ => "a claimant that just released it".to_owned(),
                };
                return Err(StoreError::Claimed {
                    job_id: job_id.to_owned(),
                    holder,
                });
            }
            Err(PublishFailure::Store(e)) => return Err(e),
        };
        let (lost, lost_rx) = watch::channel(false);
        let fence = Arc::new(Fence {
            job_id: job_id.to_owned(),
            token,
            lost,
            kv: tokio::sync::Mutex::new(0),
            events: tokio::sync::Mutex::new(0),
            writes: AtomicU64::new(0),
            dropped: AtomicBool::new(false),
            released: watch::channel(false).0,
        });
        if let Err(e) = self.write_fence_records(&fence).await {
            // Without its records the claim cannot fence anyone: give the lease back.
            let _ = self.delete_lease(job_id, token, &fence).await;
            return Err(e);
        }
        self.fences.insert(job_id.to_owned(), Arc::clone(&fence));
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(heartbeat(
            self.wire.clone(),
            self.handles.clone(),
            self.config.clone(),
            Arc::clone(self.fences),
            Arc::clone(&fence),
            self.holder.to_owned(),
            token,
            stopped,
            Arc::clone(self.frozen),
        ));
        let hold = LeaseHold {
            fence: Arc::clone(&fence),
            _stop: stop,
        };
        Ok(Claim::new(job_id, token, hold).with_loss_signal(lost_rx))
    }

    fn claimed(&self, job_id: &str, lease: &[u8]) -> StoreError {
        let holder = serde_json::from_slice::<LeaseValue>(lease)
            .map(|v| v.holder)
            .unwrap_or_else(|_| "an unknown holder".to_owned());
        StoreError::Claimed {
            job_id: job_id.to_owned(),
            holder,
        }
    }

    /// Writes the lease with compare-and-set on `expected` and the lease TTL.
    async fn write_lease(
        &self,
        job_id: &str,
        expected: u64,
        token: u64,
        msg_id: &str,
    ) -> Result<u64, PublishFailure> {
        lease_write(
            self.wire,
            self.handles,
            self.config,
            job_id,
            self.holder,
            expected,
            token,
            msg_id,
        )
        .await
    }

    /// The new holder's first writes: a fence record under the job's key-value subjects and a
    /// claim record on its event subject. Unconditional: they are what breaks a stale holder's
    /// expectations. The claim record carries the job sequence of the event before it, so the
    /// last message of the subject still answers [`super::JetStreamStorage`]'s `last_job_seq`.
    async fn write_fence_records(&self, fence: &Fence) -> Result<(), StoreError> {
        let body = Bytes::from(
            serde_json::to_vec(&LeaseValue {
                holder: self.holder.to_owned(),
                token: fence.token,
            })
            .map_err(|source| StoreError::Serialize {
                what: "claim record",
                source,
            })?,
        );
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", fence.next_msg_id("fence").as_str());
        let kv_seq = self
            .wire
            .publish(
                "claim",
                &names::fence_subject(&fence.job_id),
                headers,
                body.clone(),
                None,
            )
            .await
            .map_err(into_store_error)?;
        let events_subject = names::events_subject(&fence.job_id);
        let previous_seq = self
            .wire
            .last(&self.handles.events, &events_subject)
            .await?
            .and_then(|m| m.header(names::JOB_SEQ).map(str::to_owned));
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", fence.next_msg_id("claim").as_str());
        headers.insert(names::RECORD, "claim");
        if let Some(seq) = previous_seq {
            headers.insert(names::JOB_SEQ, seq.as_str());
        }
        let event_seq = self
            .wire
            .publish("claim", &events_subject, headers, body, None)
            .await
            .map_err(into_store_error)?;
        *fence.kv.lock().await = kv_seq;
        *fence.events.lock().await = event_seq;
        Ok(())
    }

    async fn delete_lease(
        &self,
        job_id: &str,
        revision: u64,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        lease_delete(self.wire, job_id, revision, fence).await
    }
}

/// A lease write: the holder and token, compare-and-set on `expected`, expiring after the
/// lease TTL (whole seconds, rounded up: the server's unit) unless written again.
#[allow(clippy::too_many_arguments, reason = "one private call site each")]
async fn lease_write(
    wire: &Wire,
    handles: &Handles,
    config: &JetStreamConfig,
    job_id: &str,
    holder: &str,
    expected: u64,
    token: u64,
    msg_id: &str,
) -> Result<u64, PublishFailure> {
    let body = serde_json::to_vec(&LeaseValue {
        holder: holder.to_owned(),
        token,
    })
    .map_err(|source| {
        PublishFailure::Store(StoreError::Serialize {
            what: "lease",
            source,
        })
    })?;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{job_id}:lease:{msg_id}").as_str());
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        expected.to_string().as_str(),
    );
    headers.insert(
        "Nats-TTL",
        ttl_seconds(config.lease_ttl).to_string().as_str(),
    );
    let subject = names::lease_subject(job_id);
    wire.publish(
        "claim",
        &subject,
        headers,
        Bytes::from(body),
        Some((&handles.leases, &subject)),
    )
    .await
}

/// Deletes the lease if it is still at `revision` (nobody took it over).
async fn lease_delete(
    wire: &Wire,
    job_id: &str,
    revision: u64,
    fence: &Fence,
) -> Result<(), StoreError> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", fence.next_msg_id("release").as_str());
    headers.insert(names::KV_OPERATION, "DEL");
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        revision.to_string().as_str(),
    );
    match wire
        .publish(
            "release",
            &names::lease_subject(job_id),
            headers,
            Bytes::new(),
            None,
        )
        .await
    {
        // Someone else has it already: nothing to release.
        Ok(_) | Err(PublishFailure::WrongLastSequence) => Ok(()),
        Err(PublishFailure::Store(e)) => Err(e),
    }
}

/// Renews the lease every heartbeat while the claim lives; releases it when the claim is
/// dropped. Marks the claim lost when a renewal is refused (taken over, or expired and gone)
/// or when no renewal was acknowledged within one TTL of being sent (by this process's
/// monotonic clock: the server may have expired it already).
#[allow(
    clippy::too_many_arguments,
    reason = "the task's whole state, moved in once"
)]
async fn heartbeat(
    wire: Wire,
    handles: Handles,
    config: JetStreamConfig,
    fences: Arc<DashMap<String, Arc<Fence>>>,
    fence: Arc<Fence>,
    holder: String,
    token: u64,
    mut stopped: oneshot::Receiver<()>,
    frozen: Arc<AtomicBool>,
) {
    let mut revision = token;
    let mut acknowledged = Instant::now();
    let mut beat = 0u64;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            () = tokio::time::sleep(config.heartbeat) => {}
        }
        if frozen.load(Ordering::Relaxed) || fence.is_lost() {
            continue;
        }
        beat += 1;
        let sent = Instant::now();
        let renewal = tokio::time::timeout(
            config.heartbeat.max(Duration::from_millis(100)),
            lease_write(
                &wire,
                &handles,
                &config,
                &fence.job_id,
                &holder,
                revision,
                token,
                &format!("{token}:{beat}"),
            ),
        )
        .await;
        match renewal {
            Ok(Ok(sequence)) => {
                revision = sequence;
                acknowledged = sent;
            }
            Ok(Err(PublishFailure::WrongLastSequence)) => fence.mark_lost(),
            Ok(Err(PublishFailure::Store(e))) => {
                tracing::debug!(job = %fence.job_id, error = %e, "lease renewal failed");
            }
            Err(_) => tracing::debug!(job = %fence.job_id, "lease renewal timed out"),
        }
        if !fence.is_lost() && acknowledged.elapsed() >= config.lease_ttl {
            fence.mark_lost();
        }
    }
    if fence.is_lost() {
        // Keep the fence: this store refuses the job's writes until it claims it again.
    } else {
        if let Err(e) = lease_delete(&wire, &fence.job_id, revision, &fence).await {
            tracing::debug!(job = %fence.job_id, error = %e, "lease release failed; it expires on its own");
        }
        fences.remove_if(&fence.job_id, |_, f| Arc::ptr_eq(f, &fence));
    }
    fence.released.send_replace(true);
}

/// The lease TTL in whole seconds (the server's unit), at least one.
fn ttl_seconds(ttl: Duration) -> u64 {
    let whole = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    whole.max(1)
}

/// A random id part.
pub(crate) fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub(crate) fn into_store_error(failure: PublishFailure) -> StoreError {
    match failure {
        PublishFailure::Store(e) => e,
        PublishFailure::WrongLastSequence => StoreError::Rejected {
            operation: "write",
            message: "wrong last sequence".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::ttl_seconds;
    use std::time::Duration;

    #[test]
    fn lease_ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(ttl_seconds(Duration::from_secs(2)), 2);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
    }
}
