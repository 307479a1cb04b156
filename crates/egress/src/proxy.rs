//! The proxy's lifecycle, behind a blocking API: one background thread runs a tokio
//! runtime, and each sandbox gets its own Unix socket whose connections are judged by that
//! sandbox's policy alone. The trusted core calls `start`, `add_sandbox`,
//! `remove_sandbox` and `shutdown`, and never sees async code.
//!
//! Identity is the socket: a connection is served with the policy of the socket it arrived
//! on, and nothing in a request can name another sandbox. The socket is created mode 0666
//! (the sandbox's uid must be able to connect) as `egress.sock` inside a directory the
//! caller creates for this one sandbox (0711, owned by the runner) and bind-mounts, or
//! whose socket it bind-mounts, into that sandbox only. This module must never serve two
//! sandboxes from one socket, nor leave a removed sandbox's connections open.
//!
//! A sandbox can connect far faster than the proxy should work for it, so each socket is
//! bounded: at most `max_connections_per_sandbox` open at once and `accepts_per_second`
//! new ones (a token bucket of `accept_burst`). Over either limit the accept loop pauses,
//! and the connections it holds back wait, unread, in the kernel's queue (which, once
//! full, makes the sandbox's own connect fail): the flood costs the sandbox, not the
//! runner. Records go through a bounded queue (`ledger`), refusals aggregated.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::connection::{self, Intercept, Sandbox};
use crate::decision::Decision;
use crate::ledger::Ledger;
use crate::policy::Policy;
use crate::resolve::Resolver;
use crate::secrets::{SecretError, SecretSubstitution, Secrets};
use crate::tls::{self, Authority};

/// The name of the socket `add_sandbox` creates in the directory it is given.
pub const SOCKET_NAME: &str = "egress.sock";

/// How long `remove_sandbox` waits for the sandbox's connections to record their close
/// and for its last records to be taken by the caller.
const REMOVE_WAIT: Duration = Duration::from_secs(2);

/// Records waiting between the proxy and the caller's receiver, per sandbox.
const RECORD_QUEUE: usize = 64;

/// Limits and the resolver, shared by every sandbox of one proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// For resolving a name, and for each connect attempt.
    pub connect_timeout: Duration,
    /// An allowed connection is closed when no byte has moved either way for this long.
    pub idle_timeout: Duration,
    /// From accepting a connection to a complete request head (or SOCKS5 request).
    pub header_timeout: Duration,
    /// With this many connections open on one sandbox's socket, new ones wait unread.
    pub max_connections_per_sandbox: usize,
    /// New connections accepted per second on one sandbox's socket, on average...
    pub accepts_per_second: u32,
    /// ...and at most this many at once after a quiet spell.
    pub accept_burst: u32,
    /// Repeated identical refusals become one record per this interval.
    pub record_interval: Duration,
    /// Refusal records one sandbox may cause in all; further refusals are only counted.
    pub max_refusal_records: usize,
    /// A longer HTTP request head is refused with 431.
    pub max_header_bytes: usize,
    pub resolver: Resolver,
    /// For intercepted hosts (`add_sandbox_with_secrets`): verify upstream certificates
    /// against the CA certificates in this PEM file *instead of* the host's trust store
    /// (for tests: `--ca-file`). `None`: the host's store (rustls-native-certs).
    pub upstream_roots: Option<PathBuf>,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            header_timeout: Duration::from_secs(10),
            max_connections_per_sandbox: 128,
            accepts_per_second: 1000,
            accept_burst: 1000,
            record_interval: Duration::from_secs(1),
            max_refusal_records: 512,
            max_header_bytes: 16 * 1024,
            resolver: Resolver::System,
            upstream_roots: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("start the egress proxy thread: {0}")]
    Start(std::io::Error),
    #[error("bind the egress socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("make the egress socket {path} connectable: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("remove the egress socket {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A secret given to `add_sandbox_with_secrets` cannot be used (never shows its value).
    #[error("egress proxy: {0}")]
    Secret(#[from] SecretError),
    /// The roots for verifying intercepted upstreams could not be loaded, or the sandbox's
    /// certificate authority could not be made.
    #[error("egress proxy TLS interception: {0}")]
    Tls(String),
}

/// The host-side egress proxy.
pub struct Proxy {
    runtime: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    config: Arc<ProxyConfig>,
    connection_ids: Arc<AtomicU64>,
    next_sandbox: AtomicU64,
    sandboxes: Mutex<HashMap<u64, Registered>>,
}

/// One sandbox's socket, as returned by `Proxy::add_sandbox`.
#[derive(Debug)]
pub struct SandboxEndpoint {
    id: u64,
    socket: PathBuf,
}

impl SandboxEndpoint {
    /// The socket to mount into the sandbox.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

struct Registered {
    cancel: watch::Sender<bool>,
    /// Disconnects (or receives) once every connection of the sandbox has ended.
    done: std::sync::mpsc::Receiver<()>,
    socket: PathBuf,
}

impl Proxy {
    /// Starts the proxy's thread. No socket exists until `add_sandbox`.
    pub fn start(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("nanoclaw-egress".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Lookups still blocking in getaddrinfo, and records no one takes, are
                // abandoned, not waited for.
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .map_err(ProxyError::Start)?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| ProxyError::Start(std::io::Error::other("the proxy thread died")))?
            .map_err(ProxyError::Start)?;
        Ok(Proxy {
            runtime,
            stop: Some(stop),
            thread: Some(thread),
            config: Arc::new(config),
            connection_ids: Arc::new(AtomicU64::new(1)),
            next_sandbox: AtomicU64::new(1),
            sandboxes: Mutex::new(HashMap::new()),
        })
    }

    /// Listens for one sandbox on `dir/egress.sock` (which must not exist yet), judging
    /// every connection on it by `policy` and sending every record to `events` (a bounded
    /// channel: while it is full, allowed connections wait and refusals are counted). The
    /// channel disconnects once the sandbox is removed and its last record sent.
    pub fn add_sandbox(
        &self,
        dir: &Path,
        policy: Policy,
        events: SyncSender<Decision>,
    ) -> Result<SandboxEndpoint, ProxyError> {
        self.add(dir, policy, events, Secrets::default(), None)
    }

    /// `add_sandbox`, and the proxy substitutes `secrets` in the sandbox's requests (see
    /// `SecretSubstitution`). With at least one secret, a certificate authority is made for
    /// this sandbox alone, in memory, and its certificate (PEM, no key) is returned: the
    /// sandbox must trust it (its CA bundle) for the hosts listed in the secrets, whose
    /// CONNECT tunnels the proxy then terminates; every other host stays a plain tunnel.
    /// Upstream certificates of intercepted hosts are verified against the host's trust
    /// store, or `ProxyConfig::upstream_roots`. Without secrets: `add_sandbox`, and `None`.
    pub fn add_sandbox_with_secrets(
        &self,
        dir: &Path,
        policy: Policy,
        events: SyncSender<Decision>,
        secrets: Vec<SecretSubstitution>,
    ) -> Result<(SandboxEndpoint, Option<String>), ProxyError> {
        if secrets.is_empty() {
            return self.add_sandbox(dir, policy, events).map(|e| (e, None));
        }
        let secrets = Secrets::new(secrets)?;
        let roots = tls::roots(self.config.upstream_roots.as_deref()).map_err(ProxyError::Tls)?;
        let intercept = Intercept {
            authority: Authority::new().map_err(ProxyError::Tls)?,
            client: tls::client_config(roots).map_err(ProxyError::Tls)?,
        };
        let pem = intercept.authority.pem().to_string();
        let endpoint = self.add(dir, policy, events, secrets, Some(intercept))?;
        Ok((endpoint, Some(pem)))
    }

    fn add(
        &self,
        dir: &Path,
        policy: Policy,
        events: SyncSender<Decision>,
        secrets: Secrets,
        intercept: Option<Intercept>,
    ) -> Result<SandboxEndpoint, ProxyError> {
        let socket = dir.join(SOCKET_NAME);
        let bind_error = |source| ProxyError::Bind {
            path: socket.clone(),
            source,
        };
        let listener = std::os::unix::net::UnixListener::bind(&socket).map_err(bind_error)?;
        let listener = fs::set_permissions(&socket, fs::Permissions::from_mode(0o666))
            .map_err(|source| ProxyError::Permissions {
                path: socket.clone(),
                source,
            })
            .and_then(|()| listener.set_nonblocking(true).map_err(bind_error))
            .and_then(|()| {
                let _runtime = self.runtime.enter();
                UnixListener::from_std(listener).map_err(bind_error)
            });
        let listener = match listener {
            Ok(listener) => listener,
            Err(e) => {
                let _ = fs::remove_file(&socket);
                return Err(e);
            }
        };
        let (cancel, cancelled) = watch::channel(false);
        let (done_tx, done) = std::sync::mpsc::channel();
        let (queue, mut queued) = mpsc::channel::<Decision>(RECORD_QUEUE);
        // Hands records on to the caller's channel, waiting while it is full; once the
        // caller is gone it drains and discards, so that nothing waits for it.
        let forwarder = self.runtime.spawn_blocking(move || {
            while let Some(decision) = queued.blocking_recv() {
                let _ = events.send(decision);
            }
        });
        let sandbox = Arc::new(Sandbox {
            policy,
            config: Arc::clone(&self.config),
            ledger: Ledger::new(queue, self.config.max_refusal_records),
            ids: Arc::clone(&self.connection_ids),
            secrets,
            intercept,
        });
        self.runtime.spawn(accept(
            listener,
            sandbox,
            cancelled,
            Finished {
                forwarder,
                done: done_tx,
            },
        ));
        let id = self.next_sandbox.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Registered {
                cancel,
                done,
                socket: socket.clone(),
            },
        );
        Ok(SandboxEndpoint { id, socket })
    }

    /// Closes the sandbox's socket and every connection on it, waits until their `Closed`
    /// records have been sent, and removes the socket file.
    pub fn remove_sandbox(&self, endpoint: SandboxEndpoint) -> Result<(), ProxyError> {
        let registered = self.lock().remove(&endpoint.id);
        match registered {
            Some(registered) => close(registered),
            None => Ok(()),
        }
    }

    /// Removes every sandbox, then stops the thread.
    pub fn shutdown(mut self) -> Result<(), ProxyError> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), ProxyError> {
        let registered: Vec<Registered> = self.lock().drain().map(|(_, r)| r).collect();
        let mut result = Ok(());
        for sandbox in registered {
            result = result.and(close(sandbox));
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Registered>> {
        self.sandboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

fn close(sandbox: Registered) -> Result<(), ProxyError> {
    let _ = sandbox.cancel.send(true);
    // Err means the accept task is gone, which is what we wait for.
    let _ = sandbox.done.recv_timeout(REMOVE_WAIT);
    match fs::remove_file(&sandbox.socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProxyError::Remove {
            path: sandbox.socket,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// What the accept task signals once the sandbox's last record has been handed on.
struct Finished {
    forwarder: tokio::task::JoinHandle<()>,
    done: std::sync::mpsc::Sender<()>,
}

/// Accepts the sandbox's connections until it is removed, within its limits, then waits
/// for them to end and hands on the last records.
async fn accept(
    listener: UnixListener,
    sandbox: Arc<Sandbox>,
    cancel: watch::Receiver<bool>,
    finished: Finished,
) {
    let config = Arc::clone(&sandbox.config);
    let max = config.max_connections_per_sandbox.max(1);
    let mut rate = AcceptRate::new(config.accepts_per_second, config.accept_burst);
    let mut connections = JoinSet::new();
    let flusher = tokio::spawn(flush_every(Arc::clone(&sandbox), cancel.clone()));
    let removed = connection::cancelled(cancel.clone());
    tokio::pin!(removed);
    loop {
        if open_connections(&mut connections) >= max {
            sandbox.throttled(format!("accepting paused: {max} connections open"));
            tokio::select! {
                () = &mut removed => break,
                _ = connections.join_next() => continue,
            }
        }
        if let Err(wait) = rate.take() {
            let per_second = config.accepts_per_second;
            sandbox.throttled(format!(
                "accepting paused: over {per_second} new connections a second"
            ));
            tokio::select! {
                () = &mut removed => break,
                () = tokio::time::sleep(wait) => continue,
            }
        }
        tokio::select! {
            () = &mut removed => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection::serve(stream, Arc::clone(&sandbox), cancel.clone()));
                }
                // Out of file descriptors, most likely: back off instead of spinning, and
                // keep serving the connections already open.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    let _ = flusher.await;
    sandbox.ledger.finish().await;
    // The last sender of the record queue: the forwarder ends once it has handed on the rest.
    drop(sandbox);
    let _ = finished.forwarder.await;
    let _ = finished.done.send(());
}

/// Ends the sandbox's record interval every `record_interval` until it is removed.
async fn flush_every(sandbox: Arc<Sandbox>, cancel: watch::Receiver<bool>) {
    let removed = connection::cancelled(cancel);
    tokio::pin!(removed);
    let period = sandbox
        .config
        .record_interval
        .max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            () = &mut removed => return,
            _ = tick.tick() => sandbox.ledger.flush().await,
        }
    }
}

/// How many connections are still open, after forgetting those that ended.
fn open_connections(connections: &mut JoinSet<()>) -> usize {
    while connections.try_join_next().is_some() {}
    connections.len()
}

/// A token bucket: `per_second` accepts on average, at most `burst` at once.
struct AcceptRate {
    tokens: f64,
    per_second: f64,
    burst: f64,
    last: Instant,
}

impl AcceptRate {
    fn new(per_second: u32, burst: u32) -> AcceptRate {
        let burst = f64::from(burst.max(1));
        AcceptRate {
            tokens: burst,
            per_second: f64::from(per_second.max(1)),
            burst,
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until the next one.
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Proxy>();
        shareable::<SandboxEndpoint>();
        shareable::<Policy>();
    }

    #[test]
    fn the_accept_rate_allows_a_burst_then_the_rate() {
        let mut rate = AcceptRate::new(10, 3);
        for _ in 0..3 {
            assert_eq!(rate.take(), Ok(()));
        }
        let wait = rate.take().unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        std::thread::sleep(wait + Duration::from_millis(5));
        assert_eq!(rate.take(), Ok(()));
    }
}
