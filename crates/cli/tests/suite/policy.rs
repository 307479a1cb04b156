//! Per-tool policies, end to end: the example policies pass `policy check` and `verify`,
//! run their tools with exactly their scope, refuse widening options and broken or risky
//! policies with messages that name what is wrong, and record the tool in the audit log.

use std::fs;
use std::path::{Path, PathBuf};

use crate::suite::support::{nanoclaw, nanoclaw_output, scratch_dir, Exited, RUNNER_ERROR};

/// Exit status of `policy check` and `verify` when the policy is refused or a claim fails.
const REFUSED: i32 = 1;

fn example(name: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    root.join(name).display().to_string()
}

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut found: Vec<PathBuf> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    found.sort();
    assert!(found.len() >= 4, "examples/ holds the example policies");
    found
}

/// Writes `text` as a policy file in a fresh directory and returns (dir, path).
fn policy_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = scratch_dir();
    let path = dir.path().join("tools.toml");
    fs::write(&path, text).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

#[track_caller]
fn assert_exit(exited: &Exited, code: i32, says: &str) {
    assert_eq!(exited.code(), code, "{}", exited.context());
    let said = format!("{}{}", exited.stdout, exited.stderr);
    assert!(
        said.contains(says),
        "expected {says:?}\n{}",
        exited.context()
    );
}

#[test]
fn every_example_passes_the_lint() {
    for file in examples() {
        let exited = nanoclaw_output(&["policy", "check", &file.display().to_string()]);
        assert_exit(&exited, 0, "0 errors");
    }
}

#[test]
fn every_example_is_verified_on_a_live_sandbox() {
    for file in examples() {
        let file = file.display().to_string();
        if file.ends_with("fetcher.toml") {
            // Its tool needs egress; it is verified with the egress tests.
            continue;
        }
        let exited = nanoclaw_output(&["verify", &file]);
        assert_exit(&exited, 0, "every claim holds");
        assert!(!exited.stdout.contains("FAIL"), "{}", exited.context());
    }
}

#[test]
fn verify_json_lists_each_claim() {
    let exited = nanoclaw_output(&["verify", &example("python-snippet.toml"), "--json"]);
    assert_eq!(exited.code(), 0, "{}", exited.context());
    let report: serde_json::Value = serde_json::from_str(&exited.stdout).unwrap();
    assert_eq!(report["pass"], true);
    let claims = report["tools"][0]["claims"].as_array().unwrap();
    let names: Vec<&str> = claims
        .iter()
        .map(|c| c["claim"].as_str().unwrap())
        .collect();
    for expected in [
        "capabilities",
        "seccomp",
        "landlock",
        "network interfaces",
        "memory limit",
    ] {
        assert!(
            names.contains(&expected),
            "no {expected:?} claim in {names:?}"
        );
    }
}

#[test]
fn a_tool_runs_with_its_policy_and_extra_arguments() {
    let exited = nanoclaw_output(&[
        "run",
        "--policy",
        &example("python-snippet.toml"),
        "--tool",
        "python",
        "--",
        "import os; print(sum(range(10)), os.getuid(), sorted(os.environ))",
    ]);
    assert_eq!(exited.code(), 0, "{}", exited.context());
    assert!(
        exited.stdout.starts_with("45 10001 "),
        "{}",
        exited.context()
    );
    assert!(
        exited.stdout.contains("PYTHONDONTWRITEBYTECODE"),
        "{}",
        exited.context()
    );
}

#[test]
fn a_workspace_tool_sees_the_workspace_read_only() {
    let workspace = scratch_dir();
    fs::write(workspace.path().join("notes.txt"), "needle in a haystack\n").unwrap();
    let ws = workspace.path().display().to_string();
    let search = &example("code-search.toml");
    let found = nanoclaw_output(&[
        "run",
        "--policy",
        search,
        "--tool",
        "search",
        "--workspace",
        &ws,
        "--",
        "needle",
    ]);
    assert_exit(&found, 0, "notes.txt:1:needle");
    let missing = nanoclaw_output(&[
        "run", "--policy", search, "--tool", "search", "--", "needle",
    ]);
    assert_exit(&missing, RUNNER_ERROR, "--workspace");
}

#[test]
fn options_that_would_widen_a_tool_are_refused_by_name() {
    let python = &example("python-snippet.toml");
    for (option, value) in [
        ("-v", "/etc:/etc"),
        ("--env", "SECRET=1"),
        ("--user", "0"),
        ("--rootfs", "/"),
        ("--network", "none"),
        ("--tmpfs", "/scratch"),
    ] {
        let exited = nanoclaw_output(&[
            "run", "--policy", python, "--tool", "python", option, value, "--", "print(1)",
        ]);
        assert_eq!(exited.code(), RUNNER_ERROR, "{}", exited.context());
        assert!(
            exited.stderr.contains("--tool python"),
            "{}",
            exited.context()
        );
    }
    let raised = nanoclaw_output(&[
        "run", "--policy", python, "--tool", "python", "--memory", "1g", "--", "print(1)",
    ]);
    assert_exit(
        &raised,
        RUNNER_ERROR,
        "--memory 1g would widen tool `python`",
    );
    let narrowed = nanoclaw_output(&[
        "run", "--policy", python, "--tool", "python", "--memory", "64m", "--", "print(1)",
    ]);
    assert_exit(&narrowed, 0, "1");
}

#[test]
fn a_tool_without_append_takes_no_arguments() {
    let (_dir, file) =
        policy_file("[tools.fixed]\ndescription = \"d\"\ncommand = [\"echo\", \"fixed\"]\n");
    let exited = nanoclaw_output(&["run", "--policy", &file, "--tool", "fixed", "--", "extra"]);
    assert_exit(&exited, RUNNER_ERROR, "fixed");
    let ok = nanoclaw_output(&["run", "--policy", &file, "--tool", "fixed"]);
    assert_exit(&ok, 0, "fixed");
}

#[test]
fn a_broken_policy_is_refused_with_its_line_and_column() {
    let (_dir, file) =
        policy_file("[tools.a]\ncommand = [\"true\"]\n\n[tools.a.limits]\nmemroy = \"1g\"\n");
    for args in [
        vec!["policy", "check", &file],
        vec!["run", "--policy", &file, "--tool", "a"],
    ] {
        let exited = nanoclaw_output(&args);
        assert_exit(&exited, RUNNER_ERROR, "tools.toml:5:1");
        assert!(exited.stderr.contains("memroy"), "{}", exited.context());
        assert!(
            exited.stderr.contains("memory"),
            "names the valid keys\n{}",
            exited.context()
        );
    }
    let unknown = nanoclaw_output(&[
        "run",
        "--policy",
        &example("python-snippet.toml"),
        "--tool",
        "pyhton",
    ]);
    assert_exit(&unknown, RUNNER_ERROR, "valid tools: python");
}

#[test]
fn a_risky_policy_fails_the_lint_unless_acknowledged() {
    let risky = "[tools.leak]\ndescription = \"d\"\ncommand = [\"cat\"]\n[[tools.leak.mounts]]\nhost = \"/etc\"\npath = \"/host-etc\"\n";
    let (_dir, file) = policy_file(risky);
    let check = nanoclaw_output(&["policy", "check", &file]);
    assert_exit(&check, REFUSED, "sensitive-mount");
    let run = nanoclaw_output(&["run", "--policy", &file, "--tool", "leak"]);
    assert_eq!(
        run.code(),
        RUNNER_ERROR,
        "no sandbox starts for a refused policy\n{}",
        run.context()
    );
    let json = nanoclaw_output(&["policy", "check", &file, "--json"]);
    assert_eq!(json.code(), REFUSED, "{}", json.context());
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(report.to_string().contains("sensitive-mount"), "{report}");

    let acknowledged = format!("{risky}[tools.leak.unsafe]\nreason = \"the tool audits /etc\"\nallow = [\"sensitive-mount\"]\n");
    let (_dir2, file) = policy_file(&acknowledged);
    let check = nanoclaw_output(&["policy", "check", &file]);
    assert_exit(&check, 0, "the tool audits /etc");
}

#[test]
fn an_egress_tool_reaches_only_its_listed_hosts() {
    let exited = nanoclaw_output(&[
        "run",
        "--policy",
        &example("fetcher.toml"),
        "--tool",
        "github-api",
        "--",
        "https://example.com/",
    ]);
    assert_ne!(exited.code(), 0, "{}", exited.context());
    assert!(
        exited.stderr.contains("403"),
        "the proxy refuses example.com\n{}",
        exited.context()
    );
}

#[test]
fn the_audit_log_names_the_tool_and_the_policy() {
    let scratch = scratch_dir();
    let status = nanoclaw(scratch.path())
        .args([
            "run",
            "--policy",
            &example("python-snippet.toml"),
            "--tool",
            "python",
            "--",
            "print(1)",
        ])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let log = fs::read_to_string(scratch.path().join("audit.jsonl")).unwrap();
    let start: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(start["kind"], "invocation.start");
    assert_eq!(start["data"]["tool"], "python");
    assert_eq!(
        start["data"]["policy_sha256"].as_str().map(str::len),
        Some(64),
        "{start}"
    );
}
