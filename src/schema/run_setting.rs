//! The run setting, `run-setting.json`: everything a run was started with, minus secrets.
//!
//! Perstack writes the provider API key and the whole environment into this file; this engine
//! never does (`providerConfig` carries no key, `env` holds names only). See COMPATIBILITY.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Expert;

/// `"none" | "minimal" | "low" | "medium" | "high"` or a token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReasoningBudget {
    /// A named level.
    Level(ReasoningLevel),
    /// A token count.
    Tokens(u64),
}

/// A named reasoning level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningLevel {
    /// Reasoning off.
    None,
    /// 1024 tokens.
    Minimal,
    /// 2048 tokens (the default).
    Low,
    /// 5000 tokens.
    Medium,
    /// 10000 tokens.
    High,
}

impl Default for ReasoningBudget {
    /// [`crate::config::defaults::REASONING_BUDGET`] (`low`).
    fn default() -> Self {
        crate::config::defaults::REASONING_BUDGET
    }
}

impl ReasoningBudget {
    /// Token budget, or `None` when reasoning is off (Perstack's mapping).
    pub fn tokens(self) -> Option<u64> {
        match self {
            ReasoningBudget::Level(ReasoningLevel::None) | ReasoningBudget::Tokens(0) => None,
            ReasoningBudget::Level(ReasoningLevel::Minimal) => Some(1024),
            ReasoningBudget::Level(ReasoningLevel::Low) => Some(2048),
            ReasoningBudget::Level(ReasoningLevel::Medium) => Some(5000),
            ReasoningBudget::Level(ReasoningLevel::High) => Some(10000),
            ReasoningBudget::Tokens(n) => Some(n),
        }
    }
}

impl std::str::FromStr for ReasoningBudget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(ReasoningBudget::Level(ReasoningLevel::None)),
            "minimal" => Ok(ReasoningBudget::Level(ReasoningLevel::Minimal)),
            "low" => Ok(ReasoningBudget::Level(ReasoningLevel::Low)),
            "medium" => Ok(ReasoningBudget::Level(ReasoningLevel::Medium)),
            "high" => Ok(ReasoningBudget::Level(ReasoningLevel::High)),
            n => n.parse::<u64>().map(ReasoningBudget::Tokens).map_err(|_| {
                format!("invalid reasoning budget {n:?}: expected none, minimal, low, medium, high or a token count")
            }),
        }
    }
}

/// The answer to a pending interactive (or delegate) call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InteractiveToolCallResult {
    /// The call answered.
    pub tool_call_id: String,
    /// Its tool name.
    pub tool_name: String,
    /// Its skill name.
    pub skill_name: String,
    /// The answer text.
    pub text: String,
}

/// What starts a run segment.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInput {
    /// A query.
    pub text: Option<String>,
    /// An answer to a pending call.
    pub interactive_tool_call_result: Option<InteractiveToolCallResult>,
}

/// Provider configuration without secrets: `{providerName, baseUrl?, ...}`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    /// `anthropic`, `openai`, ..., or this engine's `scripted`.
    pub provider_name: String,
    /// Base URL, when set.
    pub base_url: Option<String>,
    /// Other non-secret settings (headers are dropped: they may hold credentials).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `run-setting.json`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSetting {
    /// Model id.
    pub model: String,
    /// Provider, without secrets.
    pub provider_config: ProviderConfig,
    /// Job id.
    pub job_id: String,
    /// Run id.
    pub run_id: String,
    /// The Expert this run executes.
    pub expert_key: String,
    /// What started the run.
    pub input: RunInput,
    /// Every Expert of the configuration; shared by every run setting of an engine.
    pub experts: Arc<BTreeMap<String, Expert>>,
    /// Reasoning budget.
    pub reasoning_budget: ReasoningBudget,
    /// Job-wide step limit.
    pub max_steps: u32,
    /// Consecutive generation retries allowed.
    pub max_retries: u32,
    /// Per-generation timeout in ms.
    pub timeout: u64,
    /// Epoch ms.
    pub started_at: u64,
    /// Epoch ms.
    pub updated_at: u64,
    /// Registry API base URL.
    pub perstack_api_base_url: String,
    /// Command replacing the bundled base skill.
    pub perstack_base_skill_command: Option<Vec<String>>,
    /// Environment: names of the variables the run's skills may receive, values omitted.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Proxy URL.
    pub proxy_url: Option<String>,
    /// Verbose flag.
    pub verbose: Option<bool>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
