//! The audit records of one run (see the `nanoclaw audit` documentation for the log):
//! under one fresh invocation id, `policy.refused` alone when the request is refused before
//! anything starts; otherwise `invocation.start`, synced before the command starts, then
//! exactly one of `invocation.end` or `policy.refused` (the backend refused the spec before
//! starting anything). Fail closed: no start record, no run; no end record, no outcome.
//! Never record a secret value: the spec (which holds the environment) is logged by hash
//! only, without them.

use std::path::Path;
use std::time::Instant;

use nanoclaw_audit::{
    invocation_id, sha256_hex, AuditLog, InvocationEnd, InvocationStart, OutputDigest,
    PolicyRefused, Runner,
};
use nanoclaw_spec::{BackendError, Enforced, Invocation, IoMode, Outcome, Root, SandboxSpec};

/// The tool of an invocation that no policy named: a plain `nanoclaw run -- CMD`.
pub const COMMAND_LINE_TOOL: &str = "(command line)";

/// Records one `nanoclaw run`: opened before anything else, so that an unwritable log
/// stops the run before a sandbox exists.
pub struct Recorder {
    /// `None` with `--no-audit`.
    log: Option<AuditLog>,
    invocation_id: String,
    argv: Vec<String>,
    uid: u32,
    origin: Origin,
}

/// Which tool of which policy an invocation runs; a plain `nanoclaw run` is the
/// command-line tool with no policy.
#[derive(Debug, Clone)]
pub struct Origin {
    pub tool: String,
    pub policy_sha256: Option<String>,
    pub workspace: Option<String>,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            tool: COMMAND_LINE_TOOL.into(),
            policy_sha256: None,
            workspace: None,
        }
    }
}

/// An invocation whose start record is on disk; `Recorder::end` closes it.
#[must_use = "an invocation.start must be closed by Recorder::end"]
pub(crate) struct Started {
    at: Instant,
    captured: bool,
    /// The start record's seq (`None` with `--no-audit`).
    pub(crate) seq: Option<u64>,
}

impl Recorder {
    /// Opens the log at `path` (the default log when `None`) for an invocation of
    /// `argv`, under a fresh invocation id.
    pub fn open(path: Option<&Path>, argv: &[String]) -> Result<Recorder, String> {
        let path = match path {
            Some(path) => path.to_path_buf(),
            None => AuditLog::default_path().map_err(fail_closed)?,
        };
        let mut recorder = Recorder::disabled(argv);
        recorder.log = Some(AuditLog::open(&path).map_err(fail_closed)?);
        recorder.invocation_id = invocation_id().map_err(fail_closed)?;
        Ok(recorder)
    }

    /// Records nothing (`--no-audit`; the caller warns).
    pub fn disabled(argv: &[String]) -> Recorder {
        Recorder {
            log: None,
            invocation_id: String::new(),
            argv: argv.to_vec(),
            uid: rustix::process::getuid().as_raw(),
            origin: Origin::default(),
        }
    }

    /// The log's path; `None` with `--no-audit`.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_ref().map(AuditLog::path)
    }

    /// The directory of the audit log, which holds the secret fingerprint key; `None`
    /// with `--no-audit`.
    pub fn key_dir(&self) -> Option<std::path::PathBuf> {
        self.log
            .as_ref()
            .and_then(|log| log.path().parent().map(Path::to_path_buf))
    }

    /// The invocation's tool and id (empty with `--no-audit`), for backend labels.
    pub fn invocation(&self) -> Invocation {
        Invocation {
            tool: self.origin.tool.clone(),
            id: self.invocation_id.clone(),
        }
    }

    /// The argv the invocation runs, once known (a tool's command with its parameters
    /// bound), in place of the command line's arguments.
    pub fn set_argv(&mut self, argv: &[String]) {
        self.argv = argv.to_vec();
    }

    /// Names the tool and policy the invocation runs (before `start` or `refused`).
    pub fn set_origin(&mut self, origin: Origin) {
        self.origin = origin;
    }

    /// Records that the request was refused before anything started, and returns the
    /// message for the user: `reason`, plus the audit error if even that failed.
    pub fn refused(&self, reason: &str) -> String {
        let Some(log) = &self.log else {
            return reason.to_owned();
        };
        match log.append_event(&self.refusal(reason)) {
            Ok(_) => reason.to_owned(),
            Err(e) => format!("{reason} (and the refusal could not be recorded: {e})"),
        }
    }

    /// Appends `invocation.start`; returns once it is on disk.
    pub(crate) fn start(
        &self,
        spec: &SandboxSpec,
        backend: &str,
        io: IoMode,
        secrets: &[nanoclaw_audit::SecretUse],
    ) -> Result<Started, String> {
        let mut started = Started {
            at: Instant::now(),
            captured: io.capture,
            seq: None,
        };
        let Some(log) = &self.log else {
            return Ok(started);
        };
        // Hashed without the secret values: a hash of a short value could be guessed.
        let spec_json = serde_json::to_vec(&spec.without_secret_values())
            .map_err(|e| format!("encode the sandbox spec: {e}"))?;
        let (image, rootfs) = match &spec.root {
            Root::Host => (None, None),
            Root::Rootfs(dir) => (None, Some(dir.display().to_string())),
            Root::Image(image) => (Some(image.clone()), None),
        };
        let appended = log
            .append_event(&InvocationStart {
                invocation_id: self.invocation_id.clone(),
                tool: self.origin.tool.clone(),
                policy_sha256: self.origin.policy_sha256.clone(),
                spec_sha256: sha256_hex(&spec_json),
                backend: backend.into(),
                image,
                rootfs,
                argv: self.argv.clone(),
                workspace: self.origin.workspace.clone(),
                uid: self.uid,
                session: None,
                runner: Runner::current(),
                hidden: display_all(&spec.hidden),
                credentials_shown: display_all(&spec.credentials_shown),
                secrets: secrets.to_vec(),
            })
            .map_err(fail_closed)?;
        started.seq = Some(appended.seq);
        Ok(started)
    }

    /// Appends how the invocation ended (`invocation.end`, or `policy.refused` when the
    /// backend refused the spec before starting anything); returns once it is on disk.
    pub(crate) fn end(
        &self,
        started: Started,
        result: &Result<Outcome, BackendError>,
    ) -> Result<(), String> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let appended = match result {
            Err(error @ (BackendError::Invalid(_) | BackendError::LayerUnavailable { .. })) => {
                log.append_event(&self.refusal(&error.to_string()))
            }
            Err(error) => log.append_event(&InvocationEnd {
                invocation_id: self.invocation_id.clone(),
                tool: self.origin.tool.clone(),
                duration_ms: u64::try_from(started.at.elapsed().as_millis()).unwrap_or(u64::MAX),
                usage: serde_json::Value::Null,
                error: Some(error.to_string()),
                ..InvocationEnd::default()
            }),
            Ok(outcome) => {
                let digest = |captured: &nanoclaw_spec::Captured| {
                    started
                        .captured
                        .then(|| OutputDigest::of(captured.text.as_bytes(), captured.truncated))
                };
                log.append_event(&InvocationEnd {
                    invocation_id: self.invocation_id.clone(),
                    tool: self.origin.tool.clone(),
                    exit: outcome.exit_code,
                    signal: outcome.signal,
                    timed_out: outcome.timed_out,
                    oom_killed: outcome.oom_killed,
                    duration_ms: outcome.duration_ms,
                    usage: serde_json::to_value(outcome.usage).unwrap_or_default(),
                    stdout: digest(&outcome.stdout),
                    stderr: digest(&outcome.stderr),
                    layers: layers(&outcome.enforced),
                    error: None,
                    writes: serde_json::to_value(&outcome.writes).unwrap_or_default(),
                    redactions: outcome.redactions.clone(),
                    secret_expired: outcome.secret_expired,
                })
            }
        };
        appended.map(drop).map_err(|e| {
            format!(
                "the invocation ended but its end record could not be written: {e}; \
                 its outcome is withheld"
            )
        })
    }

    fn refusal(&self, reason: &str) -> PolicyRefused {
        PolicyRefused {
            invocation_id: self.invocation_id.clone(),
            tool: self.origin.tool.clone(),
            policy_sha256: self.origin.policy_sha256.clone(),
            argv: self.argv.clone(),
            uid: self.uid,
            session: None,
            reason: reason.to_owned(),
        }
    }
}

fn fail_closed(error: nanoclaw_audit::Error) -> String {
    format!(
        "cannot record this invocation in the audit log: {error}; nothing was run \
         (--no-audit runs it without an audit record)"
    )
}

/// The layers an outcome says were enforced, one `name` or `name:detail` each: the
/// limits are here because the spec itself is logged by hash only.
fn layers(enforced: &Enforced) -> Vec<String> {
    let mut layers = Vec::new();
    if !enforced.namespaces.is_empty() {
        layers.push(format!("namespaces:{}", enforced.namespaces.join(",")));
    }
    if let Some(profile) = &enforced.seccomp {
        layers.push(format!("seccomp:{profile}"));
    }
    if enforced.landlock.status != "none" {
        layers.push(format!(
            "landlock:{} (abi {})",
            enforced.landlock.status, enforced.landlock.abi
        ));
    }
    if let Some(version) = &enforced.cgroup {
        layers.push(format!("cgroup:{version}"));
    }
    let limits = [
        ("memory_bytes", enforced.memory_bytes),
        ("cpu_millis", enforced.cpu_millis.map(u64::from)),
        ("pids", enforced.pids.map(u64::from)),
    ];
    for (name, limit) in limits {
        if let Some(limit) = limit {
            layers.push(format!("{name}:{limit}"));
        }
    }
    if enforced.no_new_privs {
        layers.push("no_new_privs".into());
    }
    if enforced.capabilities.is_empty() {
        layers.push("capabilities:none".into());
    } else {
        layers.push(format!("capabilities:{}", enforced.capabilities.join(",")));
    }
    if enforced.read_only_root {
        layers.push("read_only_root".into());
    }
    layers.push(format!("user:{}:{}", enforced.uid, enforced.gid));
    layers
}

fn display_all(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}
