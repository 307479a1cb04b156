//! Egress destinations as a policy writes them (`host:port`), and how broad each one is.
//!
//! The breadth check is an approximation: a wildcard is "broader than one registrable
//! domain" when what follows `*.` is a single label (`com`) or one of a short built-in list
//! of multi-label public suffixes (`co.uk`, `github.io`, ...). It is not the Public Suffix
//! List, and it must never be read as a guarantee that a narrower wildcard is safe: the
//! egress proxy, not this module, decides what a sandbox reaches.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nanoclaw_spec::{address, EgressRule};

/// Public suffixes with more than one label, where `*.SUFFIX` spans many owners. A small
/// sample of the Public Suffix List: the country second levels and shared hosting domains
/// most likely to appear in a policy.
const MULTI_LABEL_SUFFIXES: &[&str] = &[
    "ac.uk",
    "co.uk",
    "gov.uk",
    "ltd.uk",
    "me.uk",
    "net.uk",
    "org.uk",
    "plc.uk",
    "com.au",
    "edu.au",
    "gov.au",
    "net.au",
    "org.au",
    "co.nz",
    "org.nz",
    "co.jp",
    "ne.jp",
    "or.jp",
    "ac.jp",
    "co.kr",
    "co.in",
    "net.in",
    "org.in",
    "co.za",
    "com.br",
    "com.cn",
    "net.cn",
    "org.cn",
    "com.hk",
    "com.mx",
    "com.sg",
    "com.tr",
    "com.tw",
    "co.il",
    "github.io",
    "githubusercontent.com",
    "gitlab.io",
    "pages.dev",
    "workers.dev",
    "vercel.app",
    "netlify.app",
    "web.app",
    "firebaseapp.com",
    "appspot.com",
    "herokuapp.com",
    "azurewebsites.net",
    "blob.core.windows.net",
    "cloudfront.net",
    "amazonaws.com",
    "s3.amazonaws.com",
    "blogspot.com",
    "ngrok.io",
    "ngrok-free.app",
];

/// Parses `HOST:PORT`: a host name, `*.` and a domain, `*`, an IPv4 address or `[IPv6]`,
/// then a port from 1 to 65535. Host names are lowercased.
pub fn parse_rule(text: &str) -> Result<EgressRule, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "missing `:PORT`".to_string())?;
    let port: u16 = match port.parse() {
        Ok(0) | Err(_) => return Err(format!("invalid port {port:?}: expected 1 to 65535")),
        Ok(port) => port,
    };
    let host = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| "unclosed `[` around an IPv6 address".to_string())?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("{inner:?} is not an IPv6 address"))?;
        ip.to_string()
    } else if host.contains(':') {
        return Err("write an IPv6 address in brackets, e.g. [::1]:443".into());
    } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
        ip.to_string()
    } else if host == "*" {
        host.to_string()
    } else {
        let lower = host.to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        check_host_name(name)?;
        lower
    };
    Ok(EgressRule { host, port })
}

fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty host".into());
    }
    if name.len() > 253 {
        return Err("host name longer than 253 characters".into());
    }
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(format!(
                "{name:?} is not a host name (labels are letters, digits and inner `-`; `*` only as a leading `*.`)"
            ));
        }
    }
    let top = name.rsplit('.').next().unwrap_or(name);
    if top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{name:?} is neither a host name nor an IPv4 address"
        ));
    }
    Ok(())
}

/// Whether `host` (as parsed) matches names of more than one registrable domain.
pub fn is_broad(host: &str) -> bool {
    match host.strip_prefix("*.") {
        _ if host == "*" => true,
        Some(domain) => !domain.contains('.') || MULTI_LABEL_SUFFIXES.contains(&domain),
        None => false,
    }
}

/// Whether `host` is an address on the host itself, a private network or a cloud metadata
/// service: things an allowed proxy path would otherwise reach. An IP literal is judged by
/// the classifier the egress proxy uses (`nanoclaw_spec::address`), so the lint flags
/// exactly what the proxy refuses unless named; a name by what it says it is.
pub(crate) fn is_internal(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => address::refusal(ip).is_some(),
        Err(_) => {
            address::refused_name(host).is_some()
                || host == "localhost"
                || host.ends_with(".localhost")
                || host.ends_with(".internal")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: &str, port: u16) -> EgressRule {
        EgressRule {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_the_forms_a_policy_uses() {
        assert_eq!(
            parse_rule("api.github.com:443"),
            Ok(rule("api.github.com", 443))
        );
        assert_eq!(parse_rule("*.PyPI.org:443"), Ok(rule("*.pypi.org", 443)));
        assert_eq!(parse_rule("127.0.0.1:8080"), Ok(rule("127.0.0.1", 8080)));
        assert_eq!(parse_rule("[::1]:8080"), Ok(rule("::1", 8080)));
        assert_eq!(parse_rule("*:443"), Ok(rule("*", 443)));
    }

    #[test]
    fn refuses_malformed_destinations() {
        for bad in [
            "api.github.com",
            "api.github.com:0",
            "api.github.com:65536",
            ":443",
            "a..b:443",
            "-a.com:443",
            "foo.*.com:443",
            "**.com:443",
            "::1:443",
            "[::1:443",
            "1.2.3.999:443",
            "exa mple.com:443",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn breadth_is_one_registrable_domain() {
        for broad in ["*", "*.com", "*.co.uk", "*.github.io"] {
            assert!(is_broad(broad), "{broad}");
        }
        for narrow in ["*.pypi.org", "*.example.co.uk", "api.github.com", "com"] {
            assert!(!is_broad(narrow), "{narrow}");
        }
    }

    #[test]
    fn internal_addresses() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "::1",
            "fd00:ec2::254",
            "localhost",
            "metadata.google.internal",
            "metadata",
            // Forms the proxy refused but an older, separate lint check let through.
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "fe80::1",
            "fd12:3456::1",
            "ff02::1",
        ] {
            assert!(is_internal(internal), "{internal}");
        }
        for external in [
            "1.1.1.1",
            "api.github.com",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(external), "{external}");
        }
    }
}
