//! A registry Expert as the API sends it (`registryExpertSchema` of Perstack's API client),
//! the checks that refuse a hostile or broken definition, and its conversion into an ordinary
//! [`Expert`] definition that the engine runs like a local one.
//!
//! A definition is data from the network: names, versions and delegates go through
//! [`RegistryKey::parse`], lengths follow `perstack.toml`'s limits, and skills are limited to
//! what the registry itself accepts (stdio skills run `npx` or `uvx` with a `packageName`,
//! SSE endpoints are public https). The same command rule refuses a local Expert at publish
//! time ([`check_command`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::RegistryError;
use super::key::RegistryKey;
use crate::config::{MAX_DESCRIPTION, MAX_INPUT_SCHEMA, MAX_INSTRUCTION, names};
use crate::schema::{BASE_SKILL, Expert, Skill};

/// The commands a published stdio skill may run.
pub(crate) const ALLOWED_COMMANDS: [&str; 2] = ["npx", "uvx"];

/// `minRuntimeVersion` the registry accepts.
pub(crate) const MIN_RUNTIME_VERSION: &str = "v1.0";

/// Refuses a stdio skill command other than `npx`/`uvx` (Perstack's publish rule, also
/// applied to every definition fetched from a registry).
pub(crate) fn check_command(skill: &str, command: &str) -> Result<(), String> {
    if ALLOWED_COMMANDS.contains(&command) {
        Ok(())
    } else {
        Err(format!(
            "Invalid command \"{command}\" for skill \"{skill}\". Must be \"npx\" or \"uvx\"."
        ))
    }
}

/// The `data.expert` object of a registry answer, when the body has one.
pub(crate) fn expert_of(body: &Value) -> Option<&Map<String, Value>> {
    body.get("data")?.get("expert")?.as_object()
}

/// Checks the definition `raw` fetched for `asked` and converts it into an Expert keyed
/// `local_key` (the key as the configuration or command line wrote it). The name must be the
/// one asked for, and the version too when a version was asked for.
pub(crate) fn to_expert(
    asked: &RegistryKey,
    local_key: &str,
    raw: &Map<String, Value>,
) -> Result<Expert, RegistryError> {
    let refuse = |reason: String| RegistryError::Refused {
        key: asked.to_string(),
        reason,
    };
    let text = |field: &str| -> Result<&str, RegistryError> {
        raw.get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| refuse(format!("\"{field}\" is missing or not a string")))
    };
    let name = text("name")?;
    if name != asked.name() {
        return Err(refuse(format!(
            "the registry answered with \"{}\" instead",
            name.chars().take(80).collect::<String>()
        )));
    }
    let version = text("version")?;
    if !names::is_semver(version) {
        return Err(refuse("its version is not semver".into()));
    }
    if asked.version().is_some_and(|v| v != version) {
        return Err(refuse(format!(
            "the registry answered with version {version}"
        )));
    }
    let key = text("key")?;
    if key != format!("{name}@{version}") {
        return Err(refuse(format!(
            "its key \"{}\" is not {name}@{version}",
            key.chars().take(80).collect::<String>()
        )));
    }
    if raw.get("minRuntimeVersion").and_then(Value::as_str) != Some(MIN_RUNTIME_VERSION) {
        return Err(refuse(format!(
            "minRuntimeVersion must be \"{MIN_RUNTIME_VERSION}\""
        )));
    }
    let instruction = text("instruction")?;
    let len = instruction.encode_utf16().count();
    if len == 0 || len > MAX_INSTRUCTION {
        return Err(refuse(format!(
            "its instruction has {len} characters (1 to {MAX_INSTRUCTION} allowed)"
        )));
    }
    let description = match raw.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if d.encode_utf16().count() <= MAX_DESCRIPTION => {
            Some(d.clone()).filter(|d| !d.is_empty())
        }
        Some(_) => {
            return Err(refuse(format!(
                "its description is not a string of at most {MAX_DESCRIPTION} characters"
            )));
        }
    };
    let delegates = match raw.get("delegates") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|d| {
                let d = d
                    .as_str()
                    .ok_or_else(|| refuse("a delegate is not a string".into()))?;
                RegistryKey::parse(d).map_err(|e| refuse(format!("delegate: {e}")))?;
                Ok(d.to_owned())
            })
            .collect::<Result<Vec<_>, RegistryError>>()?,
        Some(_) => return Err(refuse("\"delegates\" is not an array".into())),
    };
    let tags = raw
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .filter(|t| names::is_tag(t))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let skills = match raw.get("skills") {
        Some(Value::Object(skills)) => skills
            .iter()
            .map(|(n, s)| Ok((n.clone(), skill(n, s).map_err(&refuse)?)))
            .collect::<Result<BTreeMap<_, _>, RegistryError>>()?,
        _ => return Err(refuse("\"skills\" is missing or not an object".into())),
    };
    if !skills.contains_key(BASE_SKILL) {
        return Err(refuse(format!("it has no \"{BASE_SKILL}\" skill")));
    }
    Ok(Expert {
        key: local_key.to_owned(),
        name: name.to_owned(),
        version: version.to_owned(),
        description,
        instruction: instruction.to_owned(),
        skills,
        delegates,
        tags,
        provider_tools: None,
        provider_skills: None,
        provider_tool_options: None,
    })
}

/// One skill of a definition, checked and in runtime form (its `name` is the table key).
fn skill(name: &str, value: &Value) -> Result<Skill, String> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err("a skill name is empty, too long or holds control characters".into());
    }
    let Some(fields) = value.as_object() else {
        return Err(format!("skill \"{name}\" is not an object"));
    };
    let short = |field: &str| -> Result<(), String> {
        match fields.get(field) {
            Some(Value::String(s)) if s.encode_utf16().count() > MAX_DESCRIPTION => Err(format!(
                "skill \"{name}\": {field} is longer than {MAX_DESCRIPTION} characters"
            )),
            _ => Ok(()),
        }
    };
    short("description")?;
    short("rule")?;
    let mut fields = fields.clone();
    match fields.get("type").and_then(Value::as_str) {
        Some("mcpStdioSkill") => {
            let command = fields
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or_default();
            check_command(name, command)?;
            if fields.get("args").is_some_and(|a| !a.is_null()) {
                return Err(format!(
                    "skill \"{name}\" has args; registry skills name a packageName only"
                ));
            }
            let package = fields
                .get("packageName")
                .and_then(Value::as_str)
                .unwrap_or(name);
            if package.is_empty()
                || package.starts_with('-')
                || package.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!("skill \"{name}\" has an invalid packageName"));
            }
            let package = Value::String(package.to_owned());
            fields.insert("packageName".into(), package);
            // Perstack's registry form has no lazyInit or allowedDomains.
            fields.remove("lazyInit");
            fields.remove("allowedDomains");
        }
        Some("mcpSseSkill") => {
            let endpoint = fields
                .get("endpoint")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(problem) = names::sse_endpoint_problem(endpoint) {
                return Err(format!("skill \"{name}\": {problem}"));
            }
            fields.remove("allowedDomains");
        }
        Some("interactiveSkill") => {
            let Some(tools) = fields.get_mut("tools").and_then(Value::as_object_mut) else {
                return Err(format!("skill \"{name}\" has no tools"));
            };
            for (tool, spec) in tools.iter_mut() {
                let Some(spec) = spec.as_object_mut() else {
                    return Err(format!(
                        "tool \"{tool}\" of skill \"{name}\" is not an object"
                    ));
                };
                let schema = spec
                    .get("inputJsonSchema")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if schema.is_empty() || schema.len() > MAX_INPUT_SCHEMA {
                    return Err(format!(
                        "tool \"{tool}\" of skill \"{name}\" needs an inputJsonSchema of at most {MAX_INPUT_SCHEMA} bytes"
                    ));
                }
                spec.insert("name".into(), Value::String(tool.clone()));
            }
        }
        _ => return Err(format!("skill \"{name}\" has an unknown type")),
    }
    fields.insert("name".into(), Value::String(name.to_owned()));
    serde_json::from_value(Value::Object(fields)).map_err(|e| format!("skill \"{name}\": {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn good() -> Value {
        json!({
            "type": "registryExpert", "id": "e1", "key": "@org/helper@1.0.0",
            "name": "@org/helper", "minRuntimeVersion": "v1.0", "description": "Helps.",
            "version": "1.0.0", "status": "available", "instruction": "Help.",
            "skills": {
                "@perstack/base": {"type": "mcpStdioSkill", "command": "npx",
                    "packageName": "@perstack/base", "description": "base"},
                "search": {"type": "mcpStdioSkill", "command": "uvx",
                    "packageName": "mcp-search", "requiredEnv": ["SEARCH_KEY"]}
            },
            "delegates": ["@org/other@2.0.0"], "tags": ["latest"]
        })
    }

    fn convert(v: &Value) -> Result<Expert, RegistryError> {
        let asked = RegistryKey::parse("@org/helper@1.0.0").unwrap();
        to_expert(&asked, "@org/helper@1.0.0", v.as_object().unwrap())
    }

    #[test]
    fn a_registry_definition_becomes_an_ordinary_expert() {
        let e = convert(&good()).unwrap();
        assert_eq!(e.key, "@org/helper@1.0.0");
        assert_eq!(e.name, "@org/helper");
        assert_eq!(e.delegates, vec!["@org/other@2.0.0".to_string()]);
        let Skill::McpStdioSkill(s) = &e.skills["search"] else {
            panic!("stdio")
        };
        assert_eq!(s.command, "uvx");
        assert_eq!(s.required_env, vec!["SEARCH_KEY".to_string()]);
    }

    #[test]
    fn hostile_definitions_are_refused() {
        let cases: Vec<(&str, Value)> = vec![
            ("name", json!("@org/../../etc")),
            ("key", json!("@org/helper@9.9.9")),
            ("instruction", json!("x".repeat(MAX_INSTRUCTION + 1))),
            ("instruction", json!("")),
            ("delegates", json!(["@org/../x"])),
            ("delegates", json!(["local-expert"])),
            (
                "skills",
                json!({"@perstack/base": {"type": "mcpStdioSkill", "command": "bash",
                "packageName": "x"}}),
            ),
            (
                "skills",
                json!({"@perstack/base": {"type": "mcpStdioSkill", "command": "npx",
                "packageName": "x", "args": ["-c", "rm -rf /"]}}),
            ),
            (
                "skills",
                json!({"other": {"type": "mcpStdioSkill", "command": "npx",
                "packageName": "x"}}),
            ),
            (
                "skills",
                json!({"@perstack/base": {"type": "mcpStdioSkill", "command": "npx",
                "packageName": "--eval=x"}}),
            ),
            (
                "skills",
                json!({"@perstack/base": {"type": "mcpStdioSkill", "command": "npx"},
                "s": {"type": "mcpSseSkill", "endpoint": "https://127.0.0.1/sse"}}),
            ),
            ("minRuntimeVersion", json!("v9")),
        ];
        for (field, value) in cases {
            let mut v = good();
            v[field] = value.clone();
            let err = convert(&v).expect_err(&format!("{field} = {value}"));
            assert!(matches!(err, RegistryError::Refused { .. }), "{err}");
        }
    }
}
