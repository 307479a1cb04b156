//! The native backend's API for a pool: a sandbox prepared ahead of its call runs exactly
//! that call (its argv, environment and stdin) under every layer a one-shot run has, and a
//! prepared sandbox dropped unused leaves no process, cgroup or mount behind.
//!
//! These tests drive `nanoclaw_native` in this process (the supervisor is the binary under
//! test, re-executed), so its cgroups and overlays are named after this process: the
//! tests hold one lock so that each sees only its own.

use std::path::PathBuf;
use std::sync::Mutex;

use nanoclaw_native::{Call, NativeBackend};
use nanoclaw_spec::{IoMode, Mount, Outcome, SandboxSpec};

use super::support::{cgroups_of, BIN, SANDBOX_UID};
use super::test_image::PROBE;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn backend() -> NativeBackend {
    NativeBackend::new(PathBuf::from(BIN))
}

/// The default spec with the probe bound in; its command is a template no call uses.
fn template() -> SandboxSpec {
    let mut spec = SandboxSpec::new(vec!["/bin/false".into()]);
    spec.mounts.push(Mount {
        src: BIN.into(),
        dst: PROBE.into(),
        writable: false,
    });
    spec
}

const CAPTURE_STDIN: IoMode = IoMode {
    stdin: true,
    capture: true,
};

fn call(command: &[&str]) -> Call {
    Call {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        stdin: Some(Vec::new()),
    }
}

fn run(spec: &SandboxSpec, call: Call) -> Outcome {
    backend()
        .prepare(spec, CAPTURE_STDIN)
        .unwrap()
        .run(call, &mut || Ok(()))
        .unwrap()
}

/// Runs a probe in a prepared sandbox and asserts it was blocked.
fn assert_probe_blocked(name: &str, args: &[&str]) -> String {
    let mut command = vec![PROBE, "probe", name];
    command.extend_from_slice(args);
    let outcome = run(&template(), call(&command));
    let line = outcome
        .stdout
        .text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'));
    let report: serde_json::Value = serde_json::from_str(line.unwrap_or("{}")).unwrap();
    assert_eq!(
        report["blocked"], true,
        "probe {name} in a pooled sandbox was not blocked: {report}\nstderr: {}",
        outcome.stderr.text
    );
    report["detail"].as_str().unwrap_or_default().to_string()
}

/// Mount points of this process's runs (the write overlays, named `<pid>-<n>`).
fn my_mounts() -> Vec<String> {
    let marker = format!("/{}-", std::process::id());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.contains(&marker))
        .map(String::from)
        .collect()
}

/// This process's supervisors (re-executed children).
fn my_supervisors() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let parent = status.lines().find(|l| l.starts_with("PPid:"))?;
            (parent.split_whitespace().nth(1) == Some(me.as_str())
                && String::from_utf8_lossy(&cmdline).contains("__nanoclaw_sandbox_supervisor"))
            .then_some(pid)
        })
        .collect()
}

#[test]
fn a_prepared_sandbox_runs_the_calls_argv_env_and_stdin() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let prepared = backend().prepare(&template(), CAPTURE_STDIN).unwrap();
    let mut committed = 0;
    let outcome = prepared
        .run(
            Call {
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo \"$1 $GREETING\"; cat; echo; env | sort".into(),
                    "sh".into(),
                    "first-arg".into(),
                ],
                env: vec![
                    ("PATH".into(), "/usr/bin:/bin".into()),
                    ("GREETING".into(), "hello from the call".into()),
                ],
                stdin: Some(b"bytes on stdin".to_vec()),
            },
            &mut || {
                committed += 1;
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(committed, 1);
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    let out = &outcome.stdout.text;
    assert!(
        out.starts_with("first-arg hello from the call\nbytes on stdin\n"),
        "{out}"
    );
    // The call's environment replaces the template's: no HOME, no LANG.
    assert!(!out.contains("HOME=") && !out.contains("LANG="), "{out}");
    assert_eq!(outcome.enforced.uid, SANDBOX_UID);
}

#[test]
fn a_call_without_a_command_is_refused_and_the_sandbox_torn_down() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let prepared = backend().prepare(&template(), CAPTURE_STDIN).unwrap();
    let mut committed = false;
    let error = prepared
        .run(call(&[]), &mut || {
            committed = true;
            Ok(())
        })
        .unwrap_err();
    assert!(error.to_string().contains("no command"), "{error}");
    assert!(!committed, "a refused call must not be committed");
    assert!(cgroups_of(std::process::id()).is_empty());
    assert!(my_supervisors().is_empty());
}

#[test]
fn a_failed_commit_never_starts_the_command() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let prepared = backend().prepare(&template(), CAPTURE_STDIN).unwrap();
    let error = prepared
        .run(call(&["/bin/true"]), &mut || {
            Err(nanoclaw_spec::BackendError::Invalid("no audit".into()))
        })
        .unwrap_err();
    assert!(error.to_string().contains("no audit"), "{error}");
    assert!(cgroups_of(std::process::id()).is_empty());
    assert!(my_supervisors().is_empty());
}

#[test]
fn a_prepared_sandbox_dropped_unused_leaves_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let writable = tempfile::tempdir().unwrap();
    let mut spec = template();
    spec.mounts.push(Mount {
        src: writable.path().to_path_buf(),
        dst: "/work".into(),
        writable: true,
    });
    let before = my_mounts();
    let prepared: Vec<_> = (0..3)
        .map(|_| backend().prepare(&spec, CAPTURE_STDIN).unwrap())
        .collect();
    // Give the sandboxes time to be built and to wait for their calls.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(cgroups_of(std::process::id()).len() >= 3);
    assert_eq!(my_supervisors().len(), 3);
    drop(prepared);
    assert_eq!(cgroups_of(std::process::id()), Vec::<PathBuf>::new());
    assert_eq!(my_supervisors(), Vec::<u32>::new());
    assert_eq!(my_mounts(), before);
    // The cgroups are gone, so nothing was left in them; nothing holds the supervisor
    // binary's name either (the inits are forks of it).
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        super::support::processes_with("__nanoclaw_sandbox_supervisor")
            .iter()
            .all(|(pid, _)| !my_supervisors().contains(pid)),
    );
}

#[test]
fn a_pooled_call_runs_without_credentials_capabilities_or_privileges() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert_probe_blocked("whoami", &[]);
}

#[test]
fn a_pooled_call_runs_under_seccomp() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for probe in ["keyctl", "bpf", "userns", "io-uring"] {
        assert_probe_blocked(probe, &[]);
    }
}

#[test]
fn a_pooled_call_runs_under_landlock() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = run(&template(), call(&["/bin/true"]));
    assert_eq!(outcome.enforced.landlock.status, "full", "{outcome:?}");
    assert_probe_blocked("exec-from", &["/tmp"]);
    assert_probe_blocked("write-file", &["/usr/nanoclaw-pool-test"]);
}

#[test]
fn each_prepared_sandbox_takes_one_call_and_outlives_a_slow_pool() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut spec = template();
    // Its timeout counts from the call, not from when the sandbox was built.
    spec.limits.timeout = std::time::Duration::from_millis(500);
    let prepared = backend().prepare(&spec, CAPTURE_STDIN).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let outcome = prepared
        .run(call(&["/bin/sh", "-c", "echo ran"]), &mut || Ok(()))
        .unwrap();
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    assert_eq!(outcome.stdout.text, "ran\n");
    assert!(!outcome.timed_out);
    // Prepared on a thread that has ended since (an async server's blocking pool), run on
    // another: the sandbox does not die with the thread that made it.
    let prepared = std::thread::spawn(|| backend().prepare(&template(), CAPTURE_STDIN).unwrap())
        .join()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let outcome = prepared
        .run(
            call(&["/bin/sh", "-c", "echo other thread"]),
            &mut || Ok(()),
        )
        .unwrap();
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    assert_eq!(outcome.stdout.text, "other thread\n");
}
