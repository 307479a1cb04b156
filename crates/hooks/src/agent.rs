//! The agents' hook wire formats: what Claude Code and Codex send on stdin, and the answer
//! each reads from stdout.
//!
//! Both send the same PreToolUse payload (`hook_event_name`, `session_id`, `cwd`,
//! `tool_name`, `tool_input`; Codex adds `turn_id` and `model`), name their shell tool
//! `Bash` with the command line in `tool_input.command`, and read the same
//! `hookSpecificOutput` (Codex documents Claude Code's format). Where they differ: Codex
//! refuses `permissionDecision: "allow"` without `updatedInput` and `"ask"` altogether, so a
//! call the hook does not rewrite gets no output at all on both (the agent decides as if
//! there were no hook). Exit status 2 with a reason on stderr blocks the call on both: the
//! answer when the input is not even a hook event. This module must never answer "allow"
//! without a rewritten command.

use serde_json::{json, Map, Value};

/// An agent whose hooks this adapter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    ClaudeCode,
    Codex,
}

impl Agent {
    pub fn name(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "claude-code",
            Agent::Codex => "codex",
        }
    }

    /// The agent's name for its shell tool, whose `tool_input.command` is a shell script.
    pub fn shell_tool(self) -> &'static str {
        "Bash"
    }
}

/// The hook events this adapter answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventName {
    PreToolUse,
    PostToolUse,
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::PreToolUse => "PreToolUse",
            EventName::PostToolUse => "PostToolUse",
        }
    }
}

/// One hook event as the agent sent it.
#[derive(Debug, Clone)]
pub struct Event {
    pub payload: Map<String, Value>,
}

/// Input that is not a hook event this adapter can answer with a decision: the call is
/// blocked through the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl Event {
    /// Parses the hook input, which must be a JSON object naming `expected` as its event.
    pub fn parse(input: &[u8], expected: EventName) -> Result<Event, Unreadable> {
        if input.iter().all(u8::is_ascii_whitespace) {
            return Err(Unreadable(
                "the hook got no input (expected the agent's hook event as JSON on stdin)".into(),
            ));
        }
        let value: Value = serde_json::from_slice(input)
            .map_err(|e| Unreadable(format!("the hook input is not valid JSON: {e}")))?;
        let Value::Object(payload) = value else {
            return Err(Unreadable(
                "the hook input is not a JSON object (expected the agent's hook event)".into(),
            ));
        };
        match payload.get("hook_event_name") {
            Some(Value::String(name)) if name == expected.as_str() => Ok(Event { payload }),
            Some(Value::String(name)) => Err(Unreadable(format!(
                "the hook got event `{name}`, but it was configured for {} (check the hook's \
                 event in the agent's settings, and --post)",
                expected.as_str()
            ))),
            _ => Err(Unreadable(
                "the hook input has no `hook_event_name` string".into(),
            )),
        }
    }

    /// A string field of the payload.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.payload.get(key).and_then(Value::as_str)
    }

    pub fn tool_name(&self) -> Result<&str, String> {
        self.str("tool_name")
            .ok_or_else(|| "the hook event has no `tool_name` string".into())
    }

    pub fn tool_input(&self) -> Result<&Map<String, Value>, String> {
        self.payload
            .get("tool_input")
            .and_then(Value::as_object)
            .ok_or_else(|| "the hook event has no `tool_input` object".into())
    }

    /// What identifies the call in the audit log (never the command itself).
    pub fn ids(&self) -> Value {
        json!({
            "session_id": self.str("session_id"),
            "tool_use_id": self.str("tool_use_id"),
            "tool_name": self.str("tool_name"),
        })
    }
}

/// The adapter's answer to one PreToolUse event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not the adapter's to decide: no output, the agent goes on as without the hook.
    Pass,
    /// Run the call with this tool input instead (the command rewritten to run sandboxed).
    Rewrite {
        input: Map<String, Value>,
        reason: String,
    },
    /// Refuse the call; the reason is shown to the model.
    Deny { reason: String },
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Pass => "pass",
            Decision::Rewrite { .. } => "allow",
            Decision::Deny { .. } => "deny",
        }
    }

    /// What the agent reads on stdout (nothing for `Pass`), the same for both agents.
    pub fn answer(&self) -> Option<Value> {
        let specific = match self {
            Decision::Pass => return None,
            Decision::Rewrite { input, reason } => json!({
                "hookEventName": "PreToolUse",
                "permissionDecision": "allow",
                "permissionDecisionReason": reason,
                "updatedInput": input,
            }),
            Decision::Deny { reason } => json!({
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }),
        };
        Some(json!({ "hookSpecificOutput": specific }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_input_is_named() {
        let cases: [(&[u8], &str); 5] = [
            (b"", "no input"),
            (b"{", "not valid JSON"),
            (b"[1]", "not a JSON object"),
            (b"{\"tool_name\":\"Bash\"}", "no `hook_event_name`"),
            (
                b"{\"hook_event_name\":\"Stop\"}",
                "event `Stop`, but it was configured for PreToolUse",
            ),
        ];
        for (input, expected) in cases {
            let Err(Unreadable(reason)) = Event::parse(input, EventName::PreToolUse) else {
                panic!("{input:?} parsed");
            };
            assert!(reason.contains(expected), "{reason}");
        }
    }

    #[test]
    fn pass_prints_nothing_and_deny_has_a_reason() {
        assert_eq!(Decision::Pass.answer(), None);
        let deny = Decision::Deny {
            reason: "no".into(),
        }
        .answer()
        .unwrap();
        assert_eq!(deny["hookSpecificOutput"]["permissionDecision"], "deny");
        assert_eq!(deny["hookSpecificOutput"]["permissionDecisionReason"], "no");
        assert!(deny["hookSpecificOutput"].get("updatedInput").is_none());
    }
}
