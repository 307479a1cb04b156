//! The two wire formats: Anthropic Messages and OpenAI-compatible chat completions,
//! streamed (server-sent events) or not, with retries on overload.
//!
//! The API key lives only here, in this host process: it is sent in a request header and
//! never written to an event, an error, the audit log or a sandbox.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

use crate::msg::{Msg, Reply, Stop, ToolCall, Usage};

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Anthropic,
    Openai,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Anthropic => "anthropic",
            Kind::Openai => "openai",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Kind::Anthropic => "https://api.anthropic.com",
            Kind::Openai => "https://api.openai.com/v1",
        }
    }

    pub fn default_model(self) -> &'static str {
        match self {
            Kind::Anthropic => "claude-sonnet-4-5",
            Kind::Openai => "gpt-4o-mini",
        }
    }

    pub fn key_env(self) -> &'static str {
        match self {
            Kind::Anthropic => "ANTHROPIC_API_KEY",
            Kind::Openai => "OPENAI_API_KEY",
        }
    }
}

/// A tool as offered to the model.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub schema: Value,
}

/// A configured model endpoint.
pub struct Provider {
    pub kind: Kind,
    pub model: String,
    pub base_url: String,
    /// Empty: no key sent (a local server).
    key: String,
    pub stream: bool,
    pub max_output_tokens: u32,
    pub max_attempts: u32,
    /// `--tool-choice NAME`: the model must call this tool in reply to a user message (the
    /// first turn of a task); later turns choose freely. For small local models that
    /// answer without calling a tool.
    pub tool_choice: Option<String>,
    agent: ureq::Agent,
}

/// Called with each piece of model text as it streams in.
pub type OnText<'a> = &'a mut dyn FnMut(&str);

impl Provider {
    pub fn new(kind: Kind, model: String, base_url: String, key: String, stream: bool) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(600))
            .build();
        Provider {
            kind,
            model,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            stream,
            max_output_tokens: 4096,
            max_attempts: 6,
            tool_choice: None,
            agent,
        }
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::Anthropic => format!("{}/v1/messages", self.base_url),
            Kind::Openai => format!("{}/chat/completions", self.base_url),
        }
    }

    /// Describes this endpoint for an error message: never the key.
    fn who(&self) -> String {
        format!(
            "{} (model `{}`, base URL {})",
            self.kind.as_str(),
            self.model,
            self.base_url
        )
    }

    /// One model exchange, retried on 429, 5xx, overload and connection failures.
    pub fn complete(
        &self,
        system: &str,
        history: &[Msg],
        tools: &[ToolSpec],
        on_text: OnText<'_>,
        deadline: Option<Instant>,
    ) -> Result<Reply> {
        let body = match self.kind {
            Kind::Anthropic => anthropic_request(self, system, history, tools),
            Kind::Openai => openai_request(self, system, history, tools),
        };
        let body = body.to_string();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let wait = match self.attempt(&body, on_text) {
                Ok(reply) => return Ok(reply),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry { reason, after }) => {
                    if attempt >= self.max_attempts {
                        bail!(
                            "{} still failing after {attempt} attempts: {reason}",
                            self.who()
                        );
                    }
                    let wait = after.unwrap_or_else(|| backoff(attempt));
                    crate::note(&format!(
                        "{reason}; retrying in {} ms (attempt {}/{})",
                        wait.as_millis(),
                        attempt + 1,
                        self.max_attempts
                    ));
                    wait
                }
            };
            if deadline.is_some_and(|d| Instant::now() + wait > d) {
                bail!(
                    "{} is overloaded and the task's time limit would pass while waiting",
                    self.who()
                );
            }
            std::thread::sleep(wait);
        }
    }

    fn attempt(&self, body: &str, on_text: OnText<'_>) -> std::result::Result<Reply, Failure> {
        let mut request = self
            .agent
            .post(&self.url())
            .set("content-type", "application/json");
        match self.kind {
            Kind::Anthropic => {
                request = request.set("anthropic-version", "2023-06-01");
                if !self.key.is_empty() {
                    request = request.set("x-api-key", &self.key);
                }
            }
            Kind::Openai => {
                if !self.key.is_empty() {
                    request = request.set("authorization", &format!("Bearer {}", self.key));
                }
            }
        }
        let response = match request.send_string(body) {
            Ok(response) => response,
            Err(ureq::Error::Status(code, response)) => {
                return Err(self.status_failure(code, response))
            }
            Err(ureq::Error::Transport(transport)) => {
                return Err(Failure::Retry {
                    reason: format!("cannot reach {}: {transport}", self.who()),
                    after: None,
                })
            }
        };
        let is_sse = response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let reader = response.into_reader();
        let result = if is_sse {
            match self.kind {
                Kind::Anthropic => anthropic_stream(reader, on_text),
                Kind::Openai => openai_stream(reader, on_text),
            }
        } else {
            let mut text = String::new();
            BufReader::new(reader)
                .take(64 * 1024 * 1024)
                .read_to_string(&mut text)
                .map_err(|e| Failure::Retry {
                    reason: format!("reading the answer of {}: {e}", self.who()),
                    after: None,
                })?;
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::Fatal(anyhow!("{} answered with malformed JSON: {e}", self.who()))
            })?;
            let reply = match self.kind {
                Kind::Anthropic => anthropic_reply(&value),
                Kind::Openai => openai_reply(&value),
            };
            if let Ok(reply) = &reply {
                if !reply.text.is_empty() {
                    on_text(&reply.text);
                }
            }
            reply
        };
        result.map_err(|failure| match failure {
            Failure::Fatal(e) => Failure::Fatal(anyhow!("{}: {e}", self.who())),
            Failure::Retry { reason, after } => Failure::Retry {
                reason: format!("{}: {reason}", self.who()),
                after,
            },
        })
    }

    fn status_failure(&self, code: u16, response: ureq::Response) -> Failure {
        let after = response
            .header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(120.0)));
        let mut text = String::new();
        let _ = response
            .into_reader()
            .take(16 * 1024)
            .read_to_string(&mut text);
        let detail = self.scrub(&error_detail(&text));
        let reason = format!("{} answered HTTP {code}: {detail}", self.who());
        match code {
            429 | 500..=599 => Failure::Retry { reason, after },
            401 | 403 => Failure::Fatal(anyhow!(
                "{reason} (the API key was refused: check {} or --api-key-file)",
                self.kind.key_env()
            )),
            404 => Failure::Fatal(anyhow!("{reason} (check --model and --base-url)")),
            _ => Failure::Fatal(anyhow!(reason)),
        }
    }

    /// Removes the key from provider text, should a provider echo it.
    fn scrub(&self, text: &str) -> String {
        if self.key.len() >= 4 && text.contains(&self.key) {
            text.replace(&self.key, "[key]")
        } else {
            text.to_owned()
        }
    }
}

enum Failure {
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Fatal(anyhow::Error),
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s … capped at 30 s, each plus up to
/// half again.
fn backoff(attempt: u32) -> Duration {
    let base = 500u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(30_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(base + nanos % (base / 2 + 1))
}

/// The provider's own error sentence, from its JSON error body, else the body's start.
fn error_detail(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let text = message.unwrap_or_else(|| body.trim().to_owned());
    let text: String = text.chars().filter(|c| !c.is_control()).take(500).collect();
    if text.is_empty() {
        "(no details)".into()
    } else {
        text
    }
}

fn parse_arguments(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => Value::Object(Map::new()),
    }
}

// ---- Anthropic Messages ----

fn anthropic_request(p: &Provider, system: &str, history: &[Msg], tools: &[ToolSpec]) -> Value {
    let mut messages = Vec::new();
    for msg in history {
        match msg {
            Msg::User { text } => messages.push(json!({"role": "user", "content": text})),
            Msg::Assistant { text, calls } => {
                let mut content = Vec::new();
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                for call in calls {
                    content.push(json!({
                        "type": "tool_use", "id": call.id, "name": call.name,
                        "input": parse_arguments(&call.arguments),
                    }));
                }
                if content.is_empty() {
                    content.push(json!({"type": "text", "text": "(no answer)"}));
                }
                messages.push(json!({"role": "assistant", "content": content}));
            }
            Msg::Results { results } => {
                let content: Vec<Value> = results
                    .iter()
                    .map(|r| {
                        json!({"type": "tool_result", "tool_use_id": r.id,
                               "content": r.content, "is_error": r.is_error})
                    })
                    .collect();
                messages.push(json!({"role": "user", "content": content}));
            }
        }
    }
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.schema}))
        .collect();
    let mut body = json!({
        "model": p.model,
        "max_tokens": p.max_output_tokens,
        "system": system,
        "messages": messages,
        "stream": p.stream,
    });
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
        if let Some(name) = forced_tool(p, history) {
            body["tool_choice"] = json!({"type": "tool", "name": name});
        }
    }
    body
}

/// The tool `--tool-choice` forces on this request: only in reply to a user message.
fn forced_tool<'a>(p: &'a Provider, history: &[Msg]) -> Option<&'a str> {
    match history.last() {
        Some(Msg::User { .. }) => p.tool_choice.as_deref(),
        _ => None,
    }
}

fn anthropic_stop(reason: Option<&str>) -> Stop {
    match reason {
        Some("end_turn") | Some("stop_sequence") | None => Stop::End,
        Some("tool_use") => Stop::ToolUse,
        Some("max_tokens") => Stop::MaxTokens,
        Some("pause_turn") => Stop::PauseTurn,
        Some("refusal") => Stop::Refusal,
        Some(other) => Stop::Other(other.to_owned()),
    }
}

fn anthropic_reply(value: &Value) -> std::result::Result<Reply, Failure> {
    if value.get("type").and_then(Value::as_str) == Some("error") {
        return Err(anthropic_error(value));
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in value
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(ToolCall {
                id: str_of(block, "id"),
                name: str_of(block, "name"),
                arguments: block.get("input").cloned().unwrap_or(json!({})).to_string(),
            }),
            _ => {}
        }
    }
    Ok(Reply {
        text,
        calls,
        stop: anthropic_stop(value.get("stop_reason").and_then(Value::as_str)),
        usage: Usage {
            input_tokens: num(value, "/usage/input_tokens"),
            output_tokens: num(value, "/usage/output_tokens"),
        },
    })
}

fn anthropic_error(value: &Value) -> Failure {
    let kind = value
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("error");
    let message = error_detail(&value.to_string());
    let reason = format!("{kind}: {message}");
    match kind {
        "overloaded_error" | "api_error" | "rate_limit_error" => Failure::Retry {
            reason,
            after: None,
        },
        _ => Failure::Fatal(anyhow!(reason)),
    }
}

fn anthropic_stream(reader: impl Read, on_text: OnText<'_>) -> std::result::Result<Reply, Failure> {
    struct Block {
        call: Option<ToolCall>,
    }
    let mut blocks: Vec<Block> = Vec::new();
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut stop = None;
    let mut usage = Usage::default();
    let mut done = false;
    for event in Sse::new(reader) {
        let (_name, data) = event.map_err(|e| Failure::Retry {
            reason: format!("the stream broke: {e}"),
            after: None,
        })?;
        let Ok(value) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        match value.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                usage.input_tokens = num(&value, "/message/usage/input_tokens");
            }
            Some("content_block_start") => {
                let block = value.get("content_block").cloned().unwrap_or(Value::Null);
                let index = num(&value, "/index") as usize;
                while blocks.len() <= index {
                    blocks.push(Block { call: None });
                }
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    blocks[index].call = Some(ToolCall {
                        id: str_of(&block, "id"),
                        name: str_of(&block, "name"),
                        arguments: String::new(),
                    });
                }
            }
            Some("content_block_delta") => {
                let index = num(&value, "/index") as usize;
                match value.pointer("/delta/type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let piece = value
                            .pointer("/delta/text")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        text.push_str(piece);
                        on_text(piece);
                    }
                    Some("input_json_delta") => {
                        let piece = value
                            .pointer("/delta/partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if let Some(Some(call)) = blocks.get_mut(index).map(|b| b.call.as_mut()) {
                            call.arguments.push_str(piece);
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_stop") => {
                let index = num(&value, "/index") as usize;
                if let Some(mut call) = blocks.get_mut(index).and_then(|b| b.call.take()) {
                    if call.arguments.trim().is_empty() {
                        call.arguments = "{}".into();
                    }
                    calls.push(call);
                }
            }
            Some("message_delta") => {
                if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    stop = Some(reason.to_owned());
                }
                usage.output_tokens = num(&value, "/usage/output_tokens");
            }
            Some("message_stop") => {
                done = true;
                break;
            }
            Some("error") => return Err(anthropic_error(&value)),
            _ => {}
        }
    }
    if !done {
        return Err(Failure::Retry {
            reason: "the stream ended before message_stop".into(),
            after: None,
        });
    }
    // A tool_use block cut off by max_tokens never got its stop: keep what it has.
    for block in blocks {
        if let Some(call) = block.call {
            calls.push(call);
        }
    }
    Ok(Reply {
        text,
        calls,
        stop: anthropic_stop(stop.as_deref()),
        usage,
    })
}

// ---- OpenAI-compatible chat completions ----

fn openai_request(p: &Provider, system: &str, history: &[Msg], tools: &[ToolSpec]) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for msg in history {
        match msg {
            Msg::User { text } => messages.push(json!({"role": "user", "content": text})),
            Msg::Assistant { text, calls } => {
                // A string content, empty beside tool calls when there is no text: the
                // API takes it, and llama-cpp-python refuses a null or missing one.
                let mut m = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    m["tool_calls"] = calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments}})
                        })
                        .collect();
                }
                messages.push(m);
            }
            Msg::Results { results } => {
                for r in results {
                    let content = if r.is_error {
                        format!("ERROR: {}", r.content)
                    } else {
                        r.content.clone()
                    };
                    messages
                        .push(json!({"role": "tool", "tool_call_id": r.id, "content": content}));
                }
            }
        }
    }
    let mut body = json!({
        "model": p.model,
        "max_tokens": p.max_output_tokens,
        "messages": messages,
        "stream": p.stream,
    });
    if p.stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.schema}})
            })
            .collect();
        if let Some(name) = forced_tool(p, history) {
            body["tool_choice"] = json!({"type": "function", "function": {"name": name}});
        }
    }
    body
}

fn openai_stop(reason: Option<&str>, has_calls: bool) -> Stop {
    match reason {
        _ if has_calls => Stop::ToolUse,
        Some("stop") | None => Stop::End,
        Some("tool_calls") | Some("function_call") => Stop::ToolUse,
        Some("length") => Stop::MaxTokens,
        Some("content_filter") => Stop::Refusal,
        Some(other) => Stop::Other(other.to_owned()),
    }
}

fn openai_reply(value: &Value) -> std::result::Result<Reply, Failure> {
    if let Some(error) = value.get("error") {
        return Err(Failure::Fatal(anyhow!(
            "error: {}",
            error_detail(&json!({ "error": error }).to_string())
        )));
    }
    let choice = value.pointer("/choices/0").ok_or_else(|| {
        Failure::Fatal(anyhow!(
            "the answer has no choices: {}",
            error_detail(&value.to_string())
        ))
    })?;
    let message = choice.get("message").cloned().unwrap_or(Value::Null);
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut calls = Vec::new();
    for (i, call) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let arguments = match call.pointer("/function/arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "{}".into(),
        };
        let mut id = str_of(call, "id");
        if id.is_empty() {
            id = format!("call_{i}");
        }
        calls.push(ToolCall {
            id,
            name: call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            arguments,
        });
    }
    let has_calls = !calls.is_empty();
    Ok(Reply {
        text,
        calls,
        stop: openai_stop(
            choice.get("finish_reason").and_then(Value::as_str),
            has_calls,
        ),
        usage: Usage {
            input_tokens: num(value, "/usage/prompt_tokens"),
            output_tokens: num(value, "/usage/completion_tokens"),
        },
    })
}

fn openai_stream(reader: impl Read, on_text: OnText<'_>) -> std::result::Result<Reply, Failure> {
    let mut text = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut finish = None;
    let mut usage = Usage::default();
    let mut done = false;
    for event in Sse::new(reader) {
        let (_name, data) = event.map_err(|e| Failure::Retry {
            reason: format!("the stream broke: {e}"),
            after: None,
        })?;
        if data.trim() == "[DONE]" {
            done = true;
            break;
        }
        let Ok(value) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        if value.get("error").is_some() {
            return Err(Failure::Retry {
                reason: error_detail(&data),
                after: None,
            });
        }
        if value.get("usage").is_some_and(Value::is_object) {
            usage.input_tokens = num(&value, "/usage/prompt_tokens");
            usage.output_tokens = num(&value, "/usage/completion_tokens");
        }
        let Some(choice) = value.pointer("/choices/0") else {
            continue;
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            finish = Some(reason.to_owned());
        }
        if let Some(piece) = choice.pointer("/delta/content").and_then(Value::as_str) {
            text.push_str(piece);
            on_text(piece);
        }
        for delta in choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = delta
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(calls.len().saturating_sub(1) as u64) as usize;
            while calls.len() <= index {
                calls.push(ToolCall {
                    id: format!("call_{}", calls.len()),
                    name: String::new(),
                    arguments: String::new(),
                });
            }
            let call = &mut calls[index];
            if let Some(id) = delta.get("id").and_then(Value::as_str) {
                call.id = id.to_owned();
            }
            if let Some(name) = delta.pointer("/function/name").and_then(Value::as_str) {
                call.name.push_str(name);
            }
            if let Some(args) = delta.pointer("/function/arguments").and_then(Value::as_str) {
                call.arguments.push_str(args);
            }
        }
    }
    if !done && finish.is_none() {
        return Err(Failure::Retry {
            reason: "the stream ended before [DONE]".into(),
            after: None,
        });
    }
    for call in &mut calls {
        if call.arguments.trim().is_empty() {
            call.arguments = "{}".into();
        }
    }
    let has_calls = !calls.is_empty();
    Ok(Reply {
        text,
        calls,
        stop: openai_stop(finish.as_deref(), has_calls),
        usage,
    })
}

// ---- helpers ----

fn str_of(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn num(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Server-sent events: (event name, data) per blank-line-terminated event.
struct Sse<R> {
    lines: std::io::Lines<BufReader<R>>,
}

impl<R: Read> Sse<R> {
    fn new(reader: R) -> Self {
        Sse {
            lines: BufReader::new(reader).lines(),
        }
    }
}

impl<R: Read> Iterator for Sse<R> {
    type Item = std::io::Result<(String, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut name = String::new();
        let mut data = String::new();
        let mut any = false;
        loop {
            let line = match self.lines.next() {
                None => return any.then_some(Ok((name, data))),
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(line)) => line,
            };
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if any {
                    return Some(Ok((name, data)));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => name = value.to_owned(),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                    any = true;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn openai_stream_assembles_parallel_tool_calls() {
        let sse = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"ls\",\"arguments\":\"{\\\"p\"}},{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"cat\",\"arguments\":\"\"}}]}}]}\n\n\
                   data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n\
                   data: [DONE]\n\n";
        let reply = openai_stream(sse.as_bytes(), &mut |_| {}).ok().unwrap();
        assert_eq!(reply.stop, Stop::ToolUse);
        assert_eq!(reply.calls.len(), 2);
        assert_eq!(reply.calls[0].arguments, "{\"p\":1}");
        assert_eq!(reply.calls[1].arguments, "{}");
    }

    #[test]
    fn tool_choice_forces_a_tool_only_in_reply_to_the_task() {
        let mut p = Provider::new(
            Kind::Openai,
            "m".into(),
            "http://x".into(),
            String::new(),
            false,
        );
        p.tool_choice = Some("ls".into());
        let tools = [ToolSpec {
            name: "ls".into(),
            description: "list".into(),
            schema: json!({"type": "object"}),
        }];
        let task = [Msg::User { text: "go".into() }];
        let body = openai_request(&p, "s", &task, &tools);
        assert_eq!(body["tool_choice"]["function"]["name"], "ls");
        let answered = [
            Msg::User { text: "go".into() },
            Msg::Assistant {
                text: String::new(),
                calls: vec![],
            },
            Msg::Results { results: vec![] },
        ];
        assert!(openai_request(&p, "s", &answered, &tools)
            .get("tool_choice")
            .is_none());
        p.kind = Kind::Anthropic;
        let body = anthropic_request(&p, "s", &task, &tools);
        assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "ls"}));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= Duration::from_millis(500));
        assert!(backoff(20) <= Duration::from_millis(45_001));
    }
}
