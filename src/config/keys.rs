//! The unknown-key check: walks the spanned document before serde sees it and rejects any key
//! Perstack does not define, with its position and a "did you mean". Perstack's zod schemas
//! silently strip such keys, so a typo (`instructon`) would quietly change behaviour there.
//!
//! Exceptions, accepted so that Perstack's own configs load unchanged:
//! - `envPath` inside `[provider]` (written after the header in Perstack's e2e configs) is
//!   accepted with a warning and ignored, as Perstack ignores it;
//! - `name` inside an interactive tool table is accepted and ignored.
//!
//! `[provider.setting]` keys depend on `providerName` and are checked by `provider`.

use toml::de::{DeTable, DeValue};

use super::doc::{Doc, KeyPath, entries_in_file_order, get};
use super::error::{ConfigError, did_you_mean};
use super::raw::{EXPERT_KEYS, PROVIDER_KEYS, SKILL_TYPES, TOOL_KEYS, TOP_KEYS, skill_keys};

/// Rejects the first unknown key, in file order within each table.
pub(super) fn check(doc: &Doc<'_>) -> Result<(), ConfigError> {
    let root = doc.root();
    let top = KeyPath::root();
    check_table(doc, root, &top, TOP_KEYS)?;

    if let Some(provider) = table(root, "provider") {
        let path = top.field("provider");
        check_table(doc, provider, &path, PROVIDER_KEYS)?;
        if get(provider, "envPath").is_some() {
            let at = doc.at(&path.field("envPath"));
            tracing::warn!(
                "{at}: `provider.envPath` is ignored, as Perstack ignores it: a key written after \
                 the [provider] header belongs to that table; move `envPath` above [provider] to \
                 choose the env files"
            );
        }
    }

    if let Some(experts) = table(root, "experts") {
        let experts_path = top.field("experts");
        for (key, expert) in entries_in_file_order(experts) {
            let DeValue::Table(expert) = expert.get_ref() else {
                continue;
            };
            let path = experts_path.key(key.get_ref());
            check_table(doc, expert, &path, EXPERT_KEYS)?;
            if let Some(skills) = table(expert, "skills") {
                check_skills(doc, skills, &path.field("skills"))?;
            }
        }
    }
    Ok(())
}

fn check_skills(doc: &Doc<'_>, skills: &DeTable<'_>, path: &KeyPath) -> Result<(), ConfigError> {
    for (name, skill) in entries_in_file_order(skills) {
        let DeValue::Table(skill) = skill.get_ref() else {
            continue;
        };
        let path = path.key(name.get_ref());
        let Some(kind) = get(skill, "type") else {
            return Err(ConfigError::MissingKey {
                at: doc.at(&path),
                key: path.field("type").to_string(),
                hint: format!(
                    "every skill needs a type; add type = \"mcpStdioSkill\" (a local MCP server), \
                     \"mcpSseSkill\" (a remote one) or \"interactiveSkill\" to [{path}]."
                ),
            });
        };
        let Some(kind) = kind.get_ref().as_str() else {
            // Not a string: serde reports the type error with its span.
            continue;
        };
        let Some(allowed) = skill_keys(kind) else {
            let hint = did_you_mean(kind, SKILL_TYPES.iter().copied())
                .map(|s| format!(" Did you mean \"{s}\"?"))
                .unwrap_or_default();
            return Err(ConfigError::InvalidValue {
                at: doc.at(&path.field("type")),
                key: path.field("type").to_string(),
                message: format!(
                    "unknown skill type \"{kind}\"; use \"mcpStdioSkill\", \"mcpSseSkill\" or \
                     \"interactiveSkill\".{hint}"
                ),
            });
        };
        check_table(doc, skill, &path, allowed)?;
        if kind == "interactiveSkill"
            && let Some(tools) = table(skill, "tools")
        {
            let tools_path = path.field("tools");
            for (tool_name, tool) in entries_in_file_order(tools) {
                let DeValue::Table(tool) = tool.get_ref() else {
                    continue;
                };
                check_table(doc, tool, &tools_path.key(tool_name.get_ref()), TOOL_KEYS)?;
            }
        }
    }
    Ok(())
}

/// Rejects the first key of `table` (in file order) that is not in `allowed`.
pub(super) fn check_table(
    doc: &Doc<'_>,
    table: &DeTable<'_>,
    path: &KeyPath,
    allowed: &[&str],
) -> Result<(), ConfigError> {
    for (key, _) in entries_in_file_order(table) {
        let key_str: &str = key.get_ref();
        if allowed.contains(&key_str) {
            continue;
        }
        return Err(ConfigError::UnknownKey {
            at: doc.location(Some(key.span().start)),
            key: path.field(key_str).to_string(),
            suggestion: did_you_mean(key_str, allowed.iter().copied()),
            expected: allowed.iter().map(|k| (*k).to_owned()).collect(),
        });
    }
    Ok(())
}

/// The sub-table `name` of `table`, when it is a table.
fn table<'t, 'a>(table: &'t DeTable<'a>, name: &str) -> Option<&'t DeTable<'a>> {
    match get(table, name)?.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => None,
    }
}
