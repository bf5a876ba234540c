//! Whether this machine can sandbox, asked once per engine process, and which trampoline
//! binary confines processes (`perstack-sandbox`, else the `perstack` binary itself).
//!
//! The probe is cheap (a Landlock ruleset created and closed, a few `/proc/sys` reads, no
//! process started), so the CLI asks it before a confined run starts and fails with exit 2
//! when it says no. [`PROBE_OVERRIDE_ENV`]`=unavailable` makes it say no (how the
//! "unavailable" path is tested on a machine that can sandbox).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::SandboxUnavailable;

/// Set to `unavailable` to make the probe fail (tests of the refusal path).
pub const PROBE_OVERRIDE_ENV: &str = "PERSTACK_SANDBOX_PROBE";
/// The trampoline binary to use (`perstack-sandbox`, or a `perstack` binary, which has the same
/// trampoline as a hidden subcommand), for an application embedding the engine whose binaries
/// are not installed side by side. Default: `perstack-sandbox`, then `perstack`, next to the
/// running program or one directory up.
pub const TRAMPOLINE_ENV: &str = "PERSTACK_SANDBOX_EXEC";

/// The binaries that carry the trampoline, preferred first: the dedicated one (small, so cheap
/// to execute for every process), then the whole CLI (its hidden `sandbox-exec` subcommand).
const TRAMPOLINES: [&str; 2] = ["perstack-sandbox", "perstack"];

/// The kernel that has every piece: Landlock scopes (6.12) and a per-namespace `pid_max`
/// (6.14).
const MIN_KERNEL: (u32, u32) = (6, 14);

/// `Ok` when processes can be sandboxed here.
///
/// # Errors
///
/// [`SandboxUnavailable`] naming what is missing and how to fix it.
pub fn check_available() -> Result<(), SandboxUnavailable> {
    if std::env::var(PROBE_OVERRIDE_ENV).is_ok_and(|v| v == "unavailable") {
        return Err(unavailable(
            format!("{PROBE_OVERRIDE_ENV}=unavailable is set"),
            format!("unset {PROBE_OVERRIDE_ENV}"),
        ));
    }
    static KERNEL: OnceLock<Result<(), SandboxUnavailable>> = OnceLock::new();
    KERNEL.get_or_init(kernel).clone()?;
    trampoline().map(drop)
}

/// The trampoline binary, found once per engine process (the one place that decides which
/// binary confines processes): [`TRAMPOLINE_ENV`] when set; otherwise `perstack-sandbox`, then
/// `perstack`, next to this program or one directory up (as cargo lays out tests, examples
/// and benches).
pub(crate) fn trampoline() -> Result<PathBuf, SandboxUnavailable> {
    static FOUND: OnceLock<Result<PathBuf, SandboxUnavailable>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| {
                unavailable(
                    format!("cannot find this program: {e}"),
                    format!("set {TRAMPOLINE_ENV} to the perstack-sandbox binary"),
                )
            })?;
            locate_trampoline(std::env::var_os(TRAMPOLINE_ENV).map(PathBuf::from), &exe)
        })
        .clone()
}

/// The trampoline for a program at `exe`, or the one `named` by [`TRAMPOLINE_ENV`].
fn locate_trampoline(named: Option<PathBuf>, exe: &Path) -> Result<PathBuf, SandboxUnavailable> {
    if let Some(path) = named {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(unavailable(
                format!(
                    "{TRAMPOLINE_ENV} names {}, which is not a file",
                    path.display()
                ),
                format!("point {TRAMPOLINE_ENV} at the perstack-sandbox binary"),
            ))
        };
    }
    let dir = exe.parent().unwrap_or(Path::new("/"));
    TRAMPOLINES
        .iter()
        .flat_map(|name| [dir.join(name), dir.join("..").join(name)])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            unavailable(
                format!(
                    "no perstack-sandbox (or perstack) binary to confine processes with next to \
                     {}",
                    exe.display()
                ),
                format!(
                    "install perstack-sandbox next to the program, or set {TRAMPOLINE_ENV} to it"
                ),
            )
        })
}

fn kernel() -> Result<(), SandboxUnavailable> {
    if !cfg!(target_os = "linux") {
        return Err(unavailable(
            "it needs Linux (Landlock and user namespaces)",
            "run on Linux 6.14 or later",
        ));
    }
    let release = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = parse_release(&release);
    if version.is_some_and(|v| v < MIN_KERNEL) {
        return Err(unavailable(
            format!("Linux {release} is older than 6.14"),
            "upgrade the kernel to 6.14 or later",
        ));
    }
    if let Err(e) = super::landlock::ruleset() {
        return Err(unavailable(
            format!("Landlock cannot enforce the sandbox's rules ({e})"),
            "enable Landlock (boot with lsm=landlock,... on Linux 6.14 or later)",
        ));
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Err(unavailable(
            "user namespaces are disabled (user.max_user_namespaces = 0)",
            "sysctl -w user.max_user_namespaces=10000",
        ));
    }
    let root = nix::unistd::geteuid().is_root();
    if !root && read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err(unavailable(
            "unprivileged user namespaces are disabled",
            "sysctl -w kernel.unprivileged_userns_clone=1",
        ));
    }
    if !root
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        return Err(unavailable(
            "AppArmor restricts unprivileged user namespaces",
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile \
             allowing userns for the perstack binary",
        ));
    }
    Ok(())
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `6.18.0-1-amd64` → `(6, 18)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn unavailable(reason: impl Into<String>, fix: impl Into<String>) -> SandboxUnavailable {
    SandboxUnavailable {
        reason: reason.into(),
        fix: fix.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse_to_major_and_minor() {
        assert_eq!(parse_release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_release("5.15"), Some((5, 15)));
        assert_eq!(parse_release("weird"), None);
    }

    /// `cargo`'s layout: binaries in `target/<profile>/`, tests and benches in `deps/` below.
    fn layout(binaries: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("deps")).unwrap();
        for name in binaries {
            std::fs::write(root.path().join(name), "").unwrap();
        }
        let dir = root.path().to_path_buf();
        (root, dir)
    }

    #[test]
    fn the_dedicated_trampoline_is_preferred_next_to_the_program_and_one_directory_up() {
        let (_root, dir) = layout(&["perstack", "perstack-sandbox"]);
        assert_eq!(
            locate_trampoline(None, &dir.join("perstack")).unwrap(),
            dir.join("perstack-sandbox")
        );
        assert_eq!(
            locate_trampoline(None, &dir.join("deps/all-0123")).unwrap(),
            dir.join("deps/../perstack-sandbox")
        );
    }

    #[test]
    fn without_the_dedicated_trampoline_the_perstack_binary_serves() {
        let (_root, dir) = layout(&["perstack"]);
        assert_eq!(
            locate_trampoline(None, &dir.join("perstack")).unwrap(),
            dir.join("perstack")
        );
        assert_eq!(
            locate_trampoline(None, &dir.join("deps/bench-0123")).unwrap(),
            dir.join("deps/../perstack")
        );
        let (_root, empty) = layout(&[]);
        let e = locate_trampoline(None, &empty.join("app")).unwrap_err();
        assert!(e.to_string().contains(TRAMPOLINE_ENV), "{e}");
    }

    #[test]
    fn the_variable_wins_and_must_name_a_file() {
        let (_root, dir) = layout(&["perstack", "perstack-sandbox"]);
        let named = dir.join("perstack");
        assert_eq!(
            locate_trampoline(Some(named.clone()), &dir.join("perstack")).unwrap(),
            named
        );
        let e = locate_trampoline(Some(dir.join("missing")), &dir.join("perstack")).unwrap_err();
        assert!(e.to_string().contains("not a file"), "{e}");
    }

    #[test]
    fn the_refusal_names_the_fix_and_the_unconfined_way_out() {
        let e = unavailable("no Landlock", "enable Landlock");
        let text = e.to_string();
        assert!(text.contains("no Landlock") && text.contains("enable Landlock"));
        assert!(text.contains("runtime = \"local\""));
        assert_eq!(e.exit_code(), 2);
    }
}
