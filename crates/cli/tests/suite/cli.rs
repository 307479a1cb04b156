//! `nanoclaw run` as a user meets it: output and exit codes pass through, `--json` is
//! well-formed and complete, and bad input is refused with exit status 125 and a message
//! that names what is wrong, before anything is started or with everything removed again.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use super::support::{
    assert_no_cgroups_of, assert_no_process_with, backend_tests, nanoclaw_output, unique_token,
    Backend, Exited, Sandbox, RUNNER_ERROR,
};

backend_tests!(
    exit_codes_pass_through,
    a_command_killed_by_a_signal_exits_128_plus_the_signal,
    stdout_and_stderr_stream_through_without_json,
    stdin_passes_through_with_the_stdin_option,
    stdin_is_not_passed_without_the_stdin_option,
    no_signal_is_ignored_or_blocked_when_the_command_starts,
    json_reports_every_documented_field,
    output_beyond_the_limit_is_truncated,
    a_missing_program_exits_127,
    a_non_executable_file_exits_126,
    a_missing_mount_source_is_refused,
    a_workdir_missing_inside_the_sandbox_is_refused,
);

fn exit_codes_pass_through(backend: Backend) {
    for code in [0, 1, 42] {
        let exited = Sandbox::new(backend).output(&["sh", "-c", &format!("exit {code}")]);
        assert_eq!(exited.code(), code, "{}", exited.context());
    }
}

fn a_command_killed_by_a_signal_exits_128_plus_the_signal(backend: Backend) {
    let sandbox = Sandbox::new(backend);
    let exited = sandbox.output(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(exited.code(), 128 + 15, "{}", exited.context());
    let run = sandbox.run(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(
        (run.outcome.exit_code, run.outcome.signal),
        (None, Some(15)),
        "{}",
        run.context()
    );
}

fn stdout_and_stderr_stream_through_without_json(backend: Backend) {
    let exited = Sandbox::new(backend).output(&["sh", "-c", "echo to-stdout; echo to-stderr >&2"]);
    assert_eq!(exited.code(), 0, "{}", exited.context());
    assert_eq!(exited.stdout, "to-stdout\n", "{}", exited.context());
    assert!(
        exited.stderr.starts_with("to-stderr\n"),
        "{}",
        exited.context()
    );
}

fn stdin_passes_through_with_the_stdin_option(backend: Backend) {
    let exited = Sandbox::new(backend)
        .option("--stdin")
        .feed(b"line one\nline two\n")
        .output(&["cat"]);
    assert_eq!(exited.code(), 0, "{}", exited.context());
    assert_eq!(
        exited.stdout,
        "line one\nline two\n",
        "{}",
        exited.context()
    );
}

fn stdin_is_not_passed_without_the_stdin_option(backend: Backend) {
    let exited = Sandbox::new(backend)
        .feed(b"not for the sandbox\n")
        .output(&["cat"]);
    assert_eq!(exited.code(), 0, "{}", exited.context());
    assert_eq!(exited.stdout, "", "{}", exited.context());
}

/// The runner ignores SIGPIPE (Rust's runtime does); the command must start with every
/// signal at its default action and none blocked, or `yes | head` never ends.
fn no_signal_is_ignored_or_blocked_when_the_command_starts(backend: Backend) {
    let exited = Sandbox::new(backend).output(&[
        "sh",
        "-c",
        "grep -E '^Sig(Ign|Blk):' /proc/self/status; yes | head -c 10 >/dev/null; echo done",
    ]);
    assert_eq!(exited.code(), 0, "{}", exited.context());
    assert!(
        exited.stdout.contains("SigIgn:\t0000000000000000")
            && exited.stdout.contains("SigBlk:\t0000000000000000")
            && exited.stdout.contains("done"),
        "{}",
        exited.context()
    );
}

fn json_reports_every_documented_field(backend: Backend) {
    let run = Sandbox::new(backend).run(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(
        run.code(),
        3,
        "--json keeps the exit status\n{}",
        run.context()
    );
    assert_eq!(
        run.exited.stdout.trim_end().lines().count(),
        1,
        "--json prints exactly one line\n{}",
        run.context()
    );
    let json = &run.json;
    let field = |path: &str| -> &Value {
        path.split('.')
            .try_fold(json, |v, key| v.get(key))
            .unwrap_or_else(|| panic!("--json lacks {path}: {json:#}"))
    };
    for (path, expected) in [
        ("exit_code", Value::from(3)),
        ("signal", Value::Null),
        ("timed_out", Value::Bool(false)),
        ("oom_killed", Value::Bool(false)),
        ("stdout", Value::from("out\n")),
        ("stderr", Value::from("err\n")),
        ("stdout_truncated", Value::Bool(false)),
        ("stderr_truncated", Value::Bool(false)),
    ] {
        assert_eq!(field(path), &expected, "{path} in {json:#}");
    }
    for path in ["duration_ms", "usage.cpu_ms", "usage.max_rss_kib"] {
        assert!(field(path).is_u64(), "{path} is not a count: {json:#}");
    }
    let outcome = &run.outcome;
    assert!(outcome.duration_ms < 60_000, "{json:#}");
    assert!(outcome.usage.max_rss_kib > 0, "{json:#}");
    // `enforced` says which layers really applied.
    let namespaces = field("enforced.namespaces").as_array();
    assert!(
        namespaces.is_some_and(|n| ["mount", "pid", "net"]
            .iter()
            .all(|ns| n.contains(&Value::from(*ns)))),
        "enforced.namespaces: {json:#}"
    );
    assert!(
        field("enforced.seccomp").is_string(),
        "enforced.seccomp: {json:#}"
    );
    assert!(
        !field("enforced.landlock").is_null(),
        "enforced.landlock: {json:#}"
    );
    assert!(
        field("enforced.cgroup").is_string(),
        "enforced.cgroup: {json:#}"
    );
}

fn output_beyond_the_limit_is_truncated(backend: Backend) {
    let run = Sandbox::new(backend)
        .options(["--output-limit", "1k"])
        .run(&[
            "sh",
            "-c",
            "head -c 100000 /dev/zero | tr '\\0' y; echo short >&2",
        ]);
    let outcome = &run.outcome;
    assert!(outcome.stdout_truncated, "{}", run.context());
    assert!(
        (1..=1024).contains(&outcome.stdout.len()),
        "kept {} bytes of stdout under a 1k limit",
        outcome.stdout.len()
    );
    assert!(outcome.stdout.starts_with("yyyy"), "{}", run.context());
    assert!(!outcome.stderr_truncated, "{}", run.context());
    assert_eq!(outcome.stderr, "short\n");
}

fn a_missing_program_exits_127(backend: Backend) {
    let exited = Sandbox::new(backend).output(&["/no/such/program"]);
    assert_eq!(exited.code(), 127, "{}", exited.context());
    assert!(
        exited.stderr.contains("/no/such/program"),
        "{}",
        exited.context()
    );
    let exited = Sandbox::new(backend).output(&["no-such-program-on-path"]);
    assert_eq!(exited.code(), 127, "{}", exited.context());
}

fn a_non_executable_file_exits_126(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let dir = sandbox.host_dir("bin");
    let script = dir.join("tool");
    fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let exited = sandbox.mount(&dir, "/opt/bin").output(&["/opt/bin/tool"]);
    assert_eq!(exited.code(), 126, "{}", exited.context());
    assert!(
        exited.stderr.contains("/opt/bin/tool") && !exited.stdout.contains("ran"),
        "{}",
        exited.context()
    );
}

/// A setup error: refused with 125, the message names `what`, and the command never ran.
#[track_caller]
fn assert_refused_before_running(mut sandbox: Sandbox, what: &str) {
    let token = unique_token("refused");
    let probe = sandbox.with_probe().probe_path();
    let exited = sandbox.output(&[probe, "probe", "sleep", "30", &token]);
    assert_eq!(exited.code(), RUNNER_ERROR, "{}", exited.context());
    assert!(
        exited.stderr.contains(what),
        "the message does not name {what:?}\n{}",
        exited.context()
    );
    assert_no_process_with(&token, &exited.context());
    assert_no_cgroups_of(&exited);
}

fn a_missing_mount_source_is_refused(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    let missing = sandbox.scratch().join("no-such-dir");
    sandbox.mount(&missing, "/data");
    assert_refused_before_running(sandbox, &missing.display().to_string());
}

fn a_workdir_missing_inside_the_sandbox_is_refused(backend: Backend) {
    let mut sandbox = Sandbox::new(backend);
    sandbox.options(["--workdir", "/no/such/workdir"]);
    assert_refused_before_running(sandbox, "/no/such/workdir");
}

/// `nanoclaw run ARGS -- true` is refused with 125 and a message naming each of `names`.
#[track_caller]
fn refused(args: &[&str], names: &[&str]) -> Exited {
    let argv: Vec<&str> = ["run"]
        .iter()
        .chain(args)
        .chain(&["--", "true"])
        .copied()
        .collect();
    let exited = nanoclaw_output(&argv);
    assert_eq!(exited.code(), RUNNER_ERROR, "{}", exited.context());
    for name in names {
        assert!(
            exited.stderr.contains(name),
            "the message does not name {name:?}\n{}",
            exited.context()
        );
    }
    assert_no_cgroups_of(&exited);
    exited
}

#[test]
fn an_unknown_option_is_refused() {
    refused(&["--no-such-option"], &["--no-such-option"]);
}

#[test]
fn a_malformed_mount_is_refused() {
    refused(&["--mount", "type=bind,src=/usr"], &["--mount", "dst"]);
    refused(
        &["--mount", "type=volume,src=x,dst=/x"],
        &["--mount", "volume"],
    );
    refused(&["--mount", "type=bind,src=/usr,dst=/x,exec"], &["exec"]);
}

#[test]
fn a_malformed_volume_is_refused() {
    refused(&["-v", "/usr"], &["-v", "/usr"]);
    refused(&["-v", "/usr:/x:rx"], &["-v", "rx"]);
    refused(&["-v", "/usr:relative"], &["relative"]);
}

#[test]
fn a_malformed_memory_limit_is_refused() {
    refused(&["--memory", "lots"], &["--memory", "lots"]);
}

#[test]
fn a_malformed_or_empty_write_budget_is_refused() {
    refused(&["--write-limit", "lots"], &["--write-limit", "lots"]);
    refused(&["--write-limit", "0"], &["--write-limit"]);
    refused(&["--write-files", "0"], &["--write-files"]);
}

#[test]
fn a_malformed_timeout_is_refused() {
    refused(&["--timeout", "5 years"], &["--timeout", "5 years"]);
}

#[test]
fn a_malformed_user_is_refused() {
    refused(&["--user", "bob"], &["--user", "bob"]);
}

#[test]
fn root_inside_needs_allow_root() {
    refused(&["--user", "0"], &["--user", "--allow-root"]);
    refused(&["--user", "1000:0"], &["--user", "--allow-root"]);
}

#[test]
fn a_relative_workdir_is_refused() {
    refused(
        &["--workdir", "relative/dir"],
        &["--workdir", "relative/dir"],
    );
}

#[test]
fn network_host_is_refused() {
    refused(&["--network", "host"], &["--network", "host"]);
}

#[test]
fn an_unknown_backend_is_refused() {
    refused(
        &["--backend", "no-such-backend"],
        &["--backend", "no-such-backend"],
    );
}

/// `--rootfs DIR` (an unpacked image; native only) replaces the host's /usr entirely. The
/// root here is Debian's static busybox and a shell link to it.
#[test]
fn a_rootfs_directory_replaces_the_hosts_usr() {
    let sandbox = &mut Sandbox::new(Backend::Native);
    let rootfs = sandbox.host_dir("rootfs");
    fs::create_dir(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("busybox-static installs /bin/busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let run = sandbox.option("--rootfs").option(&rootfs).run(&[
        "sh",
        "-c",
        "echo ok; test -e /usr && echo host-usr-visible",
    ]);
    assert_eq!(run.outcome.stdout, "ok\n", "{}", run.context());
}
