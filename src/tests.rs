//! What the crate's unit tests share: [`support`] (real servers and fixtures) and
//! [`hooked_storage`] (the one pass-through test store), both also included by the integration
//! suite.

pub(crate) mod hooked_storage;
pub(crate) mod support;

// The names `hooked_storage` takes from here (the suite gives it `perstack::` ones).
use crate::schema::{Checkpoint, Event, Job, RunSetting};
use crate::storage::{Claim, EventMeta, MemoryStorage, Storage, StoreError};
