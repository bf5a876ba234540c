//! [`Jobs`]: what the bus keeps per job: the job's sequence number and its subscribers.
//!
//! The job sequence number is the second order the bus gives (besides the engine-wide one):
//! each event of a job gets the next one, from 1, across every run of the job and across
//! continuations (a continued job is opened with the last number its store holds, see
//! [`Storage::last_job_seq`](crate::storage::Storage::last_job_seq)). It is stored with each
//! event and checkpoint (`jobSeq`): it orders a job's history and is its dedupe key.

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::Sequenced;

/// Every open job of the bus.
#[derive(Default)]
pub(super) struct Jobs {
    map: HashMap<String, JobLog>,
}

/// One job.
#[derive(Default)]
pub(super) struct JobLog {
    /// The number the job's last visible event got (0: none yet).
    pub(super) last: u64,
    /// The job's subscribers. A full channel makes the bus wait (backpressure); a closed one
    /// is removed.
    subscribers: Vec<mpsc::Sender<Sequenced>>,
}

impl Jobs {
    /// Open `job_id`, whose last event so far got `last`; `subscriber` receives its events.
    pub(super) fn open(
        &mut self,
        job_id: String,
        last: u64,
        subscriber: Option<mpsc::Sender<Sequenced>>,
    ) {
        let job = self.map.entry(job_id).or_default();
        job.last = job.last.max(last);
        job.subscribers.extend(subscriber);
    }

    /// Forget `job_id` (it ended): the number its last event got.
    pub(super) fn close(&mut self, job_id: &str) -> u64 {
        self.map.remove(job_id).map_or(0, |j| j.last)
    }

    /// How many jobs are open.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// An open job. Events of a job that is not open (a skill's last stderr line after its
    /// job ended, events published from outside any job) get no job sequence number.
    pub(super) fn get(&mut self, job_id: &str) -> Option<&mut JobLog> {
        self.map.get_mut(job_id)
    }
}

impl JobLog {
    /// Whether anyone receives this job's events.
    pub(super) fn has_subscribers(&self) -> bool {
        !self.subscribers.is_empty()
    }

    /// Hand `event` to every subscriber, waiting for room; closed ones are dropped.
    pub(super) async fn send(&mut self, event: &Sequenced) {
        let mut open = Vec::with_capacity(self.subscribers.len());
        for tx in self.subscribers.drain(..) {
            if tx.send(event.clone()).await.is_ok() {
                open.push(tx);
            }
        }
        self.subscribers = open;
    }
}
