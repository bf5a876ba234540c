//! The actor shell around the pure agent loop.
//!
//! | actor | one per | owns | mailbox |
//! | --- | --- | --- | --- |
//! | `EventBus` (`event_bus`) | engine | stdout, event storage, listeners, the sequence | 1024, producers wait |
//! | `JobActor` (`job`) | job | `job.json`, the terminal state | 64 |
//! | `RunActor` (`run`) | Expert run | checkpoint, history, children | 64 |
//! | `SkillActor` (`skill`) | skill per run | the MCP connection | 64 |
//!
//! Supervision mirrors the Expert tree: the job supervises the coordinator run, a run supervises
//! its delegated children and its skills, all with `RestartPolicy::Never` (a run's state lives in
//! its checkpoint; a crashed run is reported, not restarted). Messages flow down as spawn
//! arguments and up as tells; nothing asks an ancestor.

pub(crate) mod context;
pub(crate) mod event_bus;
pub(crate) mod job;
pub(crate) mod run;
pub(crate) mod skill;
