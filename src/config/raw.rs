//! The serde shapes of `perstack.toml` exactly as written: every key Perstack accepts, nothing
//! defaulted or checked yet (`validate` does that). Each struct sits next to the list of keys it
//! accepts, which `keys` uses to reject unknown keys with a position and a "did you mean".
//!
//! Numbers are read as `i64` so that a negative `maxSteps` gets a range message from
//! `validate` rather than serde's "expected u32".

use std::collections::BTreeMap;

use serde::Deserialize;

/// Top-level keys. `temperature` is in Perstack's older schema and still in its e2e configs;
/// it is accepted and ignored, as the Perstack snapshot ignores it.
pub(super) const TOP_KEYS: &[&str] = &[
    "model",
    "temperature",
    "reasoningBudget",
    "runtime",
    "maxSteps",
    "maxRetries",
    "timeout",
    "perstackApiBaseUrl",
    "perstackBaseSkillCommand",
    "envPath",
    "provider",
    "experts",
];

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawConfig {
    pub(super) model: Option<String>,
    #[expect(dead_code, reason = "accepted for compatibility, never used")]
    pub(super) temperature: Option<f64>,
    /// A level name or a token count; checked by `validate`.
    pub(super) reasoning_budget: Option<toml::Value>,
    pub(super) runtime: Option<String>,
    pub(super) max_steps: Option<i64>,
    pub(super) max_retries: Option<i64>,
    pub(super) timeout: Option<i64>,
    pub(super) perstack_api_base_url: Option<String>,
    pub(super) perstack_base_skill_command: Option<Vec<String>>,
    pub(super) env_path: Option<Vec<String>>,
    pub(super) provider: Option<RawProvider>,
    #[serde(default)]
    pub(super) experts: BTreeMap<String, RawExpert>,
}

/// Keys of `[provider]`. `envPath` is not Perstack's: several of its e2e configs write the
/// top-level `envPath` after the `[provider]` header, which puts it inside this table; it is
/// accepted with a warning and ignored, as Perstack ignores it.
pub(super) const PROVIDER_KEYS: &[&str] = &["providerName", "setting", "envPath"];

/// `[provider]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawProvider {
    pub(super) provider_name: Option<String>,
    /// Checked key by key against the provider's allowed settings by `provider`.
    pub(super) setting: Option<toml::Table>,
    #[expect(
        dead_code,
        reason = "misplaced top-level key; warned about by keys, then ignored"
    )]
    pub(super) env_path: Option<toml::Value>,
}

/// Keys of `[experts."<key>"]`.
pub(super) const EXPERT_KEYS: &[&str] = &[
    "version",
    "minRuntimeVersion",
    "description",
    "instruction",
    "skills",
    "delegates",
    "tags",
    "providerTools",
    "providerSkills",
    "providerToolOptions",
];

/// `[experts."<key>"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawExpert {
    pub(super) version: Option<String>,
    #[expect(dead_code, reason = "registry metadata; no effect on a run")]
    pub(super) min_runtime_version: Option<String>,
    pub(super) description: Option<String>,
    pub(super) instruction: Option<String>,
    pub(super) skills: Option<BTreeMap<String, RawSkill>>,
    pub(super) delegates: Option<Vec<String>>,
    pub(super) tags: Option<Vec<String>>,
    pub(super) provider_tools: Option<Vec<String>>,
    pub(super) provider_skills: Option<toml::Value>,
    pub(super) provider_tool_options: Option<toml::Value>,
}

/// The skill types, as `type` spells them.
pub(super) const SKILL_TYPES: &[&str] = &["mcpStdioSkill", "mcpSseSkill", "interactiveSkill"];

/// Keys of a `type = "mcpStdioSkill"` table.
pub(super) const STDIO_SKILL_KEYS: &[&str] = &[
    "type",
    "command",
    "packageName",
    "args",
    "description",
    "rule",
    "pick",
    "omit",
    "requiredEnv",
    "allowedDomains",
    "lazyInit",
];

/// Keys of a `type = "mcpSseSkill"` table.
pub(super) const SSE_SKILL_KEYS: &[&str] = &[
    "type",
    "endpoint",
    "description",
    "rule",
    "pick",
    "omit",
    "allowedDomains",
];

/// Keys of a `type = "interactiveSkill"` table.
pub(super) const INTERACTIVE_SKILL_KEYS: &[&str] = &["type", "description", "rule", "tools"];

/// The keys allowed in a skill table of the given `type`.
pub(super) fn skill_keys(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "mcpStdioSkill" => Some(STDIO_SKILL_KEYS),
        "mcpSseSkill" => Some(SSE_SKILL_KEYS),
        "interactiveSkill" => Some(INTERACTIVE_SKILL_KEYS),
        _ => None,
    }
}

/// `[experts."<key>".skills."<name>"]`, the union of every skill type's keys. `keys` has
/// already rejected keys that do not belong to the table's `type`, so serde errors keep their
/// exact spans (an internally tagged enum would buffer the table and lose them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSkill {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) description: Option<String>,
    pub(super) rule: Option<String>,
    pub(super) pick: Option<Vec<String>>,
    pub(super) omit: Option<Vec<String>>,
    pub(super) command: Option<String>,
    pub(super) package_name: Option<String>,
    pub(super) args: Option<Vec<String>>,
    pub(super) required_env: Option<Vec<String>>,
    pub(super) allowed_domains: Option<Vec<String>>,
    pub(super) lazy_init: Option<bool>,
    pub(super) endpoint: Option<String>,
    pub(super) tools: Option<BTreeMap<String, RawTool>>,
}

/// Keys of `[experts."<key>".skills."<name>".tools."<tool>"]`. `name` is not in Perstack's
/// schema, but its e2e configs write it (`name = "askUser"`); the table key is the tool name
/// and `name` is ignored, as zod strips it.
pub(super) const TOOL_KEYS: &[&str] = &["name", "description", "inputJsonSchema"];

/// One interactive tool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawTool {
    #[expect(dead_code, reason = "ignored: the table key is the name")]
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) input_json_schema: Option<String>,
}

#[cfg(test)]
mod tests {
    //! The key lists must be exactly the serde structs' fields, or `keys` and serde disagree.

    use serde::de::{self, Deserializer, Visitor};

    use super::*;

    /// The field names serde passes to `deserialize_struct` for `T`.
    fn fields_of<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
        struct Probe<'f>(&'f mut Vec<&'static str>);
        impl<'de> Deserializer<'de> for Probe<'_> {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("probe"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend_from_slice(fields);
                Err(de::Error::custom("probe"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut fields = Vec::new();
        let _ = T::deserialize(Probe(&mut fields));
        fields.sort_unstable();
        fields
    }

    fn sorted(keys: &[&'static str]) -> Vec<&'static str> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    #[test]
    fn key_lists_match_the_serde_structs() {
        assert_eq!(fields_of::<RawConfig>(), sorted(TOP_KEYS));
        assert_eq!(fields_of::<RawProvider>(), sorted(PROVIDER_KEYS));
        assert_eq!(fields_of::<RawExpert>(), sorted(EXPERT_KEYS));
        assert_eq!(fields_of::<RawTool>(), sorted(TOOL_KEYS));
        let all_skill_keys: Vec<_> =
            [STDIO_SKILL_KEYS, SSE_SKILL_KEYS, INTERACTIVE_SKILL_KEYS].concat();
        assert_eq!(fields_of::<RawSkill>(), sorted(&all_skill_keys));
    }
}
