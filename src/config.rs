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
//! | values, defaults | `validate`, `provider`, `names` | [`ConfigError::InvalidValue`], [`ConfigError::MissingKey`] |
//! | per-Expert problems, recorded, not failed | `validate` | [`PerstackConfig::check_runnable`]: [`ConfigError::MissingDelegate`], [`ConfigError::MissingBaseSkill`], [`ConfigError::InvalidValue`] |
//!
//! A file loads when everything but the per-Expert problems is right, as in Perstack, which
//! runs the valid Experts of a file that also has broken ones. Those problems (a delegate that
//! is not an Expert of the file, a `skills` table without `@perstack/base`, an `mcpStdioSkill`
//! without exactly one of `packageName`/`args`) are kept in [`PerstackConfig::problems`];
//! [`PerstackConfig::check_runnable`] reports the first one of an Expert and everything it
//! can delegate to, before anything runs, and [`PerstackConfig::check_all`] the first one of
//! the file.
//!
//! Where this differs from Perstack, on purpose:
//! - unknown keys are errors (Perstack's zod strips them silently), except the misplaced
//!   `envPath` inside `[provider]` found in Perstack's e2e configs (a warning) and `name` inside
//!   interactive tool tables (ignored); `temperature`, from Perstack's older schema, is accepted
//!   and ignored;
//! - the per-Expert problems fail [`PerstackConfig::check_runnable`] before the run starts,
//!   where Perstack fails (or asks its registry, for a missing delegate) while it sets the run
//!   up;
//! - the provider list has this engine's `scripted` provider.

pub mod defaults;
mod discover;
mod doc;
mod env;
mod error;
mod keys;
pub(crate) mod names;
mod provider;
mod raw;
mod validate;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::schema::{Expert, ReasoningBudget};

pub mod lockfile;

pub use discover::{CONFIG_FILE_NAME, discover};
pub use env::{
    DEFAULT_ENV_PATHS, PROTECTED_ENV_VARS, SAFE_ENV_VARS, is_protected, load_env, safe_env,
};
pub(crate) use error::did_you_mean;
pub use error::{ConfigError, ExpertProblem, Location};
pub use provider::{ProviderName, ProviderTable, UnknownName};
pub(crate) use validate::{MAX_DESCRIPTION, MAX_INPUT_SCHEMA, MAX_INSTRUCTION};

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
    /// `runtime`. Absent or [`Runtime::Docker`]: skill processes run in the native sandbox;
    /// [`Runtime::Local`]: unconfined. The agent-CLI runtimes are not implemented.
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
    ///
    /// An Expert with entries in [`PerstackConfig::problems`] is here too, but must not run:
    /// call [`PerstackConfig::check_runnable`] first. Its `delegates` and a `skills` table
    /// without `@perstack/base` are kept as written; an `mcpStdioSkill` without exactly one of
    /// `packageName` and `args` is left out of its `skills`, so that it can never be started.
    pub experts: BTreeMap<String, Expert>,
    /// Per Expert key, the problems that make that Expert unrunnable without failing the load,
    /// in the order they are reported: missing delegates (in `delegates` order), then a
    /// missing `@perstack/base`, then unstartable skills (in name order). Experts without
    /// problems have no entry.
    pub problems: BTreeMap<String, Vec<ExpertProblem>>,
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

    /// Fails with the first recorded problem of `expert_key` or of any Expert it can reach
    /// through `delegates` (cycles are followed once): the Expert's own problems first, then
    /// its delegates' breadth-first, in `delegates` order. The error is the one a whole-file
    /// check would give, with file, line and "did you mean".
    ///
    /// Only recorded problems are checked: an `expert_key` that is not in
    /// [`PerstackConfig::experts`] has none, so it is `Ok` here; reporting unknown Experts is
    /// the caller's (the engine does, with its own "did you mean").
    pub fn check_runnable(&self, expert_key: &str) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::from([expert_key]);
        let mut queue = VecDeque::from([expert_key]);
        while let Some(key) = queue.pop_front() {
            if let Some(problem) = self.problems.get(key).and_then(|p| p.first()) {
                return Err(problem.to_error());
            }
            let Some(expert) = self.experts.get(key) else {
                continue;
            };
            for delegate in &expert.delegates {
                if seen.insert(delegate.as_str()) {
                    queue.push_back(delegate.as_str());
                }
            }
        }
        Ok(())
    }

    /// Adds `expert` (resolved outside the file, from the registry) under `key`, and drops
    /// the "missing delegate" problems it answers: Experts of the file that delegate to `key`
    /// are runnable again, unless they have other problems. A key already in the file is
    /// left as it is (local Experts come first).
    pub fn add_expert(&mut self, key: &str, expert: Expert) {
        if self.experts.contains_key(key) {
            return;
        }
        self.experts.insert(key.to_owned(), expert);
        self.problems.retain(|_, problems| {
            problems.retain(|p| p.delegate_key() != Some(key));
            !problems.is_empty()
        });
    }

    /// Fails with the recorded problem written first in the file (by line and column), of any
    /// Expert, whether or not it would ever run; `Ok` when every Expert is runnable.
    pub fn check_all(&self) -> Result<(), ConfigError> {
        let position = |p: &ExpertProblem| {
            let at = p.location();
            (at.line.unwrap_or(u32::MAX), at.column.unwrap_or(u32::MAX))
        };
        match self.problems.values().flatten().min_by_key(|p| position(p)) {
            Some(problem) => Err(problem.to_error()),
            None => Ok(()),
        }
    }
}

/// Where Experts run (`runtime`, `--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// In this process, skill processes with the user's full rights (Perstack's built-in
    /// runtime).
    Local,
    /// Confined (Perstack: a Docker container with an egress proxy; here: the native sandbox,
    /// [`crate::sandbox`]). Also what a missing `runtime` means.
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
