//! Workspace path safety for the file tools and `exec`'s working directory.
//!
//! Two layers:
//!
//! 1. [`Workspace::resolve`] turns the model's path into a checked absolute path, like
//!    Perstack's `validatePath` but without its holes: `~` is expanded, relative paths resolve
//!    against the workspace, and the *canonical* path (for a path that does not exist yet: the
//!    canonical path of its nearest existing ancestor plus the remaining components, none of
//!    them `..`) must lie inside the workspace and outside `<workspace>/perstack` (compared
//!    case-insensitively). A final symlink is checked twice: the link itself and its target.
//! 2. Every operation then goes through [`Workspace::open_dir`], which walks from the workspace
//!    root one component at a time, each opened with `O_NOFOLLOW` *inside* the directory opened
//!    before it (through `/proc/self/fd/<fd>/<name>` on Linux), and acts on one plain name in
//!    the directory it ends on ([`Dir::child`]). A symlink swapped in after step 1 is refused,
//!    so the check and the use cannot drift apart (no TOCTOU), the way `openat2`'s
//!    `RESOLVE_BENEATH` would.
//!
//! Without `/proc` (or on other Unixes) the walk falls back to plain absolute paths with a
//! `symlink_metadata` check before each open and an inode comparison after it: still refusing
//! symlinks, but with a small race window. Errors name the path as the model gave it, never a
//! resolved path outside the workspace (such as a symlink's target).

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use rmcp::model::CallToolResult;
use serde::Serialize;

use super::result::{json_error, json_result};

/// `O_NOFOLLOW | O_NONBLOCK` where this build knows the values (from the kernel's headers:
/// `O_NOFOLLOW` is `0o400000` on the asm-generic layout and `0o100000` on arm/aarch64/powerpc;
/// `O_NONBLOCK` is `0o4000` on all of these). `O_NONBLOCK` keeps `open` from hanging on a FIFO.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "s390x"
    )
))]
const NOFOLLOW_FLAGS: Option<i32> = Some(0o400000 | 0o4000);
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "powerpc",
        target_arch = "powerpc64"
    )
))]
const NOFOLLOW_FLAGS: Option<i32> = Some(0o100000 | 0o4000);
#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "s390x",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "powerpc",
        target_arch = "powerpc64"
    )
)))]
const NOFOLLOW_FLAGS: Option<i32> = None;

/// The directory Perstack keeps its own state in, relative to the workspace; never reachable.
const PERSTACK_DIR: &str = "perstack";

/// Longest slice of the model's path quoted back in a message.
const MAX_QUOTED_CHARS: usize = 200;

/// A failure the model can fix, answered as `{"error":"Error","message":...}` (the name
/// Perstack's `new Error(..)` carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ToolError {
    pub(super) message: String,
}

impl ToolError {
    pub(super) fn new(message: impl Into<String>) -> Self {
        ToolError {
            message: message.into(),
        }
    }

    pub(super) fn into_result(self) -> CallToolResult {
        json_error("Error", &self.message)
    }
}

/// Runs blocking file work off the async runtime and encodes its outcome.
pub(super) async fn run_blocking<T, F>(work: F) -> CallToolResult
where
    T: Serialize + Send + 'static,
    F: FnOnce() -> Result<T, ToolError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => json_result(&value),
        Ok(Err(e)) => e.into_result(),
        Err(e) => json_error("Error", &format!("Internal error: {e}")),
    }
}

/// The model's path, shortened for quoting in a message.
pub(super) fn quote(given: &str) -> String {
    if given.chars().count() <= MAX_QUOTED_CHARS {
        given.to_owned()
    } else {
        let head: String = given.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{head}...")
    }
}

/// The confinement root and what `~` means.
#[derive(Debug, Clone)]
pub(super) struct Workspace {
    /// Canonical workspace directory.
    root: PathBuf,
    /// The home directory `~` expands to, if known.
    home: Option<PathBuf>,
}

/// A path that passed [`Workspace::resolve`].
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    /// The directory entry itself: the canonical parent plus the final name (a final symlink
    /// is not followed). Inside the workspace, outside `perstack/`.
    pub(super) entry: PathBuf,
    /// The fully resolved path: `entry` unless `entry` is a symlink, then its canonical target
    /// (also checked), or `None` for a dangling or looping link.
    pub(super) target: Option<PathBuf>,
    /// `entry`'s own metadata (`lstat`), `None` when nothing exists there.
    pub(super) meta: Option<Metadata>,
}

impl Resolved {
    /// The resolved target if something exists there (following an in-workspace symlink).
    pub(super) fn existing_target(&self) -> Option<&Path> {
        self.meta.as_ref()?;
        self.target.as_deref()
    }
}

impl Workspace {
    /// A workspace rooted at `root`, canonicalised here (kept as given if that fails).
    pub(super) fn new(root: &Path, home: Option<PathBuf>) -> Self {
        Workspace {
            root: std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
            home,
        }
    }

    /// A workspace whose root is already canonical.
    pub(super) fn from_canonical(root: PathBuf, home: Option<PathBuf>) -> Self {
        Workspace { root, home }
    }

    /// The canonical root.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Checks `given` as described in the module docs.
    pub(super) fn resolve(&self, given: &str) -> Result<Resolved, ToolError> {
        let shown = quote(given);
        if given.contains('\0') {
            return Err(ToolError::new(format!(
                "Invalid path {shown}: it contains a NUL character"
            )));
        }
        let expanded = self.expand_home(given);
        let absolute = if expanded.is_absolute() {
            expanded
        } else {
            self.root.join(expanded)
        };
        let entry = match absolute.components().next_back() {
            Some(Component::Normal(name)) => {
                let parent = absolute.parent().unwrap_or(Path::new("/"));
                self.resolve_dir(parent, &shown)?.join(name)
            }
            // `/`, or a path ending in `..`: it must exist and is a directory.
            _ => std::fs::canonicalize(&absolute).map_err(|_| outside(&shown))?,
        };
        self.check(&entry, &shown)?;
        let meta = match std::fs::symlink_metadata(&entry) {
            Ok(meta) => Some(meta),
            Err(e) if is_missing(&e) => None,
            Err(e) => return Err(io_error(&shown, &e)),
        };
        let target = match &meta {
            Some(m) if m.file_type().is_symlink() => match std::fs::canonicalize(&entry) {
                Ok(target) => {
                    if !target.starts_with(&self.root) {
                        return Err(ToolError::new(format!(
                            "Access denied - symlink target outside allowed directories: {shown}"
                        )));
                    }
                    self.check(&target, &shown)?;
                    Some(target)
                }
                Err(_) => None,
            },
            _ => Some(entry.clone()),
        };
        Ok(Resolved {
            entry,
            target,
            meta,
        })
    }

    /// The canonical form of directory `dir`: its nearest existing ancestor, canonicalised,
    /// plus the components that do not exist yet (none of which may be `..`, and the first of
    /// which must really be absent, not a dangling symlink).
    fn resolve_dir(&self, dir: &Path, shown: &str) -> Result<PathBuf, ToolError> {
        let mut missing: Vec<&OsStr> = Vec::new();
        let mut cursor = dir;
        let base = loop {
            match std::fs::canonicalize(cursor) {
                Ok(base) => break base,
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(io_error(shown, &e)),
            }
            match cursor.components().next_back() {
                Some(Component::Normal(name)) => missing.push(name),
                Some(Component::CurDir) => {}
                Some(Component::ParentDir) => {
                    return Err(ToolError::new(format!(
                        "Access denied - '..' cannot be resolved in {shown}: part of the path \
                         does not exist"
                    )));
                }
                _ => return Err(outside(shown)),
            }
            cursor = cursor.parent().ok_or_else(|| outside(shown))?;
        };
        if let Some(first) = missing.last()
            && std::fs::symlink_metadata(base.join(first)).is_ok()
        {
            return Err(ToolError::new(format!(
                "Access denied - {shown} goes through a symbolic link that cannot be resolved"
            )));
        }
        Ok(missing
            .iter()
            .rev()
            .fold(base, |path, name| path.join(name)))
    }

    /// Whether `path` (already canonical) is inside the root and outside `perstack/`.
    pub(super) fn allows(&self, path: &Path) -> bool {
        self.check(path, "").is_ok()
    }

    /// Refuses paths outside the root and under `<root>/perstack`.
    fn check(&self, path: &Path, shown: &str) -> Result<(), ToolError> {
        let Ok(relative) = path.strip_prefix(&self.root) else {
            return Err(outside(shown));
        };
        match relative.components().next() {
            Some(Component::Normal(first)) if is_perstack(first) => Err(ToolError::new(format!(
                "Access denied - perstack directory is not allowed: {shown}"
            ))),
            _ => Ok(()),
        }
    }

    fn expand_home(&self, given: &str) -> PathBuf {
        match (&self.home, given.strip_prefix('~')) {
            (Some(home), Some("")) => home.clone(),
            (Some(home), Some(rest)) if rest.starts_with('/') => {
                home.join(rest.trim_start_matches('/'))
            }
            _ => PathBuf::from(given),
        }
    }

    /// Opens directory `dir` (a path [`Workspace::resolve`] produced) by walking from the root
    /// without following symlinks; with `create`, missing components are created on the way.
    pub(super) fn open_dir(&self, dir: &Path, create: bool) -> io::Result<Dir> {
        let relative = dir.strip_prefix(&self.root).map_err(|_| denied())?;
        let root = open_root(&self.root)?;
        init_proc_fd(&root);
        let mut current = Dir {
            file: root,
            path: self.root.clone(),
            at_root: true,
        };
        for component in relative.components() {
            let Component::Normal(name) = component else {
                return Err(denied());
            };
            let child = current.child(name)?;
            let file = match open_dir_nofollow(&child) {
                Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                    match std::fs::create_dir(&child) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                        _ => open_dir_nofollow(&child)?,
                    }
                }
                other => other?,
            };
            current = Dir {
                file,
                path: current.path.join(name),
                at_root: false,
            };
        }
        Ok(current)
    }

    /// Opens directory `path` for a path that may be the root itself, returning the directory
    /// and the final name (`None` for the root).
    pub(super) fn open_parent<'p>(
        &self,
        path: &'p Path,
        create: bool,
    ) -> io::Result<(Dir, Option<&'p OsStr>)> {
        if path == self.root {
            return Ok((self.open_dir(path, false)?, None));
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(denied());
        };
        Ok((self.open_dir(parent, create)?, Some(name)))
    }

    /// `lstat` of `path` through its parent directory (the root's own metadata for the root).
    pub(super) fn lstat(&self, path: &Path) -> io::Result<Metadata> {
        match self.open_parent(path, false)? {
            (dir, Some(name)) => std::fs::symlink_metadata(dir.child(name)?),
            (dir, None) => dir.file.metadata(),
        }
    }

    /// Opens the existing regular file `path` for reading, refusing symlinks, FIFOs and
    /// devices. The metadata comes from the open handle.
    pub(super) fn open_read(&self, path: &Path) -> io::Result<(File, Metadata)> {
        let (dir, Some(name)) = self.open_parent(path, false)? else {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        };
        let file = open_nofollow(&dir.child(name)?, OpenOptions::new().read(true))?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok((file, meta))
    }
}

/// An open directory inside the workspace, reached without following symlinks.
#[derive(Debug)]
pub(super) struct Dir {
    /// Keeps the directory open so `/proc/self/fd/<fd>` names stay valid while in use.
    file: File,
    /// Its path under the canonical root (for results and the fallback without `/proc`).
    path: PathBuf,
    /// Whether this is the workspace root (where `perstack` lives).
    at_root: bool,
}

impl Dir {
    /// A path naming `name` inside this directory: `/proc/self/fd/<fd>/<name>` when that works
    /// (so the name is looked up in exactly this directory), else the plain path. Refuses
    /// names that are not a single plain component, and `perstack` at the root.
    pub(super) fn child(&self, name: &OsStr) -> io::Result<PathBuf> {
        let mut components = Path::new(name).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(n)), None) if n == name => {}
            _ => return Err(denied()),
        }
        if self.at_root && is_perstack(name) {
            return Err(denied());
        }
        Ok(self.handle_path().join(name))
    }

    /// A path naming the directory itself (for `read_dir` or a child's working directory).
    pub(super) fn handle_path(&self) -> PathBuf {
        if PROC_FD.get().copied().unwrap_or(false) {
            PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
        } else {
            self.path.clone()
        }
    }

    /// The directory's path under the canonical workspace root.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is the workspace root.
    pub(super) fn is_root(&self) -> bool {
        self.at_root
    }
}

/// Whether `/proc/self/fd` resolves open handles (checked once, on the first directory).
static PROC_FD: OnceLock<bool> = OnceLock::new();

fn init_proc_fd(dir: &File) {
    PROC_FD.get_or_init(|| {
        let link = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        // The magic link must name a directory we can look names up in.
        std::fs::read_link(&link).is_ok() && std::fs::metadata(&link).is_ok_and(|m| m.is_dir())
    });
}

fn open_root(root: &Path) -> io::Result<File> {
    let file = File::open(root)?;
    if !file.metadata()?.is_dir() {
        return Err(io::Error::from(io::ErrorKind::NotADirectory));
    }
    Ok(file)
}

fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    let file = open_nofollow(path, OpenOptions::new().read(true))?;
    if !file.metadata()?.is_dir() {
        return Err(io::Error::from(io::ErrorKind::NotADirectory));
    }
    Ok(file)
}

/// Opens `path` with `options`, refusing a symlink as the last component: with `O_NOFOLLOW`
/// where known, otherwise with an `lstat` before and an inode comparison after the open.
pub(super) fn open_nofollow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    open_nofollow_with(NOFOLLOW_FLAGS, path, options)
}

fn open_nofollow_with(
    nofollow_flags: Option<i32>,
    path: &Path,
    options: &mut OpenOptions,
) -> io::Result<File> {
    if let Some(flags) = nofollow_flags {
        return options.custom_flags(flags).open(path).map_err(
            |e| match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => symlink_refused(),
                _ => e,
            },
        );
    }
    let before = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused()),
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let file = options.open(path)?;
    let opened = file.metadata()?;
    let after = std::fs::symlink_metadata(path)?;
    let same = |m: &Metadata| m.dev() == opened.dev() && m.ino() == opened.ino();
    if after.file_type().is_symlink() || !same(&after) || before.is_some_and(|b| !same(&b)) {
        return Err(symlink_refused());
    }
    Ok(file)
}

/// Whether a directory entry name is `perstack` in any letter case.
pub(super) fn is_perstack(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.eq_ignore_ascii_case(PERSTACK_DIR))
}

/// The error an `O_NOFOLLOW` open of a symlink becomes.
pub(super) fn symlink_refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "symbolic links are not followed here",
    )
}

/// Whether `e` means "nothing there" (including a non-directory in the middle of the path).
pub(super) fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn denied() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "access outside the workspace or to its perstack directory",
    )
}

fn outside(shown: &str) -> ToolError {
    ToolError::new(format!(
        "Access denied - path outside allowed directories: {shown}"
    ))
}

/// An I/O failure on the model's path; `io::Error`'s text carries no path.
pub(super) fn io_error(shown: &str, e: &io::Error) -> ToolError {
    ToolError::new(format!("Failed to access {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_names_are_looked_up_through_directory_handles() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path(), None);
        let root = ws.open_dir(ws.root(), false).unwrap();
        assert!(root.handle_path().starts_with("/proc/self/fd/"));
        assert!(root.is_root());
        assert!(NOFOLLOW_FLAGS.is_some());
    }

    #[test]
    fn resolution_keeps_the_entry_and_checks_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path(), Some(home.path().to_path_buf()));
        let root = ws.root().to_path_buf();
        std::fs::write(root.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("f"), root.join("l")).unwrap();
        let link = ws.resolve("l").unwrap();
        assert_eq!(link.entry, root.join("l"));
        assert_eq!(link.existing_target(), Some(root.join("f").as_path()));
        let new = ws.resolve("a/b/../c").unwrap_err();
        assert!(new.message.contains("'..' cannot be resolved"), "{new:?}");
        let new = ws.resolve("./a/./b").unwrap();
        assert_eq!((new.entry, new.meta.is_none()), (root.join("a/b"), true));
        assert!(ws.resolve("~/x").is_err());
        assert!(ws.resolve("~x").is_ok());
        assert!(ws.resolve("PerStack/x").is_err());
        assert!(ws.allows(&root.join("perstackx")));
        assert!(!ws.allows(&root.join("PERSTACK")));
    }

    #[test]
    fn symlinks_are_refused_with_and_without_o_nofollow() {
        let dir = tempfile::tempdir().unwrap();
        let (file, link) = (dir.path().join("f"), dir.path().join("l"));
        std::fs::write(&file, "x").unwrap();
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for flags in [NOFOLLOW_FLAGS, None] {
            let read = || OpenOptions::new().read(true).clone();
            assert!(open_nofollow_with(flags, &file, &mut read()).is_ok());
            let err = open_nofollow_with(flags, &link, &mut read()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{flags:?}");
            let mut create = OpenOptions::new();
            create.write(true).create(true);
            let new = dir.path().join(format!("new-{flags:?}"));
            assert!(open_nofollow_with(flags, &new, &mut create).is_ok());
            assert!(open_nofollow_with(flags, &link, &mut create).is_err());
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }

    #[test]
    fn child_names_must_be_single_plain_components() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path(), None);
        let root = ws.open_dir(ws.root(), false).unwrap();
        for bad in ["..", ".", "a/b", "/etc", "perstack", "PerStack", ""] {
            assert!(root.child(OsStr::new(bad)).is_err(), "{bad}");
        }
        assert!(root.child(OsStr::new("ok.txt")).is_ok());
        assert_eq!(quote(&"x".repeat(500)).len(), MAX_QUOTED_CHARS + 3);
    }
}
