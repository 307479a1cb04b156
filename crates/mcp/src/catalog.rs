//! What `tools/list` shows: exactly the policy's tools, each with the input schema of its
//! declared parameters, the schema of the structured result every call returns, and hints
//! read from its scope.
//!
//! Annotations are hints to the client, derived from the policy, never from anything a
//! client sent; this module must never describe a tool as narrower than its policy.

use std::sync::Arc;

use nanoclaw_policy::{Policy, Tool, ToolNetwork};

use rmcp::model::{JsonObject, Tool as McpTool, ToolAnnotations};
use serde_json::{json, Value};

/// The tools as MCP describes them, built once per server.
pub(crate) struct Catalog {
    tools: Vec<McpTool>,
}

impl Catalog {
    pub fn new(policy: &Policy) -> Catalog {
        let output = Arc::new(object(output_schema()));
        Catalog {
            tools: policy
                .tools()
                .iter()
                .map(|tool| describe(tool, output.clone()))
                .collect(),
        }
    }

    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    pub fn get(&self, name: &str) -> Option<&McpTool> {
        self.tools.iter().find(|tool| tool.name == name)
    }
}

fn describe(tool: &Tool, output: Arc<JsonObject>) -> McpTool {
    let description = tool.description.clone().unwrap_or_else(|| {
        format!(
            "Runs `{}` in a sandbox with only what its policy gives it",
            tool.command.join(" ")
        )
    });
    let read_only = !tool.mounts.iter().any(|mount| mount.writable);
    let open_world = matches!(&tool.network, ToolNetwork::Allow(rules) if !rules.is_empty());
    let annotations = ToolAnnotations::new()
        .read_only(read_only)
        .open_world(open_world);
    McpTool::new(
        tool.name.clone(),
        description,
        Arc::new(object(tool.input_schema())),
    )
    .with_raw_output_schema(output)
    .with_annotations(annotations)
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// The `structuredContent` of every result: how the sandbox ended, or why it never
/// started (`refused`).
fn output_schema() -> Value {
    let nullable_integer = json!({ "type": ["integer", "null"] });
    json!({
        "type": "object",
        "properties": {
            "exit_status": {
                "type": "integer",
                "description": "as a shell reports it: the command's exit code, 124 timed out, 137 out of memory, 128+N killed by signal N, 125 refused by nanoclaw"
            },
            "exit_code": nullable_integer,
            "signal": nullable_integer,
            "timed_out": { "type": "boolean" },
            "oom_killed": { "type": "boolean" },
            "duration_ms": { "type": "integer" },
            "stdout_truncated": { "type": "boolean" },
            "stderr_truncated": { "type": "boolean" },
            "stdout_bytes": { "type": "integer" },
            "stderr_bytes": { "type": "integer" },
            "audit_seq": { "type": ["integer", "null"], "description": "sequence number of the invocation.start record in the audit log" },
            "invocation": { "type": ["string", "null"], "description": "the invocation id in the audit log" },
            "writes": { "description": "changes of writable mounts applied to the host, and those refused" },
            "refused": { "type": "string", "description": "why nanoclaw did not run the command" }
        },
        "required": ["exit_status"]
    })
}
