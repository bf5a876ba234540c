//! The parsed TOML document with spans, and key paths: turns "this key" into "this file, this
//! line" for error messages. Knows nothing about Perstack's schema except which tables are maps
//! keyed by user-chosen names (rendered quoted in key paths).

use std::fmt;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Location};

/// Tables whose keys are names chosen by the user, not field names: their keys are quoted in
/// key paths (`experts."coord".skills."fs"`).
const MAP_TABLES: &[&str] = &["experts", "skills", "tools", "headers"];

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// A schema field, rendered bare: `instruction`.
    Field(String),
    /// A user-chosen map key, rendered quoted: `"coord"`.
    Key(String),
    /// An array element: `[2]`.
    Index(usize),
}

/// A path to a key, rendered like `experts."coord".skills."fs".args[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The document root.
    pub(super) fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path extended by a schema field.
    pub(super) fn field(&self, name: &str) -> Self {
        self.with(Seg::Field(name.to_owned()))
    }

    /// This path extended by a user-chosen map key.
    pub(super) fn key(&self, name: &str) -> Self {
        self.with(Seg::Key(name.to_owned()))
    }

    /// This path extended by an array index.
    pub(super) fn index(&self, i: usize) -> Self {
        self.with(Seg::Index(i))
    }

    /// This path extended by `name`, quoted when the parent is a user-keyed map.
    pub(super) fn child(&self, name: &str) -> Self {
        match self.0.last() {
            Some(Seg::Field(parent)) if MAP_TABLES.contains(&parent.as_str()) => self.key(name),
            _ => self.field(name),
        }
    }

    fn with(&self, seg: Seg) -> Self {
        let mut segs = self.0.clone();
        segs.push(seg);
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            let dot = if i == 0 { "" } else { "." };
            match seg {
                Seg::Field(name) => write!(f, "{dot}{name}")?,
                Seg::Key(name) => {
                    let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
                    write!(f, "{dot}\"{escaped}\"")?;
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A parsed `perstack.toml` that remembers where every key and value is written.
pub(super) struct Doc<'a> {
    text: &'a str,
    file: &'a Path,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Doc<'a> {
    /// Parses `text` (the contents of `file`), reporting syntax errors with their position.
    pub(super) fn parse(text: &'a str, file: &'a Path) -> Result<Self, ConfigError> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Doc { text, file, root }),
            Err(err) => Err(ConfigError::Syntax {
                at: Location {
                    file: file.to_owned(),
                    ..position(text, err.span().map(|s| s.start))
                },
                message: err.message().trim_end_matches('.').to_owned(),
            }),
        }
    }

    /// The root table.
    pub(super) fn root(&self) -> &DeTable<'a> {
        self.root.get_ref()
    }

    /// A serde deserializer over the whole document.
    pub(super) fn deserializer(&self) -> toml::de::Deserializer<'a> {
        toml::de::Deserializer::from(self.root.clone())
    }

    /// The location of byte `offset`, or of the file alone when `None`.
    pub(super) fn location(&self, offset: Option<usize>) -> Location {
        Location {
            file: self.file.to_owned(),
            ..position(self.text, offset)
        }
    }

    /// Where the value at `path` is written; for a path that does not exist (a missing key),
    /// where its deepest existing ancestor is written. A table defined by a header is located
    /// at its header.
    pub(super) fn at(&self, path: &KeyPath) -> Location {
        let mut offset = None;
        let mut current: Option<&DeValue<'a>> = None;
        let mut table = Some(self.root());
        for seg in &path.0 {
            let next = match (seg, table, current) {
                (Seg::Field(name) | Seg::Key(name), Some(t), _) => get(t, name),
                (Seg::Index(i), _, Some(DeValue::Array(items))) => items.get(*i),
                _ => None,
            };
            let Some(value) = next else { break };
            offset = Some(value.span().start);
            current = Some(value.get_ref());
            table = match value.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        self.location(offset)
    }

    /// The key path of the innermost key or value that contains byte `offset` (used to name
    /// the key behind a serde error, which only carries a span).
    pub(super) fn path_at(&self, offset: usize) -> KeyPath {
        find_in_table(self.root(), &KeyPath::root(), offset).unwrap_or_default()
    }
}

/// The entry `name` of `table`.
pub(super) fn get<'t, 'a>(table: &'t DeTable<'a>, name: &str) -> Option<&'t Spanned<DeValue<'a>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == name)
        .map(|(_, v)| v)
}

/// The entries of `table` in the order they are written in the file.
pub(super) fn entries_in_file_order<'t, 'a>(
    table: &'t DeTable<'a>,
) -> Vec<(
    &'t Spanned<std::borrow::Cow<'a, str>>,
    &'t Spanned<DeValue<'a>>,
)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

fn find_in_table(table: &DeTable<'_>, path: &KeyPath, offset: usize) -> Option<KeyPath> {
    for (key, value) in table.iter() {
        let here = path.child(key.get_ref());
        if let Some(found) = find_in_value(value, &here, offset) {
            return Some(found);
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            return Some(here);
        }
    }
    None
}

fn find_in_value(value: &Spanned<DeValue<'_>>, path: &KeyPath, offset: usize) -> Option<KeyPath> {
    match value.get_ref() {
        DeValue::Table(t) => find_in_table(t, path, offset),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let here = path.index(i);
            find_in_value(item, &here, offset)
                .or_else(|| item.span().contains(&offset).then_some(here))
        }),
        _ => None,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: Option<usize>) -> Location {
    let Some(offset) = offset.map(|o| o.min(text.len())) else {
        return Location::file("");
    };
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    Location::at("", line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "model = \"m\"\n\n[experts.\"a\"]\ninstruction = \"hi\"\ndelegates = [\"b\", 3]\n\n[experts.\"a\".skills.\"@perstack/base\"]\ntype = \"mcpStdioSkill\"\n";

    #[test]
    fn key_paths_quote_user_chosen_keys_only() {
        let p = KeyPath::root()
            .field("experts")
            .key("coord")
            .field("skills")
            .key("fs")
            .field("args");
        assert_eq!(p.to_string(), "experts.\"coord\".skills.\"fs\".args");
        assert_eq!(
            KeyPath::root().field("delegates").index(2).to_string(),
            "delegates[2]"
        );
    }

    #[test]
    fn at_finds_values_and_falls_back_to_the_deepest_existing_table() {
        let file = Path::new("p.toml");
        let doc = Doc::parse(TEXT, file).unwrap();
        let expert = KeyPath::root().field("experts").key("a");
        assert_eq!(doc.at(&expert.field("instruction")).line, Some(4));
        assert_eq!(doc.at(&expert.field("delegates").index(1)).line, Some(5));
        assert_eq!(doc.at(&expert.field("delegates").index(1)).column, Some(19));
        assert_eq!(doc.at(&expert.field("description")).line, Some(3));
        let base = expert.field("skills").key("@perstack/base");
        assert_eq!(doc.at(&base.field("command")).line, Some(7));
    }

    #[test]
    fn path_at_names_the_key_behind_an_offset() {
        let doc = Doc::parse(TEXT, Path::new("p.toml")).unwrap();
        let offset = TEXT.find("3]").unwrap();
        assert_eq!(
            doc.path_at(offset).to_string(),
            "experts.\"a\".delegates[1]"
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = Doc::parse("a = 1\nb = [1,\n", Path::new("p.toml"))
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.starts_with("TOML syntax error in p.toml:2:"), "{msg}");
    }
}
