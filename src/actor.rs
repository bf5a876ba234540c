//! The actor shell around the pure agent loop.
//!
//! | actor | one per | owns | mailbox |
//! | --- | --- | --- | --- |
//! | `EventBus` (`event_bus`) | engine | stdout, event storage, listeners, the sequence | 1024, producers wait |
//! | `RunActor` (`run`) | Expert run | checkpoint, history, children | 64 |
//! | `SkillActor` (`skill`) | skill per run | the MCP connection | 64 |
//!
//! A job is a task, not an actor (`job`): it starts the coordinator run, which reports to it
//! through a oneshot, and owns `job.json` and the terminal state. The actor tree mirrors the
//! Expert tree: a run links its delegated children (a parent learns of a child that died
//! without reporting, a child stops with a parent that died) and supervises its skills, which
//! restart within a budget; a run is never restarted (its state lives in its checkpoint; a
//! crashed run is reported). Messages flow down as spawn arguments and up as tells; nothing
//! asks an ancestor.

pub(crate) mod context;
pub(crate) mod event_bus;
pub(crate) mod job;
pub(crate) mod run;
pub(crate) mod skill;
