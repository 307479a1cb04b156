//! One sandbox's allow list: which `host:port` destinations it may reach, and optionally,
//! for plain HTTP, which methods and path prefixes.
//!
//! Matching is on what the client *asked for*, before any lookup, so a name no rule allows
//! is never resolved (no DNS side channel). Exact names match case-insensitively;
//! `*.example.com` matches every name below example.com (`a.example.com`,
//! `a.b.example.com`) but not `example.com` itself; an IP literal rule matches only a
//! request for that same IP literal, and it is the only kind of rule that lets a request
//! reach a loopback, private or metadata address (see `address`). This module must never
//! match a name against an IP rule or an IP against a name rule.

use std::fmt;
use std::net::IpAddr;

use nanoclaw_spec::EgressRule;

use crate::target::{Host, Target};

/// The allow list of one sandbox. Empty means every request is denied.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    entries: Vec<Entry>,
}

/// Limits on plain-HTTP requests for one rule. A rule with limits allows *only* plain
/// HTTP (CONNECT and SOCKS5 carry bytes the proxy cannot inspect, so they are denied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpLimits {
    /// Allowed methods (e.g. `GET`, `HEAD`); empty allows any method.
    pub methods: Vec<String>,
    /// Allowed path prefixes (e.g. `/simple/`); empty allows any path. When set, a path
    /// with `.`/`..` segments, a backslash or an encoded `.`, `/` or `\` is denied, so
    /// that `/simple/../admin` cannot pass as `/simple/`.
    pub path_prefixes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid egress rule {rule}: {reason}")]
pub struct PolicyError {
    pub rule: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// The suffix with its leading dot: `.example.com`.
    Below(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone)]
struct Entry {
    pattern: Pattern,
    port: u16,
    http: Option<HttpLimits>,
}

/// A request as far as the policy is concerned.
pub(crate) enum Ask<'a> {
    /// CONNECT or SOCKS5: opaque bytes to `target`.
    Tunnel,
    /// Plain HTTP with this method and origin-form path (`/a/b?q`).
    Http { method: &'a str, path: &'a str },
}

/// Why a request was allowed: the rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allowed {
    pub rule: String,
    /// The rule is the request's exact IP literal: its address is not screened.
    pub exact_ip: bool,
}

impl Policy {
    /// A policy that denies everything.
    pub fn deny_all() -> Policy {
        Policy::default()
    }

    /// A policy allowing each rule for any kind of request.
    pub fn new(rules: &[EgressRule]) -> Result<Policy, PolicyError> {
        let mut policy = Policy::default();
        for rule in rules {
            policy.allow(rule)?;
        }
        Ok(policy)
    }

    /// Allows `rule` for any kind of request.
    pub fn allow(&mut self, rule: &EgressRule) -> Result<&mut Policy, PolicyError> {
        self.push(rule, None)
    }

    /// Allows `rule` for plain HTTP only, within `limits`.
    pub fn allow_http(
        &mut self,
        rule: &EgressRule,
        limits: HttpLimits,
    ) -> Result<&mut Policy, PolicyError> {
        let error = |reason| PolicyError {
            rule: show_rule(rule),
            reason,
        };
        if limits.path_prefixes.iter().any(|p| !p.starts_with('/')) {
            return Err(error("a path prefix must start with /"));
        }
        if limits
            .methods
            .iter()
            .any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(error("a method must be an uppercase word like GET"));
        }
        self.push(rule, Some(limits))
    }

    fn push(
        &mut self,
        rule: &EgressRule,
        http: Option<HttpLimits>,
    ) -> Result<&mut Policy, PolicyError> {
        let error = |reason| PolicyError {
            rule: show_rule(rule),
            reason,
        };
        if rule.port == 0 {
            return Err(error("port 0 is not a destination"));
        }
        let pattern = if let Some(suffix) = rule.host.strip_prefix("*.") {
            match Host::parse(suffix) {
                Ok(Host::Name(name)) => Pattern::Below(format!(".{name}")),
                _ => return Err(error("a wildcard must be *. followed by a host name")),
            }
        } else {
            match Host::parse(&rule.host) {
                Ok(Host::Name(name)) => Pattern::Exact(name),
                Ok(Host::Ip(ip)) => Pattern::Ip(ip),
                Err(_) if rule.host.contains('*') => {
                    return Err(error("a wildcard is only allowed as a leading *."))
                }
                Err(_) => return Err(error("not a host name or ip literal")),
            }
        };
        self.entries.push(Entry {
            pattern,
            port: rule.port,
            http,
        });
        Ok(self)
    }

    /// Whether `ask` to `target` is allowed, and by which rule; otherwise why not.
    pub(crate) fn check(&self, target: &Target, ask: &Ask<'_>) -> Result<Allowed, String> {
        let mut matching = self
            .entries
            .iter()
            .filter(|e| e.port == target.port && e.pattern.matches(&target.host))
            .peekable();
        if matching.peek().is_none() {
            return Err(format!("{target} is not in the allow list"));
        }
        let mut why_not = String::new();
        for entry in matching {
            match entry.permits(ask) {
                Ok(()) => {
                    return Ok(Allowed {
                        rule: entry.to_string(),
                        exact_ip: matches!(entry.pattern, Pattern::Ip(_)),
                    })
                }
                Err(reason) => why_not = format!("rule {entry}: {reason}"),
            }
        }
        Err(why_not)
    }
}

impl Pattern {
    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (Pattern::Exact(want), Host::Name(name)) => want == name,
            (Pattern::Below(suffix), Host::Name(name)) => {
                name.len() > suffix.len() && name.ends_with(suffix.as_str())
            }
            (Pattern::Ip(want), Host::Ip(ip)) => want == ip,
            _ => false,
        }
    }
}

impl Entry {
    fn permits(&self, ask: &Ask<'_>) -> Result<(), &'static str> {
        let Some(limits) = &self.http else {
            return Ok(());
        };
        let Ask::Http { method, path } = ask else {
            return Err("allows plain http only, not a tunnel");
        };
        if !limits.methods.is_empty() && !limits.methods.iter().any(|m| m == method) {
            return Err("method not allowed");
        }
        if limits.path_prefixes.is_empty() {
            return Ok(());
        }
        let path = path.split('?').next().unwrap_or_default();
        if is_ambiguous_path(path) {
            return Err("path has dot segments or encoded separators");
        }
        if limits
            .path_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            Ok(())
        } else {
            Err("path is not under an allowed prefix")
        }
    }
}

/// A path an upstream might normalise into one outside the prefix it seems to be under.
fn is_ambiguous_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.split('/').any(|s| s == "." || s == "..")
        || path.contains('\\')
        || ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e))
}

fn show_rule(rule: &EgressRule) -> String {
    format!("{}:{}", rule.host, rule.port)
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            Pattern::Exact(name) => write!(f, "{name}:{}", self.port),
            Pattern::Below(suffix) => write!(f, "*{suffix}:{}", self.port),
            Pattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Pattern::Ip(ip) => write!(f, "{ip}:{}", self.port),
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

    fn policy(rules: &[(&str, u16)]) -> Policy {
        let rules: Vec<_> = rules.iter().map(|(h, p)| rule(h, *p)).collect();
        Policy::new(&rules).unwrap()
    }

    fn tunnel(p: &Policy, authority: &str) -> Result<Allowed, String> {
        p.check(
            &Target::parse_authority(authority, None).unwrap(),
            &Ask::Tunnel,
        )
    }

    #[test]
    fn exact_names_match_case_insensitively_and_only_on_their_port() {
        let p = policy(&[("API.GitHub.com", 443)]);
        assert!(tunnel(&p, "api.github.com:443").is_ok());
        assert!(tunnel(&p, "API.GITHUB.COM.:443").is_ok());
        assert_eq!(
            tunnel(&p, "api.github.com:80").unwrap_err(),
            "api.github.com:80 is not in the allow list"
        );
        assert!(tunnel(&p, "github.com:443").is_err());
        assert!(tunnel(&p, "xapi.github.com:443").is_err());
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = policy(&[("*.pypi.org", 443)]);
        assert!(tunnel(&p, "files.pypi.org:443").is_ok());
        assert!(tunnel(&p, "a.b.pypi.org:443").is_ok());
        assert!(tunnel(&p, "pypi.org:443").is_err());
        assert!(tunnel(&p, "evilpypi.org:443").is_err());
        assert!(tunnel(&p, "pypi.org.evil.com:443").is_err());
    }

    #[test]
    fn ip_rules_match_only_the_same_ip_literal() {
        let p = policy(&[("127.0.0.1", 8080), ("[::1]", 8080)]);
        let allowed = tunnel(&p, "127.0.0.1:8080").unwrap();
        assert!(allowed.exact_ip);
        assert_eq!(allowed.rule, "127.0.0.1:8080");
        assert!(tunnel(&p, "[::1]:8080").unwrap().exact_ip);
        assert!(tunnel(&p, "localhost:8080").is_err());
        assert!(tunnel(&p, "[::ffff:127.0.0.1]:8080").is_err());
        assert!(tunnel(&p, "127.0.0.2:8080").is_err());
        // A name rule never matches an IP literal, even one it resolves to.
        let p = policy(&[("localhost", 8080)]);
        assert!(tunnel(&p, "127.0.0.1:8080").is_err());
        assert!(!tunnel(&p, "localhost:8080").unwrap().exact_ip);
    }

    #[test]
    fn invalid_rules_are_refused() {
        for (host, port) in [
            ("*", 443),
            ("*.", 443),
            ("a.*.com", 443),
            ("*.127.0.0.1", 443),
            ("api.test", 0),
            ("http://api.test", 80),
            ("127.1", 80),
        ] {
            assert!(Policy::new(&[rule(host, port)]).is_err(), "{host}:{port}");
        }
    }

    #[test]
    fn http_limits_allow_only_matching_plain_http() {
        let mut p = Policy::deny_all();
        p.allow_http(
            &rule("pypi.test", 80),
            HttpLimits {
                methods: vec!["GET".into(), "HEAD".into()],
                path_prefixes: vec!["/simple/".into()],
            },
        )
        .unwrap();
        let t = Target::parse_authority("pypi.test:80", None).unwrap();
        let http = |method, path| p.check(&t, &Ask::Http { method, path });
        assert!(http("GET", "/simple/requests/").is_ok());
        assert!(http("HEAD", "/simple/?q=1").is_ok());
        assert!(http("POST", "/simple/").unwrap_err().contains("method"));
        assert!(http("GET", "/admin").unwrap_err().contains("prefix"));
        for sneaky in [
            "/simple/../admin",
            "/simple/%2e%2e/admin",
            "/simple/%2E%2E%2Fadmin",
            "/simple/..%5cadmin",
            "/simple/.\\admin",
        ] {
            assert!(http("GET", sneaky).is_err(), "{sneaky}");
        }
        assert!(p
            .check(&t, &Ask::Tunnel)
            .unwrap_err()
            .contains("plain http only"));
    }

    #[test]
    fn an_unrestricted_rule_wins_over_a_restricted_one() {
        let mut p = policy(&[("api.test", 80)]);
        p.allow_http(
            &rule("*.test", 80),
            HttpLimits {
                methods: vec!["GET".into()],
                path_prefixes: vec![],
            },
        )
        .unwrap();
        let t = Target::parse_authority("api.test:80", None).unwrap();
        let ask = Ask::Http {
            method: "POST",
            path: "/",
        };
        assert!(p.check(&t, &ask).is_ok());
    }
}
