//! The native Linux sandbox every process started for an Expert runs in (issue 11).
//!
//! - [`egress`]: the only way out of a sandbox's network namespace: an HTTPS `CONNECT` proxy in
//!   the engine applying the skill's `allowedDomains`, reached through a forwarder inside the
//!   sandbox, and reporting each decision as a `proxyAccess` event.

// The launcher and the trampoline wire the proxy and the forwarder in (issue 11, in progress);
// until then only the tests and the configuration's pattern check use this module.
#[allow(dead_code)]
pub(crate) mod egress;
