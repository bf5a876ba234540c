//! Landlock for the sandbox's files, signal and abstract-socket scoping, and the drop of every
//! capability the trampoline held in its user namespace: the last restrictions before the
//! program starts, inherited by everything it starts.
//!
//! Landlock runs with [`CompatLevel::HardRequirement`]: on a kernel that cannot enforce every
//! requested right (filesystem rights of ABI 5, scopes of ABI 6) it fails instead of enforcing
//! less. [`super::probe`] asks the same question before a run starts.

use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetError, Scope,
};
use rustix::thread::{CapabilitiesSecureBits, CapabilitySet, CapabilitySets};

use super::policy::Policy;
use super::trampoline::SetupError;

/// The filesystem rights handled (everything up to `ioctl` on devices).
const FS_ABI: ABI = ABI::V5;
/// The scopes handled (signals and abstract Unix sockets).
const SCOPE_ABI: ABI = ABI::V6;

/// A ruleset handling every right this sandbox restricts, refusing to enforce less.
pub(super) fn ruleset() -> Result<RulesetCreated, RulesetError> {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(FS_ABI))?
        .scope(Scope::from_all(SCOPE_ABI))?
        .create()
}

/// Restricts this process to `policy`'s paths, then drops every capability (also for the
/// programs it will execute, though they run as uid 0 of the namespace).
pub(super) fn restrict(policy: &Policy) -> Result<(), SetupError> {
    let fail = |e: RulesetError| SetupError::landlock(e);
    let mut created = ruleset().map_err(fail)?;
    let rules = policy
        .read_write
        .iter()
        .map(|p| (p, AccessFs::from_all(FS_ABI)))
        .chain(
            policy
                .read_only
                .iter()
                .map(|p| (p, AccessFs::from_read(FS_ABI))),
        );
    for (path, access) in rules {
        let Some((fd, access)) = rule(path, access) else {
            continue;
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(fail)?;
    }
    created.restrict_self().map_err(fail)?;
    drop_capabilities()
}

/// The rule for `path`, when it exists in the view: a file gets only the rights that apply
/// to files.
fn rule(path: &Path, access: BitFlags<AccessFs>) -> Option<(PathFd, BitFlags<AccessFs>)> {
    let meta = std::fs::metadata(path).ok()?;
    let access = if meta.is_dir() {
        access
    } else {
        access & AccessFs::from_file(FS_ABI)
    };
    Some((PathFd::new(path).ok()?, access))
}

/// No capabilities now, and none regained by executing a program as uid 0.
fn drop_capabilities() -> Result<(), SetupError> {
    let fail = |e: rustix::io::Errno| SetupError::new("dropping capabilities", e);
    rustix::thread::set_capabilities_secure_bits(
        CapabilitiesSecureBits::NO_ROOT
            | CapabilitiesSecureBits::NO_ROOT_LOCKED
            | CapabilitiesSecureBits::NO_SETUID_FIXUP
            | CapabilitiesSecureBits::NO_SETUID_FIXUP_LOCKED
            | CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE
            | CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE_LOCKED,
    )
    .map_err(fail)?;
    rustix::thread::clear_ambient_capability_set().map_err(fail)?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(fail)
}
