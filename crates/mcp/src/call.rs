//! One `tools/call`: validate the arguments against the tool's parameters, wait for a free
//! slot, run one `nanoclaw run --json` child (pre-built or started now: `nanoclaw_pool`), report progress each second, and turn its
//! outcome into a result a model can act on.
//!
//! The child is the whole sandbox: it writes the audit records, applies the writes, and
//! its lifeline kills the sandbox if it dies. So stopping a call is stopping the child:
//! SIGTERM (it tears the sandbox down and records the end), SIGKILL after a grace period
//! (the lifeline still takes the sandbox with it). A child also gets SIGTERM when this
//! server dies (parent-death signal), so a killed server leaves no sandbox behind.
//!
//! This module must never pass the runner anything a client chose except the tool's name
//! and the arguments the tool's parameters accepted: no option of `run`, no path.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nanoclaw_policy::Tool;
use rmcp::model::{
    CallToolResult, ContentBlock as Content, JsonObject, ProgressNotificationParam, ProgressToken,
};
use rmcp::service::{Peer, RequestContext, RoleServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// How long a child has to tear its sandbox down after SIGTERM before it gets SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// How often a client that asked for progress hears about a call.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The stderr of the runner itself (its notices) kept for the model.
const MAX_NOTICES_BYTES: usize = 8 * 1024;

/// Where the call is, for progress and for the audit record of a cancellation.
#[derive(Clone, Copy)]
enum Phase {
    Queued,
    Running,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
        }
    }
}

/// Progress notifications for one call, when the client asked for them.
struct Progress {
    target: Option<(Peer<RoleServer>, ProgressToken)>,
    started: Instant,
}

impl Progress {
    async fn report(&self, message: String) {
        let Some((peer, token)) = &self.target else {
            return;
        };
        let elapsed = self.started.elapsed().as_secs_f64().floor();
        let param = ProgressNotificationParam::new(token.clone(), elapsed).with_message(message);
        // A client that went away is noticed by the cancellation, not here.
        let _ = peer.notify_progress(param).await;
    }
}

/// Runs `tool` with `arguments` for one request; the result always answers it (a
/// cancelled call's result is dropped by the SDK).
pub(crate) async fn call(
    shared: &Shared,
    tool: &Tool,
    arguments: JsonObject,
    context: RequestContext<RoleServer>,
) -> CallToolResult {
    if let Err(error) = tool.bind(&arguments) {
        return refused(format!(
            "invalid arguments for tool `{}`: {error}",
            tool.name
        ));
    }
    // `run` reads the policy file again: it must still be the one whose tools the client
    // was shown.
    match crate::policy_digest(&shared.policy_path) {
        Ok(digest) if digest == shared.policy_sha256 => {}
        Ok(_) => {
            return refused(format!(
                "the policy file {} changed since this server started; restart `nanoclaw mcp` to serve it",
                shared.policy_path.display()
            ))
        }
        Err(error) => return refused(format!("{error:#}")),
    }
    let params = Value::Object(arguments).to_string();
    let progress = Progress {
        target: context
            .meta
            .get_progress_token()
            .map(|token| (context.peer.clone(), token)),
        started: Instant::now(),
    };
    // Over HTTP in a session, the call also ends when its response stream is closed.
    let stream_closed = shared.streams.closed(&context);
    let request = Request {
        shared,
        tool: &tool.name,
        id: serde_json::to_value(&context.id).unwrap_or(Value::Null),
        cancel: &context.ct,
        stream_closed,
        progress: &progress,
    };
    request.run(&params).await
}

struct Request<'a> {
    shared: &'a Shared,
    tool: &'a str,
    id: Value,
    cancel: &'a CancellationToken,
    /// Never cancelled but over HTTP in a session (`http::Streams`).
    stream_closed: CancellationToken,
    progress: &'a Progress,
}

impl Request<'_> {
    async fn run(&self, params: &str) -> CallToolResult {
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // Waiting for a slot: the acquire future keeps its place in the (fair) queue.
        let acquire = self.shared.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        let _slot = loop {
            tokio::select! {
                biased;
                reason = self.cancelled() => return self.cancelled_result(Phase::Queued, reason).await,
                slot = &mut acquire => match slot {
                    Ok(slot) => break slot,
                    Err(_) => return refused("the server is stopping".into()),
                },
                _ = ticks.tick() => {
                    let message = format!(
                        "queued for {}s: all {} sandboxes are busy",
                        self.progress.started.elapsed().as_secs(),
                        self.shared.max_concurrent
                    );
                    self.progress.report(message).await;
                }
            }
        };

        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(error) => {
                return refused(format!(
                    "could not start {}: {error}",
                    self.shared.launcher.exe.display()
                ))
            }
        };
        let running_since = Instant::now();
        let pid = child.id();
        // Signals go through a pidfd: never to another process that reused the pid.
        let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        let stdin = child
            .stdin
            .take()
            .and_then(|s| tokio::process::ChildStdin::from_std(s).ok());
        let stdout = child
            .stdout
            .take()
            .and_then(|s| tokio::process::ChildStdout::from_std(s).ok());
        let stderr = child
            .stderr
            .take()
            .and_then(|s| tokio::process::ChildStderr::from_std(s).ok());
        let mut waiter = tokio::task::spawn_blocking(move || child.wait());
        let mut finished = Box::pin(async {
            let (_, stdout, stderr, status) = tokio::join!(
                write_all(stdin, params.as_bytes()),
                read_all(stdout),
                read_all(stderr),
                &mut waiter
            );
            (stdout, stderr, status)
        });
        let (stdout, stderr, status) = loop {
            tokio::select! {
                biased;
                done = &mut finished => break done,
                reason = self.cancelled() => {
                    drop(finished);
                    terminate(pid, pidfd.as_ref(), &mut waiter).await;
                    return self.cancelled_result(Phase::Running, reason).await;
                }
                _ = ticks.tick() => {
                    let message = format!("running for {}s", running_since.elapsed().as_secs());
                    self.progress.report(message).await;
                }
            }
        };
        let status = match status {
            Ok(status) => status,
            Err(error) => Err(std::io::Error::other(error)),
        };
        match status {
            Ok(status) => outcome(&stdout, &stderr, status.code()),
            Err(error) => refused(format!("could not wait for the sandbox: {error}")),
        }
    }

    /// The `nanoclaw run` child for this call: a pre-built one from the pool when one
    /// waits, else one started now (`nanoclaw_pool`: the command line, stdin for the
    /// arguments, killed with the server).
    fn spawn(&self) -> std::io::Result<std::process::Child> {
        match self.shared.pool.take(self.tool) {
            Some(child) => Ok(child),
            None => self.shared.launcher.spawn(self.tool),
        }
    }

    /// Resolves with the reason once the client cancels the request or the server stops.
    async fn cancelled(&self) -> &'static str {
        tokio::select! {
            _ = self.cancel.cancelled() => "cancelled by the client",
            _ = self.stream_closed.cancelled() => "the client closed the call's HTTP stream",
            _ = self.shared.shutdown.cancelled() => "the server stopped (client disconnected or signal)",
        }
    }

    async fn cancelled_result(&self, phase: Phase, reason: &'static str) -> CallToolResult {
        crate::audit(
            self.shared,
            "mcp.cancelled",
            json!({
                "tool": self.tool,
                "request_id": self.id,
                "phase": phase.as_str(),
                "reason": reason,
                "elapsed_ms": u64::try_from(self.progress.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "policy": self.shared.policy_path,
            }),
        )
        .await;
        refused(format!("the call was stopped: {reason}"))
    }
}

/// SIGTERM, then SIGKILL after the grace period; returns once the child is reaped.
async fn terminate(
    pid: u32,
    pidfd: Option<&OwnedFd>,
    waiter: &mut tokio::task::JoinHandle<std::io::Result<std::process::ExitStatus>>,
) {
    send(
        pid,
        pidfd,
        waiter.is_finished(),
        rustix::process::Signal::TERM,
    );
    if tokio::time::timeout(GRACE, &mut *waiter).await.is_err() {
        send(
            pid,
            pidfd,
            waiter.is_finished(),
            rustix::process::Signal::KILL,
        );
        let _ = waiter.await;
    }
}

/// A signal to the call's child: through its pidfd, or (a kernel without pidfds) by pid
/// while it is not reaped.
fn send(pid: u32, pidfd: Option<&OwnedFd>, reaped: bool, signal: rustix::process::Signal) {
    match pidfd {
        Some(fd) => {
            let _ = rustix::process::pidfd_send_signal(fd, signal);
        }
        None if !reaped => {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
        None => {}
    }
}

/// Writes `bytes` and closes the pipe; a child that exits without reading them is not an
/// error here (its outcome says why).
async fn write_all(stdin: Option<tokio::process::ChildStdin>, bytes: &[u8]) {
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(bytes).await;
    }
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut stream) = stream {
        let _ = stream.read_to_end(&mut bytes).await;
    }
    bytes
}

/// A call that did not run (or not to the end): `isError`, with the reason as the text a
/// model reads.
fn refused(reason: String) -> CallToolResult {
    let mut result = CallToolResult::error(vec![Content::text(reason.clone())]);
    result.structured_content = Some(json!({ "exit_status": 125, "refused": reason }));
    result
}

/// The result of a finished `nanoclaw run --json`: its outcome, or its refusal.
fn outcome(stdout: &[u8], stderr: &[u8], code: Option<i32>) -> CallToolResult {
    let notices = tail(stderr, MAX_NOTICES_BYTES);
    let parsed: Option<Value> = serde_json::from_slice(stdout).ok();
    let Some(Value::Object(outcome)) = parsed else {
        return refused(format!(
            "nanoclaw run ended (exit status {}) without an outcome: {}",
            code.map_or("none".into(), |c| c.to_string()),
            notices.trim()
        ));
    };
    if let Some(error) = outcome.get("error") {
        let reason = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        // A run that started and failed (a missing program: 127) keeps its own status.
        let status = outcome
            .get("exit_status")
            .and_then(Value::as_i64)
            .unwrap_or(125);
        let mut result = refused(reason.clone());
        if status != 125 {
            result.structured_content = Some(json!({ "exit_status": status, "error": reason }));
        }
        return result;
    }
    let field = |name: &str| outcome.get(name).cloned().unwrap_or(Value::Null);
    let text = |name: &str| {
        outcome
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let exit_status = outcome
        .get("exit_status")
        .and_then(Value::as_i64)
        .or(code.map(i64::from))
        .unwrap_or(125);
    let mut command_stderr = text("stderr");
    if !notices.trim().is_empty() {
        if !command_stderr.is_empty() && !command_stderr.ends_with('\n') {
            command_stderr.push('\n');
        }
        command_stderr.push_str(&notices);
    }
    let audit = field("audit");
    let structured = json!({
        "exit_status": exit_status,
        "exit_code": field("exit_code"),
        "signal": field("signal"),
        "timed_out": field("timed_out").as_bool().unwrap_or(false),
        "oom_killed": field("oom_killed").as_bool().unwrap_or(false),
        "duration_ms": field("duration_ms").as_u64().unwrap_or(0),
        "stdout_truncated": field("stdout_truncated").as_bool().unwrap_or(false),
        "stderr_truncated": field("stderr_truncated").as_bool().unwrap_or(false),
        "stdout_bytes": field("stdout_bytes").as_u64().unwrap_or(0),
        "stderr_bytes": field("stderr_bytes").as_u64().unwrap_or(0),
        "audit_seq": audit.get("seq").cloned().unwrap_or(Value::Null),
        "invocation": audit.get("invocation").cloned().unwrap_or(Value::Null),
        "writes": field("writes"),
    });
    let content = vec![Content::text(text("stdout")), Content::text(command_stderr)];
    let mut result = if exit_status == 0 {
        CallToolResult::success(content)
    } else {
        CallToolResult::error(content)
    };
    result.structured_content = Some(structured);
    result
}

/// The last `max` bytes of `bytes`, as text.
fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_run_is_its_output_and_structured_outcome() {
        let run = json!({"exit_code": 3, "signal": null, "timed_out": false, "oom_killed": false,
            "duration_ms": 12, "stdout": "out", "stderr": "err", "stdout_truncated": false,
            "stderr_truncated": false, "exit_status": 3, "audit": {"seq": 7, "invocation": "abc"}});
        let result = outcome(run.to_string().as_bytes(), b"", Some(3));
        assert_eq!(result.is_error, Some(true));
        let structured = result.structured_content.unwrap();
        assert_eq!(structured["exit_status"], 3);
        assert_eq!(structured["audit_seq"], 7);
        assert_eq!(structured["invocation"], "abc");
    }

    #[test]
    fn a_refusal_is_an_error_with_the_reason() {
        let run = json!({"error": "tool `x` takes no extra arguments", "exit_status": 125});
        let result = outcome(run.to_string().as_bytes(), b"", Some(125));
        assert_eq!(result.is_error, Some(true));
        let text = serde_json::to_string(&result.content).unwrap();
        assert!(text.contains("takes no extra arguments"), "{text}");
    }

    #[test]
    fn no_outcome_says_so_with_the_runner_stderr() {
        let result = outcome(b"", b"nanoclaw: boom\n", Some(2));
        let text = serde_json::to_string(&result.content).unwrap();
        assert!(
            text.contains("without an outcome") && text.contains("boom"),
            "{text}"
        );
    }
}
