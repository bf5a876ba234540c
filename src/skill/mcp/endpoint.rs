//! The SSRF guard for HTTP MCP endpoints.
//!
//! Perstack checks SSE endpoints with string rules on the hostname, which miss IPv6 literals,
//! CGNAT, multicast, reserved ranges and anything behind DNS. This guard:
//!
//! 1. parses the URL with the WHATWG rules (`reqwest::Url`), so `0x7f.1`, `2130706433` and
//!    `127.1` are already `127.0.0.1`;
//! 2. accepts only `https` (plain `http` only with the opt-in below) and refuses credentials in
//!    the URL;
//! 3. refuses punycode (`xn--`) labels (internationalised names are converted to punycode by
//!    the parser, so they are refused too) and the names `localhost` / `*.localhost`;
//! 4. resolves the host and checks **every** address with [`blocked_range`]: loopback,
//!    private, link-local, CGNAT, `0.0.0.0/8`, ULA, multicast, unspecified, broadcast,
//!    documentation, benchmarking and other reserved ranges, and IPv6 forms that carry a
//!    blocked IPv4 address (mapped, compatible, NAT64, 6to4);
//! 5. returns the checked address, which the HTTP client is pinned to
//!    (`reqwest::ClientBuilder::resolve`), so a second DNS answer (rebinding) cannot change
//!    where it connects.
//!
//! **Opt-in:** [`check_endpoint`] with `allow_private = true` (the engine maps
//! `PERSTACK_ALLOW_PRIVATE_MCP_ENDPOINTS=1` to it) skips steps 3's local-name rule and 4's
//! address rules and also allows plain `http`: for local development and tests against
//! `127.0.0.1`. Punycode and credentials are refused either way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// Why an endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum EndpointError {
    /// The text is not a URL with a host.
    #[error("invalid endpoint URL {url:?}: {reason}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme is not `https` (or `http` with the opt-in).
    #[error("endpoint must use https, not {scheme}:")]
    Scheme {
        /// The scheme found.
        scheme: String,
    },
    /// The URL carries a user name or password.
    #[error("endpoint URL must not contain credentials")]
    Credentials,
    /// A host label is punycode (an internationalised name).
    #[error("endpoint host {host} is an internationalised (punycode) name, which is not allowed")]
    Punycode {
        /// The host.
        host: String,
    },
    /// The host name is local by definition (`localhost`).
    #[error("endpoint host {host} is a local name")]
    LocalName {
        /// The host.
        host: String,
    },
    /// The host is, or resolves to, an address in a blocked range.
    #[error("endpoint host {host} resolves to {addr}, which is {range}")]
    Blocked {
        /// The host.
        host: String,
        /// The blocked address.
        addr: IpAddr,
        /// The range it is in, in words.
        range: &'static str,
    },
    /// The host name could not be resolved.
    #[error("could not resolve endpoint host {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error, or "no addresses".
        reason: String,
    },
}

/// An endpoint that passed the guard, with the address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedEndpoint {
    /// The parsed URL.
    pub url: Url,
    /// The host name when the URL names one (`None` for an IP literal): the name the HTTP
    /// client must pin to [`CheckedEndpoint::addr`].
    pub domain: Option<String>,
    /// The checked address (with the URL's port) to connect to.
    pub addr: SocketAddr,
}

/// A URL that passed the static checks; the host may still need resolving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedEndpoint {
    /// The parsed URL.
    pub url: Url,
    /// The host: an IP literal or a (lower-case, punycode-free) domain name.
    pub host: EndpointHost,
    /// The port (explicit, or the scheme's default).
    pub port: u16,
}

/// The host part of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointHost {
    /// An IP literal (after WHATWG normalisation).
    Ip(IpAddr),
    /// A domain name.
    Domain(String),
}

/// Static checks (no DNS): scheme, credentials, punycode, local names, and the address rules
/// for IP literals.
pub(crate) fn parse_endpoint(
    raw: &str,
    allow_private: bool,
) -> Result<ParsedEndpoint, EndpointError> {
    let invalid = |reason: &str| EndpointError::Invalid {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        other => {
            return Err(EndpointError::Scheme {
                scheme: other.to_owned(),
            });
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Credentials);
    }
    let host_str = url.host_str().ok_or_else(|| invalid("no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| invalid("no port"))?;
    let host = if let Some(v6) = host_str.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = v6.parse().map_err(|_| invalid("bad IPv6 literal"))?;
        EndpointHost::Ip(IpAddr::V6(ip))
    } else if let Ok(ip) = host_str.parse::<Ipv4Addr>() {
        EndpointHost::Ip(IpAddr::V4(ip))
    } else {
        let name = host_str.trim_end_matches('.').to_ascii_lowercase();
        if name.split('.').any(|label| label.starts_with("xn--")) {
            return Err(EndpointError::Punycode { host: name });
        }
        if !allow_private && (name == "localhost" || name.ends_with(".localhost")) {
            return Err(EndpointError::LocalName { host: name });
        }
        EndpointHost::Domain(name)
    };
    if let EndpointHost::Ip(ip) = host {
        check_addrs(host_str, &[ip], allow_private)?;
    }
    Ok(ParsedEndpoint { url, host, port })
}

/// Checks every address `host` resolved to; any blocked one refuses the host (a name that
/// resolves to both a public and a private address is refused).
pub(crate) fn check_addrs(
    host: &str,
    addrs: &[IpAddr],
    allow_private: bool,
) -> Result<(), EndpointError> {
    if addrs.is_empty() {
        return Err(EndpointError::Resolve {
            host: host.to_owned(),
            reason: "no addresses".to_owned(),
        });
    }
    if allow_private {
        return Ok(());
    }
    for addr in addrs {
        if let Some(range) = blocked_range(*addr) {
            return Err(EndpointError::Blocked {
                host: host.to_owned(),
                addr: *addr,
                range,
            });
        }
    }
    Ok(())
}

/// The full guard: [`parse_endpoint`], then DNS resolution of a domain and [`check_addrs`] on
/// every answer. Returns the first address to connect to.
pub(crate) async fn check_endpoint(
    raw: &str,
    allow_private: bool,
) -> Result<CheckedEndpoint, EndpointError> {
    let parsed = parse_endpoint(raw, allow_private)?;
    match parsed.host {
        EndpointHost::Ip(ip) => Ok(CheckedEndpoint {
            url: parsed.url,
            domain: None,
            addr: SocketAddr::new(ip, parsed.port),
        }),
        EndpointHost::Domain(name) => {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), parsed.port))
                .await
                .map_err(|e| EndpointError::Resolve {
                    host: name.clone(),
                    reason: e.to_string(),
                })?
                .collect();
            let ips: Vec<IpAddr> = resolved.iter().map(SocketAddr::ip).collect();
            check_addrs(&name, &ips, allow_private)?;
            let addr = resolved
                .first()
                .copied()
                .ok_or_else(|| EndpointError::Resolve {
                    host: name.clone(),
                    reason: "no addresses".to_owned(),
                })?;
            Ok(CheckedEndpoint {
                url: parsed.url,
                domain: Some(name),
                addr,
            })
        }
    }
}

/// The blocked range `ip` is in, in words, or `None` for a public unicast address.
pub(crate) fn blocked_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "the \"this network\" range 0.0.0.0/8"),
        ([10, 0, 0, 0], 8, "a private address (10.0.0.0/8)"),
        (
            [100, 64, 0, 0],
            10,
            "a carrier-grade NAT address (100.64.0.0/10)",
        ),
        ([127, 0, 0, 0], 8, "a loopback address (127.0.0.0/8)"),
        (
            [169, 254, 0, 0],
            16,
            "a link-local address (169.254.0.0/16)",
        ),
        ([172, 16, 0, 0], 12, "a private address (172.16.0.0/12)"),
        (
            [192, 0, 0, 0],
            24,
            "an IETF protocol assignment (192.0.0.0/24)",
        ),
        ([192, 0, 2, 0], 24, "a documentation address (192.0.2.0/24)"),
        (
            [192, 88, 99, 0],
            24,
            "the 6to4 relay anycast range (192.88.99.0/24)",
        ),
        ([192, 168, 0, 0], 16, "a private address (192.168.0.0/16)"),
        (
            [198, 18, 0, 0],
            15,
            "a benchmarking address (198.18.0.0/15)",
        ),
        (
            [198, 51, 100, 0],
            24,
            "a documentation address (198.51.100.0/24)",
        ),
        (
            [203, 0, 113, 0],
            24,
            "a documentation address (203.0.113.0/24)",
        ),
        ([224, 0, 0, 0], 4, "a multicast address (224.0.0.0/4)"),
        ([255, 255, 255, 255], 32, "the broadcast address"),
        ([240, 0, 0, 0], 4, "a reserved address (240.0.0.0/4)"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, what)| *what)
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    // The IPv4 address in the low 32 bits, and the one 6to4 puts in bits 16..48.
    let low_v4 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let sixto4_v4 = Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32);
    if ip.is_unspecified() {
        return Some("the unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("a loopback address (::1)");
    }
    if in_v6(ip, 0xffff_0000_0000, 96) {
        return blocked_v4(low_v4).map(|_| "an IPv4-mapped IPv6 form of a blocked IPv4 address");
    }
    if in_v6(ip, 0, 96) {
        return blocked_v4(low_v4)
            .map(|_| "an IPv4-compatible IPv6 form of a blocked IPv4 address")
            .or(Some("an IPv4-compatible IPv6 address (deprecated, ::/96)"));
    }
    if in_v6(ip, 0x0064_ff9b << 96, 96) {
        return blocked_v4(low_v4).map(|_| "a NAT64 form (64:ff9b::/96) of a blocked IPv4 address");
    }
    const RANGES: &[(u128, u32, &str)] = &[
        (
            0x0064_ff9b_0001 << 80,
            48,
            "a local-use NAT64 address (64:ff9b:1::/48)",
        ),
        (0x0100 << 112, 64, "a discard-only address (100::/64)"),
        (0x2001_0000 << 96, 32, "a Teredo address (2001::/32)"),
        (
            0x2001_0002 << 96,
            48,
            "a benchmarking address (2001:2::/48)",
        ),
        (0x2001_0010 << 96, 28, "an ORCHID address (2001:10::/28)"),
        (
            0x2001_0db8 << 96,
            32,
            "a documentation address (2001:db8::/32)",
        ),
        (0x3fff << 112, 20, "a documentation address (3fff::/20)"),
        (0xfc00 << 112, 7, "a unique local address (fc00::/7)"),
        (0xfe80 << 112, 10, "a link-local address (fe80::/10)"),
        (0xfec0 << 112, 10, "a site-local address (fec0::/10)"),
        (0xff00 << 112, 8, "a multicast address (ff00::/8)"),
    ];
    if let Some((_, _, what)) = RANGES.iter().find(|(net, p, _)| in_v6(ip, *net, *p)) {
        return Some(what);
    }
    if in_v6(ip, 0x2002 << 112, 16) {
        return blocked_v4(sixto4_v4).map(|_| "a 6to4 form (2002::/16) of a blocked IPv4 address");
    }
    if !in_v6(ip, 0x2000 << 112, 3) {
        return Some("a reserved address (outside global unicast 2000::/3)");
    }
    None
}

#[cfg(test)]
mod tests;
