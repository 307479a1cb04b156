//! The Docker Engine backend: runs a `SandboxSpec` as a locked-down container through the
//! Engine API (bollard), over `DOCKER_HOST` (`unix:///path` or `tcp://host:port`) or the
//! default socket.
//!
//! Podman is reached the same way (`DOCKER_HOST=unix:///run/podman/podman.sock`, or
//! `unix://$XDG_RUNTIME_DIR/podman/podman.sock` rootless, after `systemctl [--user] start
//! podman.socket`), but its compatible API (4.3 tested) cannot apply and report the strict
//! defaults as asked (see `refuse_podman`), so the backend refuses it at connect with an
//! error that says why.
//!
//! A run: resolve the pinned image in the engine's local store (`image`), reap containers a
//! killed nanoclaw left behind (`reap`), stage writable mounts noexec on the host
//! (`staging`), create the container from the spec (`config`), read back what the engine
//! applied and refuse to start anything weaker (`enforced`), start, wait with the timeout,
//! collect output bounded like the native backend (`streams`), and remove the container
//! (`lifecycle`). The seccomp profile is generated from the native backend's profile data
//! (`seccomp`), so both backends refuse the same syscalls.
//!
//! The container's first process is nanoclaw itself (`init_binary`, running
//! `nanoclaw_native::container`), not the engine's docker-init: it applies the same Landlock
//! rules as a native sandbox, gives the command exactly the spec's environment (the engine
//! adds `HOSTNAME` and the image's `ENV`), runs the egress bridge, reaps orphans, and reports
//! on a named pipe the command cannot open (`channel`), never on the command's streams. It
//! watches a second pipe whose write end only the runner holds: when the runner dies
//! (however it dies) the init exits, and every process of the container with it; it also
//! ends the command at its deadline should the runner be unable to.
//!
//! Where the engine cannot give what the native backend gives, the outcome says so rather
//! than claiming it: `memfd_create` is refused outright (no `vm.memfd_noexec` from outside),
//! and CPU and memory usage are not measured (zero). A writable mount needs nanoclaw to run
//! as root (to stage it), and is refused otherwise. Mount sources are resolved on this
//! machine, so with a remote engine they must be the same paths there.
//!
//! This crate must never shell out to the docker CLI, pull an image implicitly, start a
//! container whose inspect shows a weaker layer than asked, or return without removing the
//! container it created. Its async runtime stays inside: the `Backend` trait is sync.

mod channel;
mod config;
mod enforced;
mod image;
mod init_binary;
mod lifecycle;
mod reap;
pub mod seccomp;
mod staging;
mod streams;

use std::sync::Mutex;

use bollard::Docker;
use nanoclaw_spec::{Backend, BackendError, IoMode, Outcome, SandboxSpec};

pub use enforced::EngineFacts;
pub use image::{user_is_root, ImageInfo, ImageRef};
pub use init_binary::InitBinary;
pub use reap::{
    instance, GRACE as REAP_GRACE, LABEL_DEADLINE, LABEL_INSTANCE, LABEL_INVOCATION, LABEL_SEAL,
    LABEL_TOOL,
};
pub use staging::STAGING_ROOT;

/// The engine's socket when `DOCKER_HOST` is unset.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds any single request to the engine may take before an answer starts.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// Runs specs as containers of one Docker (or Podman) engine.
pub struct DockerBackend {
    runtime: tokio::runtime::Runtime,
    docker: Docker,
    host: String,
    pull: bool,
    facts: tokio::sync::OnceCell<EngineFacts>,
    last_image: Mutex<Option<ImageInfo>>,
    /// nanoclaw's own binary, each container's init.
    init: Option<InitBinary>,
}

/// A finished run with what the docker backend knows beyond the `Outcome`.
#[derive(Debug, Clone)]
pub struct DockerRun {
    pub outcome: Outcome,
    /// The image the container ran, its digest and its configured user.
    pub image: ImageInfo,
    /// The (removed) container's id.
    pub container: String,
    /// The `io.nanoclaw.invocation` label it carried (`spec.invocation.id`, or a fresh
    /// one).
    pub invocation: String,
}

impl DockerBackend {
    /// Connects to the engine named by `DOCKER_HOST`, or the default socket.
    pub fn connect() -> Result<Self, BackendError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Self::connect_to(&host)
    }

    /// Connects to the engine at `host`: `unix:///path`, a bare socket path, or
    /// `tcp://host:port` (plain HTTP; TLS is not supported).
    pub fn connect_to(host: &str) -> Result<Self, BackendError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackendError::io("start the docker client runtime", e))?;
        let unreachable = |e: bollard::errors::Error| {
            BackendError::io(
                format!(
                    "reach the Docker Engine at {host} (is it running? DOCKER_HOST selects \
                     another engine, e.g. Podman's socket)"
                ),
                std::io::Error::other(e),
            )
        };
        let connect = |version: &bollard::ClientVersion| {
            let _context = runtime.enter();
            let unix = host
                .strip_prefix("unix://")
                .or(host.starts_with('/').then_some(host));
            match unix {
                Some(path) => Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, version),
                None if host.starts_with("tcp://") || host.starts_with("http://") => {
                    Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, version)
                }
                None => Err(bollard::errors::Error::UnsupportedURISchemeError {
                    uri: host.to_string(),
                }),
            }
            .map_err(unreachable)
        };
        let newest = bollard::API_DEFAULT_VERSION;
        let version = runtime
            .block_on(connect(newest)?.version())
            .map_err(unreachable)?;
        refuse_podman(&version)?;
        // Speak the newest API version both sides know (Docker 20.10 knows 1.41).
        let api = version
            .api_version
            .as_deref()
            .and_then(parse_api_version)
            .filter(|server| server < newest)
            .unwrap_or(*newest);
        let docker = connect(&api)?;
        Ok(DockerBackend {
            runtime,
            docker,
            host: host.to_string(),
            pull: false,
            facts: tokio::sync::OnceCell::new(),
            last_image: Mutex::new(None),
            init: None,
        })
    }

    /// Lets a run pull a missing `NAME@sha256:…` image (an explicit `--pull`); off by default.
    pub fn with_pull(mut self, pull: bool) -> Self {
        self.pull = pull;
        self
    }

    /// Gives containers their init: a nanoclaw binary (`InitBinary::current()` for the
    /// running one), mounted read-only and run as the entrypoint in front of the command.
    /// Without one, every run is refused.
    pub fn with_init(mut self, init: InitBinary) -> Self {
        self.init = Some(init);
        self
    }

    /// The engine this backend talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Runs `spec` like [`Backend::run`] with nothing to commit, and reports the image and
    /// the container too (for tests and tools that inspect them).
    ///
    /// Blocks on the backend's own runtime: an async caller calls it from
    /// `tokio::task::spawn_blocking` (or a thread), never from inside a runtime. While it
    /// runs, SIGINT, SIGTERM and SIGHUP stop the run (its container is removed) and it
    /// returns `BackendError::Interrupted`; as with the native backend, those signals stay
    /// caught by the process afterwards.
    pub fn run_container(&self, spec: &SandboxSpec, io: IoMode) -> Result<DockerRun, BackendError> {
        config::validate(spec)?;
        let init = self.init.as_ref().ok_or_else(|| {
            BackendError::Invalid(
                "the docker backend has no init binary (DockerBackend::with_init)".into(),
            )
        })?;
        self.runtime.block_on(self.run_async(spec, io, init))
    }

    /// The image the latest run resolved (set before its container was created), for callers
    /// that hold the backend as `dyn Backend`.
    pub fn last_image(&self) -> Option<ImageInfo> {
        self.last_image.lock().ok().and_then(|last| last.clone())
    }

    /// Resolves a pinned image reference in the engine's local store.
    pub fn resolve_image(&self, reference: &str) -> Result<ImageInfo, BackendError> {
        self.runtime
            .block_on(image::resolve(&self.docker, reference, self.pull))
    }

    /// Removes every container this host's nanoclaw (of this user) sealed that nothing
    /// tracks any more (past its deadline, or stopped with its nanoclaw gone), and
    /// returns their ids. Every run does this too.
    pub fn reap_stale(&self) -> Result<Vec<String>, BackendError> {
        self.runtime.block_on(reap::stale(&self.docker))
    }

    /// The ids of the containers carrying `label` (`key` or `key=value`), running or not.
    pub fn containers_labelled(&self, label: &str) -> Result<Vec<String>, BackendError> {
        let listed = self
            .runtime
            .block_on(reap::list(&self.docker, label))
            .map_err(lifecycle::engine(format!(
                "list containers labelled {label}"
            )))?;
        Ok(listed.into_iter().map(|(id, _)| id).collect())
    }
}

fn parse_api_version(version: &str) -> Option<bollard::ClientVersion> {
    let (major, minor) = version.split_once('.')?;
    Some(bollard::ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// Podman's Docker-compatible API (4.3, Debian 12) cannot take this backend's containers as
/// asked: it reads `seccomp=` as a file path, not an inline profile; it adds writable,
/// executable tmpfs mounts on /run and /var/tmp to every read-only container; and it reports
/// dropped capabilities as a list, so `enforced` could not be verified. Refused rather than
/// run weaker.
fn refuse_podman(version: &bollard::models::SystemVersion) -> Result<(), BackendError> {
    let podman = version
        .components
        .iter()
        .flatten()
        .find(|c| c.name.to_ascii_lowercase().contains("podman"));
    match podman {
        None => Ok(()),
        Some(component) => Err(BackendError::LayerUnavailable {
            layer: format!(
                "the docker backend on {} {}",
                component.name, component.version
            ),
            reason: "Podman's Docker-compatible API takes a seccomp profile only as a file \
                     path, adds writable, executable tmpfs mounts on /run and /var/tmp to \
                     read-only containers and reports capabilities differently, so the strict \
                     defaults could not be applied and verified; use Docker Engine or the \
                     native backend"
                .into(),
        }),
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// Commits first: the engine's work cannot overlap it.
    fn run(
        &self,
        spec: &SandboxSpec,
        io: IoMode,
        commit: &mut dyn FnMut() -> Result<(), BackendError>,
    ) -> Result<Outcome, BackendError> {
        config::validate(spec)?;
        commit()?;
        self.run_container(spec, io).map(|run| run.outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{SystemVersion, SystemVersionComponents};

    fn engine(name: &str) -> SystemVersion {
        SystemVersion {
            components: Some(vec![SystemVersionComponents {
                name: name.into(),
                version: "4.3.1".into(),
                details: None,
            }]),
            api_version: Some("1.41".into()),
            ..Default::default()
        }
    }

    #[test]
    fn podman_is_refused_saying_why() {
        assert!(refuse_podman(&engine("Engine")).is_ok());
        let error = refuse_podman(&engine("Podman Engine"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("Podman Engine 4.3.1") && error.contains("seccomp"),
            "{error}"
        );
    }

    #[test]
    fn api_versions_parse() {
        let v = parse_api_version("1.41").unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(parse_api_version("1").is_none());
        assert!(v < *bollard::API_DEFAULT_VERSION);
    }
}
