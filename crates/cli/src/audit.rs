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

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use nanoclaw_audit::{parse_time, AuditLog, Record};
use nanoclaw_audit_tools::{
    checkpoint, checkpoints_path, generate_key, list, show, table, unfinished, verify, Filter,
    PublicKey, Unfinished,
};
pub use nanoclaw_runner::{Origin, Recorder};

use crate::RUNNER_ERROR;

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

/// Opens the run's recorder (`nanoclaw_runner::Recorder`) as the options say: before
/// anything else, so that an unwritable log stops the run before a sandbox exists.
pub fn recorder(options: &RunAudit, argv: &[String]) -> Result<Recorder> {
    if options.no_audit {
        eprintln!(
            "nanoclaw: WARNING: --no-audit: this invocation is not recorded in any audit log"
        );
        return Ok(Recorder::disabled(argv));
    }
    Recorder::open(options.audit.as_deref(), argv).map_err(|e| anyhow!(e))
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

/// A second handle on `recorder`'s log for the egress proxy's decisions, or `None` with
/// `--no-audit`.
pub fn egress_sink(recorder: &Recorder) -> Result<Option<EgressSink>> {
    let Some(path) = recorder.log_path() else {
        return Ok(None);
    };
    let invocation = recorder.invocation();
    Ok(Some(EgressSink {
        log: AuditLog::open(path).map_err(fail_closed)?,
        invocation_id: invocation.id,
        tool: invocation.tool,
    }))
}

fn fail_closed(error: nanoclaw_audit::Error) -> anyhow::Error {
    anyhow!(
        "cannot record this invocation in the audit log: {error}; nothing was run \
         (--no-audit runs it without an audit record)"
    )
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
