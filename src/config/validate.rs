//! From the raw serde shapes to a checked [`PerstackConfig`]: Perstack's value rules (lengths,
//! name patterns, URL schemes), its defaults (version `1.0.0`, the default base skill, empty
//! lists), and the per-Expert problems that Perstack reports only when the Expert runs (missing
//! delegates, missing `@perstack/base`, "exactly one of packageName and args"), which are
//! recorded as [`ExpertProblem`]s instead of failing the load.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::doc::{Doc, KeyPath};
use super::error::{ConfigError, ExpertProblem, did_you_mean};
use super::names;
use super::raw::{RawConfig, RawExpert, RawSkill, RawTool};
use super::{PerstackConfig, Runtime, provider};
use crate::sandbox::egress::rules::{DomainError, DomainPattern};
use crate::schema::{
    BASE_SKILL, Expert, InteractiveSkill, InteractiveTool, McpSseSkill, McpStdioSkill,
    ReasoningBudget, Skill,
};

/// Longest instruction, in UTF-16 units (`maxExpertInstructionLength`).
pub(crate) const MAX_INSTRUCTION: usize = 20 * 1024;
/// Longest Expert or skill description, and skill rule.
pub(crate) const MAX_DESCRIPTION: usize = 2 * 1024;
/// Longest interactive tool `inputJsonSchema`.
pub(crate) const MAX_INPUT_SCHEMA: usize = 20 * 1024;

/// Builds the validated configuration.
pub(super) fn build(
    raw: RawConfig,
    doc: &Doc<'_>,
    file: &Path,
) -> Result<PerstackConfig, ConfigError> {
    let v = Validator { doc };
    let top = KeyPath::root();
    let reasoning_budget = raw
        .reasoning_budget
        .map(|value| v.reasoning_budget(&top.field("reasoningBudget"), value))
        .transpose()?;
    let runtime = raw
        .runtime
        .map(|name| {
            name.parse::<Runtime>()
                .map_err(|e| v.invalid(&top.field("runtime"), format!("{e}.")))
        })
        .transpose()?;
    let max_steps = v.number(&top.field("maxSteps"), raw.max_steps, 1)?;
    let max_retries = v.number(&top.field("maxRetries"), raw.max_retries, 0)?;
    let timeout = v.number(&top.field("timeout"), raw.timeout, 0)?;
    if let Some(url) = &raw.perstack_api_base_url
        && let Some(problem) = names::api_base_url_problem(url)
    {
        return Err(v.invalid(
            &top.field("perstackApiBaseUrl"),
            format!(
                "perstackApiBaseUrl must use HTTPS, got \"{url}\": {problem}; write an https:// URL."
            ),
        ));
    }
    if let Some(command) = &raw.perstack_base_skill_command
        && command.first().is_none_or(|c| c.is_empty())
    {
        return Err(v.invalid(
            &top.field("perstackBaseSkillCommand"),
            "the first element must be the command that starts the base skill, e.g. \
             [\"node\", \"path/to/base.js\"]; remove the key to use the bundled base skill."
                .to_owned(),
        ));
    }
    let provider = raw
        .provider
        .map(|p| provider::validate(p, doc))
        .transpose()?;

    let experts_path = top.field("experts");
    let mut in_file_order: Vec<_> = raw.experts.into_iter().collect();
    in_file_order.sort_by_key(|(key, _)| doc.at(&experts_path.key(key)).line);
    let mut experts = BTreeMap::new();
    let mut own_problems = BTreeMap::new();
    for (key, raw_expert) in in_file_order {
        let (expert, problems) = v.expert(&experts_path.key(&key), &key, raw_expert)?;
        own_problems.insert(key.clone(), problems);
        experts.insert(key, expert);
    }
    // Per Expert: missing delegates (in `delegates` order) first, as Perstack resolves the
    // Expert tree before it starts any skill, then the skill problems.
    let mut problems = BTreeMap::new();
    for (key, own) in own_problems {
        let mut list = v.missing_delegates(&experts_path, &key, &experts);
        list.extend(own);
        if !list.is_empty() {
            problems.insert(key, list);
        }
    }

    Ok(PerstackConfig {
        path: file.to_owned(),
        model: raw.model,
        reasoning_budget,
        runtime,
        max_steps,
        max_retries,
        timeout,
        perstack_api_base_url: raw.perstack_api_base_url,
        perstack_base_skill_command: raw.perstack_base_skill_command,
        env_path: raw.env_path,
        provider,
        experts,
        problems,
    })
}

/// Perstack's default skills for an Expert without a `skills` table.
pub(super) fn default_skills() -> BTreeMap<String, Skill> {
    let base = McpStdioSkill {
        name: BASE_SKILL.to_owned(),
        description: None,
        rule: None,
        pick: Vec::new(),
        omit: Vec::new(),
        command: "npx".to_owned(),
        package_name: Some(BASE_SKILL.to_owned()),
        args: Vec::new(),
        required_env: Vec::new(),
        lazy_init: false,
        allowed_domains: None,
    };
    BTreeMap::from([(BASE_SKILL.to_owned(), Skill::McpStdioSkill(base))])
}

struct Validator<'d, 'a> {
    doc: &'d Doc<'a>,
}

impl Validator<'_, '_> {
    fn invalid(&self, path: &KeyPath, message: String) -> ConfigError {
        ConfigError::InvalidValue {
            at: self.doc.at(path),
            key: path.to_string(),
            message,
        }
    }

    fn missing(&self, table: &KeyPath, key: &str, hint: String) -> ConfigError {
        ConfigError::MissingKey {
            at: self.doc.at(table),
            key: table.field(key).to_string(),
            hint,
        }
    }

    /// A level name or a non-negative token count.
    fn reasoning_budget(
        &self,
        path: &KeyPath,
        value: toml::Value,
    ) -> Result<ReasoningBudget, ConfigError> {
        let levels = ["none", "minimal", "low", "medium", "high"];
        match value {
            toml::Value::String(s) if levels.contains(&s.as_str()) => s
                .parse()
                .map_err(|e: String| self.invalid(path, format!("{e}."))),
            toml::Value::Integer(n) if n >= 0 => Ok(ReasoningBudget::Tokens(n.unsigned_abs())),
            other => {
                let got = match &other {
                    toml::Value::String(s) => format!("\"{s}\""),
                    toml::Value::Integer(n) => n.to_string(),
                    _ => other.type_str().to_owned(),
                };
                let hint = match &other {
                    toml::Value::String(s) => did_you_mean(s, levels)
                        .map(|l| format!(" Did you mean \"{l}\"?"))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                Err(self.invalid(
                    path,
                    format!(
                        "reasoningBudget must be \"none\", \"minimal\", \"low\", \"medium\", \"high\" \
                         or a non-negative integer token count, not {got}.{hint}"
                    ),
                ))
            }
        }
    }

    /// An optional integer of at least `min` that fits in `T`.
    fn number<T: TryFrom<i64>>(
        &self,
        path: &KeyPath,
        value: Option<i64>,
        min: i64,
    ) -> Result<Option<T>, ConfigError> {
        let Some(n) = value else { return Ok(None) };
        if n < min {
            return Err(self.invalid(
                path,
                format!("{path} must be an integer of at least {min}, not {n}."),
            ));
        }
        T::try_from(n).map(Some).map_err(|_| {
            self.invalid(
                path,
                format!("{path} = {n} is out of range; use a smaller integer."),
            )
        })
    }

    /// A length limit in UTF-16 units, as JavaScript's `string.length` counts.
    fn length(
        &self,
        path: &KeyPath,
        what: &str,
        s: &str,
        min: usize,
        max: usize,
    ) -> Result<(), ConfigError> {
        let len = s.encode_utf16().count();
        if len < min {
            return Err(self.invalid(
                path,
                format!("{what} must not be empty; write some text or remove the key."),
            ));
        }
        if len > max {
            return Err(self.invalid(
                path,
                format!("{what} is {len} characters long; the limit is {max}, so shorten it."),
            ));
        }
        Ok(())
    }

    /// The Expert at `path`, and its skill problems: a missing `@perstack/base` first, then the
    /// unstartable skills in name order (left out of the returned Expert's skills).
    fn expert(
        &self,
        path: &KeyPath,
        key: &str,
        raw: RawExpert,
    ) -> Result<(Expert, Vec<ExpertProblem>), ConfigError> {
        if !names::is_expert_name(key) {
            return Err(self.invalid(
                path,
                format!(
                    "expert key \"{key}\" is not a valid Expert name; use lowercase letters, digits, \
                     `_` and `-` (starting with a letter or digit), optionally scoped as \
                     \"@org/name\", at most {} characters.",
                    names::MAX_NAME_LEN
                ),
            ));
        }
        let Some(instruction) = raw.instruction else {
            return Err(self.missing(
                path,
                "instruction",
                format!("every expert needs an instruction; add instruction = \"\"\"...\"\"\" to [{path}]."),
            ));
        };
        self.length(
            &path.field("instruction"),
            "instruction",
            &instruction,
            1,
            MAX_INSTRUCTION,
        )?;
        if let Some(description) = &raw.description {
            self.length(
                &path.field("description"),
                "description",
                description,
                1,
                MAX_DESCRIPTION,
            )?;
        }
        let version = raw.version.unwrap_or_else(|| "1.0.0".to_owned());
        if !names::is_semver(&version) {
            return Err(self.invalid(
                &path.field("version"),
                format!("version \"{version}\" is not a semantic version; write it as MAJOR.MINOR.PATCH, e.g. \"1.0.0\"."),
            ));
        }
        let tags = raw.tags.unwrap_or_default();
        for (i, tag) in tags.iter().enumerate() {
            if !names::is_tag(tag) {
                return Err(self.invalid(
                    &path.field("tags").index(i),
                    format!("tag \"{tag}\" is invalid; use lowercase letters, digits, `_` and `-`, starting with a letter or digit."),
                ));
            }
        }
        let delegates = raw.delegates.unwrap_or_default();
        for (i, delegate) in delegates.iter().enumerate() {
            if !names::is_expert_key(delegate) {
                return Err(self.invalid(
                    &path.field("delegates").index(i),
                    format!(
                        "delegate \"{delegate}\" is not a valid Expert key; write an Expert name, \
                         optionally followed by @version or @tag (e.g. \"@org/name@1.0.0\")."
                    ),
                ));
            }
        }
        let mut problems = Vec::new();
        let skills = match raw.skills {
            None => default_skills(),
            Some(raw_skills) => {
                let skills_path = path.field("skills");
                // Checked on the table as written, so that a broken `@perstack/base` entry is
                // reported as such rather than as a missing base skill.
                if !raw_skills.contains_key(BASE_SKILL) {
                    problems.push(ExpertProblem::missing_base_skill(
                        self.doc.at(&skills_path),
                        key,
                    ));
                }
                let mut skills = BTreeMap::new();
                for (name, raw_skill) in raw_skills {
                    let skill_path = skills_path.key(&name);
                    match self.skill(&skill_path, &name, raw_skill)? {
                        Ok(skill) => {
                            skills.insert(name, skill);
                        }
                        Err(problem) => problems.push(problem),
                    }
                }
                skills
            }
        };
        let expert = Expert {
            key: key.to_owned(),
            name: key.to_owned(),
            version,
            description: raw.description,
            instruction,
            skills,
            delegates,
            tags,
            provider_tools: raw.provider_tools,
            provider_skills: raw.provider_skills.map(json),
            provider_tool_options: raw.provider_tool_options.map(json),
        };
        Ok((expert, problems))
    }

    /// The skill at `path`. The outer error fails the load; the inner one is a problem that
    /// only makes this skill (and so its Expert) unrunnable.
    fn skill(
        &self,
        path: &KeyPath,
        name: &str,
        raw: RawSkill,
    ) -> Result<Result<Skill, ExpertProblem>, ConfigError> {
        if let Some(description) = &raw.description {
            self.length(
                &path.field("description"),
                "description",
                description,
                0,
                MAX_DESCRIPTION,
            )?;
        }
        if let Some(rule) = &raw.rule {
            self.length(&path.field("rule"), "rule", rule, 0, MAX_DESCRIPTION)?;
        }
        for (i, domain) in raw.allowed_domains.iter().flatten().enumerate() {
            // An IP literal passes Perstack's pattern; the proxy never matches it.
            if let Err(problem @ (DomainError::Syntax | DomainError::Punycode)) =
                DomainPattern::parse(domain)
            {
                return Err(self.invalid(
                    &path.field("allowedDomains").index(i),
                    format!(
                        "Invalid domain pattern \"{domain}\" ({problem}). Use exact domain \
                         (example.com) or wildcard prefix (*.example.com)."
                    ),
                ));
            }
        }
        let kind = raw.kind.as_deref().unwrap_or_default();
        match kind {
            "mcpStdioSkill" => self.stdio_skill(path, name, raw),
            "mcpSseSkill" => {
                let Some(endpoint) = raw.endpoint else {
                    return Err(self.missing(
                        path,
                        "endpoint",
                        format!("an mcpSseSkill needs the server URL; add endpoint = \"https://...\" to [{path}]."),
                    ));
                };
                // The documented opt-in for local development and tests also relaxes this
                // lexical check; the connect-time guard (which resolves the host) still applies
                // its own rules under the same opt-in.
                let allow_private = std::env::var(crate::skill::mcp::ALLOW_PRIVATE_ENDPOINTS_ENV).is_ok_and(|v| v == "1");
                if !allow_private && let Some(problem) = names::sse_endpoint_problem(&endpoint) {
                    return Err(self.invalid(
                        &path.field("endpoint"),
                        format!("SSE endpoint must be a public HTTPS URL: {problem}."),
                    ));
                }
                Ok(Ok(Skill::McpSseSkill(McpSseSkill {
                    name: name.to_owned(),
                    description: raw.description,
                    rule: raw.rule,
                    pick: raw.pick.unwrap_or_default(),
                    omit: raw.omit.unwrap_or_default(),
                    endpoint,
                    allowed_domains: raw.allowed_domains,
                })))
            }
            "interactiveSkill" => {
                let Some(raw_tools) = raw.tools else {
                    return Err(self.missing(
                        path,
                        "tools",
                        format!(
                            "an interactiveSkill needs its tools; add [{path}.tools.<toolName>] with \
                             inputJsonSchema = '''{{\"type\":\"object\"}}'''."
                        ),
                    ));
                };
                let mut tools = BTreeMap::new();
                for (tool_name, raw_tool) in raw_tools {
                    let tool = self.tool(&path.field("tools").key(&tool_name), &tool_name, raw_tool)?;
                    tools.insert(tool_name, tool);
                }
                Ok(Ok(Skill::InteractiveSkill(InteractiveSkill {
                    name: name.to_owned(),
                    description: raw.description,
                    rule: raw.rule,
                    tools,
                })))
            }
            other => Err(self.invalid(
                &path.field("type"),
                format!("unknown skill type \"{other}\"; use \"mcpStdioSkill\", \"mcpSseSkill\" or \"interactiveSkill\"."),
            )),
        }
    }

    /// An `mcpStdioSkill`: a missing command fails the load; anything but exactly one of
    /// `packageName` and `args` is a problem of the Expert, as in Perstack, which reports it
    /// when it starts the skill.
    fn stdio_skill(
        &self,
        path: &KeyPath,
        name: &str,
        raw: RawSkill,
    ) -> Result<Result<Skill, ExpertProblem>, ConfigError> {
        let Some(command) = raw.command.filter(|c| !c.is_empty()) else {
            return Err(self.missing(
                path,
                "command",
                format!("an mcpStdioSkill needs the command that starts it; add command = \"npx\" (or uvx, node, ...) to [{path}]."),
            ));
        };
        let package_name = raw.package_name.filter(|p| !p.is_empty());
        let args_written = raw.args.is_some();
        let args = raw.args.unwrap_or_default();
        let args_path = path.field("args");
        let problem = match (&package_name, args.is_empty()) {
            (None, true) => Some((
                if args_written { &args_path } else { path },
                format!(
                    "Skill {name} has no packageName or args. Please provide one of them: \
                     packageName = \"<package>\" or args = [\"...\"]."
                ),
            )),
            (Some(_), false) => Some((
                &args_path,
                format!(
                    "Skill {name} has both packageName and args. Please provide only one of them."
                ),
            )),
            _ => None,
        };
        if let Some((at, message)) = problem {
            return Ok(Err(ExpertProblem::invalid_skill(
                self.doc.at(at),
                at.to_string(),
                message,
            )));
        }
        Ok(Ok(Skill::McpStdioSkill(McpStdioSkill {
            name: name.to_owned(),
            description: raw.description,
            rule: raw.rule,
            pick: raw.pick.unwrap_or_default(),
            omit: raw.omit.unwrap_or_default(),
            command,
            package_name,
            args,
            required_env: raw.required_env.unwrap_or_default(),
            lazy_init: raw.lazy_init.unwrap_or(false),
            allowed_domains: raw.allowed_domains,
        })))
    }

    fn tool(
        &self,
        path: &KeyPath,
        name: &str,
        raw: RawTool,
    ) -> Result<InteractiveTool, ConfigError> {
        let Some(schema) = raw.input_json_schema else {
            return Err(self.missing(
                path,
                "inputJsonSchema",
                format!("every interactive tool needs a JSON Schema string; add inputJsonSchema = '''{{\"type\":\"object\"}}''' to [{path}]."),
            ));
        };
        let schema_path = path.field("inputJsonSchema");
        self.length(
            &schema_path,
            "inputJsonSchema",
            &schema,
            0,
            MAX_INPUT_SCHEMA,
        )?;
        if let Err(e) = serde_json::from_str::<Value>(&schema) {
            return Err(self.invalid(
                &schema_path,
                format!(
                    "inputJsonSchema is not valid JSON ({e}); write the JSON Schema as a TOML \
                     literal string, e.g. inputJsonSchema = '''{{\"type\":\"object\"}}'''."
                ),
            ));
        }
        Ok(InteractiveTool {
            name: name.to_owned(),
            description: raw.description,
            input_json_schema: schema,
        })
    }

    /// The delegates of `key` that are not Experts of this file (registry Experts are not
    /// supported), in `delegates` order.
    fn missing_delegates(
        &self,
        experts_path: &KeyPath,
        key: &str,
        experts: &BTreeMap<String, Expert>,
    ) -> Vec<ExpertProblem> {
        let Some(expert) = experts.get(key) else {
            return Vec::new();
        };
        expert
            .delegates
            .iter()
            .enumerate()
            .filter(|(_, delegate)| !experts.contains_key(*delegate))
            .map(|(i, delegate)| {
                ExpertProblem::missing_delegate(
                    self.doc
                        .at(&experts_path.key(key).field("delegates").index(i)),
                    key,
                    delegate,
                    did_you_mean(delegate, experts.keys().map(String::as_str)),
                )
            })
            .collect()
    }
}

/// A TOML value as JSON (for the provider-native options Perstack passes through untouched).
fn json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(n) => Value::from(n),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(json).collect()),
        toml::Value::Table(t) => Value::Object(t.into_iter().map(|(k, v)| (k, json(v))).collect()),
    }
}
