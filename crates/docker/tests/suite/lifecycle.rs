//! A run's life: exit codes and signals, exec failures, bounded output, stdin, what the
//! outcome reports as enforced, and cleanup — after a stop signal, and after a nanoclaw
//! killed with SIGKILL, whose container the next run reaps once its deadline has passed.
//!
//! Runs that need their own process (stdin, streaming to stdout, signals) re-execute this
//! test binary as a child running only [`child_process`].

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nanoclaw_docker::{DockerBackend, LABEL_INVOCATION, LABEL_SEAL};
use nanoclaw_spec::{Backend, BackendError, IoMode, Root, SandboxSpec};

use super::support::{backend, engine, serialise_heavy, test_image, unique_token, Sandbox};

#[test]
fn exit_codes_pass_through() {
    let run = Sandbox::new().run(&["sh", "-c", "exit 3"]);
    assert_eq!(run.outcome().exit_code, Some(3), "{}", run.context());
    assert_eq!(run.code(), 3);
    let run = Sandbox::new().run(&["true"]);
    assert_eq!(run.outcome().exit_code, Some(0), "{}", run.context());
}

#[test]
fn a_command_killed_by_a_signal_reports_the_signal() {
    let run = Sandbox::new().run(&["sh", "-c", "kill -9 $$"]);
    let outcome = run.outcome();
    assert_eq!(outcome.signal, Some(9), "{}", run.context());
    assert!(
        !outcome.oom_killed && !outcome.timed_out,
        "{}",
        run.context()
    );
    assert_eq!(run.code(), 137);
    // Any signal, as natively: nanoclaw's init tells a command killed by SIGTERM from one
    // that exited 143.
    let run = Sandbox::new().run(&["sh", "-c", "kill -TERM $$"]);
    let outcome = run.outcome();
    assert_eq!(
        (outcome.exit_code, outcome.signal),
        (None, Some(15)),
        "{}",
        run.context()
    );
    let run = Sandbox::new().run(&["sh", "-c", "exit 143"]);
    let outcome = run.outcome();
    assert_eq!(
        (outcome.exit_code, outcome.signal),
        (Some(143), None),
        "{}",
        run.context()
    );
}

#[test]
fn a_missing_command_is_reported_like_a_shell_would() {
    let run = Sandbox::new().run(&["no-such-command"]);
    match &run.result {
        Err(e @ BackendError::CommandNotFound(program)) => {
            assert_eq!(program, "no-such-command");
            assert_eq!(e.exit_status(), 127);
        }
        _ => panic!("expected command not found\n{}", run.context()),
    }
    let run = Sandbox::new().run(&["/etc/hostname"]);
    match &run.result {
        Err(e @ BackendError::NotExecutable { .. }) => assert_eq!(e.exit_status(), 126),
        _ => panic!("expected not executable\n{}", run.context()),
    }
}

#[test]
fn output_is_capped_per_stream_and_counted() {
    let mut sandbox = Sandbox::new();
    sandbox.limits(|l| l.output_bytes = 1000);
    // 100 lines of 50 bytes on each stream.
    let script = "i=0; while [ $i -lt 100 ]; do
echo 0123456789012345678901234567890123456789012345678
echo abcdefghijabcdefghijabcdefghijabcdefghijabcdefghi >&2
i=$((i+1)); done";
    let run = sandbox.run(&["sh", "-c", script]);
    let outcome = run.outcome();
    for (stream, first) in [(&outcome.stdout, '0'), (&outcome.stderr, 'a')] {
        assert_eq!(stream.text.len(), 1000, "{}", run.context());
        assert!(stream.text.starts_with(first));
        assert_eq!(stream.total_bytes, 5000);
        assert!(stream.truncated);
    }
    let run = Sandbox::new().run(&["echo", "short"]);
    assert_eq!(run.outcome().stdout.total_bytes, 6);
    assert!(!run.outcome().stdout.truncated);
}

#[test]
fn the_outcome_reports_what_the_engine_applied() {
    let mut sandbox = Sandbox::new();
    sandbox.limits(|l| {
        l.memory_bytes = 96 << 20;
        l.cpu_millis = 250;
        l.pids = 50;
    });
    let run = sandbox.run(&["true"]);
    let enforced = &run.outcome().enforced;
    assert_eq!(enforced.backend, "docker");
    assert_eq!(enforced.seccomp.as_deref(), Some("nanoclaw-default"));
    assert_eq!(enforced.memory_bytes, Some(96 << 20));
    assert_eq!(enforced.cpu_millis, Some(250));
    assert_eq!(enforced.pids, Some(50));
    assert!(enforced.cgroup.is_some());
    assert!(enforced.no_new_privs && enforced.read_only_root);
    assert!(enforced.capabilities.is_empty());
    assert_eq!((enforced.uid, enforced.gid), (10001, 10001));
    // nanoclaw's init applied Landlock inside the container and reported it.
    assert_eq!(enforced.landlock.status, "full", "{:?}", enforced.landlock);
    for ns in ["mount", "pid", "net", "ipc", "uts", "cgroup"] {
        assert!(enforced.namespaces.iter().any(|n| n == ns), "{ns} missing");
    }
}

#[test]
fn stdin_passes_through_when_asked() {
    let output = child("stdin-capture", &[], Some(b"hello from stdin\n"));
    assert!(
        output.contains("CHILD-STDOUT: \"hello from stdin\\n\""),
        "{output}"
    );
}

#[test]
fn streamed_output_reaches_our_stdout() {
    let output = child("stdin-stream", &[], Some(b"streamed through\n"));
    let at = output.find("streamed through\n");
    let exit = output.find("CHILD-EXIT: 0");
    assert!(at.is_some() && exit.is_some() && at < exit, "{output}");
}

#[test]
fn without_stdin_the_command_reads_end_of_file() {
    let run = Sandbox::new().run(&["cat"]);
    assert_eq!(run.outcome().exit_code, Some(0), "{}", run.context());
    assert_eq!(run.stdout(), "");
}

#[test]
fn heavy_a_stop_signal_removes_the_container() {
    let _heavy = serialise_heavy();
    let invocation = unique_token("interrupted");
    let mut child = spawn_child("long", &[("INVOCATION", &invocation), ("TIMEOUT", "600")]);
    wait_for_container(&invocation, &mut child);
    let stopped = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = finish(child);
    assert!(
        output.contains("CHILD-RESULT: interrupted"),
        "the run was not interrupted: {output}"
    );
    assert!(stopped.elapsed() < Duration::from_secs(15), "{output}");
    let left = engine().containers(&format!("{LABEL_INVOCATION}={invocation}"));
    assert!(left.is_empty(), "the interrupted run left {left:?}");
}

/// A nanoclaw killed with SIGKILL cannot remove its container, but the container's init
/// sees its lifeline cut and stops it at once; the next reaping removes it without waiting
/// for its deadline, as its sealed labels name a nanoclaw that is verifiably gone. While
/// that nanoclaw lives, its container is never reaped.
#[test]
fn heavy_a_killed_runs_container_stops_and_is_reaped_at_once() {
    let _heavy = serialise_heavy();
    let invocation = unique_token("killed");
    let mut child = spawn_child("long", &[("INVOCATION", &invocation), ("TIMEOUT", "600")]);
    let (id, labels) = wait_for_container(&invocation, &mut child);
    assert!(labels.contains_key(LABEL_SEAL), "unsealed: {labels:?}");
    let reaped = backend().reap_stale().unwrap();
    assert!(!reaped.contains(&id), "reaped while its nanoclaw runs");

    child.kill().unwrap();
    let killed = Instant::now();
    child.wait().unwrap();
    loop {
        let inspect = engine().block_on(engine().docker().inspect_container(&id, None));
        if inspect.ok().and_then(|i| i.state?.running) != Some(true) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_millis(1500),
            "the container still ran {:?} after its nanoclaw was killed",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every run reaps before it starts, so a run in another test process may be removing
    // the container already (listed as "removing", not ours to reap): either way it must
    // be gone within moments.
    let reaped = backend().reap_stale().unwrap();
    let reaping = Instant::now();
    while !reaped.contains(&id)
        && engine()
            .block_on(engine().docker().inspect_container(&id, None))
            .is_ok()
    {
        assert!(
            reaping.elapsed() < Duration::from_secs(5),
            "not reaped: {reaped:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let label = format!("{LABEL_INVOCATION}={invocation}");
    let left = engine().containers(&label);
    assert!(left.is_empty(), "the stale container was left: {left:?}");
}

#[test]
fn an_unreachable_engine_is_a_clear_error() {
    let error = DockerBackend::connect_to("unix:///nonexistent/docker.sock")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("reach the Docker Engine at unix:///nonexistent/docker.sock"),
        "{error}"
    );
}

// The child process.

const CHILD_MODE: &str = "NANOCLAW_DOCKER_TEST_CHILD";
const CHILD_IMAGE: &str = "NANOCLAW_DOCKER_TEST_IMAGE";

fn spawn_child(mode: &str, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "suite::lifecycle::child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env(CHILD_IMAGE, test_image())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(format!("NANOCLAW_DOCKER_TEST_{key}"), value);
    }
    command.spawn().unwrap()
}

fn finish(mut child: Child) -> String {
    drop(child.stdin.take());
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    let mut errors = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut errors)
        .unwrap();
    let status = child.wait().unwrap();
    format!("{output}\n--- stderr ({status}):\n{errors}")
}

fn child(mode: &str, env: &[(&str, &str)], stdin: Option<&[u8]>) -> String {
    let mut child = spawn_child(mode, env);
    if let Some(input) = stdin {
        child.stdin.as_mut().unwrap().write_all(input).unwrap();
    }
    finish(child)
}

/// Waits until the child's container exists and runs; returns its id and labels.
fn wait_for_container(
    invocation: &str,
    child: &mut Child,
) -> (String, std::collections::HashMap<String, String>) {
    let label = format!("{LABEL_INVOCATION}={invocation}");
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Some(container) = engine().containers(&label).into_iter().next() {
            // Gone between the two calls: the child's run has already ended.
            let inspect =
                engine().block_on(engine().docker().inspect_container(&container.0, None));
            if inspect.ok().and_then(|i| i.state?.running) == Some(true) {
                return container;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child ended early ({status})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the child's container did not start within 30 s");
}

/// Runs in the child only (`CHILD_MODE` set); a no-op as an ordinary test.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let var = |key: &str| std::env::var(format!("NANOCLAW_DOCKER_TEST_{key}")).unwrap();
    let mut spec = SandboxSpec::new(vec!["cat".into()]);
    spec.root = Root::Image(std::env::var(CHILD_IMAGE).unwrap());
    let backend = super::support::backend();
    match mode.as_str() {
        "stdin-capture" | "stdin-stream" => {
            let capture = mode == "stdin-capture";
            let outcome = backend
                .run(
                    &spec,
                    IoMode {
                        stdin: true,
                        capture,
                    },
                    &mut || Ok(()),
                )
                .unwrap();
            if capture {
                println!("CHILD-STDOUT: {:?}", outcome.stdout.text);
            }
            println!("CHILD-EXIT: {}", outcome.exit_status());
        }
        "long" => {
            spec.command = vec!["sleep".into(), "600".into()];
            spec.limits.timeout = Duration::from_secs(var("TIMEOUT").parse().unwrap());
            spec.invocation = nanoclaw_spec::Invocation {
                tool: "docker-tests".into(),
                id: var("INVOCATION"),
            };
            let io = IoMode {
                stdin: false,
                capture: true,
            };
            match backend.run_container(&spec, io) {
                Err(BackendError::Interrupted) => println!("CHILD-RESULT: interrupted"),
                other => println!("CHILD-RESULT: {:?}", other.map(|r| r.outcome)),
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}
