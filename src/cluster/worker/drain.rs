//! A draining worker's running jobs: what it can do to each (cancel it, hand it back), and
//! the drain itself: let them finish for one drain timeout, then hand them back at their next
//! step boundary, then at once.

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::engine::HandBack;

/// What the worker can do to a job it runs.
pub(super) struct Running {
    /// Cancels it (a cancel request for it arrived).
    pub(super) cancel: CancellationToken,
    /// Hands it back (the worker is shutting down).
    pub(super) hand_back: HandBack,
}

/// Let the running jobs finish, for one drain timeout; then hand them back at their next step
/// boundary, and once more that long later at once. Returns when every job has ended here, or
/// on `leave`.
pub(super) async fn drain_running(
    worker: &Worker,
    tasks: &mut JoinSet<()>,
    leave: &CancellationToken,
) {
    let limit = worker.config.drain_timeout;
    for stage in 0..3 {
        if stage > 0 && !tasks.is_empty() {
            worker
                .handing_back
                .store(true, std::sync::atomic::Ordering::SeqCst);
            for job in worker.running.iter() {
                if stage == 1 {
                    job.hand_back.at_step_boundary();
                } else {
                    job.hand_back.now();
                }
            }
            if stage == 1 {
                tracing::warn!(
                    running = tasks.len(),
                    "drain timeout: handing the running jobs back at their next step boundary"
                );
            } else {
                tracing::warn!(
                    running = tasks.len(),
                    "steps still under way after another drain timeout: handing the jobs back now (those steps are repeated elsewhere)"
                );
            }
        }
        let wait = async {
            if stage < 2 {
                let _ = tokio::time::timeout(limit, async {
                    while tasks.join_next().await.is_some() {}
                })
                .await;
            } else {
                while tasks.join_next().await.is_some() {}
            }
        };
        tokio::select! {
            () = wait => {}
            () = leave.cancelled() => return,
        }
        if tasks.is_empty() {
            return;
        }
    }
}
