//! `nanoclaw hook claude-code|codex`: the PreToolUse/PostToolUse hook of the coding agents
//! that have one, so that every shell command the agent runs runs in a nanoclaw sandbox
//! under a policy, and lands in the audit log.
//!
//! The agent runs the hook before each tool call with the call as JSON on stdin. For its
//! shell tool the hook answers "allow, but run this instead": the same command line, passed
//! single-quoted to `nanoclaw hook exec`, which the agent's own shell then runs in its
//! working directory, and which becomes `nanoclaw run --tool shell` in the directory of the
//! sandbox that matches it. A leading plain `cd DIR &&` stays on the host side, as a `cd`
//! to the canonical directory the hook checked, so the agent's shell keeps its working
//! directory between calls as it expects. What the policy
//! forbids is denied with a reason; other tools pass, unless the policy names them.
//!
//! At the edge, outside the trusted core: it decides nothing about isolation (the policy and
//! `nanoclaw run` do) and runs nothing of the model's on the host. It fails closed: input
//! it cannot read, a policy it cannot load, an audit log it cannot write, all block the
//! call, and a misconfigured hook command line exits 2 (the status both agents read as
//! "block"; any other failure status lets the call go ahead).
//!
//! - `agent`: the wire formats (payload in, decision out)
//! - `pre`: the PreToolUse decision
//! - `shell`: quoting and the leading `cd`s
//! - `workdir`: the host directory's place in the sandbox
//! - `exec`: `nanoclaw hook exec`, the rewritten command's entry point
//! - `post`: the PostToolUse audit record

mod agent;
mod exec;
mod post;
mod pre;
mod shell;
mod workdir;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use nanoclaw_audit::{sha256_hex, AuditLog};
use nanoclaw_policy::Tool;
use serde_json::{json, Value};

pub use agent::{Agent, Decision};
use agent::{Event, EventName, Unreadable};

/// Exit status for errors of nanoclaw itself (as `nanoclaw run` uses it).
const RUNNER_ERROR: u8 = 125;

/// The exit status Claude Code and Codex both read as "block this call; the reason is on
/// stderr". Any other failure status lets the call go ahead, so the hook never uses one.
const BLOCK: u8 = 2;

/// The shell tool's parameter that carries the command line.
const SHELL_PARAM: &str = "command";

/// The most hook input read (a `Write` call carries a whole file); more is refused.
const MAX_INPUT: u64 = 16 << 20;

/// `nanoclaw hook ...`: the arguments, parsed here so that a mistake in the hook's command
/// line blocks the call (exit 2) instead of failing open.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct HookArgs {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

#[derive(Parser, Debug)]
#[command(
    name = "nanoclaw hook",
    about = "Answer a coding agent's PreToolUse hook: its shell commands run sandboxed"
)]
struct HookCli {
    #[command(subcommand)]
    command: HookCommand,
}

#[derive(Subcommand, Debug)]
enum HookCommand {
    /// Claude Code's hook (.claude/settings.json, matcher "Bash")
    ClaudeCode(AgentArgs),
    /// Codex's hook (~/.codex/hooks.json or [hooks] in config.toml, matcher "Bash")
    Codex(AgentArgs),
    /// Run a rewritten shell call sandboxed in the current directory (the hook writes it)
    #[command(hide = true)]
    Exec(exec::ExecArgs),
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// Policy file with the shell tool
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The task directory the tool's ${workspace} mounts stand for [default for
    /// claude-code: $CLAUDE_PROJECT_DIR; required otherwise]
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// The policy's tool shell commands run as (`sh -c {command}`)
    #[arg(long, value_name = "NAME", default_value = "shell")]
    tool: String,
    /// Answer PostToolUse instead: record the call's result in the audit log
    #[arg(long)]
    post: bool,
    /// Audit log [default: $NANOCLAW_AUDIT, else $XDG_STATE_HOME/nanoclaw/audit.jsonl, else
    /// ~/.local/state/nanoclaw/audit.jsonl]
    #[arg(long, value_name = "PATH")]
    audit: Option<PathBuf>,
}

pub fn main(args: HookArgs) -> ExitCode {
    let argv = std::iter::once(OsString::from("nanoclaw hook")).chain(args.args);
    let cli = match HookCli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(BLOCK)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        HookCommand::ClaudeCode(args) => agent_main(Agent::ClaudeCode, &args),
        HookCommand::Codex(args) => agent_main(Agent::Codex, &args),
        HookCommand::Exec(args) => exec::main(args),
    }
}

fn agent_main(agent: Agent, args: &AgentArgs) -> ExitCode {
    let expected = if args.post {
        EventName::PostToolUse
    } else {
        EventName::PreToolUse
    };
    let event = match read_input().and_then(|input| Event::parse(&input, expected)) {
        Ok(event) => event,
        Err(Unreadable(reason)) => {
            eprintln!(
                "nanoclaw hook {}: {reason}; the call is blocked",
                agent.name()
            );
            return ExitCode::from(BLOCK);
        }
    };
    if args.post {
        return post_main(agent, args, &event);
    }
    let decision = match setup(agent, args) {
        Ok(setup) => {
            let decision = pre::decide(&setup, &event);
            match audit_pre(&setup, &event, &decision) {
                Ok(()) => decision,
                Err(error) => Decision::Deny {
                    reason: format!(
                        "nanoclaw: cannot record this call in the audit log {}: {error}; \
                         nothing was run",
                        setup.audit.display()
                    ),
                },
            }
        }
        Err(reason) => Decision::Deny {
            reason: format!("nanoclaw: {reason}"),
        },
    };
    if let Some(answer) = decision.answer() {
        // Not `println!`, which panics when the agent has closed the pipe.
        if writeln!(std::io::stdout().lock(), "{answer}").is_err() {
            return ExitCode::from(BLOCK);
        }
    }
    ExitCode::SUCCESS
}

fn post_main(agent: Agent, args: &AgentArgs, event: &Event) -> ExitCode {
    let appended = audit_path(args.audit.as_deref()).and_then(|path| {
        AuditLog::open(&path)
            .and_then(|log| log.append("hook.post", post::record(agent, event)))
            .map_err(|e| e.to_string())
    });
    match appended {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            // PostToolUse cannot undo the call; a failure status shows the user the error.
            eprintln!(
                "nanoclaw hook {}: cannot record the call's result: {error}",
                agent.name()
            );
            ExitCode::FAILURE
        }
    }
}

/// The hook input, at most `MAX_INPUT` bytes.
fn read_input() -> Result<Vec<u8>, Unreadable> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input)
        .map_err(|e| Unreadable(format!("cannot read the hook input: {e}")))?;
    if input.len() as u64 > MAX_INPUT {
        return Err(Unreadable(format!(
            "the hook input is larger than {} MiB",
            MAX_INPUT >> 20
        )));
    }
    Ok(input)
}

fn setup(agent: Agent, args: &AgentArgs) -> Result<pre::Setup, String> {
    let policy = std::path::absolute(&args.policy)
        .map_err(|e| format!("policy {}: {e}", args.policy.display()))?;
    let workspace = match &args.workspace {
        Some(dir) => {
            let dir = std::path::absolute(dir)
                .map_err(|e| format!("workspace {}: {e}", dir.display()))?;
            Some(workdir::canonical("workspace", &dir)?)
        }
        None => None,
    };
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the nanoclaw binary: {e}"))?;
    Ok(pre::Setup {
        agent,
        policy: workdir::canonical("policy", &policy)?,
        tool: args.tool.clone(),
        workspace,
        audit: audit_path(args.audit.as_deref())?,
        exe,
    })
}

/// The audit log's path, absolute: the rewritten call hands it to `nanoclaw run`, whose
/// environment (the agent's shell) may differ from the hook's.
fn audit_path(given: Option<&Path>) -> Result<PathBuf, String> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => AuditLog::default_path().map_err(|e| e.to_string())?,
    };
    std::path::absolute(&path).map_err(|e| format!("audit log {}: {e}", path.display()))
}

/// The `hook.pre` record: the decision and the call's ids, the command by size and hash.
fn audit_pre(setup: &pre::Setup, event: &Event, decision: &Decision) -> Result<(), String> {
    let command = event
        .tool_input()
        .ok()
        .and_then(|input| input.get(SHELL_PARAM))
        .and_then(Value::as_str)
        .map(|c| json!({ "bytes": c.len(), "sha256": sha256_hex(c.as_bytes()) }));
    let reason = match decision {
        Decision::Pass => None,
        Decision::Rewrite { reason, .. } | Decision::Deny { reason } => Some(reason.as_str()),
    };
    let mut data = json!({
        "agent": setup.agent.name(),
        "decision": decision.label(),
        "reason": reason,
        "policy": setup.policy,
        "tool": setup.tool,
        "command": command,
    });
    if let (Value::Object(data), Value::Object(ids)) = (&mut data, event.ids()) {
        data.extend(ids);
    }
    let log = AuditLog::open(&setup.audit).map_err(|e| e.to_string())?;
    log.append("hook.pre", data)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The script the shell tool runs: the command, after a `cd` into `dir` unless the tool
/// starts there anyway. A failed `cd` stops it (exit 125, nanoclaw's own error status)
/// rather than running the command somewhere else.
fn sandbox_script(tool: &Tool, dir: &Path, command: &str) -> String {
    if dir == tool.workdir {
        return command.to_string();
    }
    format!(
        "cd {} || exit {RUNNER_ERROR}\n{command}",
        shell::quote(&dir.to_string_lossy())
    )
}
