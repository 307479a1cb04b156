//! Fetches a tool's secrets on the host, once per invocation, after everything else about
//! the invocation was found valid: from nanoclaw's own environment, a file (no symlink, a
//! regular file, bounded), or a command run without a shell (its stdout is the value).
//! Gives each `placeholder` secret its stand-in, and makes the keyed fingerprint the audit
//! log records instead of the value.
//!
//! This module must never put a value (or any output of a source command) into an error,
//! a record, an argument or an environment variable of a process it starts; values live
//! only in `SecretValue`s, which are zeroed when dropped. Nothing is cached: a command
//! source runs again for every invocation.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nanoclaw_audit::SecretUse;
use nanoclaw_spec::{
    Delivery, SandboxSecret, SandboxSpec, SecretSource, SecretValue, MAX_SECRET_BYTES,
};
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// How long a command source may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The fingerprint key's name beside the audit log.
const KEY_FILE: &str = "secret-fingerprint.key";

/// What fetching the secrets of one invocation settled.
#[derive(Debug, Default)]
pub struct Fetched {
    /// For the audit record: names, source kinds, deliveries, ttls, fingerprints.
    pub uses: Vec<SecretUse>,
    /// The run's timeout was lowered to the shortest `file`/`env` secret's ttl: a run
    /// that times out was stopped because that secret expired.
    pub ttl_bounds_run: bool,
}

/// Fills in the value of every secret of `spec` (and the placeholders in its env); `key_dir`
/// holds the fingerprint key (the audit log's directory), `None` without an audit log.
pub fn fetch(spec: &mut SandboxSpec, key_dir: Option<&Path>) -> Result<Fetched> {
    let mut fetched = Fetched::default();
    if spec.secrets.is_empty() {
        return Ok(fetched);
    }
    let key = match key_dir {
        Some(dir) => Some(fingerprint_key(dir)?),
        None => None,
    };
    for secret in &mut spec.secrets {
        let source = secret
            .source
            .take()
            .ok_or_else(|| anyhow!("secret {} names no source", secret.name))?;
        let value = read_source(&secret.name, &source)?;
        check_value(secret, &value)?;
        secret.value = SecretValue::new(value);
        fetched.uses.push(SecretUse {
            name: secret.name.clone(),
            source: source.kind().into(),
            delivery: secret.delivery.as_str().into(),
            ttl_ms: u64::try_from(secret.ttl.as_millis()).unwrap_or(u64::MAX),
            fingerprint: key
                .as_ref()
                .map(|k| hmac_sha256_hex(k, secret.value.expose()))
                .unwrap_or_default(),
        });
    }
    for i in 0..spec.secrets.len() {
        if spec.secrets[i].delivery == Delivery::Placeholder {
            let placeholder = placeholder_for(&spec.secrets[i])?;
            let name = spec.secrets[i].name.clone();
            spec.set_env(&name, &placeholder);
            spec.secrets[i].placeholder = Some(placeholder);
        }
    }
    let shortest = spec
        .secrets
        .iter()
        .filter(|s| s.delivery != Delivery::Placeholder)
        .map(|s| s.ttl)
        .min();
    if let Some(ttl) = shortest {
        if ttl < spec.limits.timeout {
            spec.limits.timeout = ttl;
            fetched.ttl_bounds_run = true;
        }
    }
    Ok(fetched)
}

/// Refuses a value no delivery can carry: empty, too large, or (for `env` and
/// `placeholder`, which end up in an environment) holding a NUL byte.
fn check_value(secret: &SandboxSecret, value: &[u8]) -> Result<()> {
    let name = &secret.name;
    if value.is_empty() {
        bail!("secret {name}: its source gave an empty value");
    }
    if value.len() > MAX_SECRET_BYTES {
        bail!("secret {name}: its value is larger than {MAX_SECRET_BYTES} bytes");
    }
    if secret.delivery != Delivery::File && value.contains(&0) {
        bail!(
            "secret {name}: its value holds a NUL byte, which an environment variable cannot; \
             deliver it as a file"
        );
    }
    Ok(())
}

fn read_source(name: &str, source: &SecretSource) -> Result<Zeroizing<Vec<u8>>> {
    match source {
        SecretSource::Env(var) => {
            use std::os::unix::ffi::OsStringExt;
            let value = std::env::var_os(var).ok_or_else(|| {
                anyhow!("secret {name}: the variable {var} is not set in nanoclaw's environment")
            })?;
            Ok(Zeroizing::new(value.into_vec()))
        }
        SecretSource::File(path) => read_file(name, path),
        SecretSource::Command(argv) => run_command(name, argv),
    }
}

/// Reads a regular file without following a symlink at its last component, at most
/// `MAX_SECRET_BYTES` (+1 to tell that it is larger), trimming one trailing newline.
fn read_file(name: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| {
        anyhow!(
            "secret {name}: cannot open {}: {}",
            path.display(),
            if e == rustix::io::Errno::LOOP {
                "it is a symlink (name the file itself)".to_string()
            } else {
                std::io::Error::from(e).to_string()
            }
        )
    })?;
    let stat = rustix::fs::fstat(&fd)
        .with_context(|| format!("secret {name}: stat {}", path.display()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        bail!("secret {name}: {} is not a regular file", path.display());
    }
    let mut file = std::fs::File::from(fd);
    let value = read_bounded(&mut file)
        .with_context(|| format!("secret {name}: read {}", path.display()))?;
    finish_value(name, value)
}

fn read_bounded(reader: &mut impl Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut value = Zeroizing::new(Vec::with_capacity(MAX_SECRET_BYTES + 1));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        let room = MAX_SECRET_BYTES + 1 - value.len();
        if room == 0 {
            return Ok(value);
        }
        let n = match reader.read(&mut chunk[..room.min(4096)]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(value);
        }
        value.extend_from_slice(&chunk[..n]);
    }
}

/// One trailing newline off; too large refused.
fn finish_value(name: &str, mut value: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>> {
    if value.len() > MAX_SECRET_BYTES {
        bail!("secret {name}: its value is larger than {MAX_SECRET_BYTES} bytes");
    }
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// Runs `argv` on the host without a shell, stdin from /dev/null, stderr discarded (it
/// may echo what it was about to print), and takes its stdout. A non-zero exit, a
/// timeout or an oversized output refuses the run; the output is never shown.
fn run_command(name: &str, argv: &[String]) -> Result<Zeroizing<Vec<u8>>> {
    let program = argv
        .first()
        .ok_or_else(|| anyhow!("secret {name}: empty command"))?;
    let mut child = Command::new(program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow!("secret {name}: cannot run its source command {program:?}: {e}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("secret {name}: no pipe from its source command"))?;
    let mut value = Zeroizing::new(Vec::new());
    let mut chunk = Zeroizing::new([0u8; 4096]);
    let outcome: Result<()> = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(anyhow!(
                "secret {name}: its source command {program:?} did not finish within {}s",
                COMMAND_TIMEOUT.as_secs()
            ));
        }
        let mut fds = [rustix::event::PollFd::new(
            &stdout,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(left).ok();
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => break Err(anyhow!("secret {name}: read its source command: {e}")),
        }
        match stdout.read(&mut chunk[..]) {
            Ok(0) => break Ok(()),
            Ok(n) if value.len() + n > MAX_SECRET_BYTES + 1 => {
                break Err(anyhow!(
                    "secret {name}: its source command {program:?} printed more than \
                     {MAX_SECRET_BYTES} bytes"
                ))
            }
            Ok(n) => value.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(anyhow!("secret {name}: read its source command: {e}")),
        }
    };
    drop(stdout);
    if outcome.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| anyhow!("secret {name}: wait for its source command: {e}"))?;
    outcome?;
    if !status.success() {
        bail!(
            "secret {name}: its source command {program:?} failed ({status}); its output is not \
             shown, run it by hand to see why"
        );
    }
    finish_value(name, value)
}

/// A random stand-in for the value: the same length, a well-known token prefix such as
/// `ghp_` or `sk-proj-` kept (see `KNOWN_PREFIXES`), every other byte replaced by a random
/// one of `[A-Za-z0-9]`. Nothing else of the value shows through: not its words, not the
/// positions of its punctuation (a passphrase's `-`, a URL's `://`, `@` and `/`), not which
/// positions are letters or digits. It differs from the value, or the run is refused.
fn placeholder_for(secret: &SandboxSecret) -> Result<String> {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let value = secret.value.expose();
    let keep = prefix_len(value);
    for _ in 0..8 {
        let mut out = String::with_capacity(value.len());
        out.extend(value[..keep].iter().map(|&b| char::from(b)));
        while out.len() < value.len() {
            let mut random = Zeroizing::new(vec![0u8; value.len() - out.len()]);
            fill_random(&mut random)?;
            // Bytes of 248 (4 * 62) and above are dropped, so that each character is uniform.
            for &r in random.iter().filter(|&&r| r < 248) {
                out.push(char::from(ALNUM[usize::from(r) % ALNUM.len()]));
            }
        }
        if out.as_bytes() != value {
            return Ok(out);
        }
    }
    bail!(
        "secret {}: no placeholder of its length differs from it; deliver it as a file",
        secret.name
    )
}

/// Well-known token prefixes a placeholder keeps, so that a client or library that checks
/// a token's kind by its prefix still accepts it. Longest first where one extends another.
const KNOWN_PREFIXES: &[&str] = &[
    "github_pat_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "sk-proj-",
    "sk-ant-",
    "sk-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxs-",
    "xoxe-",
    "glpat-",
    "AKIA",
    "ASIA",
    "AIza",
    "npm_",
    "pypi-",
    "hf_",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "pk_live_",
    "pk_test_",
    "dop_v1_",
    "shpat_",
    "SG.",
];

/// The length of the known prefix of `value` that a placeholder keeps: only if at least 8
/// bytes remain after it to randomise.
fn prefix_len(value: &[u8]) -> usize {
    KNOWN_PREFIXES
        .iter()
        .filter(|p| value.starts_with(p.as_bytes()) && value.len() - p.len() >= 8)
        .map(|p| p.len())
        .max()
        .unwrap_or(0)
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(anyhow!("read random bytes for a placeholder: {e}")),
        }
    }
    Ok(())
}

/// The per-host fingerprint key (32 random bytes, hex, mode 0600, owned by this user) in
/// `dir`, made on first use.
fn fingerprint_key(dir: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let path: PathBuf = dir.join(KEY_FILE);
    let created = rustix::fs::open(
        &path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    );
    match created {
        Ok(fd) => {
            let mut key = Zeroizing::new([0u8; 32]);
            fill_random(&mut key[..])?;
            let mut text = Zeroizing::new(String::new());
            for b in key.iter() {
                text.push_str(&format!("{b:02x}"));
            }
            let mut file = std::fs::File::from(fd);
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("write the secret fingerprint key {}", path.display()))?;
        }
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => {
            return Err(anyhow!(
                "create the secret fingerprint key {}: {}",
                path.display(),
                std::io::Error::from(e)
            ))
        }
    }
    let fd = rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        anyhow!(
            "open the secret fingerprint key {}: {}",
            path.display(),
            std::io::Error::from(e)
        )
    })?;
    let stat = rustix::fs::fstat(&fd)?;
    if stat.st_uid != rustix::process::geteuid().as_raw() || stat.st_mode & 0o077 != 0 {
        bail!(
            "the secret fingerprint key {} must be this user's and mode 0600 (it is mode {:04o})",
            path.display(),
            stat.st_mode & 0o7777
        );
    }
    let mut file = std::fs::File::from(fd);
    let text = read_bounded(&mut file)?;
    let key = (0..text.len() / 2)
        .map(|i| {
            std::str::from_utf8(&text[2 * i..2 * i + 2])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| {
            anyhow!(
                "the secret fingerprint key {} is not 64 hex digits",
                path.display()
            )
        })?;
    Ok(Zeroizing::new(key))
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key` (at most one block long), in hex.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..key.len().min(64)].copy_from_slice(&key[..key.len().min(64)]);
    let pad = |byte: u8| -> Zeroizing<Vec<u8>> {
        Zeroizing::new(block.iter().map(|b| b ^ byte).collect())
    };
    let inner = Sha256::new()
        .chain_update(pad(0x36).as_slice())
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c).as_slice())
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: &[u8]) -> SandboxSecret {
        SandboxSecret {
            name: "T".into(),
            delivery: Delivery::Placeholder,
            ttl: Duration::from_secs(60),
            hosts: Vec::new(),
            body: false,
            source: None,
            value: SecretValue::new(Zeroizing::new(value.to_vec())),
            placeholder: None,
        }
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_placeholder_keeps_the_length_and_a_known_prefix_only() {
        for (value, prefix) in [
            ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_"),
            (
                "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz",
                "github_pat_",
            ),
            ("sk-proj-Abc123xyz789QQ", "sk-proj-"),
            ("sk-ant-api03-Abc123xyz789QQ", "sk-ant-"),
            ("sk-Abc123xyz789QQ", "sk-"),
            ("AKIAIOSFODNN7EXAMPLE", "AKIA"),
            ("xoxb-1234-5678-abcdef", "xoxb-"),
            ("plain0token", ""),
            // Word prefixes that are no known token prefix are not kept.
            ("correcthorsebatterystaple-Xk29fj3k", ""),
            ("mycompany_internal_Xk29fj3k", ""),
            // Too short after the prefix: nothing kept.
            ("ghp_1234567", ""),
            ("--__--", ""),
        ] {
            let p = placeholder_for(&secret(value.as_bytes())).unwrap();
            assert_eq!(p.len(), value.len(), "{p} {value}");
            assert_ne!(p, value);
            assert!(p.starts_with(prefix), "{p} {value}");
            assert!(
                p[prefix.len()..].bytes().all(|b| b.is_ascii_alphanumeric()),
                "{p} {value}"
            );
        }
    }

    #[test]
    fn a_placeholder_shows_no_word_or_layout_of_the_value() {
        let phrase = "correcthorsebatterystaple-Xk29fj3k";
        let url = "postgres://app:hunter2@db.internal:5432/prod?sslmode=require";
        let multibyte = "pässwörd-ünïcode-1234";
        for value in [phrase, url, multibyte] {
            for _ in 0..20 {
                let p = placeholder_for(&secret(value.as_bytes())).unwrap();
                assert_eq!(p.len(), value.len());
                assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()), "{p}");
                for word in ["correct", "horse", "staple", "postgres", "hunter2", "5432"] {
                    assert!(!p.contains(word), "{p}");
                }
            }
        }
        // The class of each position is not kept either: over many draws, letters land
        // where the value has digits and digits where it has letters.
        let mut digit_where_letter = false;
        let mut letter_where_digit = false;
        for _ in 0..50 {
            let p = placeholder_for(&secret(b"abcdefgh12345678")).unwrap();
            digit_where_letter |= p[..8].bytes().any(|b| b.is_ascii_digit());
            letter_where_digit |= p[8..].bytes().any(|b| b.is_ascii_alphabetic());
        }
        assert!(digit_where_letter && letter_where_digit);
    }
}
