//! Egress for one invocation: the host proxy that is a sandbox's only way out, its
//! per-sandbox socket, and the audit records of every decision it makes.
//!
//! A spec with `Network::Egress` leaves here with `egress_proxy` set (the socket the
//! backend mounts and bridges to `127.0.0.1:PORT` inside) and the proxy variables in its
//! environment. Nothing here decides what is allowed: the proxy enforces the spec's rules.
//!
//! The socket lives in a fresh directory with an unpredictable name, mode 0700, in this
//! user's runtime directory (`$XDG_RUNTIME_DIR` when it is ours and private, else the
//! temporary directory), held by a lock for the life of the run, so that a directory a
//! killed runner left behind is found and removed by the next run. Ending a run is bounded
//! in time (`FINISH_WITHIN`) and answers SIGINT, SIGTERM and SIGHUP. This module must never
//! use a directory it did not create, nor remove one another live runner holds.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use nanoclaw_egress::{
    Decision, Policy, Proxy, ProxyConfig, SandboxEndpoint, SecretSubstitution, Zeroizing,
};
use nanoclaw_spec::{
    Delivery, EgressProxy, Network, SandboxSpec, CA_BUNDLE_INSIDE, CA_BUNDLE_VARIABLES,
};
use rustix::fs::{flock, FlockOperation};

use crate::audit::EgressSink;

/// How long ending a run may take once the sandbox is gone: closing the proxy and
/// writing the records still queued.
const FINISH_WITHIN: Duration = Duration::from_secs(2);

/// Records queued between the proxy and the thread writing them to the audit log.
const RECORD_QUEUE: usize = 64;

/// The prefix of a socket directory's name; the rest is random.
const DIR_PREFIX: &str = "nanoclaw-egress-";

/// Hex digits of randomness in a socket directory's name (64 bits: never guessed, and
/// short enough for the socket's path to fit a Unix socket address).
const NONCE_LEN: usize = 16;

/// The longest runtime directory used: the socket's whole path must stay within the 107
/// bytes of a Unix socket address.
const MAX_BASE_LEN: usize = 64;

/// The file inside a socket directory whose lock says its runner is alive.
const LOCK_NAME: &str = "runner.lock";

/// A free lock file younger than this may be one a live runner is about to lock.
const LOCK_GRACE: Duration = Duration::from_secs(1);

/// A directory without a lock file this old is a runner killed while creating it.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// A running proxy serving one sandbox, and the thread writing its decisions.
pub struct Egress {
    proxy: Proxy,
    endpoint: SandboxEndpoint,
    dir: SocketDir,
    recorder: JoinHandle<Result<usize>>,
    abandon: Arc<AtomicBool>,
}

/// The directory of one sandbox's proxy socket, locked while the run lives and removed
/// however the run ends (an early error drops the `Egress` without `finish`; the proxy's
/// own drop stops it).
struct SocketDir {
    path: PathBuf,
    _lock: File,
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Starts the proxy for `spec` if it has egress, and points the spec at it.
pub fn start(spec: &mut SandboxSpec, sink: Option<EgressSink>) -> Result<Option<Egress>> {
    start_with(spec, sink, None)
}

/// `start`, with the spec's `placeholder` secrets handed to the proxy for substitution
/// and the sandbox given the proxy's per-run CA in its bundle; `upstream_roots`
/// (`--ca-file`) replaces the host's roots for the upstreams the proxy intercepts.
pub fn start_with(
    spec: &mut SandboxSpec,
    sink: Option<EgressSink>,
    upstream_roots: Option<&Path>,
) -> Result<Option<Egress>> {
    let substitutions = substitutions(spec);
    let Network::Egress(rules) = &spec.network else {
        if let Some(s) = substitutions.first() {
            return Err(anyhow!(
                "secret {} is delivered as a placeholder, but the sandbox has no egress for \
                 the proxy to put it into requests",
                s.name
            ));
        }
        return Ok(None);
    };
    let policy = Policy::new(rules).map_err(|e| anyhow!("egress allow list: {e}"))?;
    raise_open_file_limit();
    let base = runtime_base();
    reap_stale(&base);
    let dir = SocketDir::create(&base)?;
    let config = ProxyConfig {
        upstream_roots: upstream_roots.map(Path::to_path_buf),
        ..ProxyConfig::default()
    };
    let started = Proxy::start(config)
        .map_err(|e| anyhow!("start the egress proxy: {e}"))
        .and_then(|proxy| {
            let (events, decisions) = mpsc::sync_channel::<Decision>(RECORD_QUEUE);
            let (endpoint, ca) = proxy
                .add_sandbox_with_secrets(&dir.path, policy, events, substitutions)
                .map_err(|e| {
                    anyhow!(
                        "open the egress proxy's socket in {}: {e}",
                        dir.path.display()
                    )
                })?;
            Ok((proxy, endpoint, decisions, ca))
        });
    let (proxy, endpoint, decisions, ca) = started?;
    if let Some(ca) = ca {
        spec.ca_bundle = Some(ca_bundle(&ca, upstream_roots)?);
        for key in CA_BUNDLE_VARIABLES {
            spec.set_env(key, CA_BUNDLE_INSIDE);
        }
    }
    let abandon = Arc::new(AtomicBool::new(false));
    let recorder = std::thread::spawn({
        let abandon = Arc::clone(&abandon);
        move || record(&decisions, sink.as_ref(), &abandon)
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
        abandon,
    }))
}

/// What the proxy needs of each `placeholder` secret: its stand-in, value, hosts and the
/// end of its ttl (from now: the value was just fetched).
fn substitutions(spec: &SandboxSpec) -> Vec<SecretSubstitution> {
    spec.secrets
        .iter()
        .filter(|s| s.delivery == Delivery::Placeholder)
        .map(|s| SecretSubstitution {
            name: s.name.clone(),
            placeholder: s.placeholder.clone().unwrap_or_default(),
            value: Zeroizing::new(s.value.expose().to_vec()),
            hosts: s.hosts.clone(),
            body: s.body,
            expires: Instant::now() + s.ttl,
        })
        .collect()
}

/// Host bundles, the first that exists of which the sandbox gets a copy.
const HOST_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// The sandbox's CA bundle: the host's roots (for hosts the proxy only tunnels), the
/// `--ca-file` roots, and the proxy's per-run CA certificate (never its key).
fn ca_bundle(ca: &str, upstream_roots: Option<&Path>) -> Result<String> {
    let mut bundle = String::new();
    if let Some(host) = HOST_BUNDLES.iter().find_map(|p| fs::read_to_string(p).ok()) {
        bundle.push_str(&host);
        bundle.push('\n');
    }
    if let Some(path) = upstream_roots {
        let roots = fs::read_to_string(path)
            .with_context(|| format!("read --ca-file {}", path.display()))?;
        bundle.push_str(&roots);
        bundle.push('\n');
    }
    bundle.push_str(ca);
    Ok(bundle)
}

/// Writes every decision to the audit log as soon as it is made, until the proxy is done
/// with the sandbox or `abandon` is set. A failure to record one ends the run's report
/// with an error (the thread keeps taking records so the proxy never waits for it).
fn record(
    decisions: &mpsc::Receiver<Decision>,
    sink: Option<&EgressSink>,
    abandon: &AtomicBool,
) -> Result<usize> {
    let mut failure = None;
    let mut written = 0;
    for decision in decisions {
        if abandon.load(Ordering::Relaxed) {
            break;
        }
        if let Some(sink) = sink {
            match sink.record(&decision) {
                Ok(()) => written += 1,
                Err(error) => failure = failure.or(Some(error)),
            }
        }
    }
    failure.map_or(Ok(written), Err)
}

/// The proxy holds two descriptors per connection (up to 128 per sandbox), more than the
/// usual soft limit of 1,024 allows once a few sandboxes are busy; the hard limit is ours.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// Where this user's socket directories go: `$XDG_RUNTIME_DIR` if it is a short absolute
/// directory owned by this user that nobody else can write, else the temporary directory
/// (where the directory's random name and mode keep other users out).
fn runtime_base() -> PathBuf {
    let euid = rustix::process::geteuid().as_raw();
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute() && path.as_os_str().len() <= MAX_BASE_LEN)
        .filter(|path| {
            fs::symlink_metadata(path)
                .is_ok_and(|meta| meta.is_dir() && meta.uid() == euid && meta.mode() & 0o022 == 0)
        })
        .unwrap_or_else(std::env::temp_dir)
}

impl SocketDir {
    /// A fresh directory only this user can enter, with a random name, locked.
    fn create(base: &Path) -> Result<SocketDir> {
        let nonce = nanoclaw_audit::invocation_id().map_err(|e| anyhow!("{e}"))?;
        let path = base.join(format!("{DIR_PREFIX}{}", &nonce[..NONCE_LEN]));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let lock = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path.join(LOCK_NAME))
            .and_then(|file| {
                flock(&file, FlockOperation::NonBlockingLockExclusive)?;
                Ok(file)
            });
        match lock {
            Ok(lock) => Ok(SocketDir { path, _lock: lock }),
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                Err(anyhow!("lock {}: {e}", path.join(LOCK_NAME).display()))
            }
        }
    }
}

/// Removes the socket directories in `base` that runners of this user left behind when
/// they were killed: ours, real directories (not links), whose lock nobody holds. Failures
/// are ignored: a directory that cannot be removed now is tried again by the next run.
fn reap_stale(base: &Path) {
    let euid = rustix::process::geteuid().as_raw();
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry.file_name().to_str().is_some_and(|name| {
            name.strip_prefix(DIR_PREFIX).is_some_and(|nonce| {
                nonce.len() == NONCE_LEN && nonce.bytes().all(|b| b.is_ascii_hexdigit())
            })
        });
        let path = entry.path();
        let owned = fs::symlink_metadata(&path)
            .is_ok_and(|meta| meta.is_dir() && meta.uid() == euid && meta.mode() & 0o077 == 0);
        if is_ours && owned && abandoned(&path) {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Whether the runner that made `dir` is gone: its lock file is free and not brand new
/// (a runner takes its lock an instant after creating the file), or it never made one and
/// the directory is older than `UNLOCKED_GRACE`.
fn abandoned(dir: &Path) -> bool {
    let older_than = |meta: fs::Metadata, age: Duration| {
        meta.modified().is_ok_and(|modified| {
            SystemTime::now()
                .duration_since(modified)
                .is_ok_and(|elapsed| elapsed > age)
        })
    };
    let lock = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(LOCK_NAME));
    match lock {
        Ok(file) => {
            flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok()
                && file
                    .metadata()
                    .is_ok_and(|meta| older_than(meta, LOCK_GRACE))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::symlink_metadata(dir).is_ok_and(|meta| older_than(meta, UNLOCKED_GRACE))
        }
        Err(_) => false,
    }
}

/// The stop signals (SIGINT, SIGTERM, SIGHUP) while a run ends; the first one's number.
struct StopSignals {
    caught: Arc<AtomicUsize>,
    ids: Vec<signal_hook::SigId>,
}

impl StopSignals {
    fn watch() -> StopSignals {
        let caught = Arc::new(AtomicUsize::new(0));
        // A signal that cannot be watched keeps its current disposition; the deadline
        // still bounds the wait.
        let ids = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
            .into_iter()
            .filter_map(|signal| {
                let value = usize::try_from(signal).unwrap_or(usize::MAX);
                signal_hook::flag::register_usize(signal, Arc::clone(&caught), value).ok()
            })
            .collect();
        StopSignals { caught, ids }
    }

    fn caught(&self) -> Option<usize> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for id in &self.ids {
            signal_hook::low_level::unregister(*id);
        }
    }
}

impl Egress {
    /// Closes the sandbox's socket and every connection still open, stops the proxy, and
    /// waits until every decision is recorded, for at most `FINISH_WITHIN` and only until
    /// a stop signal. Returns how many records were written.
    pub fn finish(self) -> Result<usize> {
        let signals = StopSignals::watch();
        let deadline = Instant::now() + FINISH_WITHIN;
        let removed = self.proxy.remove_sandbox(self.endpoint);
        let stopped = self.proxy.shutdown();
        while !self.recorder.is_finished()
            && Instant::now() < deadline
            && signals.caught().is_none()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !self.recorder.is_finished() {
            // The thread stops at its next record; whatever is still queued is lost, and
            // the run's report says so.
            self.abandon.store(true, Ordering::Relaxed);
            return Err(match signals.caught() {
                Some(signal) => anyhow!(
                    "interrupted by signal {signal} while recording egress decisions; \
                     some were not recorded"
                ),
                None => anyhow!(
                    "egress decisions not recorded within {} s; some were not recorded",
                    FINISH_WITHIN.as_secs()
                ),
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    /// What a runner killed mid-run leaves: its directory, its lock file, no lock held.
    fn left_by_a_killed_runner(base: &Path, nonce: &str) -> PathBuf {
        let dir = base.join(format!("{DIR_PREFIX}{nonce}"));
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        fs::write(dir.join(LOCK_NAME), "").unwrap();
        dir
    }

    fn age_past_the_lock_grace() {
        std::thread::sleep(LOCK_GRACE + Duration::from_millis(100));
    }

    #[test]
    fn a_live_runners_directory_is_kept_and_a_dead_ones_removed() {
        let base = base();
        let live = SocketDir::create(base.path()).unwrap();
        let dead = left_by_a_killed_runner(base.path(), &"0".repeat(NONCE_LEN));
        age_past_the_lock_grace();
        reap_stale(base.path());
        assert!(live.path.exists());
        assert!(!dead.exists());
    }

    #[test]
    fn a_fresh_unlocked_directory_is_kept_a_moment() {
        let base = base();
        let fresh = left_by_a_killed_runner(base.path(), &"1".repeat(NONCE_LEN));
        reap_stale(base.path());
        assert!(fresh.exists());
    }

    #[test]
    fn links_and_foreign_names_are_never_removed() {
        let base = base();
        let target = tempfile::tempdir().unwrap();
        fs::write(target.path().join(LOCK_NAME), "").unwrap();
        let link = base
            .path()
            .join(format!("{DIR_PREFIX}{}", "a".repeat(NONCE_LEN)));
        std::os::unix::fs::symlink(target.path(), &link).unwrap();
        let other = left_by_a_killed_runner(base.path(), "not-hex");
        age_past_the_lock_grace();
        reap_stale(base.path());
        assert!(link.symlink_metadata().is_ok());
        assert!(target.path().join(LOCK_NAME).exists());
        assert!(other.exists());
    }
}
