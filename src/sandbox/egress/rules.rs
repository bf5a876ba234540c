//! The egress allow-list: which `CONNECT` targets a sandboxed process may reach. Pure: no I/O,
//! no DNS; the proxy asks [`AllowList::check`] and acts on the answer.
//!
//! The rules are Perstack's (its Squid configuration and `allowedDomains` schema):
//!
//! - an entry is an exact domain (`api.example.com`) or a wildcard prefix (`*.example.com`);
//!   a wildcard matches every subdomain **and the apex itself**, because Perstack writes it to
//!   Squid as `.example.com`, which matches both;
//! - names compare without case and without a trailing dot;
//! - punycode (`xn--` labels) is refused, in entries and in requested hosts;
//! - only port 443 is reachable (Squid's `deny CONNECT !SSL_ports`), only by `CONNECT`;
//! - IP literals are refused (Squid refuses private ranges; a public IP literal could only be
//!   reached by address, which no allow-list entry names);
//! - [`REGISTRY_DOMAINS`] are always allowed, so `npx` and `uvx` can fetch packages.
//!
//! What differs from Perstack: the provider's API domain and the Perstack API host are not added,
//! because the engine itself (which calls them) runs outside the sandbox; and the Python
//! registries are added, which Perstack's list lacks although its image installs `uv`.

use std::net::IpAddr;

/// The package registries every sandboxed process may reach: npm's for `npx` (Perstack's own
/// list) and PyPI's index and file host for `uvx`.
pub(crate) const REGISTRY_DOMAINS: &[&str] =
    &["registry.npmjs.org", "pypi.org", "files.pythonhosted.org"];

/// The only port a tunnel may go to (HTTPS).
pub(crate) const HTTPS_PORT: u16 = 443;

/// Why a pattern or a requested host is not a valid domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DomainError {
    /// A label is punycode (`xn--`): internationalised names are refused.
    #[error("punycode (xn--) domains are not allowed")]
    Punycode,
    /// The text is an IP address, not a name.
    #[error("IP addresses are not allowed, only domain names")]
    IpLiteral,
    /// Not `label(.label)*` with labels of letters, digits and inner hyphens.
    #[error("not a domain name")]
    Syntax,
}

/// Why a `CONNECT` was refused: each variant is one `reason` of a blocked `proxyAccess` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Blocked {
    /// The host is a valid name that no entry matches (Perstack's reason, word for word).
    #[error("Domain not in allowlist")]
    NotAllowed,
    /// The host is not an acceptable name.
    #[error("{0}")]
    Domain(DomainError),
    /// The port is not 443.
    #[error("Port {0} is not allowed, only 443")]
    Port(u16),
    /// Not a `CONNECT` (plain HTTP through the proxy).
    #[error("Only HTTPS through CONNECT is allowed, not {0}")]
    Method(String),
    /// The request headers did not fit the limit.
    #[error("Request headers too large")]
    HeadersTooLarge,
    /// The name resolved only to addresses the proxy never connects to.
    #[error("Domain resolves to a non-public address ({0})")]
    NonPublicAddress(&'static str),
    /// The name did not resolve or the upstream did not accept the connection in time.
    #[error("Upstream unreachable: {0}")]
    Unreachable(String),
    /// The proxy is at its limit of concurrent tunnels.
    #[error("Too many concurrent connections")]
    Busy,
}

impl Blocked {
    /// The HTTP status the client gets.
    pub(crate) fn status(&self) -> &'static str {
        match self {
            Blocked::HeadersTooLarge => "431 Request Header Fields Too Large",
            Blocked::Unreachable(_) => "502 Bad Gateway",
            Blocked::Busy => "503 Service Unavailable",
            _ => "403 Forbidden",
        }
    }
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DomainPattern {
    /// This name only.
    Exact(String),
    /// This name and every name below it (`*.example.com` stored as `example.com`).
    Wildcard(String),
}

impl DomainPattern {
    /// Parses an `allowedDomains` entry: the one check of its syntax (config validation calls
    /// it too).
    pub(crate) fn parse(entry: &str) -> Result<DomainPattern, DomainError> {
        match entry.strip_prefix("*.") {
            Some(rest) => Ok(DomainPattern::Wildcard(normalize_host(rest)?)),
            None => Ok(DomainPattern::Exact(normalize_host(entry)?)),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            DomainPattern::Exact(name) => host == name,
            DomainPattern::Wildcard(apex) => {
                host == apex
                    || host
                        .strip_suffix(apex.as_str())
                        .is_some_and(|sub| sub.ends_with('.'))
            }
        }
    }
}

/// A lower-case name without a trailing dot, or why `host` is not one.
pub(crate) fn normalize_host(host: &str) -> Result<String, DomainError> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if bracketed.unwrap_or(host).parse::<IpAddr>().is_ok() {
        return Err(DomainError::IpLiteral);
    }
    let host = host.to_ascii_lowercase();
    let labels_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !labels_ok {
        return Err(DomainError::Syntax);
    }
    if host.split('.').any(|label| label.starts_with("xn--")) {
        return Err(DomainError::Punycode);
    }
    Ok(host)
}

/// The domains one sandboxed process may reach.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowList {
    patterns: Vec<DomainPattern>,
}

impl AllowList {
    /// The registries plus `entries` (a skill's `allowedDomains`). An entry that does not parse
    /// is left out: configuration loading has refused it already, so this only guards callers
    /// that build lists by hand.
    pub(crate) fn new<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> AllowList {
        let patterns = REGISTRY_DOMAINS
            .iter()
            .map(|d| DomainPattern::Exact((*d).to_owned()))
            .chain(
                entries
                    .into_iter()
                    .filter_map(|e| DomainPattern::parse(e.as_ref()).ok()),
            )
            .collect();
        AllowList { patterns }
    }

    /// Whether a `CONNECT host:port` may go through; `Ok` carries the normalised host.
    pub(crate) fn check(&self, host: &str, port: u16) -> Result<String, Blocked> {
        let host = normalize_host(host).map_err(Blocked::Domain)?;
        if port != HTTPS_PORT {
            return Err(Blocked::Port(port));
        }
        if self.patterns.iter().any(|p| p.matches(&host)) {
            Ok(host)
        } else {
            Err(Blocked::NotAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::new(entries.iter().copied())
    }

    #[test]
    fn an_exact_entry_matches_only_that_name() {
        let l = list(&["api.example.com"]);
        assert_eq!(
            l.check("api.example.com", 443),
            Ok("api.example.com".into())
        );
        assert_eq!(
            l.check("API.Example.COM.", 443),
            Ok("api.example.com".into())
        );
        assert_eq!(l.check("example.com", 443), Err(Blocked::NotAllowed));
        assert_eq!(l.check("x.api.example.com", 443), Err(Blocked::NotAllowed));
        assert_eq!(
            l.check("api.example.com.evil", 443),
            Err(Blocked::NotAllowed)
        );
    }

    #[test]
    fn a_wildcard_matches_subdomains_and_the_apex_as_squid_does() {
        let l = list(&["*.example.com"]);
        for host in ["example.com", "a.example.com", "a.b.example.com"] {
            assert!(l.check(host, 443).is_ok(), "{host}");
        }
        for host in ["badexample.com", "example.com.evil.net", "com"] {
            assert_eq!(l.check(host, 443), Err(Blocked::NotAllowed), "{host}");
        }
    }

    #[test]
    fn punycode_is_refused_in_entries_and_hosts() {
        assert_eq!(
            DomainPattern::parse("xn--e1afmkfd.xn--p1ai"),
            Err(DomainError::Punycode)
        );
        assert_eq!(
            DomainPattern::parse("*.xn--p1ai"),
            Err(DomainError::Punycode)
        );
        let l = list(&["*.example.com", "xn--e1afmkfd.example.org"]);
        assert_eq!(
            l.check("xn--80ak6aa92e.example.com", 443),
            Err(Blocked::Domain(DomainError::Punycode))
        );
        assert_eq!(
            l.check("xn--e1afmkfd.example.org", 443),
            Err(Blocked::Domain(DomainError::Punycode))
        );
    }

    #[test]
    fn ip_literals_and_bad_names_are_refused() {
        let l = list(&["*.example.com"]);
        for host in ["127.0.0.1", "8.8.8.8", "::1", "[::1]", "[2001:db8::1]"] {
            assert_eq!(
                l.check(host, 443),
                Err(Blocked::Domain(DomainError::IpLiteral)),
                "{host}"
            );
        }
        for host in [
            "",
            "a..example.com",
            "-a.example.com",
            "a_b.example.com",
            "a b",
        ] {
            assert_eq!(
                l.check(host, 443),
                Err(Blocked::Domain(DomainError::Syntax)),
                "{host:?}"
            );
        }
    }

    #[test]
    fn only_port_443_is_reachable() {
        let l = list(&["example.com"]);
        assert_eq!(l.check("example.com", 80), Err(Blocked::Port(80)));
        assert_eq!(l.check("example.com", 22), Err(Blocked::Port(22)));
    }

    #[test]
    fn the_registries_are_always_allowed() {
        let l = AllowList::new(Vec::<String>::new());
        for host in REGISTRY_DOMAINS {
            assert!(l.check(host, 443).is_ok(), "{host}");
        }
        assert_eq!(l.check("example.com", 443), Err(Blocked::NotAllowed));
    }

    #[test]
    fn a_name_glued_onto_the_apex_into_a_punycode_label_is_refused_as_punycode() {
        // Found by the wildcard property below: `x` + `n--0` is `xn--0`.
        let l = list(&["*.n--0"]);
        assert!(l.check("x.n--0", 443).is_ok());
        assert_eq!(
            l.check("xn--0", 443),
            Err(Blocked::Domain(DomainError::Punycode))
        );
    }

    #[test]
    fn the_blocked_reason_for_an_unlisted_domain_is_perstacks() {
        assert_eq!(Blocked::NotAllowed.to_string(), "Domain not in allowlist");
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z]([a-z0-9-]{0,8}[a-z0-9])?".prop_filter("no punycode", |l| !l.starts_with("xn--"))
    }

    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(label(), 1..4).prop_map(|ls| ls.join("."))
    }

    proptest! {
        #[test]
        fn a_wildcard_matches_exactly_the_names_that_end_in_dot_apex(
            apex in name(), sub in name(), other in name()
        ) {
            let l = list(&[&format!("*.{apex}")]);
            let below = format!("{sub}.{apex}");
            prop_assert!(l.check(&apex, 443).is_ok());
            prop_assert!(l.check(&below, 443).is_ok());
            prop_assert!(l.check(&below.to_uppercase(), 443).is_ok());
            let expected = other == apex || other.ends_with(&format!(".{apex}"))
                || REGISTRY_DOMAINS.contains(&other.as_str());
            prop_assert_eq!(l.check(&other, 443).is_ok(), expected);
            // A name that merely ends with the apex's text, without a dot, never matches
            // (gluing can also make a punycode label, `x` + `n--0`: refused as such).
            let glued = format!("{sub}{apex}");
            if glued != apex && !glued.ends_with(&format!(".{apex}")) {
                let refusal = if glued.split('.').any(|label| label.starts_with("xn--")) {
                    Blocked::Domain(DomainError::Punycode)
                } else {
                    Blocked::NotAllowed
                };
                prop_assert_eq!(l.check(&glued, 443), Err(refusal));
            }
        }

        #[test]
        fn an_exact_entry_matches_only_itself(entry in name(), other in name()) {
            let l = list(&[&entry]);
            let expected = other == entry || REGISTRY_DOMAINS.contains(&other.as_str());
            prop_assert_eq!(l.check(&other, 443).is_ok(), expected);
        }

        #[test]
        fn any_punycode_label_is_refused(
            before in name(), puny in "[a-z0-9]{1,8}", after in name()
        ) {
            let host = format!("{before}.xn--{puny}.{after}");
            let l = list(&[&format!("*.{after}")]);
            prop_assert_eq!(
                l.check(&host, 443),
                Err(Blocked::Domain(DomainError::Punycode))
            );
        }

        #[test]
        fn no_port_but_443_passes(host in name(), port in any::<u16>()) {
            let l = list(&[&host]);
            prop_assert_eq!(l.check(&host, port).is_ok(), port == 443);
        }
    }
}
