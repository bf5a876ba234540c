//! Registry keys (`@org/name`, `@org/name@1.2.3`, `@org/name@stable`): the one name check.
//!
//! Every string that reaches a URL path or a cache file name goes through
//! [`RegistryKey::parse`] first, whether it came from the command line, a `delegates` list or a
//! registry's answer. It refuses anything outside Perstack's key pattern (lowercase scoped name,
//! semver or tag), and on top of it `..`, so that a key can never name a path outside the cache
//! directory, hold a NUL or a second `/`, or split the URL path.

use std::fmt;

use super::RegistryError;
use crate::config::names;

/// A scoped registry key with what it selects: a version or a tag (`latest` when neither).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RegistryKey {
    /// `@org/name`.
    name: String,
    selector: Selector,
    /// Written without a version or tag: the request names only the Expert, as Perstack's
    /// client sends it, and the registry answers with `latest`.
    implicit_latest: bool,
}

/// What a key selects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Selector {
    /// A write-once semver version.
    Version(String),
    /// A mutable tag.
    Tag(String),
}

/// The tag a key without version or tag selects.
pub(crate) const LATEST: &str = "latest";

impl RegistryKey {
    /// Whether `key` is meant for the registry (scoped: `@org/...`). Unscoped keys are local.
    pub(crate) fn is_registry_key(key: &str) -> bool {
        key.starts_with('@')
    }

    /// Parses and checks `key`. The one place a key is validated.
    pub(crate) fn parse(key: &str) -> Result<RegistryKey, RegistryError> {
        let bad = |reason: &str| RegistryError::InvalidKey {
            key: key.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if key.contains("..") || key.contains('\0') || key.contains('\\') {
            return Err(bad("it contains \"..\", a backslash or a NUL"));
        }
        if !key.starts_with('@') {
            return Err(bad("registry keys are scoped: @org/name"));
        }
        if !names::is_expert_key(key) {
            return Err(bad(
                "expected @org/name, @org/name@<semver> or @org/name@<tag> in lowercase letters, digits, '-' and '_'",
            ));
        }
        let (name, selector) = match key[1..].find('@') {
            Some(at) => {
                let (name, rest) = key.split_at(at + 1);
                let sel = &rest[1..];
                let selector = if names::is_semver(sel) {
                    Selector::Version(sel.to_owned())
                } else if names::is_tag(sel) {
                    Selector::Tag(sel.to_owned())
                } else {
                    return Err(bad(
                        "the part after the name is neither a version nor a tag",
                    ));
                };
                (name, selector)
            }
            None => (key, Selector::Tag(LATEST.to_owned())),
        };
        let implicit_latest = name.len() == key.len();
        if !names::is_expert_name(name) {
            return Err(bad("the name must be @org/name without dots"));
        }
        Ok(RegistryKey {
            name: name.to_owned(),
            selector,
            implicit_latest,
        })
    }

    /// This name at `version`; `version` must be semver.
    pub(crate) fn with_version(&self, version: &str) -> Result<RegistryKey, RegistryError> {
        RegistryKey::parse(&format!("{}@{version}", self.name))
    }

    /// `@org/name`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The version or tag.
    pub(crate) fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The version, when the key names one.
    pub(crate) fn version(&self) -> Option<&str> {
        match &self.selector {
            Selector::Version(v) => Some(v),
            Selector::Tag(_) => None,
        }
    }

    /// The key as written, as one URL path segment, as `encodeURIComponent` writes it
    /// (`%40org%2Fname%401.0.0`; `%40org%2Fname` for a key without version or tag).
    pub(crate) fn path_segment(&self) -> String {
        let written = if self.implicit_latest {
            self.name.clone()
        } else {
            self.to_string()
        };
        let mut out = String::new();
        for c in written.chars() {
            match c {
                '@' => out.push_str("%40"),
                '/' => out.push_str("%2F"),
                '+' => out.push_str("%2B"),
                c => out.push(c),
            }
        }
        out
    }

    /// The cache file name of this key (`@org%2Fname@1.0.0.json`): the key with its one `/`
    /// escaped, so the file sits directly in its cache directory.
    pub(crate) fn file_name(&self) -> String {
        format!("{}.json", self.to_string().replace('/', "%2F"))
    }
}

impl fmt::Display for RegistryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Version(v) | Selector::Tag(v) => write!(f, "{}@{v}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_select_a_version_a_tag_or_latest() {
        let k = RegistryKey::parse("@org/x@1.2.3").unwrap();
        assert_eq!(k.name(), "@org/x");
        assert_eq!(k.version(), Some("1.2.3"));
        assert_eq!(k.path_segment(), "%40org%2Fx%401.2.3");
        assert_eq!(k.file_name(), "@org%2Fx@1.2.3.json");
        let t = RegistryKey::parse("@org/x@stable").unwrap();
        assert_eq!(t.selector(), &Selector::Tag("stable".into()));
        let l = RegistryKey::parse("@org/x").unwrap();
        assert_eq!(l.to_string(), "@org/x@latest");
        assert_eq!(l.path_segment(), "%40org%2Fx");
        assert_eq!(l.file_name(), "@org%2Fx@latest.json");
        assert_eq!(
            RegistryKey::parse("@org/x@1.0.0+b.1")
                .unwrap()
                .path_segment(),
            "%40org%2Fx%401.0.0%2Bb.1"
        );
    }

    #[test]
    fn hostile_keys_are_refused_by_the_one_check() {
        for bad in [
            "@org/../../etc/passwd",
            "@org/x@1.0.0/../../y",
            "@org/x/y",
            "@org/x@1.0.0-a..b",
            "@org/x\0",
            "@org\\x",
            "@org/X",
            "@org/a.b",
            "plain",
            "@org/x@",
            "@org/x@Stable",
            "",
            "@/x",
        ] {
            assert!(RegistryKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RegistryKey::parse(&format!("@org/{}", "a".repeat(600))).is_err());
    }
}
