//! The one error type of the audit crate: a variant per failing operation, each naming
//! the path it failed on, so a message says exactly what failed where.
//!
//! Never put record contents in an error: a message may end up in a terminal or a ticket.

use std::io;
use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find the audit log: none of NANOCLAW_AUDIT, XDG_STATE_HOME or HOME is set")]
    NoDefaultPath,

    #[error("cannot create audit log directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },

    #[error("refusing {path}: {reason}")]
    Untrusted { path: PathBuf, reason: String },

    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },

    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write to {path}: {source}")]
    Write { path: PathBuf, source: io::Error },

    #[error("cannot sync {path} to disk (the record may not be durable): {source}")]
    Sync { path: PathBuf, source: io::Error },

    #[error(
        "a write to {path} failed half-way and the partial record could not be removed: \
         {source}; run `nanoclaw audit verify`"
    )]
    PartialWrite { path: PathBuf, source: io::Error },

    #[error(
        "{path} ends with an incomplete record (torn write); refusing to append after it; \
         run `nanoclaw audit verify`"
    )]
    TornTail { path: PathBuf },

    #[error(
        "the last record of {path} is unreadable ({reason}); refusing to append after it; \
         run `nanoclaw audit verify`"
    )]
    BadTail { path: PathBuf, reason: String },

    #[error(
        "line {line} of {path} is not an audit record ({reason}); run `nanoclaw audit verify`"
    )]
    Malformed {
        path: PathBuf,
        line: u64,
        reason: String,
    },

    #[error("audit record data must be a JSON object, got {got} for kind {kind}")]
    DataNotObject { kind: String, got: &'static str },

    #[error("cannot encode a {kind} record: {source}")]
    Encode {
        kind: &'static str,
        source: serde_json::Error,
    },

    #[error("no record with seq {seq} in {path}")]
    NoSuchRecord { path: PathBuf, seq: u64 },

    #[error("cannot read random bytes from the kernel: {source}")]
    Random { source: io::Error },

    #[error(
        "invalid time {value:?}: expected RFC 3339 (2025-01-31T12:00:00Z) or a date (2025-01-31)"
    )]
    BadTime { value: String },

    #[error("invalid key in {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },

    #[error("invalid public key {value:?}: {reason}")]
    BadPublicKey { value: String, reason: String },

    #[error("refusing to checkpoint {path}: {problem}")]
    NotIntact { path: PathBuf, problem: String },
}
