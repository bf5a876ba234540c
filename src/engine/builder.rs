//! [`EngineBuilder`]: an engine's settings, storage, sinks and listeners, and its model,
//! without which it cannot be built (a type state).

use std::sync::Arc;

use super::{Callback, Engine, Sequenced, Settings, Sink};
use crate::actor::event_bus::{Bus, BusArgs, Destination};
use crate::llm::LanguageModel;
use crate::storage::{MemoryStorage, Storage};

/// Builds an [`Engine`]. A builder starts without a model ([`NoModel`]); only after
/// [`model`](EngineBuilder::model) (a [`WithModel`] builder) does it have
/// [`build`](EngineBuilder::build), so an engine without a provider cannot be built:
///
/// ```compile_fail,E0599
/// # async fn demo() {
/// let engine = perstack::engine::Engine::builder().build(); // no model: no `build`
/// # }
/// ```
///
/// The other settings can come before or after the model; each has a default.
pub struct EngineBuilder<M = NoModel> {
    model: M,
    settings: Option<Settings>,
    storage: Option<Arc<dyn Storage>>,
    sink: Option<Destination>,
    callbacks: Vec<Callback>,
    replay: Option<Arc<crate::replay::ToolReplay>>,
}

/// The state of an [`EngineBuilder`] that has no model yet: it cannot build.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModel;

/// The state of an [`EngineBuilder`] that has its model: it can build.
#[derive(Clone)]
pub struct WithModel(Arc<dyn LanguageModel>);

impl EngineBuilder<NoModel> {
    /// A builder with every default and no model ([`Engine::builder`]).
    pub(super) fn new() -> Self {
        EngineBuilder {
            model: NoModel,
            settings: None,
            storage: None,
            sink: None,
            callbacks: Vec::new(),
            replay: None,
        }
    }
}

impl<M> EngineBuilder<M> {
    /// Experts and limits (default: no Experts, Perstack's default limits).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Where checkpoints, events and job records go (default: in memory).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The provider every run calls (required; a second call replaces the first).
    pub fn model(self, model: Arc<dyn LanguageModel>) -> EngineBuilder<WithModel> {
        EngineBuilder {
            model: WithModel(model),
            settings: self.settings,
            storage: self.storage,
            sink: self.sink,
            callbacks: self.callbacks,
            replay: self.replay,
        }
    }

    /// Answer (or check) every tool call from a recording: `perstack replay`.
    pub(crate) fn replay(mut self, replay: Arc<crate::replay::ToolReplay>) -> Self {
        self.replay = Some(replay);
        self
    }

    /// Write every event as a JSON line here, from a tokio task (replaces a sink given
    /// before).
    pub fn sink(mut self, sink: Sink) -> Self {
        self.sink = Some(Destination::Async(sink));
        self
    }

    /// Write every event as a JSON line here with blocking writes, from a thread of the
    /// engine's own that sleeps while there is nothing to write (replaces a sink given
    /// before). For stdout, a pipe or a file (the CLI passes `std::io::stdout()`): unlike
    /// `tokio::io::stdout()` or `tokio::fs::File` given to [`EngineBuilder::sink`], a write
    /// is one system call, not a hand-off to tokio's blocking pool and back.
    pub fn blocking_sink(mut self, sink: impl std::io::Write + Send + 'static) -> Self {
        self.sink = Some(Destination::Blocking(Box::new(sink)));
        self
    }

    /// Write every event as a JSON line to this file descriptor (stdout, a pipe, a file), as
    /// [`EngineBuilder::blocking_sink`] does (the CLI passes its stdout). A pipe's kernel
    /// buffer is first raised to 1 MiB when the system allows (Linux), so that the engine's
    /// large writes wake the reader, and are woken by it, less often.
    pub fn fd_sink(mut self, fd: impl Into<std::os::fd::OwnedFd>) -> Self {
        let fd = fd.into();
        crate::actor::event_bus::widen_pipe(std::os::fd::AsFd::as_fd(&fd));
        self.sink = Some(Destination::Blocking(Box::new(std::fs::File::from(fd))));
        self
    }

    /// Call this for every event of every job, on the bus task (keep it cheap).
    pub fn on_event(mut self, callback: impl Fn(&Sequenced) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(callback));
        self
    }
}

impl EngineBuilder<WithModel> {
    /// Start the engine's event bus. Must be called inside a tokio runtime.
    pub fn build(self) -> Engine {
        let storage: Arc<dyn Storage> = self
            .storage
            .unwrap_or_else(|| Arc::new(MemoryStorage::new()));
        let bus = Bus::spawn(BusArgs {
            sink: self.sink,
            storage: storage.clone(),
            callbacks: self.callbacks,
        });
        let settings = self
            .settings
            .unwrap_or_else(|| Settings::new(Default::default()));
        let experts = Arc::new(
            settings
                .experts
                .iter()
                .map(|(key, expert)| (key.clone(), Arc::new(expert.clone())))
                .collect(),
        );
        Engine {
            bus,
            storage,
            model: self.model.0,
            settings: Arc::new(settings),
            experts,
            tool_lists: Arc::default(),
            replay: self.replay,
        }
    }
}
