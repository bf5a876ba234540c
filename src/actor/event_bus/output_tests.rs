//! How the output holds back: a publish is answered once its lines are queued, not written, a
//! stalled reader stalls the bus after a bounded amount of lines (memory stays flat), and
//! once the reader goes on every line arrives, in order, none twice; for an async sink written
//! by a task and for a blocking one written by a thread. The writer thread sleeps when idle
//! and is woken by the next hand-over, reports a failed sink, and ends with the bus.

use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
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

/// The writer is stuck writing the first burst: the publishes after it are still answered,
/// in order, and their lines follow once the reader goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_answered_once_its_line_is_queued_not_once_it_is_written() {
    let valve = Valve::default();
    let b = bus(
        Some(Box::new(valve.clone())),
        flaky(0, std::io::ErrorKind::Other),
    );
    let event = run_events().remove(0);
    for n in 1..=3 {
        let published = tokio::time::timeout(Duration::from_secs(10), b.publish(event.clone()));
        let seq = published.await.expect("answered with the writer stuck");
        assert_eq!(seq.unwrap(), n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(valve.written().is_empty());

    valve.open();
    tokio::time::timeout(Duration::from_secs(10), b.actor().ask(Flush))
        .await
        .expect("flushed once the reader went on")
        .unwrap();
    let line = serde_json::to_vec(&event).unwrap().len() + 1;
    assert_eq!(valve.written().len(), 3 * line, "every line once");
}

/// A blocking sink whose reader can be stalled: writes block while it is shut. Records
/// whether it was dropped.
#[derive(Clone, Default)]
struct BlockingValve(Arc<(Mutex<ValveState>, Condvar)>, Arc<AtomicBool>);

impl BlockingValve {
    fn open(&self) {
        self.0.0.lock().unwrap().open = true;
        self.0.1.notify_all();
    }
    fn written(&self) -> Vec<u8> {
        self.0.0.lock().unwrap().written.clone()
    }
}

impl std::io::Write for BlockingValve {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = self.0.0.lock().unwrap();
        while !s.open {
            s = self.0.1.wait(s).unwrap();
        }
        s.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for BlockingValve {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) == 1 {
            self.1.store(true, Ordering::SeqCst);
        }
    }
}

fn blocking_bus(sink: BlockingValve) -> Bus {
    Bus::spawn(BusArgs {
        sink: Some(Destination::Blocking(Box::new(sink))),
        storage: flaky(0, std::io::ErrorKind::Other),
        callbacks: Vec::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_stalls_the_bus_within_bounds_and_loses_nothing() {
    let valve = Valve::default();
    let b = bus(
        Some(Box::new(valve.clone())),
        flaky(0, std::io::ErrorKind::Other),
    );
    let open = valve.clone();
    stall_and_resume(b, move || open.open(), move || valve.written()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_of_a_blocking_sink_stalls_the_bus_within_bounds_and_loses_nothing() {
    let valve = BlockingValve::default();
    let b = blocking_bus(valve.clone());
    let open = valve.clone();
    stall_and_resume(b, move || open.open(), move || valve.written()).await;
}

/// With the reader of `b`'s sink stalled, the bus stops taking events within bounds; after
/// `open`, every line arrives once, in order.
async fn stall_and_resume(b: Bus, open: impl FnOnce(), written: impl FnOnce() -> Vec<u8>) {
    let event = run_events().remove(0);
    let line = serde_json::to_vec(&event).unwrap().len() as u64 + 1;

    // The writer takes its line and is stuck writing it.
    let first = tokio::spawn({
        let (b, event) = (b.clone(), event.clone());
        async move { b.publish(event).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

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

    open();
    // Bounded: a writer that is never woken again fails the test instead of hanging it.
    let resumed = async {
        first.await.unwrap().unwrap();
        for p in producers {
            p.await.unwrap();
        }
        b.actor().ask(Flush).await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), resumed)
        .await
        .expect("every producer was answered once the reader went on");
    let written = written();
    let expected: Vec<u8> = std::iter::repeat_n(serde_json::to_vec(&event).unwrap(), 64 * 200 + 1)
        .flat_map(|mut l| {
            l.push(b'\n');
            l
        })
        .collect();
    assert_eq!(written.len(), expected.len(), "every line once");
    assert!(written == expected);
}

/// Between bursts the writer thread sleeps; every hand-over after that must wake it (a lost
/// wake-up leaves the line unwritten: the test fails on its bound instead of hanging).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_thread_wakes_for_every_burst_after_sleeping() {
    let valve = BlockingValve::default();
    valve.open();
    let b = blocking_bus(valve.clone());
    let event = run_events().remove(0);
    let mut line = serde_json::to_vec(&event).unwrap();
    line.push(b'\n');
    for n in 1..=200u64 {
        let published = tokio::time::timeout(Duration::from_secs(10), b.publish(event.clone()));
        assert_eq!(published.await.expect("the reply came").unwrap(), n);
        // A lone event's line is written without a later event to push it out.
        let expected = line.len() * n as usize;
        let mut waited = 0;
        while valve.written().len() < expected && waited < 10_000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited += 1;
        }
        assert_eq!(valve.written().len(), expected, "line {n} was not written");
        if n % 50 == 0 {
            // Long enough for the thread to go to sleep.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A blocking sink whose reader is gone.
struct BrokenPipe;

impl std::io::Write for BrokenPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_blocking_sink_is_reported_and_the_writer_thread_ends_with_the_bus() {
    let b = Bus::spawn(BusArgs {
        sink: Some(Destination::Blocking(Box::new(BrokenPipe))),
        storage: flaky(0, std::io::ErrorKind::Other),
        callbacks: Vec::new(),
    });
    let mut events = run_events().into_iter();
    // The write of the first line finds the sink broken; every publish after it says so.
    let _ = b.publish(events.next().unwrap()).await;
    b.actor().ask(Flush).await.unwrap();
    for event in events {
        let err = b.publish(event).await.unwrap_err();
        assert!(matches!(err, BusError::Sink(_)), "{err}");
    }

    let valve = BlockingValve::default();
    valve.open();
    let dropped = valve.1.clone();
    let b = blocking_bus(valve);
    b.publish(run_events().remove(0)).await.unwrap();
    b.actor().stop_gracefully().await.unwrap();
    b.actor().wait_for_shutdown().await;
    drop(b);
    // The thread drops the sink as it ends.
    for _ in 0..1000 {
        if dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the writer thread still holds the sink");
}

#[test]
fn a_pipe_sink_gets_the_wider_buffer_and_anything_else_is_left_as_it_is() {
    use std::os::fd::AsFd;
    let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let size = |fd: &std::io::PipeReader| {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap() as usize
    };
    output::widen_pipe(writer.as_fd());
    assert_eq!(size(&reader), output::PIPE_BUFFER.min(max));
    // Never narrowed: a pipe already wider keeps its buffer (when the system lets it be).
    let (reader, writer) = std::io::pipe().unwrap();
    if nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_SETPIPE_SZ(2 << 20)).is_ok() {
        let wide = size(&reader);
        output::widen_pipe(writer.as_fd());
        assert_eq!(size(&reader), wide);
    }
    // A file is not a pipe: nothing to do, nothing fails.
    output::widen_pipe(tempfile::tempfile().unwrap().as_fd());
}
