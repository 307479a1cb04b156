//! The audit log as a user meets it: `nanoclaw run` records every invocation and every
//! refusal, fails closed when it cannot, and `nanoclaw audit` verifies and queries it.
//! Black-box: the real binary, real sandboxes, a log in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

/// A temporary directory holding one audit log, and the commands that use it.
struct AuditDir {
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl AuditDir {
    fn new() -> AuditDir {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("state/audit.jsonl");
        AuditDir { dir, log }
    }

    /// `nanoclaw ARGS` with `NANOCLAW_AUDIT` pointing at this log.
    fn nanoclaw(&self, args: &[&str]) -> Output {
        nanoclaw(args, &self.log)
    }

    /// The log's lines, parsed.
    fn records(&self) -> Vec<Value> {
        json_lines(&std::fs::read_to_string(&self.log).unwrap())
    }

    fn kinds(&self) -> Vec<String> {
        self.records()
            .iter()
            .map(|r| r["kind"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn nanoclaw(args: &[&str], log: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .args(args)
        .env("NANOCLAW_AUDIT", log)
        .output()
        .unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

#[test]
fn a_run_is_recorded_start_and_end_and_the_log_verifies() {
    let audit = AuditDir::new();
    assert_exit(&audit.nanoclaw(&["run", "--json", "--", "echo", "hi"]), 0);

    assert_eq!(audit.kinds(), ["invocation.start", "invocation.end"]);
    let records = audit.records();
    let (start, end) = (&records[0]["data"], &records[1]["data"]);
    assert_eq!(start["invocation_id"], end["invocation_id"]);
    assert_eq!(start["tool"], "(command line)");
    assert_eq!(start["argv"], json!(["echo", "hi"]));
    assert_eq!(start["backend"], "native");
    assert_eq!(start["spec_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(end["exit"], 0);
    assert_eq!(end["stdout"]["bytes"], 3);
    assert_eq!(
        end["stdout"]["sha256"],
        "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"
    );
    let layers = end["layers"].to_string();
    assert!(
        layers.contains("seccomp:") && layers.contains("namespaces:"),
        "{layers}"
    );

    let verify = audit.nanoclaw(&["audit", "verify"]);
    assert_exit(&verify, 0);
    assert!(
        stdout(&verify).contains("intact, 2 records"),
        "{}",
        stdout(&verify)
    );
}

#[test]
fn streamed_output_is_recorded_as_unknown_not_as_empty() {
    let audit = AuditDir::new();
    assert_exit(
        &audit.nanoclaw(&["run", "--", "sh", "-c", "echo out; exit 3"]),
        3,
    );
    let end = &audit.records()[1]["data"];
    assert_eq!(end["exit"], 3);
    assert!(end["stdout"].is_null() && end["stderr"].is_null(), "{end}");
}

#[test]
fn a_runner_error_after_the_start_ends_the_invocation_with_the_error() {
    let audit = AuditDir::new();
    assert_exit(&audit.nanoclaw(&["run", "--", "no-such-command"]), 127);
    assert_eq!(audit.kinds(), ["invocation.start", "invocation.end"]);
    let end = &audit.records()[1]["data"];
    assert!(end["exit"].is_null(), "{end}");
    let error = end["error"].as_str().unwrap();
    assert!(error.contains("no-such-command"), "{error}");
}

#[test]
fn audit_list_returns_the_records_as_json_lines_or_a_table() {
    let audit = AuditDir::new();
    assert_exit(&audit.nanoclaw(&["run", "--", "true"]), 0);
    assert_exit(&audit.nanoclaw(&["run", "--", "false"]), 1);

    let all = audit.nanoclaw(&["audit", "list", "--json"]);
    assert_exit(&all, 0);
    assert_eq!(json_lines(&stdout(&all)), audit.records());

    let failed = json_lines(&stdout(&audit.nanoclaw(&[
        "audit",
        "list",
        "--json",
        "--exit-nonzero",
    ])));
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (&failed[0]["seq"], &failed[0]["data"]["exit"]),
        (&json!(4), &json!(1))
    );

    let table = stdout(&audit.nanoclaw(&["audit", "list", "--tool", "(command line)"]));
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.contains("exit 1"), "{table}");
}

#[test]
fn audit_show_pairs_an_invocations_start_and_end() {
    let audit = AuditDir::new();
    assert_exit(&audit.nanoclaw(&["run", "--", "true"]), 0);
    assert_exit(&audit.nanoclaw(&["run", "--", "true"]), 0);

    let show = audit.nanoclaw(&["audit", "show", "4", "--json"]);
    assert_exit(&show, 0);
    assert_eq!(json_lines(&stdout(&show)), audit.records()[2..]);

    let missing = audit.nanoclaw(&["audit", "show", "9"]);
    assert_exit(&missing, 125);
    assert!(
        stderr(&missing).contains("no record with seq 9"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn an_edited_byte_makes_verify_fail_naming_the_line() {
    let audit = AuditDir::new();
    for _ in 0..2 {
        assert_exit(&audit.nanoclaw(&["run", "--", "true"]), 0);
    }
    let text = std::fs::read_to_string(&audit.log).unwrap();
    // One byte of the second invocation's start: it now claims to have run `trve`.
    let third = text.lines().nth(2).unwrap();
    let edited = third.replace("\"argv\":[\"true\"]", "\"argv\":[\"trve\"]");
    assert_ne!(edited, third);
    std::fs::write(&audit.log, text.replace(third, &edited)).unwrap();

    let verify = audit.nanoclaw(&["audit", "verify"]);
    assert_exit(&verify, 1);
    assert!(
        stdout(&verify).contains("line 3 (seq 3) was edited"),
        "{}",
        stdout(&verify)
    );
}

#[test]
fn an_unwritable_log_refuses_the_run_before_any_sandbox_starts() {
    let audit = AuditDir::new();
    let work = audit.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // The sandbox runs as an unprivileged uid: it must be able to create the marker.
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let not_a_dir = audit.dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let log = not_a_dir.join("audit.jsonl");
    let volume = format!("{}:/work:rw", work.display());
    let touch = ["-v", &volume, "--", "sh", "-c", "touch /work/marker"];

    let refused = nanoclaw(&[&["run"][..], &touch].concat(), &log);
    assert_exit(&refused, 125);
    let message = stderr(&refused);
    assert!(
        message.contains(&log.display().to_string())
            && message.contains("Not a directory")
            && message.contains("--no-audit"),
        "{message}"
    );
    assert!(
        !work.join("marker").exists(),
        "a sandbox ran without an audit record"
    );

    let unaudited = nanoclaw(&[&["run", "--no-audit"][..], &touch].concat(), &log);
    assert_exit(&unaudited, 0);
    assert!(
        stderr(&unaudited).contains("WARNING: --no-audit"),
        "{}",
        stderr(&unaudited)
    );
    assert!(work.join("marker").exists());
}

/// The start record is written while the sandbox is being built; a log that opens but
/// cannot take the record (a torn last line) must still stop the command from starting.
#[test]
fn a_start_record_that_cannot_be_written_stops_the_command() {
    let audit = AuditDir::new();
    let work = audit.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = audit.dir.path().join("audit.jsonl");
    std::fs::write(&log, "{\"seq\":1,\"torn").unwrap();
    let volume = format!("{}:/work:rw", work.display());
    let touch = ["run", "-v", &volume, "--", "sh", "-c", "touch /work/marker"];
    let refused = nanoclaw(&touch, &log);
    assert_exit(&refused, 125);
    assert!(
        stderr(&refused).contains("audit verify"),
        "{}",
        stderr(&refused)
    );
    assert!(
        !work.join("marker").exists(),
        "the command ran without its start record"
    );
}

#[test]
fn a_refused_run_leaves_a_policy_refused_record() {
    let audit = AuditDir::new();
    assert_exit(
        &audit.nanoclaw(&["run", "--memory", "lots", "--", "true"]),
        125,
    );
    let missing = audit.dir.path().join("missing");
    let volume = format!("{}:/data", missing.display());
    assert_exit(&audit.nanoclaw(&["run", "-v", &volume, "--", "true"]), 125);

    assert_eq!(audit.kinds(), ["policy.refused", "policy.refused"]);
    let records = audit.records();
    let reason = |i: usize| records[i]["data"]["reason"].as_str().unwrap().to_owned();
    assert!(reason(0).contains("--memory"), "{}", reason(0));
    assert!(reason(1).contains("mount source"), "{}", reason(1));
    assert_eq!(records[0]["data"]["argv"], json!(["true"]));

    let refused = stdout(&audit.nanoclaw(&["audit", "list", "--refused"]));
    assert_eq!(refused.lines().count(), 3, "{refused}");
    assert_exit(&audit.nanoclaw(&["audit", "verify"]), 0);
}

#[test]
fn concurrent_runs_append_one_intact_chain() {
    let audit = AuditDir::new();
    let runs: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
                .args(["run", "--", "sh", "-c", &format!("exit {i}")])
                .env("NANOCLAW_AUDIT", &audit.log)
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, mut run) in runs.into_iter().enumerate() {
        assert_eq!(run.wait().unwrap().code(), Some(i as i32));
    }

    let verify = audit.nanoclaw(&["audit", "verify"]);
    assert_exit(&verify, 0);
    assert!(
        stdout(&verify).contains("intact, 8 records"),
        "{}",
        stdout(&verify)
    );
    // Each invocation has one start and, after it, one end.
    let records = audit.records();
    let id = |r: &Value| r["data"]["invocation_id"].as_str().unwrap().to_owned();
    let mut ids: Vec<String> = records.iter().map(id).collect();
    for (i, end) in records.iter().enumerate() {
        if end["kind"] == "invocation.end" {
            let start = records.iter().position(|r| id(r) == id(end)).unwrap();
            assert!(start < i && records[start]["kind"] == "invocation.start");
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4);
}
