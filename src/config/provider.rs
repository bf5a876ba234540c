//! `[provider]`: the provider names, their allowed settings, and the check of
//! `[provider.setting]` against them (Perstack's per-provider zod schemas).

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::doc::{Doc, KeyPath};
use super::error::{ConfigError, did_you_mean};
use super::raw::RawProvider;

/// An LLM provider, as `providerName` and `--provider` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderName {
    /// `anthropic` (Perstack's default).
    Anthropic,
    /// `google` (Gemini API).
    Google,
    /// `openai`.
    OpenAi,
    /// `ollama`.
    Ollama,
    /// `azure-openai`.
    AzureOpenAi,
    /// `amazon-bedrock`.
    AmazonBedrock,
    /// `google-vertex`.
    GoogleVertex,
    /// `deepseek`.
    DeepSeek,
    /// `scripted`: this engine's extension, a model that replays a script file (setting
    /// `script`) instead of calling an API. Not a Perstack provider.
    Scripted,
}

impl ProviderName {
    /// Every provider, Perstack's eight first.
    pub const ALL: [ProviderName; 9] = [
        ProviderName::Anthropic,
        ProviderName::Google,
        ProviderName::OpenAi,
        ProviderName::Ollama,
        ProviderName::AzureOpenAi,
        ProviderName::AmazonBedrock,
        ProviderName::GoogleVertex,
        ProviderName::DeepSeek,
        ProviderName::Scripted,
    ];

    /// The name as written in `perstack.toml` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Anthropic => "anthropic",
            ProviderName::Google => "google",
            ProviderName::OpenAi => "openai",
            ProviderName::Ollama => "ollama",
            ProviderName::AzureOpenAi => "azure-openai",
            ProviderName::AmazonBedrock => "amazon-bedrock",
            ProviderName::GoogleVertex => "google-vertex",
            ProviderName::DeepSeek => "deepseek",
            ProviderName::Scripted => "scripted",
        }
    }

    /// The keys `[provider.setting]` accepts for this provider.
    pub fn setting_keys(self) -> &'static [&'static str] {
        match self {
            ProviderName::Anthropic | ProviderName::Google | ProviderName::DeepSeek => {
                &["baseUrl", "headers"]
            }
            ProviderName::OpenAi => &["baseUrl", "organization", "project", "name", "headers"],
            ProviderName::Ollama => &["baseUrl", "headers"],
            ProviderName::AzureOpenAi => &[
                "resourceName",
                "apiVersion",
                "baseUrl",
                "headers",
                "useDeploymentBasedUrls",
            ],
            ProviderName::AmazonBedrock => &["region", "baseUrl"],
            ProviderName::GoogleVertex => &["project", "location", "baseUrl", "headers"],
            ProviderName::Scripted => &["script"],
        }
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderName {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        ProviderName::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                UnknownName::new("provider", s, ProviderName::ALL.map(ProviderName::as_str))
            })
    }
}

/// A name that is not one of a fixed set (a provider or runtime name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} \"{given}\"; valid names are {}{}", valid.join(", "), hint(suggestion.as_deref()))]
pub struct UnknownName {
    /// What was being named: `provider` or `runtime`.
    pub kind: &'static str,
    /// The name given.
    pub given: String,
    /// The valid names.
    pub valid: Vec<&'static str>,
    /// The closest valid name, when close.
    pub suggestion: Option<String>,
}

impl UnknownName {
    pub(super) fn new(
        kind: &'static str,
        given: &str,
        valid: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        let valid: Vec<_> = valid.into_iter().collect();
        let suggestion = did_you_mean(given, valid.iter().copied());
        UnknownName {
            kind,
            given: given.to_owned(),
            valid,
            suggestion,
        }
    }
}

fn hint(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default()
}

/// `[provider]` after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderTable {
    /// Which provider.
    pub provider_name: ProviderName,
    /// `[provider.setting]`, holding only keys valid for the provider, with checked types:
    /// strings, `headers` as a string map, `useDeploymentBasedUrls` as a bool. Empty when the
    /// table is absent. `baseUrl` is https except for ollama. The scripted provider's `script`
    /// is kept as written; resolve it with `PerstackConfig::resolve_relative`.
    pub setting: Map<String, Value>,
}

impl ProviderTable {
    /// A string setting, e.g. `baseUrl` or `script`.
    pub fn setting_str(&self, key: &str) -> Option<&str> {
        self.setting.get(key).and_then(Value::as_str)
    }
}

/// Checks `[provider]` against the provider's schema.
pub(super) fn validate(raw: RawProvider, doc: &Doc<'_>) -> Result<ProviderTable, ConfigError> {
    let path = KeyPath::root().field("provider");
    let name_path = path.field("providerName");
    let Some(name) = raw.provider_name else {
        return Err(ConfigError::MissingKey {
            at: doc.at(&path),
            key: name_path.to_string(),
            hint: format!(
                "add providerName = \"anthropic\" (or one of {}) to [provider].",
                ProviderName::ALL.map(ProviderName::as_str).join(", ")
            ),
        });
    };
    let provider_name = name
        .parse::<ProviderName>()
        .map_err(|e| ConfigError::InvalidValue {
            at: doc.at(&name_path),
            key: name_path.to_string(),
            message: format!("{e}."),
        })?;

    let setting_path = path.field("setting");
    let allowed = provider_name.setting_keys();
    let mut setting = Map::new();
    let mut entries: Vec<_> = raw.setting.unwrap_or_default().into_iter().collect();
    entries.sort_by_key(|(k, _)| doc.at(&setting_path.field(k)).line);
    for (key, value) in entries {
        let key_path = setting_path.field(&key);
        if !allowed.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey {
                at: doc.at(&key_path),
                key: key_path.to_string(),
                suggestion: did_you_mean(&key, allowed.iter().copied()),
                expected: allowed.iter().map(|k| (*k).to_owned()).collect(),
            });
        }
        let invalid = |message: String| ConfigError::InvalidValue {
            at: doc.at(&key_path),
            key: key_path.to_string(),
            message,
        };
        let json = match (key.as_str(), value) {
            ("headers", toml::Value::Table(headers)) => {
                let mut map = Map::new();
                for (name, value) in headers {
                    let toml::Value::String(value) = value else {
                        let header_path = key_path.key(&name);
                        return Err(ConfigError::InvalidValue {
                            at: doc.at(&header_path),
                            key: header_path.to_string(),
                            message: format!(
                                "header values must be strings, not {}; quote the value.",
                                value.type_str()
                            ),
                        });
                    };
                    map.insert(name, Value::String(value));
                }
                Value::Object(map)
            }
            ("headers", other) => {
                return Err(invalid(format!(
                    "headers must be a table of strings, not {}; write [provider.setting.headers] \
                     with one `Name = \"value\"` per line.",
                    other.type_str()
                )));
            }
            ("useDeploymentBasedUrls", toml::Value::Boolean(b)) => Value::Bool(b),
            ("useDeploymentBasedUrls", other) => {
                return Err(invalid(format!(
                    "useDeploymentBasedUrls must be true or false, not {}.",
                    other.type_str()
                )));
            }
            ("baseUrl", toml::Value::String(url)) => {
                if provider_name != ProviderName::Ollama && !super::names::is_https_url(&url) {
                    return Err(invalid(format!(
                        "URL must use HTTPS, got \"{url}\"; use an https:// URL (only ollama \
                         accepts http here; an http base URL can also be given through the \
                         provider's *_BASE_URL environment variable)."
                    )));
                }
                Value::String(url)
            }
            (_, toml::Value::String(s)) => Value::String(s),
            (_, other) => {
                return Err(invalid(format!(
                    "{key} must be a string, not {}.",
                    other.type_str()
                )));
            }
        };
        setting.insert(key, json);
    }
    Ok(ProviderTable {
        provider_name,
        setting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip_and_unknown_names_list_the_valid_ones() {
        for p in ProviderName::ALL {
            assert_eq!(p.as_str().parse::<ProviderName>(), Ok(p));
        }
        let err = "opnai".parse::<ProviderName>().unwrap_err().to_string();
        assert!(err.contains("unknown provider \"opnai\""), "{err}");
        assert!(
            err.contains("anthropic, google, openai, ollama, azure-openai"),
            "{err}"
        );
        assert!(err.contains("did you mean \"openai\"?"), "{err}");
    }
}
