//! The records the runner writes, as typed structs: their field names are the log's
//! schema, and `query` relies on `tool`, `invocation_id` and `exit` being named so.
//!
//! Never add a field that could hold a secret value: a secret is logged by name only.
//! Output is logged by size and hash, never by content.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::sha256_hex;

/// A typed record body: what `AuditLog::append_event` writes under `KIND`.
pub trait Event: Serialize {
    const KIND: &'static str;
}

/// On disk before the sandboxed process starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvocationStart {
    /// Joins this record with its `invocation.end` (see `invocation_id()`).
    pub invocation_id: String,
    pub tool: String,
    /// sha256 of the policy file's bytes; `None` when running on the built-in defaults.
    pub policy_sha256: Option<String>,
    /// sha256 of the resolved SandboxSpec's JSON: exactly what the sandbox was allowed.
    pub spec_sha256: String,
    /// `native`, `docker`, `kubernetes`, …
    pub backend: String,
    /// The image reference, by digest where the backend knows it.
    pub image: Option<String>,
    /// The root filesystem directory, for the native backend.
    pub rootfs: Option<String>,
    pub argv: Vec<String>,
    pub workspace: Option<String>,
    /// The uid of the process that asked for the invocation.
    pub uid: u32,
    /// The MCP or agent session the call came from, if any.
    pub session: Option<String>,
    /// The runner process, so that a start with no end can be told apart: still running,
    /// or killed mid-run (see `unfinished`). `None` where `/proc` could not say.
    pub runner: Option<Runner>,
    /// Credential files and directories inside the mounts that the sandbox saw empty
    /// (paths inside the sandbox; names only, never contents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<String>,
    /// Mount targets whose credential files the policy showed (an acknowledged opt-out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials_shown: Vec<String>,
    /// The secrets handed to the invocation: names and fingerprints, never values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretUse>,
}

/// One secret given to an invocation, as the log may hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretUse {
    pub name: String,
    /// Where the runner fetched it: "env", "file" or "command" (not the variable, path or
    /// command line).
    pub source: String,
    /// "placeholder", "file" or "env".
    pub delivery: String,
    pub ttl_ms: u64,
    /// HMAC-SHA256 of the value under a key of this host (hex): the same value gives the
    /// same fingerprint on this host, and nothing else can be learned from it.
    pub fingerprint: String,
}

impl Event for InvocationStart {
    const KIND: &'static str = "invocation.start";
}

/// On disk before `run` returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvocationEnd {
    pub invocation_id: String,
    pub tool: String,
    /// The exit status; `None` when the process was killed by a signal.
    pub exit: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub duration_ms: u64,
    /// Resource usage as the backend reports it (CPU time, peak memory, …).
    pub usage: Value,
    /// `None` when the output was streamed straight to the caller instead of captured:
    /// the runner never saw it, so its size and hash are unknown, not zero.
    pub stdout: Option<OutputDigest>,
    pub stderr: Option<OutputDigest>,
    /// The isolation layers that were actually enforced (`seccomp`, `landlock`, …).
    pub layers: Vec<String>,
    /// Why the sandbox did not run the command to completion (setup failed inside it,
    /// command not found, interrupted); `None` when the command ran and ended.
    pub error: Option<String>,
    /// What the writable mounts' changes did to the host (the outcome's `writes`: applied
    /// and refused paths, bytes and files used); absent without writable mounts.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub writes: Value,
    /// Secret values replaced by `[REDACTED:NAME]` in the output, by secret name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub redactions: std::collections::BTreeMap<String, u64>,
    /// The run was stopped when a `file` or `env` secret's ttl ran out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret_expired: bool,
}

impl Event for InvocationEnd {
    const KIND: &'static str = "invocation.end";
}

/// A request that never started a sandbox because policy refused it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyRefused {
    pub invocation_id: String,
    pub tool: String,
    pub policy_sha256: Option<String>,
    pub argv: Vec<String>,
    pub uid: u32,
    pub session: Option<String>,
    /// Why, in the words of the policy error.
    pub reason: String,
}

impl Event for PolicyRefused {
    const KIND: &'static str = "policy.refused";
}

/// The size and hash of one captured output stream, never its content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputDigest {
    pub bytes: u64,
    pub sha256: String,
    /// Whether capture stopped at the output limit.
    pub truncated: bool,
}

impl OutputDigest {
    /// Digest of the output as returned to the caller: after secret redaction, so that
    /// the hash of a short output cannot be used to guess a secret in it.
    pub fn of(output: &[u8], truncated: bool) -> OutputDigest {
        OutputDigest {
            bytes: u64::try_from(output.len()).unwrap_or(u64::MAX),
            sha256: sha256_hex(output),
            truncated,
        }
    }
}

/// The process that wrote an `invocation.start` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub pid: u32,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): a pid means nothing on
    /// another boot.
    pub boot_id: String,
    /// When the process started, in clock ticks since boot (`/proc/PID/stat`, field 22):
    /// with the pid and boot id, one process ever.
    pub start_time: u64,
}

impl Runner {
    /// This process, or `None` if `/proc` cannot say (then a later `verify` reports its
    /// invocation, if it never ends, as unfinished without knowing whether it runs).
    pub fn current() -> Option<Runner> {
        let pid = std::process::id();
        Some(Runner {
            pid,
            boot_id: boot_id()?,
            start_time: start_time(pid)?,
        })
    }

    /// Whether this exact process is still running on this machine.
    pub fn is_running(&self) -> bool {
        boot_id().as_deref() == Some(self.boot_id.as_str())
            && start_time(self.pid) == Some(self.start_time)
    }
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned())
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses
    // itself; the fields after its last `)` start at field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}
