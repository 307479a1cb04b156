//! The audit log: an append-only JSON Lines file in which every record carries the hash
//! of the record before it, synced to disk before the runner reports it written.
//!
//! It answers, long after the fact, which tool ran under which exact policy, how it
//! ended, and what was refused. This crate is the writer `nanoclaw run` uses; reading,
//! verifying the chain, queries and signed checkpoints are `nanoclaw-audit-tools`.
//!
//! Part of the trusted core: no async, no network. Never write a secret value into a
//! record; secrets are logged by name only, output by size and hash only.
//!
//! - `record`: the record, its canonical JSON and hash
//! - `log`: opening and appending (file lock, fsync)
//! - `open`: opening its files: no symlink followed, owner and mode checked
//! - `event`: the typed records the runner writes, and the runner that wrote them
//! - `time`: RFC 3339 timestamps
//! - `hex`: the hex of hashes, keys and signatures

mod error;
mod event;
pub mod hex;
mod log;
pub mod open;
mod record;
pub mod time;

pub use error::{Error, Result};
pub use event::{
    Event, InvocationEnd, InvocationStart, OutputDigest, PolicyRefused, Runner, SecretUse,
};
pub use log::{Appended, AuditLog, Lock};
pub use record::{
    invocation_id, parse_line, push_canonical, sha256_hex, Parsed, Record, GENESIS_HASH,
};
pub use time::parse_time;
