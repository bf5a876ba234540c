//! Finding `perstack.toml`: the `--config` path when given, else the nearest `perstack.toml`
//! from the working directory upwards (Perstack's rule).

use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// The file name searched for.
pub const CONFIG_FILE_NAME: &str = "perstack.toml";

/// The configuration file to load.
///
/// With `explicit`, that path (joined to `cwd` when relative) if it exists, else
/// [`ConfigError::GivenPathNotFound`]; an `https://` or `http://` URL is
/// [`ConfigError::RemoteUnsupported`] (Perstack fetches those from raw.githubusercontent.com).
/// Without it, the first `perstack.toml` found in `cwd` or any of its ancestors, else
/// [`ConfigError::NotFound`]. `cwd` should be absolute, or the search stops at its first
/// component.
pub fn discover(explicit: Option<&Path>, cwd: &Path) -> Result<PathBuf, ConfigError> {
    if let Some(given) = explicit {
        let text = given.to_string_lossy();
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            return Err(ConfigError::RemoteUnsupported {
                url: text.into_owned(),
            });
        }
        let resolved = cwd.join(given);
        return if resolved.is_file() {
            Ok(resolved)
        } else {
            Err(ConfigError::GivenPathNotFound {
                given: given.to_owned(),
                resolved,
            })
        };
    }
    let mut tried = cwd.join(CONFIG_FILE_NAME);
    for dir in cwd.ancestors() {
        tried = dir.join(CONFIG_FILE_NAME);
        if tried.is_file() {
            return Ok(tried);
        }
    }
    Err(ConfigError::NotFound {
        start: cwd.to_owned(),
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_nearest_perstack_toml_walking_up() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b/c");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(root.path().join("a/perstack.toml"), "").unwrap();
        std::fs::write(root.path().join("perstack.toml"), "").unwrap();
        assert_eq!(
            discover(None, &nested).unwrap(),
            root.path().join("a/perstack.toml")
        );
        assert_eq!(
            discover(None, root.path()).unwrap(),
            root.path().join("perstack.toml")
        );
    }

    #[test]
    fn an_explicit_path_is_resolved_against_cwd_and_must_exist() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("custom.toml"), "").unwrap();
        let found = discover(Some(Path::new("custom.toml")), root.path()).unwrap();
        assert_eq!(found, root.path().join("custom.toml"));

        let err = discover(Some(Path::new("nonexistent.toml")), root.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("Given config path \"nonexistent.toml\" is not found"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn remote_configs_are_refused_clearly() {
        let url = "https://raw.githubusercontent.com/o/r/main/perstack.toml";
        let err = discover(Some(Path::new(url)), Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("is not supported yet"), "{err}");
    }

    #[test]
    fn not_found_names_the_start_directory() {
        let root = tempfile::tempdir().unwrap();
        // A temp dir normally has no perstack.toml above it; skip if this machine has one.
        if root
            .path()
            .ancestors()
            .any(|d| d.join(CONFIG_FILE_NAME).is_file())
        {
            return;
        }
        let err = discover(None, root.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("perstack.toml not found: searched "),
            "{msg}"
        );
        assert!(msg.contains(&root.path().display().to_string()), "{msg}");
        assert!(msg.contains("--config"), "{msg}");
    }
}
