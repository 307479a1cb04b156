//! `nanoclaw mcp` driven by a real client: the official MCP Python SDK (`mcp` from PyPI,
//! pinned in `.ci/run`), over stdio and Streamable HTTP, in the handshake revisions
//! (2025-06-18, 2025-11-25) and the handshake-free 2026-07-28. The client script
//! (`crates/mcp/tests/py/client.py`) performs one scenario and reports what it saw; these
//! tests judge it, and check the host themselves: files written, processes left, the audit
//! log.
//!
//! The SDK lives in a venv: `$NANOCLAW_MCP_VENV`, else `target/mcp-venv` of the repository
//! (`.ci/run` makes it). Without it these tests say so loudly and pass, except under CI
//! (`CI` or `NANOCLAW_CI` set), where they fail.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{give_to_sandbox_user, processes_with, scratch_dir, unique_token, BIN};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../mcp/tests/py/client.py");

/// The tools every test serves: parameters of each type, a failing command, a refusal (a
/// mount whose source is missing), a stdin parameter, a writable workspace.
const POLICY: &str = r#"
[defaults]
timeout = "90s"

[tools.echo]
description = "print the text and the count"
command = ["printf", "%s|%s\n", "{text}", "{count}"]
[tools.echo.params.text]
type = "string"
required = true
[tools.echo.params.count]
type = "integer"

[tools.shell]
description = "sh -c in the workspace"
command = ["sh", "-c", "{command}"]
workdir = "/work"
[tools.shell.params.command]
type = "string"
required = true
[[tools.shell.mounts]]
host = "${workspace}"
path = "/work"
mode = "ro"

[tools.write]
description = "write a file of the workspace"
command = ["sh", "-c", "mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\"", "write", "{path}"]
workdir = "/work"
[tools.write.params.path]
type = "string"
required = true
[tools.write.params.content]
type = "string"
required = true
stdin = true
[[tools.write.mounts]]
host = "${workspace}"
path = "/work"
mode = "rw"

[tools.refused-mount]
description = "mounts a directory the workspace does not have"
command = ["true"]
[[tools.refused-mount.mounts]]
host = "${workspace}/missing"
path = "/data"
mode = "ro"
"#;

const TOOLS: [&str; 4] = ["echo", "shell", "write", "refused-mount"];

/// The tools the pool pre-builds: all but `refused-mount`, whose sandbox cannot be built
/// (its mount source is missing), so its calls run one-shot and get the refusal.
const POOLED: usize = TOOLS.len() - 1;

/// The SDK's python, or `None` (said loudly) when it is not installed outside CI.
fn sdk_python() -> Option<PathBuf> {
    let venv = std::env::var_os("NANOCLAW_MCP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-venv"));
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    let ci = ["CI", "NANOCLAW_CI"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"));
    assert!(
        !ci,
        "the MCP Python SDK is not installed at {}: .ci/run makes it (python3 -m venv target/mcp-venv && target/mcp-venv/bin/pip install mcp==2.3.0)",
        venv.display()
    );
    eprintln!(
        "\n*** SKIPPED: the MCP Python SDK is not installed at {} (python3 -m venv target/mcp-venv && target/mcp-venv/bin/pip install mcp==2.3.0, or set NANOCLAW_MCP_VENV) ***\n",
        venv.display()
    );
    None
}

/// A scratch directory with the policy, a workspace and the audit log.
struct Setup {
    scratch: tempfile::TempDir,
    python: PathBuf,
}

impl Setup {
    fn new() -> Option<Setup> {
        let python = sdk_python()?;
        let scratch = scratch_dir();
        std::fs::write(scratch.path().join("tools.toml"), POLICY).unwrap();
        std::fs::create_dir(scratch.path().join("workspace")).unwrap();
        std::fs::write(scratch.path().join("workspace/hello.txt"), "hello\n").unwrap();
        // The sandbox user writes there (as a user's agent does in the user's checkout).
        give_to_sandbox_user(&scratch.path().join("workspace"));
        Some(Setup { scratch, python })
    }

    fn path(&self, name: &str) -> String {
        self.scratch.path().join(name).display().to_string()
    }

    /// The options of `nanoclaw mcp` (and of client.py, which starts it over stdio).
    fn server_args(&self) -> Vec<String> {
        vec![
            "--policy".into(),
            self.path("tools.toml"),
            "--workspace".into(),
            self.path("workspace"),
            "--audit".into(),
            self.path("audit.jsonl"),
        ]
    }

    /// Runs one scenario of client.py against a stdio server and returns its report.
    fn stdio(&self, mode: &str, scenario: &str, extra: &[&str]) -> Value {
        let mut args = vec!["--nanoclaw".to_string(), BIN.into()];
        args.extend(self.server_args());
        args.extend(["--mode".into(), mode.into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(scenario.into());
        self.client(&args)
    }

    fn http(&self, server: &HttpServer, mode: &str, scenario: &str, extra: &[&str]) -> Value {
        let mut args = vec![
            "--url".to_string(),
            server.url.clone(),
            "--token".into(),
            server.token.clone(),
            "--mode".into(),
            mode.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(scenario.into());
        self.client(&args)
    }

    fn client(&self, args: &[String]) -> Value {
        let output = Command::new(&self.python)
            .arg(CLIENT)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "client.py {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("client.py printed {stdout:?}: {e}"))
    }

    /// The audit records of `kind`, once there are at least `count` (the server appends
    /// them after the runner is reaped, a moment after the sandbox is gone).
    fn audit_at_least(&self, kind: &str, count: usize) -> Vec<Value> {
        let since = Instant::now();
        loop {
            let records = self.audit(kind);
            if records.len() >= count || since.elapsed() > Duration::from_secs(10) {
                return records;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The audit records of `kind`.
    fn audit(&self, kind: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path("audit.jsonl")).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|record| record["kind"] == kind)
            .collect()
    }

    /// Starts `nanoclaw mcp --http 127.0.0.1:0` and reads its address and token.
    fn http_server(&self, extra: &[&str]) -> HttpServer {
        let mut child = Command::new(BIN)
            .arg("mcp")
            .args(self.server_args())
            .args(["--http", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut token, mut url) = (None, None);
        while url.is_none() {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("nanoclaw mcp --http ended: {:?}", child.wait()))
                .unwrap();
            if let Some(t) = line.strip_prefix("nanoclaw mcp: bearer token (shown once): ") {
                token = Some(t.to_string());
            }
            if let Some(u) = line.strip_prefix("nanoclaw mcp: listening on ") {
                url = Some(u.to_string());
            }
        }
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        HttpServer {
            child,
            url: url.unwrap(),
            token: token.expect("a generated token is printed"),
        }
    }
}

struct HttpServer {
    child: Child,
    url: String,
    token: String,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(result: &Value, index: usize) -> String {
    result["texts"][index]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What every transport and revision must show and do for the same calls.
fn assert_basics(setup: &Setup, report: &Value, version: &str) {
    assert_eq!(report["protocol_version"], version, "{report:#}");
    let tools = report["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, TOOLS, "exactly the policy's tools");
    let echo = &tools[0];
    assert_eq!(
        echo["input_schema"]["properties"]["count"]["type"],
        "integer"
    );
    assert_eq!(
        echo["input_schema"]["required"],
        serde_json::json!(["text"])
    );
    assert_eq!(echo["input_schema"]["additionalProperties"], false);
    assert_eq!(
        echo["output_schema"]["required"],
        serde_json::json!(["exit_status"])
    );
    assert_eq!(echo["annotations"]["readOnlyHint"], true, "{echo:#}");
    assert_eq!(echo["annotations"]["openWorldHint"], false, "{echo:#}");
    assert_eq!(
        tools[2]["annotations"]["readOnlyHint"], false,
        "write mounts rw"
    );

    // One argv element each, no shell: quotes, `;` and `$( )` arrive as written.
    let called = &report["echo"];
    assert_eq!(called["is_error"], false, "{called:#}");
    assert_eq!(text(called, 0), "it's a \"quoted\"; $(rm -rf /) string|2\n");
    let structured = &called["structured"];
    assert_eq!(structured["exit_status"], 0);
    assert_eq!(structured["timed_out"], false);
    assert!(structured["audit_seq"].as_u64().is_some(), "{structured:#}");
    assert!(
        structured["invocation"].as_str().is_some(),
        "{structured:#}"
    );

    let failed = &report["fail"];
    assert_eq!(failed["is_error"], true, "{failed:#}");
    assert_eq!(failed["structured"]["exit_status"], 3);
    assert!(text(failed, 1).contains("to-stderr"), "{failed:#}");

    let refused = &report["refused"];
    assert_eq!(refused["is_error"], true, "{refused:#}");
    assert_eq!(refused["structured"]["exit_status"], 125);
    assert!(
        text(refused, 0).contains("missing"),
        "the reason names the mount: {refused:#}"
    );

    assert_eq!(
        report["unknown"]["protocol_error"]["code"], -32602,
        "{report:#}"
    );
    for (case, param) in [
        ("bad_args", "count"),
        ("missing_args", "text"),
        ("extra_args", "mount"),
    ] {
        let result = &report[case];
        assert_eq!(result["is_error"], true, "{case}: {result:#}");
        assert!(
            text(result, 0).contains(param),
            "{case} names `{param}`: {result:#}"
        );
    }

    let written = &report["write"];
    assert_eq!(written["is_error"], false, "{written:#}");
    let on_host = setup.scratch.path().join("workspace/notes/new.txt");
    assert_eq!(
        std::fs::read_to_string(&on_host).unwrap(),
        "line one\nline two\n"
    );
    std::fs::remove_dir_all(setup.scratch.path().join("workspace/notes")).unwrap();
}

#[test]
fn mcp_stdio_lists_and_calls_in_every_revision() {
    let Some(setup) = Setup::new() else { return };
    for (mode, version) in [
        ("2025-06-18", "2025-06-18"),
        ("legacy", "2025-11-25"),
        ("2026-07-28", "2026-07-28"),
        ("auto", "2026-07-28"),
    ] {
        let report = setup.stdio(mode, "basics", &[]);
        assert_basics(&setup, &report, version);
    }
}

#[test]
fn mcp_http_lists_and_calls_in_both_lifecycles() {
    let Some(setup) = Setup::new() else { return };
    let server = setup.http_server(&[]);
    for (mode, version) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")] {
        let report = setup.http(&server, mode, "basics", &[]);
        assert_basics(&setup, &report, version);
    }
}

#[test]
fn mcp_http_refuses_requests_without_the_token_or_from_a_foreign_origin() {
    let Some(setup) = Setup::new() else { return };
    let server = setup.http_server(&[]);
    let report = setup.http(&server, "legacy", "http_checks", &[]);
    assert_eq!(report["no_token"], 401, "{report:#}");
    assert_eq!(report["wrong_token"], 401, "{report:#}");
    assert_eq!(report["foreign_origin"], 403, "{report:#}");
    assert_eq!(report["loopback_origin"], 200, "{report:#}");
    assert_eq!(report["no_origin"], 200, "{report:#}");
    assert_eq!(report["foreign_host"], 403, "DNS rebinding: {report:#}");
    assert_eq!(report["other_path"], 404, "{report:#}");
    let refusals = setup.audit_at_least("mcp.unauthorized", 2);
    assert_eq!(refusals.len(), 2, "each 401 is audited: {refusals:#?}");
    let log = std::fs::read_to_string(setup.path("audit.jsonl")).unwrap();
    assert!(!log.contains(&server.token), "the token is never logged");
}

#[test]
fn mcp_http_listens_on_loopback_only_unless_told() {
    let Some(setup) = Setup::new() else { return };
    let output = Command::new(BIN)
        .arg("mcp")
        .args(setup.server_args())
        .args(["--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}

#[test]
fn mcp_refuses_to_start_with_a_policy_that_does_not_parse() {
    let scratch = scratch_dir();
    let policy = scratch.path().join("bad.toml");
    std::fs::write(&policy, "[tools.x]\ncommand = [\"echo\", \"{nope}\"]\n").unwrap();
    let output = Command::new(BIN)
        .args(["mcp", "--policy"])
        .arg(&policy)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:2"),
        "names file and line: {stderr}"
    );
}

#[test]
fn mcp_refuses_calls_once_the_policy_file_changed() {
    let Some(setup) = Setup::new() else { return };
    let report = setup.stdio("legacy", "policy_edit", &[]);
    assert_eq!(report["before"]["is_error"], false, "{report:#}");
    assert_eq!(report["after"]["is_error"], true, "{report:#}");
    assert!(
        text(&report["after"], 0).contains("changed since this server started"),
        "{report:#}"
    );
}

#[test]
fn mcp_reports_progress_while_a_tool_runs() {
    let Some(setup) = Setup::new() else { return };
    for mode in ["legacy", "2026-07-28"] {
        let report = setup.stdio(mode, "progress", &[]);
        assert_eq!(report["result"]["is_error"], false, "{report:#}");
        assert_eq!(text(&report["result"], 0), "slept\n");
        let seen = report["progress"].as_array().unwrap();
        assert!(seen.len() >= 2, "about one a second: {report:#}");
        assert!(
            seen.iter()
                .all(|p| p["message"].as_str().unwrap().starts_with("running for")),
            "{report:#}"
        );
    }
}

#[test]
fn mcp_reports_the_wait_in_the_queue() {
    let Some(setup) = Setup::new() else { return };
    // One slot: the second of two parallel calls waits a second for the first.
    let report = setup.stdio("legacy", "parallel", &["--max-concurrent", "1"]);
    let results = report["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["is_error"] == false), "{report:#}");
    assert!(
        report["elapsed_ms"].as_u64().unwrap() >= 8000,
        "one at a time: {report:#}"
    );
    let progress = report["progress"].as_array().unwrap();
    assert!(
        progress
            .iter()
            .any(|m| m.as_str().unwrap().starts_with("queued for")),
        "the wait is reported: {report:#}"
    );
}

/// Cancels a `sleep 60` once its sandbox runs; the client checks that every process of it
/// (the runner too) is gone within a second, and that the server still serves.
fn assert_cancelled(setup: &Setup, report: &Value, marker: &str) {
    assert!(report.get("never_started").is_none(), "{report:#}");
    assert_eq!(report["timed_out"], false, "{report:#}");
    assert!(
        report["gone_after_ms"].as_u64().unwrap() < 1000,
        "the sandbox is gone within a second: {report:#}"
    );
    assert_eq!(report["left"], serde_json::json!([]), "{report:#}");
    assert_eq!(text(&report["after"], 0), "still serving|\n", "{report:#}");
    assert!(processes_with(marker).is_empty());
    let cancelled = setup.audit_at_least("mcp.cancelled", 1);
    assert!(
        cancelled
            .iter()
            .any(|r| r["data"]["tool"] == "shell" && r["data"]["phase"] == "running"),
        "the cancellation is audited: {cancelled:#?}"
    );
}

#[test]
fn mcp_cancel_stops_the_sandbox_at_once_over_stdio() {
    let Some(setup) = Setup::new() else { return };
    let marker = unique_token("mcp-cancel");
    let report = setup.stdio("legacy", "cancel", &["--token-marker", &marker]);
    assert_cancelled(&setup, &report, &marker);
}

#[test]
fn mcp_cancel_stops_the_sandbox_at_once_over_http() {
    let Some(setup) = Setup::new() else { return };
    let server = setup.http_server(&[]);
    for mode in ["legacy", "2026-07-28"] {
        let marker = unique_token("mcp-cancel-http");
        let report = setup.http(&server, mode, "cancel", &["--token-marker", &marker]);
        assert_cancelled(&setup, &report, &marker);
    }
}

#[test]
fn mcp_a_client_that_disconnects_leaves_no_sandbox() {
    let Some(setup) = Setup::new() else { return };
    let marker = unique_token("mcp-disconnect");
    setup.stdio("legacy", "disconnect", &["--token-marker", &marker]);
    let left = Instant::now();
    while !processes_with(&marker).is_empty() {
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "a sandbox outlived its client: {:#?}",
            processes_with(&marker)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mcp_an_http_client_killed_mid_call_leaves_no_sandbox() {
    let Some(setup) = Setup::new() else { return };
    let server = setup.http_server(&[]);
    for mode in ["legacy", "2026-07-28"] {
        let marker = unique_token("mcp-killed-client");
        let mut client = Command::new(&setup.python)
            .arg(CLIENT)
            .args([
                "--url",
                &server.url,
                "--token",
                &server.token,
                "--mode",
                mode,
            ])
            .args(["--token-marker", &marker, "hang"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let sandboxed = || {
            processes_with(&marker)
                .into_iter()
                .any(|(_, cmdline)| cmdline.starts_with("sh -c sleep 60"))
        };
        while !sandboxed() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{mode}: no sandbox"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // No DELETE, no notifications/cancelled: only the connection closes.
        client.kill().unwrap();
        client.wait().unwrap();
        let killed = Instant::now();
        while !processes_with(&marker).is_empty() {
            assert!(
                killed.elapsed() < Duration::from_secs(1),
                "{mode}: a sandbox outlived its client's connection: {:#?}",
                processes_with(&marker)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let cancelled = setup.audit_at_least("mcp.cancelled", 2);
    assert_eq!(cancelled.len(), 2, "{cancelled:#?}");
}

#[test]
fn mcp_runs_parallel_calls_in_parallel_sandboxes() {
    let Some(setup) = Setup::new() else { return };
    let report = setup.stdio("legacy", "parallel", &["--max-concurrent", "8"]);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["is_error"], false, "{report:#}");
        assert_eq!(text(result, 0), format!("call-{i}\n"));
    }
    let invocations: std::collections::BTreeSet<&str> = results
        .iter()
        .map(|r| r["structured"]["invocation"].as_str().unwrap())
        .collect();
    assert_eq!(invocations.len(), 8, "one sandbox per call");
    // Eight `sleep 1` one after another would take 8 s.
    assert!(
        report["elapsed_ms"].as_u64().unwrap() < 7000,
        "in parallel: {report:#}"
    );
}

#[test]
fn mcp_serves_the_agent_workspace_example_as_a_coding_agent_uses_it() {
    let Some(setup) = Setup::new() else { return };
    let workspace = setup.scratch.path().join("repo");
    std::fs::create_dir_all(workspace.join(".git/hooks")).unwrap();
    std::fs::write(workspace.join("README.md"), "a repo\n").unwrap();
    give_to_sandbox_user(&workspace);
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/agent-workspace.toml"
    );
    let mut args = vec![
        "--nanoclaw".to_string(),
        BIN.into(),
        "--policy".into(),
        policy.into(),
    ];
    args.extend(["--workspace".into(), workspace.display().to_string()]);
    args.extend(["--audit".into(), setup.path("audit.jsonl")]);
    args.push("workspace".into());
    let report = setup.client(&args);
    assert_eq!(
        report["tools"],
        serde_json::json!(["shell", "read_file", "write_file", "list_dir", "search"])
    );
    for call in [
        "write_file",
        "read_file",
        "list_dir",
        "list_src",
        "search",
        "shell",
    ] {
        assert_eq!(report[call]["is_error"], false, "{call}: {report:#}");
    }
    assert_eq!(
        std::fs::read_to_string(workspace.join("src/lib.rs")).unwrap(),
        "// TODO: everything\n"
    );
    assert_eq!(text(&report["read_file"], 0), "// TODO: everything\n");
    assert!(
        text(&report["list_dir"], 0).contains("README.md"),
        "{report:#}"
    );
    assert!(
        text(&report["list_src"], 0).contains("lib.rs"),
        "{report:#}"
    );
    assert_eq!(
        text(&report["search"], 0),
        "src/lib.rs:1:// TODO: everything\n"
    );
    assert_eq!(text(&report["shell"], 0), "1 lib.rs\n/work/src\n");
    assert_eq!(report["big_file"]["is_error"], false, "{report:#}");
    assert_eq!(
        std::fs::metadata(workspace.join("big.txt")).unwrap().len(),
        300_000
    );
    // The agent's shell cannot plant a git hook in the user's checkout.
    assert_eq!(report["git_hook"]["is_error"], true, "{report:#}");
    assert!(!workspace.join(".git/hooks/pre-commit").exists());
    assert!(
        !text(&report["network"], 0).contains("rc=0"),
        "no network: {report:#}"
    );
}

/// A pooled server answers through the SDK, and never reuses a sandbox: every call sees an
/// empty /tmp and gets its own invocation, with exactly one start and one end.
#[test]
fn mcp_pool_gives_every_call_a_fresh_sandbox() {
    let Some(setup) = Setup::new() else { return };
    let report = setup.stdio("legacy", "pool", &["--pool", "2"]);
    let calls = report["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 4, "{report:#}");
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call["is_error"], false, "{report:#}");
        assert_eq!(text(call, 0), format!("{i}\n"), "an empty /tmp: {report:#}");
    }
    assert_eq!(report["echo"]["is_error"], false, "{report:#}");
    assert_eq!(text(&report["echo"], 0), "pooled|1\n");
    let mut invocations: Vec<&str> = calls
        .iter()
        .chain([&report["echo"]])
        .map(|r| r["structured"]["invocation"].as_str().unwrap())
        .collect();
    invocations.sort_unstable();
    invocations.dedup();
    assert_eq!(invocations.len(), 5, "one sandbox per call: {report:#}");
    let starts = setup.audit_at_least("invocation.start", 5);
    let ends = setup.audit_at_least("invocation.end", 5);
    // The pre-built runners that served no call recorded nothing.
    assert_eq!(starts.len(), 5, "{starts:#?}");
    assert_eq!(ends.len(), 5, "{ends:#?}");
    for invocation in invocations {
        let of = |records: &[Value]| {
            records
                .iter()
                .filter(|r| r.to_string().contains(invocation))
                .count()
        };
        assert_eq!((of(&starts), of(&ends)), (1, 1), "{invocation}");
    }
}

/// `nanoclaw mcp` over stdio, driven line by line (for what the SDK hides: the children, the
/// server's stderr, killing it).
struct RawServer {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    next_id: u64,
}

impl RawServer {
    fn start(setup: &Setup, extra: &[&str]) -> RawServer {
        let mut child = Command::new(BIN)
            .arg("mcp")
            .args(setup.server_args())
            .args(extra)
            .env("NANOCLAW_POOL_DEBUG", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let lines = BufReader::new(child.stderr.take().unwrap());
        let seen = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let mut seen = seen.lock().unwrap();
                seen.push_str(&line);
                seen.push('\n');
            }
        });
        let mut server = RawServer {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            stderr,
            next_id: 1,
        };
        server.request(
            "initialize",
            serde_json::json!({"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"}}),
        );
        server.send(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        server
    }

    fn send(&mut self, message: &Value) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(
            &serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        );
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "server closed stdout"
            );
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == id {
                return message;
            }
        }
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let reply = self.request(
            "tools/call",
            serde_json::json!({"name": tool, "arguments": arguments}),
        );
        reply["result"].clone()
    }

    /// The server's pre-built runners waiting now.
    fn prebuilt(&self) -> Vec<u32> {
        let me = self.child.id();
        processes_with("--prebuilt")
            .into_iter()
            .filter(|(pid, _)| parent_of(*pid) == Some(me))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Waits until `check` holds on the pre-built children (10 s at most).
    fn wait_prebuilt(&self, what: &str, check: impl Fn(&[u32]) -> bool) -> Vec<u32> {
        let since = Instant::now();
        loop {
            let now = self.prebuilt();
            if check(&now) {
                return now;
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "{what}: pre-built children {now:?}\nstderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

#[test]
fn mcp_pool_keeps_n_per_tool_refills_counts_memory_and_discards_idle_ones() {
    let Some(setup) = Setup::new() else { return };
    let mut server = RawServer::start(&setup, &["--pool", "2", "--pool-max-idle", "3s"]);
    // Two per tool, no more.
    let first = server.wait_prebuilt("2 per tool", |p| p.len() == 2 * POOLED);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.prebuilt().len(), 2 * POOLED, "bounded by --pool");
    let result = server.call("echo", serde_json::json!({"text": "a", "count": 1}));
    assert_eq!(result["isError"], false, "{result:#}");
    assert_eq!(result["content"][0]["text"], "a|1\n");
    // The child that served the call is gone; another takes its place.
    let after = server.wait_prebuilt("refilled", |p| {
        p.len() == 2 * POOLED && p.iter().any(|pid| !first.contains(pid))
    });
    assert_eq!(
        first.iter().filter(|pid| !after.contains(pid)).count(),
        1,
        "exactly one child used: {first:?} -> {after:?}"
    );
    // Their memory is counted.
    let stderr = server.stderr();
    let rss = stderr
        .lines()
        .filter_map(|l| l.split("rss_kib=").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(rss > 0, "the waiting children's RSS: {stderr}");
    assert!(
        stderr.contains("tool `refused-mount` could not be pre-built"),
        "{stderr}"
    );
    // Past --pool-max-idle every waiting child is replaced, without a record of its own.
    server.wait_prebuilt("discarded after 3s idle", |p| {
        p.len() == 2 * POOLED && p.iter().all(|pid| !after.contains(pid))
    });
    assert!(
        server.stderr().contains("discarded="),
        "{}",
        server.stderr()
    );
    assert_eq!(setup.audit("invocation.start").len(), 1);
    assert_eq!(setup.audit_at_least("invocation.end", 1).len(), 1);
    // Closing stdin stops the server and the pool with it.
    let marker = setup.path("tools.toml");
    drop(server.stdin.take());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", server.stderr());
    super::support::assert_no_process_with(&marker, "the server ended");
}

#[test]
fn mcp_pool_dies_with_a_killed_server() {
    let Some(setup) = Setup::new() else { return };
    let mut server = RawServer::start(&setup, &["--pool", "1"]);
    server.wait_prebuilt("1 per tool", |p| p.len() == POOLED);
    let result = server.call("shell", serde_json::json!({"command": "echo ok"}));
    assert_eq!(result["content"][0]["text"], "ok\n", "{result:#}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // Each gets SIGTERM (parent-death signal) and is gone a moment later.
    let marker = setup.path("tools.toml");
    let since = Instant::now();
    while !processes_with(&marker).is_empty() && since.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    super::support::assert_no_process_with(&marker, "the server was killed");
}

#[test]
fn mcp_pool_0_starts_every_sandbox_for_its_call() {
    let Some(setup) = Setup::new() else { return };
    let mut server = RawServer::start(&setup, &["--pool", "0"]);
    let result = server.call("echo", serde_json::json!({"text": "one-shot"}));
    assert_eq!(result["content"][0]["text"], "one-shot|\n", "{result:#}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.prebuilt().is_empty());
    assert!(server.stderr().contains("pool: off"), "{}", server.stderr());
}

#[test]
fn mcp_pool_hides_a_credential_file_replaced_after_the_sandbox_was_built() {
    let Some(setup) = Setup::new() else { return };
    let env = setup.scratch.path().join("workspace/.env");
    std::fs::write(&env, "OLD_SECRET\n").unwrap();
    let mut server = RawServer::start(&setup, &["--pool", "1"]);
    server.wait_prebuilt("1 per tool", |p| p.len() == POOLED);
    // An editor's save: a new file renamed over the old one, whose mask the kernel drops.
    let fresh = setup.scratch.path().join("workspace/.env.tmp");
    std::fs::write(&fresh, "NEW_SECRET\n").unwrap();
    std::fs::rename(&fresh, &env).unwrap();
    let result = server.call(
        "shell",
        serde_json::json!({"command": "cat .env; echo end"}),
    );
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    assert!(!text.contains("SECRET"), "{result:#}");
    assert!(text.contains("end"), "{result:#}");
}
