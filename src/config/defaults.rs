//! Perstack's run defaults: the one place they are written down.
//!
//! A run's settings come from the command line, else `perstack.toml`, else these values; the
//! CLI and the embedding API resolve them the same way through
//! [`Settings::resolve`](crate::engine::Settings::resolve). Nothing here reads the environment
//! or any file.

use std::time::Duration;

use super::ProviderName;
use crate::schema::{ReasoningBudget, ReasoningLevel};

/// The model id (`model`, `--model`).
pub const MODEL: &str = "claude-sonnet-4-5";
/// The provider (`[provider] providerName`, `--provider`).
pub const PROVIDER: ProviderName = ProviderName::Anthropic;
/// The reasoning budget (`reasoningBudget`, `--reasoning-budget`).
pub const REASONING_BUDGET: ReasoningBudget = ReasoningBudget::Level(ReasoningLevel::Low);
/// The job-wide step limit (`maxSteps`, `--max-steps`).
pub const MAX_STEPS: u32 = 100;
/// Consecutive failed generations before a run stops (`maxRetries`, `--max-retries`).
pub const MAX_RETRIES: u32 = 5;
/// The per-generation timeout (`timeout`, `--timeout`, in milliseconds there).
pub const TIMEOUT: Duration = Duration::from_millis(300_000);
/// The timeout of each tool call (`PERSTACK_TOOL_TIMEOUT_MS`, in milliseconds there): the MCP
/// SDK's default request timeout, which is what Perstack applies. Not the generation `timeout`.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// How many delegated children of one turn run at once (not a Perstack setting).
pub const MAX_PARALLEL_DELEGATES: usize = 16;
