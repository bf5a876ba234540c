//! Hand-written matchers for Perstack's name, key, version, tag, domain and URL rules (its
//! `constants.ts` regexes), so the crate needs no regex engine.

/// Longest Expert name (`maxExpertNameLength`).
pub(super) const MAX_NAME_LEN: usize = 255;
/// Longest Expert key with version or tag (`maxExpertKeyLength`).
pub(super) const MAX_KEY_LEN: usize = 511;

/// `^(@[a-z0-9][a-z0-9_-]*\/)?[a-z0-9][a-z0-9_-]*$`: an Expert name, optionally scoped.
pub(crate) fn is_expert_name(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN && is_scoped(s, false)
}

/// `name(@semver|@tag)?`, Perstack's `expertKeyRegex`, where name and tag may also contain `.`.
pub(crate) fn is_expert_key(s: &str) -> bool {
    if s.len() > MAX_KEY_LEN {
        return false;
    }
    let (name, suffix) = match s.strip_prefix('@') {
        // The scope's `@` is not a version separator; look for one after the `/`.
        Some(rest) => match rest.find('/') {
            Some(slash) => {
                let after = slash + 2;
                match s[after..].find('@') {
                    Some(at) => (&s[..after + at], Some(&s[after + at + 1..])),
                    None => (s, None),
                }
            }
            None => return false,
        },
        None => match s.split_once('@') {
            Some((name, suffix)) => (name, Some(suffix)),
            None => (s, None),
        },
    };
    is_scoped(name, true) && suffix.is_none_or(|v| is_semver(v) || is_word(v, true))
}

/// `^[a-z0-9][a-z0-9_-]*$`: a tag.
pub(crate) fn is_tag(s: &str) -> bool {
    is_word(s, false)
}

/// `^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[\w.-]+)?(\+[\w.-]+)?$`: a semver version.
pub(crate) fn is_semver(s: &str) -> bool {
    let (rest, build) = match s.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let ext_ok = |p: Option<&str>| {
        p.is_none_or(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        })
    };
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers.iter().all(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        })
        && ext_ok(pre)
        && ext_ok(build)
}

/// An `https://` URL with a host.
pub(super) fn is_https_url(s: &str) -> bool {
    host_of(s).is_some_and(|h| !h.is_empty())
}

/// Why `url` cannot be the registry API's base URL (`perstackApiBaseUrl`,
/// `PERSTACK_API_BASE_URL`), if it cannot: it must be `https://`, except that plain `http://`
/// is accepted for a loopback host (`localhost`, `127.0.0.0/8`, `[::1]`), so that a local
/// registry (a test's, a mirror on this machine) can stand in for the real one. Nothing else
/// travels in the clear: the API key is sent with every request.
pub(crate) fn api_base_url_problem(url: &str) -> Option<&'static str> {
    if is_https_url(url) {
        return None;
    }
    let Some(rest) = url
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
    else {
        return Some("the URL must start with https:// (or http:// for a loopback host)");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Some("the URL must not carry credentials");
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then_some("plain http:// is only allowed for a loopback host; use https://")
}

/// Why an SSE endpoint is not a public https URL (Perstack's `sseEndpointSchema`), if it is not.
pub(crate) fn sse_endpoint_problem(url: &str) -> Option<&'static str> {
    let Some(host) = host_of(url) else {
        return Some("the endpoint must be an https:// URL");
    };
    if host.is_empty() {
        return Some("the endpoint URL has no host");
    }
    is_private_or_local(host).then_some(
        "the endpoint must be public: localhost and private or link-local addresses are refused",
    )
}

/// The host of an `https://` URL (without userinfo, port or brackets), or `None` for any other
/// scheme.
fn host_of(url: &str) -> Option<&str> {
    let rest = url
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("https://"))
        .map(|_| &url[8..])?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    })
}

/// Perstack's `isPrivateOrLocalIP`, plus the IPv4-mapped IPv6 forms of the private ranges.
/// The `fe80:`/`fc`/`fd` prefixes are tested on IPv6 literals only: Perstack tests them on any
/// host name, which refuses public names such as `fdroid.example`.
fn is_private_or_local(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    if matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1" | "0.0.0.0") {
        return true;
    }
    let v4 = host.strip_prefix("::ffff:").unwrap_or(&host);
    if let Ok(ip) = v4.parse::<std::net::Ipv4Addr>() {
        let [a, b, ..] = ip.octets();
        return a == 10
            || a == 127
            || (a == 172 && (16..=31).contains(&b))
            || (a == 192 && b == 168)
            || (a == 169 && b == 254);
    }
    host.contains(':')
        && (host.starts_with("fe80:") || host.starts_with("fc") || host.starts_with("fd"))
}

/// `(@word/)?word`, where `word` may contain `.` when `dots` is set.
fn is_scoped(s: &str, dots: bool) -> bool {
    match s.strip_prefix('@') {
        Some(rest) => rest
            .split_once('/')
            .is_some_and(|(scope, name)| is_word(scope, dots) && is_word(name, dots)),
        None => is_word(s, dots),
    }
}

/// `[a-z0-9][a-z0-9_-]*` (or `[a-z0-9_.-]*` after the first character when `dots`).
fn is_word(s: &str, dots: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || c == '-'
                || (dots && c == '.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expert_names_follow_perstacks_regex() {
        for ok in ["coordinator", "e2e-helper", "@org/x", "@my-org/a_b", "0x"] {
            assert!(is_expert_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Coordinator",
            "-x",
            "@org",
            "@org/",
            "@/x",
            "a.b",
            "a b",
            "@o/x@1.0.0",
        ] {
            assert!(!is_expert_name(bad), "{bad}");
        }
        assert!(!is_expert_name(&"a".repeat(256)));
    }

    #[test]
    fn expert_keys_allow_a_version_or_tag() {
        for ok in [
            "x",
            "x@1.0.0",
            "@org/x@1.2.3-beta.1+b5",
            "@org/x@stable",
            "a.b@latest",
        ] {
            assert!(is_expert_key(ok), "{ok}");
        }
        for bad in ["x@", "x@Stable", "@org@1.0.0", "x@-1", "X"] {
            assert!(!is_expert_key(bad), "{bad}");
        }
    }

    #[test]
    fn semver_and_tags() {
        assert!(is_semver("1.0.0") && is_semver("0.10.2-rc.1") && is_semver("1.0.0+x_y"));
        assert!(
            !is_semver("1.0")
                && !is_semver("01.0.0")
                && !is_semver("1.0.0-")
                && !is_semver("v1.0.0")
        );
        assert!(is_tag("stable") && is_tag("v2_x-y") && !is_tag("Stable") && !is_tag("_x"));
    }

    #[test]
    fn api_base_urls_are_https_or_loopback_http() {
        for ok in [
            "https://api.perstack.ai",
            "http://127.0.0.1:8080",
            "http://localhost:1/x",
            "http://[::1]:9",
            "http://127.3.4.5",
        ] {
            assert_eq!(api_base_url_problem(ok), None, "{ok}");
        }
        for bad in [
            "http://api.perstack.ai",
            "http://10.0.0.1",
            "http://127.0.0.1.evil.example",
            "http://u:p@127.0.0.1",
            "ftp://127.0.0.1",
            "api.perstack.ai",
        ] {
            assert!(api_base_url_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn sse_endpoints_must_be_public_https() {
        assert_eq!(sse_endpoint_problem("https://mcp.example.com/sse"), None);
        assert!(sse_endpoint_problem("http://mcp.example.com/sse").is_some());
        for private in [
            "https://localhost:8080/sse",
            "https://10.1.2.3/",
            "https://172.20.0.1/",
            "https://192.168.1.1/",
            "https://user@127.0.0.1:99/",
            "https://[::1]/",
            "https://[fd00::1]/",
        ] {
            assert!(sse_endpoint_problem(private).is_some(), "{private}");
        }
    }
}
