//! `nanoclaw hook claude-code|codex`, black-box: the agents' documented PreToolUse and
//! PostToolUse payloads go in on stdin, the answer is judged, and every rewritten command
//! is run the way the agent would run it (`sh -c` in the session's working directory) to
//! check that it really ran in the sandbox: as uid 10001, in the directory matching the
//! shell's, without the host's files, and that a leading `cd` carries over to later calls.

// A test helper should stop at the first unexpected error and show it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_nanoclaw");

/// The shell tool as the README shows it (read-only unless `rw`).
fn shell_policy(mode: &str, extra: &str) -> String {
    format!(
        r#"
[tools.shell]
description = "run a shell command in the workspace"
command = ["sh", "-c", "{{command}}"]
workdir = "/work"
[tools.shell.params.command]
type = "string"
description = "the command line"
required = true
{extra}
[[tools.shell.mounts]]
host = "${{workspace}}"
path = "/work"
mode = "{mode}"
"#
    )
}

/// One test's directory: a workspace with a `sub` directory, a policy, an audit log.
struct Setup {
    _scratch: tempfile::TempDir,
    root: PathBuf,
    workspace: PathBuf,
    policy: PathBuf,
    audit: PathBuf,
}

impl Setup {
    fn new(policy: &str) -> Setup {
        let scratch = tempfile::Builder::new()
            .prefix("nanoclaw-hooks-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let root = scratch.path().canonicalize().unwrap();
        let workspace = root.join("ws");
        std::fs::create_dir_all(workspace.join("sub/deeper")).unwrap();
        std::fs::write(workspace.join("sub/file.txt"), "in sub\n").unwrap();
        for dir in [
            &root,
            &workspace,
            &workspace.join("sub"),
            &workspace.join("sub/deeper"),
        ] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let policy_path = root.join("tools.toml");
        std::fs::write(&policy_path, policy).unwrap();
        Setup {
            audit: root.join("audit.jsonl"),
            _scratch: scratch,
            root,
            workspace,
            policy: policy_path,
        }
    }

    fn shell() -> Setup {
        Setup::new(&shell_policy("ro", ""))
    }

    /// `nanoclaw hook AGENT --policy P --workspace W --audit A EXTRA...` fed `input`.
    fn hook(&self, agent: &str, extra: &[&str], input: &[u8]) -> Output {
        let mut command = Command::new(BIN);
        command
            .args(["hook", agent, "--policy"])
            .arg(&self.policy)
            .arg("--workspace")
            .arg(&self.workspace)
            .arg("--audit")
            .arg(&self.audit)
            .args(extra)
            .env_remove("CLAUDE_PROJECT_DIR");
        feed(&mut command, input)
    }

    /// The decision for a Claude Code `Bash` call of `command` in `cwd`.
    fn pre(&self, cwd: &Path, command: &str) -> Value {
        let out = self.hook(
            "claude-code",
            &[],
            claude_bash(cwd, command).to_string().as_bytes(),
        );
        answer(&out)
    }

    /// The rewritten command for `command` in `cwd` (the call must be allowed).
    fn rewrite(&self, cwd: &Path, command: &str) -> String {
        let answer = self.pre(cwd, command);
        let specific = &answer["hookSpecificOutput"];
        assert_eq!(specific["permissionDecision"], "allow", "{answer}");
        specific["updatedInput"]["command"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn audit_records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn feed(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The hook may stop reading early (input too large): a broken pipe is its answer.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Claude Code's documented PreToolUse payload for its Bash tool.
fn claude_bash(cwd: &Path, command: &str) -> Value {
    json!({
        "session_id": "abc123",
        "transcript_path": "/nonexistent/session.jsonl",
        "cwd": cwd,
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {
            "command": command,
            "description": "what it does",
            "timeout": 120000
        },
        "tool_use_id": "toolu_01ABC123"
    })
}

/// Codex's documented PreToolUse payload (pre-tool-use.command.input schema).
fn codex_bash(cwd: &Path, command: &str) -> Value {
    json!({
        "session_id": "019a-session",
        "turn_id": "turn-1",
        "transcript_path": null,
        "cwd": cwd,
        "hook_event_name": "PreToolUse",
        "model": "gpt-5",
        "permission_mode": "default",
        "tool_name": "Bash",
        "tool_input": { "command": command },
        "tool_use_id": "call_1"
    })
}

/// The hook's JSON answer (exit 0, one JSON object on stdout).
fn answer(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "hook failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "hook printed no JSON ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn denied(answer: &Value) -> String {
    let specific = &answer["hookSpecificOutput"];
    assert_eq!(specific["hookEventName"], "PreToolUse", "{answer}");
    assert_eq!(specific["permissionDecision"], "deny", "{answer}");
    assert!(specific.get("updatedInput").is_none(), "{answer}");
    specific["permissionDecisionReason"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs `script` as the agent's shell would: `sh -c` in `cwd`.
fn agent_shell(cwd: &Path, script: &str) -> Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_bash_call_runs_in_the_sandbox() {
    let setup = Setup::shell();
    let command = "id -u; pwd; cat sub/file.txt; ls /root 2>&1; cat /etc/shadow 2>&1; \
                   echo x > /etc/hook-test 2>&1 || echo write-refused";
    let answer = setup.pre(&setup.workspace, command);
    let specific = &answer["hookSpecificOutput"];
    assert_eq!(specific["permissionDecision"], "allow", "{answer}");
    // All original fields kept, only the command replaced.
    let updated = &specific["updatedInput"];
    assert_eq!(updated["description"], "what it does");
    assert_eq!(updated["timeout"], 120000);
    let rewritten = updated["command"].as_str().unwrap();
    assert_ne!(rewritten, command);

    let out = agent_shell(&setup.workspace, rewritten);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "10001", "{stdout}");
    assert_eq!(lines[1], "/work", "{stdout}");
    assert_eq!(lines[2], "in sub", "{stdout}");
    assert!(
        !stdout.contains("root:"),
        "host's /etc/shadow visible: {stdout}"
    );
    assert!(stdout.contains("write-refused"), "{stdout}");
    assert!(!Path::new("/etc/hook-test").exists());
}

#[test]
fn the_sandbox_starts_in_the_shells_directory() {
    let setup = Setup::shell();
    let sub = setup.workspace.join("sub/deeper");
    let rewritten = setup.rewrite(&sub, "pwd");
    let out = agent_shell(&sub, &rewritten);
    assert_eq!(text(&out.stdout), "/work/sub/deeper\n", "{out:?}");
}

#[test]
fn a_leading_cd_carries_over_to_the_next_call() {
    let setup = Setup::shell();
    let first = setup.rewrite(&setup.workspace, "cd sub && pwd && cat file.txt");
    // On the host, to the directory the hook checked: absolute, physical.
    let host_cd = format!("cd -P -- '{}' && ", setup.workspace.join("sub").display());
    assert!(first.starts_with(&host_cd), "{first}");
    // The agent's shell then reports its new directory in the next call's payload.
    let second = setup.rewrite(&setup.workspace.join("sub"), "pwd");
    // One shell, as the agent keeps one between calls; `pwd -P` runs on the host.
    let script = format!("{first}\npwd -P\n{second}\ncd deeper; pwd -P");
    let out = agent_shell(&setup.workspace, &script);
    let sub = setup.workspace.join("sub");
    assert_eq!(
        text(&out.stdout),
        format!(
            "/work/sub\nin sub\n{}\n/work/sub\n{}/deeper\n",
            sub.display(),
            sub.display()
        ),
        "{out:?}"
    );
    // A stale payload cwd changes nothing: the directory is the shell's when it runs.
    let stale = setup.rewrite(&setup.workspace, "pwd");
    let out = agent_shell(&sub, &stale);
    assert_eq!(text(&out.stdout), "/work/sub\n", "{out:?}");
}

#[test]
fn only_cds_change_the_directory_and_run_nothing() {
    let setup = Setup::shell();
    let rewritten = setup.rewrite(&setup.workspace, "cd sub");
    let sub = setup.workspace.join("sub");
    assert_eq!(rewritten, format!("cd -P -- '{}'", sub.display()));
    let rewritten = setup.rewrite(&setup.workspace, "cd sub; cd deeper;");
    assert_eq!(
        rewritten,
        format!(
            "cd -P -- '{}'; cd -P -- '{}'",
            sub.display(),
            sub.join("deeper").display()
        )
    );
}

#[test]
fn the_command_reaches_the_sandbox_verbatim() {
    let setup = Setup::shell();
    let marker = setup.root.join("host-ran-it");
    for command in [
        "printf '%s\\n' \"it's\" 'a \"b\"' `echo tick` $(echo dollar) \"${HOME}\"",
        "echo 'one\ntwo'\necho three",
        "echo \\' \\\" \\\\ '\\''",
        "x='a;b'; echo \"$x\" | tr ';' ,",
        "cat <<'EOF'\nline $x `y`\nEOF\ncat <<EOF\n$((1 + 2))\nEOF",
        &format!(
            "echo $(touch {m}) `touch {m}`; echo done",
            m = marker.display()
        ),
        "cd sub && echo \"$(cat file.txt)\" ';' && pwd",
    ] {
        let rewritten = setup.rewrite(&setup.workspace, command);
        let sandboxed = agent_shell(&setup.workspace, &rewritten);
        // The same command run directly by a shell in a copy of where the sandbox is.
        let expected = Command::new("/bin/sh")
            .arg("-c")
            .arg(command.replace(
                &marker.display().to_string(),
                &setup.root.join("expected-marker").display().to_string(),
            ))
            .current_dir(&setup.workspace)
            .env("HOME", "/tmp")
            .output()
            .unwrap();
        let expected =
            text(&expected.stdout).replace(&setup.workspace.display().to_string(), "/work");
        assert_eq!(
            text(&sandboxed.stdout),
            expected,
            "{command:?}: {sandboxed:?}"
        );
        // Claude Code's shell is bash (or zsh): the same there.
        let bash = Command::new("bash")
            .arg("-c")
            .arg(&rewritten)
            .current_dir(&setup.workspace)
            .output()
            .unwrap();
        assert_eq!(text(&bash.stdout), expected, "bash: {command:?}: {bash:?}");
        assert!(!marker.exists(), "{command:?} ran on the host");
    }
}

#[test]
fn writes_in_the_workspace_reach_it() {
    let setup = Setup::new(&shell_policy("rw", ""));
    std::os::unix::fs::chown(setup.workspace.join("sub"), Some(10001), Some(10001)).unwrap();
    let sub = setup.workspace.join("sub");
    let rewritten = setup.rewrite(&sub, "echo made > new.txt && id -u");
    let out = agent_shell(&sub, &rewritten);
    assert_eq!(text(&out.stdout), "10001\n", "{out:?}");
    assert_eq!(
        std::fs::read_to_string(sub.join("new.txt")).unwrap(),
        "made\n"
    );
}

#[test]
fn leaving_the_workspace_is_denied() {
    let setup = Setup::shell();
    let reason = denied(&setup.pre(&setup.workspace, "cd /etc && cat passwd"));
    assert!(
        reason.contains("`cd /etc` leaves the workspace"),
        "{reason}"
    );
    let reason = denied(&setup.pre(&setup.workspace, "cd .. && ls"));
    assert!(reason.contains("leaves the workspace"), "{reason}");
    let reason = denied(&setup.pre(&setup.root, "ls"));
    assert!(
        reason.contains("outside every directory tool `shell` mounts"),
        "{reason}"
    );
    // And when the shell is outside by the time the command runs: refused then (125).
    let rewritten = setup.rewrite(&setup.workspace, "echo ran");
    let out = agent_shell(&setup.root, &rewritten);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        text(&out.stderr).contains("outside every directory"),
        "{out:?}"
    );
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn what_the_policy_forbids_is_denied() {
    // No shell tool.
    let setup = Setup::new("[tools.date]\ndescription = \"the date\"\ncommand = [\"date\"]\n");
    let reason = denied(&setup.pre(&setup.workspace, "ls"));
    assert!(reason.contains("tool `shell`"), "{reason}");
    // The command against the parameter's schema.
    let setup = Setup::new(&shell_policy("ro", "max_length = 20"));
    let reason = denied(&setup.pre(&setup.workspace, "echo this command is far too long"));
    assert!(reason.contains("command"), "{reason}");
    // A policy that does not load.
    let setup = Setup::new("[tools.shell\n");
    let reason = denied(&setup.pre(&setup.workspace, "ls"));
    assert!(reason.contains("cannot load policy"), "{reason}");
    // Longer than one argument may be.
    let setup = Setup::shell();
    let reason = denied(&setup.pre(&setup.workspace, &"x".repeat(200_000)));
    assert!(reason.contains("too long"), "{reason}");
    // Short enough as text, too long once JSON-escaped for `nanoclaw run`.
    let reason = denied(&setup.pre(&setup.workspace, &"\x01".repeat(30_000)));
    assert!(reason.contains("too long"), "{reason}");
}

#[test]
fn other_tools_pass_unless_the_policy_names_them() {
    let setup = Setup::new(&format!(
        "{}\n[tools.Read]\ndescription = \"read\"\ncommand = [\"cat\"]\nargs = \"append\"\n",
        shell_policy("ro", "")
    ));
    for (tool, input) in [
        (
            "Edit",
            json!({"file_path": "/x", "old_string": "a", "new_string": "b"}),
        ),
        ("Write", json!({"file_path": "/x", "content": "c"})),
        ("mcp__other__tool", json!({"q": 1})),
    ] {
        let mut payload = claude_bash(&setup.workspace, "");
        payload["tool_name"] = json!(tool);
        payload["tool_input"] = input;
        let out = setup.hook("claude-code", &[], payload.to_string().as_bytes());
        assert!(out.status.success(), "{tool}: {out:?}");
        assert_eq!(text(&out.stdout), "", "{tool} should pass without output");
    }
    let mut payload = claude_bash(&setup.workspace, "");
    payload["tool_name"] = json!("Read");
    payload["tool_input"] = json!({"file_path": "/etc/passwd"});
    let out = setup.hook("claude-code", &[], payload.to_string().as_bytes());
    let reason = denied(&answer(&out));
    assert!(reason.contains("nanoclaw mcp"), "{reason}");
}

#[test]
fn input_that_is_not_a_hook_event_blocks_with_exit_2() {
    let setup = Setup::shell();
    let huge = vec![b' '; 17 << 20];
    let wrong_event = json!({"hook_event_name": "Stop", "session_id": "s"}).to_string();
    for (input, expected) in [
        (&b""[..], "no input"),
        (b"{\"tool_name\": ", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (wrong_event.as_bytes(), "event `Stop`"),
        (&huge[..], "larger than 16 MiB"),
    ] {
        let out = setup.hook("claude-code", &[], input);
        assert_eq!(out.status.code(), Some(2), "{expected}: {out:?}");
        assert_eq!(text(&out.stdout), "");
        assert!(
            text(&out.stderr).contains(expected),
            "{}",
            text(&out.stderr)
        );
    }
    // A hook command line the adapter cannot parse blocks too (never a failure that lets
    // the call through).
    let out = feed(
        Command::new(BIN).args(["hook", "cursor", "--policy", "x"]),
        b"{}",
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = feed(Command::new(BIN).args(["hook", "codex"]), b"{}");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn an_event_without_the_needed_fields_is_denied() {
    let setup = Setup::shell();
    let mut no_input = claude_bash(&setup.workspace, "ls");
    no_input.as_object_mut().unwrap().remove("tool_input");
    let mut no_cwd = claude_bash(&setup.workspace, "ls");
    no_cwd.as_object_mut().unwrap().remove("cwd");
    let mut no_command = claude_bash(&setup.workspace, "ls");
    no_command["tool_input"] = json!({"description": "x"});
    let mut no_tool = claude_bash(&setup.workspace, "ls");
    no_tool["tool_name"] = json!(7);
    for (payload, expected) in [
        (no_input, "no `tool_input`"),
        (no_cwd, "no `cwd`"),
        (no_command, "no `command`"),
        (no_tool, "no `tool_name`"),
    ] {
        let out = setup.hook("claude-code", &[], payload.to_string().as_bytes());
        let reason = denied(&answer(&out));
        assert!(reason.contains(expected), "{reason}");
    }
}

#[test]
fn codex_gets_the_same_answer_in_its_own_payload() {
    let setup = Setup::shell();
    let sub = setup.workspace.join("sub");
    let out = setup.hook(
        "codex",
        &[],
        codex_bash(&sub, "pwd; id -u").to_string().as_bytes(),
    );
    let reply = answer(&out);
    let specific = &reply["hookSpecificOutput"];
    assert_eq!(specific["hookEventName"], "PreToolUse");
    assert_eq!(specific["permissionDecision"], "allow", "{reply}");
    // Codex's Bash input is `{command}` only, and stays so.
    let updated = specific["updatedInput"].as_object().unwrap();
    assert_eq!(updated.len(), 1, "{reply}");
    let out = agent_shell(&sub, updated["command"].as_str().unwrap());
    assert_eq!(text(&out.stdout), "/work/sub\n10001\n", "{out:?}");
    // Codex refuses `allow` without `updatedInput`: a call it passes gets no output at all.
    let mut patch = codex_bash(&sub, "*** Begin Patch\n*** End Patch");
    patch["tool_name"] = json!("apply_patch");
    let out = setup.hook("codex", &[], patch.to_string().as_bytes());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "");
    let reason = denied(&answer(&setup.hook(
        "codex",
        &[],
        codex_bash(&sub, "cd / && ls").to_string().as_bytes(),
    )));
    assert!(reason.contains("leaves the workspace"), "{reason}");
}

#[test]
fn decisions_and_results_are_audited_without_the_text() {
    let setup = Setup::shell();
    // The command is in the sandboxed run's own start record (its argv); its output, which
    // the command line does not spell, must be nowhere in the log.
    let command = "echo hunter-output | tr a-z A-Z";
    let rewritten = setup.rewrite(&setup.workspace, command);
    denied(&setup.pre(&setup.workspace, "cd /etc && ls"));
    let out = agent_shell(&setup.workspace, &rewritten);
    assert_eq!(text(&out.stdout), "HUNTER-OUTPUT\n");
    let mut post = claude_bash(&setup.workspace, &rewritten);
    post["hook_event_name"] = json!("PostToolUse");
    post["tool_response"] = json!({
        "stdout": "HUNTER-OUTPUT\n", "stderr": "", "interrupted": false, "isImage": false
    });
    let out = setup.hook("claude-code", &["--post"], post.to_string().as_bytes());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "");

    let records = setup.audit_records();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "hook.pre",
            "hook.pre",
            "invocation.start",
            "invocation.end",
            "hook.post"
        ],
        "{records:?}"
    );
    let log = std::fs::read_to_string(&setup.audit).unwrap();
    assert!(!log.contains("HUNTER-OUTPUT"), "{log}");
    let pre = &records[0]["data"];
    assert_eq!(pre["decision"], "allow");
    assert_eq!(pre["agent"], "claude-code");
    assert_eq!(pre["session_id"], "abc123");
    assert_eq!(pre["command"]["bytes"], command.len());
    assert_eq!(records[1]["data"]["decision"], "deny");
    let post = &records[4]["data"];
    assert_eq!(post["tool_name"], "Bash");
    assert_eq!(post["stdout"]["bytes"], "HUNTER-OUTPUT\n".len());
    assert_eq!(post["interrupted"], false);
    let verify = Command::new(BIN)
        .args(["audit", "verify", "--audit"])
        .arg(&setup.audit)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}

#[test]
fn without_workspace_only_claude_codes_project_dir_will_do() {
    let setup = Setup::shell();
    let sub = setup.workspace.join("sub");
    let hook = |agent: &str, cwd: &Path, project_dir: Option<&Path>| {
        let mut command = Command::new(BIN);
        command
            .args(["hook", agent, "--policy"])
            .arg(&setup.policy)
            .arg("--audit")
            .arg(&setup.audit)
            .env_remove("CLAUDE_PROJECT_DIR");
        if let Some(dir) = project_dir {
            command.env("CLAUDE_PROJECT_DIR", dir);
        }
        let payload = match agent {
            "codex" => codex_bash(cwd, "pwd"),
            _ => claude_bash(cwd, "pwd"),
        };
        answer(&feed(&mut command, payload.to_string().as_bytes()))
    };
    let reply = hook("claude-code", &sub, Some(&setup.workspace));
    let rewritten = reply["hookSpecificOutput"]["updatedInput"]["command"]
        .as_str()
        .unwrap();
    let quoted = format!("--workspace '{}' ", setup.workspace.display());
    assert!(rewritten.contains(&quoted), "{rewritten}");
    assert_eq!(text(&agent_shell(&sub, rewritten).stdout), "/work/sub\n");
    // Never the session's directory, which is wherever the model moved the shell: it
    // would make any host directory the shell reached the next call's (writable) workspace.
    for (agent, project_dir) in [
        ("claude-code", None),
        ("claude-code", Some(Path::new(""))),
        ("codex", None),
        ("codex", Some(setup.workspace.as_path())),
    ] {
        let reason = denied(&hook(agent, &sub, project_dir));
        assert!(
            reason.contains("no workspace") && reason.contains("--workspace DIR"),
            "{agent} {project_dir:?}: {reason}"
        );
    }
    let reason = denied(&hook(
        "claude-code",
        Path::new("/usr/local/bin"),
        Some(&setup.workspace),
    ));
    assert!(reason.contains("outside every directory"), "{reason}");
}

#[test]
fn a_policy_or_log_the_sandbox_could_write_is_refused() {
    let mut setup = Setup::new(&shell_policy("rw", ""));
    let inside = setup.workspace.join("tools.toml");
    std::fs::copy(&setup.policy, &inside).unwrap();
    let outside = std::mem::replace(&mut setup.policy, inside);
    let reason = denied(&setup.pre(&setup.workspace, "ls"));
    assert!(
        reason.contains("the policy") && reason.contains("mounts writable"),
        "{reason}"
    );
    setup.policy = outside;
    setup.audit = setup.workspace.join("sub/audit.jsonl");
    let reason = denied(&setup.pre(&setup.workspace, "ls"));
    assert!(
        reason.contains("the audit log") && reason.contains("mounts writable"),
        "{reason}"
    );
    // Read-only, the workspace may hold both.
    let mut setup = Setup::shell();
    let inside = setup.workspace.join("tools.toml");
    std::fs::copy(&setup.policy, &inside).unwrap();
    setup.policy = inside;
    setup.rewrite(&setup.workspace, "ls");
}

/// Runs `script` in `cwd` with both shells the agents use, `sh` (dash here) and bash,
/// with `env` added to the environment.
fn both_shells(cwd: &Path, script: &str, env: &[(&str, &Path)]) -> Vec<(&'static str, Output)> {
    ["/bin/sh", "bash"]
        .into_iter()
        .map(|shell| {
            let out = Command::new(shell)
                .arg("-c")
                .arg(script)
                .current_dir(cwd)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            (shell, out)
        })
        .collect()
}

/// The last line `script` printed in each shell: `pwd -P` after the rewritten command
/// shows where the agent's shell is for its next call.
fn last_line(out: &Output) -> String {
    text(&out.stdout).lines().last().unwrap_or("").to_string()
}

/// The attack: a symlink planted by an earlier sandboxed call (`a -> d1/d2/...`, deeper
/// than the workspace is from `/`) makes `a/..` repeated `/` to the shell, which resolves
/// `..` logically, and a directory inside the workspace to anything that resolves the
/// symlink first. The shell must end where the hook checked, never in the host's
/// `/usr/local/bin`.
#[test]
fn a_symlink_and_dotdot_cannot_walk_the_shell_out_of_the_workspace() {
    let setup = Setup::shell();
    let ws = &setup.workspace;
    let depth = ws.components().count() - 1;
    let chain: Vec<String> = (1..=depth + 2).map(|i| format!("d{i}")).collect();
    std::fs::create_dir_all(ws.join(chain.join("/"))).unwrap();
    std::os::unix::fs::symlink(chain.join("/"), ws.join("a")).unwrap();
    let up = format!("a{}", "/..".repeat(depth + 1));
    let landed = ws.join("d1");
    let command = format!("cd {up} && cd usr/local/bin && pwd");
    // What the shell itself makes of it: the host's /usr/local/bin.
    let direct = agent_shell(ws, &format!("{command} -P"));
    assert_eq!(text(&direct.stdout), "/usr/local/bin\n", "{direct:?}");

    let rewritten = setup.rewrite(ws, &command);
    let host_cd = format!("cd -P -- '{}' && ", landed.display());
    assert!(rewritten.starts_with(&host_cd), "{rewritten}");
    // `usr/local/bin` is not in the workspace's d1: that cd and the rest run sandboxed.
    assert_eq!(rewritten.matches("cd -P").count(), 1, "{rewritten}");
    for (shell, out) in both_shells(ws, &format!("{rewritten}\npwd -P"), &[]) {
        assert_eq!(
            text(&out.stdout),
            format!("{}\n", landed.display()),
            "{shell}: {out:?}"
        );
    }
    // One cd through the symlink to a directory the workspace lacks: all of it sandboxed.
    let rewritten = setup.rewrite(ws, &format!("cd {up}/usr/local/bin; pwd"));
    assert!(!rewritten.starts_with("cd "), "{rewritten}");
    for (shell, out) in both_shells(ws, &format!("{rewritten}\npwd -P"), &[]) {
        assert_eq!(
            last_line(&out),
            ws.display().to_string(),
            "{shell}: {out:?}"
        );
    }

    // With the directory in the workspace, both cds stay on the host, and the shell lands
    // exactly where the hook checked: the next call's directory maps into the sandbox.
    let inside = landed.join("usr/local/bin");
    std::fs::create_dir_all(&inside).unwrap();
    let rewritten = setup.rewrite(ws, &command);
    let host_cds = format!(
        "cd -P -- '{}' && cd -P -- '{}' && ",
        landed.display(),
        inside.display()
    );
    assert!(rewritten.starts_with(&host_cds), "{rewritten}");
    for (shell, out) in both_shells(ws, &format!("{rewritten}\npwd -P"), &[]) {
        assert_eq!(
            text(&out.stdout),
            format!("/work/d1/usr/local/bin\n{}\n", inside.display()),
            "{shell}: {out:?}"
        );
    }
    // A cd out of the workspace through the symlink is still denied.
    let reason = denied(&setup.pre(ws, &format!("cd a/{} && ls", "../".repeat(depth + 3))));
    assert!(reason.contains("leaves the workspace"), "{reason}");
}

/// A `cd` the hook cannot check (its directory does not exist yet, or is a file) ends the
/// host side: it and every later `cd` run in the sandbox, even if the directory appears
/// before the command runs (a concurrent sandboxed call, a stale session directory).
#[test]
fn a_cd_the_hook_cannot_check_runs_sandboxed_with_all_after_it() {
    let setup = Setup::shell();
    let ws = &setup.workspace;
    let sub = ws.join("sub");
    for command in [
        "cd later && cd /etc && pwd",
        "cd later; cd /etc; pwd",
        "cd sub/file.txt && cd /etc && pwd",
        "cd sub/file.txt; cd /etc",
    ] {
        let rewritten = setup.rewrite(ws, command);
        assert!(!rewritten.starts_with("cd "), "{command:?}: {rewritten}");
        std::fs::create_dir_all(ws.join("later")).unwrap();
        for (shell, out) in both_shells(ws, &format!("{rewritten}\npwd -P"), &[]) {
            assert_eq!(
                last_line(&out),
                ws.display().to_string(),
                "{shell} {command:?}: {out:?}"
            );
        }
        std::fs::remove_dir(ws.join("later")).unwrap();
    }
    // The cds before it stay on the host; from it on, the sandbox.
    let rewritten = setup.rewrite(ws, "cd sub && cd later && cd /etc && pwd");
    let host_cd = format!("cd -P -- '{}' && ", sub.display());
    assert!(rewritten.starts_with(&host_cd), "{rewritten}");
    assert_eq!(rewritten.matches("cd -P").count(), 1, "{rewritten}");
    std::fs::create_dir_all(sub.join("later")).unwrap();
    for (shell, out) in both_shells(ws, &format!("{rewritten}\npwd -P"), &[]) {
        assert_eq!(
            last_line(&out),
            sub.display().to_string(),
            "{shell}: {out:?}"
        );
    }
}

/// An exported `CDPATH` in the agent's shell does not redirect a checked `cd`.
#[test]
fn cdpath_cannot_redirect_a_cd() {
    let setup = Setup::shell();
    let ws = &setup.workspace;
    let elsewhere = setup.root.join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("sub")).unwrap();
    let env = [("CDPATH", elsewhere.as_path())];
    // What CDPATH does to a plain `cd sub` in these shells.
    for (shell, out) in both_shells(ws, "cd sub >/dev/null && pwd -P", &env) {
        assert_eq!(
            last_line(&out),
            elsewhere.join("sub").display().to_string(),
            "{shell}: {out:?}"
        );
    }
    let sub = ws.join("sub");
    for command in ["cd sub && pwd", "cd sub"] {
        let rewritten = setup.rewrite(ws, command);
        for (shell, out) in both_shells(ws, &format!("{rewritten}\npwd -P"), &env) {
            let expected = match command {
                "cd sub" => format!("{}\n", sub.display()),
                _ => format!("/work/sub\n{}\n", sub.display()),
            };
            assert_eq!(text(&out.stdout), expected, "{shell} {command:?}: {out:?}");
        }
    }
}

/// sh splits on space, tab and newline only: a vertical tab, form feed, carriage return or
/// no-break space after `cd DIR &&` is the command that `&&` runs (sandboxed), not nothing;
/// the rewritten command never ends in a dangling `&&`.
#[test]
fn only_what_sh_skips_is_blank() {
    let setup = Setup::shell();
    let ws = &setup.workspace;
    for blank in ["\x0b", "\x0c", "\r", "\u{a0}"] {
        let rewritten = setup.rewrite(ws, &format!("cd sub && {blank}"));
        assert!(rewritten.contains(" hook exec "), "{blank:?}: {rewritten}");
        assert!(
            !rewritten.trim_end().ends_with("&&"),
            "{blank:?}: {rewritten}"
        );
        for (shell, out) in both_shells(ws, &rewritten, &[]) {
            // The sandboxed sh found no such command.
            assert_eq!(out.status.code(), Some(127), "{shell} {blank:?}: {out:?}");
            assert!(text(&out.stderr).contains("not found"), "{shell}: {out:?}");
        }
    }
}
