//! Planning how a stored job goes on: from its checkpoints alone, decide for the coordinator
//! and, through `delegatedBy`, for every child that was running, whether it is finished, must
//! resume from its last stored step, or must start again.
//!
//! This is what makes a job crash-safe: after `kill -9` at any moment, the last durable
//! checkpoint of every run is on disk, and this plan continues exactly the steps in flight.
//! Finished children are not run again; a parent stopped by delegation waits only for the
//! children that had not finished (Perstack requires a hand-written answer instead).

use super::delegation::{Delegation, next_segment};
use super::machine::Start;
use crate::schema::{Checkpoint, CheckpointStatus, DelegateTo, id::new_id};

/// How one run goes on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resumption {
    /// The run never stored a checkpoint: start it again from its query.
    Fresh {
        /// The delegate call that starts it.
        call: DelegateTo,
    },
    /// The run stopped between steps (`proceeding`): resume from this checkpoint.
    Continue {
        /// The last stored checkpoint.
        checkpoint: Checkpoint,
    },
    /// The run is over; its last checkpoint says how.
    Done {
        /// The final checkpoint (`completed`, `stoppedByError`, ...).
        checkpoint: Checkpoint,
    },
    /// The run was waiting for children when it stopped.
    AwaitChildren {
        /// Its `stoppedByDelegate` checkpoint.
        checkpoint: Checkpoint,
        /// One entry per delegate call, in call order.
        children: Vec<(DelegateTo, Resumption)>,
    },
}

impl Resumption {
    /// How a run that must go on without new input starts again, through the same
    /// [`Start`] as any other run: `Continue` picks up its stored step as a new segment,
    /// `AwaitChildren` (with a new run id) waits for the children that had not finished. `Fresh`
    /// and `Done` are handed back: they need an input (a query or an answer).
    pub(crate) fn into_start(self) -> Result<(Checkpoint, Start), Box<Resumption>> {
        match self {
            Resumption::Continue { checkpoint } => Ok((next_segment(checkpoint), Start::Resume)),
            Resumption::AwaitChildren {
                mut checkpoint,
                children,
            } => {
                checkpoint.run_id = new_id();
                let delegation = Box::new(Delegation::recover(children, &checkpoint));
                Ok((checkpoint, Start::AfterDelegation(delegation)))
            }
            other => Err(Box::new(other)),
        }
    }
}

/// The coordinator's latest checkpoint: the highest step among checkpoints without
/// `delegatedBy` (children's steps can be higher while they run).
pub(crate) fn latest_coordinator(checkpoints: &[Checkpoint]) -> Option<&Checkpoint> {
    checkpoints
        .iter()
        .filter(|c| c.delegated_by.is_none())
        .max_by_key(|c| (c.step_number, rank(c.status)))
}

/// The plan for a run whose latest checkpoint is `latest`, given every checkpoint of the job.
pub(crate) fn plan(latest: &Checkpoint, all: &[Checkpoint]) -> Resumption {
    plan_depth(latest, all, 0)
}

fn plan_depth(latest: &Checkpoint, all: &[Checkpoint], depth: usize) -> Resumption {
    match latest.status {
        CheckpointStatus::StoppedByDelegate if depth < 64 => {
            let calls = latest.delegate_to.clone().unwrap_or_default();
            let children = calls
                .into_iter()
                .map(|call| {
                    let child = all
                        .iter()
                        .filter(|c| {
                            c.delegated_by.as_ref().is_some_and(|d| {
                                d.checkpoint_id == latest.id && d.tool_call_id == call.tool_call_id
                            })
                        })
                        .max_by_key(|c| (c.step_number, rank(c.status)));
                    let r = match child {
                        None => Resumption::Fresh { call: call.clone() },
                        Some(c) => plan_depth(c, all, depth + 1),
                    };
                    (call, r)
                })
                .collect();
            Resumption::AwaitChildren {
                checkpoint: latest.clone(),
                children,
            }
        }
        CheckpointStatus::Proceeding | CheckpointStatus::Init => Resumption::Continue {
            checkpoint: latest.clone(),
        },
        _ => Resumption::Done {
            checkpoint: latest.clone(),
        },
    }
}

/// Among checkpoints of the same step, a terminal one is later than a `proceeding` one.
fn rank(s: CheckpointStatus) -> u8 {
    match s {
        CheckpointStatus::Init => 0,
        CheckpointStatus::Proceeding => 1,
        CheckpointStatus::StoppedByDelegate => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::schema::{DelegatedBy, ExpertRef, Usage};

    fn expert(k: &str) -> ExpertRef {
        ExpertRef {
            key: k.into(),
            name: k.into(),
            version: "1.0.0".into(),
        }
    }

    fn cp(
        id: &str,
        key: &str,
        step: u32,
        status: CheckpointStatus,
        parent: Option<(&str, &str)>,
    ) -> Checkpoint {
        Checkpoint {
            id: id.into(),
            job_id: "j".into(),
            run_id: format!("run-{key}"),
            status,
            step_number: step,
            messages: vec![],
            expert: expert(key),
            delegate_to: None,
            delegated_by: parent.map(|(pcp, call)| DelegatedBy {
                expert: expert("coord"),
                tool_call_id: call.into(),
                tool_name: "x".into(),
                checkpoint_id: pcp.into(),
                run_id: "run-coord".into(),
            }),
            usage: Usage::default(),
            context_window: None,
            context_window_usage: None,
            pending_tool_calls: None,
            partial_tool_results: None,
            metadata: None,
            error: None,
            retry_count: None,
            job_seq: None,
            extra: Map::new(),
        }
    }

    fn call(id: &str, key: &str) -> DelegateTo {
        DelegateTo {
            expert: expert(key),
            tool_call_id: id.into(),
            tool_name: key.into(),
            query: format!("do {key}"),
        }
    }

    #[test]
    fn a_crash_during_parallel_delegation_reruns_only_unfinished_children() {
        let mut parent = cp("p1", "coord", 1, CheckpointStatus::StoppedByDelegate, None);
        parent.delegate_to = Some(vec![call("ca", "a"), call("cb", "b"), call("cc", "c")]);
        let all = vec![
            parent.clone(),
            cp(
                "a2",
                "a",
                2,
                CheckpointStatus::Proceeding,
                Some(("p1", "ca")),
            ),
            cp(
                "a3",
                "a",
                3,
                CheckpointStatus::Completed,
                Some(("p1", "ca")),
            ),
            cp(
                "b2",
                "b",
                2,
                CheckpointStatus::Proceeding,
                Some(("p1", "cb")),
            ),
        ];
        assert_eq!(latest_coordinator(&all).map(|c| c.id.as_str()), Some("p1"));
        let Resumption::AwaitChildren { children, .. } = plan(&parent, &all) else {
            panic!()
        };
        assert!(matches!(&children[0].1, Resumption::Done { checkpoint } if checkpoint.id == "a3"));
        assert!(
            matches!(&children[1].1, Resumption::Continue { checkpoint } if checkpoint.id == "b2")
        );
        assert!(matches!(&children[2].1, Resumption::Fresh { call } if call.tool_call_id == "cc"));
    }

    #[test]
    fn the_latest_coordinator_checkpoint_ignores_higher_child_steps() {
        let all = vec![
            cp("p1", "coord", 1, CheckpointStatus::Proceeding, None),
            cp("p2", "coord", 2, CheckpointStatus::Completed, None),
            cp("x9", "a", 9, CheckpointStatus::Completed, Some(("p0", "c"))),
        ];
        let latest = latest_coordinator(&all).unwrap();
        assert_eq!(latest.id, "p2");
        assert!(matches!(plan(latest, &all), Resumption::Done { .. }));
    }

    #[test]
    fn nested_delegations_are_planned_recursively() {
        let mut parent = cp("p1", "coord", 1, CheckpointStatus::StoppedByDelegate, None);
        parent.delegate_to = Some(vec![call("ca", "a")]);
        let mut mid = cp(
            "a2",
            "a",
            2,
            CheckpointStatus::StoppedByDelegate,
            Some(("p1", "ca")),
        );
        mid.delegate_to = Some(vec![call("cl", "leaf")]);
        let leaf = cp(
            "l3",
            "leaf",
            3,
            CheckpointStatus::Proceeding,
            Some(("a2", "cl")),
        );
        let all = vec![parent.clone(), mid, leaf];
        let Resumption::AwaitChildren { children, .. } = plan(&parent, &all) else {
            panic!()
        };
        let Resumption::AwaitChildren {
            children: inner, ..
        } = &children[0].1
        else {
            panic!()
        };
        assert!(
            matches!(&inner[0].1, Resumption::Continue { checkpoint } if checkpoint.id == "l3")
        );
    }
}
