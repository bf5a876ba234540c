//! The embedding surface in one import: `use perstack::prelude::*;`.
//!
//! Everything an application needs to load a `perstack.toml`, pick a provider, start jobs,
//! follow their typed events and keep their history: the [`Engine`] and its builder, the job
//! request, handle and outcome, configuration loading, the [`LanguageModel`] trait with the
//! providers, the [`Storage`] trait with its stores, and the main wire types.
//!
//! ```no_run
//! use std::sync::Arc;
//! use perstack::prelude::*;
//!
//! # async fn demo() -> Result<(), EngineError> {
//! let config = load_config(std::path::Path::new("experts/fanout/perstack.toml"))?;
//! let model = ScriptedModel::load(&config.resolve_relative("script.toml"))?;
//! let engine = Engine::builder()
//!     .settings(Settings::new(config.experts.clone()))
//!     .storage(Arc::new(MemoryStorage::new()))
//!     .model(Arc::new(model))
//!     .build();
//! let outcome = engine.run("coordinator", "hello").await?.wait().await?;
//! assert_eq!(outcome.job.status, JobStatus::Completed);
//! engine.shutdown().await;
//! # Ok(()) }
//! ```

pub use crate::config::{ConfigError, PerstackConfig, ProviderName, load as load_config};
pub use crate::engine::{
    ContinueInput, ContinueRequest, Engine, EngineBuilder, EngineError, JobHandle, JobOutcome,
    JobRequest, RunOverrides, Sequenced, Settings,
};
pub use crate::llm::anthropic::{AnthropicConfig, AnthropicModel};
pub use crate::llm::google::{GoogleConfig, GoogleModel};
pub use crate::llm::ollama::{OllamaConfig, OllamaModel};
pub use crate::llm::openai::{OpenAiConfig, OpenAiModel};
pub use crate::llm::scripted::ScriptedModel;
pub use crate::llm::select::provider;
pub use crate::llm::{GenerationError, LanguageModel};
pub use crate::schema::{
    Checkpoint, CheckpointStatus, Event, EventPayload, Expert, Job, JobStatus, Message, RunError,
    Usage,
};
pub use crate::storage::{Claim, FsStorage, MemoryStorage, Storage, StoreError};
