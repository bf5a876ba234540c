//! From keys to definitions: pins first (exact version, digest checked), then versions
//! (cache, else registry), then tags (re-resolved past their expiry, the cached resolution used
//! with a warning when the registry is down). Delegates are followed transitively; a cycle
//! among registry Experts or a delegate that cannot be resolved fails before anything runs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use futures::StreamExt;
use serde_json::{Map, Value};

use super::cache::TagEntry;
use super::definition::{expert_of, to_expert};
use super::digest::definition_digest;
use super::key::{RegistryKey, Selector};
use super::{Registry, RegistryError};
use crate::config::PerstackConfig;
use crate::config::lockfile::RegistryPin;
use crate::schema::Expert;

/// A registry Expert as resolved: the key the configuration wrote and its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The key as written (`@org/x`, `@org/x@stable`, `@org/x@1.0.0`).
    pub requested: String,
    /// The version it resolved to and that version's digest.
    pub pin: RegistryPin,
}

/// Registry requests one resolution wave sends at once: enough to hide round trips for a
/// coordinator with many registry delegates, few enough not to flood the registry.
const FETCH_CONCURRENCY: usize = 8;

impl Registry {
    /// Adds to `config` every registry Expert reachable from `roots` (Expert keys: local ones
    /// are followed through their delegates, scoped ones not in the file are resolved), and
    /// returns what was resolved. With `pins` (the lockfile's), a pinned key resolves to exactly
    /// its pinned version and a definition with another digest is refused; with `locked`, an
    /// unpinned registry key is refused.
    pub async fn resolve(
        &self,
        config: &mut PerstackConfig,
        roots: &[String],
        pins: &BTreeMap<String, RegistryPin>,
        locked: bool,
    ) -> Result<Vec<Resolved>, RegistryError> {
        // Breadth-first, one wave at a time: the registry keys of a wave are fetched
        // concurrently (at most FETCH_CONCURRENCY at once), then their delegates form the
        // next wave. Results are taken in wave order, so the error reported is the same
        // whatever finished first.
        let mut wave: Vec<(String, Option<String>)> =
            roots.iter().map(|r| (r.clone(), None)).collect();
        let mut seen = BTreeSet::new();
        let mut resolved = Vec::new();
        let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
        while !wave.is_empty() {
            let mut next = Vec::new();
            let mut remote = Vec::new();
            let mut queue: VecDeque<_> = std::mem::take(&mut wave).into();
            while let Some((key, parent)) = queue.pop_front() {
                if !seen.insert(key.clone()) {
                    continue;
                }
                if let Some(local) = config.experts.get(&key) {
                    // Local Experts cost nothing: follow them within this wave.
                    queue.extend(
                        local
                            .delegates
                            .iter()
                            .map(|d| (d.clone(), Some(key.clone()))),
                    );
                } else if RegistryKey::is_registry_key(&key) {
                    remote.push((key, parent));
                }
                // An unscoped key that is not in the file is the configuration's to report
                // (with "did you mean").
            }
            let found: Vec<_> = futures::stream::iter(
                remote
                    .iter()
                    .map(|(key, _)| self.resolve_one(key, pins, locked)),
            )
            .buffered(FETCH_CONCURRENCY)
            .collect()
            .await;
            for ((key, parent), result) in remote.into_iter().zip(found) {
                let (expert, pin) = result.map_err(|e| match parent {
                    Some(expert) => RegistryError::Delegate {
                        expert,
                        delegate: key.clone(),
                        source: Box::new(e),
                    },
                    None => e,
                })?;
                graph.insert(key.clone(), expert.delegates.clone());
                next.extend(
                    expert
                        .delegates
                        .iter()
                        .map(|d| (d.clone(), Some(key.clone()))),
                );
                config.add_expert(&key, expert);
                resolved.push(Resolved {
                    requested: key,
                    pin,
                });
            }
            wave = next;
        }
        if let Some(chain) = find_cycle(&graph) {
            return Err(RegistryError::Cycle { chain });
        }
        Ok(resolved)
    }

    /// One registry key: its Expert (keyed `requested`) and pin.
    async fn resolve_one(
        &self,
        requested: &str,
        pins: &BTreeMap<String, RegistryPin>,
        locked: bool,
    ) -> Result<(Expert, RegistryPin), RegistryError> {
        let asked = RegistryKey::parse(requested)?;
        if let Some(pin) = pins.get(requested) {
            let exact = asked.with_version(&pin.version)?;
            let (raw, origin) = match self.cached_version(&exact)? {
                Some(raw) => (raw, "cache"),
                None => (self.fetch(&exact).await?, "registry"),
            };
            let actual = definition_digest(&raw);
            if actual != pin.digest {
                return Err(RegistryError::DigestMismatch {
                    expert: requested.to_owned(),
                    key: exact.to_string(),
                    origin,
                    expected: pin.digest.clone(),
                    actual,
                });
            }
            let expert = to_expert(&exact, requested, &raw)?;
            self.keep_version(&exact, &raw)?;
            return Ok((expert, pin.clone()));
        }
        if locked {
            return Err(RegistryError::NotPinned {
                key: requested.to_owned(),
            });
        }
        let raw = match asked.selector() {
            Selector::Version(_) => match self.cached_version(&asked)? {
                Some(raw) => raw,
                None => {
                    let raw = self.fetch(&asked).await?;
                    to_expert(&asked, requested, &raw)?;
                    self.keep_version(&asked, &raw)?;
                    raw
                }
            },
            Selector::Tag(_) => self.resolve_tag(&asked, requested).await?,
        };
        let expert = to_expert(&asked, requested, &raw)?;
        let exact = asked.with_version(&expert.version)?;
        let pin = RegistryPin {
            key: exact.to_string(),
            version: expert.version.clone(),
            digest: definition_digest(&raw),
        };
        Ok((expert, pin))
    }

    /// The definition `tag` selects now: the cached resolution while it is fresh, else the
    /// registry's answer, else (registry down) the cached resolution however old.
    async fn resolve_tag(
        &self,
        tag: &RegistryKey,
        requested: &str,
    ) -> Result<Map<String, Value>, RegistryError> {
        let now = crate::actor::context::now_ms();
        let cached = match &self.cache {
            Some(c) => c.tag(tag)?,
            None => None,
        };
        let ttl = u64::try_from(self.tag_ttl.as_millis()).unwrap_or(u64::MAX);
        if let Some(entry) = &cached
            && now.saturating_sub(entry.fetched_at) < ttl
            && let Some(raw) = self.cached_version(&tag.with_version(&entry.version)?)?
        {
            return Ok(raw);
        }
        match self.fetch(tag).await {
            Ok(raw) => {
                let expert = to_expert(tag, requested, &raw)?;
                let exact = tag.with_version(&expert.version)?;
                if let Some(old) = self.cached_version(&exact)?
                    && definition_digest(&old) != definition_digest(&raw)
                {
                    return Err(RegistryError::ImmutableChanged {
                        key: exact.to_string(),
                    });
                }
                self.keep_version(&exact, &raw)?;
                if let Some(c) = &self.cache {
                    c.put_tag(
                        tag,
                        &TagEntry {
                            version: expert.version,
                            fetched_at: now,
                        },
                    )?;
                }
                Ok(raw)
            }
            Err(e) if e.is_outage() => {
                let fallback = match &cached {
                    Some(entry) => self.cached_version(&tag.with_version(&entry.version)?)?,
                    None => None,
                };
                match (fallback, cached) {
                    (Some(raw), Some(entry)) => {
                        tracing::warn!(
                            "{e}; using the cached resolution of {tag} (version {}, resolved at {} ms since the epoch)",
                            entry.version,
                            entry.fetched_at
                        );
                        Ok(raw)
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn cached_version(
        &self,
        key: &RegistryKey,
    ) -> Result<Option<Map<String, Value>>, RegistryError> {
        match &self.cache {
            Some(c) => c.version(key),
            None => Ok(None),
        }
    }

    fn keep_version(
        &self,
        key: &RegistryKey,
        raw: &Map<String, Value>,
    ) -> Result<(), RegistryError> {
        match &self.cache {
            Some(c) => c.put_version(key, raw),
            None => Ok(()),
        }
    }

    /// `GET` the definition of `key` from the registry. A version its publisher deprecated
    /// or disabled still runs (its definition has not changed), with a warning.
    async fn fetch(&self, key: &RegistryKey) -> Result<Map<String, Value>, RegistryError> {
        let body = self.client.get(key).await?;
        let expert = expert_of(&body)
            .cloned()
            .ok_or_else(|| RegistryError::Malformed {
                key: key.to_string(),
                message: "no data.expert object in the answer".into(),
            })?;
        if let Some(status @ ("deprecated" | "disabled")) =
            expert.get("status").and_then(Value::as_str)
        {
            tracing::warn!("registry expert {key} is {status} by its publisher");
        }
        Ok(expert)
    }
}

/// A cycle in `graph` (edges to keys outside it are ignored), as the keys around it with the
/// first repeated at the end.
fn find_cycle(graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, Vec<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| p == node).unwrap_or(0);
                let mut chain = path[start..].to_vec();
                chain.push(node.to_owned());
                return Some(chain);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if graph.contains_key(next)
                && let Some(chain) = visit(next, graph, marks, path)
            {
                return Some(chain);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(chain) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(chain);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolved_registry_expert_answers_the_files_missing_delegate() {
        let mut cfg = crate::config::parse(
            "[experts.\"coordinator\"]\ninstruction = \"x\"\ndelegates = [\"@org/helper\", \"gone\"]\n",
            std::path::Path::new("/p/perstack.toml"),
        )
        .unwrap();
        assert!(cfg.check_runnable("coordinator").is_err());
        let raw = serde_json::json!({"key": "@org/helper@1.0.0", "name": "@org/helper",
            "version": "1.0.0", "minRuntimeVersion": "v1.0", "instruction": "Help.",
            "skills": {"@perstack/base": {"type": "mcpStdioSkill", "command": "npx",
                "packageName": "@perstack/base"}}, "delegates": []});
        let asked = RegistryKey::parse("@org/helper").unwrap();
        let expert = to_expert(&asked, "@org/helper", raw.as_object().unwrap()).unwrap();
        cfg.add_expert("@org/helper", expert);
        // The registry delegate is answered; the unscoped one is still reported.
        let err = cfg.check_runnable("coordinator").unwrap_err().to_string();
        assert!(
            err.contains("gone") && !err.contains("@org/helper"),
            "{err}"
        );
    }

    #[test]
    fn cycles_are_found_with_their_chain() {
        let g = BTreeMap::from([
            ("@o/a".to_string(), vec!["@o/b".to_string()]),
            (
                "@o/b".to_string(),
                vec!["@o/c".to_string(), "@o/x".to_string()],
            ),
            ("@o/c".to_string(), vec!["@o/a".to_string()]),
        ]);
        assert_eq!(
            find_cycle(&g).unwrap(),
            vec!["@o/a", "@o/b", "@o/c", "@o/a"]
        );
        let acyclic = BTreeMap::from([
            ("@o/a".to_string(), vec!["@o/b".to_string()]),
            ("@o/b".to_string(), vec![]),
        ]);
        assert!(find_cycle(&acyclic).is_none());
    }
}
