//! Egress for one invocation: the host proxy that is a sandbox's only way out, its
//! per-sandbox socket, and the audit records of every decision it makes.
//!
//! A spec with `Network::Egress` leaves here with `egress_proxy` set (the socket the
//! backend mounts and bridges to `127.0.0.1:PORT` inside) and the proxy variables in its
//! environment. Nothing here decides what is allowed: the proxy enforces the spec's rules.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use nanoclaw_egress::{Decision, Policy, Proxy, ProxyConfig, SandboxEndpoint};
use nanoclaw_spec::{EgressProxy, Network, SandboxSpec};

use crate::audit::EgressSink;

/// A running proxy serving one sandbox, and the thread writing its decisions.
pub struct Egress {
    proxy: Proxy,
    endpoint: SandboxEndpoint,
    dir: SocketDir,
    recorder: JoinHandle<Result<usize>>,
}

/// The directory of one sandbox's proxy socket, removed however the run ends (an early
/// error drops the `Egress` without `finish`; the proxy's own drop stops it).
struct SocketDir(PathBuf);

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the proxy for `spec` if it has egress, and points the spec at it.
pub fn start(spec: &mut SandboxSpec, sink: Option<EgressSink>) -> Result<Option<Egress>> {
    let Network::Egress(rules) = &spec.network else {
        return Ok(None);
    };
    let policy = Policy::new(rules).map_err(|e| anyhow!("egress allow list: {e}"))?;
    raise_open_file_limit();
    let dir = SocketDir(private_dir()?);
    let started = Proxy::start(ProxyConfig::default())
        .map_err(|e| anyhow!("start the egress proxy: {e}"))
        .and_then(|proxy| {
            let (events, decisions) = mpsc::channel::<Decision>();
            let endpoint = proxy.add_sandbox(&dir.0, policy, events).map_err(|e| {
                anyhow!("open the egress proxy's socket in {}: {e}", dir.0.display())
            })?;
            Ok((proxy, endpoint, decisions))
        });
    let (proxy, endpoint, decisions) = started?;
    // Every decision is on disk as soon as it is made; a failure to record one ends the
    // run's report with an error (the thread keeps draining so the proxy never blocks).
    let recorder = std::thread::spawn(move || {
        let mut failure = None;
        let mut written = 0;
        for decision in decisions {
            if let Some(sink) = &sink {
                match sink.record(&decision) {
                    Ok(()) => written += 1,
                    Err(error) => failure = failure.or(Some(error)),
                }
            }
        }
        failure.map_or(Ok(written), Err)
    });
    let proxy_path = EgressProxy {
        socket: endpoint.socket().to_path_buf(),
        port: EgressProxy::DEFAULT_PORT,
    };
    for (key, value) in proxy_path.env() {
        spec.set_env(&key, &value);
    }
    spec.egress_proxy = Some(proxy_path);
    Ok(Some(Egress {
        proxy,
        endpoint,
        dir,
        recorder,
    }))
}

/// The proxy holds two descriptors per connection (up to 256 per sandbox), more than the
/// usual soft limit of 1,024 allows once a few sandboxes are busy; the hard limit is ours.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// A fresh directory only the caller can enter, for one sandbox's proxy socket. The
/// socket is bound into the sandbox, so the sandbox never needs the directory itself.
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(std::env::temp_dir);
    let nonce = nanoclaw_audit::invocation_id().map_err(|e| anyhow!("{e}"))?;
    let dir = base.join(format!("nanoclaw-egress-{}", &nonce[..16]));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

impl Egress {
    /// Closes the sandbox's socket and every connection still open, stops the proxy,
    /// and waits until every decision is recorded. Returns how many records were written.
    pub fn finish(self) -> Result<usize> {
        let removed = self.proxy.remove_sandbox(self.endpoint);
        let stopped = self.proxy.shutdown();
        let recorded = self
            .recorder
            .join()
            .map_err(|_| anyhow!("the egress audit thread panicked"))?;
        drop(self.dir);
        removed.map_err(|e| anyhow!("close the egress proxy's socket: {e}"))?;
        stopped.map_err(|e| anyhow!("stop the egress proxy: {e}"))?;
        recorded.context("record egress decisions")
    }
}
