//! What every actor of one job shares: settings, the model, the bus, the cancellation token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::event_bus::{Bus, BusError};
use crate::agent::RunFailure;
use crate::config::{PerstackConfig, ProviderName, defaults};
use crate::llm::LanguageModel;
use crate::schema::{Event, Expert, ProviderConfig, ReasoningBudget, RunInput, RunSetting};
use crate::storage::Storage;

/// Engine-wide run settings, resolved from perstack.toml, the CLI and the defaults of
/// [`crate::config::defaults`] by [`Settings::resolve`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Every Expert of the configuration, by key.
    pub experts: Arc<BTreeMap<String, Expert>>,
    /// Model id.
    pub model: String,
    /// Provider name (`anthropic`, `scripted`, ...).
    pub provider_name: String,
    /// Reasoning budget.
    pub reasoning_budget: ReasoningBudget,
    /// Job-wide step limit ([`defaults::MAX_STEPS`]).
    pub max_steps: u32,
    /// Consecutive generation retries ([`defaults::MAX_RETRIES`]).
    pub max_retries: u32,
    /// Per-generation timeout ([`defaults::TIMEOUT`]).
    pub timeout: Duration,
    /// The one timeout of each tool call ([`defaults::TOOL_TIMEOUT`], 60 s: the MCP SDK's
    /// default that Perstack applies; the CLI reads `PERSTACK_TOOL_TIMEOUT_MS`). Past it the call is cancelled and
    /// the model gets an error text; the run goes on.
    pub tool_timeout: Duration,
    /// The workspace the base skill works in.
    pub workspace: PathBuf,
    /// How many delegated children of one turn run at once; the rest queue. Bounds the actor
    /// tree's width so one model answer cannot spawn thousands of runs at the same time.
    pub max_parallel_delegates: usize,
    /// The model's context window, when known.
    pub context_window: Option<u64>,
    /// Environment visible to skills (values never stored).
    pub env: BTreeMap<String, String>,
    /// `perstackBaseSkillCommand`: spawn this instead of the bundled base skill.
    pub base_skill_command: Option<Vec<String>>,
    /// `perstack.lock`: tool definitions known without starting any skill. Skills of Experts
    /// it lists start on their first call instead of before the first model call.
    pub lockfile: Option<Arc<crate::config::lockfile::Lockfile>>,
    /// How skill processes are started: sandboxed unless the configuration says
    /// `runtime = "local"` (Perstack's default runtime is a container).
    pub isolation: crate::sandbox::Isolation,
    /// The directory of `perstack.toml`, readable inside the sandbox.
    pub config_dir: Option<PathBuf>,
    /// The coordinator stops at `stopRunByDelegate` instead of running its children, and
    /// the job stays `running` (a cluster worker with `--placement cluster` places them on the
    /// cluster; see `cluster::delegate`). Off everywhere else.
    pub(crate) stop_at_delegation: bool,
}

impl Settings {
    /// Settings with Perstack's defaults ([`crate::config::defaults`]) for the given Experts.
    pub fn new(experts: BTreeMap<String, Expert>) -> Self {
        Settings {
            experts: Arc::new(experts),
            model: defaults::MODEL.into(),
            provider_name: defaults::PROVIDER.as_str().into(),
            reasoning_budget: defaults::REASONING_BUDGET,
            max_steps: defaults::MAX_STEPS,
            max_retries: defaults::MAX_RETRIES,
            timeout: defaults::TIMEOUT,
            tool_timeout: defaults::TOOL_TIMEOUT,
            workspace: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            max_parallel_delegates: defaults::MAX_PARALLEL_DELEGATES,
            context_window: None,
            env: BTreeMap::new(),
            base_skill_command: None,
            lockfile: None,
            isolation: crate::sandbox::Isolation::default(),
            config_dir: None,
            stop_at_delegation: false,
        }
    }
}

impl Settings {
    /// The sandbox scope of this run's processes, `None` when unconfined.
    pub(crate) fn sandbox_scope(&self) -> Option<crate::sandbox::SandboxScope> {
        self.isolation
            .scope(&self.workspace, self.config_dir.as_deref())
    }
}

impl Settings {
    /// The settings of `config`'s Experts: each value from `overrides` (the command line),
    /// else from `perstack.toml`, else its default. The CLI and embedding apps resolve the
    /// same way; the workspace, environment and lockfile are set by the caller.
    pub fn resolve(config: &PerstackConfig, overrides: &RunOverrides) -> Self {
        let mut s = Settings::new(config.experts.clone());
        s.model = overrides
            .model
            .clone()
            .or_else(|| config.model.clone())
            .unwrap_or_else(|| defaults::MODEL.into());
        s.provider_name = overrides
            .provider
            .or(config.provider.as_ref().map(|p| p.provider_name))
            .unwrap_or(defaults::PROVIDER)
            .as_str()
            .into();
        s.reasoning_budget = overrides
            .reasoning_budget
            .or(config.reasoning_budget)
            .unwrap_or(defaults::REASONING_BUDGET);
        s.max_steps = overrides
            .max_steps
            .or(config.max_steps)
            .unwrap_or(defaults::MAX_STEPS);
        s.max_retries = overrides
            .max_retries
            .or(config.max_retries)
            .unwrap_or(defaults::MAX_RETRIES);
        s.timeout = overrides
            .timeout
            .or(config.timeout.map(Duration::from_millis))
            .unwrap_or(defaults::TIMEOUT);
        s.context_window = crate::llm::models::context_window(&s.model);
        s.base_skill_command = config.perstack_base_skill_command.clone();
        s
    }
}

/// Run settings given over `perstack.toml` (the command line's options); `None` keeps the
/// file's value, or the default.
#[derive(Debug, Clone, Default)]
pub struct RunOverrides {
    /// `--model`.
    pub model: Option<String>,
    /// `--provider`.
    pub provider: Option<ProviderName>,
    /// `--reasoning-budget`.
    pub reasoning_budget: Option<ReasoningBudget>,
    /// `--max-steps`.
    pub max_steps: Option<u32>,
    /// `--max-retries`.
    pub max_retries: Option<u32>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
}

/// Every Expert of a [`Settings`], by key, each behind an `Arc` (built once per engine).
pub(crate) type SharedExperts = BTreeMap<String, Arc<Expert>>;

/// Shared by every actor of one job.
pub(crate) struct JobContext {
    /// The job id.
    pub job_id: String,
    /// Settings.
    pub settings: Arc<Settings>,
    /// The settings' Experts, shared: a run holds its own without cloning it.
    pub experts: Arc<SharedExperts>,
    /// The tool lists of the engine's runs, shared between runs of an Expert.
    pub tool_lists: Arc<crate::agent::ToolLists>,
    /// The provider.
    pub model: Arc<dyn LanguageModel>,
    /// The event bus.
    pub bus: Bus,
    /// Cancelled on SIGINT/SIGTERM, by the embedding API, or by [`JobContext::fail`]; every
    /// run watches it.
    pub cancel: CancellationToken,
    /// Why the job is stopping, when a run hit a failure that stops the whole job (a store
    /// that refuses writes, a closed output). Set once; the first cause wins.
    pub failure: std::sync::OnceLock<RunFailure>,
    /// Where run settings go (checkpoints and events go through the bus).
    pub storage: Arc<dyn Storage>,
    /// `perstack replay`: tool calls answered from the recording (no skill starts), or run
    /// live and checked against it. `None` for every ordinary job.
    pub replay: Option<Arc<crate::replay::ToolReplay>>,
    /// Cancelled when the job is to be handed back (a cluster worker shutting down): no run
    /// starts another step (each parks at its next step boundary), and once nothing is
    /// [`in flight`](JobContext::in_flight) the job stops with [`RunFailure::HandedBack`],
    /// writing nothing more.
    pub hand_back: CancellationToken,
    /// Work of the job that may still write: model and tool calls under way, runs told to
    /// begin, reports on their way to a parent run. The hand-back waits until it is 0; a
    /// count that never gets there only delays the hand-back until the worker forces it.
    pub in_flight: std::sync::atomic::AtomicUsize,
}

impl JobContext {
    /// One more piece of work in flight (before it is spawned or sent).
    pub(crate) fn enter(&self) {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A piece of work is done (at the end of the handler that took its result): the job is
    /// handed back now if that was asked for and nothing else is in flight.
    pub(crate) fn leave(&self) {
        let before = self
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if before == 1 && self.hand_back.is_cancelled() {
            self.fail(RunFailure::HandedBack);
        }
    }

    /// Hand the job back at its runs' next step boundaries (see [`JobContext::hand_back`]).
    pub(crate) fn request_hand_back(&self) {
        self.hand_back.cancel();
        if self.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            self.fail(RunFailure::HandedBack);
        }
    }

    /// Whether a hand-back was asked for: runs start no new step.
    pub(crate) fn handing_back(&self) -> bool {
        self.hand_back.is_cancelled()
    }

    /// Publish an event and wait until it is visible. An error means the bus could not store
    /// a checkpoint or write the output; [`BusError::run_failure`] says what that means for
    /// the job.
    pub(crate) async fn publish(&self, event: Event) -> Result<u64, BusError> {
        self.bus.publish(event).await
    }

    /// Publish events in order in one message (a machine output's) and wait until all are
    /// visible. The error is the first failure; see [`Bus::publish_batch`] for which events it
    /// leaves unshown.
    pub(crate) async fn publish_batch(&self, events: Vec<Event>) -> Result<u64, BusError> {
        self.bus.publish_batch(events).await
    }

    /// Publish the terminal event of a run that stops because storage failed: shown although
    /// its checkpoint is not stored (the one exception to "durable before visible").
    pub(crate) async fn publish_unstored(&self, event: Event) -> Result<u64, BusError> {
        self.bus.publish_unstored(event).await
    }

    /// Stop every run of the job with `failure` (the first cause wins), as a cancellation
    /// does.
    pub(crate) fn fail(&self, failure: RunFailure) {
        let _ = self.failure.set(failure);
        self.cancel.cancel();
    }

    /// Why a run of this job must stop now, if it must: the job's failure, or a plain
    /// cancellation.
    pub(crate) fn stop_reason(&self) -> Option<RunFailure> {
        if !self.cancel.is_cancelled() {
            return None;
        }
        Some(self.failure.get().cloned().unwrap_or(RunFailure::Cancelled))
    }
}

impl Settings {
    /// The `run-setting.json` of one run segment. Never contains secrets: no API key, and no
    /// environment values (Perstack writes both).
    pub fn run_setting(
        &self,
        job_id: &str,
        run_id: &str,
        expert_key: &str,
        input: RunInput,
        now: u64,
    ) -> RunSetting {
        RunSetting {
            model: self.model.clone(),
            provider_config: ProviderConfig {
                provider_name: self.provider_name.clone(),
                base_url: None,
                extra: serde_json::Map::new(),
            },
            job_id: job_id.into(),
            run_id: run_id.into(),
            expert_key: expert_key.into(),
            input,
            experts: self.experts.clone(),
            reasoning_budget: self.reasoning_budget,
            max_steps: self.max_steps,
            max_retries: self.max_retries,
            timeout: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            started_at: now,
            updated_at: now,
            perstack_api_base_url: "https://api.perstack.ai".into(),
            perstack_base_skill_command: None,
            env: BTreeMap::new(),
            proxy_url: None,
            verbose: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// The value out of `boxed`, whose allocation is freed now (a `*boxed` in an async block keeps
/// it until the block ends).
#[allow(clippy::boxed_local)] // taking the box is the point: it is freed on return
pub(crate) fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::{RunOverrides, Settings};
    use crate::config::{self, defaults};
    use crate::schema::{ReasoningBudget, ReasoningLevel};

    const EXPERT: &str = "[experts.\"a\"]\ninstruction = \"x\"\n";

    #[test]
    fn without_a_file_value_or_an_override_every_run_setting_is_its_default() {
        let cfg = config::parse(EXPERT, Path::new("perstack.toml")).unwrap();
        let s = Settings::resolve(&cfg, &RunOverrides::default());
        let new = Settings::new(cfg.experts);
        assert_eq!(s.model, defaults::MODEL);
        assert_eq!(s.provider_name, "anthropic");
        assert_eq!(s.reasoning_budget, defaults::REASONING_BUDGET);
        assert_eq!(s.reasoning_budget, ReasoningBudget::default());
        assert_eq!(
            (s.max_steps, s.max_retries, s.timeout),
            (new.max_steps, new.max_retries, new.timeout)
        );
        assert_eq!((s.max_steps, s.max_retries), (100, 5));
        assert_eq!(s.timeout, Duration::from_secs(300));
        assert_eq!(s.model, new.model);
        assert_eq!(s.provider_name, new.provider_name);
    }

    #[test]
    fn the_command_line_wins_over_perstack_toml_which_wins_over_the_defaults() {
        let text = format!(
            "model = \"gpt-5-mini\"\nmaxSteps = 7\nmaxRetries = 2\ntimeout = 1000\nreasoningBudget = \"high\"\n[provider]\nproviderName = \"openai\"\n{EXPERT}"
        );
        let cfg = config::parse(&text, Path::new("perstack.toml")).unwrap();
        let s = Settings::resolve(&cfg, &RunOverrides::default());
        assert_eq!(s.model, "gpt-5-mini");
        assert_eq!(s.provider_name, "openai");
        assert_eq!((s.max_steps, s.max_retries), (7, 2));
        assert_eq!(s.timeout, Duration::from_millis(1000));
        assert_eq!(
            s.reasoning_budget,
            ReasoningBudget::Level(ReasoningLevel::High)
        );

        let s = Settings::resolve(
            &cfg,
            &RunOverrides {
                model: Some("claude-haiku-4-5".into()),
                provider: Some(config::ProviderName::Anthropic),
                reasoning_budget: Some(ReasoningBudget::Tokens(4096)),
                max_steps: Some(3),
                max_retries: Some(0),
                timeout: Some(Duration::from_millis(50)),
            },
        );
        assert_eq!(s.model, "claude-haiku-4-5");
        assert_eq!(s.provider_name, "anthropic");
        assert_eq!((s.max_steps, s.max_retries), (3, 0));
        assert_eq!(s.timeout, Duration::from_millis(50));
        assert_eq!(s.reasoning_budget, ReasoningBudget::Tokens(4096));
        assert_eq!(
            s.context_window,
            crate::llm::models::context_window("claude-haiku-4-5")
        );
    }
}
