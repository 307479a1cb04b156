//! The audit log: an append-only JSON Lines file in which every record carries the hash
//! of the record before it, synced to disk before the runner reports it written.
//!
//! It answers, long after the fact, which tool ran under which exact policy, how it
//! ended, and what was refused, and proves that no line was edited, dropped, inserted or
//! reordered since (`verify`), back to the last signed checkpoint (`checkpoint`).
//!
//! Part of the trusted core: no async, no network. Never write a secret value into a
//! record; secrets are logged by name only, output by size and hash only.
//!
//! - `record`: the record, its canonical JSON and hash
//! - `log`: opening and appending (file lock, fsync)
//! - `open`: opening its files: no symlink followed, owner and mode checked
//! - `read`: reading a consistent prefix without blocking appenders
//! - `verify`: walking the chain
//! - `query`: listing, showing, the table
//! - `checkpoint`: signed checkpoints and their keys
//! - `event`: the typed records the runner writes
//! - `time`: RFC 3339 timestamps
//! - `unfinished`: invocations that started and never ended (runner killed, or running)

mod checkpoint;
mod error;
mod event;
mod hex;
mod log;
mod open;
mod query;
mod read;
mod record;
mod time;
mod unfinished;
mod verify;

pub use checkpoint::{checkpoint, checkpoints_path, generate_key, Checkpoint, PublicKey};
pub use error::{Error, Result};
pub use event::{Event, InvocationEnd, InvocationStart, OutputDigest, PolicyRefused, SecretUse};
pub use log::{Appended, AuditLog};
pub use query::{list, show, table, Filter};
pub use record::{invocation_id, sha256_hex, Record, GENESIS_HASH};
pub use time::parse_time;
pub use unfinished::{unfinished, RunState, Runner, Unfinished};
pub use verify::{verify, Problem, VerifyReport};
