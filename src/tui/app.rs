//! The state of the `perstack start` screen and what each key does to it.
//!
//! Owns the screens (selection: Experts, job history, checkpoints; execution), the cursor of
//! each list, the input mode and its purpose, and the job phase as the screen knows it. Keys
//! come in through [`App::key`], which changes the state and may return a [`Command`] for the
//! session to carry out (start or continue a job, cancel it, load checkpoints, quit). It never
//! touches the engine, the store or the terminal, so every screen state can be built in a test.

use crossterm::event::KeyEvent;

use super::input::{Edit, Key, LineInput};
use super::view_model::ViewModel;
use crate::schema::{CheckpointStatus, JobStatus};

/// An Expert of perstack.toml, as the selection screen lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpertItem {
    /// The key.
    pub key: String,
    /// Its description.
    pub description: String,
    /// Whether it is among the 10 most recently used.
    pub recent: bool,
}

/// A stored job, as the history lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobItem {
    /// Job id.
    pub id: String,
    /// Coordinator Expert.
    pub expert: String,
    /// Status (wire name).
    pub status: String,
    /// Steps taken.
    pub steps: u32,
    /// Start time, epoch ms.
    pub started_ms: u64,
}

/// A coordinator checkpoint to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointItem {
    /// Checkpoint id.
    pub id: String,
    /// Step number.
    pub step: u32,
    /// Status.
    pub status: CheckpointStatus,
    /// The Expert.
    pub expert: String,
}

/// What the selection screen lists, loaded by the session.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    /// perstack.toml's path, for the title.
    pub config: String,
    /// Experts: recently used first, then the rest in key order.
    pub experts: Vec<ExpertItem>,
    /// Jobs, newest first.
    pub jobs: Vec<JobItem>,
}

/// Which list the selection screen shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    /// Experts of perstack.toml.
    Experts,
    /// Stored jobs.
    History,
    /// The coordinator checkpoints of one job.
    Checkpoints,
}

/// Which screen is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Screen {
    /// Pick an Expert or a job.
    Select(Tab),
    /// Watch a job.
    Execution,
}

/// What the text input is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The query of a new job of this Expert.
    Query(String),
    /// A follow-up query continuing the job.
    FollowUp,
    /// The answer to the pending interactive call.
    Answer,
    /// A query (or answer) continuing `job` from `checkpoint`.
    Resume {
        /// Job id.
        job: String,
        /// Checkpoint id.
        checkpoint: String,
        /// The coordinator.
        expert: String,
        /// Whether the checkpoint waits for an interactive answer.
        answer: bool,
    },
}

/// Where the job shown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No job yet.
    Idle,
    /// Running.
    Running,
    /// Cancelling (Ctrl-C); the session quits once the job stopped.
    Cancelling,
    /// Ended with this status.
    Finished(JobStatus),
}

/// What the session must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Start a new job.
    Start {
        /// The coordinator.
        expert: String,
        /// The query.
        query: String,
    },
    /// Continue a stored job.
    Continue {
        /// Job id.
        job: String,
        /// The coordinator.
        expert: String,
        /// A checkpoint to continue from instead of the latest.
        resume_from: Option<String>,
        /// The new query, or the interactive answer.
        text: String,
        /// Whether `text` answers the pending interactive call.
        answer: bool,
    },
    /// Load the checkpoints of this job into [`App::checkpoints`].
    LoadCheckpoints(String),
    /// Cancel the running job (its runs stop with their checkpoints stored), then quit.
    Cancel,
    /// Leave.
    Quit,
}

/// The screen's state.
#[derive(Debug)]
pub(crate) struct App {
    /// The screen up.
    pub screen: Screen,
    /// The selection lists.
    pub catalog: Catalog,
    /// The checkpoints of [`App::checkpoints_of`].
    pub checkpoints: Vec<CheckpointItem>,
    /// The job the checkpoints belong to.
    pub checkpoints_of: Option<String>,
    /// Cursor of the Experts, history and checkpoint lists.
    pub cursor: [usize; 3],
    /// The selected run (a position in [`ViewModel::tree`]), when not following.
    pub selected_run: usize,
    /// Whether the selection follows the most recently started run (until ↑/↓ is pressed).
    pub follow: bool,
    /// Whether the detail panel lists the selected run's events instead of its activity.
    pub show_events: bool,
    /// The text input, when open, and what it is for.
    pub input: Option<(Purpose, LineInput)>,
    /// The job shown and its coordinator.
    pub job: Option<(String, String)>,
    /// Where that job stands.
    pub phase: Phase,
    /// A one-line notice (errors starting a job, hints).
    pub notice: Option<String>,
    /// Whether styles may use colour (`NO_COLOR` unset or empty).
    pub color: bool,
}

impl App {
    /// The selection screen over `catalog`.
    pub(crate) fn new(catalog: Catalog, color: bool) -> Self {
        App {
            screen: Screen::Select(Tab::Experts),
            catalog,
            checkpoints: Vec::new(),
            checkpoints_of: None,
            cursor: [0; 3],
            selected_run: 0,
            follow: true,
            show_events: false,
            input: None,
            job: None,
            phase: Phase::Idle,
            notice: None,
            color,
        }
    }

    /// A job of `expert` started: show it.
    pub(crate) fn started(&mut self, job: String, expert: String) {
        self.screen = Screen::Execution;
        self.follow = true;
        self.job = Some((job, expert));
        self.phase = Phase::Running;
        self.input = None;
        self.notice = None;
    }

    /// The job ended with `status`: offer the follow-up (or the answer) input.
    pub(crate) fn finished(&mut self, status: JobStatus) {
        let cancelled = self.phase == Phase::Cancelling;
        self.phase = Phase::Finished(status);
        if cancelled {
            return;
        }
        self.input = match status {
            JobStatus::StoppedByInteractiveTool => Some((Purpose::Answer, LineInput::default())),
            JobStatus::Completed | JobStatus::StoppedByMaxSteps | JobStatus::StoppedByError => {
                Some((Purpose::FollowUp, LineInput::default()))
            }
            _ => None,
        };
    }

    /// Apply a key; `vm` is the job shown.
    pub(crate) fn key(&mut self, event: &KeyEvent, vm: &ViewModel) -> Option<Command> {
        let key = Key::of(event)?;
        if key == Key::Interrupt {
            return Some(self.interrupt());
        }
        if self.screen == Screen::Execution && matches!(key, Key::Up | Key::Down) {
            // The runs stay navigable while an input is open.
            return self.execution_key(key, vm);
        }
        if let Some((purpose, input)) = &mut self.input {
            return match input.key(event) {
                Edit::Editing => None,
                Edit::Cancel => {
                    self.input = None;
                    None
                }
                Edit::Submit(text) => {
                    let purpose = purpose.clone();
                    self.submit(purpose, text)
                }
            };
        }
        match self.screen {
            Screen::Select(tab) => self.select_key(tab, key),
            Screen::Execution => self.execution_key(key, vm),
        }
    }

    fn interrupt(&mut self) -> Command {
        if self.phase == Phase::Running {
            self.phase = Phase::Cancelling;
            self.notice = Some("cancelling the job…".into());
            Command::Cancel
        } else {
            Command::Quit
        }
    }

    fn submit(&mut self, purpose: Purpose, text: String) -> Option<Command> {
        if text.trim().is_empty() {
            self.notice = Some("type something first (Esc leaves the input)".into());
            self.input = Some((purpose, LineInput::default()));
            return None;
        }
        self.input = None;
        let (job, expert) = self.job.clone().unwrap_or_default();
        Some(match purpose {
            Purpose::Query(expert) => Command::Start {
                expert,
                query: text,
            },
            Purpose::FollowUp => Command::Continue {
                job,
                expert,
                resume_from: None,
                text,
                answer: false,
            },
            Purpose::Answer => Command::Continue {
                job,
                expert,
                resume_from: None,
                text,
                answer: true,
            },
            Purpose::Resume {
                job,
                checkpoint,
                expert,
                answer,
            } => Command::Continue {
                job,
                expert,
                resume_from: Some(checkpoint),
                text,
                answer,
            },
        })
    }

    fn select_key(&mut self, tab: Tab, key: Key) -> Option<Command> {
        let len = match tab {
            Tab::Experts => self.catalog.experts.len(),
            Tab::History => self.catalog.jobs.len(),
            Tab::Checkpoints => self.checkpoints.len(),
        };
        let cursor = &mut self.cursor[tab as usize];
        match key {
            Key::Up => *cursor = cursor.saturating_sub(1),
            Key::Down => *cursor = (*cursor + 1).min(len.saturating_sub(1)),
            Key::Quit => return Some(Command::Quit),
            Key::History => self.screen = Screen::Select(Tab::History),
            Key::New => self.screen = Screen::Select(Tab::Experts),
            Key::Back => match tab {
                Tab::Checkpoints => self.screen = Screen::Select(Tab::History),
                Tab::History => self.screen = Screen::Select(Tab::Experts),
                Tab::Experts if self.job.is_some() => self.screen = Screen::Execution,
                Tab::Experts => {}
            },
            Key::Enter | Key::Input => match tab {
                Tab::Experts => {
                    let item = self.catalog.experts.get(*cursor)?;
                    self.input = Some((Purpose::Query(item.key.clone()), LineInput::default()));
                }
                Tab::History => {
                    let job = self.catalog.jobs.get(*cursor)?.id.clone();
                    return Some(Command::LoadCheckpoints(job));
                }
                Tab::Checkpoints => {
                    let cp = self.checkpoints.get(*cursor)?;
                    let job = self.checkpoints_of.clone()?;
                    self.input = Some((
                        Purpose::Resume {
                            job,
                            checkpoint: cp.id.clone(),
                            expert: cp.expert.clone(),
                            answer: cp.status == CheckpointStatus::StoppedByInteractiveTool,
                        },
                        LineInput::default(),
                    ));
                }
            },
            Key::Checkpoints if tab == Tab::History => {
                let job = self.catalog.jobs.get(*cursor)?.id.clone();
                return Some(Command::LoadCheckpoints(job));
            }
            _ => {}
        }
        None
    }

    /// The selected run's position in `vm`'s tree: the most recently started run while
    /// following, else the one chosen with ↑/↓.
    pub(crate) fn selected(&self, vm: &ViewModel) -> usize {
        let order = vm.tree();
        if self.follow {
            let last = vm.runs.len().saturating_sub(1);
            order.iter().position(|&(i, _)| i == last).unwrap_or(0)
        } else {
            self.selected_run.min(order.len().saturating_sub(1))
        }
    }

    /// The checkpoints of `job` were loaded: list them.
    pub(crate) fn show_checkpoints(&mut self, job: String, checkpoints: Vec<CheckpointItem>) {
        self.checkpoints = checkpoints;
        self.checkpoints_of = Some(job);
        self.cursor[Tab::Checkpoints as usize] = 0;
        self.screen = Screen::Select(Tab::Checkpoints);
    }

    fn execution_key(&mut self, key: Key, vm: &ViewModel) -> Option<Command> {
        let running = matches!(self.phase, Phase::Running | Phase::Cancelling);
        if matches!(key, Key::Up | Key::Down) && self.follow {
            self.selected_run = self.selected(vm);
            self.follow = false;
        }
        match key {
            Key::Up => self.selected_run = self.selected_run.saturating_sub(1),
            Key::Down => {
                self.selected_run = (self.selected_run + 1).min(vm.runs.len().saturating_sub(1));
            }
            Key::Events => self.show_events = !self.show_events,
            Key::Enter | Key::Input => match self.phase {
                Phase::Finished(JobStatus::StoppedByInteractiveTool) => {
                    self.input = Some((Purpose::Answer, LineInput::default()));
                }
                Phase::Finished(
                    JobStatus::Completed | JobStatus::StoppedByMaxSteps | JobStatus::StoppedByError,
                ) => self.input = Some((Purpose::FollowUp, LineInput::default())),
                _ => {}
            },
            _ if running && matches!(key, Key::Quit | Key::New | Key::History | Key::Back) => {
                self.notice = Some("the job is running: Ctrl-C cancels it".into());
            }
            Key::Quit => return Some(Command::Quit),
            Key::New | Key::Back => self.screen = Screen::Select(Tab::Experts),
            Key::History => self.screen = Screen::Select(Tab::History),
            Key::Checkpoints => {
                let (job, _) = self.job.clone()?;
                return Some(Command::LoadCheckpoints(job));
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{KeyCode, KeyModifiers};

    fn press(app: &mut App, code: KeyCode) -> Option<Command> {
        app.key(
            &KeyEvent::new(code, KeyModifiers::NONE),
            &ViewModel::default(),
        )
    }

    fn typed(app: &mut App, text: &str) -> Option<Command> {
        for c in text.chars() {
            assert_eq!(press(app, KeyCode::Char(c)), None);
        }
        press(app, KeyCode::Enter)
    }

    fn catalog() -> Catalog {
        Catalog {
            config: "perstack.toml".into(),
            experts: ["a", "b"]
                .iter()
                .map(|k| ExpertItem {
                    key: (*k).into(),
                    description: String::new(),
                    recent: false,
                })
                .collect(),
            jobs: vec![JobItem {
                id: "j1".into(),
                expert: "b".into(),
                status: "completed".into(),
                steps: 3,
                started_ms: 0,
            }],
        }
    }

    #[test]
    fn choosing_an_expert_and_typing_a_query_starts_a_job() {
        let mut app = App::new(catalog(), false);
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Enter);
        assert_eq!(
            typed(&mut app, "hello"),
            Some(Command::Start {
                expert: "b".into(),
                query: "hello".into()
            })
        );
    }

    #[test]
    fn a_finished_job_offers_a_follow_up_that_continues_it() {
        let mut app = App::new(catalog(), false);
        app.started("j1".into(), "a".into());
        assert_eq!(
            press(&mut app, KeyCode::Char('q')),
            None,
            "running: q refused"
        );
        app.finished(JobStatus::Completed);
        assert_eq!(
            typed(&mut app, "more"),
            Some(Command::Continue {
                job: "j1".into(),
                expert: "a".into(),
                resume_from: None,
                text: "more".into(),
                answer: false
            })
        );
    }

    #[test]
    fn an_interactive_stop_asks_for_the_answer() {
        let mut app = App::new(catalog(), false);
        app.started("j1".into(), "a".into());
        app.finished(JobStatus::StoppedByInteractiveTool);
        assert!(matches!(
            typed(&mut app, "yes"),
            Some(Command::Continue { answer: true, .. })
        ));
    }

    #[test]
    fn ctrl_c_cancels_a_running_job_and_quits_an_idle_screen() {
        let mut app = App::new(catalog(), false);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.key(&ctrl_c, &ViewModel::default()), Some(Command::Quit));
        app.started("j1".into(), "a".into());
        assert_eq!(
            app.key(&ctrl_c, &ViewModel::default()),
            Some(Command::Cancel)
        );
        assert_eq!(app.phase, Phase::Cancelling);
        app.finished(JobStatus::StoppedByError);
        assert!(app.input.is_none(), "no follow-up after a cancel");
    }

    #[test]
    fn history_lists_checkpoints_and_a_checkpoint_resumes_the_job() {
        let mut app = App::new(catalog(), false);
        press(&mut app, KeyCode::Char('h'));
        assert_eq!(app.screen, Screen::Select(Tab::History));
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Some(Command::LoadCheckpoints("j1".into()))
        );
        app.show_checkpoints(
            "j1".into(),
            vec![CheckpointItem {
                id: "cp1".into(),
                step: 3,
                status: CheckpointStatus::Completed,
                expert: "b".into(),
            }],
        );
        press(&mut app, KeyCode::Enter);
        assert_eq!(
            typed(&mut app, "again"),
            Some(Command::Continue {
                job: "j1".into(),
                expert: "b".into(),
                resume_from: Some("cp1".into()),
                text: "again".into(),
                answer: false
            })
        );
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.screen, Screen::Select(Tab::History));
    }
}
