//! How the bus fails: a refused checkpoint hides its event, a failed sink still stores and
//! delivers every event and reports the failure on every later publish, a transient store
//! error is tried again, and a storage stop is shown without being stored.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};

use super::*;
use crate::agent::{Machine, MachineSetting, Start, ToolIndex};
use crate::schema::{ExpertRef, Job, RunSetting};
use crate::storage::{EventMeta, MemoryStorage};

/// A sink whose reader is gone.
struct ClosedPipe;

impl AsyncWrite for ClosedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A store whose checkpoint writes fail with `kind` the first `failures` times.
struct Flaky {
    inner: MemoryStorage,
    failures: AtomicUsize,
    kind: std::io::ErrorKind,
}

#[async_trait::async_trait]
impl Storage for Flaky {
    async fn store_checkpoint(&self, cp: &crate::schema::Checkpoint) -> Result<(), StoreError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Io {
                path: "cp.json".into(),
                source: self.kind.into(),
            });
        }
        self.inner.store_checkpoint(cp).await
    }
    async fn retrieve_checkpoint(
        &self,
        job: &str,
        id: &str,
    ) -> Result<crate::schema::Checkpoint, StoreError> {
        self.inner.retrieve_checkpoint(job, id).await
    }
    async fn checkpoints_by_job(
        &self,
        job: &str,
    ) -> Result<Vec<crate::schema::Checkpoint>, StoreError> {
        self.inner.checkpoints_by_job(job).await
    }
    async fn store_event(&self, event: &Event) -> Result<(), StoreError> {
        self.inner.store_event(event).await
    }
    async fn events_by_run(&self, job: &str, run: &str) -> Result<Vec<EventMeta>, StoreError> {
        self.inner.events_by_run(job, run).await
    }
    async fn event_contents(
        &self,
        job: &str,
        run: &str,
        max: Option<u32>,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.event_contents(job, run, max).await
    }
    async fn store_job(&self, job: &Job) -> Result<(), StoreError> {
        self.inner.store_job(job).await
    }
    async fn retrieve_job(&self, job: &str) -> Result<Option<Job>, StoreError> {
        self.inner.retrieve_job(job).await
    }
    async fn all_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.inner.all_jobs().await
    }
    async fn store_run_setting(&self, s: &RunSetting) -> Result<(), StoreError> {
        self.inner.store_run_setting(s).await
    }
    async fn all_run_settings(&self) -> Result<Vec<RunSetting>, StoreError> {
        self.inner.all_run_settings().await
    }
    async fn claim(&self, job_id: &str) -> Result<crate::storage::Claim, StoreError> {
        self.inner.claim(job_id).await
    }
}

fn flaky(failures: usize, kind: std::io::ErrorKind) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: MemoryStorage::new(),
        failures: AtomicUsize::new(failures),
        kind,
    })
}

/// `startRun`, `startGeneration`, then a `stopRunByError` carrying its checkpoint.
fn run_events() -> Vec<Event> {
    let setting = MachineSetting {
        job_id: "job".into(),
        run_id: "run".into(),
        expert: ExpertRef {
            key: "e".into(),
            name: "e".into(),
            version: "1.0.0".into(),
        },
        max_steps: 10,
        max_retries: 1,
        context_window: None,
    };
    let cp = Machine::fresh_checkpoint(&setting, 1);
    let mut m = Machine::new(setting, ToolIndex::new(), cp);
    let mut events = m.start(1, Start::Query("q".into()), "i".into()).events;
    events.extend(m.abort(2, RunFailure::Cancelled).events);
    events
}

fn bus(sink: Option<Sink>, storage: Arc<dyn Storage>) -> ActorRef<EventBus> {
    EventBus::spawn(BusArgs {
        sink,
        storage,
        callbacks: Vec::new(),
    })
}

#[tokio::test]
async fn a_closed_output_still_stores_and_delivers_and_is_reported_on_every_publish() {
    let storage = flaky(0, std::io::ErrorKind::Other);
    let bus = bus(Some(Box::new(ClosedPipe)), storage.clone());
    let (tx, mut rx) = mpsc::channel(16);
    bus.ask(Subscribe {
        job_id: "job".into(),
        tx,
    })
    .await
    .unwrap();
    let events = run_events();
    let stop = events.last().unwrap().clone();
    for event in events {
        let err = bus
            .ask(Publish(event))
            .await
            .map_err(BusError::from_send)
            .unwrap_err();
        assert!(matches!(err, BusError::Sink(_)), "{err}");
        assert!(err.event_was_stored());
        assert!(matches!(err.run_failure(), RunFailure::OutputClosed(_)));
        assert!(err.run_failure().stops_the_job());
    }
    let cp = stop.checkpoint().unwrap();
    assert_eq!(
        storage.retrieve_checkpoint("job", &cp.id).await.unwrap(),
        *cp
    );
    for kind in ["startRun", "startGeneration", "stopRunByError"] {
        assert_eq!(rx.recv().await.unwrap().event.kind(), kind);
    }
}

#[tokio::test]
async fn a_transient_store_error_is_tried_again_and_a_full_disk_is_not() {
    let stop = run_events().pop().unwrap();
    let storage = flaky(STORE_ATTEMPTS - 1, std::io::ErrorKind::Interrupted);
    let b = bus(None, storage.clone());
    assert_eq!(b.ask(Publish(stop.clone())).await.unwrap(), 1);

    let storage = flaky(1, std::io::ErrorKind::StorageFull);
    let b = bus(None, storage.clone());
    let err = b
        .ask(Publish(stop.clone()))
        .await
        .map_err(BusError::from_send)
        .unwrap_err();
    assert!(matches!(err, BusError::Checkpoint { .. }), "{err}");
    assert!(!err.event_was_stored());
    let failure = err.run_failure();
    assert_eq!(failure.to_run_error().name, "StorageError");
    assert!(failure.is_visible_unstored() && failure.stops_the_job());
    // Nothing was stored, and the failed event was not shown: the next one is number 1.
    let cp = stop.checkpoint().unwrap();
    assert!(storage.retrieve_checkpoint("job", &cp.id).await.is_err());
    assert_eq!(b.ask(PublishUnstored(stop.clone())).await.unwrap(), 1);
    assert!(storage.retrieve_checkpoint("job", &cp.id).await.is_err());
    assert!(
        storage
            .event_contents("job", "run", None)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_bus_that_is_gone_is_an_engine_fault() {
    let b = bus(None, flaky(0, std::io::ErrorKind::Other));
    b.stop_gracefully().await.unwrap();
    b.wait_for_shutdown().await;
    let err = b
        .ask(Publish(run_events().remove(0)))
        .await
        .map_err(BusError::from_send)
        .unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
    assert_eq!(err.run_failure().to_run_error().name, "EngineError");
    assert_eq!(crate::engine::EngineError::from(err).exit_code(), 1);
}
