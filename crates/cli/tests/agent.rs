//! `nanoclaw agent`, black-box: a fake provider (a real HTTP server in the test) replays
//! recorded Anthropic Messages and OpenAI chat-completions response shapes, streamed and
//! not, and the agent runs every tool call the model asks for in a real sandbox.

// A test helper should stop at the first unexpected error and show it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_nanoclaw");

/// One scripted HTTP answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

fn json_answer(body: Value) -> Answer {
    Answer {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string(),
    }
}

fn sse_answer(events: &[(Option<&str>, Value)], done: bool) -> Answer {
    let mut body = String::new();
    for (name, data) in events {
        if let Some(name) = name {
            body.push_str(&format!("event: {name}\n"));
        }
        body.push_str(&format!("data: {data}\n\n"));
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    Answer {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        body,
    }
}

fn status_answer(status: u16, headers: &[(&str, &str)], body: Value) -> Answer {
    Answer {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("content-type".to_string(), "application/json".to_string())])
            .collect(),
        body: body.to_string(),
    }
}

/// One request the fake provider got: path, headers (lowercase names), JSON body.
type Seen = (String, Vec<(String, String)>, Value);

/// The fake provider: answers requests in order from its script, records each request.
struct Fake {
    url: String,
    requests: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn start(script: Vec<Answer>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    continue;
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let mut headers = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (k, v) = line.split_once(':').unwrap();
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                    if k == "content-length" {
                        length = v.parse().unwrap();
                    }
                    headers.push((k, v));
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push((path, headers, body));
                let answer = script.lock().unwrap().pop_front().unwrap_or_else(|| {
                    status_answer(500, &[], json!({"error": {"message": "script exhausted"}}))
                });
                let mut out = stream;
                let mut head = format!("HTTP/1.1 {} X\r\n", answer.status);
                for (k, v) in &answer.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str(&format!(
                    "content-length: {}\r\nconnection: close\r\n\r\n",
                    answer.body.len()
                ));
                let _ = out.write_all(head.as_bytes());
                let _ = out.write_all(answer.body.as_bytes());
            }
        });
        Fake { url, requests }
    }

    fn bodies(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.2.clone())
            .collect()
    }
}

/// A workspace, a shell-tool policy writing to it, a state dir, an audit log.
struct Setup {
    _scratch: tempfile::TempDir,
    workspace: PathBuf,
    policy: PathBuf,
    audit: PathBuf,
    state: PathBuf,
}

const POLICY: &str = r#"
[tools.shell]
description = "run a shell command in the workspace"
command = ["sh", "-c", "{command}"]
workdir = "/work"
[tools.shell.params.command]
type = "string"
description = "the command line"
required = true
[[tools.shell.mounts]]
host = "${workspace}"
path = "/work"
mode = "rw"
"#;

impl Setup {
    fn new() -> Setup {
        let scratch = tempfile::Builder::new()
            .prefix("nanoclaw-agent-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let root = scratch.path().canonicalize().unwrap();
        let workspace = root.join("ws");
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::write(workspace.join("hello.txt"), "hi\n").unwrap();
        std::fs::write(workspace.join("NANOCLAW.md"), "Always be brief.\n").unwrap();
        for dir in [&root, &workspace] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        give_to_sandbox_user(&workspace);
        let policy = root.join("tools.toml");
        std::fs::write(&policy, POLICY).unwrap();
        Setup {
            audit: root.join("audit.jsonl"),
            state: root.join("state"),
            _scratch: scratch,
            workspace,
            policy,
        }
    }

    fn agent(&self, fake: &Fake, provider: &str, extra: &[&str]) -> Output {
        let base = match provider {
            "openai" => format!("{}/v1", fake.url),
            _ => fake.url.clone(),
        };
        Command::new(BIN)
            .args(["agent", "--policy"])
            .arg(&self.policy)
            .arg("--workspace")
            .arg(&self.workspace)
            .arg("--audit")
            .arg(&self.audit)
            .args([
                "--provider",
                provider,
                "--model",
                "test-model",
                "--base-url",
                &base,
            ])
            .args(extra)
            .env("XDG_STATE_HOME", &self.state)
            .env("XDG_CONFIG_HOME", self.state.join("config"))
            .env("ANTHROPIC_API_KEY", "sk-ant-SECRET-test-key")
            .env("OPENAI_API_KEY", "sk-SECRET-test-key")
            .output()
            .unwrap()
    }

    fn audit_list(&self, conversation: &str) -> Vec<Value> {
        let out = Command::new(BIN)
            .args(["audit", "--audit"])
            .arg(&self.audit)
            .args(["list", "--json", "--conversation", conversation])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The sandbox runs as uid 10001; as root, the workspace is handed to it (as the
/// runner's own write tests do) and its files come back owned by it, never by root.
const SANDBOX_UID: u32 = 10001;

fn give_to_sandbox_user(path: &std::path::Path) {
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(path, Some(SANDBOX_UID), Some(SANDBOX_UID)).unwrap();
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                give_to_sandbox_user(&entry.unwrap().path());
            }
        }
    }
}

fn expected_host_owner() -> u32 {
    match rustix::process::geteuid().as_raw() {
        0 => SANDBOX_UID,
        me => me,
    }
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn anthropic_tool_turn(calls: &[(&str, Value)]) -> Answer {
    let mut events = vec![(
        Some("message_start"),
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "content": [], "model": "test-model", "stop_reason": null,
            "usage": {"input_tokens": 50, "output_tokens": 1}}}),
    )];
    events.push((
        Some("content_block_start"),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    events.push((
        Some("content_block_delta"),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me look."}}),
    ));
    events.push((
        Some("content_block_stop"),
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((Some("ping"), json!({"type": "ping"})));
    for (i, (id, input)) in calls.iter().enumerate() {
        let index = i + 1;
        events.push((
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": index, "content_block":
                {"type": "tool_use", "id": id, "name": "shell", "input": {}}}),
        ));
        // The input arrives in pieces, as the API streams it.
        let text = input.to_string();
        let (a, b) = text.split_at(text.len() / 2);
        for piece in [a, b] {
            events.push((
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push((
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push((
        Some("message_delta"),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"output_tokens": 30}}),
    ));
    events.push((Some("message_stop"), json!({"type": "message_stop"})));
    sse_answer(&events, false)
}

fn anthropic_final(text: &str) -> Answer {
    json_answer(json!({
        "id": "msg_2", "type": "message", "role": "assistant", "model": "test-model",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 80, "output_tokens": 5}
    }))
}

/// Tool results sent back in the request, by tool_use_id (Anthropic shape).
fn anthropic_results(body: &Value) -> Vec<(String, String, bool)> {
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    last["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| {
            (
                b["tool_use_id"].as_str().unwrap().to_string(),
                b["content"].as_str().unwrap().to_string(),
                b["is_error"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// End to end, Anthropic streamed: the model lists the workspace and writes a file in
/// parallel, runs a test command, answers; the file is the caller's; the audit log holds
/// every step linked to the conversation; `--resume` continues with the history.
#[test]
fn anthropic_streamed_task_runs_tools_in_sandboxes_and_resumes() {
    let setup = Setup::new();
    let fake = Fake::start(vec![
        anthropic_tool_turn(&[
            ("toolu_ls", json!({"command": "ls"})),
            (
                "toolu_write",
                json!({"command": "echo made-by-agent > out.txt"}),
            ),
        ]),
        anthropic_tool_turn(&[(
            "toolu_test",
            json!({"command": "test -f out.txt && cat out.txt && id -u"}),
        )]),
        anthropic_final("All done."),
        anthropic_final("Resumed fine."),
    ]);
    let out = setup.agent(&fake, "anthropic", &["--json", "make out.txt"]);
    assert!(out.status.success(), "{}", describe(&out));
    let events = events(&out);
    let id = events[0]["conversation_id"].as_str().unwrap().to_string();
    assert!(events.iter().all(|e| e["conversation_id"] == id.as_str()));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "final");
    assert_eq!(last["text"], "All done.");
    assert_eq!(
        events.iter().filter(|e| e["type"] == "tool_call").count(),
        3
    );

    // The file exists, written through the sandbox, owned by the caller.
    let made = setup.workspace.join("out.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "made-by-agent\n");
    let owner = std::fs::metadata(&made).unwrap().uid();
    assert_eq!(owner, expected_host_owner());
    assert_ne!(owner, 0);

    // What the model was sent.
    let bodies = fake.bodies();
    assert_eq!(bodies.len(), 3);
    let first = &bodies[0];
    assert_eq!(first["model"], "test-model");
    assert_eq!(first["stream"], true);
    assert!(first["system"]
        .as_str()
        .unwrap()
        .contains("Always be brief."));
    assert_eq!(first["tools"][0]["name"], "shell");
    assert_eq!(
        first["tools"][0]["input_schema"]["required"],
        json!(["command"])
    );
    let results = anthropic_results(&bodies[1]);
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].0, "toolu_ls");
    assert!(results[0].1.contains("hello.txt"), "{results:?}");
    assert!(!results[0].2 && !results[1].2, "{results:?}");
    let results = anthropic_results(&bodies[2]);
    assert!(results[0].1.starts_with("made-by-agent\n"), "{results:?}");
    // The key went in a header only.
    let headers = fake.requests.lock().unwrap()[0].1.clone();
    assert!(headers
        .iter()
        .any(|(k, v)| k == "x-api-key" && v == "sk-ant-SECRET-test-key"));

    // The audit log tells the whole story.
    let records = setup.audit_list(&id);
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "agent.model").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "agent.tool").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "invocation.start").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "invocation.end").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"agent.end"));
    for tool in records.iter().filter(|r| r["kind"] == "agent.tool") {
        let seq = tool["data"]["seq"].as_u64().unwrap();
        let start = records.iter().find(|r| r["seq"] == seq).unwrap();
        assert_eq!(start["kind"], "invocation.start");
        assert_eq!(start["data"]["invocation_id"], tool["data"]["invocation"]);
    }
    let model = records.iter().find(|r| r["kind"] == "agent.model").unwrap();
    assert_eq!(model["data"]["provider"], "anthropic");
    assert_eq!(model["data"]["stop_reason"], "tool_use");
    assert_eq!(model["data"]["tool_calls"].as_array().unwrap().len(), 2);
    assert!(!std::fs::read_to_string(&setup.audit)
        .unwrap()
        .contains("SECRET"));

    // --list shows it; --resume continues with the whole history.
    let list = Command::new(BIN)
        .args(["agent", "--list"])
        .env("XDG_STATE_HOME", &setup.state)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
    let db = setup.state.join("nanoclaw/agent.db");
    assert_eq!(std::fs::metadata(&db).unwrap().mode() & 0o777, 0o600);
    let out = setup.agent(&fake, "anthropic", &["--json", "--resume", &id, "and now?"]);
    assert!(out.status.success(), "{}", describe(&out));
    let bodies = fake.bodies();
    let resumed = &bodies[3]["messages"];
    assert_eq!(resumed[0]["content"], "make out.txt");
    assert_eq!(
        resumed.as_array().unwrap().last().unwrap()["content"],
        "and now?"
    );
    assert_eq!(resumed.as_array().unwrap().len(), 7);
}

/// OpenAI shape, not streamed: 429 then success; malformed argument JSON, an unknown
/// tool and a call its parameters refuse all go back as error results, never a crash.
#[test]
fn openai_errors_go_back_to_the_model() {
    let setup = Setup::new();
    let calls = json!({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\": \"ls"}},
                {"id": "c2", "type": "function", "function": {"name": "rm_rf", "arguments": "{}"}},
                {"id": "c3", "type": "function", "function": {"name": "shell", "arguments": "{\"cmd\": \"ls\"}"}},
                {"id": "c4", "type": "function", "function": {"name": "shell", "arguments": "{\"command\": \"exit 3\"}"}}
            ]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    });
    let fake = Fake::start(vec![
        status_answer(
            429,
            &[("retry-after", "0")],
            json!({"error": {"message": "slow down"}}),
        ),
        json_answer(calls),
        json_answer(json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "I could not."}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2}})),
    ]);
    let out = setup.agent(&fake, "openai", &["--no-stream", "--json", "try things"]);
    assert!(out.status.success(), "{}", describe(&out));
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[1].0, "/v1/chat/completions");
    assert!(requests[1]
        .1
        .iter()
        .any(|(k, v)| k == "authorization" && v == "Bearer sk-SECRET-test-key"));
    let messages = requests[2].2["messages"].as_array().unwrap().clone();
    let tool: Vec<&Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool.len(), 4);
    let content = |i: usize| tool[i]["content"].as_str().unwrap().to_string();
    assert!(content(0).contains("not valid JSON"), "{}", content(0));
    assert!(
        content(1).contains("no tool named `rm_rf`"),
        "{}",
        content(1)
    );
    assert!(content(2).contains("cmd"), "{}", content(2));
    assert!(
        content(3).starts_with("ERROR: exit status 3"),
        "{}",
        content(3)
    );
    assert_eq!(events(&out).last().unwrap()["text"], "I could not.");
}

/// OpenAI shape, streamed: parallel tool calls in pieces run in parallel sandboxes.
#[test]
fn openai_streamed_parallel_calls() {
    let setup = Setup::new();
    let chunk = |delta: Value, finish: Value| {
        (
            None,
            json!({"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let turn = sse_answer(
        &[
            chunk(json!({"role": "assistant", "content": null}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "shell", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\": \"sleep 1; echo A\"}"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "b", "type": "function", "function": {"name": "shell", "arguments": "{\"command\": "}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "function": {"arguments": "\"sleep 1; echo B\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            (
                None,
                json!({"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9}}),
            ),
        ],
        true,
    );
    let done = sse_answer(
        &[
            chunk(json!({"content": "A and "}), Value::Null),
            chunk(json!({"content": "B"}), json!("stop")),
        ],
        true,
    );
    let fake = Fake::start(vec![turn, done]);
    let started = std::time::Instant::now();
    let out = setup.agent(&fake, "openai", &["--json", "both"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", describe(&out));
    let messages = fake.bodies()[1]["messages"].as_array().unwrap().clone();
    let tool: Vec<&Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool[0]["tool_call_id"], "a");
    assert_eq!(tool[0]["content"], "A\n");
    assert_eq!(tool[1]["content"], "B\n");
    // Two one-second calls in parallel, not one after the other.
    assert!(took < std::time::Duration::from_millis(1900), "{took:?}");
    let events = events(&out);
    assert_eq!(events.last().unwrap()["text"], "A and B");
    let usage = events.iter().find(|e| e["type"] == "usage").unwrap();
    assert_eq!(usage["input_tokens"], 7);
}

/// 401: a clear error naming provider, model and base URL, never the key; exit 125.
#[test]
fn unauthorized_is_a_clear_error_without_the_key() {
    let setup = Setup::new();
    let fake = Fake::start(vec![status_answer(
        401,
        &[],
        json!({"type": "error", "error": {"type": "authentication_error",
            "message": "invalid x-api-key sk-ant-SECRET-test-key"}}),
    )]);
    let out = setup.agent(&fake, "anthropic", &["hello"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("anthropic"), "{stderr}");
    assert!(stderr.contains("test-model"), "{stderr}");
    assert!(stderr.contains(&fake.url), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains("SECRET"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SECRET"));
}

/// max_tokens ends the task with a stated reason (exit 3); so does --max-turns.
#[test]
fn limits_end_the_task_with_a_reason() {
    let setup = Setup::new();
    let fake = Fake::start(vec![json_answer(json!({
        "id": "m", "type": "message", "role": "assistant", "model": "test-model",
        "content": [{"type": "text", "text": "This answer is cut"}],
        "stop_reason": "max_tokens", "usage": {"input_tokens": 5, "output_tokens": 4096}
    }))]);
    let out = setup.agent(
        &fake,
        "anthropic",
        &["--json", "--no-stream", "write a lot"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let last = events(&out).last().unwrap().clone();
    assert!(
        last["reason"].as_str().unwrap().contains("max_tokens"),
        "{last}"
    );

    let fake = Fake::start(vec![anthropic_tool_turn(&[(
        "t1",
        json!({"command": "true"}),
    )])]);
    let out = setup.agent(&fake, "anthropic", &["--json", "--max-turns", "1", "loop"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let last = events(&out).last().unwrap().clone();
    assert!(
        last["reason"].as_str().unwrap().contains("--max-turns 1"),
        "{last}"
    );
}

/// pause_turn: the paused answer is sent back as is and the model continues; 529
/// (overloaded) and an overloaded error inside a stream are retried.
#[test]
fn pause_turn_continues_and_overload_is_retried() {
    let setup = Setup::new();
    let overloaded =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let fake = Fake::start(vec![
        status_answer(529, &[("retry-after", "0")], overloaded.clone()),
        sse_answer(&[(Some("error"), overloaded)], false),
        json_answer(json!({
            "id": "m1", "type": "message", "role": "assistant", "model": "test-model",
            "content": [{"type": "text", "text": "Still working"}],
            "stop_reason": "pause_turn", "usage": {"input_tokens": 5, "output_tokens": 5}
        })),
        anthropic_final("Finished after the pause."),
    ]);
    let out = setup.agent(&fake, "anthropic", &["--json", "long task"]);
    assert!(out.status.success(), "{}", describe(&out));
    let bodies = fake.bodies();
    assert_eq!(bodies.len(), 4);
    let messages = bodies[3]["messages"].as_array().unwrap();
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "assistant");
    assert_eq!(last["content"][0]["text"], "Still working");
    assert_eq!(
        events(&out).last().unwrap()["text"],
        "Finished after the pause."
    );
}

/// Old tool output is truncated with a note once the history is over the budget.
#[test]
fn long_histories_are_compacted() {
    let setup = Setup::new();
    let fake = Fake::start(vec![
        anthropic_tool_turn(&[(
            "big",
            json!({"command": "head -c 3000 /dev/zero | tr '\\\\0' x"}),
        )]),
        anthropic_tool_turn(&[("small", json!({"command": "echo small"}))]),
        anthropic_final("ok"),
    ]);
    let out = setup.agent(
        &fake,
        "anthropic",
        &["--json", "--context-budget", "1000", "fill it"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let bodies = fake.bodies();
    let first = anthropic_results(&bodies[1]);
    assert_eq!(first[0].1.len(), 3000, "{first:?}");
    let messages = bodies[2]["messages"].as_array().unwrap();
    let old = messages[2]["content"][0]["content"].as_str().unwrap();
    assert!(old.contains("truncated by nanoclaw"), "{old}");
    assert!(old.len() < 400, "{old}");
    assert_eq!(anthropic_results(&bodies[2])[0].1, "small\n");
}

/// Without a task: an interactive session; each line is a task of one conversation,
/// end of input ends it.
#[test]
fn interactive_session_keeps_one_conversation() {
    let setup = Setup::new();
    let fake = Fake::start(vec![
        anthropic_final("first answer"),
        anthropic_final("second answer"),
    ]);
    let mut child = Command::new(BIN)
        .args(["agent", "--json", "--policy"])
        .arg(&setup.policy)
        .arg("--workspace")
        .arg(&setup.workspace)
        .arg("--audit")
        .arg(&setup.audit)
        .args([
            "--provider",
            "anthropic",
            "--model",
            "m",
            "--base-url",
            &fake.url,
        ])
        .env("XDG_STATE_HOME", &setup.state)
        .env("ANTHROPIC_API_KEY", "k")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\n\ntwo\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let finals: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["type"] == "final")
        .collect();
    assert_eq!(finals.len(), 2);
    assert_eq!(finals[0]["conversation_id"], finals[1]["conversation_id"]);
    let bodies = fake.bodies();
    assert_eq!(bodies[1]["messages"].as_array().unwrap().len(), 3);
}

/// Ctrl-C in an interactive session (SIGINT to the terminal's process group): the
/// running tool ends, then the turn ends with a stated reason, and the session goes on.
#[test]
fn ctrl_c_cancels_the_running_tool_then_the_turn() {
    use std::os::unix::process::CommandExt;
    let setup = Setup::new();
    let fake = Fake::start(vec![
        anthropic_tool_turn(&[("slow", json!({"command": "sleep 30"}))]),
        anthropic_final("never asked for"),
    ]);
    let mut child = Command::new(BIN)
        .args(["agent", "--json", "--policy"])
        .arg(&setup.policy)
        .arg("--workspace")
        .arg(&setup.workspace)
        .arg("--audit")
        .arg(&setup.audit)
        .args([
            "--provider",
            "anthropic",
            "--model",
            "m",
            "--base-url",
            &fake.url,
        ])
        .env("XDG_STATE_HOME", &setup.state)
        .env("ANTHROPIC_API_KEY", "k")
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"wait a while\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2000));
    let started = std::time::Instant::now();
    let group = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{}",
        describe(&out)
    );
    assert!(out.status.success(), "{}", describe(&out));
    let events = events(&out);
    let result = events.iter().find(|e| e["type"] == "tool_result").unwrap();
    assert_eq!(result["is_error"], true, "{result}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "final");
    assert!(
        last["reason"].as_str().unwrap().contains("Ctrl-C"),
        "{last}"
    );
    assert_eq!(fake.bodies().len(), 1);
}

/// With a pool (and without), every tool call runs in a sandbox of its own: a later call
/// sees an empty /tmp, each call has its own audit start; nothing is left once the agent
/// ends.
#[test]
fn pooled_calls_each_get_a_fresh_sandbox_and_leave_nothing() {
    let setup = Setup::new();
    for pool in ["1", "0"] {
        let turn = |id: &str, n: u32| {
            anthropic_tool_turn(&[(
                id,
                json!({"command": format!("ls -A /tmp; echo {n} > /tmp/mark; cat /tmp/mark")}),
            )])
        };
        let fake = Fake::start(vec![
            turn("t1", 1),
            turn("t2", 2),
            turn("t3", 3),
            anthropic_final("done"),
        ]);
        let starts_before = audit_kind(&setup, "invocation.start");
        let out = setup.agent(
            &fake,
            "anthropic",
            &["--json", "--pool", pool, "mark tmp three times"],
        );
        assert!(out.status.success(), "--pool {pool}: {}", describe(&out));
        let results: Vec<Value> = events(&out)
            .into_iter()
            .filter(|e| e["type"] == "tool_result")
            .collect();
        assert_eq!(results.len(), 3, "--pool {pool}: {}", describe(&out));
        for (i, result) in results.iter().enumerate() {
            assert_eq!(result["is_error"], false, "{result}");
            assert_eq!(
                result["content"].as_str().unwrap(),
                format!("{}\n", i + 1),
                "an empty /tmp each call (--pool {pool}): {result}"
            );
        }
        let mut seqs: Vec<u64> = results
            .iter()
            .map(|r| r["audit_seq"].as_u64().unwrap())
            .collect();
        seqs.dedup();
        assert_eq!(seqs.len(), 3, "{results:?}");
        // Exactly one start per call: the pre-built runners that served none recorded none.
        assert_eq!(
            audit_kind(&setup, "invocation.start") - starts_before,
            3,
            "--pool {pool}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if pool == "0" {
            assert!(stderr.contains("pool: off"), "{stderr}");
        }
        let marker = setup.policy.display().to_string();
        let since = std::time::Instant::now();
        loop {
            let left = processes_with(&marker);
            if left.is_empty() {
                break;
            }
            assert!(
                since.elapsed() < std::time::Duration::from_secs(5),
                "left behind by the agent: {left:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn audit_kind(setup: &Setup, kind: &str) -> usize {
    std::fs::read_to_string(&setup.audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == kind)
        .count()
}

/// Processes whose command line contains `token`.
fn processes_with(token: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(token)
            && entry.file_name().to_string_lossy() != std::process::id().to_string()
        {
            found.push(cmdline);
        }
    }
    found
}
