//! Secrets the proxy substitutes into a sandbox's requests: the sandbox holds only a
//! placeholder, and the proxy replaces it by the real value in requests to the secret's
//! own hosts, in header values and, where declared, in the body.
//!
//! A placeholder seen in a request to any other host is left as it is (the request is
//! allowed by the egress policy and goes on unchanged) and recorded as misdirected; after
//! the secret's TTL it is no longer replaced, and that is recorded once. Inside a plain
//! CONNECT tunnel (a host listed for no secret) the proxy sees nothing: a placeholder sent
//! there goes unrecorded, which is harmless since it is only a placeholder.
//!
//! This module must never put a value in a record, an error or a `Debug` output, and never
//! replace a placeholder in a request to a host that is not listed for its secret.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nanoclaw_spec::EgressRule;
use zeroize::Zeroizing;

use crate::decision::SecretEvent;
use crate::policy::{Ask, Policy};
use crate::target::Target;

/// The most a request body is buffered for substitution; a longer one is refused (413).
pub const MAX_SUBSTITUTED_BODY: usize = 8 << 20;

/// The shortest placeholder accepted: shorter ones could occur by chance.
pub const MIN_PLACEHOLDER_LEN: usize = 8;

/// One secret the proxy substitutes for one sandbox.
///
/// `Debug` shows the name, the hosts, `body` and the time left, never the value or the
/// placeholder.
pub struct SecretSubstitution {
    /// The secret's name, for the records (never the value).
    pub name: String,
    /// What the sandbox holds instead of the value: at least `MIN_PLACEHOLDER_LEN`
    /// visible ASCII characters, different from the value.
    pub placeholder: String,
    /// The real value: visible ASCII, UTF-8 or spaces and tabs (it goes into header
    /// values), never logged.
    pub value: Zeroizing<Vec<u8>>,
    /// Where it may be substituted (each also allowed by the sandbox's policy). A host in
    /// here is intercepted: its CONNECT tunnels are TLS-terminated by the proxy.
    pub hosts: Vec<EgressRule>,
    /// Substitute in request bodies too (buffered up to `MAX_SUBSTITUTED_BODY`), not only
    /// in header values.
    pub body: bool,
    /// The end of the secret's TTL: after it the placeholder is no longer replaced.
    pub expires: Instant,
}

impl fmt::Debug for SecretSubstitution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSubstitution")
            .field("name", &self.name)
            .field("placeholder", &"[elided]")
            .field("value", &"[elided]")
            .field("hosts", &self.hosts)
            .field("body", &self.body)
            .field(
                "expires_in",
                &self.expires.saturating_duration_since(Instant::now()),
            )
            .finish()
    }
}

/// A secret refused by `Proxy::add_sandbox_with_secrets`: names it, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret {name}: {reason}")]
pub struct SecretError {
    pub name: String,
    pub reason: String,
}

/// One secret, ready for matching.
pub(crate) struct Secret {
    pub name: String,
    placeholder: Vec<u8>,
    value: Zeroizing<Vec<u8>>,
    hosts: Policy,
    rule_hosts: Vec<String>,
    pub body: bool,
    expires: Instant,
    expiry_noted: AtomicBool,
}

/// What a secret's placeholder met in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Met {
    /// Listed host, within the TTL: replaced.
    Substitute,
    /// Not a listed host: left unreplaced.
    Misdirected,
    /// Listed host, after the TTL: left unreplaced (`first`: the first time).
    Expired { first: bool },
    /// Listed host, but a cleartext (plain-HTTP) request to port 443, where the value is
    /// meant to travel only inside TLS: left unreplaced.
    Cleartext,
}

impl Met {
    /// The record this deserves, if any (an expiry is recorded once).
    pub(crate) fn event(self) -> Option<SecretEvent> {
        match self {
            Met::Substitute => Some(SecretEvent::Substituted),
            Met::Misdirected | Met::Cleartext => Some(SecretEvent::Misdirected),
            Met::Expired { first: true } => Some(SecretEvent::Expired),
            Met::Expired { first: false } => None,
        }
    }
}

impl Secret {
    fn new(secret: SecretSubstitution) -> Result<Secret, SecretError> {
        let refuse = |reason: &str| SecretError {
            name: secret.name.clone(),
            reason: reason.to_string(),
        };
        if secret.name.is_empty() {
            return Err(refuse("the name is empty"));
        }
        let placeholder = secret.placeholder.as_bytes();
        if placeholder.len() < MIN_PLACEHOLDER_LEN {
            return Err(refuse(&format!(
                "the placeholder is shorter than {MIN_PLACEHOLDER_LEN} characters"
            )));
        }
        if !placeholder.iter().all(u8::is_ascii_graphic) {
            return Err(refuse(
                "the placeholder must be visible ASCII characters only",
            ));
        }
        if secret.value.is_empty() {
            return Err(refuse("the value is empty"));
        }
        if placeholder == secret.value.as_slice() {
            return Err(refuse("the placeholder equals the value"));
        }
        let header_safe = std::str::from_utf8(&secret.value)
            .is_ok_and(|v| !v.chars().any(|c| c.is_control() && c != '\t'));
        if !header_safe {
            return Err(refuse(
                "the value cannot go into an HTTP header (not UTF-8, or a control character)",
            ));
        }
        if secret.hosts.is_empty() {
            return Err(refuse("no hosts to substitute it for"));
        }
        let hosts = Policy::new(&secret.hosts).map_err(|e| refuse(&e.to_string()))?;
        Ok(Secret {
            rule_hosts: secret.hosts.iter().map(|r| r.host.clone()).collect(),
            placeholder: placeholder.to_vec(),
            value: secret.value,
            hosts,
            body: secret.body,
            expires: secret.expires,
            expiry_noted: AtomicBool::new(false),
            name: secret.name,
        })
    }

    /// Whether `target` is one of this secret's hosts.
    pub(crate) fn lists(&self, target: &Target) -> bool {
        self.hosts.check(target, &Ask::Tunnel).is_ok()
    }

    /// What the placeholder meets in a request to `target`, sent `cleartext` (plain HTTP)
    /// or inside TLS (call only when it occurs).
    pub(crate) fn meet(&self, target: &Target, cleartext: bool) -> Met {
        if !self.lists(target) {
            Met::Misdirected
        } else if cleartext && target.port == 443 {
            Met::Cleartext
        } else if Instant::now() >= self.expires {
            Met::Expired {
                first: !self.expiry_noted.swap(true, Ordering::Relaxed),
            }
        } else {
            Met::Substitute
        }
    }

    pub(crate) fn placeholder_len(&self) -> usize {
        self.placeholder.len()
    }

    pub(crate) fn occurs_in(&self, bytes: &[u8]) -> bool {
        find(bytes, &self.placeholder, 0).is_some()
    }

    /// `bytes` with every placeholder replaced by the value.
    pub(crate) fn replace(&self, bytes: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
        let mut at = 0;
        while let Some(found) = find(bytes, &self.placeholder, at) {
            out.extend_from_slice(&bytes[at..found]);
            out.extend_from_slice(&self.value);
            at = found + self.placeholder.len();
        }
        out.extend_from_slice(&bytes[at..]);
        out
    }

    /// `text` with every placeholder replaced by the value (which is UTF-8: checked).
    pub(crate) fn replace_str(&self, text: &str) -> Zeroizing<String> {
        let replaced = self.replace(text.as_bytes());
        Zeroizing::new(String::from_utf8_lossy(&replaced).into_owned())
    }
}

/// Puts placeholders back where a response body carries a secret's value (an upstream
/// that echoes what it received), so that the sandbox does not learn the value that way.
/// Works on a stream of body data (chunk framing already removed by the caller), holding
/// back the last bytes that could be the start of a value. The replacement is as long as
/// the value, so that a Content-Length stays right: the placeholder when it is as long
/// (a placeholder "of the value's shape"), else `*` repeated.
pub(crate) struct Unsubstitute<'s> {
    secrets: Vec<(usize, &'s Secret, Zeroizing<Vec<u8>>)>,
    held: Zeroizing<Vec<u8>>,
    keep: usize,
    /// The secrets whose value was found.
    pub found: Vec<usize>,
}

impl<'s> Unsubstitute<'s> {
    pub(crate) fn new(secrets: &'s Secrets) -> Unsubstitute<'s> {
        let secrets: Vec<(usize, &Secret, Zeroizing<Vec<u8>>)> = secrets
            .list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mask = if s.placeholder.len() == s.value.len() {
                    s.placeholder.clone()
                } else {
                    vec![b'*'; s.value.len()]
                };
                (i, s, Zeroizing::new(mask))
            })
            .collect();
        let keep = secrets
            .iter()
            .map(|(_, s, _)| s.value.len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        Unsubstitute {
            secrets,
            held: Zeroizing::new(Vec::new()),
            keep,
            found: Vec::new(),
        }
    }

    /// Takes the next bytes of the stream; returns those that are ready to send.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Zeroizing<Vec<u8>> {
        if self.secrets.is_empty() {
            return Zeroizing::new(bytes.to_vec());
        }
        self.held.extend_from_slice(bytes);
        for (i, secret, mask) in &self.secrets {
            let mut at = 0;
            while let Some(found) = find(&self.held, &secret.value, at) {
                let end = found + secret.value.len();
                self.held[found..end].copy_from_slice(mask);
                at = end;
                if !self.found.contains(i) {
                    self.found.push(*i);
                }
            }
        }
        let ready = self.held.len().saturating_sub(self.keep);
        let rest = Zeroizing::new(self.held[ready..].to_vec());
        self.held.truncate(ready);
        std::mem::replace(&mut self.held, rest)
    }

    /// The end of the stream (or of one message): what was held back.
    pub(crate) fn finish(&mut self) -> Zeroizing<Vec<u8>> {
        std::mem::take(&mut self.held)
    }
}

/// `head` with every secret's value replaced by its placeholder (any lengths: a head is
/// not framed by length); the secrets found are added to `found`.
pub(crate) fn unsubstitute_head(secrets: &Secrets, head: &[u8], found: &mut Vec<usize>) -> Vec<u8> {
    let mut out = head.to_vec();
    for (i, secret) in secrets.list.iter().enumerate() {
        if find(&out, &secret.value, 0).is_none() {
            continue;
        }
        let mut replaced = Vec::with_capacity(out.len());
        let mut at = 0;
        while let Some(hit) = find(&out, &secret.value, at) {
            replaced.extend_from_slice(&out[at..hit]);
            replaced.extend_from_slice(&secret.placeholder);
            at = hit + secret.value.len();
        }
        replaced.extend_from_slice(&out[at..]);
        out = replaced;
        if !found.contains(&i) {
            found.push(i);
        }
    }
    out
}

/// The index of the first `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| from + i)
}

/// Every secret of one sandbox.
#[derive(Default)]
pub(crate) struct Secrets {
    pub list: Vec<Secret>,
}

impl Secrets {
    pub(crate) fn new(secrets: Vec<SecretSubstitution>) -> Result<Secrets, SecretError> {
        let mut list: Vec<Secret> = Vec::with_capacity(secrets.len());
        for secret in secrets {
            let secret = Secret::new(secret)?;
            if let Some(other) = list.iter().find(|s| {
                s.name == secret.name
                    || find(&s.placeholder, &secret.placeholder, 0).is_some()
                    || find(&secret.placeholder, &s.placeholder, 0).is_some()
            }) {
                let reason = if other.name == secret.name {
                    "given twice".to_string()
                } else {
                    format!("its placeholder overlaps that of {}", other.name)
                };
                return Err(SecretError {
                    name: secret.name,
                    reason,
                });
            }
            list.push(secret);
        }
        Ok(Secrets { list })
    }

    /// The host patterns of every secret's rules (`api.example.com`, `*.example.com`, an
    /// IP literal), for the CA's name constraints.
    pub(crate) fn host_patterns(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .list
            .iter()
            .flat_map(|s| s.rule_hosts.iter().cloned())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Whether a CONNECT to `target` is TLS-terminated: some secret lists it.
    pub(crate) fn intercepts(&self, target: &Target) -> bool {
        self.list.iter().any(|s| s.lists(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secret(placeholder: &str, value: &str, hosts: &[&str]) -> SecretSubstitution {
        SecretSubstitution {
            name: "TOKEN".into(),
            placeholder: placeholder.into(),
            value: Zeroizing::new(value.as_bytes().to_vec()),
            hosts: hosts
                .iter()
                .map(|h| EgressRule {
                    host: (*h).into(),
                    port: 443,
                })
                .collect(),
            body: false,
            expires: Instant::now() + Duration::from_secs(60),
        }
    }

    fn target(host: &str) -> Target {
        Target::parse_authority(host, Some(443)).unwrap()
    }

    #[test]
    fn debug_never_shows_the_value_or_placeholder() {
        let s = secret("ph-0123456789", "real-VALUE-xyz", &["api.test"]);
        let shown = format!("{s:?}");
        assert!(!shown.contains("real-VALUE-xyz") && !shown.contains("ph-0123456789"));
        assert!(shown.contains("TOKEN"), "{shown}");
    }

    #[test]
    fn replaces_every_occurrence_and_only_for_listed_hosts() {
        let s = Secret::new(secret("ph-0123456789", "VALUE", &["api.test", "*.x.test"])).unwrap();
        assert_eq!(
            &s.replace(b"a ph-0123456789 b ph-0123456789ph-0123456789")[..],
            b"a VALUE b VALUEVALUE"
        );
        assert_eq!(s.meet(&target("api.test"), false), Met::Substitute);
        assert_eq!(s.meet(&target("a.b.x.test"), false), Met::Substitute);
        assert_eq!(s.meet(&target("other.test"), false), Met::Misdirected);
        assert_eq!(s.meet(&target("api.test:444"), false), Met::Misdirected);
        // Never in cleartext to 443.
        assert_eq!(s.meet(&target("api.test"), true), Met::Cleartext);
        assert_eq!(s.meet(&target("other.test"), true), Met::Misdirected);
    }

    #[test]
    fn expiry_is_noted_once() {
        let mut raw = secret("ph-0123456789", "VALUE", &["api.test"]);
        raw.expires = Instant::now();
        let s = Secret::new(raw).unwrap();
        assert_eq!(
            s.meet(&target("api.test"), false),
            Met::Expired { first: true }
        );
        assert_eq!(
            s.meet(&target("api.test"), false),
            Met::Expired { first: false }
        );
        assert_eq!(s.meet(&target("other.test"), false), Met::Misdirected);
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        for (placeholder, value) in [
            ("short", "VALUE"),
            ("ph 0123456789", "VALUE"),
            ("ph-0123456789", ""),
            ("ph-0123456789", "ph-0123456789"),
            ("ph-0123456789", "VAL\r\nX-Injected: 1"),
        ] {
            let err = Secret::new(secret(placeholder, value, &["api.test"]))
                .err()
                .unwrap();
            assert!(err.to_string().starts_with("secret TOKEN: "), "{err}");
            if !value.is_empty() {
                assert!(!err.to_string().contains(value), "{err}");
            }
        }
        assert!(Secret::new(secret("ph-0123456789", "V", &[])).is_err());
        let twice = Secrets::new(vec![
            secret("ph-0123456789", "V", &["api.test"]),
            secret("ph-9876543210", "W", &["api.test"]),
        ]);
        assert!(twice.is_err());
    }

    #[test]
    fn values_in_responses_become_placeholders_across_reads() {
        let secrets = Secrets::new(vec![secret(
            "ph-0123456789",
            "VA-9876543210",
            &["api.test"],
        )])
        .unwrap();
        let stream = b"echo: VA-9876543210 and VA-9876543210!";
        for split in 0..stream.len() {
            let mut un = Unsubstitute::new(&secrets);
            let mut out = un.push(&stream[..split]).to_vec();
            out.extend_from_slice(&un.push(&stream[split..]));
            out.extend_from_slice(&un.finish());
            assert_eq!(
                out, b"echo: ph-0123456789 and ph-0123456789!",
                "split {split}"
            );
            assert_eq!(un.found, [0]);
        }
        // A placeholder of another length: the value is masked, the length kept.
        let secrets =
            Secrets::new(vec![secret("ph-0123456789", "VALUE-xy", &["api.test"])]).unwrap();
        let stream = b"a VALUE-xy b";
        for split in 0..stream.len() {
            let mut un = Unsubstitute::new(&secrets);
            let mut out = un.push(&stream[..split]).to_vec();
            out.extend_from_slice(&un.push(&stream[split..]));
            out.extend_from_slice(&un.finish());
            assert_eq!(out, b"a ******** b", "split {split}");
        }
        let secrets = Secrets::new(vec![secret(
            "ph-0123456789",
            "VA-9876543210",
            &["api.test"],
        )])
        .unwrap();
        let mut found = Vec::new();
        let head = unsubstitute_head(&secrets, b"X-Echo: VA-9876543210\r\n\r\n", &mut found);
        assert_eq!(head, b"X-Echo: ph-0123456789\r\n\r\n");
        assert_eq!(found, [0]);
    }
}
