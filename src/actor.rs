//! The actor shell around the pure agent loop.
//!
//! | actor | one per | owns | mailbox |
//! | --- | --- | --- | --- |
//! | [`EventBus`](event_bus::EventBus) | engine | stdout, event storage, listeners, the sequence | 1024, producers wait |
//! | [`JobActor`](job::JobActor) | job | `job.json`, the terminal state | 64 |
//! | [`RunActor`](run::RunActor) | Expert run | checkpoint, history, children | 64 |
//! | [`SkillActor`](skill::SkillActor) | skill per run | the MCP connection | 64 |
//!
//! Supervision mirrors the Expert tree: the job supervises the coordinator run, a run supervises
//! its delegated children and its skills, all with `RestartPolicy::Never` (a run's state lives in
//! its checkpoint; a crashed run is reported, not restarted). Messages flow down as spawn
//! arguments and up as tells; nothing asks an ancestor.

pub mod context;
pub mod event_bus;
pub mod job;
pub mod run;
pub mod skill;
