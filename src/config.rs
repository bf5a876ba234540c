//! `perstack.toml`: discovery, parsing, validation, and the `.env` files of the run environment.
//!
//! This module owns the step from files on disk to checked values: it turns a `perstack.toml`
//! into a [`PerstackConfig`] whose Experts are already in their runtime form
//! ([`crate::schema::Expert`], with Perstack's defaults applied), and builds the environment map
//! from the process environment and dotenv files ([`load_env`]). It never touches the network,
//! never starts a skill and never merges command-line flags: callers apply "flag, then file,
//! then built-in default" themselves. It talks only to [`crate::schema`], for the output types.
//!
//! The pipeline of [`parse`]:
//!
//! | step | file | fails with |
//! | --- | --- | --- |
//! | TOML syntax, keeping every span | `doc` | [`ConfigError::Syntax`] |
//! | unknown keys, with "did you mean" | `keys` | [`ConfigError::UnknownKey`] |
//! | types, via serde into the raw shapes | `raw` | [`ConfigError::InvalidValue`] |
//! | values, defaults, cross-references | `validate`, `provider`, `names` | [`ConfigError::InvalidValue`], [`ConfigError::MissingKey`], [`ConfigError::MissingDelegate`], [`ConfigError::MissingBaseSkill`] |
//!
//! Where this differs from Perstack, on purpose:
//! - unknown keys are errors (Perstack's zod strips them silently), except the misplaced
//!   `envPath` inside `[provider]` found in Perstack's e2e configs (a warning) and `name` inside
//!   interactive tool tables (ignored); `temperature`, from Perstack's older schema, is accepted
//!   and ignored;
//! - a delegate that is not an Expert of the file, a `skills` table without `@perstack/base`,
//!   and an `mcpStdioSkill` without exactly one of `packageName`/`args` fail at load time,
//!   where Perstack fails (or asks its registry) only when the run starts;
//! - the provider list has this engine's `scripted` provider.

mod discover;
mod doc;
mod env;
mod error;
mod keys;
mod names;
mod provider;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::schema::{Expert, ReasoningBudget};

pub use discover::{CONFIG_FILE_NAME, discover};
pub use env::{DEFAULT_ENV_PATHS, load_env};
pub(crate) use error::did_you_mean;
pub use error::{ConfigError, Location};
pub use provider::{ProviderName, ProviderTable, UnknownName};

/// A parsed and validated `perstack.toml`. Optional fields are `None` when the file does not
/// set them; the built-in defaults (model `claude-sonnet-4-5`, maxSteps 100, ...) are the
/// caller's to apply after command-line flags.
#[derive(Debug, Clone, PartialEq)]
pub struct PerstackConfig {
    /// The file this was read from (relative paths in it are relative to its directory).
    pub path: PathBuf,
    /// `model`.
    pub model: Option<String>,
    /// `reasoningBudget`.
    pub reasoning_budget: Option<ReasoningBudget>,
    /// `runtime`. Only [`Runtime::Local`] is implemented by this engine.
    pub runtime: Option<Runtime>,
    /// `maxSteps`: the Job-wide step limit, at least 1.
    pub max_steps: Option<u32>,
    /// `maxRetries`: consecutive generation retries allowed.
    pub max_retries: Option<u32>,
    /// `timeout`: per-generation timeout in milliseconds.
    pub timeout: Option<u64>,
    /// `perstackApiBaseUrl`, an https URL.
    pub perstack_api_base_url: Option<String>,
    /// `perstackBaseSkillCommand`: command and arguments replacing the bundled base skill.
    pub perstack_base_skill_command: Option<Vec<String>>,
    /// `envPath`: dotenv files, relative to the working directory in Perstack.
    pub env_path: Option<Vec<String>>,
    /// `[provider]`.
    pub provider: Option<ProviderTable>,
    /// `[experts."<key>"]`, in runtime form: name = key, version `1.0.0` by default, the default
    /// `@perstack/base` skill when there is no `skills` table, empty lists by default.
    pub experts: BTreeMap<String, Expert>,
}

impl PerstackConfig {
    /// The directory holding the configuration file.
    pub fn base_dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

    /// `p` as written in the file, resolved against [`PerstackConfig::base_dir`] when relative.
    pub fn resolve_relative(&self, p: impl AsRef<Path>) -> PathBuf {
        self.base_dir().join(p)
    }
}

/// Where Experts run (`runtime`, `--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// In this process (Perstack's built-in runtime). The only one this engine implements.
    Local,
    /// In a Docker container with an egress proxy.
    Docker,
    /// Through the Cursor agent CLI.
    Cursor,
    /// Through the Claude Code CLI.
    ClaudeCode,
    /// Through the Gemini CLI.
    Gemini,
}

impl Runtime {
    /// Every runtime name Perstack accepts.
    pub const ALL: [Runtime; 5] = [
        Runtime::Local,
        Runtime::Docker,
        Runtime::Cursor,
        Runtime::ClaudeCode,
        Runtime::Gemini,
    ];

    /// The name as written in `perstack.toml` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Local => "local",
            Runtime::Docker => "docker",
            Runtime::Cursor => "cursor",
            Runtime::ClaudeCode => "claude-code",
            Runtime::Gemini => "gemini",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName::new("runtime", s, Runtime::ALL.map(Runtime::as_str)))
    }
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<PerstackConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates `text`, the contents of the file `path` (used in messages and to
/// resolve relative paths; not read).
pub fn parse(text: &str, path: &Path) -> Result<PerstackConfig, ConfigError> {
    let doc = doc::Doc::parse(text, path)?;
    keys::check(&doc)?;
    let raw = raw::RawConfig::deserialize(doc.deserializer()).map_err(|e| {
        let offset = e.span().map(|s| s.start);
        let key = offset
            .map(|o| doc.path_at(o).to_string())
            .filter(|k| !k.is_empty());
        let message = e
            .message()
            .replace("expected i64", "expected an integer")
            .replace("expected a map", "expected a table")
            .replace("expected a sequence", "expected an array");
        ConfigError::InvalidValue {
            at: doc.location(offset),
            key: key.unwrap_or_else(|| "(document)".to_owned()),
            message: format!("{}.", message.trim_end_matches('.')),
        }
    })?;
    validate::build(raw, &doc, path)
}

#[cfg(test)]
mod tests;
