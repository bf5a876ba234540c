//! A guard on the size of every actor's task (run, job and skill), which kameo lays out with
//! the actor's state several times over: keep big state boxed so a thousand live jobs stay
//! small.

fn size_of_return<A, R>(_: impl FnOnce(A) -> R) -> usize {
    std::mem::size_of::<R>()
}

#[test]
fn actor_tasks_stay_small() {
    use super::*;
    use crate::actor::{job, skill};
    let run = kameo::actor::PreparedActor::<RunActor>::new(kameo::mailbox::bounded(1));
    let run = size_of_return(|a: RunArgs| run.run(a));
    let job = kameo::actor::PreparedActor::<job::JobActor>::new(kameo::mailbox::bounded(1));
    let job = size_of_return(|a: job::JobArgs| job.run(a));
    let skill = kameo::actor::PreparedActor::<skill::SkillActor>::new(kameo::mailbox::bounded(1));
    let skill = size_of_return(|a: skill::SkillArgs| skill.run(a));
    // Measured: 6.6, 4.7 and 4.1 KiB (13.9 KiB for a run before its machine was boxed).
    assert!(run <= 8 * 1024, "run actor task: {run} bytes");
    assert!(job <= 6 * 1024, "job actor task: {job} bytes");
    assert!(skill <= 6 * 1024, "skill actor task: {skill} bytes");
}
