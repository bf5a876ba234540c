//! How the bus numbers and batches: a batch keeps its order and takes one reply, each job
//! has its own gapless sequence that goes on from where a continued job stopped, a refused
//! checkpoint takes no number, stored checkpoints and events carry theirs, and the lines
//! producers serialise before the bus numbers their events are those of the numbered events.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context as TaskContext, Poll};

use super::failure_tests::{bus, flaky, run_events};
use super::*;
use crate::schema::{Envelope, SkillDisconnected};

/// A runtime event of `job` (printed, never stored).
fn runtime(job: &str) -> Event {
    Envelope::runtime(job, "run").into_event(
        1,
        EventPayload::SkillDisconnected(SkillDisconnected {
            skill_name: "s".into(),
            extra: serde_json::Map::new(),
        }),
    )
}

async fn open(b: &Bus, job: &str, last_seq: u64) -> mpsc::Receiver<Sequenced> {
    let (tx, rx) = mpsc::channel(64);
    b.actor()
        .ask(OpenJob {
            job_id: job.into(),
            last_seq,
            events: Some(tx),
        })
        .await
        .unwrap();
    rx
}

#[tokio::test]
async fn a_batch_is_published_in_order_with_one_reply_and_each_job_counts_its_own_events() {
    let storage = flaky(0, std::io::ErrorKind::Other);
    let b = bus(Some(Box::new(tokio::io::sink())), storage.clone());
    let mut job = open(&b, "job", 0).await;
    let mut other = open(&b, "other", 0).await;
    let events = run_events();
    let n = events.len() as u64;
    assert_eq!(b.publish_batch(events.clone()).await.unwrap(), n);
    assert_eq!(b.publish(runtime("other")).await.unwrap(), n + 1);
    assert_eq!(b.publish(runtime("job")).await.unwrap(), n + 2);
    for (i, sent) in events.iter().enumerate() {
        let got = job.recv().await.unwrap();
        assert_eq!(got.event.id, sent.id);
        assert_eq!((got.seq, got.job_seq()), (i as u64 + 1, Some(i as u64 + 1)));
    }
    assert_eq!(job.recv().await.unwrap().job_seq(), Some(n + 1));
    assert_eq!(other.recv().await.unwrap().job_seq(), Some(1));
    assert_eq!(b.actor().ask(CloseJob("job".into())).await.unwrap(), n + 1);
    // A job that is not open (any more) gets no number.
    b.publish(runtime("job")).await.unwrap();
    assert!(job.recv().await.is_none(), "its subscribers are gone");

    // The checkpoint the last event carries is stored with that event's number.
    let stop = events.last().unwrap();
    let cp = stop.checkpoint().unwrap();
    let stored = storage.retrieve_checkpoint("job", &cp.id).await.unwrap();
    assert_eq!(stored.job_seq, Some(n));
    let stored = storage.event_contents("job", "run", None).await.unwrap();
    let seqs: Vec<_> = stored.iter().map(|e| e.job_seq).collect();
    assert_eq!(seqs, (1..=n).map(Some).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_continued_job_numbers_on_from_its_last_event() {
    let b = bus(None, flaky(0, std::io::ErrorKind::Other));
    let mut job = open(&b, "job", 41).await;
    b.publish_batch(run_events()).await.unwrap();
    assert_eq!(job.recv().await.unwrap().job_seq(), Some(42));
    assert_eq!(job.recv().await.unwrap().job_seq(), Some(43));
}

#[tokio::test]
async fn a_refused_checkpoint_stops_its_batch_and_takes_no_number() {
    let b = bus(None, flaky(1, std::io::ErrorKind::StorageFull));
    let mut job = open(&b, "job", 0).await;
    let mut events = run_events();
    let stop = events.pop().unwrap();
    let mut batch = events.clone();
    batch.push(stop.clone());
    batch.push(runtime("job"));
    let err = b.publish_batch(batch).await.unwrap_err();
    assert!(matches!(err, BusError::Checkpoint { .. }), "{err}");
    for i in 1..=events.len() as u64 {
        assert_eq!(job.recv().await.unwrap().job_seq(), Some(i));
    }
    // The stop shown unstored is the next number: nothing after the refused one was shown.
    b.publish_unstored(stop).await.unwrap();
    let shown = job.recv().await.unwrap();
    assert_eq!(shown.event.kind(), "stopRunByError");
    assert_eq!(shown.job_seq(), Some(events.len() as u64 + 1));
}

#[test]
fn stored_forms_carry_the_job_sequence_and_stdout_does_not() {
    let mut event = run_events().pop().unwrap();
    event.set_job_seq(7);
    let line = serde_json::to_value(&event).unwrap();
    assert!(line.get("jobSeq").is_none());
    assert!(line["checkpoint"].get("jobSeq").is_none());
    let stored = serde_json::to_value(event.stored()).unwrap();
    assert_eq!(stored["jobSeq"], 7);
    let back: Event = serde_json::from_value(stored).unwrap();
    assert_eq!(back.job_seq, Some(7));
    let cp = event.checkpoint().unwrap();
    let stored = serde_json::to_value(cp.stored()).unwrap();
    assert_eq!(stored["jobSeq"], 7);
    let back: crate::schema::Checkpoint = serde_json::from_value(stored).unwrap();
    assert_eq!(&back, cp);
    assert!(back.extra.is_empty(), "jobSeq is no unknown field");
}

/// A sink that keeps every byte it is given.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What the bus printed for `events` (a batch, then each alone, the last unstored) when its
/// producers serialise (`prints`) or when they do not and the bus serialises, and the lines
/// of the events as the bus numbered and delivered them.
async fn printed(prints: bool, events: &[Event]) -> (String, String) {
    let sink = Captured::default();
    let b = bus(
        Some(Box::new(sink.clone())),
        flaky(0, std::io::ErrorKind::Other),
    );
    let b = Bus { prints, ..b };
    let mut job = open(&b, "job", 41).await;
    b.publish_batch(events.to_vec()).await.unwrap();
    for e in events {
        b.publish(e.clone()).await.unwrap();
    }
    b.publish_unstored(events[0].clone()).await.unwrap();
    b.actor().ask(Flush).await.unwrap();
    let mut expected = String::new();
    for _ in 0..2 * events.len() + 1 {
        let delivered = job.recv().await.unwrap();
        assert!(delivered.job_seq().is_some());
        expected += &serde_json::to_string(&*delivered.event).unwrap();
        expected.push('\n');
    }
    (sink.text(), expected)
}

/// Producers serialise an event before the bus gives it its numbers (`lines`): that relies on
/// the stdout line not depending on them. Fails if a number (or anything else the bus sets)
/// ever reaches the line, or if the lines of a batch got out of step with its events.
#[tokio::test]
async fn lines_serialised_by_producers_are_those_of_the_numbered_events() {
    let mut events = run_events();
    events.push(runtime("job"));
    assert!(events.iter().any(|e| e.checkpoint().is_some()));
    let (from_producers, expected) = printed(true, &events).await;
    assert_eq!(from_producers, expected);
    let (from_bus, _) = printed(false, &events).await;
    assert_eq!(from_bus, from_producers);
    assert_eq!(from_bus.lines().count(), 2 * events.len() + 1);
}
