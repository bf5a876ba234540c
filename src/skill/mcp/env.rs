//! The environment a stdio MCP server is started with, following Perstack's rules.
//!
//! The child starts from an empty environment (`env_clear`), then gets:
//!
//! 1. every name of [`SAFE_ENV_VARS`] that the given environment map has (the list is owned by
//!    [`crate::config`], shared with the base skill's `exec`);
//! 2. every `requiredEnv` name, taken from the same map; a missing one is an error naming the
//!    skill and the variable (never its value).
//!
//! A `requiredEnv` name in [`PROTECTED_ENV_VARS`] (compared case-insensitively) is never taken
//! from `requiredEnv`, so a skill definition cannot smuggle `LD_PRELOAD` or `NODE_OPTIONS` into a
//! child; the safe ones among them (`PATH`, `HOME`, ...) still come through step 1. Nothing else
//! from the engine's environment reaches the child: provider API keys stay in the engine.

use std::collections::BTreeMap;

use crate::skill::SkillError;

pub(crate) use crate::config::is_protected;

/// The complete environment for skill `skill_name`'s server: the safe names from `env`, then
/// each of `required_env` from `env` (protected names skipped).
///
/// `env` is the engine's view of the environment (process environment merged with `.env`
/// files); this function does not read the process environment itself.
///
/// # Errors
///
/// [`SkillError::Spawn`] (kind `NotFound`) with the message
/// `Skill <skill> requires environment variable <NAME>` when a required name is missing.
pub(crate) fn child_env(
    skill_name: &str,
    required_env: &[String],
    env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SkillError> {
    let mut out = crate::config::safe_env(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    for name in required_env {
        if is_protected(name) {
            tracing::warn!(
                skill = skill_name,
                variable = name.as_str(),
                "requiredEnv names a protected variable; it is not passed from requiredEnv"
            );
            continue;
        }
        match env.get(name) {
            Some(value) => {
                out.insert(name.clone(), value.clone());
            }
            None => return Err(missing_env(skill_name, name)),
        }
    }
    Ok(out)
}

/// The values of `required_env` that reach the child: what the stderr relay redacts.
pub(crate) fn required_values(
    required_env: &[String],
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    required_env
        .iter()
        .filter(|name| !is_protected(name))
        .filter_map(|name| env.get(name))
        .filter(|value| !value.is_empty())
        .cloned()
        .collect()
}

fn missing_env(skill_name: &str, name: &str) -> SkillError {
    SkillError::Spawn {
        skill: skill_name.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("Skill {skill_name} requires environment variable {name}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn names(env: &BTreeMap<String, String>) -> Vec<&str> {
        env.keys().map(String::as_str).collect()
    }

    #[test]
    fn only_safe_names_and_required_env_pass() {
        let env = map(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/home/u"),
            ("TERM", "xterm"),
            ("https_proxy", "http://proxy:3128"),
            ("ANTHROPIC_API_KEY", "c4n4ry3"),
            ("AWS_SECRET_ACCESS_KEY", "c4n4ry2"),
            ("SKILL_VAR", "c4n4ry4"),
            ("USER", "u"),
        ]);
        let out = child_env("s", &["SKILL_VAR".into()], &env).unwrap();
        assert_eq!(
            names(&out),
            ["HOME", "PATH", "SKILL_VAR", "TERM", "https_proxy"]
        );
        assert_eq!(out["SKILL_VAR"], "c4n4ry4");
    }

    #[test]
    fn protected_names_are_never_taken_from_required_env() {
        let env = map(&[
            ("PATH", "/usr/bin"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("ld_preload", "/tmp/evil.so"),
            ("Node_Options", "--require /tmp/x.js"),
            ("PYTHONPATH", "/tmp"),
        ]);
        let required: Vec<String> = [
            "LD_PRELOAD",
            "ld_preload",
            "Node_Options",
            "PYTHONPATH",
            "path",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let out = child_env("s", &required, &env).unwrap();
        assert_eq!(names(&out), ["PATH"]);
        // A protected name is skipped even when missing from the map: no error either.
        assert!(child_env("s", &["DYLD_INSERT_LIBRARIES".into()], &env).is_ok());
    }

    #[test]
    fn a_missing_required_variable_names_skill_and_variable_but_no_value() {
        let env = map(&[("PATH", "/usr/bin"), ("OTHER", "v4lu3")]);
        let err = child_env("exa", &["EXA_API_KEY".into()], &env).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("Skill exa requires environment variable EXA_API_KEY"),
            "{text}"
        );
        assert!(!text.contains("v4lu3"));
        assert!(!err.feeds_back_to_model());
    }

    #[test]
    fn required_values_skip_protected_and_empty_values() {
        let env = map(&[("A", "alpha"), ("B", ""), ("PATH", "/usr/bin")]);
        let required = vec!["A".to_owned(), "B".to_owned(), "PATH".to_owned()];
        assert_eq!(required_values(&required, &env), ["alpha"]);
    }
}
