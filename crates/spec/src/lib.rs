//! The backend-neutral description of one sandboxed invocation (`SandboxSpec`) and of how
//! it ended (`Outcome`), plus the `Backend` trait every backend implements.
//!
//! Everything a backend needs is resolved here: no backend reads policy text, guesses a
//! default or reinterprets an option. A spec is plain data so it can cross the pipe to the
//! native helper, and so tests can build one in a line.
//!
//! This crate must never do I/O: it is types and pure functions only.

pub mod address;
pub mod container;
pub mod credentials;
mod env;
mod outcome;
pub mod proc_masks;
mod secrets;
mod spec;
pub mod syscalls;
mod units;

pub use env::{check_env, is_env_name, loader_variable, LOADER_VARIABLES};
pub use outcome::{
    AppliedChange, Capture, Captured, Enforced, LandlockStatus, Outcome, RefusedChange, Usage,
    WriteReport,
};
pub use secrets::{
    add_counts, Delivery, Redactor, SandboxSecret, SecretSource, SecretValue, CA_BUNDLE_INSIDE,
    CA_BUNDLE_VARIABLES, MAX_SECRET_BYTES, SECRETS_DIR,
};
pub use spec::{
    check_sandbox_path, Backend, BackendError, EgressProxy, EgressRule, Invocation, IoMode, Limits,
    Mount, Network, Root, SandboxSpec, SetupError, Syscalls, Tmpfs, User, DEFAULT_PATH,
    DEFAULT_WRITE_BYTES, DEFAULT_WRITE_FILES, SANDBOX_GID, SANDBOX_UID,
};
pub use units::{parse_bytes, parse_cpus, parse_duration, UnitError};
pub use zeroize::Zeroizing;
