//! Guards on what one waiting session costs in its actors (run, job and skill): the size of
//! each actor's task, which kameo lays out with the actor's state and spawn arguments several
//! times over (keep both boxed), and the size of a mailbox slot (kameo's `tracing` feature
//! would add a span to each; a mailbox allocates 32 slots when it is made).

fn size_of_return<A, R>(_: impl FnOnce(A) -> R) -> usize {
    std::mem::size_of::<R>()
}

#[test]
fn actor_tasks_stay_small() {
    use super::*;
    use crate::actor::{job, skill};
    let run = kameo::actor::PreparedActor::<RunActor>::new(kameo::mailbox::bounded(1));
    let run = size_of_return(|a: Box<RunArgs>| run.run(a));
    let job = kameo::actor::PreparedActor::<job::JobActor>::new(kameo::mailbox::bounded(1));
    let job = size_of_return(|a: Box<job::JobArgs>| job.run(a));
    let skill = kameo::actor::PreparedActor::<skill::SkillActor>::new(kameo::mailbox::bounded(1));
    let skill = size_of_return(|a: Box<skill::SkillArgs>| skill.run(a));
    // Measured in a debug build: 1.5, 1.8 and 1.7 KiB (5.2, 5.2 and 4.0 KiB with the spawn
    // arguments and the run's state inline; 13.9 KiB for a run before its machine was boxed).
    assert!(run <= 2 * 1024, "run actor task: {run} bytes");
    assert!(job <= 5 * 512, "job actor task: {job} bytes");
    assert!(skill <= 5 * 512, "skill actor task: {skill} bytes");
    assert_eq!(
        std::mem::size_of::<RunActor>(),
        std::mem::size_of::<usize>()
    );
}

#[test]
fn mailbox_slots_carry_no_span() {
    use super::*;
    use crate::actor::{job, skill};
    use kameo::mailbox::Signal;
    // 96 bytes without kameo's `tracing` feature, 120 with it: a mailbox's first block of 32
    // slots is 3 KiB instead of 3.8.
    let slot = std::mem::size_of::<Signal<RunActor>>()
        .max(std::mem::size_of::<Signal<job::JobActor>>())
        .max(std::mem::size_of::<Signal<skill::SkillActor>>());
    assert!(slot <= 96, "kameo mailbox slot: {slot} bytes");
}
