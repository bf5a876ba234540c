//! Build script: the link-time layout of the `perstack` binary, for the memory of one
//! `perstack run` (target T1, README Performance). It changes no code, only where the linker
//! puts it and how relocations are stored:
//!
//! - `link/perstack-run.order` lists the functions one `perstack run` of `experts/fanout`
//!   executes, in first-call order (recorded by `link/record-order.py`); the linker places them
//!   first and together in `.text`. A file-backed page counts in the resident set once mapped,
//!   and the kernel maps whole neighbourhoods around each faulting page (64 KiB or the page
//!   cache folio), so code scattered over a 16 MiB `.text` made most of it resident. A stale
//!   list (renamed or new functions) only costs layout, never correctness: unknown names are
//!   ignored. Release builds of x86_64 Linux (glibc) with rustc's default linker, `rust-lld`
//!   (rustc 1.90 and later), unless a linker is configured or `PERSTACK_NO_LINK_ORDER` is set.
//! - `-z pack-relative-relocs` (DT_RELR) stores the ~29,000 relative relocations of the
//!   position-independent binary in a few KiB instead of 700 KiB that the dynamic loader reads
//!   at every start. The binary then needs glibc 2.36 or later, so only when the build host's
//!   glibc is at least that.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/perstack-run.order");
    println!("cargo:rerun-if-env-changed=PERSTACK_NO_LINK_ORDER");
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("TARGET") != "x86_64-unknown-linux-gnu" || var("HOST") != var("TARGET") {
        return;
    }
    if !host_glibc_at_least(2, 36) {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    let default_linker = env::var_os("RUSTC_LINKER").is_none()
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("link")
        && rustc_minor().is_some_and(|minor| minor >= 90);
    if var("PROFILE") == "release"
        && default_linker
        && env::var_os("PERSTACK_NO_LINK_ORDER").is_none()
    {
        let order = format!("{}/link/perstack-run.order", var("CARGO_MANIFEST_DIR"));
        println!("cargo:rustc-link-arg-bin=perstack=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bin=perstack=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether `getconf GNU_LIBC_VERSION` reports glibc `major.minor` or later.
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// The minor version of the compiler building this crate (`rustc 1.95.0 ...` gives 95).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var_os("RUSTC")?;
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}
