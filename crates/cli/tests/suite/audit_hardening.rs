//! The audit log against another user of the machine and against a killed runner.
//!
//! Another user who can write a directory on the log's path (a shared group-writable or
//! sticky directory) plants a symlink, a dangling symlink, a file or a directory of their
//! own where nanoclaw (often root) will open, create or append: each is refused with a
//! message naming the path and what is wrong, and the file they aimed at is untouched. A
//! record re-spelled so that its hash still matches what one parser reads (a duplicate
//! key, reordered keys, whitespace) fails `audit verify`. A runner killed mid-run leaves a
//! start with no end, which `audit verify` and `audit list` report as unfinished, not as
//! tampering.
//!
//! Black-box: the real binary, a log in a temporary directory. The attacks are on the
//! host, before any sandbox exists, so they do not depend on the backend; the killed run
//! uses the native backend.

use std::fs::{self, File};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::support::{
    cgroups_of, processes_with, scratch_dir, unique_token, wait_for_process_with, Backend, Sandbox,
    BIN, RUNNER_ERROR,
};

/// Exit status of `audit verify` for a damaged or tampered log.
const TAMPERED: i32 = 1;

/// The other user of the machine.
const NOBODY: u32 = 65534;

/// `nanoclaw ARGS` with `NANOCLAW_AUDIT=log`.
fn with_log(log: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("NANOCLAW_AUDIT", log)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// Asserts that `output` is a refusal (exit 125) whose message names `path` and says
/// `why`.
#[track_caller]
fn assert_refused(output: &Output, path: &Path, why: &str) {
    assert_exit(output, RUNNER_ERROR);
    let message = text(&output.stderr);
    assert!(
        message.contains(&path.display().to_string()) && message.contains(why),
        "expected a refusal naming {} and saying {why:?}, got: {message}",
        path.display()
    );
}

/// A directory as a shared one is made: `mode` (e.g. 0o1777 like /tmp, or 0o2775).
fn shared_dir(parent: &Path, name: &str, mode: u32) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// A file only its owner may touch, with `content`: what the attacker aims at.
fn victim(dir: &Path, content: &str) -> PathBuf {
    let path = dir.join("victim");
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A log with one finished run in it.
fn log_with_a_run(dir: &Path) -> PathBuf {
    let log = dir.join("audit.jsonl");
    assert_exit(&with_log(&log, &["run", "--", "true"]), 0);
    log
}

#[test]
fn a_log_that_is_a_symlink_is_refused_not_followed() {
    let scratch = scratch_dir();
    let shared = shared_dir(scratch.path(), "shared", 0o1777);
    // Empty, so that an appender following the link would find nothing to refuse.
    let target = victim(scratch.path(), "");
    let log = shared.join("audit.jsonl");
    symlink(&target, &log).unwrap();
    std::os::unix::fs::lchown(&log, Some(NOBODY), Some(NOBODY)).unwrap();

    for args in [
        &["run", "--", "true"][..],
        &["audit", "verify"],
        &["audit", "list"],
        &["audit", "repair"],
    ] {
        assert_refused(&with_log(&log, args), &log, "symbolic link");
    }
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        "",
        "the victim was written"
    );
}

#[test]
fn a_dangling_symlink_is_never_followed_to_create_a_file() {
    let scratch = scratch_dir();
    let shared = shared_dir(scratch.path(), "shared", 0o1777);
    let aimed_at = scratch.path().join("created-by-nanoclaw");

    let log = shared.join("audit.jsonl");
    symlink(&aimed_at, &log).unwrap();
    assert_refused(
        &with_log(&log, &["run", "--", "true"]),
        &log,
        "symbolic link",
    );
    assert!(!aimed_at.exists(), "the run created the symlink's target");
    fs::remove_file(&log).unwrap();

    let log = log_with_a_run(&shared);
    let key = scratch.path().join("key.hex");
    assert_exit(
        &with_log(&log, &["audit", "keygen", key.to_str().unwrap()]),
        0,
    );
    let checkpoints = shared.join("audit.jsonl.checkpoints");
    symlink(&aimed_at, &checkpoints).unwrap();
    let signed = with_log(
        &log,
        &["audit", "checkpoint", "--key", key.to_str().unwrap()],
    );
    assert_refused(&signed, &checkpoints, "symbolic link");
    assert!(
        !aimed_at.exists(),
        "checkpoint created the symlink's target"
    );
    assert_refused(
        &with_log(&log, &["audit", "verify"]),
        &checkpoints,
        "symbolic link",
    );

    let key_link = shared.join("new.key");
    symlink(&aimed_at, &key_link).unwrap();
    let keygen = with_log(&log, &["audit", "keygen", key_link.to_str().unwrap()]);
    assert_exit(&keygen, RUNNER_ERROR);
    assert!(!aimed_at.exists(), "keygen created the symlink's target");
}

#[test]
fn a_log_owned_by_another_user_is_refused() {
    let scratch = scratch_dir();
    let shared = shared_dir(scratch.path(), "shared", 0o1777);
    // Planted in advance in a sticky shared directory, as /tmp is.
    let log = shared.join("audit.jsonl");
    fs::write(&log, "").unwrap();
    fs::set_permissions(&log, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&log, Some(NOBODY), Some(NOBODY)).unwrap();
    let refused = with_log(&log, &["run", "--", "true"]);
    assert_refused(&refused, &log, &format!("owned by uid {NOBODY}"));
    assert_refused(
        &with_log(&log, &["audit", "verify"]),
        &log,
        &format!("owned by uid {NOBODY}"),
    );
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        0,
        "a record was appended"
    );
}

#[test]
fn a_directory_on_the_path_planted_by_another_user_is_refused() {
    let scratch = scratch_dir();
    let shared = shared_dir(scratch.path(), "shared", 0o1777);
    let elsewhere = scratch.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();

    // Their symlink where our directory should be.
    let link = shared.join("state");
    symlink(&elsewhere, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(NOBODY), Some(NOBODY)).unwrap();
    let log = link.join("nanoclaw/audit.jsonl");
    assert_refused(
        &with_log(&log, &["run", "--", "true"]),
        &link,
        &format!("owned by uid {NOBODY}"),
    );
    assert!(
        fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "something was created where their symlink points"
    );

    // Their own directory.
    let theirs = shared_dir(&shared, "theirs", 0o777);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let log = theirs.join("audit.jsonl");
    assert_refused(
        &with_log(&log, &["run", "--", "true"]),
        &theirs,
        &format!("owned by uid {NOBODY}"),
    );
    assert!(!log.exists());
}

#[test]
fn a_log_in_a_shared_directory_that_is_not_sticky_is_refused() {
    let scratch = scratch_dir();
    let shared = shared_dir(scratch.path(), "group", 0o2775);
    let log = shared.join("audit.jsonl");
    assert_refused(
        &with_log(&log, &["run", "--", "true"]),
        &shared,
        "writable by group or others and not sticky",
    );
    assert!(!log.exists());
}

#[test]
fn a_log_others_can_write_or_that_has_another_name_is_refused() {
    let scratch = scratch_dir();
    let log = log_with_a_run(scratch.path());

    fs::set_permissions(&log, fs::Permissions::from_mode(0o660)).unwrap();
    for args in [&["run", "--", "true"][..], &["audit", "verify"]] {
        assert_refused(&with_log(&log, args), &log, "writable by group or others");
    }
    fs::set_permissions(&log, fs::Permissions::from_mode(0o600)).unwrap();

    let other_name = scratch.path().join("other-name");
    fs::hard_link(&log, &other_name).unwrap();
    assert_refused(
        &with_log(&log, &["run", "--", "true"]),
        &log,
        "2 hard links",
    );
    fs::remove_file(&other_name).unwrap();
    assert_exit(&with_log(&log, &["audit", "verify"]), 0);
    assert_eq!(fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
}

/// Each edit leaves a line whose hash still matches what a last-wins parser reads.
#[test]
fn a_record_spelled_other_than_nanoclaw_wrote_it_fails_verify() {
    let scratch = scratch_dir();
    let log = log_with_a_run(scratch.path());
    let written = fs::read_to_string(&log).unwrap();
    assert!(written.contains("\"exit\":0"), "{written}");
    let end = written.lines().nth(1).unwrap();
    let swapped = {
        let (seq, rest) = end.split_once(",\"ts\":").unwrap();
        let (ts, rest) = rest.split_once(",\"kind\":").unwrap();
        format!(
            "{{\"ts\":{ts},{},\"kind\":{rest}",
            seq.trim_start_matches('{')
        )
    };
    for (what, edited) in [
        (
            "a duplicated key",
            end.replacen("\"exit\":0", "\"exit\":137,\"exit\":0", 1),
        ),
        ("swapped keys", swapped),
        ("whitespace", end.replacen(",\"kind\":", ", \"kind\": ", 1)),
    ] {
        assert_ne!(edited, end);
        let tampered = written.replacen(end, &edited, 1);
        fs::write(&log, &tampered).unwrap();
        let verify = with_log(&log, &["audit", "verify"]);
        assert_exit(&verify, TAMPERED);
        let out = text(&verify.stdout);
        assert!(
            out.contains("line 2") && out.contains("not byte for byte"),
            "{what}: {out}"
        );
    }
    fs::write(&log, &written).unwrap();
    assert_exit(&with_log(&log, &["audit", "verify"]), 0);
}

/// What a runner SIGKILLed mid-run leaves behind is for the cleanup suite to judge; this
/// test killed it, so it takes away what is left (the sandbox's processes once their
/// `sleep` is over, then the runner's cgroups), so as not to be counted against other
/// tests. `heavy_`: never at the same time as the cleanup suite's global checks.
fn clean_up_after_killed_runner(pid: u32, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(token).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (left, _) in processes_with(token) {
        let _ = Command::new("kill")
            .args(["-KILL", &left.to_string()])
            .status();
    }
    std::thread::sleep(Duration::from_millis(200));
    // Listed parents first: removed children first.
    for cgroup in cgroups_of(pid).into_iter().rev() {
        let _ = fs::remove_dir(&cgroup);
    }
}

/// A runner killed with SIGKILL mid-run cannot write its end record. While it runs,
/// `audit verify` calls the invocation running; once it is dead, unfinished; neither is
/// tampering (exit 0), and `audit list` marks the start, in the table and in JSON.
#[test]
fn heavy_a_runner_killed_mid_run_leaves_an_unfinished_invocation_not_tampering() {
    let token = unique_token("audit-kill");
    let mut sandbox = Sandbox::new(Backend::Native);
    let probe = sandbox.with_probe().probe_path();
    let mut command = sandbox.command(false, &[probe, "probe", "sleep", "5", &token]);
    let mut runner = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(sandbox.scratch().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    wait_for_process_with(&token, runner.id());
    let log = sandbox.scratch().join("audit.jsonl");
    let audit = |args: &[&str]| with_log(&log, args);
    // The start record is written while the sandbox is being built, so a process with the
    // token can exist a moment before it; the command itself starts only after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("invocation.start")
    {
        assert!(Instant::now() < deadline, "no start record within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }

    let verify = audit(&["audit", "verify"]);
    assert_exit(&verify, 0);
    let out = text(&verify.stdout);
    assert!(
        out.contains("1 unfinished invocation") && out.contains("still running"),
        "{out}"
    );

    runner.kill().unwrap();
    runner.wait().unwrap();
    clean_up_after_killed_runner(runner.id(), &token);

    let verify = audit(&["audit", "verify"]);
    assert_exit(&verify, 0);
    let out = text(&verify.stdout);
    assert!(
        out.contains("intact, 1 records")
            && out.contains("1 unfinished invocation")
            && out.contains("unfinished: seq 1")
            && out.contains("killed or crashed mid-run"),
        "{out}"
    );

    let show = audit(&["audit", "show", "1"]);
    assert_exit(&show, 0);
    assert!(
        text(&show.stdout).contains("unfinished: seq 1"),
        "{}",
        text(&show.stdout)
    );

    // The log stays appendable; the finished run is not unfinished.
    assert_exit(&audit(&["run", "--", "true"]), 0);
    let table = audit(&["audit", "list"]);
    assert_exit(&table, 0);
    let rows = text(&table.stdout);
    assert_eq!(rows.matches("[unfinished]").count(), 1, "{rows}");
    let json = audit(&["audit", "list", "--json"]);
    assert_exit(&json, 0);
    let statuses: Vec<Option<String>> = text(&json.stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["status"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(statuses, [Some("unfinished".to_owned()), None, None]);
    let verify = audit(&["audit", "verify"]);
    assert_exit(&verify, 0);
    assert!(
        text(&verify.stdout).contains("intact, 3 records"),
        "{}",
        text(&verify.stdout)
    );
}
