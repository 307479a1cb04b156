//! The thin adapter to the SDK: a `ServerHandler` that lists the catalog and hands each
//! call to `call`, and the stdio transport (the default) with its shutdown rules.
//!
//! Protocol revisions are the SDK's: the `initialize` handshake (2025-06-18, 2025-11-25
//! and older) and the handshake-free 2026-07-28 (per-request metadata, `server/discover`).
//! This module must never answer a call itself: every call goes through `call`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as McpTool,
};
use rmcp::service::{RequestContext, RoleServer, ServerInitializeError};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::Shared;

const INSTRUCTIONS: &str = "Every tool call runs in its own short-lived sandbox with only \
    the files, network and limits its policy gives that tool; nothing persists between calls \
    except changes to writable mounts. A result's structuredContent tells how the command \
    ended (exit_status, timed_out, oom_killed) and where it is in the audit log.";

/// One connection's handler; every connection shares the server's state.
#[derive(Clone)]
pub(crate) struct Server {
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(shared: Arc<Shared>) -> Server {
        Server { shared }
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("nanoclaw", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.shared.catalog.tools().to_vec(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<McpTool> {
        self.shared.catalog.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let shared = &self.shared;
        let tool = shared.policy.tool(&request.name).map_err(|_| {
            let known: Vec<&str> = shared
                .policy
                .tools()
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            ErrorData::invalid_params(
                format!(
                    "unknown tool `{}`; this server has: {}",
                    request.name,
                    known.join(", ")
                ),
                None,
            )
        })?;
        let arguments = request.arguments.unwrap_or_default();
        let result = shared
            .calls
            .track_future(crate::call::call(shared, tool, arguments, context))
            .await;
        Ok(result.into())
    }
}

/// Serves one client on stdin/stdout until it closes stdin or a stop signal arrives.
pub(crate) async fn serve_stdio(shared: Arc<Shared>) -> Result<()> {
    let (reader, writer) = rmcp::transport::stdio_pipes();
    // Closing stdin is how a stdio client says it is gone: stop its sandboxes at once
    // rather than after the SDK's drain period.
    let reader = EofWatch {
        inner: reader,
        eof: shared.shutdown.clone(),
    };
    let stop = stop_signal(shared.shutdown.clone())?;
    let service = tokio::select! {
        service = Server::new(shared.clone()).serve((reader, writer)) => service,
        _ = shared.shutdown.cancelled() => return Ok(()),
    };
    let running = match service {
        Ok(running) => running,
        // A client that left before initializing is not an error of the server.
        Err(ServerInitializeError::ConnectionClosed(_)) => return Ok(()),
        Err(error) => return Err(error).context("serve MCP on stdio"),
    };
    tokio::select! {
        _ = running.waiting() => {}
        _ = shared.shutdown.cancelled() => {}
    }
    drop(stop);
    Ok(())
}

/// Cancels `shutdown` on SIGTERM, SIGINT or SIGHUP.
pub(crate) fn stop_signal(shutdown: CancellationToken) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("handle SIGHUP")?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
        shutdown.cancel();
    }))
}

/// A reader that cancels `eof` when its input ends (or fails).
struct EofWatch<R> {
    inner: R,
    eof: CancellationToken,
}

impl<R: AsyncRead + Unpin> AsyncRead for EofWatch<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if wanted && buf.filled().len() == before => self.eof.cancel(),
            Poll::Ready(Err(_)) => self.eof.cancel(),
            _ => {}
        }
        polled
    }
}
