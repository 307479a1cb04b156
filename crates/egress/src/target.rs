//! What a client asks to reach: a host (a DNS name or an IP literal) and a port, parsed
//! from a CONNECT authority, an absolute-form URL, a Host header or a SOCKS5 request.
//!
//! Parsing is strict on purpose. A name must be a plain DNS name whose last label starts
//! with a letter, so that no system resolver can read it as an address in another
//! notation (`127.1`, `2130706433`, `0x7f000001`); an IP literal must be in the canonical
//! dotted-quad or RFC 4291 form. This module must never accept a host that means one thing
//! to the policy and another to the resolver.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A host a client named: a normalised DNS name (lowercase, no trailing dot) or an IP.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

/// A host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?} is not a valid host name or ip literal")]
    Host(String),
    #[error("{0:?} is not a valid port")]
    Port(String),
    #[error("{0:?} has no port")]
    MissingPort(String),
}

impl Host {
    /// Parses a host as written in a URL authority (IPv6 in brackets), in a SOCKS5 domain
    /// field or in a rule (IPv6 with or without brackets).
    pub fn parse(text: &str) -> Result<Host, TargetError> {
        let bad = || TargetError::Host(text.to_string());
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(bad)?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| bad());
        }
        if let Ok(ip) = text.parse::<Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        if let Ok(ip) = text.parse::<Ipv6Addr>() {
            return Ok(Host::Ip(IpAddr::V6(ip)));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        if is_dns_name(&name) {
            Ok(Host::Name(name))
        } else {
            Err(bad())
        }
    }
}

/// A DNS name of 1–253 characters in labels of 1–63 `[a-z0-9_-]`, no label starting or
/// ending with `-`, and a last label that starts with a letter (so it is never numeric).
pub(crate) fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    let last_starts_with_letter = name
        .rsplit('.')
        .next()
        .and_then(|label| label.bytes().next())
        .is_some_and(|b| b.is_ascii_lowercase());
    labels_ok && last_starts_with_letter
}

impl Target {
    /// Parses `host:port`, `[v6]:port`, or (with a default port) a bare host.
    pub fn parse_authority(text: &str, default_port: Option<u16>) -> Result<Target, TargetError> {
        let (host, port) = if text.starts_with('[') {
            match text.find(']') {
                Some(end) => {
                    let rest = &text[end + 1..];
                    let port = match rest.strip_prefix(':') {
                        Some(port) => Some(port),
                        None if rest.is_empty() => None,
                        None => return Err(TargetError::Host(text.to_string())),
                    };
                    (&text[..=end], port)
                }
                None => return Err(TargetError::Host(text.to_string())),
            }
        } else {
            match text.rsplit_once(':') {
                // A bare IPv6 literal without brackets is ambiguous in an authority.
                Some((host, _)) if host.contains(':') => {
                    return Err(TargetError::Host(text.to_string()))
                }
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let port = match port {
            Some(port) => parse_port(port)?,
            None => default_port.ok_or_else(|| TargetError::MissingPort(text.to_string()))?,
        };
        Ok(Target {
            host: Host::parse(host)?,
            port,
        })
    }
}

fn parse_port(text: &str) -> Result<u16, TargetError> {
    let bad = || TargetError::Port(text.to_string());
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

impl fmt::Display for Host {
    /// Names as they are, IPs without brackets (the form records carry).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for Target {
    /// `host:port`, with IPv6 in brackets: the form a Host header or a URL uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            host => write!(f, "{host}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    #[test]
    fn names_are_lowercased_and_lose_one_trailing_dot() {
        assert_eq!(Host::parse("API.Example.COM."), Ok(name("api.example.com")));
        assert_eq!(Host::parse("localhost"), Ok(name("localhost")));
        assert_eq!(Host::parse("_srv.x-y.test"), Ok(name("_srv.x-y.test")));
    }

    #[test]
    fn numeric_forms_a_resolver_would_read_as_addresses_are_refused() {
        for bad in [
            "127.1",
            "2130706433",
            "0x7f000001",
            "0x7f.0.0.1",
            "017.0.0.1",
            "1.2.3.4.5",
            "a..b",
            "-a.com",
            "a-.com",
            "exa mple.com",
            "ex%41mple.com",
            "fe80::1%eth0",
            "",
            ".",
            "a.com..",
            "[::1",
            "[127.0.0.1]",
            "bücher.de",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn ip_literals_parse_in_canonical_forms() {
        assert_eq!(
            Host::parse("127.0.0.1"),
            Ok(Host::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(Host::parse("[::1]"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(Host::parse("::1"), Ok(Host::Ip("::1".parse().unwrap())));
    }

    #[test]
    fn authorities() {
        let t = Target::parse_authority("Api.Test:8443", None).unwrap();
        assert_eq!((t.host, t.port), (name("api.test"), 8443));
        let t = Target::parse_authority("[::1]:80", None).unwrap();
        assert_eq!(t.to_string(), "[::1]:80");
        let t = Target::parse_authority("api.test", Some(80)).unwrap();
        assert_eq!(t.port, 80);
        assert_eq!(Target::parse_authority("[::1]", Some(80)).unwrap().port, 80);
        for bad in [
            "api.test",
            "api.test:",
            "api.test:0",
            "api.test:65536",
            "api.test:+80",
            "api.test:80x",
            "::1:80",
            "[::1]x:80",
            "a@b.test:80",
        ] {
            assert!(
                Target::parse_authority(bad, None).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
