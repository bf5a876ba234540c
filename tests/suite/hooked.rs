//! The one pass-through test store (`src/tests/hooked_storage.rs`, shared with the crate's unit
//! tests), given the engine's types by their public paths.

pub(crate) use perstack::schema::{Checkpoint, Event, Job, RunSetting};
pub(crate) use perstack::storage::{Claim, EventMeta, MemoryStorage, Storage, StoreError};

#[path = "../../src/tests/hooked_storage.rs"]
mod hooked_storage;

pub(crate) use hooked_storage::{Hooked, Write, WriteHook};
