//! Secrets handed to one invocation: how each is delivered (`Delivery`), where the runner
//! fetches it (`SecretSource`), the value itself (`SecretValue`, zeroed on drop and never
//! printed) and the `Redactor` every backend passes the command's output through.
//!
//! A value must never reach a `Debug`, `Display` or error text: `SecretValue` prints as
//! `[secret]`, and the only serialisation of a value is the one that crosses the pipe to the
//! sandbox helper. The audit log gets `SandboxSpec::without_secret_values`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::EgressRule;

/// Where the sandbox finds a `File` secret: `SECRETS_DIR/NAME`, its path in `NAME_FILE`.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Where the sandbox finds the CA bundle of a run with `Placeholder` secrets.
pub const CA_BUNDLE_INSIDE: &str = "/run/nanoclaw-ca/ca-bundle.pem";
/// The variables that point common clients at the CA bundle.
pub const CA_BUNDLE_VARIABLES: [&str; 5] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
];
/// The largest secret value accepted from any source.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// How a secret reaches the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// A random stand-in of the same length in `NAME` (a known token prefix such as `ghp_`
    /// kept, the rest random letters and digits); the egress proxy puts the value into
    /// requests to the secret's hosts.
    Placeholder,
    /// A 0400 file on a tmpfs only this sandbox sees, its path in `NAME_FILE`.
    File,
    /// `NAME` in the command's environment (the weaker choice: the command can print it).
    Env,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Placeholder => "placeholder",
            Delivery::File => "file",
            Delivery::Env => "env",
        }
    }
}

/// Where the runner fetches a secret, on the host, at invocation time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "at")]
pub enum SecretSource {
    /// A variable of nanoclaw's own environment.
    Env(String),
    /// A regular file, read without following a symlink.
    File(PathBuf),
    /// A command run without a shell; its stdout is the value.
    Command(Vec<String>),
}

impl SecretSource {
    /// The kind recorded in the audit log ("env", "file", "command").
    pub fn kind(&self) -> &'static str {
        match self {
            SecretSource::Env(_) => "env",
            SecretSource::File(_) => "file",
            SecretSource::Command(_) => "command",
        }
    }
}

/// A secret's bytes: zeroed when dropped, printed as `[secret]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        SecretValue(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[secret]")
    }
}

impl Serialize for SecretValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Zeroizing::new(Vec::<u8>::deserialize(d)?);
        Ok(SecretValue(bytes))
    }
}

/// One secret of a sandbox. The policy's resolve fills everything but `value` and
/// `placeholder`, which the runner fills once the whole invocation is known to be valid;
/// a backend refuses a secret without a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSecret {
    pub name: String,
    pub delivery: Delivery,
    #[serde(with = "crate::spec::millis")]
    pub ttl: Duration,
    /// `Placeholder`: where the proxy may put the value.
    #[serde(default)]
    pub hosts: Vec<EgressRule>,
    /// `Placeholder`: substitute in request bodies too, not only headers.
    #[serde(default)]
    pub body: bool,
    /// The runner's business only: never sent to a backend.
    #[serde(skip)]
    pub source: Option<SecretSource>,
    #[serde(default)]
    pub value: SecretValue,
    /// `Placeholder`: what the sandbox holds in `NAME` instead of the value.
    #[serde(default)]
    pub placeholder: Option<String>,
}

impl SandboxSecret {
    /// `NAME_FILE`'s value for a `File` secret.
    pub fn file_inside(&self) -> PathBuf {
        PathBuf::from(SECRETS_DIR).join(&self.name)
    }
}

/// Replaces every secret value of one invocation in a stream of output with
/// `[REDACTED:NAME]`: raw, base64 (standard, with or without padding, at each of the three
/// alignments), base64url, hex (both cases) and URL-encoded (any mix of raw bytes and `%XX`
/// in either case, `+` for a space: `quote`, `quote_plus`, `encodeURIComponent`, curl's
/// `--data-urlencode`), also when split across reads, and also when a line break (`\n` or
/// `\r\n`) falls between any two of its characters (`base64` wraps at 76, PEM and
/// `openssl base64` at 64, `xxd -p` at 60, `fold` anywhere). It holds back the last
/// (longest match - 1) bytes until more arrive or `finish`.
#[derive(Debug, Default)]
pub struct Redactor {
    patterns: Vec<Pattern>,
    names: Vec<String>,
    counts: Vec<u64>,
    held: Zeroizing<Vec<u8>>,
    /// The most bytes one match can span.
    longest: usize,
}

/// Encodings shorter than this are not searched for: they would redact ordinary text.
const MIN_PATTERN: usize = 4;

/// One form of one secret: a sequence of units, each matching any one of its alternatives
/// (longest first); a line break may fall between two units.
#[derive(Debug)]
struct Pattern {
    units: Vec<Vec<Zeroizing<Vec<u8>>>>,
    secret: usize,
}

impl Pattern {
    /// A pattern whose every unit is exactly one byte of `form`.
    fn exact(form: &[u8], secret: usize) -> Self {
        Pattern {
            units: form
                .iter()
                .map(|&b| vec![Zeroizing::new(vec![b])])
                .collect(),
            secret,
        }
    }

    /// The most bytes a match can span: every unit at its longest, a `\r\n` between each two.
    fn max_span(&self) -> usize {
        let units: usize = self
            .units
            .iter()
            .map(|alts| alts.iter().map(|a| a.len()).max().unwrap_or(0))
            .sum();
        units + 2 * self.units.len().saturating_sub(1)
    }

    /// The length of the match at the start of `text`, if there is one. Greedy: each unit
    /// takes its longest alternative that matches, a line break is skipped only where the
    /// next unit does not match it itself.
    fn match_at(&self, text: &[u8]) -> Option<usize> {
        let mut at = 0;
        for (n, alts) in self.units.iter().enumerate() {
            let unit = |at: usize| {
                alts.iter()
                    .find(|a| text[at..].starts_with(a))
                    .map(|a| at + a.len())
            };
            at = match unit(at) {
                Some(next) => next,
                None if n > 0 => {
                    let rest = &text[at..];
                    let skip = if rest.starts_with(b"\r\n") {
                        2
                    } else if rest.starts_with(b"\n") {
                        1
                    } else {
                        return None;
                    };
                    unit(at + skip)?
                }
                None => return None,
            };
        }
        Some(at)
    }
}

impl Redactor {
    /// A redactor for `secrets` (with their values filled in).
    pub fn new(secrets: &[SandboxSecret]) -> Self {
        let mut patterns: Vec<Pattern> = Vec::new();
        for (i, secret) in secrets.iter().enumerate() {
            let value = secret.value.expose();
            let mut forms: Vec<Zeroizing<Vec<u8>>> = Vec::new();
            for form in encodings(value) {
                if form.len() >= MIN_PATTERN && !forms.contains(&form) {
                    forms.push(form);
                }
            }
            patterns.extend(forms.iter().map(|form| Pattern::exact(form, i)));
            if value.len() >= MIN_PATTERN {
                patterns.push(url_encoded(value, i));
            }
        }
        let longest = patterns.iter().map(Pattern::max_span).max().unwrap_or(0);
        Redactor {
            patterns,
            names: secrets.iter().map(|s| s.name.clone()).collect(),
            counts: vec![0; secrets.len()],
            held: Zeroizing::new(Vec::new()),
            longest,
        }
    }
    /// Whether there is anything to look for.
    pub fn is_active(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// Takes the next bytes of the stream; returns what may be passed on now.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if !self.is_active() {
            return bytes.to_vec();
        }
        self.held.extend_from_slice(bytes);
        self.scan(false)
    }

    /// The rest of the stream, once it has ended.
    pub fn finish(&mut self) -> Vec<u8> {
        self.scan(true)
    }

    /// Redactions so far, by secret name (secrets never seen are left out).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.names
            .iter()
            .zip(&self.counts)
            .filter(|(_, n)| **n > 0)
            .map(|(name, n)| (name.clone(), *n))
            .collect()
    }

    fn scan(&mut self, last: bool) -> Vec<u8> {
        let buf = &self.held;
        // A match starting before `limit` can be judged now: every pattern fits.
        let limit = if last {
            buf.len()
        } else {
            buf.len().saturating_sub(self.longest.saturating_sub(1))
        };
        let mut out = Vec::with_capacity(buf.len());
        let mut pos = 0;
        let mut at = 0;
        while at < limit {
            // The longest match of any pattern here (a padded base64 over its unpadded
            // prefix, a whole encoding over the part of it that one alignment fixes).
            let found = self
                .patterns
                .iter()
                .filter_map(|p| p.match_at(&buf[at..]).map(|len| (len, p.secret)))
                .max_by_key(|&(len, _)| len);
            match found {
                Some((len, i)) => {
                    out.extend_from_slice(&buf[pos..at]);
                    out.extend_from_slice(format!("[REDACTED:{}]", self.names[i]).as_bytes());
                    self.counts[i] += 1;
                    at += len;
                    pos = at;
                }
                None => at += 1,
            }
        }
        let keep_from = pos.max(limit);
        out.extend_from_slice(&buf[pos..keep_from]);
        let rest = Zeroizing::new(buf[keep_from..].to_vec());
        self.held = rest;
        out
    }
}

/// Merges per-stream redaction counts.
pub fn add_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (name, n) in from {
        *into.entry(name).or_default() += n;
    }
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 of `bytes` without padding.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for k in 0..chars {
            out.push(alphabet[((n >> (18 - 6 * k)) & 63) as usize]);
        }
    }
    out
}

/// Every form of `value` the redactor looks for.
fn encodings(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut forms = Vec::new();
    if value.is_empty() {
        return forms;
    }
    forms.push(Zeroizing::new(value.to_vec()));
    for alphabet in [STANDARD, URL_SAFE] {
        let whole = base64(value, alphabet);
        let mut padded = whole.clone();
        while !padded.len().is_multiple_of(4) {
            padded.push(b'=');
        }
        forms.push(Zeroizing::new(padded));
        // The value at offset k of a longer encoded text: only the characters made of its
        // own bits alone are fixed, whatever surrounds it.
        for k in 0..3usize {
            let mut shifted = vec![0u8; k];
            shifted.extend_from_slice(value);
            let encoded = Zeroizing::new(base64(&shifted, alphabet));
            let first = (8 * k).div_ceil(6);
            let end = (8 * (k + value.len())) / 6;
            if end > first {
                forms.push(Zeroizing::new(encoded[first..end].to_vec()));
            }
        }
        drop(whole);
    }
    for digits in [LOWER_HEX, UPPER_HEX] {
        let mut hex = Vec::with_capacity(value.len() * 2);
        for &b in value {
            hex.push(digits[usize::from(b >> 4)]);
            hex.push(digits[usize::from(b & 15)]);
        }
        forms.push(Zeroizing::new(hex));
    }
    forms
}

const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";
const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `value` URL-encoded by any encoder: each byte as itself, as `%XX` in either case, and a
/// space also as `+`. One pattern covers every choice of which bytes are left unencoded
/// (Python's `quote` keeps `/`, `quote_plus` does not, `encodeURIComponent` keeps `!'()*`).
fn url_encoded(value: &[u8], secret: usize) -> Pattern {
    let units = value
        .iter()
        .map(|&b| {
            let mut alts = Vec::new();
            for digits in [UPPER_HEX, LOWER_HEX] {
                let escaped = Zeroizing::new(vec![
                    b'%',
                    digits[usize::from(b >> 4)],
                    digits[usize::from(b & 15)],
                ]);
                if !alts.contains(&escaped) {
                    alts.push(escaped);
                }
            }
            alts.push(Zeroizing::new(vec![b]));
            if b == b' ' {
                alts.push(Zeroizing::new(b"+".to_vec()));
            }
            alts
        })
        .collect();
    Pattern { units, secret }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, value: &[u8]) -> SandboxSecret {
        SandboxSecret {
            name: name.into(),
            delivery: Delivery::File,
            ttl: Duration::from_secs(60),
            hosts: Vec::new(),
            body: false,
            source: None,
            value: SecretValue::new(Zeroizing::new(value.to_vec())),
            placeholder: None,
        }
    }

    fn redact(value: &[u8], text: &[u8], chunk: usize) -> (String, u64) {
        let mut r = Redactor::new(&[secret("T", value)]);
        let mut out = Vec::new();
        for piece in text.chunks(chunk) {
            out.extend(r.push(piece));
        }
        out.extend(r.finish());
        (
            String::from_utf8_lossy(&out).into_owned(),
            r.counts().get("T").copied().unwrap_or(0),
        )
    }

    fn b64(bytes: &[u8]) -> String {
        String::from_utf8(base64(bytes, STANDARD)).unwrap_or_default()
    }

    #[test]
    fn base64_matches_the_standard_encoding() {
        assert_eq!(b64(b"Man"), "TWFu");
        assert_eq!(b64(b"Ma"), "TWE");
        assert_eq!(b64(b"hello world"), "aGVsbG8gd29ybGQ");
    }

    #[test]
    fn every_encoding_and_every_split_is_redacted() {
        let value = b"s3cr3t-T0ken/+value";
        let mut texts = vec![
            value.to_vec(),
            b64(value).into_bytes(),
            hexed(value),
            b"s3cr3t-T0ken%2F%2Bvalue".to_vec(),
        ];
        for k in 1..3 {
            let mut inner = b"xyz"[..k].to_vec();
            inner.extend_from_slice(value);
            inner.extend_from_slice(b"tail");
            texts.push(b64(&inner).into_bytes());
        }
        for text in texts {
            let mut line = b"before ".to_vec();
            line.extend_from_slice(&text);
            line.extend_from_slice(b" after");
            for chunk in [1, 2, 3, 7, 1000] {
                let (out, n) = redact(value, &line, chunk);
                assert!(out.contains("[REDACTED:T]"), "{out} ({chunk})");
                assert!(
                    out.starts_with("before ") && out.ends_with(" after"),
                    "{out}"
                );
                assert_eq!(n, 1, "{out}");
            }
        }
    }

    fn hexed(value: &[u8]) -> Vec<u8> {
        value
            .iter()
            .flat_map(|b| format!("{b:02X}").into_bytes())
            .collect()
    }

    /// `text` with `sep` inserted after every `width` bytes, as `base64` (76), PEM (64) and
    /// `xxd -p` (60) wrap their output.
    fn wrapped(text: &[u8], width: usize, sep: &[u8]) -> Vec<u8> {
        text.chunks(width).collect::<Vec<_>>().join(sep)
    }

    #[test]
    fn wrapped_base64_and_hex_are_redacted_at_every_width_and_alignment() {
        // 100 bytes: its base64 and hex span several lines.
        let value: Vec<u8> = (0..100u8)
            .map(|i| b"Zq7/+xK2-_ P"[usize::from(i) % 12])
            .collect();
        for lead in 0..3 {
            let mut inner = b"xyz"[..lead].to_vec();
            inner.extend_from_slice(&value);
            let mut encoded = vec![
                b64(&inner).into_bytes(),
                hexed(&inner),
                hexed(&inner).to_ascii_lowercase(),
            ];
            let mut padded = b64(&inner).into_bytes();
            while !padded.len().is_multiple_of(4) {
                padded.push(b'=');
            }
            encoded.push(padded);
            for text in encoded {
                for width in [76, 64, 60, 3, 1] {
                    for sep in [&b"\n"[..], b"\r\n"] {
                        let mut line = b"before\n".to_vec();
                        line.extend(wrapped(&text, width, sep));
                        line.extend_from_slice(b"\nafter");
                        for chunk in [1, 5, 4096] {
                            let (out, n) = redact(&value, &line, chunk);
                            assert_eq!(n, 1, "{width} {chunk}: {out}");
                            assert!(out.starts_with("before\n"), "{out}");
                            assert!(out.ends_with("\nafter"), "{out}");
                            // Left: at most the characters that hold the lead's bits or
                            // the padding, and the breaks next to them.
                            let left = out.len() - "before\n[REDACTED:T]\nafter".len();
                            assert!(left <= 3 * 5, "{width} {chunk}: {out:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_url_encoding_is_redacted() {
        let value = b"pa ss/w+rd:@x?&=!'()*~";
        for text in [
            // Python quote (keeps '/'), quote(safe=''), quote_plus, encodeURIComponent,
            // lower-case escapes, everything escaped.
            &b"pa%20ss/w%2Brd%3A%40x%3F%26%3D%21%27%28%29%2A~"[..],
            b"pa%20ss%2Fw%2Brd%3A%40x%3F%26%3D%21%27%28%29%2A~",
            b"pa+ss%2Fw%2Brd%3A%40x%3F%26%3D%21%27%28%29%2A%7E",
            b"pa%20ss%2Fw%2Brd%3A%40x%3F%26%3D!'()*~",
            b"pa%20ss%2fw%2brd%3a%40x%3f%26%3d!'()*~",
            b"%70%61%20%73%73%2F%77%2B%72%64%3A%40%78%3F%26%3D%21%27%28%29%2A%7E",
        ] {
            let mut line = b"q=".to_vec();
            line.extend_from_slice(text);
            line.extend_from_slice(b"&next=1");
            for chunk in [1, 2, 7, 1000] {
                let (out, n) = redact(value, &line, chunk);
                assert_eq!(out, "q=[REDACTED:T]&next=1", "{chunk}");
                assert_eq!(n, 1);
            }
        }
    }

    #[test]
    fn a_line_break_splits_nothing_it_does_not_touch() {
        // A break before the first or after the last character stays in the output.
        let (out, n) = redact(b"abcdefgh", b"x\nabcd\nefgh\ny", 3);
        assert_eq!((out.as_str(), n), ("x\n[REDACTED:T]\ny", 1));
        // Two breaks in a row, or a break in ordinary text, match nothing.
        let (out, n) = redact(b"abcdefgh", b"abcd\n\nefgh ab\ncd", 2);
        assert_eq!((out.as_str(), n), ("abcd\n\nefgh ab\ncd", 0));
    }

    #[test]
    fn other_text_passes_unchanged_and_nothing_is_held_at_the_end() {
        let (out, n) = redact(b"abcdefgh", b"abcdefg abcdefgX", 3);
        assert_eq!((out.as_str(), n), ("abcdefg abcdefgX", 0));
    }

    #[test]
    fn a_value_never_prints() {
        let s = secret("T", b"hunter2hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
