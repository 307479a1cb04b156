//! `nanoclaw doctor`: which isolation layers this host can enforce, checked twice: by
//! looking at the kernel, and by starting a real sandbox and reading what it enforced.

use std::process::ExitCode;

use clap::Args;
use nanoclaw_doctor as doctor;
use nanoclaw_native::NativeBackend;
use nanoclaw_spec::{Backend, IoMode, SandboxSpec};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    json: bool,
}

pub fn main(args: DoctorArgs) -> ExitCode {
    let mut checks = doctor::checks();
    let live = std::env::current_exe()
        .map_err(|e| e.to_string())
        .and_then(|exe| {
            NativeBackend::new(exe)
                .run(
                    &SandboxSpec::new(vec!["true".into()]),
                    IoMode {
                        stdin: false,
                        capture: true,
                    },
                    &mut || Ok(()),
                )
                .map_err(|e| e.to_string())
        });
    checks.push(match live {
        Ok(outcome) if outcome.exit_code == Some(0) => doctor::Check {
            layer: "live sandbox",
            ok: true,
            detail: format!(
                "ran `true` in {} ms: namespaces {}, seccomp {}, landlock {}, cgroup {}",
                outcome.duration_ms,
                outcome.enforced.namespaces.join(","),
                outcome.enforced.seccomp.as_deref().unwrap_or("none"),
                outcome.enforced.landlock.status,
                outcome.enforced.cgroup.as_deref().unwrap_or("none"),
            ),
        },
        Ok(outcome) => doctor::Check {
            layer: "live sandbox",
            ok: false,
            detail: format!(
                "`true` ended with status {}: {}",
                outcome.exit_status(),
                outcome.stderr.text.trim()
            ),
        },
        Err(error) => doctor::Check {
            layer: "live sandbox",
            ok: false,
            detail: error,
        },
    });
    let all_ok = checks.iter().all(|c| c.ok);
    if args.json {
        println!("{}", serde_json::json!({ "ok": all_ok, "checks": checks }));
    } else {
        for check in &checks {
            println!(
                "{:<4} {:<16} {}",
                if check.ok { "ok" } else { "FAIL" },
                check.layer,
                check.detail
            );
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
