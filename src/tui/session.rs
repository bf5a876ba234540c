//! One `perstack start` session: the loop that ties the keyboard, the engine and the screen.
//!
//! Owns the jobs the workbench starts and continues on one [`Engine`], and the redraw policy.
//! Each job's events are drained by a task of their own into the shared [`ViewModel`] as they
//! come (the engine never waits for the screen: applying an event is a few field updates
//! under a lock never held across an await); the screen is drawn from the view model on a
//! tick, at most [`FRAME`]⁻¹ times a second and only when something changed (coalescing any
//! number of events into one frame). Ctrl-C and the shutdown signal (SIGINT, SIGTERM) take the
//! same path as in `perstack run`: the job is cancelled, its runs stop with their checkpoints
//! stored, then the session ends and the terminal is restored.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::app::{App, Catalog, CheckpointItem, Command};
use super::terminal::TerminalGuard;
use super::view_model::ViewModel;
use crate::engine::{
    ContinueInput, ContinueRequest, Engine, EngineError, JobHandle, JobOutcome, JobRequest,
};
use crate::schema::JobStatus;

/// The shortest time between two frames (30 frames a second at most).
pub(crate) const FRAME: Duration = Duration::from_millis(33);

/// How many events a job's stream buffers before the engine waits for the drain task. The
/// drain task only folds events into the view model, so it keeps up; the buffer absorbs bursts
/// (50 children streaming at once).
const EVENT_BUFFER: usize = 4096;

/// A job to show as soon as the screen is up (the command line named the Expert and query).
pub(crate) struct FirstJob {
    /// The job, started with its events subscribed.
    pub handle: JobHandle,
    /// Its coordinator.
    pub expert: String,
}

/// Run the workbench until the user quits or `shutdown` resolves; returns the exit code (0, or
/// 1 when the last job shown stopped by error or max steps).
pub(crate) async fn run(
    engine: &Engine,
    catalog: Catalog,
    provider: &str,
    color: bool,
    first: Option<FirstJob>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<u8> {
    let mut guard = TerminalGuard::enter()?;
    let mut session = Session {
        engine,
        app: App::new(catalog, color),
        vm: Arc::new(Mutex::new(ViewModel::new(provider))),
        provider: provider.to_owned(),
        cancel: None,
        outcomes: mpsc::channel(4),
    };
    if let Some(first) = first {
        session.attach(first.handle, first.expert);
    }
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    let mut dirty = true;
    let mut drawn_events = 0;
    let mut drawn_second = 0;
    let mut quitting = false;
    loop {
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) => {
                    let command = {
                        let vm = lock(&session.vm);
                        session.app.key(&key, &vm)
                    };
                    if let Some(command) = command {
                        match command {
                            Command::Quit => break,
                            Command::Cancel => quitting = true,
                            _ => {}
                        }
                        session.execute(command).await;
                    }
                    dirty = true;
                }
                Some(Ok(TermEvent::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                // The terminal is gone: nothing more can be read or shown.
                Some(Err(_)) | None => {
                    session.cancel_and_wait().await;
                    break;
                }
            },
            Some((job, outcome)) = session.outcomes.1.recv() => {
                session.finished(&job, outcome);
                if quitting {
                    break;
                }
                dirty = true;
            }
            () = &mut shutdown => {
                session.cancel_and_wait().await;
                break;
            }
            _ = tick.tick() => {
                let now = crate::actor::context::now_ms();
                let (events, running) = {
                    let vm = lock(&session.vm);
                    (vm.events, vm.running())
                };
                // Running runs show their elapsed time: redraw once a second for them.
                let second = if running > 0 { now / 1000 } else { drawn_second };
                if dirty || events != drawn_events || second != drawn_second {
                    // The view model is locked only while the frame is built in memory, not
                    // while a slow terminal takes the output: the drain task never waits on it.
                    let app = &session.app;
                    let vm = &session.vm;
                    guard.screen.draw(|frame| super::views::draw(frame, app, &lock(vm), now))?;
                    dirty = false;
                    drawn_events = events;
                    drawn_second = second;
                }
            }
        }
    }
    drop(guard);
    let code = match session.app.phase {
        super::app::Phase::Finished(JobStatus::StoppedByError)
        | super::app::Phase::Finished(JobStatus::StoppedByMaxSteps) => 1,
        _ => 0,
    };
    Ok(code)
}

/// What the loop works on.
struct Session<'a> {
    engine: &'a Engine,
    app: App,
    /// Written by the drain task, read by the redraw.
    vm: Arc<Mutex<ViewModel>>,
    provider: String,
    /// Cancels the running job.
    cancel: Option<CancellationToken>,
    /// Each job's outcome, sent by a waiter task when the job ends. Bounded: one job runs at a
    /// time, so at most one outcome is ever waiting.
    #[allow(clippy::type_complexity)]
    outcomes: (
        mpsc::Sender<(String, Result<JobOutcome, EngineError>)>,
        mpsc::Receiver<(String, Result<JobOutcome, EngineError>)>,
    ),
}

impl Session<'_> {
    fn vm(&self) -> MutexGuard<'_, ViewModel> {
        lock(&self.vm)
    }

    /// Show `handle`'s job: drain its events into the view model and report its end.
    fn attach(&mut self, mut handle: JobHandle, expert: String) {
        let job = handle.job_id.clone();
        if let Some(mut events) = handle.take_events() {
            let vm = self.vm.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    lock(&vm).apply(&event.event);
                }
            });
        }
        self.cancel = Some(handle.cancel_token());
        let outcomes = self.outcomes.0.clone();
        let id = job.clone();
        tokio::spawn(async move {
            let outcome = handle.wait().await;
            let _ = outcomes.send((id, outcome)).await;
        });
        self.app.started(job, expert);
    }

    fn finished(&mut self, job: &str, outcome: Result<JobOutcome, EngineError>) {
        self.cancel = None;
        match outcome {
            Ok(outcome) => self.app.finished(outcome.job.status),
            Err(e) => {
                self.app.notice = Some(format!("job {job}: {e}"));
                self.app.finished(JobStatus::StoppedByError);
            }
        }
    }

    /// Cancel the running job and wait until it stopped (its checkpoints stored).
    async fn cancel_and_wait(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
            if let Some((job, outcome)) = self.outcomes.1.recv().await {
                self.finished(&job, outcome);
            }
        }
    }

    async fn execute(&mut self, command: Command) {
        match command {
            Command::Quit => {}
            Command::Cancel => {
                if let Some(cancel) = &self.cancel {
                    cancel.cancel();
                }
            }
            Command::Start { expert, query } => {
                *self.vm() = ViewModel::new(&self.provider);
                let request = JobRequest {
                    buffer: EVENT_BUFFER,
                    ..JobRequest::new(expert.clone(), query).subscribe()
                };
                match self.engine.start(request).await {
                    Ok(handle) => self.attach(handle, expert),
                    Err(e) => self.app.notice = Some(e.to_string()),
                }
            }
            Command::Continue {
                job,
                expert,
                resume_from,
                text,
                answer,
            } => {
                let other_job = self.vm().job_id.as_deref() != Some(job.as_str());
                if other_job {
                    *self.vm() = ViewModel::new(&self.provider);
                }
                let input = {
                    let vm = self.vm();
                    match (&vm.pending, answer) {
                        (Some(pending), true) => ContinueInput::Answer(pending.answer(&text)),
                        (None, true) => ContinueInput::Answer(text),
                        (_, false) => ContinueInput::Query(text),
                    }
                };
                let request = ContinueRequest {
                    job_id: Some(job),
                    expert_key: expert.clone(),
                    resume_from,
                    input,
                    subscribe: Some(EVENT_BUFFER),
                };
                match self.engine.continue_job(request).await {
                    Ok(handle) => self.attach(handle, expert),
                    Err(e) => self.app.notice = Some(e.to_string()),
                }
            }
            Command::LoadCheckpoints(job) => {
                match self.engine.storage().checkpoints_by_job(&job).await {
                    Ok(all) => {
                        let mut items: Vec<CheckpointItem> = all
                            .into_iter()
                            .filter(|cp| cp.delegated_by.is_none())
                            .map(|cp| CheckpointItem {
                                id: cp.id,
                                step: cp.step_number,
                                status: cp.status,
                                expert: cp.expert.key,
                            })
                            .collect();
                        items.sort_by(|a, b| b.step.cmp(&a.step).then_with(|| a.id.cmp(&b.id)));
                        self.app.show_checkpoints(job, items);
                    }
                    Err(e) => self.app.notice = Some(e.to_string()),
                }
            }
        }
    }
}

/// The view model, locked. A panic while folding an event leaves a usable view model: show
/// what is there.
fn lock(vm: &Mutex<ViewModel>) -> MutexGuard<'_, ViewModel> {
    vm.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The selection lists: the Experts of perstack.toml (the 10 most recently used first, from
/// the stored run settings) and the stored jobs, newest first.
pub(crate) async fn catalog(
    engine: &Engine,
    config: &crate::config::PerstackConfig,
    config_path: String,
) -> Catalog {
    let storage = engine.storage();
    let mut recent: Vec<String> = Vec::new();
    if let Ok(settings) = storage.all_run_settings().await {
        for s in settings {
            if recent.len() == 10 {
                break;
            }
            if !recent.contains(&s.expert_key) && config.experts.contains_key(&s.expert_key) {
                recent.push(s.expert_key);
            }
        }
    }
    let mut experts: Vec<super::app::ExpertItem> = recent
        .iter()
        .filter_map(|key| config.experts.get(key).map(|e| (key, e)))
        .map(|(key, e)| super::app::ExpertItem {
            key: key.clone(),
            description: e.description.clone().unwrap_or_default(),
            recent: true,
        })
        .collect();
    for (key, e) in &config.experts {
        if !recent.contains(key) {
            experts.push(super::app::ExpertItem {
                key: key.clone(),
                description: e.description.clone().unwrap_or_default(),
                recent: false,
            });
        }
    }
    let jobs = storage
        .all_jobs()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|j| super::app::JobItem {
            status: serde_json::to_value(j.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            id: j.id,
            expert: j.coordinator_expert_key,
            steps: j.total_steps,
            started_ms: j.started_at,
        })
        .collect();
    Catalog {
        config: config_path,
        experts,
        jobs,
    }
}
