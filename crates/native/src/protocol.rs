//! What crosses the pipes between the runner, the re-executed helper and the sandbox init.
//!
//! Each side sends JSON lines; nothing here trusts a message from inside the sandbox for
//! anything but reporting: the init can lie about its own state, never about the limits
//! the host applied.

use nanoclaw_spec::{Captured, IoMode, LandlockStatus, SandboxSpec, SetupError, Usage};
use serde::{Deserialize, Serialize};

/// The descriptor on which the helper reads its `HelperRequest` (one JSON line), then the
/// `COMMIT` byte that lets the command start.
pub const REQUEST_FD: i32 = 3;
/// Sent by the runner once what must precede the command (the audit record) is done.
pub const COMMIT: &[u8] = b"c";
/// The descriptor on which the helper writes its `HelperReport`.
pub const REPORT_FD: i32 = 4;

/// What the runner asks the helper to do.
#[derive(Debug, Serialize, Deserialize)]
pub struct HelperRequest {
    pub spec: SandboxSpec,
    pub io: IoMode,
    /// Files the sandbox init writes "0" into to join its cgroup (v1 `tasks`, v2
    /// `cgroup.procs`), before it unshares its cgroup namespace.
    pub cgroup_join: Vec<std::path::PathBuf>,
    /// The host uid and gid the sandbox user maps to.
    pub host_uid: u32,
    pub host_gid: u32,
    /// Whether the helper may write multi-id maps and keep setgroups (host root).
    pub privileged: bool,
}

pub use nanoclaw_spec::container::InitMessage;

/// What the helper reports to the runner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelperReport {
    Finished(Finished),
    SetupFailed(SetupError),
    ExecFailed { program: String, errno: i32 },
}

/// A command that ran to completion, timed out or was killed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Finished {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub stdout: Captured,
    pub stderr: Captured,
    pub usage: Usage,
    pub landlock: LandlockStatus,
    /// Secret values redacted from the output, by secret name.
    pub redactions: std::collections::BTreeMap<String, u64>,
}
