//! What `perstack publish`, `tag` and `status` send, with Perstack's rules (its CLI's
//! `publish.ts`, `tag.ts`, `status.ts`): the create payload is `name`, `version`,
//! `minRuntimeVersion: "v1.0"`, `description`, `instruction`, `skills`, `delegates` and
//! `tags: ["latest"]`; stdio skills must run `npx` or `uvx` and lose `args`, `allowedDomains`
//! and `lazyInit`; `packageName` defaults to the skill's name; a skill's `description`
//! defaults to "`<name>` skill". On top of what Perstack's CLI checks, the rules its registry
//! enforces are checked before sending: an `@perstack/base` skill, valid delegate keys, at
//! most 8 tags matching `^[a-z0-9][a-z0-9_-]*$`, and no hand-set `latest`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::RegistryError;
use super::definition::{MIN_RUNTIME_VERSION, check_command};
use crate::config::names;
use crate::schema::{BASE_SKILL, Expert, Skill};

/// Most tags one version may carry.
pub(crate) const MAX_TAGS: usize = 8;

/// The statuses a version can be set to.
pub(crate) const STATUSES: [&str; 3] = ["available", "deprecated", "disabled"];

/// `POST /api/registry/v1/experts/`'s body (`CreateExpertInput`), fields in Perstack's order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreatePayload {
    name: String,
    version: String,
    min_runtime_version: &'static str,
    description: String,
    instruction: String,
    skills: BTreeMap<String, PayloadSkill>,
    delegates: Vec<String>,
    tags: Vec<String>,
}

/// One skill as the registry takes it.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum PayloadSkill {
    Stdio {
        #[serde(rename = "type")]
        kind: &'static str,
        description: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pick: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        omit: Vec<String>,
        command: String,
        #[serde(rename = "packageName")]
        package_name: String,
        #[serde(rename = "requiredEnv", skip_serializing_if = "Vec::is_empty")]
        required_env: Vec<String>,
    },
    Sse {
        #[serde(rename = "type")]
        kind: &'static str,
        description: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pick: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        omit: Vec<String>,
        endpoint: String,
    },
    Interactive {
        #[serde(rename = "type")]
        kind: &'static str,
        description: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        tools: BTreeMap<String, PayloadTool>,
    },
}

/// One interactive tool as the registry takes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct PayloadTool {
    description: String,
    input_json_schema: String,
}

impl CreatePayload {
    /// The payload publishing the local Expert `key`, or why it cannot be published.
    pub(crate) fn of(key: &str, expert: &Expert) -> Result<CreatePayload, RegistryError> {
        let usage = |m: String| RegistryError::Usage(m);
        if !names::is_expert_name(key) {
            return Err(usage(format!(
                "\"{key}\" cannot be published: a registry name is [@org/]name in lowercase letters, digits, '-' and '_'"
            )));
        }
        if !expert.skills.contains_key(BASE_SKILL) {
            return Err(usage(format!(
                "expert \"{key}\" has no \"{BASE_SKILL}\" skill, which the registry requires"
            )));
        }
        for d in &expert.delegates {
            if !names::is_expert_key(d) {
                return Err(usage(format!(
                    "delegate \"{d}\" of \"{key}\" is not a valid expert key"
                )));
            }
        }
        let mut skills = BTreeMap::new();
        for (name, skill) in &expert.skills {
            let converted = match skill {
                Skill::McpStdioSkill(s) => {
                    check_command(name, &s.command).map_err(usage)?;
                    PayloadSkill::Stdio {
                        kind: "mcpStdioSkill",
                        description: described(name, &s.description),
                        rule: s.rule.clone(),
                        pick: s.pick.clone(),
                        omit: s.omit.clone(),
                        command: s.command.clone(),
                        package_name: s.package_name.clone().unwrap_or_else(|| name.clone()),
                        required_env: s.required_env.clone(),
                    }
                }
                Skill::McpSseSkill(s) => PayloadSkill::Sse {
                    kind: "mcpSseSkill",
                    description: described(name, &s.description),
                    rule: s.rule.clone(),
                    pick: s.pick.clone(),
                    omit: s.omit.clone(),
                    endpoint: s.endpoint.clone(),
                },
                Skill::InteractiveSkill(s) => PayloadSkill::Interactive {
                    kind: "interactiveSkill",
                    description: described(name, &s.description),
                    rule: s.rule.clone(),
                    tools: s
                        .tools
                        .iter()
                        .map(|(t, spec)| {
                            let description = spec
                                .description
                                .clone()
                                .unwrap_or_else(|| format!("{t} tool"));
                            let input_json_schema = spec.input_json_schema.clone();
                            let tool = PayloadTool {
                                description,
                                input_json_schema,
                            };
                            (t.clone(), tool)
                        })
                        .collect(),
                },
            };
            skills.insert(name.clone(), converted);
        }
        Ok(CreatePayload {
            name: key.to_owned(),
            version: expert.version.clone(),
            min_runtime_version: MIN_RUNTIME_VERSION,
            description: expert.description.clone().unwrap_or_default(),
            instruction: expert.instruction.clone(),
            skills,
            delegates: expert.delegates.clone(),
            tags: vec![super::key::LATEST.to_owned()],
        })
    }

    /// As JSON.
    pub(crate) fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// As `JSON.stringify(payload, null, 2)` prints it (insertion order, two spaces).
    pub(crate) fn to_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn described(name: &str, description: &Option<String>) -> String {
    description
        .clone()
        .unwrap_or_else(|| format!("{name} skill"))
}

/// Checks the tags of `perstack tag`: at least one, at most [`MAX_TAGS`], each matching
/// Perstack's tag pattern, none `latest` (which only publishing moves).
pub(crate) fn check_tags(tags: &[String]) -> Result<(), RegistryError> {
    let usage = |m: String| Err(RegistryError::Usage(m));
    if tags.is_empty() {
        return usage("Please provide tags to set".into());
    }
    if tags.len() > MAX_TAGS {
        return usage(format!("at most {MAX_TAGS} tags, got {}", tags.len()));
    }
    for t in tags {
        if !names::is_tag(t) {
            return usage(format!(
                "invalid tag \"{t}\": tags match ^[a-z0-9][a-z0-9_-]*$"
            ));
        }
        if t == super::key::LATEST {
            return usage(
                "\"latest\" cannot be set by hand: publishing moves it to the newest version"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Checks the status of `perstack status`.
pub(crate) fn check_status(status: &str) -> Result<(), RegistryError> {
    if STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(RegistryError::Usage(
            "Invalid status. Must be: available, deprecated, or disabled".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn expert(toml: &str) -> Expert {
        let cfg = crate::config::parse(toml, Path::new("/p/perstack.toml")).unwrap();
        cfg.experts.into_values().next().unwrap()
    }

    #[test]
    fn the_payload_drops_args_allowed_domains_and_lazy_init() {
        let e = expert(
            r#"[experts."x"]
instruction = "Do."
delegates = ["@org/helper"]
[experts."x".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
lazyInit = true
[experts."x".skills."search"]
type = "mcpStdioSkill"
command = "uvx"
args = ["mcp-search", "--flag"]
allowedDomains = ["api.example.com"]
requiredEnv = ["K"]
"#,
        );
        let v = CreatePayload::of("x", &e).unwrap().to_value();
        assert_eq!(v["minRuntimeVersion"], "v1.0");
        assert_eq!(v["tags"], serde_json::json!(["latest"]));
        assert_eq!(v["description"], "");
        let search = &v["skills"]["search"];
        assert_eq!(search["packageName"], "search");
        assert_eq!(search["description"], "search skill");
        assert!(search.get("args").is_none() && search.get("allowedDomains").is_none());
        assert!(v["skills"]["@perstack/base"].get("lazyInit").is_none());
    }

    #[test]
    fn publish_rules_refuse_other_commands_and_a_missing_base() {
        let node = expert(
            r#"[experts."x"]
instruction = "Do."
[experts."x".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
[experts."x".skills."local"]
type = "mcpStdioSkill"
command = "node"
args = ["server.js"]
"#,
        );
        let err = CreatePayload::of("x", &node).unwrap_err().to_string();
        assert!(err.contains("Invalid command \"node\""), "{err}");
        let no_base = expert(
            "[experts.\"x\"]\ninstruction = \"Do.\"\n[experts.\"x\".skills.\"s\"]\ntype = \"mcpStdioSkill\"\ncommand = \"npx\"\npackageName = \"p\"\n",
        );
        assert!(CreatePayload::of("x", &no_base).is_err());
    }

    #[test]
    fn tags_follow_perstacks_pattern_and_limit() {
        let t = |v: &[&str]| check_tags(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(t(&["stable", "v2_x-y"]).is_ok());
        assert!(t(&[]).is_err());
        assert!(t(&["Stable"]).is_err());
        assert!(t(&["latest"]).is_err());
        assert!(t(&["a", "b", "c", "d", "e", "f", "g", "h", "i"]).is_err());
        assert!(check_status("deprecated").is_ok() && check_status("gone").is_err());
    }
}
