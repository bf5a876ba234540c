//! What every actor of one job shares: settings, the model, the bus, the cancellation token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kameo::actor::ActorRef;
use tokio_util::sync::CancellationToken;

use super::event_bus::{EventBus, Publish};
use crate::llm::LanguageModel;
use crate::schema::{Event, Expert, ProviderConfig, ReasoningBudget, RunInput, RunSetting};
use crate::storage::Storage;

/// Engine-wide run settings, resolved from perstack.toml, the CLI and defaults.
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
    /// Job-wide step limit (Perstack default 100).
    pub max_steps: u32,
    /// Consecutive generation retries (default 5).
    pub max_retries: u32,
    /// Per-generation timeout (default 300 s).
    pub timeout: Duration,
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
}

impl Settings {
    /// Settings with Perstack's defaults for the given Experts.
    pub fn new(experts: BTreeMap<String, Expert>) -> Self {
        Settings {
            experts: Arc::new(experts),
            model: "claude-sonnet-4-5".into(),
            provider_name: "anthropic".into(),
            reasoning_budget: ReasoningBudget::default(),
            max_steps: 100,
            max_retries: 5,
            timeout: Duration::from_millis(300_000),
            workspace: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            max_parallel_delegates: 16,
            context_window: None,
            env: BTreeMap::new(),
            base_skill_command: None,
            lockfile: None,
        }
    }
}

/// Shared by every actor of one job.
pub struct JobContext {
    /// The job id.
    pub job_id: String,
    /// Settings.
    pub settings: Arc<Settings>,
    /// The provider.
    pub model: Arc<dyn LanguageModel>,
    /// The event bus.
    pub bus: ActorRef<EventBus>,
    /// Cancelled on SIGINT/SIGTERM or by the embedding API; every run watches it.
    pub cancel: CancellationToken,
    /// Where run settings go (checkpoints and events go through the bus).
    pub storage: Arc<dyn Storage>,
}

impl JobContext {
    /// Publish an event and wait until it is visible. An error means the bus could not store
    /// a checkpoint or write the output: an engine fault.
    pub async fn publish(&self, event: Event) -> Result<u64, String> {
        match self.bus.ask(Publish(event)).await {
            Ok(seq) => Ok(seq),
            Err(e) => Err(e.to_string()),
        }
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

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
