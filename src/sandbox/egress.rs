//! Egress for sandboxed processes: HTTPS to allow-listed domains through the engine's proxy,
//! nothing else. A sandboxed process lives in a network namespace of its own with only `lo`;
//! the way out is
//!
//! ```text
//! program --HTTPS_PROXY--> forwarder (127.0.0.1:3128, in the sandbox)
//!         --Unix socket--> proxy (in the engine: allow-list, proxyAccess events)
//!         --TCP--> host:443
//! ```
//!
//! | module | owns |
//! | --- | --- |
//! | [`rules`] | the allow-list: exact and `*.` patterns, punycode and IP refusal, port 443, registries |
//! | [`proxy`] | the `CONNECT` proxy on a Unix socket, its bounds, and its decisions as events |
//! | [`forwarder`] | the loopback-to-Unix-socket forwarder the sandbox trampoline runs |
//! | [`socket_dir`] | the proxy socket's private directory, its lock, and the sweep of dead engines' directories |
//!
//! This module owns the proxy variables a sandboxed process gets ([`apply_proxy_env`]): the
//! launcher calls it, and the user's own proxy settings never reach the process.

pub(crate) mod forwarder;
pub(crate) mod proxy;
pub(crate) mod rules;
pub(crate) mod socket_dir;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;

use proxy::{EgressProxy, LoopbackTargets, ProxyEvents, ProxySettings};
use rules::AllowList;

use super::SandboxScope;

/// The port the forwarder listens on inside the sandbox (Perstack's Squid listens on 3128).
pub(crate) const FORWARDER_PORT: u16 = 3128;

/// Starts the proxy for the sandboxed processes of one skill and puts its socket into `scope`:
/// `allowed` (its `allowedDomains`) plus the registries, with the default bounds and the test
/// switch as the environment sets it. The caller keeps the proxy as long as the processes and
/// drains the events.
pub(crate) fn start_proxy<S: AsRef<str>>(
    scope: &mut SandboxScope,
    allowed: impl IntoIterator<Item = S>,
) -> io::Result<(EgressProxy, ProxyEvents)> {
    let (proxy, events) = EgressProxy::start(ProxySettings {
        allow: AllowList::new(allowed),
        loopback: LoopbackTargets::from_env(),
        limits: Default::default(),
    })?;
    scope.proxy_socket = Some(proxy.socket_path().to_owned());
    Ok((proxy, events))
}

/// Names that configure a proxy for some program; none of the user's values reach a sandboxed
/// process (compared without case).
const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "PERSTACK_PROXY_URL",
    "NPM_CONFIG_PROXY",
    "NPM_CONFIG_HTTPS_PROXY",
    "NPM_CONFIG_NOPROXY",
    "NODE_USE_ENV_PROXY",
];

/// Replaces every proxy variable of `env`: the user's values never reach a sandboxed process,
/// and with `through_proxy` the forwarder's take their place: `HTTP(S)_PROXY` in both cases
/// (curl, Python, uv, Go), npm's own pair, and `NODE_USE_ENV_PROXY=1` so that Node's `fetch`
/// honours them (as Perstack's container sets `--use-env-proxy`).
pub(crate) fn apply_proxy_env(env: &mut BTreeMap<String, String>, through_proxy: bool) {
    env.retain(|name, _| !PROXY_VARS.iter().any(|p| p.eq_ignore_ascii_case(name)));
    if !through_proxy {
        return;
    }
    let url = format!("http://127.0.0.1:{FORWARDER_PORT}");
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "NPM_CONFIG_PROXY",
        "NPM_CONFIG_HTTPS_PROXY",
    ] {
        env.insert(name.to_owned(), url.clone());
    }
    env.insert("NODE_USE_ENV_PROXY".to_owned(), "1".to_owned());
}
