//! `run --tool` with declared parameters, on a real sandbox: each value is exactly one
//! argument (no shell but the policy's own), arrays by repetition, an absent optional
//! parameter adds nothing, a stdin parameter is the command's standard input, and a value
//! that does not fit is refused with exit 125 naming the parameter, and audited.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::suite::support::{nanoclaw, scratch_dir, test_image_id, RUNNER_ERROR};

const POLICY: &str = r#"
[tools.show]
description = "print each argument on its own line"
command = ["printf", "<%s>\n", "first", "{text}", "{files}", "{count}", "{verbose}", "{ratio}"]
args = "append"
[tools.show.params.text]
type = "string"
description = "any text"
[tools.show.params.files]
type = "array"
[tools.show.params.count]
type = "integer"
[tools.show.params.verbose]
type = "boolean"
[tools.show.params.ratio]
type = "number"

[tools.shell]
description = "run a shell command"
command = ["sh", "-c", "{command}"]
[tools.shell.params.command]
type = "string"
required = true
max_length = 200

[tools.pick]
description = "a choice"
command = ["echo", "{mode}"]
[tools.pick.params.mode]
type = "string"
required = true
enum = ["fast", "slow"]
[tools.pick.params.stdin]
type = "string"
pattern = "^[a-z]*$"

[tools.count]
description = "count the bytes of standard input"
command = ["wc", "-c"]
[tools.count.params.stdin]
type = "string"
"#;

/// A scratch directory holding the policy (and the audit log `nanoclaw` points at).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = scratch_dir();
        fs::write(dir.path().join("tools.toml"), POLICY).unwrap();
        Scratch { dir }
    }

    fn policy(&self) -> String {
        self.dir.path().join("tools.toml").display().to_string()
    }

    fn audit(&self) -> Vec<Value> {
        let log = fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default();
        log.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// `nanoclaw run --policy P --tool TOOL ARGS...`, nanoclaw's own stdin fed `host_stdin`.
    fn run(&self, tool: &str, args: &[&str], host_stdin: &[u8]) -> Ran {
        let policy = self.policy();
        let mut command = nanoclaw(self.dir.path());
        command
            .args(["run", "--policy", &policy, "--tool", tool])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let context = format!("{command:?}");
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let bytes = host_stdin.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        Ran {
            output: child.wait_with_output().unwrap(),
            context,
        }
    }
}

struct Ran {
    output: Output,
    context: String,
}

impl Ran {
    fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.explain()))
    }

    fn explain(&self) -> String {
        format!(
            "{}\nexit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.context,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }

    #[track_caller]
    fn succeeds_with(&self, stdout: &str) {
        assert_eq!(self.code(), 0, "{}", self.explain());
        assert_eq!(self.stdout(), stdout, "{}", self.explain());
    }

    #[track_caller]
    fn refused_naming(&self, says: &str) {
        assert_eq!(self.code(), RUNNER_ERROR, "{}", self.explain());
        assert!(
            self.stderr().contains(says),
            "expected {says:?}\n{}",
            self.explain()
        );
        assert_eq!(self.stdout(), "", "{}", self.explain());
    }
}

#[test]
fn a_string_is_one_argument_and_no_shell_reads_it() {
    let s = Scratch::new();
    let hostile = r#"a b; echo INJECTED 'q" $(id) `id` | > /tmp/x *"#;
    let text = format!("text={hostile}");
    s.run("show", &["--param", &text], b"")
        .succeeds_with(&format!("<first>\n<{hostile}>\n"));
    // Only the part before the first `=` is the name.
    s.run("show", &["--param", "text=k=v"], b"")
        .succeeds_with("<first>\n<k=v>\n");
}

#[test]
fn a_shell_tool_runs_its_script() {
    let s = Scratch::new();
    s.run(
        "shell",
        &["--param", "command=echo one; echo \"two  three\""],
        b"",
    )
    .succeeds_with("one\ntwo  three\n");
}

#[test]
fn arrays_by_repetition_and_absent_optionals_add_nothing() {
    let s = Scratch::new();
    s.run(
        "show",
        &[
            "--param",
            "files=a",
            "--param",
            "files=b c",
            "--param",
            "files=",
        ],
        b"",
    )
    .succeeds_with("<first>\n<a>\n<b c>\n<>\n");
    s.run("show", &[], b"").succeeds_with("<first>\n");
}

#[test]
fn values_are_typed_by_their_declaration() {
    let s = Scratch::new();
    s.run(
        "show",
        &[
            "--param",
            "count=-3",
            "--param",
            "verbose=false",
            "--param",
            "ratio=0.25",
        ],
        b"",
    )
    .succeeds_with("<first>\n<-3>\n<false>\n<0.25>\n");
    s.run("show", &["--param", "count=three"], b"")
        .refused_naming("parameter `count` must be an integer, got \"three\"");
    s.run("show", &["--param", "verbose=yes"], b"")
        .refused_naming("parameter `verbose` must be a boolean");
    s.run("show", &["--param", "ratio=NaN"], b"")
        .refused_naming("parameter `ratio` must be a number, got \"NaN\"");
    s.run("show", &["--param", "text=a", "--param", "text=b"], b"")
        .refused_naming("--param text is given twice");
    s.run("show", &["--param", "text"], b"")
        .refused_naming("expected NAME=VALUE");
}

#[test]
fn params_json_is_the_same_call() {
    let s = Scratch::new();
    let json = r#"{"text": "x y", "files": ["1", "2"], "count": 7, "verbose": true, "ratio": 1.5}"#;
    s.run("show", &["--params-json", json], b"")
        .succeeds_with("<first>\n<x y>\n<1>\n<2>\n<7>\n<true>\n<1.5>\n");
    // `args` in the JSON is the trailing arguments.
    s.run("show", &["--params-json", r#"{"args": ["-z", "w"]}"#], b"")
        .succeeds_with("<first>\n<-z>\n<w>\n");
    s.run(
        "show",
        &["--params-json", r#"{"text": "t"}"#, "--", "tail"],
        b"",
    )
    .succeeds_with("<first>\n<t>\n<tail>\n");
    s.run(
        "show",
        &["--params-json", r#"{"args": []}"#, "--", "tail"],
        b"",
    )
    .refused_naming("given twice");
    s.run("show", &["--params-json", r#"{"count": "7"}"#], b"")
        .refused_naming("parameter `count` must be an integer, got \"7\"");
    s.run("show", &["--params-json", r#"{"nope": 1}"#], b"")
        .refused_naming("unknown parameter `nope` for tool `show`");
    s.run("show", &["--params-json", "[1]"], b"")
        .refused_naming("--params-json must be one JSON object, not an array");
    s.run("show", &["--params-json", "{"], b"")
        .refused_naming("--params-json is not valid JSON");
    // `-`: the object on standard input, which no single argument could hold.
    let (y, z) = ("y".repeat(80_000), "z".repeat(80_000));
    let big = format!(r#"{{"files": ["{y}", "{z}"]}}"#);
    s.run("show", &["--params-json", "-"], big.as_bytes())
        .succeeds_with(&format!("<first>\n<{y}>\n<{z}>\n"));
    s.run("count", &["--params-json", "-"], br#"{"stdin": "four"}"#)
        .succeeds_with("4\n");
    s.run("count", &["--params-json", "-"], b"not json")
        .refused_naming("--params-json is not valid JSON");
    s.run("show", &["--params-json", "-", "-i"], b"{}")
        .refused_naming("-i/--stdin cannot be combined with --params-json -");
    let mixed = s.run("show", &["--params-json", "{}", "--param", "text=x"], b"");
    assert_eq!(mixed.code(), RUNNER_ERROR, "{}", mixed.explain());
    assert!(
        mixed.stderr().contains("cannot be used with"),
        "{}",
        mixed.explain()
    );
}

#[test]
fn constraints_and_requirements_are_enforced() {
    let s = Scratch::new();
    s.run("shell", &[], b"")
        .refused_naming("parameter `command` is required: a string");
    let long = format!("command={}", "x".repeat(201));
    s.run("shell", &["--param", &long], b"")
        .refused_naming("parameter `command` is too long: 201 characters, at most 200 allowed");
    s.run("pick", &["--param", "mode=medium"], b"")
        .refused_naming("parameter `mode` must be one of \"fast\", \"slow\", got \"medium\"");
    s.run(
        "pick",
        &["--param", "mode=fast", "--param", "stdin=ABC"],
        b"",
    )
    .refused_naming("parameter `stdin` must match the pattern");
    s.run("pick", &["--param", "mode=fast"], b"")
        .succeeds_with("fast\n");
    s.run("shell", &["--param", "command=true", "--", "extra"], b"")
        .refused_naming("takes no extra arguments");
}

#[test]
fn a_stdin_parameter_is_the_standard_input() {
    let s = Scratch::new();
    // nanoclaw's own standard input is never passed on: the parameter is.
    s.run(
        "count",
        &["--param", "stdin=hello\nworld"],
        b"from the host",
    )
    .succeeds_with("11\n");
    // Larger than a pipe's buffer (and one argument may be at most 128 KiB).
    let big = format!(r#"{{"stdin": "{}"}}"#, "x".repeat(100_000));
    s.run("count", &["--params-json", &big], b"")
        .succeeds_with("100000\n");
    // Absent: the command reads nothing, not the host's input.
    s.run("count", &[], b"from the host").succeeds_with("0\n");
    s.run("count", &["-i", "--param", "stdin=x"], b"")
        .refused_naming("-i/--stdin cannot be combined with --tool count: its standard input is its parameter `stdin`");
    // A command that does not read its input still ends.
    let ignored = format!(r#"{{"mode": "slow", "stdin": "{}"}}"#, "a".repeat(100_000));
    s.run("pick", &["--params-json", &ignored], b"")
        .succeeds_with("slow\n");
}

#[test]
fn json_reports_the_audit_record_of_the_call() {
    let s = Scratch::new();
    let ran = s.run("show", &["--json", "--param", "text=a b", "--", "-x"], b"");
    assert_eq!(ran.code(), 0, "{}", ran.explain());
    let outcome = ran.json();
    assert_eq!(outcome["stdout"], "<first>\n<a b>\n<-x>\n");
    let seq = outcome["audit"]["seq"].as_u64().unwrap();
    let invocation = outcome["audit"]["invocation"].as_str().unwrap();
    let records = s.audit();
    let start = records.iter().find(|r| r["seq"] == seq).unwrap();
    assert_eq!(start["kind"], "invocation.start");
    assert_eq!(start["data"]["invocation_id"], invocation);
    assert_eq!(start["data"]["tool"], "show");
    // The argv that ran, parameters bound.
    assert_eq!(
        start["data"]["argv"],
        serde_json::json!(["printf", "<%s>\n", "first", "a b", "-x"])
    );
    assert!(records
        .iter()
        .any(|r| r["kind"] == "invocation.end" && r["data"]["invocation_id"] == invocation));

    let unaudited = s.run("show", &["--json", "--no-audit"], b"");
    assert_eq!(unaudited.code(), 0, "{}", unaudited.explain());
    assert_eq!(unaudited.json()["audit"], Value::Null);
}

#[test]
fn a_refused_call_is_audited_and_reported_as_json() {
    let s = Scratch::new();
    let ran = s.run("show", &["--json", "--param", "count=x"], b"");
    assert_eq!(ran.code(), RUNNER_ERROR, "{}", ran.explain());
    let error = ran.json();
    assert_eq!(error["exit_status"], RUNNER_ERROR);
    assert_eq!(
        error["error"],
        "parameter `count` must be an integer, got \"x\""
    );
    let records = s.audit();
    let refused = records.last().unwrap();
    assert_eq!(refused["kind"], "policy.refused");
    assert_eq!(refused["data"]["tool"], "show");
    assert!(
        refused["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("parameter `count`"),
        "{refused}"
    );
    assert!(!records.iter().any(|r| r["kind"] == "invocation.start"));
}

#[test]
fn param_flags_need_a_tool() {
    let scratch = scratch_dir();
    let out = nanoclaw(scratch.path())
        .args(["run", "--param", "a=b", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(RUNNER_ERROR));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tool"));
}

#[test]
fn policy_check_points_at_a_broken_placeholder() {
    let scratch = scratch_dir();
    let path = scratch.path().join("tools.toml");
    fs::write(
        &path,
        "[tools.t]\ndescription = \"t\"\ncommand = [\"git\", \"--branch={b}\"]\n[tools.t.params.b]\ntype = \"string\"\n",
    )
    .unwrap();
    let out = nanoclaw(scratch.path())
        .args(["policy", "check", &path.display().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(RUNNER_ERROR), "{stderr}");
    assert!(
        stderr.contains("a placeholder must be a whole argument, not part of \"--branch={b}\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:3:19", path.display())),
        "{stderr}"
    );
    assert!(!Path::new(&path).with_file_name("audit.jsonl").exists());
}

#[test]
fn verify_runs_a_tool_with_parameters_without_values() {
    let s = Scratch::new();
    let out = nanoclaw(s.dir.path())
        .args(["verify", &s.policy(), "--tool", "shell"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every claim holds"), "{stdout}");
}

/// The docker backend reads nanoclaw's standard input as the native one does: a stdin
/// parameter and argv values reach a container the same way.
#[test]
fn parameters_reach_a_docker_sandbox_the_same_way() {
    let s = Scratch::new();
    let docker = format!(
        "[tools.dcount]\ndescription = \"count\"\nbackend = \"docker\"\nimage = \"{}\"\n\
         command = [\"sh\", \"-c\", \"printf '<%s>' \\\"$1\\\"; wc -c\", \"sh\", \"{{text}}\"]\n\
         [tools.dcount.params.text]\ntype = \"string\"\nrequired = true\n\
         [tools.dcount.params.stdin]\ntype = \"string\"\n",
        test_image_id()
    );
    fs::write(
        s.dir.path().join("tools.toml"),
        format!("{POLICY}\n{docker}"),
    )
    .unwrap();
    let big = format!(
        r#"{{"text": "a b; 'c", "stdin": "{}"}}"#,
        "x".repeat(100_000)
    );
    let ran = s.run("dcount", &["--params-json", "-"], big.as_bytes());
    assert_eq!(ran.code(), 0, "{}", ran.explain());
    assert_eq!(
        ran.stdout().replace(' ', ""),
        "<ab;'c>100000\n",
        "{}",
        ran.explain()
    );
    let ran = s.run("dcount", &["--param", "text=t"], b"from the host");
    assert_eq!(ran.code(), 0, "{}", ran.explain());
    assert_eq!(ran.stdout().replace(' ', ""), "<t>0\n", "{}", ran.explain());
}
