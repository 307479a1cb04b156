//! The conversation in a provider-neutral form: what is stored and what both wire
//! formats are built from.

use serde::{Deserialize, Serialize};

/// One tool call the model asked for. `arguments` is the raw JSON text the model wrote:
/// it may be malformed, and is answered with an error result then, never a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// What a tool call gave back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    pub id: String,
    pub content: String,
    pub is_error: bool,
}

/// One message of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Msg {
    User { text: String },
    Assistant { text: String, calls: Vec<ToolCall> },
    Results { results: Vec<ToolResult> },
}

impl Msg {
    /// Rough size, in bytes of text, for the context budget.
    pub fn size(&self) -> usize {
        match self {
            Msg::User { text } => text.len(),
            Msg::Assistant { text, calls } => {
                text.len()
                    + calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len() + c.id.len())
                        .sum::<usize>()
            }
            Msg::Results { results } => results.iter().map(|r| r.content.len() + 32).sum(),
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A final answer (end_turn, stop, stop_sequence).
    End,
    /// It asked for tools.
    ToolUse,
    /// Its answer was cut at the output token limit.
    MaxTokens,
    /// Anthropic: a long turn paused; send it back to continue.
    PauseTurn,
    /// The provider refused to answer (a safety refusal).
    Refusal,
    /// Anything else, as the provider named it.
    Other(String),
}

impl Stop {
    pub fn as_str(&self) -> &str {
        match self {
            Stop::End => "end_turn",
            Stop::ToolUse => "tool_use",
            Stop::MaxTokens => "max_tokens",
            Stop::PauseTurn => "pause_turn",
            Stop::Refusal => "refusal",
            Stop::Other(other) => other,
        }
    }
}

/// Token counts of one exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One model reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub stop: Stop,
    pub usage: Usage,
}
