//! The run environment: the process environment plus dotenv files, as Perstack builds it.
//!
//! Precedence (Perstack's, from dotenv's default no-override behaviour):
//! 1. a non-empty variable of the process environment always wins;
//! 2. among the env files, the **earliest** file in the list that defines a variable wins
//!    (dotenv's "first value set wins" for a list of paths), so with the default list `.env`
//!    beats `.env.local`;
//! 3. within one file, the last definition of a variable wins (dotenv's parser overwrites).
//!
//! Files are parsed like dotenv 16 (not like `dotenvy`, which also expands `$VAR`): optional
//! `export `, `KEY=value` or `KEY: value`, `#` comments, unquoted values cut at `#` and trimmed,
//! single-, double- or backtick-quoted values that may span lines, `\n` and `\r` expanded in
//! double quotes only, and no variable expansion. Unlike dotenv, which silently skips lines it
//! cannot parse, a malformed line is an error naming the file and line. A missing file is
//! skipped, as dotenv skips it.
//!
//! It also owns which of those variables may reach a process started for an Expert:
//! [`SAFE_ENV_VARS`] (passed through to every skill process) and [`PROTECTED_ENV_VARS`] (never
//! set from a skill definition or a tool call). The skill launcher and `exec` take both lists
//! from here; this module never starts a process itself.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::error::{ConfigError, Location};

/// Names passed through from the run environment to every process started for an Expert (a
/// stdio MCP server, the base skill's `exec`) when the environment has them: Perstack's
/// `SAFE_ENV_VARS`.
pub const SAFE_ENV_VARS: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "TERM",
    "NODE_PATH",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "PERSTACK_PROXY_URL",
    "NPM_CONFIG_PROXY",
    "NPM_CONFIG_HTTPS_PROXY",
];

/// Names a skill's `requiredEnv` or a call's `env` can never set (compared case-insensitively,
/// Perstack's protected list): they change how programs are found or loaded.
pub const PROTECTED_ENV_VARS: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "NODE_PATH",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "DYLD_INSERT_LIBRARIES",
    "DYLD_LIBRARY_PATH",
    "NODE_OPTIONS",
    "PYTHONPATH",
    "PERL5LIB",
    "RUBYLIB",
];

/// Whether `name` is one of [`PROTECTED_ENV_VARS`], ignoring case.
pub fn is_protected(name: &str) -> bool {
    PROTECTED_ENV_VARS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// The [`SAFE_ENV_VARS`] entries of `vars`.
pub fn safe_env(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter(|(key, _)| SAFE_ENV_VARS.contains(&key.as_str()))
        .collect()
}

/// The env files loaded when neither `--env-path` nor `envPath` names any.
pub const DEFAULT_ENV_PATHS: [&str; 2] = [".env", ".env.local"];

/// The process environment's non-empty variables, overlaid with `env_paths` (relative paths
/// are resolved against `base_dir`), with the precedence described in the module docs.
pub fn load_env(
    base_dir: &Path,
    env_paths: &[String],
    process_env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut env: BTreeMap<String, String> = process_env
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .collect();
    for env_path in env_paths {
        let path = base_dir.join(env_path);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        for (key, value) in parse_dotenv(&text, &path)? {
            env.entry(key).or_insert(value);
        }
    }
    Ok(env)
}

/// Parses one dotenv file; later definitions in the file overwrite earlier ones.
fn parse_dotenv(text: &str, path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.split('\n').collect();
    let mut vars = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let malformed = |column: usize, message: String| ConfigError::EnvFile {
            at: Location::at(path, line_no, column),
            message,
        };
        let line = lines[i];
        i += 1;
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let body = match body.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => body,
        };
        let key_len = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
            .unwrap_or(body.len());
        let (key, rest) = body.split_at(key_len);
        let column = line[..line.len() - body.len()].chars().count() + 1;
        if key.is_empty() {
            return Err(malformed(
                column,
                "expected KEY=value, where KEY is letters, digits, `_`, `.` or `-`; comment the \
                 line out with `#` if it is not a variable."
                    .to_owned(),
            ));
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let value_src = if let Some(v) = rest.strip_prefix('=') {
            v
        } else if let Some(v) = rest
            .strip_prefix(':')
            .filter(|v| v.starts_with([' ', '\t']))
        {
            v
        } else {
            return Err(malformed(
                column,
                format!("expected `=` after `{key}`; write {key}=value."),
            ));
        };
        let value_src = value_src.trim_start_matches([' ', '\t']);
        let quote = value_src
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\'' | '`'));
        let value = match quote {
            None => value_src.split('#').next().unwrap_or("").trim().to_owned(),
            Some(q) => {
                // The quoted value may continue on the following lines.
                let mut raw = value_src[1..].to_owned();
                let close = loop {
                    if let Some(end) = closing_quote(&raw, q) {
                        break end;
                    }
                    let Some(next) = lines.get(i) else {
                        return Err(malformed(
                            column,
                            format!(
                                "the value of `{key}` opens a {q} quote that is never closed; add the closing {q}."
                            ),
                        ));
                    };
                    raw.push('\n');
                    raw.push_str(next);
                    i += 1;
                };
                let after = raw[close + 1..].trim();
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(malformed(
                        column,
                        format!(
                            "unexpected text `{after}` after the closing {q} of `{key}`; put comments after a `#`."
                        ),
                    ));
                }
                let inner = &raw[..close];
                if q == '"' {
                    inner.replace("\\n", "\n").replace("\\r", "\r")
                } else {
                    inner.to_owned()
                }
            }
        };
        vars.insert(key.to_owned(), value);
    }
    Ok(vars)
}

/// Byte index of the first `q` in `s` not escaped by a backslash.
fn closing_quote(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == q => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_env_keeps_only_the_safe_names_and_protection_ignores_case() {
        let vars = [
            ("PATH", "/bin"),
            ("https_proxy", "http://p:3128"),
            ("ANTHROPIC_API_KEY", "k"),
            ("LD_PRELOAD", "x.so"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let safe = safe_env(vars);
        assert_eq!(
            safe.keys().map(String::as_str).collect::<Vec<_>>(),
            ["PATH", "https_proxy"]
        );
        assert!(is_protected("ld_preload") && is_protected("Node_Options"));
        assert!(!is_protected("MY_TOKEN"));
    }

    fn parse(text: &str) -> BTreeMap<String, String> {
        parse_dotenv(text, Path::new(".env")).unwrap()
    }

    #[test]
    fn parses_dotenv_syntax_like_dotenv_16() {
        let vars = parse(
            "# comment\n\nA=1\nexport B = two words  \nC: colon\nD='single # not comment'\n\
             E=\"line\\nbreak\"\nF=unquoted # comment\nG=\nH=`back`\nI=\"multi\nline\"\nA=last\n\
             J=$A\nK='no\\nexpand'\r\n",
        );
        let get = |k: &str| vars.get(k).map(String::as_str);
        assert_eq!(get("A"), Some("last"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("colon"));
        assert_eq!(get("D"), Some("single # not comment"));
        assert_eq!(get("E"), Some("line\nbreak"));
        assert_eq!(get("F"), Some("unquoted"));
        assert_eq!(get("G"), Some(""));
        assert_eq!(get("H"), Some("back"));
        assert_eq!(get("I"), Some("multi\nline"));
        assert_eq!(get("J"), Some("$A"));
        assert_eq!(get("K"), Some("no\\nexpand"));
    }

    #[test]
    fn malformed_lines_name_the_file_and_line() {
        let err = parse_dotenv("A=1\nnot a variable\n", Path::new("/p/.env")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("Malformed line in env file /p/.env:2:1: expected `=` after `not`"),
            "{msg}"
        );

        let err = parse_dotenv("A=1\n\nB=\"open\nstill open\n", Path::new("/p/.env")).unwrap_err();
        assert!(
            err.to_string()
                .contains("/p/.env:3:1: the value of `B` opens a \" quote"),
            "{err}"
        );

        let err = parse_dotenv("  =x\n", Path::new("/p/.env")).unwrap_err();
        assert!(
            err.to_string().contains("/p/.env:1:3: expected KEY=value"),
            "{err}"
        );
    }

    #[test]
    fn process_env_beats_earlier_files_which_beat_later_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "A=from-env\nB=from-env\nC=from-env\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(".env.local"),
            "B=from-local\nD=from-local\n",
        )
        .unwrap();
        let paths: Vec<String> = DEFAULT_ENV_PATHS.iter().map(|p| (*p).to_owned()).collect();
        let process = [
            ("A".to_owned(), "from-process".to_owned()),
            ("C".to_owned(), String::new()),
        ];
        let env = load_env(dir.path(), &paths, process).unwrap();
        assert_eq!(env["A"], "from-process");
        assert_eq!(env["B"], "from-env");
        assert_eq!(env["C"], "from-env", "empty process values do not count");
        assert_eq!(env["D"], "from-local");
    }

    #[test]
    fn missing_env_files_are_skipped_and_absolute_paths_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("abs.env");
        std::fs::write(&abs, "X=1\n").unwrap();
        let paths = vec!["missing.env".to_owned(), abs.display().to_string()];
        let env = load_env(Path::new("/nonexistent-base"), &paths, []).unwrap();
        assert_eq!(env.get("X").map(String::as_str), Some("1"));
    }
}
