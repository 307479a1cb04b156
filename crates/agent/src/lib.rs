//! `nanoclaw agent`: a thin control plane that talks to a model, keeps a conversation and
//! a workspace, and runs each tool call the model asks for in its own sandbox (one
//! `nanoclaw run` child per call). The model's API key lives only in this host process.
//!
//! Outside the trusted core: it decides nothing about isolation, the policy and `run` do.

mod call;
mod msg;
mod provider;
mod store;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use nanoclaw_audit::AuditLog;
use nanoclaw_policy::{Policy, Tool};
use serde_json::{json, Value};

use crate::call::Runner;
use crate::msg::{Msg, Stop, ToolResult, Usage};
use crate::provider::{Kind, Provider, ToolSpec};

/// Exit status for errors of nanoclaw itself.
const RUNNER_ERROR: u8 = 125;
/// Exit status when a task ends on a limit (turns, tool calls, time, tokens, max_tokens).
const LIMIT_REACHED: u8 = 3;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The policy whose tools the model may call (each call runs in its own sandbox)
    #[arg(long, value_name = "FILE", required_unless_present_any = ["list", "resume"])]
    policy: Option<PathBuf>,
    /// The workspace: the policy's ${workspace}; its NANOCLAW.md is read into the system prompt [default: the current directory]
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Stream events as JSON Lines (text, tool_call, tool_result, usage, error, final)
    #[arg(long)]
    json: bool,
    /// anthropic | openai [default: config file, else anthropic]
    #[arg(long, value_enum)]
    provider: Option<Kind>,
    /// The model [default: config file, else the provider's default]
    #[arg(long)]
    model: Option<String>,
    /// The API's base URL (an OpenAI-compatible server: http://127.0.0.1:8080/v1)
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Read the API key from this file [default: $ANTHROPIC_API_KEY / $OPENAI_API_KEY]
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Ask for whole answers instead of server-sent events
    #[arg(long)]
    no_stream: bool,
    /// Continue this conversation
    #[arg(long, value_name = "ID")]
    resume: Option<String>,
    /// List the conversations and exit
    #[arg(long)]
    list: bool,
    /// Most model exchanges per task
    #[arg(long, default_value_t = 25)]
    max_turns: u64,
    /// Most tool calls per task
    #[arg(long, default_value_t = 100)]
    max_tool_calls: u64,
    /// Most wall time per task, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    max_time: u64,
    /// Most tokens (input + output, summed over the task's exchanges)
    #[arg(long, default_value_t = 2_000_000)]
    max_tokens: u64,
    /// Compact the history (truncate old tool output) above this many bytes of text
    #[arg(long, value_name = "BYTES", default_value_t = 400_000)]
    context_budget: usize,
    /// Audit log [default: as `nanoclaw run`]
    #[arg(long, value_name = "PATH")]
    audit: Option<PathBuf>,
    /// Make the model call this tool in reply to each task (its first turn); for small
    /// local models that answer without calling one
    #[arg(long, value_name = "TOOL")]
    tool_choice: Option<String>,
    /// Sandboxes kept pre-built per tool, each for one call (0: none; every call starts
    /// its sandbox when it comes)
    #[arg(long, value_name = "N", default_value_t = nanoclaw_pool::DEFAULT_SIZE)]
    pool: usize,
    /// A pre-built sandbox that waited this long is discarded and replaced (e.g. 500ms, 60s, 5m)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = nanoclaw_pool::parse_duration)]
    pool_max_idle: Duration,
    /// The task; without one, an interactive session
    task: Vec<String>,
}

/// `$XDG_CONFIG_HOME/nanoclaw/config.toml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    provider: Option<Kind>,
    model: Option<String>,
    base_url: Option<String>,
    api_key_file: Option<PathBuf>,
    max_output_tokens: Option<u32>,
}

fn config() -> Result<Config> {
    let dir = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".config"),
            None => return Ok(Config::default()),
        },
    };
    let path = dir.join("nanoclaw/config.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("in {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// A notice for the operator, on stderr.
pub(crate) fn note(text: &str) {
    eprintln!("nanoclaw agent: {text}");
}

pub fn main(args: AgentArgs) -> ExitCode {
    match dispatch(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("nanoclaw agent: {error:#}");
            ExitCode::from(RUNNER_ERROR)
        }
    }
}

fn dispatch(args: AgentArgs) -> Result<ExitCode> {
    let store = store::Store::open(&store::default_path()?)?;
    if args.list {
        for c in store.list()? {
            println!(
                "{}  {}  {:>4} messages  {}  {}",
                c.id, c.created, c.messages, c.workspace, c.title
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let resumed = match &args.resume {
        Some(id) => Some(
            store
                .meta(id)?
                .ok_or_else(|| anyhow!("no conversation {id} (see `nanoclaw agent --list`)"))?,
        ),
        None => None,
    };
    let policy_path = args
        .policy
        .clone()
        .or_else(|| resumed.as_ref().map(|m| PathBuf::from(&m.policy)))
        .ok_or_else(|| anyhow!("--policy FILE is required"))?;
    let policy_path = std::fs::canonicalize(&policy_path)
        .with_context(|| format!("cannot find the policy {}", policy_path.display()))?;
    let policy = Policy::load(&policy_path).map_err(|d| anyhow!("{d}"))?;
    let tools: Vec<Tool> = policy.tools().to_vec();

    let config = config()?;
    let kind = args.provider.or(config.provider).unwrap_or(Kind::Anthropic);
    let model = args
        .model
        .clone()
        .or(config.model)
        .unwrap_or_else(|| kind.default_model().to_owned());
    let base_url = args
        .base_url
        .clone()
        .or(config.base_url)
        .unwrap_or_else(|| kind.default_base_url().to_owned());
    let key = match args.api_key_file.clone().or(config.api_key_file) {
        Some(file) => std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read the API key file {}", file.display()))?
            .trim()
            .to_owned(),
        None => std::env::var(kind.key_env()).unwrap_or_default(),
    };
    if key.is_empty() && args.base_url.is_none() && kind == Kind::Anthropic {
        bail!(
            "no API key for {}: set {} or pass --api-key-file",
            kind.as_str(),
            kind.key_env()
        );
    }
    let mut provider = Provider::new(kind, model, base_url, key, !args.no_stream);
    if let Some(max) = config.max_output_tokens {
        provider.max_output_tokens = max;
    }
    if let Some(name) = &args.tool_choice {
        if !tools.iter().any(|t| &t.name == name) {
            bail!("--tool-choice {name}: the policy has no tool of that name");
        }
        provider.tool_choice = Some(name.clone());
    }

    let (id, workspace, history) = match (&args.resume, resumed) {
        (Some(id), Some(meta)) => {
            let workspace = args
                .workspace
                .clone()
                .unwrap_or_else(|| PathBuf::from(meta.workspace));
            (id.clone(), workspace, store.history(id)?)
        }
        _ => {
            let workspace = match &args.workspace {
                Some(w) => w.clone(),
                None => std::env::current_dir()?,
            };
            (new_id()?, workspace, Vec::new())
        }
    };
    let workspace = std::fs::canonicalize(&workspace)
        .with_context(|| format!("cannot find the workspace {}", workspace.display()))?;
    let audit_path = match &args.audit {
        Some(path) => path.clone(),
        None => AuditLog::default_path()?,
    };
    let audit = AuditLog::open(&audit_path)
        .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
    if args.resume.is_none() {
        let title = args.task.join(" ");
        store.create(
            &id,
            &workspace.to_string_lossy(),
            &policy_path.to_string_lossy(),
            &title,
        )?;
    }
    let launcher = Arc::new(nanoclaw_pool::Launcher {
        exe: std::env::current_exe().context("cannot find the nanoclaw executable")?,
        policy: policy_path.clone(),
        workspace: workspace.clone(),
        audit: audit_path,
        // The model's keys stay in this process: not even the runner gets them.
        env_remove: vec!["ANTHROPIC_API_KEY".into(), "OPENAI_API_KEY".into()],
    });
    let pool_config = nanoclaw_pool::Config {
        size: args.pool,
        max_idle: args.pool_max_idle,
    };
    let pool = nanoclaw_pool::Pool::start(
        launcher.clone(),
        pool_config,
        &tools,
        Box::new(|line: &str| note(line)),
    )
    .context("cannot start the pool's thread")?;
    let runner = Runner { launcher, pool };
    let specs: Vec<ToolSpec> = tools
        .iter()
        .map(|t| ToolSpec {
            name: t.name.clone(),
            description: t.description.clone().unwrap_or_else(|| t.name.clone()),
            schema: t.input_schema(),
        })
        .collect();
    let mut session = Session {
        id,
        json: args.json,
        provider,
        store,
        audit: Arc::new(audit),
        pending: Mutex::new(None),
        runner,
        tools,
        specs,
        history,
        limits: Limits {
            turns: args.max_turns,
            tool_calls: args.max_tool_calls,
            time: Duration::from_secs(args.max_time),
            tokens: args.max_tokens,
        },
        context_budget: args.context_budget,
        out: Mutex::new(()),
        interrupted: Arc::new(AtomicBool::new(false)),
    };
    if !args.json {
        note(&format!("conversation {}", session.id));
    }
    if args.task.is_empty() {
        return session.interactive();
    }
    let task = args.task.join(" ");
    Ok(match session.task(&task) {
        Ok(End::Answer) => ExitCode::SUCCESS,
        Ok(End::Limit) => ExitCode::from(LIMIT_REACHED),
        Err(error) => {
            session.event("error", json!({"message": format!("{error:#}")}));
            if !session.json {
                eprintln!("nanoclaw agent: {error:#}");
            }
            ExitCode::from(RUNNER_ERROR)
        }
    })
}

fn new_id() -> Result<String> {
    let id = nanoclaw_audit::invocation_id().map_err(|e| anyhow!("{e}"))?;
    Ok(format!("c-{}", &id[..16]))
}

struct Limits {
    turns: u64,
    tool_calls: u64,
    time: Duration,
    tokens: u64,
}

enum End {
    Answer,
    Limit,
}

struct Session {
    id: String,
    json: bool,
    provider: Provider,
    store: store::Store,
    audit: Arc<AuditLog>,
    /// Writing the last turn's `agent.tool` records: done while the results travel to
    /// the model, joined before the next record.
    pending: Mutex<Option<std::thread::JoinHandle<()>>>,
    runner: Runner,
    tools: Vec<Tool>,
    specs: Vec<ToolSpec>,
    history: Vec<Msg>,
    limits: Limits,
    context_budget: usize,
    out: Mutex<()>,
    /// Set by Ctrl-C in an interactive session: the running tools get the terminal's
    /// SIGINT themselves (same process group) and end; then the turn ends.
    interrupted: Arc<AtomicBool>,
}

impl Session {
    /// One JSON Lines event (with --json), carrying the conversation id.
    fn event(&self, kind: &str, mut data: Value) {
        if !self.json {
            return;
        }
        if let Value::Object(map) = &mut data {
            map.insert("type".into(), kind.into());
            map.insert("conversation_id".into(), self.id.clone().into());
        }
        let _guard = self.out.lock();
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{data}");
        let _ = stdout.flush();
    }

    fn system_prompt(&self) -> String {
        let mut prompt = String::from(
            "You are nanoclaw's agent. You act only through the tools offered; each tool call \
             runs in its own short-lived, isolated sandbox over the workspace. When a tool \
             fails or is refused, read the reason and adapt. Finish with a short final answer.",
        );
        let memory = self.runner.launcher.workspace.join("NANOCLAW.md");
        if let Ok(text) = std::fs::read_to_string(&memory) {
            prompt.push_str("\n\n# NANOCLAW.md (the workspace's memory file)\n\n");
            prompt.push_str(&text);
        }
        prompt
    }

    fn turn_number(&self) -> u64 {
        self.history
            .iter()
            .filter(|m| matches!(m, Msg::Assistant { .. }))
            .count() as u64
            + 1
    }

    fn push(&mut self, turn: u64, msg: Msg) -> Result<()> {
        self.store.push(&self.id, turn, &msg)?;
        self.history.push(msg);
        Ok(())
    }

    /// Truncates old tool outputs (all but the last results) while the history is over
    /// the budget. Only what is sent shrinks: the stored history keeps everything.
    fn compacted(&self) -> Vec<Msg> {
        let mut history = self.history.clone();
        let mut size: usize = history.iter().map(Msg::size).sum();
        if size <= self.context_budget {
            return history;
        }
        let last = history.len().saturating_sub(1);
        for msg in history.iter_mut().take(last) {
            if size <= self.context_budget {
                break;
            }
            if let Msg::Results { results } = msg {
                for result in results.iter_mut() {
                    if result.content.len() > 300 {
                        let before = result.content.len();
                        let mut end = 200;
                        while !result.content.is_char_boundary(end) {
                            end -= 1;
                        }
                        result.content = format!(
                            "{}\n[... old tool output truncated by nanoclaw to save context: {} of {before} bytes dropped]",
                            &result.content[..end],
                            before - end
                        );
                        size = size.saturating_sub(before - result.content.len());
                    }
                }
            }
        }
        history
    }

    fn task(&mut self, task: &str) -> Result<End> {
        let started = Instant::now();
        let deadline = started + self.limits.time;
        let system = self.system_prompt();
        let turn = self.turn_number();
        self.push(
            turn,
            Msg::User {
                text: task.to_owned(),
            },
        )?;
        let (mut turns, mut calls_made, mut tokens) = (0u64, 0u64, 0u64);
        loop {
            let limit = if turns >= self.limits.turns {
                Some(format!(
                    "the task reached --max-turns {}",
                    self.limits.turns
                ))
            } else if tokens >= self.limits.tokens {
                Some(format!(
                    "the task used {tokens} tokens, --max-tokens is {}",
                    self.limits.tokens
                ))
            } else if Instant::now() >= deadline {
                Some(format!(
                    "the task reached --max-time {}s",
                    self.limits.time.as_secs()
                ))
            } else {
                None
            };
            if let Some(reason) = limit {
                return self.finish(None, &reason, turn);
            }
            if self.interrupted.swap(false, Ordering::SeqCst) {
                return self.finish(None, "cancelled (Ctrl-C)", turn);
            }
            turns += 1;
            let turn = self.turn_number();
            let history = self.compacted();
            let json = self.json;
            let mut printed = false;
            let mut on_text = |piece: &str| {
                if !json {
                    print!("{piece}");
                    let _ = std::io::stdout().flush();
                    printed = true;
                }
            };
            let reply = self.provider.complete(
                &system,
                &history,
                &self.specs,
                &mut on_text,
                Some(deadline),
            );
            self.settle();
            let reply = reply?;
            let arrived = Instant::now();
            if printed {
                println!();
            }
            tokens += reply.usage.input_tokens + reply.usage.output_tokens;
            let requested: Vec<Value> = reply
                .calls
                .iter()
                .map(|c| json!({"id": c.id, "name": c.name}))
                .collect();
            let model_record = json!({
                "conversation": self.id, "turn": turn,
                "provider": self.provider.kind.as_str(), "model": self.provider.model,
                "tokens": {"input": reply.usage.input_tokens, "output": reply.usage.output_tokens},
                "stop_reason": reply.stop.as_str(), "tool_calls": requested,
            });
            // With tool calls, the record is written while they start (each `nanoclaw run`
            // records its own invocation durably before its sandbox exists): its fsync
            // stays off the path from the model's call to the result.
            let mut model_record = Some(model_record);
            if reply.calls.is_empty() {
                if let Some(record) = model_record.take() {
                    self.audit
                        .append("agent.model", record)
                        .map_err(|e| anyhow!("cannot write the audit log: {e}"))?;
                }
            }
            if !reply.text.is_empty() {
                self.event("text", json!({"turn": turn, "text": reply.text}));
            }
            self.event(
                "usage",
                json!({"turn": turn, "input_tokens": reply.usage.input_tokens,
                "output_tokens": reply.usage.output_tokens, "task_tokens": tokens}),
            );
            let calls = reply.calls.clone();
            self.push(
                turn,
                Msg::Assistant {
                    text: reply.text.clone(),
                    calls: calls.clone(),
                },
            )?;
            match reply.stop {
                Stop::PauseTurn => continue,
                Stop::MaxTokens if calls.is_empty() => {
                    return self.finish(
                        Some(&reply.text),
                        "the model's answer was cut at its output token limit (max_tokens)",
                        turn,
                    )
                }
                Stop::Refusal if calls.is_empty() => {
                    return self.finish(Some(&reply.text), "the model refused to answer", turn)
                }
                _ if calls.is_empty() => return self.answer(&reply.text, turn, reply.usage),
                _ => {}
            }
            // Tool calls over the limit are answered with an error, then the task ends.
            let room = self.limits.tool_calls.saturating_sub(calls_made) as usize;
            let results =
                self.run_calls(turn, &calls[..room.min(calls.len())], arrived, model_record)?;
            let mut results = results;
            for call in calls.iter().skip(room) {
                results.push(ToolResult {
                    id: call.id.clone(),
                    content: "not run: the task reached its tool-call limit".into(),
                    is_error: true,
                });
            }
            calls_made += calls.len() as u64;
            self.push(turn, Msg::Results { results })?;
            if calls_made > self.limits.tool_calls {
                let reason = format!(
                    "the task reached --max-tool-calls {}",
                    self.limits.tool_calls
                );
                return self.finish(None, &reason, turn);
            }
        }
    }

    /// Runs the calls of one turn, each in its own sandbox, in parallel.
    /// `arrived`: when the reply asking for them was read, for the agent's own overhead
    /// (`overhead_ms` of a result: time since then minus the slowest `nanoclaw run`).
    fn run_calls(
        &self,
        turn: u64,
        calls: &[msg::ToolCall],
        arrived: Instant,
        model_record: Option<Value>,
    ) -> Result<Vec<ToolResult>> {
        for call in calls {
            let arguments: Value = serde_json::from_str(&call.arguments)
                .unwrap_or_else(|_| Value::String(call.arguments.clone()));
            self.event(
                "tool_call",
                json!({"turn": turn, "id": call.id, "name": call.name, "arguments": arguments}),
            );
            if !self.json {
                note(&format!(
                    "-> {} {}",
                    call.name,
                    one_line(&call.arguments, 200)
                ));
            }
        }
        let (runner, tools, audit) = (&self.runner, &self.tools, &*self.audit);
        let (ran, recorded): (Vec<call::Ran>, _) = std::thread::scope(|scope| {
            let recorded = scope.spawn(move || match model_record {
                Some(record) => audit
                    .append("agent.model", record)
                    .map(|_| ())
                    .map_err(|e| anyhow!("cannot write the audit log: {e}")),
                None => Ok(()),
            });
            let handles: Vec<_> = calls
                .iter()
                .map(|call| scope.spawn(move || runner.run(tools, call)))
                .collect();
            let ran = handles
                .into_iter()
                .zip(calls)
                .map(|(h, call)| {
                    h.join().unwrap_or_else(|_| call::Ran {
                        result: ToolResult {
                            id: call.id.clone(),
                            content: "the tool call failed inside nanoclaw".into(),
                            is_error: true,
                        },
                        audit_seq: None,
                        invocation: None,
                        exit_status: None,
                        child_ms: 0.0,
                        sandbox_ms: None,
                    })
                })
                .collect();
            let recorded = recorded
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the audit recording thread panicked")));
            (ran, recorded)
        });
        recorded?;
        let slowest = ran.iter().map(|r| r.child_ms).fold(0.0, f64::max);
        let mut results = Vec::new();
        let mut tool_records = Vec::new();
        for (call, ran) in calls.iter().zip(ran) {
            tool_records.push(json!({
                "conversation": self.id, "turn": turn, "tool": call.name, "call_id": call.id,
                "invocation": ran.invocation, "seq": ran.audit_seq,
                "is_error": ran.result.is_error, "exit_status": ran.exit_status,
            }));
            self.event(
                "tool_result",
                json!({"turn": turn, "id": call.id, "name": call.name, "is_error": ran.result.is_error,
                       "content": ran.result.content, "audit_seq": ran.audit_seq,
                       "exit_status": ran.exit_status, "runner_ms": ran.child_ms,
                       "sandbox_ms": ran.sandbox_ms,
                       "overhead_ms": arrived.elapsed().as_secs_f64() * 1000.0 - slowest}),
            );
            if !self.json {
                let mark = if ran.result.is_error { "error" } else { "ok" };
                note(&format!(
                    "<- {} {mark}: {}",
                    call.name,
                    one_line(&ran.result.content, 200)
                ));
            }
            results.push(ran.result);
        }
        // Each run's own records are already durable; these only link them to the turn.
        let audit = self.audit.clone();
        let writer = std::thread::spawn(move || {
            for record in tool_records {
                if let Err(e) = audit.append("agent.tool", record) {
                    note(&format!("cannot write the audit log: {e}"));
                }
            }
        });
        self.settle();
        if let Ok(mut pending) = self.pending.lock() {
            *pending = Some(writer);
        }
        Ok(results)
    }

    /// Waits for the `agent.tool` records still being written.
    fn settle(&self) {
        let writer = self.pending.lock().ok().and_then(|mut p| p.take());
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    fn answer(&self, text: &str, turn: u64, _usage: Usage) -> Result<End> {
        self.end_record(turn, "answer", None);
        self.event(
            "final",
            json!({"turn": turn, "text": text, "reason": "answer"}),
        );
        Ok(End::Answer)
    }

    fn finish(&self, text: Option<&str>, reason: &str, turn: u64) -> Result<End> {
        self.end_record(turn, "limit", Some(reason));
        self.event(
            "final",
            json!({"turn": turn, "text": text, "reason": reason}),
        );
        if !self.json {
            eprintln!("nanoclaw agent: stopped: {reason}");
        }
        Ok(End::Limit)
    }

    fn end_record(&self, turn: u64, end: &str, reason: Option<&str>) {
        self.settle();
        let record = self.audit.append(
            "agent.end",
            json!({"conversation": self.id, "turn": turn, "end": end, "reason": reason}),
        );
        if let Err(e) = record {
            note(&format!("cannot write the audit log: {e}"));
        }
    }

    /// Line by line: each line is a task of the same conversation. Ctrl-C at the prompt
    /// clears the line; during a task it cancels the running tools, then the turn;
    /// Ctrl-D ends the session.
    fn interactive(&mut self) -> Result<ExitCode> {
        use rustyline::error::ReadlineError;
        signal_hook::flag::register(signal_hook::consts::SIGINT, self.interrupted.clone())
            .context("cannot handle Ctrl-C")?;
        let mut editor = rustyline::DefaultEditor::new().context("cannot set up line editing")?;
        loop {
            self.interrupted.store(false, Ordering::SeqCst);
            let line = match editor.readline("nanoclaw> ") {
                Ok(line) => line,
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => return Ok(ExitCode::SUCCESS),
                Err(error) => bail!("cannot read the terminal: {error}"),
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(line);
            if let Err(error) = self.task(line) {
                self.event("error", json!({"message": format!("{error:#}")}));
                eprintln!("nanoclaw agent: {error:#}");
            }
        }
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        format!("{flat}…")
    } else {
        flat
    }
}

impl Drop for Session {
    /// Never exit with a record half written.
    fn drop(&mut self) {
        self.settle();
    }
}
