//! `nanoclaw mcp`: a policy's tools served over the Model Context Protocol, every call in
//! its own sandbox.
//!
//! A client (Claude Code, Codex, Claude Desktop, an Agents SDK) sees exactly the tools of
//! one policy file, with the input schema their declared parameters give, and nothing else.
//! Each `tools/call` is validated against the tool's parameters, then runs as one
//! `nanoclaw run --policy F --tool T --params-json - --json` child (the arguments on its stdin): the runner the CLI
//! uses, with its audit records, its refusals and its lifeline. This crate speaks the
//! protocol (through `rmcp`, the official SDK, pinned exactly) and manages those children:
//! the queue, progress, cancellation and shutdown.
//!
//! - `catalog`: what `tools/list` shows for a policy (schemas, annotations)
//! - `call`: one `tools/call`: bind, queue, run the child, progress, cancel, result
//! - `server`: the `ServerHandler` tying them to the SDK, and the stdio transport
//! - `http`: Streamable HTTP: loopback, bearer token, Origin
//!
//! This crate must never build a `SandboxSpec` itself or widen what a tool gets: a client
//! can only fill in the parameters a tool declares; everything else is the policy's. It
//! belongs at the edge (async, protocol code): the trusted core never imports it.

mod call;
mod catalog;
mod http;
mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use nanoclaw_audit::AuditLog;
use nanoclaw_policy::{lint, policy_sha256, Policy};

/// Exit status for errors of nanoclaw itself, as the CLI uses it.
const RUNNER_ERROR: u8 = 125;

#[derive(Args, Debug)]
pub struct McpArgs {
    /// Policy file whose tools are served (and nothing else)
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The task directory the tools' ${workspace} mounts stand for [default: the current
    /// directory]
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio (e.g. 127.0.0.1:8765)
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Let --http listen on an address that is not loopback
    #[arg(long, requires = "http")]
    allow_remote: bool,
    /// File holding the bearer token HTTP clients must send [default: a random one,
    /// printed once to stderr]
    #[arg(long, value_name = "FILE", requires = "http")]
    token_file: Option<PathBuf>,
    /// Also accept requests from this browser Origin (scheme://host[:port]; repeatable);
    /// loopback origins are always accepted
    #[arg(long, value_name = "ORIGIN", requires = "http")]
    allow_origin: Vec<String>,
    /// Sandboxes running at once; calls beyond wait in a queue [default: the CPU count]
    #[arg(long, value_name = "N")]
    max_concurrent: Option<usize>,
    /// Audit log for the runs and the server's own records [default: $NANOCLAW_AUDIT, else
    /// $XDG_STATE_HOME/nanoclaw/audit.jsonl, else ~/.local/state/nanoclaw/audit.jsonl]
    #[arg(long, value_name = "PATH")]
    audit: Option<PathBuf>,
    /// Sandboxes kept pre-built per tool, each for one call (0: none; every call starts its
    /// sandbox when it comes)
    #[arg(long, value_name = "N", default_value_t = nanoclaw_pool::DEFAULT_SIZE)]
    pool: usize,
    /// A pre-built sandbox that waited this long is discarded and replaced (e.g. 500ms, 60s, 5m)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = nanoclaw_pool::parse_duration)]
    pool_max_idle: std::time::Duration,
}

/// Everything a call needs, shared by every connection of one server.
pub(crate) struct Shared {
    pub policy: Policy,
    pub policy_path: PathBuf,
    /// The policy file's sha256 when the server started: what `tools/list` shows.
    pub policy_sha256: String,
    pub workspace: PathBuf,
    /// Starts the `nanoclaw run` child of a call (this executable).
    pub launcher: Arc<nanoclaw_pool::Launcher>,
    /// The children pre-built per tool; stopped once no call runs.
    pub pool: nanoclaw_pool::Pool,
    pub audit: Arc<AuditLog>,
    pub catalog: catalog::Catalog,
    pub slots: Arc<tokio::sync::Semaphore>,
    pub max_concurrent: usize,
    /// Cancelled when the server stops (signal, stdin closed): every call ends its child.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The calls in flight, waited for before the server exits.
    pub calls: tokio_util::task::TaskTracker,
    /// HTTP: the response streams of calls in a session, which cancel the call when closed.
    pub streams: http::Streams,
}

pub fn main(args: McpArgs) -> ExitCode {
    let shared = match prepare(&args) {
        Ok(shared) => Arc::new(shared),
        Err(error) => {
            eprintln!("nanoclaw mcp: {error:#}");
            return ExitCode::from(RUNNER_ERROR);
        }
    };
    // One thread: the work is in the sandboxes; the server only moves bytes. It also makes
    // the children's parent-death signal reliable (it follows the thread that forked).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("nanoclaw mcp: start the async runtime: {error}");
            return ExitCode::from(RUNNER_ERROR);
        }
    };
    eprintln!(
        "nanoclaw mcp: serving {} tool(s) of {} on workspace {}",
        shared.policy.tools().len(),
        shared.policy_path.display(),
        shared.workspace.display()
    );
    let result = runtime.block_on(async {
        let served = match &args.http {
            Some(addr) => http::serve(shared.clone(), &args, addr).await,
            None => server::serve_stdio(shared.clone()).await,
        };
        // Whatever ended the server, no sandbox outlives it.
        shared.shutdown.cancel();
        shared.calls.close();
        shared.calls.wait().await;
        shared.pool.stop();
        served
    });
    // A pending read of a blocking stdin cannot be cancelled: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nanoclaw mcp: {error:#}");
            ExitCode::from(RUNNER_ERROR)
        }
    }
}

/// Checks everything that can be checked before serving: a policy that parses and passes
/// the lint, a workspace, an audit log that can be written, this executable.
fn prepare(args: &McpArgs) -> Result<Shared> {
    let policy = Policy::load(&args.policy).map_err(|diagnostics| anyhow!("{diagnostics}"))?;
    let report = lint(&policy);
    if report.has_errors() {
        bail!(
            "policy {} is refused by the policy check; no tool is served:\n{report}",
            args.policy.display()
        );
    }
    if policy.tools().is_empty() {
        bail!("policy {} names no tools", args.policy.display());
    }
    let policy_path = std::fs::canonicalize(&args.policy)
        .with_context(|| format!("open policy {}", args.policy.display()))?;
    let policy_sha256 = policy_digest(&policy_path)?;
    let workspace = match &args.workspace {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("read the current directory")?,
    };
    let workspace = std::fs::canonicalize(&workspace)
        .with_context(|| format!("open workspace {}", workspace.display()))?;
    if !workspace.is_dir() {
        bail!("workspace {} is not a directory", workspace.display());
    }
    let audit_path = match &args.audit {
        Some(path) => absolute(path)?,
        None => AuditLog::default_path()?,
    };
    let audit = AuditLog::open(&audit_path)?;
    let exe = std::env::current_exe().context("find the nanoclaw executable")?;
    let max_concurrent = match args.max_concurrent {
        Some(0) => bail!("--max-concurrent must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let catalog = catalog::Catalog::new(&policy);
    let launcher = Arc::new(nanoclaw_pool::Launcher {
        exe,
        policy: policy_path.clone(),
        workspace: workspace.clone(),
        audit: audit.path().to_path_buf(),
        env_remove: Vec::new(),
    });
    let config = nanoclaw_pool::Config {
        size: args.pool,
        max_idle: args.pool_max_idle,
    };
    let pool = nanoclaw_pool::Pool::start(
        launcher.clone(),
        config,
        policy.tools(),
        Box::new(|line: &str| eprintln!("nanoclaw mcp: {line}")),
    )
    .context("start the pool's thread")?;
    Ok(Shared {
        policy,
        policy_path,
        policy_sha256,
        workspace,
        launcher,
        pool,
        audit: Arc::new(audit),
        catalog,
        slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent)),
        max_concurrent,
        shutdown: tokio_util::sync::CancellationToken::new(),
        calls: tokio_util::task::TaskTracker::new(),
        streams: http::Streams::default(),
    })
}

/// The sha256 of the policy file as it is now.
pub(crate) fn policy_digest(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("read policy {}", path.display()))?;
    Ok(policy_sha256(&bytes))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("read the current directory")?
        .join(path))
}

/// `--http ADDR`: an IP and port; loopback unless `--allow-remote`.
fn listen_addr(addr: &str, allow_remote: bool) -> Result<SocketAddr> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| anyhow!("--http {addr:?}: expected IP:PORT, e.g. 127.0.0.1:8765"))?;
    if !parsed.ip().is_loopback() && !allow_remote {
        bail!(
            "--http {addr}: not a loopback address; anyone who can reach it and holds the \
             token could run the policy's tools: add --allow-remote if that is meant"
        );
    }
    Ok(parsed)
}

/// Appends one of the server's own records (`mcp.*`) off the async thread.
pub(crate) async fn audit(shared: &Shared, kind: &'static str, data: serde_json::Value) {
    let log = shared.audit.clone();
    let written = tokio::task::spawn_blocking(move || log.append(kind, data)).await;
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => eprintln!("nanoclaw mcp: could not record {kind}: {error}"),
        Err(error) => eprintln!("nanoclaw mcp: could not record {kind}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_listens_on_loopback_unless_told() {
        assert!(listen_addr("127.0.0.1:0", false).is_ok());
        assert!(listen_addr("[::1]:8765", false).is_ok());
        assert!(listen_addr("0.0.0.0:8765", false).is_err());
        assert!(listen_addr("0.0.0.0:8765", true).is_ok());
        assert!(listen_addr("localhost", false).is_err());
    }
}
