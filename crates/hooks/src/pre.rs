//! The PreToolUse decision: a shell call is rewritten to run through `nanoclaw hook exec`
//! (and so `nanoclaw run --tool shell`) or denied with a reason; a call of a tool the
//! policy names is denied (it belongs to the MCP server); anything else passes.
//!
//! Everything is checked here that can be known before the call runs (the policy and its
//! shell tool, the policy and the audit log out of the sandbox's reach, the working
//! directory and every leading `cd` kept on the host staying in the workspace, the command
//! against the tool's parameter schema, the size the kernel takes as one argument), so that a refusal reaches the model as a reason it can act on. `hook exec`
//! checks the working directory again when the call runs, because only then is it known
//! for certain. This module must never allow a call without rewriting it, and never put
//! anything of the model's command on the host shell's command line unquoted.

use std::path::{Path, PathBuf};

use nanoclaw_policy::{Invocation, Policy, Tool};
use serde_json::{Map, Value};

use crate::agent::{Agent, Decision, Event};
use crate::shell::{host_cd, is_empty_command, quote, split_leading_cds, Separator, Split};
use crate::workdir::{canonical, check_out_of_reach, sandbox_dir};
use crate::{sandbox_script, SHELL_PARAM};

/// The longest single argument Linux passes to a program (`MAX_ARG_STRLEN`, NUL included):
/// the rewritten command reaches the agent's shell as one, and the sandboxed script
/// reaches `nanoclaw run` as one.
pub const MAX_ARG: usize = 128 * 1024 - 1;

/// How the hook was configured (its command line in the agent's settings).
#[derive(Debug, Clone)]
pub struct Setup {
    pub agent: Agent,
    /// Absolute.
    pub policy: PathBuf,
    /// The shell tool of the policy.
    pub tool: String,
    /// `--workspace`, canonical, if given.
    pub workspace: Option<PathBuf>,
    /// The audit log, absolute: the hook's records and the sandboxed runs go to the same one.
    pub audit: PathBuf,
    /// This nanoclaw binary, absolute.
    pub exe: PathBuf,
}

/// Decides one PreToolUse event.
pub fn decide(setup: &Setup, event: &Event) -> Decision {
    match try_decide(setup, event) {
        Ok(decision) => decision,
        Err(reason) => Decision::Deny {
            reason: format!("nanoclaw: {reason}"),
        },
    }
}

fn try_decide(setup: &Setup, event: &Event) -> Result<Decision, String> {
    let tool_name = event.tool_name()?;
    let tool_input = event.tool_input()?;
    let policy = Policy::load(&setup.policy)
        .map_err(|d| format!("cannot load policy {}: {d}", setup.policy.display()))?;
    if tool_name != setup.agent.shell_tool() {
        if policy.tools().iter().any(|t| t.name == tool_name) {
            return Err(format!(
                "`{tool_name}` is a tool of policy {policy}: call it through nanoclaw's MCP \
                 server (`nanoclaw mcp --policy {policy}`), which runs it sandboxed",
                policy = setup.policy.display()
            ));
        }
        return Ok(Decision::Pass);
    }
    let command = match tool_input.get(SHELL_PARAM) {
        Some(Value::String(command)) => command,
        _ => return Err(format!("the {tool_name} call has no `command` string")),
    };
    if command.contains('\0') {
        return Err("the command contains a NUL byte, which no shell can run".into());
    }
    let tool = policy.tool(&setup.tool).map_err(|e| {
        format!(
            "shell commands run only as tool `{}` of the policy, and it has none: {e}",
            setup.tool
        )
    })?;
    check_shell_tool(tool)?;

    let cwd = match event.str("cwd") {
        Some(cwd) => canonical("the session's working directory", Path::new(cwd))?,
        None => return Err("the hook event has no `cwd` string".into()),
    };
    let workspace = workspace(setup)?;
    check_out_of_reach(tool, Some(&workspace), "the policy", &setup.policy)?;
    check_out_of_reach(tool, Some(&workspace), "the audit log", &setup.audit)?;
    let split = split_leading_cds(command);
    let followed = follow_cds(tool, &workspace, &cwd, &split)?;
    let rest = followed.rest;

    let rewritten = if is_empty_command(rest) {
        // Only `cd`s: nothing to run but the directory changes themselves.
        followed.host_cds(false)
    } else {
        let dir = sandbox_dir(tool, Some(&workspace), &followed.start)?;
        let script = sandbox_script(tool, &dir, rest);
        let params_len = serde_json::json!({ SHELL_PARAM: script }).to_string().len();
        if params_len > MAX_ARG {
            return Err(too_long(params_len));
        }
        check_resolves(&policy, tool, &workspace, &script)?;
        format!(
            "{prefix}{exe} hook exec --policy {policy} --tool {tool} --workspace {workspace} \
             --audit {audit} -- {rest}",
            prefix = followed.host_cds(true),
            exe = quote(&setup.exe.to_string_lossy()),
            policy = quote(&setup.policy.to_string_lossy()),
            tool = quote(&setup.tool),
            workspace = quote(&workspace.to_string_lossy()),
            audit = quote(&setup.audit.to_string_lossy()),
            rest = quote(rest),
        )
    };
    if rewritten.len() > MAX_ARG {
        return Err(too_long(rewritten.len()));
    }
    let mut input: Map<String, Value> = tool_input.clone();
    input.insert(SHELL_PARAM.into(), Value::String(rewritten));
    Ok(Decision::Rewrite {
        input,
        reason: format!(
            "nanoclaw: runs sandboxed as tool `{}` of {}",
            setup.tool,
            setup.policy.display()
        ),
    })
}

fn too_long(len: usize) -> String {
    format!(
        "the command is too long to run sandboxed ({len} bytes once quoted; at most {MAX_ARG}): \
         write it to a script file in the workspace and run that"
    )
}

/// The workspace: `--workspace`, else Claude Code's project directory. Never the session's
/// working directory: that is wherever the agent's shell is, which the model moves.
fn workspace(setup: &Setup) -> Result<PathBuf, String> {
    if let Some(workspace) = &setup.workspace {
        return Ok(workspace.clone());
    }
    match setup.agent {
        Agent::ClaudeCode => match std::env::var_os("CLAUDE_PROJECT_DIR") {
            Some(dir) if !dir.is_empty() => canonical("$CLAUDE_PROJECT_DIR", Path::new(&dir)),
            _ => Err(
                "the hook has no workspace: give it `--workspace DIR` (the project \
                      directory, e.g. `--workspace \"$CLAUDE_PROJECT_DIR\"`) in the hook's \
                      command line; $CLAUDE_PROJECT_DIR is not set either"
                    .into(),
            ),
        },
        Agent::Codex => Err("the hook has no workspace: `nanoclaw hook codex` needs \
                             `--workspace DIR` (the project directory) in the hook's command \
                             line"
            .into()),
    }
}

/// The leading `cd`s the hook checked, kept on the host side, and what runs sandboxed.
struct Followed<'a> {
    /// Each checked `cd`'s canonical target and what joins it to what follows.
    cds: Vec<(PathBuf, Separator)>,
    /// Where the shell is after them (the session's directory if there are none).
    start: PathBuf,
    /// The rest of the command, from the first `cd` not checked on.
    rest: &'a str,
}

impl Followed<'_> {
    /// The host side: `cd -P -- 'ABS'` for each checked `cd`, joined as the model joined
    /// them; followed by the last separator if `more` follows.
    fn host_cds(&self, more: bool) -> String {
        let mut text = String::new();
        for (i, (dir, sep)) in self.cds.iter().enumerate() {
            text.push_str(&host_cd(&dir.to_string_lossy()));
            if more || i + 1 < self.cds.len() {
                text.push_str(sep.as_str());
            }
        }
        text
    }
}

/// Follows the leading `cd`s from `cwd` as the host shell will run them: each to the
/// canonical directory it names (symlinks resolved first, then `..`), which must stay where
/// the tool's mounts reach. The first `cd` whose target the hook cannot check here (it does
/// not exist, is not a directory, is not UTF-8) ends them: it and everything after it,
/// later `cd`s included, run in the sandbox, where they change nothing on the host.
fn follow_cds<'a>(
    tool: &Tool,
    workspace: &Path,
    cwd: &Path,
    split: &Split<'a>,
) -> Result<Followed<'a>, String> {
    let mut followed = Followed {
        cds: Vec::new(),
        start: cwd.to_path_buf(),
        rest: split.rest,
    };
    for cd in &split.cds {
        let target = canonical("", &followed.start.join(&cd.dir))
            .ok()
            .filter(|target| target.is_dir());
        let Some(target) = target else {
            followed.rest = cd.from;
            break;
        };
        if sandbox_dir(tool, Some(workspace), &target).is_err() {
            return Err(format!(
                "`cd {}` leaves the workspace {} (it is {}): shell commands run sandboxed in it \
                 only",
                cd.dir,
                workspace.display(),
                target.display()
            ));
        }
        followed.cds.push((target.clone(), cd.sep));
        followed.start = target;
    }
    Ok(followed)
}

/// The shell tool must be a shell: `SHELL -c {command}`, so that the `cd` into the working
/// directory and the model's command line mean what they mean in the agent's shell.
fn check_shell_tool(tool: &Tool) -> Result<(), String> {
    let placeholder = format!("{{{SHELL_PARAM}}}");
    let shell = tool
        .command
        .first()
        .and_then(|c| Path::new(c).file_name())
        .and_then(|n| n.to_str());
    let is_shell = matches!(shell, Some("sh" | "bash" | "dash" | "ash" | "zsh" | "ksh"))
        && tool
            .command
            .get(1)
            .is_some_and(|flag| flag.starts_with('-') && flag.contains('c'))
        && tool.command.get(2) == Some(&placeholder);
    if is_shell {
        Ok(())
    } else {
        Err(format!(
            "tool `{}` is not a shell tool: its command must be [\"sh\", \"-c\", \"{placeholder}\"] \
             (it is {:?})",
            tool.name, tool.command
        ))
    }
}

/// The call resolves as `nanoclaw run` will resolve it: the script fits the tool's
/// parameters (`max_length`, `pattern`), the policy check passes, the workspace is valid.
fn check_resolves(
    policy: &Policy,
    tool: &Tool,
    workspace: &Path,
    script: &str,
) -> Result<(), String> {
    let mut params = Map::new();
    params.insert(SHELL_PARAM.into(), Value::String(script.into()));
    let invocation = Invocation {
        workspace: Some(workspace.to_path_buf()),
        params,
        ..Invocation::default()
    };
    policy
        .resolve(&tool.name, &invocation)
        .map(drop)
        .map_err(|e| e.to_string())
}
