//! Runs one tool call the model asked for: checks its arguments against the tool's
//! parameters, then runs one `nanoclaw run --json` child (`nanoclaw_pool`), which is the whole sandbox (it
//! writes the audit records and applies the writes). The model chooses only the tool's
//! name and the arguments its parameters accept: never an option of `run`, never a path.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use nanoclaw_policy::Tool;
use nanoclaw_pool::{Launcher, Pool};
use serde_json::Value;

use crate::msg::{ToolCall, ToolResult};

/// What the model gets back at most from one call.
const MAX_RESULT_CHARS: usize = 64 * 1024;

/// How tool calls are run: a pre-built `nanoclaw run` child from the pool when one waits,
/// else one started for the call (`nanoclaw_pool`).
pub struct Runner {
    pub launcher: Arc<Launcher>,
    pub pool: Pool,
}

/// One finished call.
pub struct Ran {
    pub result: ToolResult,
    /// `seq` of the run's `invocation.start` record and its invocation id.
    pub audit_seq: Option<u64>,
    pub invocation: Option<String>,
    pub exit_status: Option<i64>,
    /// Wall time of the `nanoclaw run` child, and of the sandbox inside it.
    pub child_ms: f64,
    pub sandbox_ms: Option<u64>,
}

impl Runner {
    pub fn run(&self, tools: &[Tool], call: &ToolCall) -> Ran {
        let refused = |content: String| Ran {
            result: ToolResult {
                id: call.id.clone(),
                content,
                is_error: true,
            },
            audit_seq: None,
            invocation: None,
            exit_status: None,
            child_ms: 0.0,
            sandbox_ms: None,
        };
        let Some(tool) = tools.iter().find(|t| t.name == call.name) else {
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            return refused(format!(
                "there is no tool named `{}`; the tools are: {}",
                call.name,
                names.join(", ")
            ));
        };
        let arguments = match serde_json::from_str::<Value>(&call.arguments) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return refused(format!(
                    "the arguments of `{}` must be a JSON object, got {}",
                    call.name,
                    kind_of(&other)
                ))
            }
            Err(error) => {
                return refused(format!(
                    "the arguments of `{}` are not valid JSON ({error}); send one JSON object",
                    call.name
                ))
            }
        };
        if let Err(error) = tool.bind(&arguments) {
            return refused(format!(
                "invalid arguments for tool `{}`: {error}",
                call.name
            ));
        }
        let params = Value::Object(arguments).to_string();
        let started = Instant::now();
        let child = match self.pool.take(&call.name) {
            Some(child) => Ok(child),
            None => self.launcher.spawn(&call.name),
        };
        let mut child = match child {
            Ok(child) => child,
            Err(error) => {
                return refused(format!(
                    "could not start {}: {error}",
                    self.launcher.exe.display()
                ))
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            // Small (bind checked it fits an argument); the child reads it first.
            let _ = stdin.write_all(params.as_bytes());
        }
        let output = match child.wait_with_output() {
            Ok(output) => output,
            Err(error) => return refused(format!("could not wait for the sandbox: {error}")),
        };
        let child_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut ran = outcome(
            &call.id,
            &output.stdout,
            &output.stderr,
            output.status.code(),
        );
        ran.child_ms = child_ms;
        ran
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn outcome(id: &str, stdout: &[u8], stderr: &[u8], code: Option<i32>) -> Ran {
    let mut ran = Ran {
        result: ToolResult {
            id: id.to_owned(),
            content: String::new(),
            is_error: true,
        },
        audit_seq: None,
        invocation: None,
        exit_status: code.map(i64::from),
        child_ms: 0.0,
        sandbox_ms: None,
    };
    let Ok(json) = serde_json::from_slice::<Value>(stdout) else {
        let notices = String::from_utf8_lossy(stderr);
        ran.result.content = format!(
            "the sandbox runner failed (exit {}): {}",
            code.map_or("by signal".into(), |c| c.to_string()),
            cap(notices.trim())
        );
        return ran;
    };
    ran.audit_seq = json.pointer("/audit/seq").and_then(Value::as_u64);
    ran.invocation = json
        .pointer("/audit/invocation")
        .and_then(Value::as_str)
        .map(str::to_owned);
    ran.sandbox_ms = json.get("duration_ms").and_then(Value::as_u64);
    if let Some(error) = json.get("error").and_then(Value::as_str) {
        ran.result.content = format!("refused: {error}");
        return ran;
    }
    let text = |key: &str| {
        json.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let status = json.get("exit_status").and_then(Value::as_i64);
    ran.exit_status = status;
    let (out, err) = (text("stdout"), text("stderr"));
    let mut content = String::new();
    if status != Some(0) {
        let mut why = format!("exit status {}", status.unwrap_or(-1));
        if json.get("timed_out").and_then(Value::as_bool) == Some(true) {
            why.push_str(" (timed out)");
        }
        if json.get("oom_killed").and_then(Value::as_bool) == Some(true) {
            why.push_str(" (out of memory)");
        }
        content.push_str(&why);
        content.push('\n');
    }
    content.push_str(&out);
    if json.get("stdout_truncated").and_then(Value::as_bool) == Some(true) {
        content.push_str("\n[stdout truncated by the sandbox's output limit]");
    }
    if !err.is_empty() {
        content.push_str("\n[stderr]\n");
        content.push_str(&err);
    }
    ran.result.content = cap(&content);
    ran.result.is_error = status != Some(0);
    ran
}

fn cap(text: &str) -> String {
    if text.len() <= MAX_RESULT_CHARS {
        return text.to_owned();
    }
    let mut end = MAX_RESULT_CHARS;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[... {} more bytes cut]",
        &text[..end],
        text.len() - end
    )
}
