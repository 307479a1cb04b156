//! `nanoclaw`: runs each AI-agent tool call in its own short-lived sandbox.
//!
//! This is the edge: it parses what the user typed, builds a `SandboxSpec`, hands it to a
//! backend and reports the `Outcome`. It decides nothing about isolation itself.

mod audit;
mod backend;
mod doctor;
mod egress;
mod policy;
mod prebuilt;
mod run;
mod secrets;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nanoclaw",
    version,
    about = "Run each AI agent tool call in its own short-lived, strictly isolated sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a new sandbox with strict defaults
    Run(Box<run::RunArgs>),
    /// Report which isolation layers this host can enforce, and why not
    Doctor(doctor::DoctorArgs),
    /// Lint a policy file (a CI gate: exit 1 on any unacknowledged risk)
    Policy(policy::PolicyArgs),
    /// Prove each tool's policy on a live sandbox: a table of claims, expected and observed
    Verify(policy::VerifyArgs),
    /// Verify, query and sign the audit log of every invocation
    Audit(audit::AuditArgs),
    /// A coding agent's PreToolUse hook: `nanoclaw hook claude-code|codex --policy FILE`
    Hook(nanoclaw_hooks::HookArgs),
    /// Serve a policy's tools over MCP (stdio, or Streamable HTTP), each call in its own sandbox
    Mcp(nanoclaw_mcp::McpArgs),
    /// A model loop whose every tool call runs in its own sandbox: `nanoclaw agent --policy FILE "task"`
    Agent(Box<nanoclaw_agent::AgentArgs>),
    /// Try one escape from inside a sandbox and report whether it was blocked
    #[command(hide = true)]
    Probe {
        /// The probe to run (`--list` shows them)
        name: Option<String>,
        /// Arguments of the probe
        args: Vec<String>,
        /// List the probes
        #[arg(long)]
        list: bool,
    },
}

/// Exit status for errors of nanoclaw itself (as `docker run` and `timeout(1)` use it).
pub const RUNNER_ERROR: u8 = 125;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == nanoclaw_native::SUPERVISOR_ARG)
    {
        nanoclaw_native::supervisor_main();
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == nanoclaw_native::container::CONTAINER_INIT_ARG)
    {
        let args: Vec<_> = std::env::args_os().skip(2).collect();
        nanoclaw_native::container::main(&args);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(RUNNER_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run(args) => run::main(*args),
        Command::Doctor(args) => doctor::main(args),
        Command::Policy(args) => policy::main(args),
        Command::Verify(args) => policy::verify_main(args),
        Command::Audit(args) => audit::main(args),
        Command::Hook(args) => nanoclaw_hooks::main(args),
        Command::Mcp(args) => nanoclaw_mcp::main(args),
        Command::Agent(args) => nanoclaw_agent::main(*args),
        Command::Probe { name, args, list } => probe(name, args, list),
    }
}

fn probe(name: Option<String>, args: Vec<String>, list: bool) -> ExitCode {
    let name = match name {
        Some(name) if !list => name,
        _ => {
            for probe in nanoclaw_probe::all() {
                println!("{:<16} {:<14} {}", probe.name, probe.args, probe.about);
            }
            return ExitCode::SUCCESS;
        }
    };
    match nanoclaw_probe::run(&name, &args) {
        Ok(report) => {
            println!("{}", report.to_json_line());
            ExitCode::from(report.exit_code() as u8)
        }
        Err(error) => {
            eprintln!("nanoclaw probe: {error}");
            ExitCode::from(2)
        }
    }
}
