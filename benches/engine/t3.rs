//! T3 (opt-in, `PERSTACK_BENCH_T3=1`; `PERSTACK_BENCH_T3_SESSIONS` overrides 10,000): that many
//! concurrent fan-out jobs with a 50 ms model latency, each subscribed, nothing stored
//! ([`DiscardStorage`](crate::support::DiscardStorage)). Every model call first waits until all jobs have started, so all are live
//! at once. Checks that all complete, that every job receives exactly the events of a reference
//! job and that the engine-wide sequence has no gap; reports RSS per session once every
//! coordinator waits on its first model call, and at the peak, with where the workload was at
//! the peak (a thread samples the RSS every 2 ms with the model calls under way, the run
//! segments the subscribers saw start and not end, and the jobs done;
//! `PERSTACK_BENCH_T3_TIMELINE=1` prints a sample every 100 ms).
//!
//! The scripted provider's own `delayMs` cannot serve it: its turns are counted per Expert across
//! jobs, so concurrent jobs would take each other's turns; the bench uses the stateless instant
//! model of `examples/support/fanout.rs` behind a 50 ms `tokio::time::sleep`, which is what
//! `delayMs` does.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::watch;

use perstack::engine::{Engine, JobRequest, Sequenced};
use perstack::llm::{GenerationError, GenerationRequest, LanguageModel, PartStream};
use perstack::schema::JobStatus;

use crate::support::DiscardStorage;
use crate::support::{self, FanoutModel, peak_rss, process_cpu, reset_peak_rss, status_kib};
use crate::{GIVE_UP, lock};

/// The model latency of T3.
const T3_LATENCY: Duration = Duration::from_millis(50);
/// The bound on all T3 jobs finishing.
const T3_GIVE_UP: Duration = Duration::from_secs(600);

/// A model that waits before answering, as a real provider's latency (the scripted provider's
/// `delayMs` is the same `tokio::time::sleep`), and first until `gate` opens: T3 closes it while
/// it starts the jobs, so that all of them are live at once.
struct Delayed {
    inner: Arc<dyn LanguageModel>,
    delay: Duration,
    gate: watch::Receiver<bool>,
    /// Calls that reached the gate (while it is closed, only each coordinator's first).
    arrived: Arc<AtomicU64>,
    /// Where the workload is, for [`Probe`].
    probe: Arc<Probe>,
}

#[async_trait::async_trait]
impl LanguageModel for Delayed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn stream(&self, request: GenerationRequest) -> Result<PartStream, GenerationError> {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        self.probe.calling.fetch_add(1, Ordering::AcqRel);
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        tokio::time::sleep(self.delay).await;
        self.probe.calling.fetch_sub(1, Ordering::AcqRel);
        self.inner.stream(request).await
    }
}

/// The engine-wide sequence as the bus hands it to callbacks: every number once, in order.
#[derive(Default)]
struct SeqCheck {
    last: u64,
    gaps: u64,
}

/// Where the workload is, sampled with the RSS by [`sample`] to say what was live at the peak.
#[derive(Default)]
struct Probe {
    /// Model calls under way (at the gate or in the latency): runs waiting on the model.
    calling: AtomicU64,
    /// Run segments started and not ended (`startRun` less `completeRun` and `stopRunBy*`), as
    /// the subscribers received them.
    segments: AtomicI64,
    /// Jobs whose event stream ended.
    done: AtomicU64,
}

/// One sample of [`Probe`] with the RSS.
#[derive(Clone, Copy, Default)]
struct Snapshot {
    at: Duration,
    rss_kib: u64,
    calling: u64,
    segments: i64,
    done: u64,
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ms: RSS {:.1} MiB, {} model calls waiting, {} run segments live, {} jobs done",
            self.at.as_millis(),
            self.rss_kib as f64 / 1024.0,
            self.calling,
            self.segments,
            self.done
        )
    }
}

/// Sample the RSS and `probe` every 2 ms on a thread of its own until `stop`: the sample with
/// the highest RSS, and one every 100 ms.
fn sample(
    probe: Arc<Probe>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Snapshot, Vec<Snapshot>)> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut peak = Snapshot::default();
        let mut timeline: Vec<Snapshot> = Vec::new();
        while !stop.load(Ordering::Acquire) {
            let now = Snapshot {
                at: t0.elapsed(),
                rss_kib: status_kib("VmRSS").unwrap_or(0),
                calling: probe.calling.load(Ordering::Acquire),
                segments: probe.segments.load(Ordering::Acquire),
                done: probe.done.load(Ordering::Acquire),
            };
            if now.rss_kib > peak.rss_kib {
                peak = now;
            }
            if timeline
                .last()
                .is_none_or(|l| now.at >= l.at + Duration::from_millis(100))
            {
                timeline.push(now);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (peak, timeline)
    })
}

/// What one T3 round saw.
struct Round {
    /// Events received by each job's subscriber.
    counts: Vec<usize>,
    /// RSS (KiB) once every job had started, before the first model call answered.
    rss_started: u64,
    /// From the first start to the last outcome.
    wall: Duration,
}

pub(crate) fn t3_sessions(rt: &Runtime) -> String {
    let n: usize = std::env::var("PERSTACK_BENCH_T3_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seq = Arc::new(Mutex::new(SeqCheck::default()));
    let (gate_tx, gate_rx) = watch::channel(true);
    let arrived = Arc::new(AtomicU64::new(0));
    let probe = Arc::new(Probe::default());
    let gate = Gate {
        open: gate_tx,
        arrived: arrived.clone(),
        probe: probe.clone(),
    };
    let engine = {
        let _guard = rt.enter();
        let seq = seq.clone();
        Engine::builder()
            .settings(support::settings())
            .model(Arc::new(Delayed {
                inner: Arc::new(FanoutModel),
                delay: T3_LATENCY,
                gate: gate_rx,
                arrived,
                probe: probe.clone(),
            }))
            // Nothing stored: the memory measured is the live sessions', not the store's copy
            // of their checkpoints and events.
            .storage(Arc::new(DiscardStorage))
            .on_event(move |e: &Sequenced| {
                let mut s = lock(&seq);
                if e.seq != s.last + 1 {
                    s.gaps += 1;
                }
                s.last = e.seq;
            })
            .build()
    };

    // One job alone gives the number of events every job must deliver.
    let expected = rt.block_on(subscribed_jobs(&engine, &gate, 1)).counts[0];

    let reset = reset_peak_rss();
    let rss0 = status_kib("VmRSS").unwrap_or(0);
    let cpu0 = process_cpu();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(probe, stop.clone());
    let round = rt.block_on(subscribed_jobs(&engine, &gate, n));
    let cpu = process_cpu().saturating_sub(cpu0);
    let peak = status_kib("VmHWM").unwrap_or(0);
    stop.store(true, Ordering::Release);
    let (at_peak, timeline) = sampler.join().expect("the sampler thread");
    if std::env::var_os("PERSTACK_BENCH_T3_TIMELINE").is_some() {
        for s in &timeline {
            println!("  T3 timeline {s}");
        }
    }
    rt.block_on(engine.shutdown());

    let short = round.counts.iter().filter(|&&c| c != expected).count();
    let s = lock(&seq);
    let kib_per = |kib: u64| kib as f64 / n as f64;
    let line = format!(
        "T3 {n} concurrent fan-out sessions, {} ms per model call: all completed in {:.2} s wall, {:.2} ms CPU/job; {short} of {n} jobs with other than {expected} events, {} sequence gaps in {} events; RSS {:.1} KiB per session once every coordinator waited on its first model call, peak {:.1} KiB per session (peak RSS {}, {:.1} MiB before{}; sampled peak at {at_peak})",
        T3_LATENCY.as_millis(),
        round.wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / n as f64,
        s.gaps,
        s.last,
        kib_per(round.rss_started.saturating_sub(rss0)),
        kib_per(peak.saturating_sub(rss0)),
        peak_rss(),
        rss0 as f64 / 1024.0,
        if reset {
            ""
        } else {
            ", process peak, not reset"
        },
    );
    println!("{line}");
    line
}

/// The gate of [`Delayed`], from the bench's side.
struct Gate {
    open: watch::Sender<bool>,
    arrived: Arc<AtomicU64>,
    probe: Arc<Probe>,
}

/// Start `n` subscribed fan-out jobs with the gate closed, wait until each one's coordinator
/// is at its first model call, then open it. Panics unless every job completes within
/// [`T3_GIVE_UP`].
async fn subscribed_jobs(engine: &Engine, gate: &Gate, n: usize) -> Round {
    gate.open.send_replace(false);
    gate.arrived.store(0, Ordering::Release);
    gate.probe.done.store(0, Ordering::Release);
    let t0 = Instant::now();
    let mut jobs = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut handle = engine
            .start(JobRequest::new(support::COORDINATOR, "hello").subscribe())
            .await
            .expect("the engine starts the job");
        let mut events = handle.take_events().expect("subscribed");
        let probe = gate.probe.clone();
        readers.push(tokio::spawn(async move {
            let mut count = 0;
            while let Some(e) = events.recv().await {
                count += 1;
                let kind = e.event.kind();
                if kind == "startRun" {
                    probe.segments.fetch_add(1, Ordering::AcqRel);
                } else if kind == "completeRun" || kind.starts_with("stopRunBy") {
                    probe.segments.fetch_sub(1, Ordering::AcqRel);
                }
            }
            probe.done.fetch_add(1, Ordering::AcqRel);
            count
        }));
        jobs.push(handle.wait());
    }
    let deadline = Instant::now() + T3_GIVE_UP;
    while gate.arrived.load(Ordering::Acquire) < n as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} coordinators reached their first model call",
            gate.arrived.load(Ordering::Acquire)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rss_started = status_kib("VmRSS").unwrap_or(0);
    gate.open.send_replace(true);
    // Each outcome is checked as it arrives and dropped: the bench does not keep every job's
    // final record and checkpoint until the last job ends (n of them, grown by doubling).
    let mut pending: futures::stream::FuturesUnordered<_> = jobs.into_iter().collect();
    let all_checked = async {
        while let Some(outcome) = futures::StreamExt::next(&mut pending).await {
            let o = outcome.expect("the job reports an outcome");
            assert_eq!(
                o.job.status,
                JobStatus::Completed,
                "a job did not complete: {:?}",
                o.checkpoint.error
            );
        }
    };
    tokio::time::timeout(T3_GIVE_UP, all_checked)
        .await
        .expect("every job ends within the time limit");
    let wall = t0.elapsed();
    let mut counts = Vec::with_capacity(n);
    for r in readers {
        let count = tokio::time::timeout(GIVE_UP, r)
            .await
            .expect("the event stream ends after the job")
            .expect("a reader task");
        counts.push(count);
    }
    Round {
        counts,
        rss_started,
        wall,
    }
}
