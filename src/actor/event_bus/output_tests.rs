//! How the output holds back: a reply that ends a burst waits until its lines are written, a
//! stalled reader stalls the bus after a bounded amount of lines (memory stays flat), and
//! once the reader goes on every line arrives, in order, none twice.

use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use super::failure_tests::{bus, flaky, run_events};
use super::*;

/// A sink whose reader can be stalled: writes wait while it is shut.
#[derive(Clone, Default)]
struct Valve(Arc<Mutex<ValveState>>);

#[derive(Default)]
struct ValveState {
    open: bool,
    written: Vec<u8>,
    waiting: Option<Waker>,
}

impl Valve {
    fn open(&self) {
        let mut s = self.0.lock().unwrap();
        s.open = true;
        if let Some(w) = s.waiting.take() {
            w.wake();
        }
    }
    fn written(&self) -> Vec<u8> {
        self.0.lock().unwrap().written.clone()
    }
}

impl AsyncWrite for Valve {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut s = self.0.lock().unwrap();
        if !s.open {
            s.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        s.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_stalls_the_bus_within_bounds_and_loses_nothing() {
    let valve = Valve::default();
    let b = bus(
        Some(Box::new(valve.clone())),
        flaky(0, std::io::ErrorKind::Other),
    );
    let event = run_events().remove(0);
    let line = serde_json::to_vec(&event).unwrap().len() as u64 + 1;

    // The bus is idle after it: the reply waits for the line, which cannot be written.
    let first = tokio::spawn({
        let (b, event) = (b.clone(), event.clone());
        async move { b.publish(event).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!first.is_finished(), "answered before its line was written");

    // Many producers: the bus takes a bounded amount, then stops answering.
    let answered = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..64)
        .map(|_| {
            let (b, event, answered) = (b.clone(), event.clone(), answered.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    b.publish(event.clone()).await.unwrap();
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Until the bus stops taking events (bounded: it reports rather than hangs).
    let mut filled = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = answered.load(Ordering::SeqCst);
        if now > 0 && now == filled {
            break;
        }
        filled = now;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(answered.load(Ordering::SeqCst), filled, "the bus went on");
    // Lines taken are held: in the bus's buffer (up to WRITE_AT and a line) and handed over
    // (up to twice that); far from the 12,800 events the producers have.
    let bound = (4 * output::WRITE_AT as u64) / line + 64;
    assert!(
        filled < bound,
        "{filled} events taken with the reader stalled"
    );

    valve.open();
    first.await.unwrap().unwrap();
    for p in producers {
        p.await.unwrap();
    }
    b.actor().ask(Flush).await.unwrap();
    let written = valve.written();
    let expected: Vec<u8> = std::iter::repeat_n(serde_json::to_vec(&event).unwrap(), 64 * 200 + 1)
        .flat_map(|mut l| {
            l.push(b'\n');
            l
        })
        .collect();
    assert_eq!(written.len(), expected.len(), "every line once");
    assert!(written == expected);
}
