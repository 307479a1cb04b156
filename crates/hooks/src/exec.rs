//! `nanoclaw hook exec`: what a rewritten shell call runs, in the agent's shell, in its
//! working directory at that moment.
//!
//! It maps that directory into the shell tool's sandbox (refusing one no mount reaches),
//! and replaces itself with `nanoclaw run --policy P --tool T --workspace W
//! --params-json '{"command": ...}'`, the command prefixed with a `cd` to the mapped
//! directory. It never runs anything itself, and never on the host.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Args;
use nanoclaw_policy::Policy;
use serde_json::json;

use crate::workdir::{canonical, check_out_of_reach, sandbox_dir};
use crate::{sandbox_script, RUNNER_ERROR, SHELL_PARAM};

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The policy file (absolute)
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The policy's shell tool
    #[arg(long, value_name = "NAME", default_value = "shell")]
    tool: String,
    /// The workspace (absolute)
    #[arg(long, value_name = "DIR")]
    workspace: PathBuf,
    /// The audit log
    #[arg(long, value_name = "PATH")]
    audit: PathBuf,
    /// The shell command line, as the model wrote it
    #[arg(value_name = "COMMAND", allow_hyphen_values = true)]
    command: String,
}

pub fn main(args: ExecArgs) -> ExitCode {
    match run_command(&args) {
        Ok(mut command) => {
            let error = command.exec();
            eprintln!("nanoclaw hook exec: cannot start nanoclaw run: {error}");
        }
        Err(reason) => eprintln!("nanoclaw hook exec: {reason}"),
    }
    ExitCode::from(RUNNER_ERROR)
}

/// The `nanoclaw run` that runs `args.command` sandboxed in the current directory.
fn run_command(args: &ExecArgs) -> Result<Command, String> {
    let policy = Policy::load(&args.policy)
        .map_err(|d| format!("cannot load policy {}: {d}", args.policy.display()))?;
    let tool = policy.tool(&args.tool).map_err(|e| e.to_string())?;
    let workspace = canonical("workspace", &args.workspace)?;
    check_out_of_reach(tool, Some(&workspace), "the policy", &args.policy)?;
    check_out_of_reach(tool, Some(&workspace), "the audit log", &args.audit)?;
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let cwd = canonical("the current directory", &cwd)?;
    let dir = sandbox_dir(tool, Some(&workspace), &cwd)?;
    let script = sandbox_script(tool, &dir, &args.command);
    let params = json!({ SHELL_PARAM: script }).to_string();
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the nanoclaw binary: {e}"))?;
    let mut command = Command::new(exe);
    command.args(run_args(
        &args.policy,
        &args.tool,
        &workspace,
        &args.audit,
        params,
    ));
    Ok(command)
}

fn run_args(
    policy: &Path,
    tool: &str,
    workspace: &Path,
    audit: &Path,
    params: String,
) -> Vec<OsString> {
    vec![
        "run".into(),
        "--policy".into(),
        policy.into(),
        "--tool".into(),
        tool.into(),
        "--workspace".into(),
        workspace.into(),
        "--audit".into(),
        audit.into(),
        "--params-json".into(),
        params.into(),
    ]
}
