//! Guards on what one waiting session costs in its actors (run and skill) and its job's task:
//! the size of each task, which kameo lays out with the actor's state and spawn arguments several
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
    let job = size_of_return(job::run);
    let skill = kameo::actor::PreparedActor::<skill::SkillActor>::new(kameo::mailbox::bounded(1));
    let skill = size_of_return(|a: Box<skill::SkillArgs>| skill.run(a));
    // Measured in a debug build: 1.5 KiB, 176 bytes and 1.7 KiB (5.2, 5.2 and 4.0 KiB with the
    // spawn arguments and the run's state inline; 13.9 KiB for a run before its machine was
    // boxed; a job's task 1.6 KiB with its arguments taken apart in its own frame and its
    // coordinator's `Begin` inline, though it waits for the report all its life).
    assert!(run <= 2 * 1024, "run actor task: {run} bytes");
    assert!(job <= 512, "job task: {job} bytes");
    assert!(skill <= 5 * 512, "skill actor task: {skill} bytes");
    assert_eq!(
        std::mem::size_of::<RunActor>(),
        std::mem::size_of::<usize>()
    );
}

#[test]
fn mailbox_slots_carry_no_span() {
    use super::*;
    use crate::actor::skill;
    use kameo::mailbox::Signal;
    // 96 bytes without kameo's `tracing` feature, 120 with it: a mailbox's first block of 32
    // slots is 3 KiB instead of 3.8.
    let slot = std::mem::size_of::<Signal<RunActor>>()
        .max(std::mem::size_of::<Signal<skill::SkillActor>>());
    assert!(slot <= 96, "kameo mailbox slot: {slot} bytes");
}

fn size_of_return2<A, B, R>(_: impl FnOnce(A, B) -> R) -> usize {
    std::mem::size_of::<R>()
}

fn size_of_return3<A, B, C, R>(_: impl FnOnce(A, B, C) -> R) -> usize {
    std::mem::size_of::<R>()
}

/// While the bus is busy a run waits on it, inside its `on_start` (announcing its segment,
/// connecting its skills) or inside a handler (publishing a step), and its future is allocated
/// all that time: at the peak of T3 every one of 10,000 sessions' runs is in one of these.
/// The rare, large steps are kept out of them (opening the in-process base skill's connection
/// out of connecting it, which then publishes `skillConnected`; spawning children, resuming
/// and ending out of `drive`), and `on_start` boxes each of its steps.
#[test]
fn futures_a_run_waits_in_stay_small() {
    use super::*;
    let connect = size_of_return(crate::actor::skill::InlineSkill::connect);
    let set_up = size_of_return2(RunActor::set_up_tools);
    let announce = size_of_return2(RunActor::announce_segment);
    let drive = size_of_return3(RunActor::drive);
    // Measured in a debug build: 1.6 KiB, 1.1 KiB, 928 bytes and 616 bytes; connecting 2.6 KiB
    // with the connection opened inline (6.8 KiB with the MCP handshakes inline), setting up
    // 3.0 KiB with connecting inline, announcing 1 KiB with the run setting inline, driving
    // 2.2 KiB with spawning the children and ending inline.
    assert!(
        connect <= 2 * 1024,
        "connecting the inline base skill: {connect} bytes"
    );
    assert!(
        set_up <= 3 * 512,
        "setting up a run's tools: {set_up} bytes"
    );
    assert!(announce <= 1024, "announcing a segment: {announce} bytes");
    assert!(drive <= 1024, "a run's drive: {drive} bytes");
}

fn size_of_return7<A, B, C, D, E, F, G, R>(_: impl FnOnce(A, B, C, D, E, F, G) -> R) -> usize {
    std::mem::size_of::<R>()
}

/// A model call's task lives as long as the call, and while the bus is busy it waits there
/// to publish the streamed events: it should hold its request once.
#[test]
fn a_model_call_task_stays_small() {
    let task = size_of_return7(super::tasks::generation);
    // Measured in a debug build: 1,208 bytes; 1,464 with the request unboxed (held in the
    // task's arguments, the timed block's and the model call's).
    assert!(task <= 5 * 256, "a model call's task: {task} bytes");
}
