//! How the bus fails: a refused checkpoint hides its event, a failed sink still stores and
//! delivers every event and reports the failure on every later publish, a transient store
//! error is tried again, and a storage stop is shown without being stored.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};

use super::*;
use crate::agent::{Machine, MachineSetting, RunFailure, Start, ToolIndex};
use crate::schema::ExpertRef;
use crate::storage::StoreError;
use crate::tests::hooked_storage::{Hooked, Write, WriteHook};

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

/// Checkpoint writes fail with `kind` the first `failures` times.
pub(super) struct Flaky {
    failures: AtomicUsize,
    kind: std::io::ErrorKind,
}

#[async_trait::async_trait]
impl WriteHook for Flaky {
    async fn before(&self, write: Write<'_>) -> Result<(), StoreError> {
        let failed = matches!(write, Write::Checkpoint(_))
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        match failed {
            true => Err(StoreError::Io {
                path: "cp.json".into(),
                source: self.kind.into(),
            }),
            false => Ok(()),
        }
    }
}

pub(super) fn flaky(failures: usize, kind: std::io::ErrorKind) -> Arc<Hooked<Flaky>> {
    Arc::new(Hooked::new(Flaky {
        failures: AtomicUsize::new(failures),
        kind,
    }))
}

/// `startRun`, `startGeneration`, then a `stopRunByError` carrying its checkpoint.
pub(super) fn run_events() -> Vec<Event> {
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

pub(super) fn bus(sink: Option<Sink>, storage: Arc<dyn Storage>) -> Bus {
    Bus::spawn(BusArgs {
        sink: sink.map(Destination::Async),
        storage,
        callbacks: Vec::new(),
    })
}

#[tokio::test]
async fn a_closed_output_still_stores_and_delivers_and_is_reported_on_every_later_publish() {
    let storage = flaky(0, std::io::ErrorKind::Other);
    let bus = bus(Some(Box::new(ClosedPipe)), storage.clone());
    let (tx, mut rx) = mpsc::channel(16);
    bus.actor()
        .ask(OpenJob {
            job_id: "job".into(),
            last_seq: 0,
            events: Some(tx),
        })
        .await
        .unwrap();
    let mut events = run_events().into_iter();
    let stop = events.clone().last().unwrap();
    // The write of the first line finds the output closed; every publish after it says so.
    let _ = bus.publish(events.next().unwrap()).await;
    bus.actor().ask(Flush).await.unwrap();
    for event in events {
        let err = bus.publish(event).await.unwrap_err();
        assert!(matches!(err, BusError::Sink(_)), "{err}");
        assert!(err.event_was_stored());
        assert!(matches!(err.run_failure(), RunFailure::OutputClosed(_)));
        assert!(err.run_failure().stops_the_job());
    }
    // Stored with the number of its event, the third of the job.
    let mut cp = stop.checkpoint().unwrap().clone();
    cp.job_seq = Some(3);
    assert_eq!(
        storage.retrieve_checkpoint("job", &cp.id).await.unwrap(),
        cp
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
    assert_eq!(b.publish(stop.clone()).await.unwrap(), 1);

    let storage = flaky(1, std::io::ErrorKind::StorageFull);
    let b = bus(None, storage.clone());
    let err = b.publish(stop.clone()).await.unwrap_err();
    assert!(matches!(err, BusError::Checkpoint { .. }), "{err}");
    assert!(!err.event_was_stored());
    let failure = err.run_failure();
    assert_eq!(failure.to_run_error().name, "StorageError");
    assert!(failure.is_visible_unstored() && failure.stops_the_job());
    // Nothing was stored, and the failed event was not shown: the next one is number 1.
    let cp = stop.checkpoint().unwrap();
    assert!(storage.retrieve_checkpoint("job", &cp.id).await.is_err());
    assert_eq!(b.publish_unstored(stop.clone()).await.unwrap(), 1);
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
    b.actor().stop_gracefully().await.unwrap();
    b.actor().wait_for_shutdown().await;
    let err = b.publish(run_events().remove(0)).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
    assert_eq!(err.run_failure().to_run_error().name, "EngineError");
    assert_eq!(crate::engine::EngineError::from(err).exit_code(), 1);
}
