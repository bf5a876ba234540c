#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! The public modules are the embedding surface:
//!
//! - [`prelude`]: the embedding surface in one import; start here.
//! - [`engine`]: the embedding API: the [`Engine`](engine::Engine) builder, job requests,
//!   the [`JobHandle`](engine::JobHandle) and the job's outcome.
//! - [`config`]: `perstack.toml` discovery, parsing, validation, `.env` loading, the run
//!   defaults and `perstack.lock`.
//! - [`llm`]: the [`LanguageModel`](llm::LanguageModel) trait, the providers (Anthropic,
//!   OpenAI and compatibles, Google, Ollama, Amazon Bedrock, Google Vertex AI) and the scripted
//!   provider.
//! - [`storage`]: the [`Storage`](storage::Storage) trait, the filesystem store (Perstack's
//!   layout) and an in-memory one.
//! - [`schema`]: wire types (messages, checkpoints, events, jobs, run settings). No I/O.
//! - [`cluster`]: jobs on NATS JetStream: the [`Client`](cluster::Client) that submits,
//!   follows, cancels and waits (`perstack worker` runs them).
//! - [`registry`]: registry Experts (`@org/name@version`): resolution through Perstack's
//!   registry API into ordinary Expert definitions, the on-disk cache, digest pins.
//! - [`sandbox`]: how skill processes are confined ([`Isolation`](sandbox::Isolation), the
//!   default being the native Linux sandbox) and why a run can refuse to start without it.
//! - [`run_cli`]: the `perstack` command line, whole (the binary is this one call).
//!
//! Inside the crate, not public:
//!
//! - `agent`: the pure agent-loop state machine, the tool catalog, delegation bookkeeping.
//! - `actor`: the kameo actors: event bus, job, run, skill.
//! - `skill`: skills as the model sees them: the in-process base skill, MCP connections, the
//!   process launcher, the tool-call timeout.
//! - `replay`: deterministic replay of a recorded job (`perstack replay`): recorded model
//!   answers and tool results played back through the real engine, compared run by run.
//! - `cli`: the `perstack` commands (`run`, `start`, `log`, `install`, `base`, `replay`, and
//!   the registry's `publish`, `unpublish`, `tag`, `status`).
//! - `tui`: `perstack start`'s workbench: the view model fed by a job's events, the screens,
//!   the keys, the terminal.

mod actor;
mod agent;
mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
mod json;
pub mod llm;
#[cfg(feature = "otel")]
pub mod otel;
pub mod prelude;
pub mod registry;
mod replay;
pub mod sandbox;
pub mod schema;
mod skill;
pub mod storage;
#[cfg(test)]
mod tests;
mod tui;

pub use cli::run as run_cli;
