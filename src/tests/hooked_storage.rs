//! The one pass-through test store: an in-memory store behind a [`WriteHook`] that sees every
//! write before it happens (and may delay or refuse it) and after it was stored. The tests of
//! storage failures build on it: a slow disk that records what became durable (the bus's
//! "durable before visible" check), a disk that fills up, a store whose checkpoint writes fail
//! a few times.
//!
//! Shared by the crate's unit tests (`crate::tests`) and the integration suite
//! (`tests/suite/hooked.rs`, through `#[path]`). It names the engine's types through `super::`,
//! where each includer imports them: `crate::...` paths in the crate, `perstack::...` in the
//! suite.

// Each includer uses a part of it.
#![allow(dead_code)]

use super::{
    Checkpoint, Claim, Event, EventMeta, Job, MemoryStorage, RunSetting, Storage, StoreError,
};

/// A write about to happen, or just done.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write<'a> {
    Checkpoint(&'a Checkpoint),
    Event(&'a Event),
    Job(&'a Job),
    RunSetting(&'a RunSetting),
}

/// What a test does around each write. Reads are never hooked.
#[async_trait::async_trait]
pub(crate) trait WriteHook: Send + Sync + 'static {
    /// Before the write: wait (a slow disk) or refuse it (`Err`: nothing is stored).
    async fn before(&self, _write: Write<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    /// After the write was stored.
    fn after(&self, _write: Write<'_>) {}
}

/// A [`MemoryStorage`] whose writes go through `hook`.
pub(crate) struct Hooked<H> {
    pub(crate) inner: MemoryStorage,
    pub(crate) hook: H,
}

impl<H: WriteHook> Hooked<H> {
    pub(crate) fn new(hook: H) -> Self {
        Hooked {
            inner: MemoryStorage::new(),
            hook,
        }
    }

    async fn write<F>(&self, write: Write<'_>, store: F) -> Result<(), StoreError>
    where
        F: Future<Output = Result<(), StoreError>>,
    {
        self.hook.before(write).await?;
        store.await?;
        self.hook.after(write);
        Ok(())
    }
}

#[async_trait::async_trait]
impl<H: WriteHook> Storage for Hooked<H> {
    async fn store_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        self.write(Write::Checkpoint(c), self.inner.store_checkpoint(c))
            .await
    }
    async fn retrieve_checkpoint(&self, job: &str, id: &str) -> Result<Checkpoint, StoreError> {
        self.inner.retrieve_checkpoint(job, id).await
    }
    async fn checkpoints_by_job(&self, job: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.checkpoints_by_job(job).await
    }
    async fn store_event(&self, e: &Event) -> Result<(), StoreError> {
        self.write(Write::Event(e), self.inner.store_event(e)).await
    }
    async fn events_by_run(&self, job: &str, run: &str) -> Result<Vec<EventMeta>, StoreError> {
        self.inner.events_by_run(job, run).await
    }
    async fn event_contents(
        &self,
        job: &str,
        run: &str,
        max_step: Option<u32>,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.event_contents(job, run, max_step).await
    }
    async fn store_job(&self, j: &Job) -> Result<(), StoreError> {
        self.write(Write::Job(j), self.inner.store_job(j)).await
    }
    async fn retrieve_job(&self, job: &str) -> Result<Option<Job>, StoreError> {
        self.inner.retrieve_job(job).await
    }
    async fn all_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.inner.all_jobs().await
    }
    async fn store_run_setting(&self, s: &RunSetting) -> Result<(), StoreError> {
        self.write(Write::RunSetting(s), self.inner.store_run_setting(s))
            .await
    }
    async fn all_run_settings(&self) -> Result<Vec<RunSetting>, StoreError> {
        self.inner.all_run_settings().await
    }
    async fn claim(&self, job: &str) -> Result<Claim, StoreError> {
        self.inner.claim(job).await
    }
}
