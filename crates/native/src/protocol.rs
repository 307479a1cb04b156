//! What crosses the pipes between the runner, the re-executed supervisor and the sandbox
//! init.
//!
//! Each side sends JSON lines; nothing here trusts a message from inside the sandbox for
//! anything but reporting: the init can lie about its own state, never about the limits
//! the host applied.

use nanoclaw_spec::{Captured, IoMode, LandlockStatus, SandboxSpec, SetupError, Usage};
use serde::{Deserialize, Serialize};

/// The descriptor on which the supervisor reads its `SupervisorRequest` (one JSON line),
/// then the `Call` (a second line) that lets the command start. Until the call arrives the
/// sandbox waits, built but not yet locked; end of file withdraws it.
pub(crate) const REQUEST_FD: i32 = 3;
/// The descriptor on which the supervisor writes its `SupervisorReport`.
pub(crate) const REPORT_FD: i32 = 4;
/// The byte the supervisor sends the init once the id maps are written (setup may start).
pub(crate) const MAPPED: &[u8] = b"g";

/// The command a prepared sandbox runs: its argv, its whole environment (replacing the
/// spec's, which is a template) and, for a sandbox prepared with stdin, what it reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Call {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `None` passes the runner's own stdin through (the one-shot `nanoclaw run --stdin`).
    pub stdin: Option<Vec<u8>>,
}

/// What the runner asks the supervisor to build.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SupervisorRequest {
    pub spec: SandboxSpec,
    pub io: IoMode,
    /// Files the sandbox init writes "0" into to join its cgroup (v1 `tasks`, v2
    /// `cgroup.procs`), before it unshares its cgroup namespace.
    pub cgroup_join: Vec<std::path::PathBuf>,
    /// The host uid and gid the sandbox user maps to.
    pub host_uid: u32,
    pub host_gid: u32,
    /// Whether the supervisor may write multi-id maps and keep setgroups (host root).
    pub privileged: bool,
}

pub use nanoclaw_spec::container::InitMessage;

/// What the supervisor reports to the runner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SupervisorReport {
    Finished(Finished),
    SetupFailed(SetupError),
    ExecFailed { program: String, errno: i32 },
}

/// A command that ran to completion, timed out or was killed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Finished {
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
