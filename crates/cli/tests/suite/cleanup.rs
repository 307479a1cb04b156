//! Nothing outlives a run, however it ends: no process, cgroup, mount or temporary file is
//! left on the host after a success, a failure, a timeout, an OOM kill, a refused setup, or
//! the runner being stopped with SIGTERM or SIGINT.

use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{
    assert_no_cgroups_of, assert_no_process_with, backend_tests, orphaned_cgroups, scratch_dir,
    serialise_heavy, unique_token, wait_for_process_with, Backend, Exited, HostState, Sandbox,
};

backend_tests!(
    heavy_a_batch_of_runs_leaves_nothing_behind,
    sigterm_stops_a_run_promptly_and_leaves_nothing_behind,
    sigint_stops_a_run_promptly_and_leaves_nothing_behind,
);

/// How the runs of the batch end: (what, `run` options, command, expected exit status).
/// `{probe}` is the probe binary and `{token}` the run's token; every run that gets as far
/// as starting its command leaves an orphan carrying the token, to die with the sandbox.
type Case = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    i32,
);
const BATCH: &[Case] = &[
    (
        "success",
        &[],
        &["{probe}", "probe", "orphan", "{token}"],
        0,
    ),
    (
        "failure",
        &[],
        &["sh", "-c", "{probe} probe orphan {token}; exit 3"],
        3,
    ),
    (
        "timeout",
        &["--timeout", "1s"],
        &[
            "sh",
            "-c",
            "{probe} probe orphan {token}; {probe} probe sleep 30 {token}",
        ],
        124,
    ),
    (
        "out of memory",
        &["--memory", "64m"],
        &[
            "sh",
            "-c",
            "{probe} probe orphan {token}; {probe} probe memory-hog 512",
        ],
        137,
    ),
    (
        "setup error",
        &["--workdir", "/no/such/workdir"],
        &["{probe}", "probe", "orphan", "{token}"],
        125,
    ),
    (
        "missing program",
        &[],
        &["/no/such/program", "{token}"],
        127,
    ),
];

fn heavy_a_batch_of_runs_leaves_nothing_behind(backend: Backend) {
    let _heavy = serialise_heavy();
    let before = HostState::snapshot();
    // Whatever the runner puts in TMPDIR must be gone when it returns.
    let runner_tmp = scratch_dir();
    let mut finished = Vec::new();
    for (what, options, command, expected) in BATCH {
        let token = unique_token("batch");
        let mut sandbox = Sandbox::new(backend);
        sandbox
            .with_probe()
            .options(*options)
            .host_env("TMPDIR", &runner_tmp.path().to_string_lossy());
        let command: Vec<String> = command
            .iter()
            .map(|arg| {
                arg.replace("{probe}", sandbox.probe_path())
                    .replace("{token}", &token)
            })
            .collect();
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        let exited = sandbox.output(&command);
        assert_eq!(
            exited.code(),
            *expected,
            "the {what} run did not end as planned\n{}",
            exited.context()
        );
        finished.push((token, exited));
    }

    for (token, exited) in &finished {
        assert_no_process_with(token, &exited.context());
        assert_no_cgroups_of(exited);
    }
    let orphaned = orphaned_cgroups();
    assert!(
        orphaned.is_empty(),
        "cgroups outlived their runner: {orphaned:#?}"
    );
    let added = HostState::snapshot().added_since(&before);
    assert!(added.is_empty(), "the runs left behind: {added:#?}");
    let left: Vec<_> = fs::read_dir(runner_tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the runs left files in TMPDIR: {left:#?}");
}

fn sigterm_stops_a_run_promptly_and_leaves_nothing_behind(backend: Backend) {
    stop_with(backend, "TERM");
}

fn sigint_stops_a_run_promptly_and_leaves_nothing_behind(backend: Backend) {
    stop_with(backend, "INT");
}

/// Starts `nanoclaw run -- probe sleep 30 TOKEN`, sends `signal` to nanoclaw once the
/// command runs, and expects nanoclaw to exit within 5 s taking the sandbox with it.
fn stop_with(backend: Backend, signal: &str) {
    const PROMPTLY: Duration = Duration::from_secs(5);
    let token = unique_token(signal);
    let mut sandbox = Sandbox::new(backend);
    let probe = sandbox.with_probe().probe_path();
    let mut command = sandbox.command(false, &[probe, "probe", "sleep", "30", &token]);
    let argv = format!("{command:?}");
    // Output goes to a file: a pipe would keep a reader waiting on a surviving sandbox.
    let stderr_path = sandbox.scratch().join("stderr");
    let mut runner = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let pid = runner.id();
    wait_for_process_with(&token, pid);

    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success(), "kill -s {signal} {pid} failed");
    let status = loop {
        if let Some(status) = runner.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > PROMPTLY {
            let _ = runner.kill();
            let _ = runner.wait();
            let survivors = super::support::processes_with(&token);
            panic!(
                "nanoclaw was still running {PROMPTLY:?} after SIG{signal} (killed it now); \
                 processes with the token: {survivors:#?}\n--- stderr ---\n{}",
                fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let exited = Exited {
        argv,
        pid,
        status,
        stdout: String::new(),
        stderr: fs::read_to_string(&stderr_path).unwrap(),
        wall: sent.elapsed(),
    };
    assert!(
        !status.success(),
        "a stopped run must not report success\n{}",
        exited.context()
    );
    assert_no_process_with(&token, &exited.context());
    assert_no_cgroups_of(&exited);
    sandbox.assert_left_nothing(&exited.context());
}
