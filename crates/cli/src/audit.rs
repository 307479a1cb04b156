//! The audit log at the edge: what `nanoclaw run` records about each invocation, and the
//! `nanoclaw audit` commands that verify, query and sign the log.
//!
//! For every `nanoclaw run` the log holds, under one fresh invocation id:
//! - `policy.refused` alone, when nanoclaw refuses the request before anything starts
//!   (an invalid option value, a missing mount source, an invalid spec);
//! - `invocation.start`, synced before the sandbox starts, then exactly one of
//!   `invocation.end` (the command ran, or the sandbox failed after it started: setup
//!   failed inside it, command not found, interrupted; `error` says which), or
//!   `policy.refused` (the backend refused the spec before starting anything: an invalid
//!   spec, or a layer this host cannot enforce). A start with neither means the runner
//!   itself died mid-run: `audit verify` and `audit list` report it as unfinished (or as
//!   running while the runner its start record names still runs), never as tampering.
//!
//! Command lines that clap rejects (unknown flags, a missing command) never reach the
//! runner and are not recorded: nothing was requested of it.
//!
//! A plain `nanoclaw run` names no tool; its records carry the tool `(command line)`,
//! which no policy can name. Output is recorded by size and sha256 only when it was
//! captured (`--json`); streamed output never passes through nanoclaw, so its digests
//! are `null` (unknown), never zero.
//!
//! Fail closed: if the start record cannot be written, the sandbox does not start; if
//! the end record cannot be written, `run` reports an error instead of the outcome. Only
//! an explicit `--no-audit` runs unrecorded, with a warning. Never record a secret value:
//! the spec (which holds the environment) is logged by hash only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use nanoclaw_audit::{
    invocation_id, parse_time, sha256_hex, AuditLog, InvocationEnd, InvocationStart, OutputDigest,
    PolicyRefused, Record, Runner,
};
use nanoclaw_audit_tools::{
    checkpoint, checkpoints_path, generate_key, list, show, table, unfinished, verify, Filter,
    PublicKey, Unfinished,
};
use nanoclaw_spec::{BackendError, Enforced, IoMode, Outcome, Root, SandboxSpec};

use crate::RUNNER_ERROR;

/// The tool of an invocation that no policy named: a plain `nanoclaw run -- CMD`.
pub const COMMAND_LINE_TOOL: &str = "(command line)";

/// Exit status of `audit verify` when the log is damaged or was tampered with.
const TAMPERED: u8 = 1;

/// Where `nanoclaw run` records the invocation.
#[derive(Args, Debug)]
pub struct RunAudit {
    /// Audit log to append to [default: $NANOCLAW_AUDIT, else $XDG_STATE_HOME/nanoclaw/audit.jsonl, else ~/.local/state/nanoclaw/audit.jsonl]
    #[arg(long, value_name = "PATH")]
    audit: Option<PathBuf>,
    /// Run without recording the invocation in the audit log (prints a warning)
    #[arg(long, conflicts_with = "audit")]
    no_audit: bool,
}

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

/// Where one invocation's egress decisions are recorded: `egress.allowed` or
/// `egress.denied` when the proxy decides, `egress.closed` with the byte counts when an
/// allowed connection ends.
pub struct EgressSink {
    log: AuditLog,
    invocation_id: String,
    tool: String,
}

impl EgressSink {
    pub fn record(&self, decision: &nanoclaw_egress::Decision) -> Result<()> {
        let kind = decision.kind();
        let mut data = serde_json::to_value(decision).context("encode an egress decision")?;
        if let Some(object) = data.as_object_mut() {
            object.insert("invocation_id".into(), self.invocation_id.clone().into());
            object.insert("tool".into(), self.tool.clone().into());
        }
        self.log.append(kind, data).map(drop).map_err(fail_closed)
    }
}

/// An invocation whose start record is on disk; `Recorder::end` closes it.
#[must_use = "an invocation.start must be closed by Recorder::end"]
pub struct Started {
    at: Instant,
    captured: bool,
    /// The start record's seq (`None` with `--no-audit`).
    pub seq: Option<u64>,
}

impl Recorder {
    pub fn open(options: &RunAudit, argv: &[String]) -> Result<Recorder> {
        let mut recorder = Recorder {
            log: None,
            invocation_id: String::new(),
            argv: argv.to_vec(),
            uid: rustix::process::getuid().as_raw(),
            origin: Origin::default(),
        };
        if options.no_audit {
            eprintln!(
                "nanoclaw: WARNING: --no-audit: this invocation is not recorded in any audit log"
            );
            return Ok(recorder);
        }
        let path = log_path(options.audit.as_deref()).map_err(fail_closed)?;
        recorder.log = Some(AuditLog::open(&path).map_err(fail_closed)?);
        recorder.invocation_id = invocation_id().map_err(fail_closed)?;
        Ok(recorder)
    }

    /// A second handle on the log for the egress proxy's decisions, or `None` with
    /// `--no-audit`.
    pub fn egress_sink(&self) -> Result<Option<EgressSink>> {
        let Some(log) = &self.log else {
            return Ok(None);
        };
        Ok(Some(EgressSink {
            log: AuditLog::open(log.path()).map_err(fail_closed)?,
            invocation_id: self.invocation_id.clone(),
            tool: self.origin.tool.clone(),
        }))
    }

    /// The directory of the audit log, which holds the secret fingerprint key; `None`
    /// with `--no-audit`.
    pub fn key_dir(&self) -> Option<std::path::PathBuf> {
        self.log
            .as_ref()
            .and_then(|log| log.path().parent().map(Path::to_path_buf))
    }

    /// The invocation's id (empty with `--no-audit`) and tool, for backend labels.
    pub fn invocation(&self) -> (&str, &str) {
        (&self.invocation_id, &self.origin.tool)
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
    pub fn start(
        &self,
        spec: &SandboxSpec,
        backend: &str,
        io: IoMode,
        secrets: &[nanoclaw_audit::SecretUse],
    ) -> Result<Started> {
        let mut started = Started {
            at: Instant::now(),
            captured: io.capture,
            seq: None,
        };
        let Some(log) = &self.log else {
            return Ok(started);
        };
        // Hashed without the secret values: a hash of a short value could be guessed.
        let spec_json =
            serde_json::to_vec(&spec.without_secret_values()).context("encode the sandbox spec")?;
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
    pub fn end(&self, started: Started, result: &Result<Outcome, BackendError>) -> Result<()> {
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
            anyhow!(
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

fn fail_closed(error: nanoclaw_audit::Error) -> anyhow::Error {
    anyhow!(
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

fn log_path(given: Option<&Path>) -> nanoclaw_audit::Result<PathBuf> {
    match given {
        Some(path) => Ok(path.to_path_buf()),
        None => AuditLog::default_path(),
    }
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The audit log [default: $NANOCLAW_AUDIT, else $XDG_STATE_HOME/nanoclaw/audit.jsonl, else ~/.local/state/nanoclaw/audit.jsonl]
    #[arg(long, value_name = "PATH", global = true)]
    audit: Option<PathBuf>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check that no record was edited, dropped, inserted or reordered (exit 1 if one was);
    /// invocations that started and never ended are listed as unfinished (exit 0)
    Verify {
        /// Trust only checkpoints signed by this public key (hex, as `keygen` prints it)
        #[arg(long, value_name = "PUBKEYHEX", conflicts_with = "key_file")]
        key: Option<String>,
        /// Trust only checkpoints signed by the key in this file (as given to `checkpoint`)
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
    /// List records as a table, or as JSON Lines for a SIEM
    List {
        /// Only records of this tool (a plain `nanoclaw run` is "(command line)")
        #[arg(long, value_name = "TOOL")]
        tool: Option<String>,
        /// Only records at or after this time (RFC 3339, or a date meaning midnight UTC)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only records at or before this time (RFC 3339, or a date meaning midnight UTC)
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only ends that did not exit 0 (failed, signalled, timed out, runner errors)
        #[arg(long)]
        exit_nonzero: bool,
        /// Only refusals (with --exit-nonzero: either)
        #[arg(long)]
        refused: bool,
        /// One record per line, as stored; a start with no end also gets "status": "unfinished" (or "running")
        #[arg(long)]
        json: bool,
        /// Only one agent conversation: its `agent.*` records and the invocations its tool calls ran
        #[arg(long, value_name = "ID")]
        conversation: Option<String>,
    },
    /// Show one invocation: the record with this seq and the others of its invocation
    Show {
        seq: u64,
        /// One record per line, as stored; a start with no end also gets "status": "unfinished" (or "running")
        #[arg(long)]
        json: bool,
    },
    /// Sign the log's current head and record count into <log>.checkpoints
    Checkpoint {
        /// The secret key file (from `keygen`)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Move a torn last line (an append cut short by a crash) aside to <log>.torn-<millis>,
    /// so that runs can append again; touches nothing else
    Repair,
    /// Write a new checkpoint signing key to FILE (never overwrites) and print its public key
    Keygen { file: PathBuf },
}

pub fn main(args: AuditArgs) -> ExitCode {
    match dispatch(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("nanoclaw audit: {}", message(&error));
            ExitCode::from(RUNNER_ERROR)
        }
    }
}

/// The error and its causes, leaving out a cause its effect already quotes (the audit
/// crate's messages include their `io::Error`, which is also their `source`).
fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if text.is_empty() {
            text = cause;
        } else if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn dispatch(args: AuditArgs) -> Result<ExitCode> {
    let given = args.audit;
    let path = || log_path(given.as_deref());
    match args.command {
        AuditCommand::Verify { key, key_file } => {
            let trusted = match (key, key_file) {
                (Some(hex), _) => Some(PublicKey::from_hex(&hex)?),
                (None, Some(file)) => Some(PublicKey::from_key_file(&file)?),
                (None, None) => None,
            };
            let report = verify(&path()?, trusted.as_ref())?;
            println!("{}", terminal_safe(&report.to_string()));
            Ok(if report.is_intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(TAMPERED)
            })
        }
        AuditCommand::List {
            tool,
            since,
            until,
            exit_nonzero,
            refused,
            json,
            conversation,
        } => {
            let filter = Filter {
                tool,
                since: since.as_deref().map(parse_time).transpose()?,
                until: until.as_deref().map(parse_time).transpose()?,
                exit_nonzero,
                refused,
            };
            // Whether a start has an end is a fact of the whole log, not of the records
            // the filter leaves.
            let all = list(&path()?, &Filter::default())?;
            let unfinished = unfinished(&all);
            let linked = conversation
                .as_deref()
                .map(|id| conversation_invocations(&all, id));
            let records: Vec<Record> = all
                .into_iter()
                .filter(|r| filter.matches(r))
                .filter(|r| match (&conversation, &linked) {
                    (Some(id), Some(linked)) => in_conversation(r, id, linked),
                    _ => true,
                })
                .collect();
            print_records(&records, &unfinished, json)
        }
        AuditCommand::Show { seq, json } => {
            let records = show(&path()?, seq)?;
            // `show` returns every record of the invocation: its end, if it has one.
            let unfinished = unfinished(&records);
            if json {
                return print_records(&records, &unfinished, true);
            }
            let mut out = String::new();
            for record in &records {
                out.push_str(&serde_json::to_string_pretty(record)?);
                out.push('\n');
            }
            for invocation in &unfinished {
                out.push_str(&format!("{}: {invocation}\n", invocation.state.status()));
            }
            write_stdout(&terminal_safe(&out))
        }
        AuditCommand::Checkpoint { key } => {
            let path = path()?;
            let signed = checkpoint(&path, &key)?;
            println!(
                "{}: signed {} records (head {}) with key {} into {}",
                path.display(),
                signed.count,
                signed.head,
                signed.key,
                checkpoints_path(&path).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Repair => {
            let path = path()?;
            match AuditLog::open_existing(&path)?.repair_torn_tail()? {
                Some(aside) => println!(
                    "{}: moved the torn last line to {}",
                    path.display(),
                    aside.display()
                ),
                None => println!(
                    "{}: the last line is complete; nothing to repair",
                    path.display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Keygen { file } => {
            let public = generate_key(&file)?;
            eprintln!(
                "nanoclaw audit: wrote a secret key to {}; keep it away from whoever can \
                 write the log; its public key (for `audit verify --key`):",
                file.display()
            );
            println!("{public}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The invocations an agent conversation ran: the `invocation` of its `agent.tool` records.
fn conversation_invocations(records: &[Record], id: &str) -> std::collections::HashSet<String> {
    records
        .iter()
        .filter(|r| r.kind == "agent.tool")
        .filter(|r| {
            r.data
                .get("conversation")
                .and_then(serde_json::Value::as_str)
                == Some(id)
        })
        .filter_map(|r| r.data.get("invocation").and_then(serde_json::Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// Whether `record` is part of conversation `id`: an agent record of it, or a record of
/// one of the invocations it ran.
fn in_conversation(record: &Record, id: &str, linked: &std::collections::HashSet<String>) -> bool {
    record
        .data
        .get("conversation")
        .and_then(serde_json::Value::as_str)
        == Some(id)
        || record
            .invocation_id()
            .is_some_and(|inv| linked.contains(inv))
}

/// The records as a table or as JSON Lines. The start of an invocation in `unfinished`
/// is marked: `[unfinished]` or `[running]` in the table, a `"status"` field after the
/// record's own in JSON (not part of the record or its hash).
fn print_records(records: &[Record], unfinished: &[Unfinished], json: bool) -> Result<ExitCode> {
    if !json {
        return write_stdout(&table(records, unfinished));
    }
    let mut out = String::new();
    for record in records {
        let line = serde_json::to_string(record)?;
        match unfinished.iter().find(|u| u.seq == record.seq) {
            Some(u) => {
                out.push_str(line.strip_suffix('}').unwrap_or(&line));
                out.push_str(&format!(",\"status\":\"{}\"}}", u.state.status()));
            }
            None => out.push_str(&line),
        }
        out.push('\n');
    }
    write_stdout(&terminal_safe(&out))
}

/// Writes all of `text`; a closed pipe (`| head`) ends the listing quietly.
fn write_stdout(text: &str) -> Result<ExitCode> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        written => written
            .context("write to stdout")
            .map(|()| ExitCode::SUCCESS),
    }
}

/// JSON text with the control characters JSON leaves raw (DEL, C1 such as the 8-bit CSI)
/// escaped as `\uXXXX`: records hold agent-supplied text, which must not reach the
/// operator's terminal as escape sequences. The newlines between lines are kept; inside
/// JSON strings every newline is already escaped, so the JSON means the same.
fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn display_all(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_safe_json_still_parses_to_the_same_value() {
        let value = serde_json::json!({"argv": ["echo", "\u{9b}2J\u{7f}\u{1b}[0m\n"]});
        let text = serde_json::to_string(&value).unwrap();
        let safe = terminal_safe(&text);
        assert!(!safe.chars().any(char::is_control), "{safe}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&safe).unwrap(),
            value
        );
    }
}
