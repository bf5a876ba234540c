//! [`ConfigError`] and [`Location`]: what is wrong with a `perstack.toml` or `.env` file, and
//! where. Every message is a complete sentence that names the file (with line and column when
//! known), the key path and what to do about it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A place in a configuration file: the file, and the 1-based line and column when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the position is known.
    pub line: Option<u32>,
    /// 1-based column, counted in characters, when the position is known.
    pub column: Option<u32>,
}

impl Location {
    /// A location that names only the file.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Location {
            file: file.into(),
            line: None,
            column: None,
        }
    }

    /// A location in `file` at 1-based `line` and `column` (saturating at `u32::MAX`).
    pub(crate) fn at(file: impl Into<PathBuf>, line: usize, column: usize) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Location {
            file: file.into(),
            line: Some(clamp(line)),
            column: Some(clamp(column)),
        }
    }
}

impl fmt::Display for Location {
    /// `file:line:column`, `file:line` or `file`, the form editors and terminals jump to.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Everything that can go wrong while finding, reading, parsing or validating the configuration.
///
/// All of these are usage errors: [`ConfigError::exit_code`] is 2 for every variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `perstack.toml` in the start directory or any of its parents.
    #[error(
        "perstack.toml not found: searched {} and every parent directory up to {}; create a \
         perstack.toml there or pass --config <path>.",
        start.display(), tried.display()
    )]
    NotFound {
        /// The directory the search started in (the cwd).
        start: PathBuf,
        /// The last path tried (`perstack.toml` in the filesystem root).
        tried: PathBuf,
    },

    /// The path given with `--config` does not exist (Perstack's wording).
    #[error("Given config path \"{}\" is not found (looked for {}).", given.display(), resolved.display())]
    GivenPathNotFound {
        /// The path as the user wrote it.
        given: PathBuf,
        /// The path actually checked (joined to the cwd when relative).
        resolved: PathBuf,
    },

    /// `--config` is a URL; Perstack fetches those, this engine does not yet.
    #[error(
        "Remote config \"{url}\" is not supported yet; download the file and pass its local path \
         to --config."
    )]
    RemoteUnsupported {
        /// The URL given.
        url: String,
    },

    /// A file exists but could not be read.
    #[error("Could not read {}: {source}.", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The file is not valid TOML.
    #[error("TOML syntax error in {at}: {message}; fix the syntax at that position.")]
    Syntax {
        /// Where the parser stopped.
        at: Location,
        /// The parser's description.
        message: String,
    },

    /// A key that Perstack does not define. Perstack silently drops such keys; this engine
    /// rejects them so that a typo does not silently change behaviour.
    #[error("Unknown key `{key}` in {at}; {}", unknown_key_hint(suggestion.as_deref(), expected))]
    UnknownKey {
        /// Where the key is written.
        at: Location,
        /// Its full key path, e.g. `experts."coord".instructon`.
        key: String,
        /// The closest valid key, when one is close enough to be a likely typo.
        suggestion: Option<String>,
        /// Every key valid at that place.
        expected: Vec<String>,
    },

    /// A required key is absent.
    #[error("Missing required key `{key}` in {at}; {hint}")]
    MissingKey {
        /// The table that lacks it.
        at: Location,
        /// The full key path of the missing key.
        key: String,
        /// What to add.
        hint: String,
    },

    /// A key holds a value of the wrong type or outside its allowed range or format.
    #[error("Invalid value for `{key}` in {at}: {message}")]
    InvalidValue {
        /// Where the value is written.
        at: Location,
        /// Its full key path.
        key: String,
        /// What is wrong and what to write instead (a complete sentence).
        message: String,
    },

    /// `delegates` names an Expert that this file does not define.
    #[error(
        "Delegate expert \"{delegate}\" not found in experts (listed in `experts.\"{expert}\".delegates` \
         in {at}); {}",
        missing_delegate_hint(delegate, suggestion.as_deref())
    )]
    MissingDelegate {
        /// Where the delegate is listed.
        at: Location,
        /// The Expert whose `delegates` lists it.
        expert: String,
        /// The missing key.
        delegate: String,
        /// The closest defined Expert key, if any is close.
        suggestion: Option<String>,
    },

    /// An Expert has a `skills` table without `"@perstack/base"` (Perstack fails the run with
    /// "Base skill is not defined"; this engine reports it before the run starts, from
    /// [`crate::config::PerstackConfig::check_runnable`]).
    #[error(
        "Base skill is not defined for expert \"{expert}\" in {at}: its skills table has no \
         \"@perstack/base\" entry; add [experts.\"{expert}\".skills.\"@perstack/base\"] with \
         type = \"mcpStdioSkill\", command = \"npx\", packageName = \"@perstack/base\", or remove the \
         skills table to get the default base skill."
    )]
    MissingBaseSkill {
        /// The Expert's table.
        at: Location,
        /// The Expert key.
        expert: String,
    },

    /// A line of a dotenv file cannot be parsed.
    #[error("Malformed line in env file {at}: {message}")]
    EnvFile {
        /// The file and line.
        at: Location,
        /// What is wrong and the expected form (a complete sentence).
        message: String,
    },
}

impl ConfigError {
    /// The process exit code for this error: 2, since every configuration error is a usage error.
    pub fn exit_code(&self) -> u8 {
        2
    }

    /// Where in which file the problem is, when it is inside a file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { at, .. }
            | ConfigError::UnknownKey { at, .. }
            | ConfigError::MissingKey { at, .. }
            | ConfigError::InvalidValue { at, .. }
            | ConfigError::MissingDelegate { at, .. }
            | ConfigError::MissingBaseSkill { at, .. }
            | ConfigError::EnvFile { at, .. } => Some(at),
            ConfigError::NotFound { .. }
            | ConfigError::GivenPathNotFound { .. }
            | ConfigError::RemoteUnsupported { .. }
            | ConfigError::Io { .. } => None,
        }
    }
}

/// A problem that makes one Expert unrunnable but not the file unloadable: a delegate that is
/// not an Expert of the file, a `skills` table without `"@perstack/base"`, or an
/// `mcpStdioSkill` without exactly one of `packageName` and `args`. Perstack reports these only
/// when the Expert (or an Expert delegating to it) runs, so the loader records them in
/// [`crate::config::PerstackConfig::problems`] instead of rejecting the file.
///
/// [`ExpertProblem::to_error`] gives the [`ConfigError`] to report (the same message, location
/// and "did you mean" a whole-file failure would have had).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertProblem(Problem);

/// The data of an [`ExpertProblem`], kept apart from [`ConfigError`] (which is neither `Clone`
/// nor `PartialEq`, since it can hold an `io::Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// Becomes [`ConfigError::MissingDelegate`].
    MissingDelegate {
        at: Location,
        expert: String,
        delegate: String,
        suggestion: Option<String>,
    },
    /// Becomes [`ConfigError::MissingBaseSkill`].
    MissingBaseSkill { at: Location, expert: String },
    /// A skill table with an invalid combination of keys; becomes [`ConfigError::InvalidValue`].
    InvalidSkill {
        at: Location,
        key: String,
        message: String,
    },
}

impl ExpertProblem {
    /// `delegate`, listed in `expert`'s `delegates` at `at`, is not an Expert of the file.
    pub(crate) fn missing_delegate(
        at: Location,
        expert: &str,
        delegate: &str,
        suggestion: Option<String>,
    ) -> Self {
        ExpertProblem(Problem::MissingDelegate {
            at,
            expert: expert.to_owned(),
            delegate: delegate.to_owned(),
            suggestion,
        })
    }

    /// `expert`'s skills table, at `at`, has no `"@perstack/base"`.
    pub(crate) fn missing_base_skill(at: Location, expert: &str) -> Self {
        ExpertProblem(Problem::MissingBaseSkill {
            at,
            expert: expert.to_owned(),
        })
    }

    /// The skill table at key path `key` (written at `at`) cannot be started: `message` says why.
    pub(crate) fn invalid_skill(at: Location, key: String, message: String) -> Self {
        ExpertProblem(Problem::InvalidSkill { at, key, message })
    }

    /// The error to report: [`ConfigError::MissingDelegate`], [`ConfigError::MissingBaseSkill`]
    /// or [`ConfigError::InvalidValue`].
    pub fn to_error(&self) -> ConfigError {
        match &self.0 {
            Problem::MissingDelegate {
                at,
                expert,
                delegate,
                suggestion,
            } => ConfigError::MissingDelegate {
                at: at.clone(),
                expert: expert.clone(),
                delegate: delegate.clone(),
                suggestion: suggestion.clone(),
            },
            Problem::MissingBaseSkill { at, expert } => ConfigError::MissingBaseSkill {
                at: at.clone(),
                expert: expert.clone(),
            },
            Problem::InvalidSkill { at, key, message } => ConfigError::InvalidValue {
                at: at.clone(),
                key: key.clone(),
                message: message.clone(),
            },
        }
    }

    /// The delegate key, when this is a missing delegate.
    pub(crate) fn delegate_key(&self) -> Option<&str> {
        match &self.0 {
            Problem::MissingDelegate { delegate, .. } => Some(delegate),
            _ => None,
        }
    }

    /// Where in the file the problem is.
    pub fn location(&self) -> &Location {
        match &self.0 {
            Problem::MissingDelegate { at, .. }
            | Problem::MissingBaseSkill { at, .. }
            | Problem::InvalidSkill { at, .. } => at,
        }
    }
}

impl fmt::Display for ExpertProblem {
    /// The message of [`ExpertProblem::to_error`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_error(), f)
    }
}

fn unknown_key_hint(suggestion: Option<&str>, expected: &[String]) -> String {
    match suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None if expected.is_empty() => {
            "this table takes no keys here; remove it (Perstack would silently ignore it)."
                .to_owned()
        }
        None => format!(
            "expected one of {} (Perstack would silently ignore this key; remove it or fix its spelling).",
            expected
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn missing_delegate_hint(delegate: &str, suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("did you mean \"{s}\"?"),
        None => format!(
            "define [experts.\"{delegate}\"] in this file (registry experts are not supported yet)."
        ),
    }
}

/// The candidate closest to `word`, when it is close enough to be a likely typo: equal after
/// ignoring case, `_` and `-` (`max_steps` → `maxSteps`), within one edit per three characters
/// of the word (`instructon`), or very similar by Jaro-Winkler, which favours a
/// shared beginning (`inputSchema` → `inputJsonSchema`).
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let normalize = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let word_norm = normalize(word);
    // One edit per three characters: none for one- or two-letter words, where any guess is noise.
    let limit = word.chars().count() / 3;
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let cand_norm = normalize(candidate);
        let similarity = strsim::jaro_winkler(&word_norm, &cand_norm);
        let close = cand_norm == word_norm
            || strsim::damerau_levenshtein(&word_norm, &cand_norm) <= limit
            || similarity >= 0.9;
        // An exact match after normalising outranks any similarity score.
        let score = if cand_norm == word_norm {
            2.0
        } else {
            similarity
        };
        if close && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_typos_and_case_variants() {
        let keys = ["instruction", "description", "delegates", "maxSteps"];
        assert_eq!(
            did_you_mean("instructon", keys).as_deref(),
            Some("instruction")
        );
        assert_eq!(did_you_mean("max_steps", keys).as_deref(), Some("maxSteps"));
        assert_eq!(did_you_mean("delegate", keys).as_deref(), Some("delegates"));
        assert_eq!(did_you_mean("zzz", keys), None);
        assert_eq!(did_you_mean("model", keys), None);
        let tool_keys = ["name", "description", "inputJsonSchema"];
        assert_eq!(
            did_you_mean("inputSchema", tool_keys).as_deref(),
            Some("inputJsonSchema")
        );
        let types = ["mcpStdioSkill", "mcpSseSkill", "interactiveSkill"];
        assert_eq!(
            did_you_mean("mcpStdio", types).as_deref(),
            Some("mcpStdioSkill")
        );
        assert_eq!(did_you_mean("stdio", types), None);
        assert_eq!(did_you_mean("b", ["a", "c"]), None);
    }

    #[test]
    fn location_displays_like_a_compiler_position() {
        let mut at = Location::file("/p/perstack.toml");
        assert_eq!(at.to_string(), "/p/perstack.toml");
        at.line = Some(3);
        at.column = Some(7);
        assert_eq!(at.to_string(), "/p/perstack.toml:3:7");
    }

    #[test]
    fn every_config_error_exits_with_2() {
        let err = ConfigError::RemoteUnsupported {
            url: "https://x".into(),
        };
        assert_eq!(err.exit_code(), 2);
    }
}
