//! The SSRF guard against hostile URLs; no network (IP literals and refused names never
//! reach the resolver).

use super::*;

fn refused(url: &str) -> EndpointError {
    match parse_endpoint(url, false) {
        Ok(p) => panic!("{url} was accepted: {p:?}"),
        Err(e) => e,
    }
}

#[test]
fn hostile_urls_are_refused_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("http://example.com/mcp", "must use https, not http"),
        ("ftp://example.com/", "must use https"),
        ("https://127.0.0.1/mcp", "loopback"),
        ("https://127.1/", "loopback"),
        ("https://0x7f.1/", "loopback"),
        ("https://0x7f000001/", "loopback"),
        ("https://2130706433/", "loopback"),
        ("https://[::1]/", "loopback"),
        ("https://[::]/", "unspecified"),
        ("https://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("https://[::ffff:7f00:1]/", "IPv4-mapped"),
        ("https://[::127.0.0.1]/", "IPv4-compatible"),
        ("https://[64:ff9b::a9fe:a9fe]/", "NAT64"),
        ("https://[2002:c0a8:0101::1]/", "6to4"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://100.64.0.1/", "carrier-grade NAT"),
        ("https://0.0.0.0/", "this network"),
        ("https://0.1.2.3/", "this network"),
        ("https://10.0.0.1/", "private"),
        ("https://172.16.0.1/", "private"),
        ("https://172.31.255.255/", "private"),
        ("https://192.168.1.1/", "private"),
        ("https://192.0.0.8/", "IETF"),
        ("https://192.0.2.1/", "documentation"),
        ("https://198.18.0.1/", "benchmarking"),
        ("https://224.0.0.1/", "multicast"),
        ("https://239.255.255.250/", "multicast"),
        ("https://255.255.255.255/", "broadcast"),
        ("https://240.0.0.1/", "reserved"),
        ("https://[fd00::1]/", "unique local"),
        ("https://[fc00::1]/", "unique local"),
        ("https://[fe80::1]/", "link-local"),
        ("https://[ff02::1]/", "multicast"),
        ("https://[2001:db8::1]/", "documentation"),
        ("https://[2001::1]/", "Teredo"),
        ("https://[fec0::1]/", "site-local"),
        ("https://[100::1]/", "discard"),
        ("https://[4000::1]/", "outside global unicast"),
        ("https://xn--e1afmkfd.xn--p1ai/", "punycode"),
        ("https://пример.рф/", "punycode"),
        ("https://a.xn--p1ai/", "punycode"),
        ("https://localhost/", "local name"),
        ("https://LOCALHOST./", "local name"),
        ("https://api.localhost/", "local name"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://1.1.1.1@127.0.0.1/", "credentials"),
        ("not a url", "invalid endpoint URL"),
    ];
    let mut failures = Vec::new();
    for (url, why) in cases {
        let text = match parse_endpoint(url, false) {
            Ok(p) => format!("accepted: {p:?}"),
            Err(e) => e.to_string(),
        };
        if !text.contains(why) {
            failures.push(format!("{url}: expected {why:?}, got {text:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn public_literals_pass_and_are_pinned_without_dns() {
    for (url, addr) in [
        ("https://1.1.1.1/mcp", "1.1.1.1:443"),
        ("https://8.8.8.8:8443/", "8.8.8.8:8443"),
        (
            "https://[2606:4700:4700::1111]/",
            "[2606:4700:4700::1111]:443",
        ),
        ("https://[::ffff:1.1.1.1]/", "[::ffff:1.1.1.1]:443"),
        ("https://[2002:0808:0808::1]/", "[2002:808:808::1]:443"),
        ("https://93.184.216.34/", "93.184.216.34:443"),
        ("https://172.32.0.1/", "172.32.0.1:443"),
        ("https://100.128.0.1/", "100.128.0.1:443"),
        ("https://192.169.0.1/", "192.169.0.1:443"),
        ("https://223.255.255.1/", "223.255.255.1:443"),
    ] {
        let parsed = parse_endpoint(url, false).unwrap_or_else(|e| panic!("{url}: {e}"));
        let EndpointHost::Ip(ip) = parsed.host else {
            panic!("{url} is not a literal")
        };
        assert_eq!(SocketAddr::new(ip, parsed.port).to_string(), addr, "{url}");
    }
}

#[tokio::test]
async fn check_endpoint_pins_an_ip_literal() {
    let checked = check_endpoint("https://1.1.1.1/mcp", false).await.unwrap();
    assert_eq!(checked.addr, "1.1.1.1:443".parse().unwrap());
    assert_eq!(checked.domain, None);
    assert_eq!(checked.url.path(), "/mcp");
    let err = check_endpoint("https://[::1]:8443/", false)
        .await
        .unwrap_err();
    assert!(matches!(err, EndpointError::Blocked { .. }), "{err}");
}

#[test]
fn names_pass_the_static_checks_and_every_answer_is_checked() {
    let parsed = parse_endpoint("https://Example.COM./mcp", false).unwrap();
    assert_eq!(parsed.host, EndpointHost::Domain("example.com".into()));
    assert_eq!(parsed.port, 443);

    let public: IpAddr = "93.184.216.34".parse().unwrap();
    let private: IpAddr = "10.1.2.3".parse().unwrap();
    assert!(check_addrs("example.com", &[public], false).is_ok());
    // One bad answer among good ones refuses the host (rebinding through multiple records).
    let err = check_addrs("example.com", &[public, private], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "endpoint host example.com resolves to 10.1.2.3, which is a private address (10.0.0.0/8)"
    );
    assert!(matches!(
        check_addrs("example.com", &[], false),
        Err(EndpointError::Resolve { .. })
    ));
}

#[test]
fn the_opt_in_allows_loopback_and_plain_http_but_not_punycode() {
    let parsed = parse_endpoint("http://127.0.0.1:8080/mcp", true).unwrap();
    assert_eq!(parsed.host, EndpointHost::Ip("127.0.0.1".parse().unwrap()));
    assert!(parse_endpoint("http://localhost:1/", true).is_ok());
    assert!(parse_endpoint("https://[fd00::1]/", true).is_ok());
    assert!(matches!(
        parse_endpoint("https://xn--e1afmkfd.xn--p1ai/", true),
        Err(EndpointError::Punycode { .. })
    ));
    assert!(matches!(
        parse_endpoint("ftp://127.0.0.1/", true),
        Err(EndpointError::Scheme { .. })
    ));
    assert!(matches!(
        refused("http://127.0.0.1:8080/"),
        EndpointError::Scheme { .. }
    ));
}
