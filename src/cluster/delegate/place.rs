//! What a parent that stopped at `stopRunByDelegate` places on the cluster: from the job's
//! stored checkpoints, with the recovery planner, the delegate calls not finished, each with
//! the checkpoint its child starts from (a fresh one, as a local delegation makes it).

use crate::agent::{Delegation, MachineSetting, Resumption, Start, latest_coordinator, plan};
use crate::schema::{Checkpoint, CheckpointStatus};
use crate::storage::{Storage, StoreError};

/// The children to place for a job's latest coordinator checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    /// The parent's `stoppedByDelegate` checkpoint.
    pub parent: Checkpoint,
    /// How many delegate calls its turn made.
    pub calls: usize,
    /// The slots already finished (in the store).
    pub done: Vec<usize>,
    /// The others: slot, start checkpoint, query (`None`: resume the checkpoint).
    pub children: Vec<(usize, Checkpoint, Option<String>)>,
}

/// The plan of job `job_id`, or `None` when its latest coordinator checkpoint is not waiting
/// for children.
pub(crate) async fn plan_children(
    storage: &dyn Storage,
    job_id: &str,
    max_steps: u32,
    max_retries: u32,
    context_window: Option<u64>,
) -> Result<Option<Planned>, StoreError> {
    let all = storage.checkpoints_by_job(job_id).await?;
    let Some(latest) = latest_coordinator(&all) else {
        return Ok(None);
    };
    if latest.status != CheckpointStatus::StoppedByDelegate {
        return Ok(None);
    }
    let Resumption::AwaitChildren {
        checkpoint,
        children,
    } = plan(latest, &all)
    else {
        return Ok(None);
    };
    let calls = children.len();
    let mut delegation = Delegation::recover(children, &checkpoint);
    let setting = MachineSetting {
        job_id: job_id.to_owned(),
        run_id: checkpoint.run_id.clone(),
        expert: checkpoint.expert.clone(),
        max_steps,
        max_retries,
        context_window,
    };
    let mut placed = Vec::new();
    while let Some(child) = delegation.next_child(&setting, usize::MAX) {
        let query = match child.start {
            Start::Query(q) => Some(q),
            _ => None,
        };
        placed.push((child.slot, child.checkpoint, query));
    }
    let done = (0..calls)
        .filter(|s| placed.iter().all(|(p, _, _)| p != s))
        .collect();
    Ok(Some(Planned {
        parent: checkpoint,
        calls,
        done,
        children: placed,
    }))
}
