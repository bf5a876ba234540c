//! The policy of one sandboxed process: what it may read, write and run, built by the launcher
//! from the launch request and the run's [`SandboxScope`], and applied by the trampoline.
//!
//! It owns the rules of *what* is visible (the lists below); [`super::mounts`] and
//! [`super::landlock`] own *how*. It travels to the trampoline as JSON on its command line, so
//! it holds paths only, never the environment.
//!
//! - read-write: the workspace, the private `/tmp`, `/dev/shm` and `$HOME` (empty tmpfs), the
//!   npm/uv caches (`~/.npm`, `~/.cache/uv`, `~/.local/share/uv`, `npm_config_cache`,
//!   `UV_CACHE_DIR`), a few devices;
//! - read-only: system directories, the `PATH` entries, the resolved program, for an MCP server
//!   the files its arguments name (the whole `node_modules` tree they sit in), the config
//!   directory;
//! - hidden: `$HOME` and `/run/user` (ssh-agent, D-Bus), the host's `/tmp`, the job's
//!   `<workspace>/perstack` (empty and read-only), credential directories and files even when
//!   they sit inside the workspace, `/etc/shadow`.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SandboxScope;
use super::limits::Limits;

/// System directories every program may read and execute from.
const SYSTEM_READ_ONLY: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc",
    "/sys", "/dev",
];

/// Devices a program may write to.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// Directories replaced by an empty, writable tmpfs (besides `$HOME`).
const MASKED: &[&str] = &["/tmp", "/dev/shm", "/run/user"];

/// Credential directories under `$HOME`, hidden even when the workspace contains them.
const HOME_SECRET_DIRS: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".kube",
    ".docker",
    ".azure",
    ".config/gcloud",
    ".config/gh",
];

/// Credential files under `$HOME`, replaced by `/dev/null`.
const HOME_SECRET_FILES: &[&str] = &[".netrc", ".git-credentials", ".npmrc", ".pypirc"];

/// System files replaced by `/dev/null` (readable by the owner, who may be the engine's uid).
const SYSTEM_SECRET_FILES: &[&str] = &["/etc/shadow", "/etc/gshadow"];

/// Environment variables naming package caches that `npx`/`uvx` write to.
const CACHE_VARS: &[&str] = &["npm_config_cache", "NPM_CONFIG_CACHE", "UV_CACHE_DIR"];

/// A path bound back into a masked directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bind {
    /// The path, the same inside and outside.
    pub(crate) path: PathBuf,
    /// Whether the process may write through it.
    pub(crate) writable: bool,
}

/// Everything the trampoline applies to one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Policy {
    /// The engine's pid: the trampoline's parent, checked after it set its parent-death signal
    /// (if the engine already died, it stops there).
    pub(crate) engine_pid: u32,
    /// The program, resolved against the child's `PATH`.
    pub(crate) program: PathBuf,
    /// The program's name as given (its `argv[0]`).
    pub(crate) argv0: String,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// Replaced by an empty writable tmpfs, shortest first.
    pub(crate) masked: Vec<PathBuf>,
    /// Bound back (from the host's view) after masking.
    pub(crate) binds: Vec<Bind>,
    /// Replaced by an empty read-only tmpfs (the job's `perstack/`, credential directories).
    pub(crate) emptied: Vec<PathBuf>,
    /// Replaced by `/dev/null` (credential files).
    pub(crate) blanked: Vec<PathBuf>,
    /// Landlock: read, list and execute.
    pub(crate) read_only: Vec<PathBuf>,
    /// Landlock: every file access.
    pub(crate) read_write: Vec<PathBuf>,
    /// Resource limits.
    pub(crate) limits: Limits,
    /// The egress proxy's Unix socket (bound into the view), if the process has egress.
    pub(crate) proxy_socket: Option<PathBuf>,
}

/// What the launcher knows about the process to confine.
pub(crate) struct Target<'a> {
    /// The program as given.
    pub(crate) program: &'a str,
    /// Its arguments.
    pub(crate) args: &'a [String],
    /// Its environment (for `PATH`, `HOME` and the cache variables).
    pub(crate) env: &'a BTreeMap<String, String>,
    /// Its working directory, if not the engine's.
    pub(crate) cwd: Option<&'a Path>,
    /// Whether files named by its arguments are made readable (MCP servers from
    /// `perstack.toml`; never `exec`, whose arguments come from the model).
    pub(crate) args_name_files: bool,
}

impl Policy {
    /// The policy for `target` in `scope`. Creates `<workspace>/perstack` when missing, so that
    /// the process cannot create it (and plant files the engine would read).
    ///
    /// # Errors
    ///
    /// `NotFound` when the program is not found in the child's `PATH`; the I/O error of
    /// creating `<workspace>/perstack`.
    pub(crate) fn build(target: &Target<'_>, scope: &SandboxScope) -> io::Result<Policy> {
        let engine_cwd = std::env::current_dir()?;
        let cwd = target
            .cwd
            .map_or(engine_cwd.clone(), |c| engine_cwd.join(c));
        let program = resolve_program(target.program, target.env.get("PATH"), &cwd)?;
        let workspace = canonical(&scope.workspace);
        let store = workspace.join("perstack");
        std::fs::create_dir_all(&store)?;

        let homes = homes(target.env);
        let mut masked: Vec<PathBuf> = MASKED.iter().map(PathBuf::from).collect();
        masked.extend(homes.iter().cloned());
        sort_dedup(&mut masked);

        let mut read_write = vec![workspace];
        read_write.extend(caches(target.env, &homes));
        let mut read_only: Vec<PathBuf> = SYSTEM_READ_ONLY.iter().map(PathBuf::from).collect();
        if let Some(path) = target.env.get("PATH") {
            read_only.extend(std::env::split_paths(path).filter(|p| p.is_absolute()));
        }
        read_only.push(readable_unit(&program));
        if target.args_name_files {
            read_only.extend(
                target
                    .args
                    .iter()
                    .filter_map(|a| named_file(a, &cwd))
                    .map(|f| readable_unit(&f)),
            );
        }
        read_only.extend(scope.config_dir.iter().map(|d| canonical(d)));
        read_only.retain(|p| p.exists());
        read_write.retain(|p| p.exists());
        sort_dedup(&mut read_only);
        sort_dedup(&mut read_write);
        // A path already covered needs no rule (and no bind, which could turn a writable
        // directory read-only).
        read_write = prune(read_write, &[]);
        read_only = prune(read_only, &read_write);

        let mut binds: Vec<Bind> = Vec::new();
        for (paths, writable) in [(&read_write, true), (&read_only, false)] {
            for path in paths.iter() {
                if masked.iter().any(|m| path.starts_with(m) && path != m) {
                    binds.push(Bind {
                        path: path.clone(),
                        writable,
                    });
                }
            }
        }
        if let Some(socket) = &scope.proxy_socket {
            binds.push(Bind {
                path: socket.clone(),
                writable: true,
            });
        }

        let mut emptied = vec![store];
        let mut blanked: Vec<PathBuf> = SYSTEM_SECRET_FILES.iter().map(PathBuf::from).collect();
        for home in &homes {
            emptied.extend(HOME_SECRET_DIRS.iter().map(|d| home.join(d)));
            blanked.extend(HOME_SECRET_FILES.iter().map(|f| home.join(f)));
        }
        // Scratch space: the tmpfs mounts themselves, plus the writable devices.
        read_write.extend(masked.iter().cloned());
        read_write.extend(DEVICES.iter().map(PathBuf::from));
        sort_dedup(&mut read_write);

        Ok(Policy {
            engine_pid: std::process::id(),
            program,
            argv0: target.program.to_owned(),
            args: target.args.to_vec(),
            masked,
            binds,
            emptied,
            blanked,
            read_only,
            read_write,
            limits: Limits::default(),
            proxy_socket: scope.proxy_socket.clone(),
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "sandbox policy for {}:", self.program.display())?;
        writeln!(f, "  read-write: {}", list(&self.read_write))?;
        writeln!(f, "  read-only: {}", list(&self.read_only))?;
        writeln!(f, "  hidden (empty tmpfs): {}", list(&self.masked))?;
        let binds: Vec<PathBuf> = self.binds.iter().map(|b| b.path.clone()).collect();
        writeln!(f, "  bound back: {}", list(&binds))?;
        writeln!(f, "  emptied (read-only): {}", list(&self.emptied))?;
        writeln!(f, "  blanked: {}", list(&self.blanked))?;
        writeln!(
            f,
            "  network: {}",
            self.proxy_socket.as_ref().map_or_else(
                || "none (own namespace, lo only)".to_owned(),
                |s| format!("egress proxy at {}", s.display())
            )
        )?;
        write!(f, "  limits: {}", self.limits)
    }
}

/// The program's path: as given when it has a `/` (relative to `cwd`), else the first
/// executable file of that name in `path`.
fn resolve_program(program: &str, path: Option<&String>, cwd: &Path) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(cwd.join(program));
    }
    let found = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| cwd.join(dir).join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    found.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{program}: not found in the PATH given to the process"),
        )
    })
}

/// The home directories to hide: the engine's and the one given to the process.
fn homes(env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let mut homes: Vec<PathBuf> = std::env::var_os("HOME")
        .map(PathBuf::from)
        .into_iter()
        .chain(env.get("HOME").map(PathBuf::from))
        .filter(|h| h.is_absolute() && h.parent().is_some())
        .map(|h| canonical(&h))
        .collect();
    sort_dedup(&mut homes);
    homes
}

/// The package caches that exist.
fn caches(env: &BTreeMap<String, String>, homes: &[PathBuf]) -> Vec<PathBuf> {
    let mut caches: Vec<PathBuf> = homes
        .iter()
        .flat_map(|h| {
            [
                h.join(".npm"),
                h.join(".cache/uv"),
                h.join(".local/share/uv"),
            ]
        })
        .collect();
    caches.extend(
        CACHE_VARS
            .iter()
            .filter_map(|v| env.get(*v))
            .map(PathBuf::from)
            .filter(|p| p.is_absolute()),
    );
    caches
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| canonical(&p))
        .collect()
}

/// The file an argument names, if it names an existing file (`/abs/server.js`,
/// `./server.js`, `--script=/abs/x.py`).
fn named_file(arg: &str, cwd: &Path) -> Option<PathBuf> {
    let value = arg.split_once('=').map_or(arg, |(_, v)| v);
    if value.is_empty() || value.starts_with('-') {
        return None;
    }
    let path = cwd.join(value);
    path.is_file().then(|| canonical(&path))
}

/// What to make readable for a file: the topmost `node_modules` directory it sits in (a Node
/// program needs its dependencies), else the file itself.
fn readable_unit(file: &Path) -> PathBuf {
    let file = canonical(file);
    let mut unit = None;
    for ancestor in file.ancestors() {
        if ancestor.file_name().is_some_and(|n| n == "node_modules") {
            unit = Some(ancestor.to_path_buf());
        }
    }
    unit.unwrap_or(file)
}

/// `paths` (sorted, ancestors first) without those under another one or under `covered`.
fn prune(paths: Vec<PathBuf>, covered: &[PathBuf]) -> Vec<PathBuf> {
    let mut kept: Vec<PathBuf> = Vec::with_capacity(paths.len());
    for path in paths {
        if !kept.iter().chain(covered).any(|c| path.starts_with(c)) {
            kept.push(path);
        }
    }
    kept
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn sort_dedup(paths: &mut Vec<PathBuf>) {
    paths.sort_by(|a, b| {
        a.components()
            .count()
            .cmp(&b.components().count())
            .then(a.cmp(b))
    });
    paths.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(
        program: &'a str,
        args: &'a [String],
        env: &'a BTreeMap<String, String>,
        files: bool,
    ) -> Target<'a> {
        Target {
            program,
            args,
            env,
            cwd: None,
            args_name_files: files,
        }
    }

    #[test]
    fn the_workspace_is_writable_its_store_emptied_and_the_program_resolved_in_path() {
        let ws = tempfile::tempdir().unwrap();
        let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let policy = Policy::build(
            &target("sh", &[], &env, false),
            &SandboxScope::new(ws.path()),
        )
        .unwrap();
        let ws = std::fs::canonicalize(ws.path()).unwrap();
        assert!(policy.read_write.contains(&ws));
        assert!(policy.emptied.contains(&ws.join("perstack")));
        assert!(ws.join("perstack").is_dir());
        assert!(policy.program.ends_with("sh"), "{policy}");
        assert!(policy.masked.contains(&PathBuf::from("/tmp")));
        // The workspace sits in /tmp, which is masked: it is bound back, writable.
        assert!(policy.binds.contains(&Bind {
            path: ws,
            writable: true
        }));
    }

    #[test]
    fn only_an_mcp_servers_arguments_make_files_readable() {
        let ws = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let secret = elsewhere.path().join("id_rsa");
        std::fs::write(&secret, "key").unwrap();
        let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let args = vec![secret.display().to_string()];
        let scope = SandboxScope::new(ws.path());
        let secret = std::fs::canonicalize(&secret).unwrap();
        let exec = Policy::build(&target("cat", &args, &env, false), &scope).unwrap();
        assert!(!exec.read_only.contains(&secret), "{exec}");
        let server = Policy::build(&target("cat", &args, &env, true), &scope).unwrap();
        assert!(server.read_only.contains(&secret));
    }

    #[test]
    fn a_file_in_node_modules_makes_the_whole_tree_readable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node_modules/@x/y/dist/index.js");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "").unwrap();
        let root = std::fs::canonicalize(dir.path().join("node_modules")).unwrap();
        assert_eq!(readable_unit(&file), root);
    }

    #[test]
    fn a_read_only_path_inside_a_writable_one_is_dropped_not_bound_over_it() {
        let ws = tempfile::tempdir().unwrap();
        let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let mut scope = SandboxScope::new(ws.path());
        scope.config_dir = Some(ws.path().to_path_buf());
        let policy = Policy::build(&target("sh", &[], &env, false), &scope).unwrap();
        let ws = std::fs::canonicalize(ws.path()).unwrap();
        assert!(
            !policy.read_only.iter().any(|p| p.starts_with(&ws)),
            "{policy}"
        );
        assert_eq!(policy.binds.iter().filter(|b| b.path == ws).count(), 1);
        // `/usr/bin` (a PATH entry) is under `/usr`.
        assert!(
            !policy.read_only.contains(&PathBuf::from("/usr/bin")),
            "{policy}"
        );
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let err = resolve_program(
            "no-such-program-xyz",
            Some(&"/usr/bin".into()),
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
