//! PostToolUse: what a call returned, recorded in the audit log as a `hook.post` record.
//!
//! The record names the call (agent, session, tool, tool-use id) and what the agent reports
//! of its end (exit code, duration, interrupted) where it reports it; the output only by size
//! and sha256. This module must never write the output's text, or the tool input, to the log.

use nanoclaw_audit::OutputDigest;
use serde_json::{json, Map, Value};

use crate::agent::{Agent, Event};

/// The `hook.post` record's data for one PostToolUse event.
pub fn record(agent: Agent, event: &Event) -> Value {
    let mut data = json!({ "agent": agent.name() });
    merge(&mut data, event.ids());
    let response = event.payload.get("tool_response");
    let mut outcome = Map::new();
    if let Some(Value::Object(fields)) = response {
        for (key, name) in [
            ("exit_code", "exit_code"),
            ("exitCode", "exit_code"),
            ("returnCode", "exit_code"),
            ("duration_ms", "duration_ms"),
            ("durationMs", "duration_ms"),
            ("interrupted", "interrupted"),
        ] {
            if let Some(value) = fields.get(key).filter(|v| v.is_number() || v.is_boolean()) {
                outcome.insert(name.into(), value.clone());
            }
        }
        for stream in ["stdout", "stderr", "output"] {
            if let Some(Value::String(text)) = fields.get(stream) {
                outcome.insert(stream.into(), digest(text.as_bytes()));
            }
        }
    }
    match response {
        None => {
            outcome.insert("response".into(), Value::Null);
        }
        Some(response) => {
            let text = match response {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            outcome.insert("response".into(), digest(text.as_bytes()));
        }
    }
    merge(&mut data, Value::Object(outcome));
    data
}

fn digest(bytes: &[u8]) -> Value {
    let OutputDigest { bytes, sha256, .. } = OutputDigest::of(bytes, false);
    json!({ "bytes": bytes, "sha256": sha256 })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::EventName;

    #[test]
    fn output_is_recorded_by_size_and_hash_only() {
        let input = json!({
            "hook_event_name": "PostToolUse",
            "session_id": "s1",
            "tool_name": "Bash",
            "tool_input": {"command": "echo secret-ish"},
            "tool_response": {"stdout": "secret-ish\n", "stderr": "", "interrupted": false, "exit_code": 0}
        });
        let event = Event::parse(input.to_string().as_bytes(), EventName::PostToolUse).unwrap();
        let data = record(Agent::ClaudeCode, &event);
        let text = data.to_string();
        assert!(!text.contains("secret-ish"), "{text}");
        assert_eq!(data["session_id"], "s1");
        assert_eq!(data["exit_code"], 0);
        assert_eq!(data["stdout"]["bytes"], 11);
        assert_eq!(data["interrupted"], false);
    }
}
