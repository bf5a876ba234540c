//! Choosing and building the provider of a run from `[provider]`, the CLI and the
//! environment (Perstack's precedence: setting values win over environment variables; API keys
//! come from the environment only).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::LanguageModel;
use super::anthropic::{AnthropicConfig, AnthropicModel};
use super::bedrock::{BedrockConfig, BedrockModel};
use super::google::{GoogleConfig, GoogleModel};
use super::http::ProviderConfigError;
use super::ollama::{OllamaConfig, OllamaModel};
use super::openai::{Flavor, OpenAiConfig, OpenAiModel};
use super::scripted::{ScriptError, ScriptedModel};
use super::vertex::{VertexConfig, VertexModel};
use crate::config::ProviderName;

/// Why no provider could be built. Every variant is a configuration error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// A key, URL or header is missing or invalid.
    #[error(transparent)]
    Config(#[from] ProviderConfigError),
    /// The scripted provider's script is missing or invalid.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The scripted provider was chosen without a script.
    #[error(
        "the scripted provider needs a script: pass --script <file> or set [provider.setting] script in perstack.toml"
    )]
    NoScript,
}

/// Build the provider `name` with `setting` (`[provider.setting]`) and `env` (process env plus
/// env files). `script` is the scripted provider's file, already resolved.
pub fn provider(
    name: ProviderName,
    setting: &Map<String, Value>,
    env: &BTreeMap<String, String>,
    script: Option<PathBuf>,
) -> Result<Arc<dyn LanguageModel>, SelectError> {
    match name {
        ProviderName::Scripted => {
            let script = script.ok_or(SelectError::NoScript)?;
            Ok(Arc::new(ScriptedModel::load(&script)?))
        }
        ProviderName::Anthropic => Ok(Arc::new(AnthropicModel::new(AnthropicConfig::from_env(
            setting, env,
        )?)?)),
        ProviderName::Google => Ok(Arc::new(GoogleModel::new(GoogleConfig::from_env(
            setting, env,
        )?)?)),
        ProviderName::Ollama => Ok(Arc::new(OllamaModel::new(OllamaConfig::from_env(
            setting, env,
        )?)?)),
        ProviderName::OpenAi => openai(Flavor::OpenAi, setting, env),
        ProviderName::DeepSeek => openai(Flavor::DeepSeek, setting, env),
        ProviderName::AzureOpenAi => openai(Flavor::AzureOpenAi, setting, env),
        ProviderName::AmazonBedrock => Ok(Arc::new(BedrockModel::new(BedrockConfig::from_env(
            setting, env,
        )?)?)),
        ProviderName::GoogleVertex => Ok(Arc::new(VertexModel::new(VertexConfig::from_env(
            setting, env,
        )?)?)),
    }
}

fn openai(
    flavor: Flavor,
    setting: &Map<String, Value>,
    env: &BTreeMap<String, String>,
) -> Result<Arc<dyn LanguageModel>, SelectError> {
    Ok(Arc::new(OpenAiModel::new(OpenAiConfig::from_env(
        flavor, setting, env,
    )?)?))
}
