//! `nanoclaw policy check` (the lint, a CI gate for whoever owns the policy) and
//! `nanoclaw verify` (each tool's claims proved on a live sandbox), plus loading a policy
//! for `run --tool`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use nanoclaw_docker::InitBinary;
use nanoclaw_policy::{lint, policy_sha256, Invocation, Policy};
use nanoclaw_spec::{EgressRule, Enforced, IoMode, Mount, Network, Root, SandboxSpec};
use nanoclaw_verify as verify;
use serde_json::json;

use crate::{audit, RUNNER_ERROR};

/// Exit status of `policy check` and `verify` when the policy is refused or a claim fails.
const REFUSED: u8 = 1;

/// Where the probe binary (nanoclaw itself) appears inside a sandbox under verification.
const PROBE_INSIDE: &str = "/.nanoclaw/nanoclaw";

#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Lint a policy: exit 1 on any unacknowledged risk, 125 if it does not parse
    Check {
        /// The policy file
        file: PathBuf,
        /// Print the findings as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The policy file
    file: PathBuf,
    /// Verify only this tool
    #[arg(long, value_name = "NAME")]
    tool: Option<String>,
    /// The task directory for tools that mount ${workspace} [default: a fresh empty one]
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Print the results as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    audit: audit::RunAudit,
}

/// Loads and parses a policy; the error carries every diagnostic with file:line:column.
pub fn load(path: &Path) -> Result<Policy> {
    Policy::load(path).map_err(|diagnostics| anyhow!("{diagnostics}"))
}

/// What the audit log records about a `run --tool` before the policy is even parsed.
pub fn origin(policy: &Path, tool: &str, workspace: Option<&Path>) -> audit::Origin {
    audit::Origin {
        tool: tool.to_string(),
        policy_sha256: std::fs::read(policy)
            .ok()
            .map(|bytes| policy_sha256(&bytes)),
        workspace: workspace.map(|w| w.display().to_string()),
    }
}

pub fn main(args: PolicyArgs) -> ExitCode {
    let PolicyCommand::Check { file, json } = args.command;
    let policy = match load(&file) {
        Ok(policy) => policy,
        Err(error) => {
            if json {
                println!(
                    "{}",
                    json!({ "file": file, "parse_error": format!("{error:#}") })
                );
            } else {
                eprintln!("{error:#}");
            }
            return ExitCode::from(RUNNER_ERROR);
        }
    };
    let report = lint(&policy);
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{report}");
    }
    if report.has_errors() {
        ExitCode::from(REFUSED)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn verify_main(args: VerifyArgs) -> ExitCode {
    match verify_all(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(REFUSED),
        Err(error) => {
            eprintln!("nanoclaw: {error:#}");
            ExitCode::from(RUNNER_ERROR)
        }
    }
}

/// Verifies every tool (or the one asked for); Ok(true) when every claim held.
fn verify_all(args: &VerifyArgs) -> Result<bool> {
    let policy = load(&args.file)?;
    let report = lint(&policy);
    if report.has_errors() {
        bail!("{report}the policy does not pass `nanoclaw policy check`; nothing was started");
    }
    let names: Vec<String> = match &args.tool {
        Some(name) => vec![policy.tool(name)?.name.clone()],
        None => policy.tools().iter().map(|t| t.name.clone()).collect(),
    };
    let mut all_pass = true;
    let mut results = Vec::new();
    for name in &names {
        let outcome = verify_tool(args, &policy, name);
        match &outcome {
            Ok(rows) => {
                all_pass &= rows.iter().all(|r| r.pass);
                if !args.json {
                    println!("{}", verify::render_table(name, rows));
                }
                results.push(
                    json!({ "tool": name, "claims": rows, "pass": rows.iter().all(|r| r.pass) }),
                );
            }
            Err(error) => {
                all_pass = false;
                if !args.json {
                    println!("tool {name}: could not be verified: {error:#}\n");
                }
                results.push(json!({ "tool": name, "error": format!("{error:#}"), "pass": false }));
            }
        }
    }
    if args.json {
        println!(
            "{}",
            json!({ "file": args.file, "pass": all_pass, "tools": results })
        );
    } else {
        println!(
            "{}",
            if all_pass {
                "every claim holds"
            } else {
                "some claims do NOT hold"
            }
        );
    }
    Ok(all_pass)
}

/// A scratch workspace for a tool that mounts `${workspace}` when none was given: empty,
/// and owned by the sandbox user so that a writable mount really is writable.
struct ScratchWorkspace(PathBuf);

impl ScratchWorkspace {
    fn create(uid: u32, gid: u32) -> Result<Self> {
        // A random name, made fresh: another user cannot predict it to take it first.
        let nonce = nanoclaw_audit::invocation_id().map_err(|e| anyhow!("{e}"))?;
        let dir = std::env::temp_dir().join(format!("nanoclaw-verify-{}", &nonce[..16]));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create {}", dir.display()))?;
        let scratch = ScratchWorkspace(dir);
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&scratch.0, Some(uid), Some(gid))
                .with_context(|| format!("hand {} to the sandbox user", scratch.0.display()))?;
        }
        Ok(scratch)
    }

    /// A credential file with a token no sandbox may read, so that `verify` proves the
    /// masking on a workspace that would otherwise hold none.
    fn plant_decoy(&self) -> Result<()> {
        let decoy = self.0.join(".git-credentials");
        std::fs::write(
            &decoy,
            "https://verify:nanoclaw-decoy-token@example.invalid\n",
        )
        .with_context(|| format!("write {}", decoy.display()))
    }
}

impl Drop for ScratchWorkspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the tool's sandbox exactly as an invocation would, with nanoclaw's own probe in
/// place of its command, and checks every claim against what the probe saw.
fn verify_tool(args: &VerifyArgs, policy: &Policy, name: &str) -> Result<Vec<verify::ClaimResult>> {
    let tool = policy.tool(name)?;
    let scratch = match (&args.workspace, tool.uses_workspace()) {
        (None, true) => Some(ScratchWorkspace::create(tool.user.uid, tool.user.gid)?),
        _ => None,
    };
    if let Some(scratch) = &scratch {
        scratch.plant_decoy()?;
    }
    let workspace = args
        .workspace
        .clone()
        .or_else(|| scratch.as_ref().map(|s| s.0.clone()));
    // The tool's scope only: its command (and so its parameters) is replaced by the probe.
    let mut spec: SandboxSpec = policy.resolve_scope(
        name,
        &Invocation {
            workspace,
            ..Invocation::default()
        },
    )?;
    // A listener on the host's loopback: the probe must not reach it.
    let host_listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("open a host loopback listener")?;
    let host_port = host_listener
        .local_addr()
        .context("read the listener's port")?
        .port();
    // The probe is this nanoclaw: every container has it already (it is their init), and
    // a native sandbox gets it mounted read-only. The claims hold the files the docker
    // backend mounts for its init read-only, like the probe of a native sandbox.
    let mut init_mounts = Vec::new();
    let probe = match spec.root {
        Root::Image(_) => {
            let init = InitBinary::current()?;
            init_mounts.extend(init.paths_inside().into_iter().map(|dst| Mount {
                src: dst.clone(),
                dst,
                writable: false,
            }));
            init.command()
        }
        Root::Host | Root::Rootfs(_) => {
            let exe = std::env::current_exe().context("locate the nanoclaw binary")?;
            spec.mounts.push(Mount {
                src: exe,
                dst: PROBE_INSIDE.into(),
                writable: false,
            });
            vec![PROBE_INSIDE.to_string()]
        }
    };
    let probe_command =
        |args: &[String]| -> Vec<String> { probe.iter().chain(args).cloned().collect() };
    crate::run::hide_credentials(&mut spec)?;
    spec.command = probe_command(&[
        "probe".into(),
        "inspect".into(),
        "1.1.1.1:443".into(),
        format!("127.0.0.1:{host_port}"),
    ]);

    let mut recorder = audit::recorder(&args.audit, &spec.command)?;
    recorder.set_origin(audit::Origin {
        tool: format!("verify:{name}"),
        policy_sha256: std::fs::read(policy.path()).ok().map(|b| policy_sha256(&b)),
        workspace: None,
    });
    // The tool's secrets are fetched as for a run, so that their delivery can be checked.
    let secrets = crate::secrets::fetch(&mut spec, recorder.key_dir().as_deref())?;
    let egress = crate::egress::start(&mut spec, audit::egress_sink(&recorder)?)?;
    let backend = crate::backend::for_spec(&spec, false)?;
    // Runs one probe in the tool's sandbox, audited like any invocation.
    let run_probe = |spec: &SandboxSpec| -> Result<(nanoclaw_probe::Report, Enforced)> {
        let io = IoMode {
            stdin: false,
            capture: true,
        };
        let request = nanoclaw_runner::Request {
            io,
            secrets: &secrets.uses,
            ttl_bounds_run: secrets.ttl_bounds_run,
        };
        let mut spec = spec.clone();
        let result = nanoclaw_runner::run(&*backend, &recorder, &mut spec, request, || ())?.result;
        let outcome = result?;
        let line = outcome.stdout.text.trim();
        let report = serde_json::from_str(line).with_context(|| {
            format!(
                "the probe did not report (exit status {}): {}{}{}",
                outcome.exit_status(),
                line,
                outcome.stderr.text.trim(),
                if !matches!(spec.root, Root::Rootfs(_)) {
                    ""
                } else {
                    " (the probe is this nanoclaw binary, mounted into the tool's own root: \
                     there it must be static, e.g. built with --target x86_64-unknown-linux-musl)"
                }
            )
        })?;
        Ok((report, outcome.enforced))
    };
    let (report, enforced) = run_probe(&spec)?;
    let mut inspection =
        verify::Inspection::from_json(&report.detail).context("read the probe's inspection")?;
    for mount in spec.mounts.iter().filter(|m| m.writable) {
        let mut budget_spec = spec.clone();
        let mib = verify::past_write_budget_mib(spec.limits.write_bytes);
        budget_spec.command = probe_command(&[
            "probe".into(),
            "write-budget".into(),
            mount.dst.display().to_string(),
            mib.to_string(),
        ]);
        let attempt = match run_probe(&budget_spec) {
            Ok((report, _)) => verify::Attempt {
                target: mount.dst.display().to_string(),
                ok: report.blocked,
                detail: report.detail,
            },
            Err(e) => verify::Attempt {
                target: mount.dst.display().to_string(),
                ok: false,
                detail: format!("{e:#}"),
            },
        };
        inspection.write_budgets.push(attempt);
    }
    let mut claimed = spec.clone();
    claimed.mounts.extend(init_mounts);
    let claims = verify::claims(tool, &claimed);
    let mut results = verify::check(&claims, &inspection, &enforced);
    let hidden_report = if spec.hidden.is_empty() {
        None
    } else {
        let mut probe_spec = spec.clone();
        let args: Vec<String> = ["probe", "hidden"]
            .iter()
            .map(|s| s.to_string())
            .chain(spec.hidden.iter().map(|p| p.display().to_string()))
            .collect();
        probe_spec.command = probe_command(&args);
        Some(run_probe(&probe_spec)?.0)
    };
    results.extend(verify::credentials_claim(
        &spec,
        hidden_report
            .as_ref()
            .map(|r| (r.blocked, r.detail.as_str())),
    ));
    if let Network::Egress(rules) = &spec.network {
        let mut probe_spec = spec.clone();
        let probes = egress_probes(rules, host_port);
        let args: Vec<String> = ["probe", "proxy-connect"]
            .iter()
            .map(|s| s.to_string())
            .chain(probes.iter().map(|(target, _, _)| target.clone()))
            .collect();
        probe_spec.command = probe_command(&args);
        let report = run_probe(&probe_spec).map(|(report, _)| report);
        results.extend(egress_results(&probes, report));
    }
    if let Some(egress) = egress {
        egress.finish()?;
    }
    drop(host_listener);
    Ok(results)
}

/// What `verify` asks the egress proxy for, with whether the policy allows it: one host
/// per rule (a wildcard's stand-in subdomain), and destinations no rule names: an unlisted
/// host, the host machine's loopback and the cloud metadata service.
fn egress_probes(rules: &[EgressRule], host_port: u16) -> Vec<(String, bool, String)> {
    let mut probes: Vec<(String, bool, String)> = rules
        .iter()
        .map(|rule| {
            let host = match rule.host.strip_prefix("*.") {
                Some(domain) => format!("nanoclaw-verify.{domain}"),
                None => rule.host.clone(),
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            (
                format!("{host}:{}", rule.port),
                true,
                format!("listed {}:{}", rule.host, rule.port),
            )
        })
        .collect();
    for (target, what) in [
        (
            "nanoclaw-verify.invalid:443".to_string(),
            "an unlisted host",
        ),
        (format!("127.0.0.1:{host_port}"), "the host machine"),
        ("169.254.169.254:80".to_string(), "cloud metadata"),
    ] {
        if !probes.iter().any(|(t, _, _)| *t == target) {
            probes.push((target, false, what.to_string()));
        }
    }
    probes
}

/// One claim per destination (allowed: the proxy lets it through, whether or not the
/// destination answers from here; refused: 403), and one that the sandbox has no resolver.
fn egress_results(
    probes: &[(String, bool, String)],
    report: Result<nanoclaw_probe::Report>,
) -> Vec<verify::ClaimResult> {
    let seen: serde_json::Value = match report.map(|r| serde_json::from_str(&r.detail)) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => serde_json::json!({ "error": e.to_string() }),
        Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
    };
    let mut rows = Vec::new();
    for (i, (target, allowed, what)) in probes.iter().enumerate() {
        let answer = &seen["results"][i];
        let status = answer["status"].as_u64();
        let observed = match status {
            Some(code) => format!("{code} ({})", answer["answer"].as_str().unwrap_or_default()),
            None => format!(
                "no answer: {}",
                answer["answer"]
                    .as_str()
                    .or(seen["error"].as_str())
                    .unwrap_or("missing")
            ),
        };
        let refused = status == Some(403);
        rows.push(verify::ClaimResult {
            claim: format!("egress to {what} ({target})"),
            expected: if *allowed {
                "let through by the proxy"
            } else {
                "refused (403)"
            }
            .into(),
            observed,
            pass: if *allowed {
                status.is_some() && !refused
            } else {
                refused
            },
        });
    }
    let dns = seen["dns"].as_str().unwrap_or("missing").to_string();
    rows.push(verify::ClaimResult {
        claim: "name lookups inside".into(),
        expected: "fail (no resolver)".into(),
        pass: dns.starts_with("failed"),
        observed: dns,
    });
    rows
}
