//! T4, `bus/*`: the engine's event bus alone, driven through the public API: an [`Engine`]
//! (the instant fan-out model, storage discarded by
//! [`DiscardStorage`](crate::support::DiscardStorage)) whose sink is under test, fed a
//! `callTools` event of the reference workload with [`Engine::publish`] (one message per batch,
//! as a run publishes a machine output), no job running.
//!
//! - `bus/publish_one`: one producer, one single-event batch at a time, sink `tokio::io::sink()`;
//! - then, without criterion: 1 and 16 producers into `tokio::io::sink()`, with single-event
//!   batches (as streaming events come) and [`BATCH`]-event batches; 16 producers into an OS
//!   pipe (`std::io::pipe`, read by a thread that counts lines) in events/s (the batched
//!   rate [`PIPE_RUNS`] times), written two ways:
//!   as the pipe's writing end given to `EngineBuilder::fd_sink`, which raises the pipe's
//!   kernel buffer to 1 MiB and writes from the bus's writer thread, as the CLI writes its
//!   stdout, and, as the CLI did before, through `tokio::fs::File` as an async sink (each
//!   write a hand-off to tokio's blocking pool, as `tokio::io::stdout()` does, on a pipe of
//!   the default 64 KiB); and each pipe with the reader stalled for
//!   [`STALL`] while 64 producers publish: how many events the bus still takes, how RSS moves,
//!   and whether every event arrives once the reader resumes (bounded waits: it reports rather
//!   than hangs).
//!
//! Producers clone the event for every publish (a run builds each event anew) and serialise
//! its line (`Engine::publish` does, as a run's publish does), so the rates include making
//! the events, on the same cores as the bus. The pipe row also gives the process's CPU time
//! per event (all threads: producers, bus, writer, reader), which a shared machine's load
//! does not change as much as the rate, and its context switches per 1,000 events; each
//! batched run comes with the time a cache line took to cross between the two cores and back
//! just before it ([`core_round_trip`]): the host sometimes puts this machine's two cores far
//! apart (the round trip goes from about 65 to about 340 ns), and every multi-threaded row
//! then runs at about half its rate, so the row also gives the median of the runs with the
//! cores near. Last, the
//! floor: the same making and moving of an event with no bus at all (see [`floor`]), which
//! says how much of a pipe row's CPU time is the bus's and bounds the rate any bus could
//! reach on this machine.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tokio::runtime::Runtime;

use perstack::engine::{Engine, Sink};
use perstack::schema::Event;
use perstack::storage::Storage;

use crate::GIVE_UP;
use crate::support::{DiscardStorage, FanoutModel, process_cpu, status_kib};

/// How long the pipe reader stalls in the T4 back-pressure check.
const STALL: Duration = Duration::from_secs(1);
/// Events per producer-throughput measurement of T4.
const BUS_EVENTS: u64 = 204_800;
/// Events per batch in the batched measurements: a tool step's machine output
/// (`resolveToolResults` .. `startGeneration`) is 4-6 events; 8 stands for a busy turn.
const BATCH: u64 = 8;

/// A `callTools` event of the reference workload, as Perstack prints it (as in
/// `benches/fanout.rs`).
const CALL_TOOLS: &str = r#"{"type":"callTools","id":"bwgiescld20w6p2hvmp669hi","expertKey":"coordinator","timestamp":1795729279647,"jobId":"kq2y1n5v0d7c3x8m4b6a9z1w","runId":"czh87xqx33fm5efnri0vp050","stepNumber":1,"newMessage":{"type":"expertMessage","contents":[{"type":"thinkingPart","id":"t0b3kq9v8x7c6n5m4l3k2j1h","thinking":"Two independent halves: delegate both at once."},{"type":"toolCallPart","toolCallId":"call_child_a","toolName":"child-a","args":{"query":"Do the first half"},"id":"e8b0m1gux6cyn6vy61zkbo9y"},{"type":"toolCallPart","toolCallId":"call_child_b","toolName":"child-b","args":{"query":"Do the second half"},"id":"i8juirdznq0pp7hukm4pgqfl"}],"id":"mux230rwscs9lw1ca55uasw9"},"toolCalls":[{"id":"call_child_a","skillName":"child-a","toolName":"child-a","args":{"query":"Do the first half"}},{"id":"call_child_b","skillName":"child-b","toolName":"child-b","args":{"query":"Do the second half"}}],"usage":{"inputTokens":120,"outputTokens":30,"reasoningTokens":0,"totalTokens":150,"cachedInputTokens":0}}"#;

/// `producers` tasks publish `total` events between them in batches of `batch`, each waiting
/// for every reply (as the runs do); the time until all replies are in. `total` must be a
/// multiple of `producers * batch` (every count below is).
async fn publish_all(
    engine: &Arc<Engine>,
    event: &Event,
    producers: u64,
    batch: u64,
    total: u64,
) -> Duration {
    assert_eq!(total % (producers * batch), 0, "whole batches only");
    let batches = total / producers / batch;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let engine = engine.clone();
            let event = event.clone();
            tokio::spawn(async move {
                for _ in 0..batches {
                    let events = (0..batch).map(|_| event.clone()).collect();
                    engine
                        .publish(events)
                        .await
                        .expect("the bus accepts the events");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a producer task");
    }
    t0.elapsed()
}

/// Where a bench engine writes.
enum Out {
    /// `EngineBuilder::sink`: written by a tokio task.
    Async(Sink),
    /// `EngineBuilder::blocking_sink`: written by the bus's writer thread.
    Blocking(Box<dyn std::io::Write + Send>),
    /// `EngineBuilder::fd_sink`: the same, a pipe's buffer widened first (as the CLI's stdout).
    Fd(OwnedFd),
}

/// How the bus writes into a [`PipeDrain`]'s pipe.
#[derive(Clone, Copy)]
enum PipeSink {
    /// [`Out::Fd`], as the CLI writes its stdout.
    Fd,
    /// [`Out::Async`] through `tokio::fs::File`: each write on tokio's blocking pool, as
    /// `tokio::io::stdout()` writes.
    AsyncFile,
}

/// An engine whose bus writes to `out` (call inside the runtime).
fn engine(out: Out) -> Arc<Engine> {
    let storage: Arc<dyn Storage> = Arc::new(DiscardStorage);
    let builder = Engine::builder()
        .model(Arc::new(FanoutModel))
        .storage(storage);
    Arc::new(
        match out {
            Out::Async(sink) => builder.sink(sink),
            Out::Blocking(sink) => builder.blocking_sink(sink),
            Out::Fd(fd) => builder.fd_sink(fd),
        }
        .build(),
    )
}

/// Flush the sink and stop the bus (drops the sink).
async fn stop(engine: Arc<Engine>) {
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.shutdown().await,
        Err(_) => panic!("a producer still holds the engine"),
    }
}

/// The reading end of an OS pipe, drained by a thread that counts lines and can be paused.
struct PipeDrain {
    /// Another descriptor of the reading end, to ask the pipe its buffer.
    probe: std::io::PipeReader,
    paused: Arc<AtomicBool>,
    lines: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl PipeDrain {
    /// A pipe whose writing end is returned as a bus sink of kind `sink`.
    fn new(sink: PipeSink) -> (Self, Out) {
        let (mut reader, writer) = std::io::pipe().expect("an OS pipe");
        let probe = reader.try_clone().expect("a second reading descriptor");
        let paused = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(AtomicU64::new(0));
        let thread = {
            let (paused, lines) = (paused.clone(), lines.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    if paused.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            lines.fetch_add(newlines(&buf[..n]), Ordering::Release);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            })
        };
        let writer = OwnedFd::from(writer);
        let sink = match sink {
            PipeSink::Fd => Out::Fd(writer),
            PipeSink::AsyncFile => Out::Async(Box::new(tokio::fs::File::from_std(
                std::fs::File::from(writer),
            ))),
        };
        (
            PipeDrain {
                probe,
                paused,
                lines,
                thread,
            },
            sink,
        )
    }

    /// The pipe's kernel buffer, in bytes.
    fn buffer(&self) -> i32 {
        nix::fcntl::fcntl(&self.probe, nix::fcntl::FcntlArg::F_GETPIPE_SZ).expect("a pipe")
    }

    fn lines(&self) -> u64 {
        self.lines.load(Ordering::Acquire)
    }

    /// Wait (bounded) until the reader has seen `lines` lines; whether it did.
    async fn wait_for(&self, lines: u64) -> bool {
        let deadline = Instant::now() + GIVE_UP;
        while self.lines() < lines {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }
}

/// The newlines in `bytes`, counted in byte lanes 255 bytes at a time, which the compiler
/// vectorises (a plain `filter(..).count()` sums into 64-bit lanes, a few bytes per step: at
/// 0.5 GB/s the reader thread took a tenth of the process's CPU time).
fn newlines(bytes: &[u8]) -> u64 {
    bytes
        .chunks(255)
        .map(|chunk| {
            let n = chunk
                .iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from(b == b'\n')));
            u64::from(n)
        })
        .sum()
}

pub(crate) fn bench_bus(c: &mut Criterion, rt: &Runtime, report: &mut Vec<String>) {
    let event: Event = serde_json::from_str(CALL_TOOLS).expect("a valid callTools event");
    let line_len = serde_json::to_vec(&event).expect("serialisable").len() + 1;
    let bus = {
        let _guard = rt.enter();
        engine(Out::Async(Box::new(tokio::io::sink())))
    };

    let mut ran = false;
    let mut group = c.benchmark_group("bus");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    group.bench_function("publish_one", |b| {
        ran = true;
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    bus.publish(vec![event.clone()])
                        .await
                        .expect("the bus accepts the event");
                }
                t0.elapsed()
            })
        });
    });
    group.finish();
    if !ran {
        rt.block_on(stop(bus));
        return;
    }

    let rate = |d: Duration, n: u64| n as f64 / d.as_secs_f64() / 1e6;
    let one = rt.block_on(publish_all(&bus, &event, 1, 1, BUS_EVENTS));
    let many = rt.block_on(publish_all(&bus, &event, 16, 1, BUS_EVENTS));
    let batched = rt.block_on(publish_all(&bus, &event, 16, BATCH, BUS_EVENTS));
    rt.block_on(stop(bus));
    let line = format!(
        "T4 event bus -> tokio::io::sink() ({line_len}-byte callTools line): {:.2} M events/s with 1 producer, {:.2} M events/s with 16 ({:.0} MB/s), {:.2} M events/s with 16 publishing {BATCH}-event batches",
        rate(one, BUS_EVENTS),
        rate(many, BUS_EVENTS),
        rate(many, BUS_EVENTS) * line_len as f64,
        rate(batched, BUS_EVENTS),
    );
    println!("{line}");
    report.push(line);

    // The bus writing to a discarding blocking writer, from its writer thread.
    let bus = {
        let _guard = rt.enter();
        engine(Out::Blocking(Box::new(std::io::sink())))
    };
    let many = rt.block_on(publish_all(&bus, &event, 16, 1, BUS_EVENTS));
    let batched = rt.block_on(publish_all(&bus, &event, 16, BATCH, BUS_EVENTS));
    rt.block_on(stop(bus));
    let line = format!(
        "T4 event bus -> std::io::sink() (blocking_sink, writer thread): {:.2} M events/s with 16 producers, {:.2} M events/s with 16 publishing {BATCH}-event batches",
        rate(many, BUS_EVENTS),
        rate(batched, BUS_EVENTS),
    );
    println!("{line}");
    report.push(line);

    let widened = pipes(rt, &event, line_len, report);
    let line = floor(&event, widened);
    println!("{line}");
    report.push(line);
}

/// The process's context switches so far, of all its threads, ended ones included
/// (`getrusage`): voluntary ones (a thread waits: for a lock, a wake-up, the pipe) and
/// involuntary ones. Each costs the waker a system call and often another core an interrupt,
/// which in a virtual machine is a trip through the hypervisor.
fn context_switches() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0, |u| {
        let n = u.voluntary_context_switches() + u.involuntary_context_switches();
        u64::try_from(n).unwrap_or(0)
    })
}

/// Events per repetition of the [`floor`] measurements.
const FLOOR_EVENTS: u32 = 400_000;

/// What making and moving one event costs without the bus, in CPU time on this machine: the
/// producer's share (cloning the event, as a run builds it, and serialising its line, as
/// `Engine::publish` does, with [`Event::write_line`]) and the pipe's (writing the lines in
/// 128 KiB writes into a pipe of the `fd_sink` row's buffer, and reading them as
/// [`PipeDrain`] does). Their sum bounds the
/// pipe rows above: with every core busy and a bus that cost nothing, the rate could not pass
/// cores / sum. The least of three repetitions of each, as the process's CPU time is counted
/// in 10 ms ticks and other load only adds.
fn floor(event: &Event, buffer: i32) -> String {
    let per_event = |d: Duration| d.as_secs_f64() * 1e9 / f64::from(FLOOR_EVENTS);
    let least = |f: &dyn Fn() -> Duration| (0..3).map(|_| per_event(f())).fold(f64::MAX, f64::min);
    let serialise = least(&|| {
        let mut buf = Vec::with_capacity(4096);
        let cpu0 = process_cpu();
        for _ in 0..FLOOR_EVENTS {
            buf.clear();
            std::hint::black_box(event)
                .write_line(&mut buf)
                .expect("serialisable");
        }
        process_cpu().saturating_sub(cpu0)
    });
    let clone = least(&|| {
        let cpu0 = process_cpu();
        for _ in 0..FLOOR_EVENTS {
            drop(std::hint::black_box(event.clone()));
        }
        process_cpu().saturating_sub(cpu0)
    });
    let mut line = Vec::new();
    event.write_line(&mut line).expect("serialisable");
    let chunk: Vec<u8> = line.iter().copied().cycle().take(128 * 1024).collect();
    let pipe = least(&|| {
        let (drain, out) = PipeDrain::new(PipeSink::Fd);
        let Out::Fd(fd) = out else {
            unreachable!("a pipe's writing end")
        };
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(buffer))
            .expect("the bus row's buffer");
        let mut sink = std::fs::File::from(fd);
        let bytes = u64::from(FLOOR_EVENTS) * line.len() as u64;
        let cpu0 = process_cpu();
        let mut written = 0;
        while written < bytes {
            sink.write_all(&chunk).expect("the pipe takes the lines");
            written += chunk.len() as u64;
        }
        drop(sink);
        let _ = drain.thread.join();
        process_cpu().saturating_sub(cpu0)
    });
    let sum = serialise + clone + pipe;
    format!(
        "T4 floor, no bus (CPU per {}-byte event, least of 3): serialising its line {serialise:.0} ns, cloning and dropping it {clone:.0} ns, through the pipe ({} KiB buffer as the fd_sink row's, written in 128 KiB, read) {pipe:.0} ns; {sum:.0} ns in all: at most {:.2} M events/s on {} cores with a bus that cost nothing",
        line.len(),
        buffer / 1024,
        crate::cores() as f64 * 1e3 / sum,
        crate::cores(),
    )
}

/// The pipe rows; returns the kernel buffer the engine gave the `fd_sink` row's pipe.
fn pipes(rt: &Runtime, event: &Event, line_len: usize, report: &mut Vec<String>) -> i32 {
    // The same bus writing to an OS pipe: as the CLI writes stdout now (a descriptor written
    // by the bus's thread, its pipe widened), then as it did before (tokio's blocking pool).
    let mut widened = 0;
    for (kind, how) in [
        (PipeSink::Fd, "fd_sink (writer thread)"),
        (
            PipeSink::AsyncFile,
            "tokio::fs::File (async sink, tokio's blocking pool)",
        ),
    ] {
        let (drain, sink) = PipeDrain::new(kind);
        let bus = {
            let _guard = rt.enter();
            engine(sink)
        };
        let buffer = drain.buffer();
        if let PipeSink::Fd = kind {
            widened = buffer;
        }
        let how = format!("{how}, {} KiB pipe buffer", buffer / 1024);
        let how = how.as_str();
        let (line, written) = piped(rt, &bus, event, &drain, how, line_len);
        println!("{line}");
        report.push(line);
        let line = rt.block_on(stalled_reader(&bus, event, &drain, how, written));
        println!("{line}");
        report.push(line);
        rt.block_on(stop(bus));
        let PipeDrain { thread, .. } = drain;
        // The bus dropped the pipe's writing end, so the reader sees end of file.
        let _ = thread.join();
    }
    widened
}

/// How many times the batched pipe row runs: the machine's rate for it swings by up to two
/// times from one minute to the next, so the row gives each run, the median and the best, and
/// each run's [`core_round_trip`].
const PIPE_RUNS: u64 = 5;

/// A [`core_round_trip`] at or under which the machine's two cores count as near: measured
/// 60-110 ns when they are, 310-380 ns when the host has put them far apart (every
/// multi-threaded row then runs at about half its rate; single-threaded code was seen
/// running up to 1.8 times slower in the same spells).
const NEAR_CORES_NS: u64 = 150;

/// How long a cache line takes to go from one core to the other and back, in ns: two
/// threads hand a counter to each other 200,000 times (about 15 ms when near, 70 ms when
/// far). Says which of the machine's two modes a pipe run ran in: every event crosses cores
/// several times (producers, bus, writer thread, reader), so the row's rate follows it.
fn core_round_trip() -> u64 {
    const TRIPS: u64 = 200_000;
    let turn = Arc::new(AtomicU64::new(0));
    // Each side waits for its turn (even: this thread, odd: the other) and passes it on.
    let pass = |turn: &AtomicU64, mine: u64| {
        let mut i = mine;
        while i < 2 * TRIPS {
            while turn.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            turn.store(i + 1, Ordering::Release);
            i += 2;
        }
    };
    let t0 = Instant::now();
    let other = {
        let turn = turn.clone();
        std::thread::spawn(move || pass(&turn, 1))
    };
    pass(&turn, 0);
    other.join().expect("the other side of the round trips");
    u64::try_from(t0.elapsed().as_nanos() / u128::from(TRIPS)).unwrap_or(u64::MAX)
}

/// 16 producers into the pipe of `drain`, one event at a time, then in batches
/// ([`PIPE_RUNS`] times): the rates and the process's CPU time per event (all threads).
/// Returns the line and the events written.
fn piped(
    rt: &Runtime,
    bus: &Arc<Engine>,
    event: &Event,
    drain: &PipeDrain,
    how: &str,
    line_len: usize,
) -> (String, u64) {
    let rate = |d: Duration| BUS_EVENTS as f64 / d.as_secs_f64() / 1e6;
    let cpu = |d: Duration| d.as_secs_f64() * 1e6 / BUS_EVENTS as f64;
    let switches = |a: u64, b: u64| b.saturating_sub(a) as f64 * 1000.0 / BUS_EVENTS as f64;
    // One measurement: (M events/s, us CPU per event, switches per 1,000 events, the core
    // round trip just before it in ns).
    let mut written = 0;
    let mut delivered = true;
    let mut measure = |batch: u64| {
        let trip = core_round_trip();
        let (cpu0, cs0) = (process_cpu(), context_switches());
        let took = rt.block_on(publish_all(bus, event, 16, batch, BUS_EVENTS));
        written += BUS_EVENTS;
        delivered &= rt.block_on(drain.wait_for(written));
        let (cpu1, cs1) = (process_cpu(), context_switches());
        (
            rate(took),
            cpu(cpu1.saturating_sub(cpu0)),
            switches(cs0, cs1),
            trip,
        )
    };
    let single = measure(1);
    let mut batched: Vec<_> = (0..PIPE_RUNS).map(|_| measure(BATCH)).collect();
    let runs = batched
        .iter()
        .map(|(r, _, _, trip)| format!("{r:.2} ({trip} ns)"))
        .collect::<Vec<_>>()
        .join(" / ");
    batched.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, best) = (batched[batched.len() / 2], batched[batched.len() - 1]);
    let near: Vec<_> = batched
        .iter()
        .filter(|run| run.3 <= NEAR_CORES_NS)
        .collect();
    let near = match near.get(near.len() / 2) {
        Some(run) => format!(
            "; the {} runs with the cores near (round trip <= {NEAR_CORES_NS} ns): median {:.2} at {:.2} us CPU",
            near.len(),
            run.0,
            run.1
        ),
        None => format!("; no run with the cores near (round trip <= {NEAR_CORES_NS} ns)"),
    };
    let line = format!(
        "T4 event bus -> OS pipe via {how}, reader draining, 16 producers: {:.2} M events/s publishing single events ({:.0} MB/s, {:.2} us process CPU and {:.0} thread switches per 1,000 events; core round trip {} ns); publishing {BATCH}-event batches, {PIPE_RUNS} runs (each with the core round trip before it): {runs} M events/s, median {:.2} ({:.0} MB/s, {:.2} us CPU and {:.0} switches per 1,000), best {:.2} ({:.2} us CPU){near}{}",
        single.0,
        single.0 * line_len as f64,
        single.1,
        single.2,
        single.3,
        median.0,
        median.0 * line_len as f64,
        median.1,
        median.2,
        best.0,
        best.1,
        if delivered {
            ""
        } else {
            " -- NOT ALL LINES ARRIVED"
        },
    );
    (line, written)
}

/// Stall the pipe reader for [`STALL`] while 64 producers keep publishing and waiting for each
/// reply (as runs do); report what the bus took and how RSS moved, then resume and check that
/// every event arrives.
async fn stalled_reader(
    bus: &Arc<Engine>,
    event: &Event,
    drain: &PipeDrain,
    how: &str,
    already: u64,
) -> String {
    const PRODUCERS: usize = 64;
    drain.paused.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rss0 = status_kib("VmRSS").unwrap_or(0);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (bus, event) = (bus.clone(), event.clone());
            let (answered, stop) = (answered.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    bus.publish(vec![event.clone()])
                        .await
                        .expect("the bus accepts the event");
                    answered.fetch_add(1, Ordering::AcqRel);
                }
            })
        })
        .collect();
    let taken = || answered.load(Ordering::Acquire);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (filled, rss1) = (taken(), status_kib("VmRSS").unwrap_or(0));
    tokio::time::sleep(STALL).await;
    let (later, rss2) = (taken(), status_kib("VmRSS").unwrap_or(0));
    stop.store(true, Ordering::Release);
    drain.paused.store(false, Ordering::Release);
    let joined = tokio::time::timeout(GIVE_UP, futures::future::join_all(producers))
        .await
        .is_ok();
    // One more (empty) batch: the bus writes out what it holds once it is idle.
    let _ = bus.publish(Vec::new()).await;
    let total = taken();
    let delivered = joined && drain.wait_for(already + total).await;
    format!(
        "T4 stalled pipe reader ({how}), 64 publishing producers: the bus answered {filled} events, then +{} over the next {:.1} s (the rest wait in their producers); RSS {:+} KiB while filling, {:+} KiB over the stall; after resuming, {}",
        later - filled,
        STALL.as_secs_f64(),
        i128::from(rss1) - i128::from(rss0),
        i128::from(rss2) - i128::from(rss1),
        if delivered {
            format!("all {total} events of the stall phase were read")
        } else {
            format!(
                "only {} of {total} events were read within {} s",
                drain.lines().saturating_sub(already),
                GIVE_UP.as_secs()
            )
        },
    )
}
