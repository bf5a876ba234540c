//! `perstack.lock`: every Expert with the tool definitions of its skills, so runs can offer
//! tools to the model without starting any skill process first (Perstack's format, REFERENCE
//! §3.9: TOML with `version = "1"`, `generatedAt`, `configPath`, `experts.<key>`).
//!
//! JSON Schemas are stored as TOML tables. TOML has no `null`: `null` members of a schema are
//! left out when writing (they carry no constraint a model needs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::{Expert, Skill};
use crate::skill::ToolDefinition;

/// The lockfile's name, next to `perstack.toml`.
pub const LOCKFILE_NAME: &str = "perstack.lock";

/// A parsed `perstack.lock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lockfile {
    /// Always `"1"`.
    pub version: String,
    /// Epoch ms.
    pub generated_at: u64,
    /// The configuration's file name.
    pub config_path: String,
    /// Every Expert, by key.
    #[serde(default)]
    pub experts: BTreeMap<String, LockedExpert>,
    /// Beyond Perstack (whose lockfile reader drops keys it does not know): for every
    /// registry Expert reachable from the local ones, by the key the configuration wrote, the
    /// version it resolved to and the digest of that version's definition. Runs use exactly
    /// these versions and refuse a definition whose digest differs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_pins: BTreeMap<String, RegistryPin>,
}

/// One registry Expert pinned by `perstack install`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryPin {
    /// The resolved key, `@org/name@<version>`.
    pub key: String,
    /// The resolved version.
    pub version: String,
    /// `sha256:<hex>` of the RFC 8785 canonical JSON of the definition (key, name, version,
    /// minRuntimeVersion, description, instruction, skills, delegates).
    pub digest: String,
}

/// One Expert of the lockfile.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedExpert {
    /// Key.
    pub key: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: Option<String>,
    /// Instruction.
    pub instruction: String,
    /// Skills as configured.
    #[serde(default)]
    pub skills: BTreeMap<String, Skill>,
    /// Delegates.
    #[serde(default)]
    pub delegates: Vec<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Every tool of every MCP skill (before pick/omit, which apply at run time).
    #[serde(default)]
    pub tool_definitions: Vec<ToolDefinition>,
}

/// Why a lockfile could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockfileError {
    /// Reading or writing failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid lockfile.
    #[error("invalid lockfile {path}: {message}; run `perstack install` again")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Lockfile {
    /// A lockfile for `experts` with their tool definitions.
    pub fn new(
        config_path: &Path,
        experts: &BTreeMap<String, Expert>,
        tools: BTreeMap<String, Vec<ToolDefinition>>,
        now: u64,
    ) -> Self {
        let experts = experts
            .iter()
            .map(|(key, e)| {
                let tool_definitions = tools.get(key).cloned().unwrap_or_default();
                (
                    key.clone(),
                    LockedExpert {
                        key: e.key.clone(),
                        name: e.name.clone(),
                        version: e.version.clone(),
                        description: e.description.clone(),
                        instruction: e.instruction.clone(),
                        skills: e.skills.clone(),
                        delegates: e.delegates.clone(),
                        tags: e.tags.clone(),
                        tool_definitions,
                    },
                )
            })
            .collect();
        Lockfile {
            version: "1".into(),
            generated_at: now,
            config_path: config_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            experts,
            registry_pins: BTreeMap::new(),
        }
    }

    /// The lockfile next to `config`, if there is one.
    pub fn find(config: &Path) -> Option<PathBuf> {
        let p = config
            .parent()
            .unwrap_or(Path::new("."))
            .join(LOCKFILE_NAME);
        p.is_file().then_some(p)
    }

    /// Read a lockfile.
    pub fn load(path: &Path) -> Result<Self, LockfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| LockfileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let lock: Lockfile = toml::from_str(&text).map_err(|e| LockfileError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if lock.version != "1" {
            return Err(LockfileError::Invalid {
                path: path.to_owned(),
                message: format!("unsupported version {:?}", lock.version),
            });
        }
        Ok(lock)
    }

    /// Write atomically (temp file, rename).
    pub fn write(&self, path: &Path) -> Result<(), LockfileError> {
        let mut clean = self.clone();
        for e in clean.experts.values_mut() {
            for t in &mut e.tool_definitions {
                strip_nulls(&mut t.input_schema);
            }
        }
        let text = toml::to_string(&clean).map_err(|e| LockfileError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("lock.tmp");
        std::fs::write(&tmp, text).map_err(|source| LockfileError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| LockfileError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The tool definitions of `skill` of `expert`, when the lockfile has that Expert.
    pub fn tools_of(&self, expert: &str, skill: &str) -> Option<Vec<ToolDefinition>> {
        let e = self.experts.get(expert)?;
        if !e.skills.contains_key(skill) {
            return None;
        }
        Some(
            e.tool_definitions
                .iter()
                .filter(|t| t.skill_name == skill)
                .cloned()
                .collect(),
        )
    }
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => {
            a.retain(|x| !x.is_null());
            a.iter_mut().for_each(strip_nulls);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_lockfile_round_trips_through_toml_in_perstacks_shape() {
        let cfg = crate::config::parse(
            "[experts.\"a\"]\ninstruction = \"x\"\n",
            Path::new("/p/perstack.toml"),
        )
        .unwrap();
        let tools = BTreeMap::from([(
            "a".to_string(),
            vec![ToolDefinition {
                skill_name: "@perstack/base".into(),
                name: "healthCheck".into(),
                description: Some("d".into()),
                input_schema: json!({"type":"object","properties":{"x":{"type":"string","default":null}}}),
            }],
        )]);
        let lock = Lockfile::new(&cfg.path, &cfg.experts, tools, 42);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCKFILE_NAME);
        lock.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for needle in [
            "version = \"1\"",
            "generatedAt = 42",
            "configPath = \"perstack.toml\"",
            "inputSchema",
            "skillName",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        let back = Lockfile::load(&path).unwrap();
        assert_eq!(
            back.tools_of("a", "@perstack/base").unwrap()[0].name,
            "healthCheck"
        );
        assert!(back.tools_of("a", "other").is_none());
    }
}
