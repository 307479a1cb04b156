//! `--http ADDR`: Streamable HTTP at `http://ADDR/mcp`, for clients that do not start the
//! server themselves.
//!
//! In front of the SDK's service: the path must be `/mcp`, and every request must carry
//! `Authorization: Bearer TOKEN` (compared in constant time; a request without it gets 401
//! and an `mcp.unauthorized` audit record). The SDK then checks `Host` (loopback names
//! unless `--allow-remote`) and `Origin` (absent, a loopback origin or an `--allow-origin`;
//! else 403), which keeps a web page the user visits from driving the tools (DNS
//! rebinding, cross-origin requests).
//!
//! A call's response stream closing cancels the call: the SDK does that for the
//! session-less 2026-07-28 requests; `Streams` does it for calls inside a session (the
//! handshake revisions), so a client that drops its connection leaves no sandbox running.
//!
//! This module must never serve a request that failed a check, never log or echo the
//! token, and never listen beyond loopback unless told.

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::Server;
use crate::{McpArgs, Shared};

const PATH: &str = "/mcp";

/// The header naming a handshake revision's session.
const SESSION_HEADER: &str = "mcp-session-id";

/// Browser origins on this machine, always accepted (any port).
const LOOPBACK_ORIGINS: [&str; 6] = [
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
];

/// At most this many `mcp.unauthorized` records a second; the rest are counted into the
/// next one, so a flood of bad requests costs the sender, not the log.
const UNAUTHORIZED_RECORDS_PER_SECOND: u64 = 10;

pub(crate) async fn serve(shared: Arc<Shared>, args: &McpArgs, addr: &str) -> Result<()> {
    let addr = crate::listen_addr(addr, args.allow_remote)?;
    let token = match &args.token_file {
        Some(path) => read_token(path)?,
        None => generate_token()?,
    };
    for origin in &args.allow_origin {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            bail!("--allow-origin {origin:?}: expected scheme://host[:port], e.g. https://app.example.com:443");
        }
    }
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_origins(
            LOOPBACK_ORIGINS
                .iter()
                .map(|o| o.to_string())
                .chain(args.allow_origin.iter().cloned()),
        )
        .enforce_origin_validation()
        .with_cancellation_token(shared.shutdown.child_token());
    if args.allow_remote {
        // Clients name this host however they reach it; the token is what admits them.
        config = config.disable_allowed_hosts();
    }
    let mcp = StreamableHttpService::new(
        {
            let shared = shared.clone();
            move || Ok(Server::new(shared.clone()))
        },
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))?;
    let bound = listener
        .local_addr()
        .context("read the listening address")?;
    if args.token_file.is_none() {
        eprintln!("nanoclaw mcp: bearer token (shown once): {token}");
    }
    eprintln!("nanoclaw mcp: listening on http://{bound}{PATH}");
    let gate = Arc::new(Gate {
        token,
        shared: shared.clone(),
        window: std::sync::Mutex::new((Instant::now(), 0)),
        suppressed: AtomicU64::new(0),
    });
    let _stop = crate::server::stop_signal(shared.shutdown.clone())?;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("nanoclaw mcp: accept: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => return Ok(()),
        };
        let gate = gate.clone();
        let mcp = mcp.clone();
        let shutdown = shared.shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let gate = gate.clone();
                let mcp = mcp.clone();
                async move {
                    if let Some(refusal) = gate.check(&request, peer).await {
                        return Ok::<_, Infallible>(refusal);
                    }
                    Ok(forward(&mcp, &gate.shared, request).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// Hands a checked request to the SDK. A `tools/call` in a session (the handshake
/// revisions) gets its response stream watched: when the client closes it, the call is
/// cancelled, as the SDK does itself for the session-less 2026-07-28 requests.
async fn forward(
    mcp: &StreamableHttpService<Server, LocalSessionManager>,
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> Reply {
    let (parts, body) = request.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY_BYTES).collect().await else {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large, or the request body could not be read",
        );
    };
    let body = body.to_bytes();
    let watch = watch(shared, &parts, &body);
    let response = mcp
        .handle(Request::from_parts(parts, Full::new(body)))
        .await;
    match watch {
        Some(guard) => response.map(|inner| {
            Watched {
                inner,
                _guard: guard,
            }
            .boxed()
        }),
        None => response,
    }
}

/// The biggest request body read (the SDK's own limit is below it).
const MAX_BODY_BYTES: usize = 16 << 20;

/// The `tools/call` requests of sessions whose response stream is open, by session and
/// request id; each token is cancelled when its stream is dropped.
#[derive(Default)]
pub(crate) struct Streams(Mutex<HashMap<String, CancellationToken>>);

/// A guard for `body` when it is a `tools/call` request in a session.
fn watch(shared: &Arc<Shared>, parts: &http::request::Parts, body: &[u8]) -> Option<StreamGuard> {
    let session = parts.headers.get(SESSION_HEADER)?.to_str().ok()?;
    let message: serde_json::Value = serde_json::from_slice(body).ok()?;
    if message.get("method")? != "tools/call" {
        return None;
    }
    let key = stream_key(session, message.get("id")?);
    let token = CancellationToken::new();
    shared
        .streams
        .0
        .lock()
        .ok()?
        .insert(key.clone(), token.clone());
    Some(StreamGuard {
        shared: shared.clone(),
        key,
        token,
    })
}

impl Streams {
    /// The token of the call `context` answers: cancelled when its stream closes; never
    /// cancelled for a call outside an HTTP session.
    pub fn closed(&self, context: &RequestContext<RoleServer>) -> CancellationToken {
        let session = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get(SESSION_HEADER))
            .and_then(|value| value.to_str().ok());
        let id = serde_json::to_value(&context.id).unwrap_or_default();
        session
            .and_then(|session| {
                let streams = self.0.lock().ok()?;
                streams.get(&stream_key(session, &id)).cloned()
            })
            .unwrap_or_default()
    }
}

fn stream_key(session: &str, id: &serde_json::Value) -> String {
    format!("{session} {id}")
}

/// Cancels its call's token when the response body is dropped: sent to the end, or the
/// client gone (a finished call is not affected).
struct StreamGuard {
    shared: Arc<Shared>,
    key: String,
    token: CancellationToken,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut streams) = self.shared.streams.0.lock() {
            streams.remove(&self.key);
        }
        self.token.cancel();
    }
}

/// A response body that holds its call's `StreamGuard` as long as it is being sent.
struct Watched {
    inner: BoxBody<Bytes, Infallible>,
    _guard: StreamGuard,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The checks every request passes before the SDK sees it.
struct Gate {
    token: String,
    shared: Arc<Shared>,
    /// Start of the current second and the records written in it.
    window: Mutex<(Instant, u64)>,
    suppressed: AtomicU64,
}

impl Gate {
    /// `None` when the request may go on; else the reply that refuses it.
    async fn check(
        &self,
        request: &Request<Incoming>,
        peer: std::net::SocketAddr,
    ) -> Option<Reply> {
        if request.uri().path() != PATH {
            return Some(reply(
                StatusCode::NOT_FOUND,
                "Not Found: the MCP endpoint is /mcp",
            ));
        }
        let presented = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if presented.is_some_and(|token| same(token.trim().as_bytes(), self.token.as_bytes())) {
            return None;
        }
        let why = if presented.is_some() {
            "wrong bearer token"
        } else {
            "no bearer token"
        };
        self.record_unauthorized(request, peer, why).await;
        let mut refusal = reply(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: send Authorization: Bearer TOKEN (the token nanoclaw mcp printed, or the content of its --token-file)",
        );
        refusal.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        Some(refusal)
    }

    async fn record_unauthorized(
        &self,
        request: &Request<Incoming>,
        peer: std::net::SocketAddr,
        why: &str,
    ) {
        let admitted = match self.window.lock() {
            Ok(mut window) => {
                if window.0.elapsed() >= Duration::from_secs(1) {
                    *window = (Instant::now(), 0);
                }
                window.1 += 1;
                window.1 <= UNAUTHORIZED_RECORDS_PER_SECOND
            }
            Err(_) => true,
        };
        if !admitted {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let origin = request
            .headers()
            .get(hyper::header::ORIGIN)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        crate::audit(
            &self.shared,
            "mcp.unauthorized",
            json!({
                "peer": peer.to_string(),
                "method": request.method().as_str(),
                "path": request.uri().path(),
                "origin": origin,
                "reason": why,
                "suppressed_before": suppressed,
            }),
        )
        .await;
    }
}

fn reply(status: StatusCode, text: &'static str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *response.status_mut() = status;
    response
}

/// Compares in time that depends only on the lengths, not on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token file: yours alone (like a key file), at least 16 characters.
fn read_token(path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("open token file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "token file {} can be read by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read token file {}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "token file {}: the token must be one line of at least 16 characters without spaces",
            path.display()
        );
    }
    Ok(token.to_owned())
}

/// 32 random bytes, hex.
fn generate_token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("read /dev/urandom for a token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdef", b"abcdef"));
        assert!(!same(b"abcdef", b"abcdeg"));
        assert!(!same(b"abc", b"abcdef"));
    }

    #[test]
    fn generated_tokens_are_64_hex_digits_and_differ() -> Result<()> {
        let (a, b) = (generate_token()?, generate_token()?);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        Ok(())
    }
}
