//! The sandbox's mount view, built by the trampoline in its own mount namespace (as
//! bubblewrap does), before Landlock: Landlock only allows, so it cannot hide
//! `<workspace>/perstack` inside an allowed workspace, and it does not cover Unix sockets
//! reached by path (ssh-agent, D-Bus under `/run/user`).
//!
//! Order: make every mount private (nothing propagates back to the host); open the paths to
//! bind back while they are still visible; put an empty tmpfs over each masked directory; bind
//! the held paths back (read-only unless writable); put an empty read-only tmpfs over the
//! emptied directories and `/dev/null` over the blanked files; mount a `/proc` of the new PID
//! namespace; return to the working directory through the new view.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::policy::Policy;
use super::trampoline::SetupError;

const NONE: Option<&str> = None;

/// Builds the view for `policy` in this process's (new) mount namespace.
pub(super) fn apply(policy: &Policy) -> Result<(), SetupError> {
    let cwd = std::env::current_dir().map_err(|e| SetupError::io("reading the directory", e))?;
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(|e| SetupError::new("making mounts private", e))?;

    let mut held: Vec<(OwnedFd, &super::policy::Bind)> = Vec::new();
    for bind in &policy.binds {
        match open(&bind.path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => held.push((fd, bind)),
            Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(SetupError::path("opening", &bind.path, e)),
        }
    }

    for dir in &policy.masked {
        let under_masked = policy.masked.iter().any(|m| dir.starts_with(m) && dir != m);
        if !dir.is_dir() {
            // Only create it inside an earlier tmpfs, never on the host.
            if !under_masked {
                continue;
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| SetupError::io("creating a mount point", e))?;
        }
        let mode = if dir == Path::new("/tmp") || dir == Path::new("/dev/shm") {
            "mode=1777"
        } else {
            "mode=0755"
        };
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(mode),
        )
        .map_err(|e| SetupError::path("masking", dir, e))?;
    }

    for (fd, bind) in &held {
        let is_dir = fstat(fd)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
            .map_err(|e| SetupError::path("inspecting", &bind.path, e))?;
        make_mount_point(&bind.path, is_dir)?;
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        mount(
            Some(source.as_str()),
            &bind.path,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )
        .map_err(|e| SetupError::path("binding", &bind.path, e))?;
        if !bind.writable {
            remount_read_only(&bind.path)?;
        }
    }
    drop(held);

    for dir in policy.emptied.iter().filter(|d| d.is_dir()) {
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0555"),
        )
        .map_err(|e| SetupError::path("emptying", dir, e))?;
    }
    for file in policy.blanked.iter().filter(|f| f.is_file()) {
        mount(Some("/dev/null"), file, NONE, MsFlags::MS_BIND, NONE)
            .map_err(|e| SetupError::path("blanking", file, e))?;
    }

    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    )
    .map_err(|e| SetupError::new("mounting /proc", e))?;
    nix::unistd::chdir(&cwd).map_err(|e| SetupError::path("entering", &cwd, e))?;
    Ok(())
}

/// Creates `path` in the view (a directory, or an empty file with its parents).
fn make_mount_point(path: &Path, is_dir: bool) -> Result<(), SetupError> {
    let made = if is_dir {
        std::fs::create_dir_all(path)
    } else {
        let parent = path.parent().map_or(Ok(()), std::fs::create_dir_all);
        parent.and_then(|()| {
            if path.exists() {
                Ok(())
            } else {
                std::fs::File::create(path).map(drop)
            }
        })
    };
    made.map_err(|e| SetupError::io("creating a mount point", e))
}

/// Makes the bind mount at `path` read-only, keeping the flags the kernel locks (a remount in a
/// user namespace may not clear `nosuid`, `nodev`, `noexec` or the atime flags).
fn remount_read_only(path: &Path) -> Result<(), SetupError> {
    let current = statvfs(path).map_err(|e| SetupError::path("inspecting", path, e))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    let kept = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    for (st, ms) in kept {
        if current.flags().contains(st) {
            flags |= ms;
        }
    }
    mount(NONE, path, NONE, flags, NONE).map_err(|e| SetupError::path("remounting", path, e))
}
