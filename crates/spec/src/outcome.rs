//! `Outcome`: how one sandboxed invocation ended and what was really enforced.

use serde::{Deserialize, Serialize};

/// How a sandboxed command ended. Field names are the `--json` output's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub duration_ms: u64,
    /// Captured output; empty when output was streamed.
    pub stdout: Captured,
    pub stderr: Captured,
    pub usage: Usage,
    pub enforced: Enforced,
    /// What the writable mounts' changes did to the host; `None` without writable mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<WriteReport>,
    /// Secret values (in any encoding) replaced by `[REDACTED:NAME]` in the output, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub redactions: std::collections::BTreeMap<String, u64>,
    /// The run was stopped because a `file` or `env` secret's TTL ran out.
    #[serde(default)]
    pub secret_expired: bool,
    /// What the backend could not do exactly as asked (e.g. the engine's warnings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The changes a run made to its writable mounts, applied to the host after it ended.
/// Lists are cut at `WriteReport::LISTED` entries; the counts are complete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReport {
    /// Entries written to the host (files, directories, links, deletions).
    pub applied: Vec<AppliedChange>,
    pub applied_count: u64,
    /// Entries not written to the host, with the reason.
    pub refused: Vec<RefusedChange>,
    pub refused_count: u64,
    /// What the changes took of the budget.
    pub bytes_used: u64,
    pub files_used: u64,
    pub budget_bytes: u64,
    pub budget_files: u64,
    /// The budget ran out: during the run (writes past it failed with ENOSPC), or during the
    /// apply, where every file counts its full size and each hard link its own (the entries
    /// past it are refused, "over the write budget when applied").
    pub budget_reached: bool,
}

impl WriteReport {
    /// The most entries each list holds.
    pub const LISTED: usize = 1000;
}

/// One change written to the host: `path` on the host, `kind` one of "file", "dir",
/// "symlink", "deleted"; `bytes` a file's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedChange {
    pub path: String,
    pub kind: String,
    pub bytes: u64,
}

/// One change not written to the host, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedChange {
    pub path: String,
    pub reason: String,
}

impl Outcome {
    /// Whether the command itself was killed for memory: its sandbox saw an OOM kill
    /// (`sandbox_oom_kill`) and the command died of SIGKILL, not of its timeout. Another
    /// process of the sandbox killed for memory (a child the command can sacrifice on
    /// purpose) does not end the command: its own exit status stands, and the outcome must
    /// not let it pass for "killed: out of memory". Every backend classifies through this.
    pub fn killed_for_memory(sandbox_oom_kill: bool, signal: Option<i32>, timed_out: bool) -> bool {
        const SIGKILL: i32 = 9;
        sandbox_oom_kill && !timed_out && signal == Some(SIGKILL)
    }

    /// The exit status `nanoclaw run` exits with: the command's own, 124 on timeout,
    /// 137 when killed for memory, 128+N for a signal.
    pub fn exit_status(&self) -> i32 {
        if self.timed_out {
            124
        } else if self.oom_killed {
            137
        } else if let Some(signal) = self.signal {
            128 + signal
        } else {
            self.exit_code.unwrap_or(125)
        }
    }
}

/// One captured stream, cut at the output limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// The bytes as UTF-8 (invalid sequences replaced).
    pub text: String,
    /// Bytes the command wrote, including any beyond the cap.
    pub total_bytes: u64,
    pub truncated: bool,
}

/// One stream of a running command as a backend sees it: every byte is counted, and when
/// capturing, the first `limit` bytes are kept and the rest dropped, so an output flood
/// costs the caller no memory. Every backend bounds output through this one type.
#[derive(Debug)]
pub struct Capture {
    kept: Option<Vec<u8>>,
    limit: u64,
    total: u64,
}

impl Capture {
    /// `capture` false counts the bytes only (they are streamed elsewhere).
    pub fn new(capture: bool, limit: u64) -> Self {
        Capture {
            kept: capture.then(Vec::new),
            limit,
            total: 0,
        }
    }

    /// Whether the bytes are kept here (otherwise the caller passes them on).
    pub fn is_capturing(&self) -> bool {
        self.kept.is_some()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if let Some(kept) = &mut self.kept {
            let room = self.limit.saturating_sub(kept.len() as u64) as usize;
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    pub fn finish(self) -> Captured {
        let truncated = self.kept.is_some() && self.total > self.limit;
        Captured {
            text: self
                .kept
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            total_bytes: self.total,
            truncated,
        }
    }
}

/// Resources the command used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_ms: u64,
    pub max_rss_kib: u64,
}

/// Which isolation layers were really applied, as observed, never as assumed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforced {
    pub backend: String,
    /// Namespaces the command runs in ("user", "mount", "pid", "net", "ipc", "uts", "cgroup").
    pub namespaces: Vec<String>,
    /// The seccomp profile installed, if any.
    pub seccomp: Option<String>,
    pub landlock: LandlockStatus,
    /// "v1" or "v2" when cgroup limits apply; `None` when they could not be enforced.
    pub cgroup: Option<String>,
    /// The memory, CPU and PID limits that apply (absent when not enforced).
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u32>,
    pub pids: Option<u32>,
    pub no_new_privs: bool,
    /// Capabilities left to the command (empty: all dropped).
    pub capabilities: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub read_only_root: bool,
}

/// Whether Landlock restricted the command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockStatus {
    /// "full", "partial" or "none".
    pub status: String,
    /// The kernel's Landlock ABI version (0: not available).
    pub abi: u32,
    /// Why it is not fully enforced, when it is not.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_commands_own_death_by_sigkill_is_killed_for_memory() {
        assert!(Outcome::killed_for_memory(true, Some(9), false));
        assert!(
            !Outcome::killed_for_memory(true, None, false),
            "a child was killed"
        );
        assert!(
            !Outcome::killed_for_memory(true, Some(9), true),
            "the timeout killed it"
        );
        assert!(
            !Outcome::killed_for_memory(false, Some(9), false),
            "no OOM kill"
        );
    }

    #[test]
    fn a_capture_keeps_the_first_bytes_and_counts_the_rest() {
        let mut capture = Capture::new(true, 5);
        capture.push(b"hello");
        capture.push(b" world");
        let captured = capture.finish();
        assert_eq!(captured.text, "hello");
        assert_eq!(captured.total_bytes, 11);
        assert!(captured.truncated);
    }

    #[test]
    fn a_streamed_capture_only_counts() {
        let mut capture = Capture::new(false, 5);
        assert!(!capture.is_capturing());
        capture.push(b"hello world");
        let captured = capture.finish();
        assert_eq!(
            (
                captured.text.as_str(),
                captured.total_bytes,
                captured.truncated
            ),
            ("", 11, false)
        );
    }
}
