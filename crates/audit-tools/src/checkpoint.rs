//! Signed checkpoints: an ed25519 signature over the log's record count and head hash,
//! appended to `<log>.checkpoints`. Someone who can write the log can cut records from
//! its end or rewrite and re-chain it, and the chain alone would still verify; a
//! checkpoint signed with a key they do not hold makes both visible.
//!
//! Never checkpoint a log that does not verify (that would sign the damage), and never
//! write or print the secret key: only its public half appears in checkpoints and
//! reports. Keep the key file away from whoever can write the log.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::verify::{verify, Problem};
use nanoclaw_audit::hex;
use nanoclaw_audit::open::{self, Access};
use nanoclaw_audit::time;
use nanoclaw_audit::Lock;
use nanoclaw_audit::GENESIS_HASH;
use nanoclaw_audit::{Error, Result};

/// One signed checkpoint: the log had `count` records, the last with hash `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub count: u64,
    pub head: String,
    pub ts: String,
    /// The public key (hex) that signed it.
    pub key: String,
    /// The ed25519 signature (hex) over `message()`.
    pub sig: String,
}

impl Checkpoint {
    /// The bytes that are signed.
    fn message(count: u64, head: &str, ts: &str) -> Vec<u8> {
        format!("nanoclaw-audit-checkpoint-v1\ncount {count}\nhead {head}\nts {ts}\n").into_bytes()
    }
}

/// The public half of a checkpoint key: what `verify` trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// From 64 hex digits, as printed by `generate_key` and stored in checkpoints.
    pub fn from_hex(text: &str) -> Result<PublicKey> {
        let bad = |reason: &str| Error::BadPublicKey {
            value: text.to_owned(),
            reason: reason.to_owned(),
        };
        let bytes = hex::decode::<32>(text.trim()).ok_or_else(|| bad("expected 64 hex digits"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad("not an ed25519 public key"))
    }

    /// The public half of the secret key in `key_file`.
    pub fn from_key_file(key_file: &Path) -> Result<PublicKey> {
        Ok(PublicKey(read_key(key_file)?.verifying_key()))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

/// Where the checkpoints of the log at `log` are kept: `<log>.checkpoints`.
pub fn checkpoints_path(log: &Path) -> PathBuf {
    let mut path = log.as_os_str().to_owned();
    path.push(".checkpoints");
    PathBuf::from(path)
}

/// Writes a new secret key to `key_file` (64 hex digits, mode 0600; never overwrites)
/// and returns its public half.
pub fn generate_key(key_file: &Path) -> Result<PublicKey> {
    let mut seed = [0u8; 32];
    let mut filled = 0;
    while filled < seed.len() {
        match rustix::rand::getrandom(&mut seed[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::Random { source: e.into() }),
        }
    }
    let key = SigningKey::from_bytes(&seed);
    // The hex form is built in a buffer we can wipe, unlike a `String`.
    let mut text = [b'\n'; 65];
    for (pair, byte) in text.chunks_exact_mut(2).zip(seed) {
        pair.copy_from_slice(hex::encode(&[byte]).as_bytes());
    }
    seed.fill(0);
    let written = open::open(key_file, Access::CreateNew).and_then(|mut file| {
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(|source| Error::Write {
                path: key_file.to_path_buf(),
                source,
            })
    });
    text.fill(0);
    written?;
    Ok(PublicKey(key.verifying_key()))
}

/// Verifies the log at `log` (against checkpoints signed with this key) and, if it is
/// intact, signs its current record count and head hash into `<log>.checkpoints`.
pub fn checkpoint(log: &Path, key_file: &Path) -> Result<Checkpoint> {
    let key = read_key(key_file)?;
    let public = PublicKey(key.verifying_key());
    let has_checkpoints = open::open_if_exists(&checkpoints_path(log), Access::Read)?.is_some();
    let report = verify(log, Some(&public).filter(|_| has_checkpoints))?;
    if let Some(problem) = report.problem {
        return Err(Error::NotIntact {
            path: log.to_path_buf(),
            problem: problem.to_string(),
        });
    }
    let head = report.head.unwrap_or_else(|| GENESIS_HASH.to_owned());
    let ts = time::now();
    let sig = key.sign(&Checkpoint::message(report.records, &head, &ts));
    let checkpoint = Checkpoint {
        count: report.records,
        head,
        ts,
        key: public.to_string(),
        sig: hex::encode(&sig.to_bytes()),
    };
    append_line(&checkpoints_path(log), &checkpoint)?;
    Ok(checkpoint)
}

/// Reads every checkpoint of `log` with its line number, sorted by count, each checked
/// against its signature (and `trusted`, if given). `Ok(Err(_))` is the first bad one.
pub(crate) fn load(
    log: &Path,
    trusted: Option<&PublicKey>,
) -> Result<std::result::Result<Vec<(u64, Checkpoint)>, Problem>> {
    let path = checkpoints_path(log);
    let file = match open::open_if_exists(&path, Access::Read)? {
        Some(file) => file,
        None => {
            return Ok(match trusted {
                None => Ok(Vec::new()),
                Some(key) => Err(Problem::Checkpoint {
                    line: 0,
                    reason: format!("{} does not exist, but key {key} was given", path.display()),
                }),
            })
        }
    };
    let mut checkpoints = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let bad = |reason: String| Problem::Checkpoint {
            line: number,
            reason,
        };
        let checkpoint: Checkpoint = match serde_json::from_str(&line) {
            Ok(checkpoint) => checkpoint,
            Err(e) => return Ok(Err(bad(format!("not a checkpoint: {e}")))),
        };
        // Exactly as `append_line` writes it: no duplicate key, whitespace or other
        // spelling of the same value can hide in a checkpoint either.
        if serde_json::to_string(&checkpoint).ok().as_deref() != Some(line.as_str()) {
            return Ok(Err(bad(
                "it is not in the form nanoclaw writes (a duplicate key, extra whitespace \
                 or another spelling of a value): it was edited"
                    .into(),
            )));
        }
        let key = match PublicKey::from_hex(&checkpoint.key) {
            Ok(key) => key,
            Err(e) => return Ok(Err(bad(e.to_string()))),
        };
        if let Some(trusted) = trusted.filter(|t| **t != key) {
            return Ok(Err(bad(format!(
                "signed by key {key}, not the trusted key {trusted}"
            ))));
        }
        let signed = Checkpoint::message(checkpoint.count, &checkpoint.head, &checkpoint.ts);
        let valid = hex::decode::<64>(&checkpoint.sig)
            .map(|sig| {
                key.0
                    .verify_strict(&signed, &Signature::from_bytes(&sig))
                    .is_ok()
            })
            .unwrap_or(false);
        if !valid {
            return Ok(Err(bad(
                "its signature does not match: the checkpoint was forged or edited".into(),
            )));
        }
        checkpoints.push((number, checkpoint));
    }
    if trusted.is_some() && checkpoints.is_empty() {
        return Ok(Err(Problem::Checkpoint {
            line: 0,
            reason: format!("{} holds no checkpoints", path.display()),
        }));
    }
    checkpoints.sort_by_key(|(_, c)| c.count);
    Ok(Ok(checkpoints))
}

/// Appends one checkpoint line, synced, under the checkpoints file's own lock.
fn append_line(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let mut line = serde_json::to_string(checkpoint).map_err(|source| Error::Encode {
        kind: "checkpoint",
        source,
    })?;
    line.push('\n');
    let file = open::open(path, Access::Append)?;
    let _lock = Lock::exclusive(&file, path)?;
    (&file)
        .write_all(line.as_bytes())
        .map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })?;
    file.sync_data().map_err(|source| Error::Sync {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a secret key: 32 raw bytes, or 64 hex digits (surrounding whitespace allowed).
fn read_key(path: &Path) -> Result<SigningKey> {
    let mut bytes = Vec::new();
    open::open(path, Access::ReadSecret)?
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let seed = match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(raw) => Some(raw),
        Err(_) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| hex::decode::<32>(text.trim())),
    };
    seed.map(|seed| SigningKey::from_bytes(&seed))
        .ok_or_else(|| Error::BadKey {
            path: path.to_path_buf(),
            reason: "expected 32 raw bytes or 64 hex digits".into(),
        })
}
