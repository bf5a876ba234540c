//! The on-disk cache of registry answers, one directory per registry (named by a hash of its
//! base URL) under `$PERSTACK_REGISTRY_CACHE_DIR`, else `$XDG_CACHE_HOME/perstack/registry`,
//! else `~/.cache/perstack/registry`:
//!
//! | file | holds | written |
//! | --- | --- | --- |
//! | `versions/<key>.json` | the definition as the registry sent it | once (versions are write-once) |
//! | `tags/<key>.json` | `{version, fetchedAt}` | each time the tag is re-resolved |
//!
//! File names come from [`RegistryKey::file_name`] only (keys that passed the one name check).
//! A version file is never replaced: a second writer finds it there and keeps the first. The
//! cache is not trusted blindly: with a lockfile every definition read from it is checked
//! against its pinned digest by `resolve`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::RegistryError;
use super::key::RegistryKey;

/// Overrides the cache root (tests, CI, read-only homes).
pub const CACHE_DIR_ENV: &str = "PERSTACK_REGISTRY_CACHE_DIR";

/// The cache of one registry.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

/// Where a tag pointed when it was last resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagEntry {
    /// The version the tag selected.
    pub(crate) version: String,
    /// When, in epoch ms.
    pub(crate) fetched_at: u64,
}

impl Cache {
    /// The cache of the registry at `base_url`, under the root `env` names (see the module
    /// docs); `None` when no root can be found (no HOME): nothing is cached then.
    pub(crate) fn for_registry(
        base_url: &str,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Option<Cache> {
        let non_empty = |name: &str| env.get(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = non_empty(CACHE_DIR_ENV)
            .or_else(|| non_empty("XDG_CACHE_HOME").map(|d| d.join("perstack").join("registry")))
            .or_else(|| {
                non_empty("HOME").map(|h| h.join(".cache").join("perstack").join("registry"))
            })?;
        let id = hex::encode(&Sha256::digest(base_url.trim_end_matches('/').as_bytes())[..8]);
        Some(Cache { dir: root.join(id) })
    }

    /// The definition cached for `key` (a version key), if any.
    pub(crate) fn version(
        &self,
        key: &RegistryKey,
    ) -> Result<Option<Map<String, Value>>, RegistryError> {
        let path = self.dir.join("versions").join(key.file_name());
        let Some(text) = read(&path)? else {
            return Ok(None);
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            _ => Err(RegistryError::CorruptCache {
                path,
                message: "not a JSON object".into(),
            }),
        }
    }

    /// Keeps `definition` for `key` (a version key) unless a definition is already cached.
    pub(crate) fn put_version(
        &self,
        key: &RegistryKey,
        definition: &Map<String, Value>,
    ) -> Result<(), RegistryError> {
        let dir = self.dir.join("versions");
        let path = dir.join(key.file_name());
        let text = serde_json::to_string_pretty(definition).unwrap_or_default();
        let tmp = temp_write(&dir, &text)?;
        // A hard link fails when the target exists: the first writer's file stays.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(RegistryError::Cache { path, source }),
        }
    }

    /// Where `key` (a tag key) pointed when last resolved.
    pub(crate) fn tag(&self, key: &RegistryKey) -> Result<Option<TagEntry>, RegistryError> {
        let path = self.dir.join("tags").join(key.file_name());
        let Some(text) = read(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RegistryError::CorruptCache {
                path,
                message: e.to_string(),
            })
    }

    /// Records where `key` (a tag key) points now.
    pub(crate) fn put_tag(&self, key: &RegistryKey, entry: &TagEntry) -> Result<(), RegistryError> {
        let dir = self.dir.join("tags");
        let path = dir.join(key.file_name());
        let text = serde_json::to_string(entry).unwrap_or_default();
        let tmp = temp_write(&dir, &text)?;
        std::fs::rename(&tmp, &path).map_err(|source| RegistryError::Cache { path, source })
    }
}

fn read(path: &Path) -> Result<Option<String>, RegistryError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RegistryError::Cache {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `text` in a new temporary file of `dir` (created when missing); its path.
fn temp_write(dir: &Path, text: &str) -> Result<PathBuf, RegistryError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| RegistryError::Cache { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, text).map_err(err(&tmp))?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn cache(dir: &Path) -> Cache {
        let env = BTreeMap::from([(CACHE_DIR_ENV.to_string(), dir.display().to_string())]);
        Cache::for_registry("http://127.0.0.1:1", &env).unwrap()
    }

    #[test]
    fn versions_are_written_once_and_tags_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path());
        let k = RegistryKey::parse("@o/x@1.0.0").unwrap();
        assert!(c.version(&k).unwrap().is_none());
        let first = json!({"instruction": "first"}).as_object().unwrap().clone();
        let second = json!({"instruction": "second"})
            .as_object()
            .unwrap()
            .clone();
        c.put_version(&k, &first).unwrap();
        c.put_version(&k, &second).unwrap();
        assert_eq!(c.version(&k).unwrap().unwrap(), first);

        let t = RegistryKey::parse("@o/x@stable").unwrap();
        let e1 = TagEntry {
            version: "1.0.0".into(),
            fetched_at: 1,
        };
        let e2 = TagEntry {
            version: "2.0.0".into(),
            fetched_at: 2,
        };
        c.put_tag(&t, &e1).unwrap();
        c.put_tag(&t, &e2).unwrap();
        assert_eq!(c.tag(&t).unwrap().unwrap(), e2);
        // Every file sits two levels under the registry's directory, whatever the key.
        for sub in ["versions", "tags"] {
            for entry in std::fs::read_dir(c.dir.join(sub)).unwrap() {
                assert!(
                    entry
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("@o%2Fx@")
                );
            }
        }
    }

    #[test]
    fn registries_get_separate_directories() {
        let env = BTreeMap::from([(CACHE_DIR_ENV.to_string(), "/c".to_string())]);
        let a = Cache::for_registry("https://api.perstack.ai", &env).unwrap();
        let b = Cache::for_registry("http://127.0.0.1:9", &env).unwrap();
        assert_ne!(a.dir, b.dir);
        assert!(a.dir.starts_with("/c"));
    }
}
