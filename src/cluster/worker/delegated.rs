//! The worker's side of delegation across workers (see [`crate::cluster::delegate`]):
//! placing a parent's children, running a child and committing its result, adding it to the
//! join, and resuming the parent once every child reported.

use std::sync::Arc;

use async_nats::jetstream::kv;

use super::job::continuation;
use super::{Failure, How, Worker, classify, output_failure};
use crate::cluster::delegate::{
    self, CAS_TRIES, ChildMessage, ChildResult, JoinMessage, JoinRecord, Line, ResultRecord,
};
use crate::cluster::message::{JobMessage, Rejection};
use crate::cluster::output::{JobEnd, Publisher};
use crate::cluster::queue;
use crate::engine::EngineError;
use crate::schema::JobStatus;
use crate::schema::id::new_id;
use crate::storage::{MemoryStorage, Storage};

fn transient(e: impl std::fmt::Display) -> Failure {
    Failure::Transient(e.to_string())
}

impl Worker {
    /// Place the children of `job`'s coordinator, which stopped at `stopRunByDelegate`: the
    /// join record first, then one message per delegate call not finished.
    pub(super) async fn place(&self, job: &JobMessage) -> Result<(), Failure> {
        let o = &job.options;
        let planned = delegate::plan_children(
            self.config.storage.as_ref(),
            &job.job_id,
            o.max_steps,
            o.max_retries,
            crate::llm::models::context_window(&o.model),
        )
        .await
        .map_err(transient)?
        .ok_or_else(|| transient("the job is not waiting for delegated runs"))?;
        let (kv, _) = queue::delegation_stores(&self.js)
            .await
            .map_err(transient)?;
        let record = JoinRecord {
            calls: planned.calls,
            done: planned.done.clone(),
            placed_by: self.config.name.clone(),
            base_seq: None,
        };
        let key = delegate::join_key(&job.job_id, &planned.parent.id);
        let body = serde_json::to_vec(&record).map_err(transient)?;
        match kv.create(&key, body.into()).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(transient(e)),
        }
        tracing::info!(
            job = %job.job_id,
            children = planned.children.len(),
            "delegated runs placed on the cluster"
        );
        if planned.children.is_empty() {
            return self
                .publish_join(job, &planned.parent.id, planned.calls)
                .await;
        }
        for (slot, checkpoint, query) in planned.children {
            let child = ChildMessage {
                version: delegate::VERSION,
                job: job.clone(),
                parent_checkpoint_id: planned.parent.id.clone(),
                slot,
                calls: planned.calls,
                checkpoint,
                query,
                placed_by: self.config.name.clone(),
            };
            let body = serde_json::to_vec(&child).map_err(transient)?;
            self.publish(queue::DELEGATION_SUBJECT, &child.id(), body)
                .await?;
        }
        Ok(())
    }

    /// One delivery of a child: run it unless its result is committed, then add it to the
    /// join.
    pub(super) async fn run_child(&self, child: &ChildMessage, _: i64) -> Result<(), Failure> {
        let (kv, objects) = queue::delegation_stores(&self.js)
            .await
            .map_err(transient)?;
        let key = delegate::result_key(&child.job.job_id, &child.parent_checkpoint_id, child.slot);
        if kv.get(&key).await.map_err(transient)?.is_none() {
            let result = self.run_child_once(child).await?;
            let object = format!("{key}.{}", new_id());
            let body = serde_json::to_vec(&result.0).map_err(transient)?;
            objects
                .put(object.as_str(), &mut body.as_slice())
                .await
                .map_err(transient)?;
            let record = ResultRecord {
                object: object.clone(),
                worker: self.config.name.clone(),
                status: result.1,
            };
            let body = serde_json::to_vec(&record).map_err(transient)?;
            match kv.create(&key, body.into()).await {
                Ok(_) => {
                    tracing::info!(job = %child.job.job_id, slot = child.slot, "delegated run committed");
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    tracing::warn!(job = %child.job.job_id, slot = child.slot, "another attempt of this delegated run committed first; this one is dropped");
                    let _ = objects.delete(object.as_str()).await;
                }
                Err(e) => return Err(transient(e)),
            }
        }
        self.report(child, &kv).await
    }

    /// Run the child on an engine whose store is this attempt's own; what it printed and
    /// stored, and its final status.
    async fn run_child_once(&self, child: &ChildMessage) -> Result<(ChildResult, String), Failure> {
        let job = &child.job;
        tracing::info!(job = %job.job_id, slot = child.slot, expert = %child.checkpoint.expert.key, "running a delegated run");
        let store = Arc::new(MemoryStorage::new());
        let engine = self.engine(job, store.clone(), true)?;
        let started = engine
            .start_delegated(child.checkpoint.clone(), child.query.clone(), 256)
            .await;
        let mut handle = match started {
            Ok(handle) => handle,
            Err(e) => {
                engine.shutdown().await;
                return Err(classify(e));
            }
        };
        // A cancel of the invocation reaches its children wherever they run (the listener
        // matches `<cancel subject>#...`); one sent before this child started is stored.
        let cancel_subject = job.output().cancel_subject();
        let running = format!(
            "{cancel_subject}#{}",
            delegate::result_key(&job.job_id, &child.parent_checkpoint_id, child.slot)
        );
        let cancel = handle.cancel_token();
        self.running.insert(
            running.clone(),
            super::Running {
                cancel: cancel.clone(),
                hand_back: handle.hand_back(),
            },
        );
        if queue::cancel_requested(&self.js, &cancel_subject)
            .await
            .unwrap_or(false)
        {
            cancel.cancel();
        }
        let mut lines = Vec::new();
        if let Some(mut events) = handle.take_events() {
            while let Some(event) = events.recv().await {
                lines.push(Line {
                    seq: event.job_seq().unwrap_or(0),
                    line: serde_json::to_string(&*event.event).unwrap_or_default(),
                });
            }
        }
        let outcome = handle.wait().await;
        engine.shutdown().await;
        self.running.remove(&running);
        let outcome = outcome.map_err(transient)?;
        if outcome.handed_back {
            // This worker is shutting down: the child runs again elsewhere from its start.
            return Err(Failure::HandedBack);
        }
        let checkpoints = store
            .checkpoints_by_job(&job.job_id)
            .await
            .map_err(transient)?
            .iter()
            .map(|c| serde_json::to_value(c.stored()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(transient)?;
        let run_settings = store
            .all_run_settings()
            .await
            .map_err(transient)?
            .into_iter()
            .filter(|s| s.job_id == job.job_id)
            .collect();
        Ok((
            ChildResult {
                lines,
                checkpoints,
                run_settings,
            },
            outcome.checkpoint.status.as_str().to_owned(),
        ))
    }

    /// Add the child's slot to the join record; whoever completes the set publishes the join.
    async fn report(&self, child: &ChildMessage, kv: &kv::Store) -> Result<(), Failure> {
        let key = delegate::join_key(&child.job.job_id, &child.parent_checkpoint_id);
        for _ in 0..CAS_TRIES {
            let (mut record, revision) = JoinRecord::read(kv, &key)
                .await
                .map_err(transient)?
                .unwrap_or_else(|| {
                    let fresh = JoinRecord {
                        calls: child.calls,
                        placed_by: child.placed_by.clone(),
                        ..JoinRecord::default()
                    };
                    (fresh, 0)
                });
            if !record.done.contains(&child.slot) {
                record.done.push(child.slot);
                record.done.sort_unstable();
                if !record.write(kv, &key, revision).await.map_err(transient)? {
                    continue; // someone else came between: read again
                }
            }
            if record.done.len() >= child.calls {
                return self
                    .publish_join(&child.job, &child.parent_checkpoint_id, child.calls)
                    .await;
            }
            return Ok(());
        }
        Err(transient("too many concurrent updates of the join record"))
    }

    /// Queue the parent's resumption.
    async fn publish_join(
        &self,
        job: &JobMessage,
        parent_checkpoint_id: &str,
        calls: usize,
    ) -> Result<(), Failure> {
        let join = JoinMessage {
            version: delegate::VERSION,
            job: job.clone(),
            parent_checkpoint_id: parent_checkpoint_id.to_owned(),
            calls,
        };
        let body = serde_json::to_vec(&join).map_err(transient)?;
        tracing::info!(job = %job.job_id, "every delegated run reported; the parent resumes");
        self.publish(queue::JOIN_SUBJECT, &join.id(), body).await
    }

    /// A join: import the children's results under the job's claim, print them, and resume
    /// the parent through the ordinary resume path.
    pub(super) async fn join(&self, join: &JoinMessage, delivered: i64) -> Result<(), Failure> {
        let job = &join.job;
        let storage = self.config.storage.clone();
        let (mut publisher, published) =
            Publisher::open(self.js.clone(), &job.output(), delivered.unsigned_abs())
                .await
                .map_err(output_failure)?;
        if published.ended {
            return Ok(());
        }
        let Some(mut stored) = storage.retrieve_job(&job.job_id).await.map_err(transient)? else {
            return Err(Failure::Refused(Rejection::Unrunnable(format!(
                "No job \"{}\" found to resume",
                job.job_id
            ))));
        };
        if stored.status != JobStatus::Running {
            // Joined and finished before; only the end (and the ack) may be missing.
            return publisher
                .end(&JobEnd::finished(stored.status))
                .await
                .map_err(output_failure);
        }
        let (printed, how) = {
            let claim = storage
                .claim(&job.job_id)
                .await
                .map_err(|e| classify(EngineError::Storage(e)))?;
            let all = storage
                .checkpoints_by_job(&job.job_id)
                .await
                .map_err(transient)?;
            let waiting = crate::agent::latest_coordinator(&all)
                .is_some_and(|c| c.id == join.parent_checkpoint_id);
            if waiting {
                let (kv, objects) = queue::delegation_stores(&self.js)
                    .await
                    .map_err(transient)?;
                let (lines, last) = delegate::import(
                    storage.as_ref(),
                    &kv,
                    &objects,
                    &job.job_id,
                    &join.parent_checkpoint_id,
                    join.calls,
                )
                .await
                .map_err(transient)?;
                // The job's record carries its last number: the continuation numbers on.
                stored.job_seq = Some(last.max(stored.job_seq.unwrap_or(0)));
                storage.store_job(&stored).await.map_err(transient)?;
                drop(claim);
                (lines, How::Continue)
            } else {
                // A joiner resumed it and died: recover it, as a takeover.
                drop(claim);
                (Vec::new(), How::TakeOver)
            }
        };
        for (seq, line) in printed {
            if seq > published.last_job_seq {
                publisher
                    .event(line.into_bytes(), seq)
                    .await
                    .map_err(output_failure)?;
            }
        }
        let engine = self.engine(job, storage, false)?;
        // A cancel sent while the children ran is stored: `drive` ends the parent cancelled.
        let takeover = (how == How::TakeOver).then_some(crate::engine::Takeover {
            worker: &self.config.name,
            printed: published.last_job_seq,
        });
        let started = engine
            .resume_job(continuation(job, None, false), takeover)
            .await;
        self.drive(job, how, &mut publisher, engine, started).await
    }

    /// Publish `body` on `subject` (work queue) with dedupe id `id`, acknowledged.
    async fn publish(&self, subject: &str, id: &str, body: Vec<u8>) -> Result<(), Failure> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        self.js
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .map_err(transient)?
            .await
            .map_err(transient)?;
        Ok(())
    }
}
