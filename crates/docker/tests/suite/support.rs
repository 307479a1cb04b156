//! What the tests share: the engine, the test image, a [`Sandbox`] builder that runs a spec
//! through `DockerBackend`, probe reports, and checks for what a run may leave behind
//! (containers, host processes).
//!
//! Every run carries a unique invocation label; after it returns, no container with that
//! label may exist, whatever the outcome.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use nanoclaw_docker::{DockerBackend, DockerRun, InitBinary, LABEL_INSTANCE, LABEL_INVOCATION};
use nanoclaw_spec::{BackendError, IoMode, Mount, Outcome, Root, SandboxSpec};
use serde_json::Value;

pub use super::shared::{serialise_heavy, unique_token};

pub use super::test_image::{probe_binary, PROBE};

/// The user a sandbox runs as unless told otherwise.
pub const SANDBOX_UID: u32 = 10001;

/// The engine, for the tests' own look at it (containers, images), with a runtime of its
/// own. Connecting fails the test, loudly, when the engine is not there.
pub struct Engine {
    runtime: tokio::runtime::Runtime,
    docker: Docker,
}

pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let docker = runtime
            .block_on(async { Docker::connect_with_defaults()?.negotiate_version().await })
            .unwrap_or_else(|e| {
                panic!(
                    "the Docker Engine is not reachable ({e}); these tests need a running \
                     engine at DOCKER_HOST or /var/run/docker.sock and are never skipped"
                )
            });
        Engine { runtime, docker }
    })
}

impl Engine {
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The containers (running or not) carrying `label` (`key` or `key=value`), with their
    /// labels.
    pub fn containers(&self, label: &str) -> Vec<(String, HashMap<String, String>)> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".into(), vec![label.to_string()])])),
            ..Default::default()
        };
        self.block_on(self.docker.list_containers(Some(options)))
            .unwrap()
            .into_iter()
            .map(|c| (c.id.unwrap_or_default(), c.labels.unwrap_or_default()))
            .collect()
    }
}

/// A backend for one test: connecting fails the test when the engine is not reachable.
pub fn backend() -> DockerBackend {
    let init = InitBinary::static_at(probe_binary().canonicalize().unwrap()).unwrap();
    DockerBackend::connect()
        .unwrap_or_else(|e| {
            panic!("the Docker Engine is not reachable: {e}; these tests never skip")
        })
        .with_init(init)
}

/// The test image's ID (see `suite::test_image`), built once per test binary.
pub fn test_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        // The engine first: when it is not there, fail now rather than after a build.
        engine();
        check_nothing_left_at_exit();
        super::test_image::build()
    })
}

/// When the test binary exits, fails it if any container made by this process is left.
pub fn check_nothing_left_at_exit() {
    extern "C" fn check() {
        // A thread of its own: the main thread's runtime and thread-locals may be gone.
        let left = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let docker = Docker::connect_with_defaults()
                    .ok()?
                    .negotiate_version()
                    .await
                    .ok()?;
                let label = format!("{LABEL_INSTANCE}={}", nanoclaw_docker::instance());
                let options = ListContainersOptions {
                    all: true,
                    filters: Some(HashMap::from([("label".into(), vec![label])])),
                    ..Default::default()
                };
                docker.list_containers(Some(options)).await.ok()
            })
        })
        .join()
        .ok()
        .flatten();
        match left {
            Some(left) if left.is_empty() => {}
            other => {
                let _ = writeln!(
                    std::io::stderr(),
                    "FAILED: containers of this test process are left after all tests (or \
                     the engine could not be asked): {other:?}"
                );
                // SAFETY: _exit ends the process at once; no Rust state is used after it.
                unsafe { libc::_exit(1) }
            }
        }
    }
    // SAFETY: `check` is an `extern "C" fn()` that never unwinds into libc.
    let registered = unsafe { libc::atexit(check) };
    assert_eq!(registered, 0, "atexit failed");
}

/// A fresh temporary directory under cargo's per-target temp dir.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nanoclaw-docker-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Makes `path` the sandbox user's on the host (when the tests run as root).
pub fn give_to_sandbox_user(path: &Path) {
    let _ = std::os::unix::fs::chown(path, Some(SANDBOX_UID), Some(SANDBOX_UID));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// One sandbox being put together: the strict defaults in the test image, output captured.
pub struct Sandbox {
    pub spec: SandboxSpec,
    pub io: IoMode,
    scratch: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let mut spec = SandboxSpec::new(vec![]);
        spec.root = Root::Image(test_image().to_string());
        Sandbox {
            spec,
            io: IoMode {
                stdin: false,
                capture: true,
            },
            scratch: scratch_dir(),
        }
    }

    /// A new, empty directory on the host, owned by host root.
    pub fn host_dir(&self, name: &str) -> PathBuf {
        let dir = self.scratch.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    /// A new directory on the host that the sandbox user may write to.
    pub fn writable_host_dir(&self, name: &str) -> PathBuf {
        let dir = self.host_dir(name);
        give_to_sandbox_user(&dir);
        dir
    }

    pub fn mount(&mut self, src: &Path, dst: &str) -> &mut Sandbox {
        self.bind(src, dst, false)
    }

    pub fn mount_rw(&mut self, src: &Path, dst: &str) -> &mut Sandbox {
        self.bind(src, dst, true)
    }

    fn bind(&mut self, src: &Path, dst: &str, writable: bool) -> &mut Sandbox {
        self.spec.mounts.push(Mount {
            src: src.to_path_buf(),
            dst: dst.into(),
            writable,
        });
        self
    }

    pub fn limits(&mut self, change: impl FnOnce(&mut nanoclaw_spec::Limits)) -> &mut Sandbox {
        change(&mut self.spec.limits);
        self
    }

    /// Changes the spec in ways the other builders do not cover.
    pub fn spec(&mut self, change: impl FnOnce(&mut nanoclaw_spec::SandboxSpec)) -> &mut Sandbox {
        change(&mut self.spec);
        self
    }

    /// Runs `command` and checks that its container is gone afterwards.
    pub fn run(&mut self, command: &[&str]) -> Run {
        self.run_with(backend(), command)
    }

    /// Runs `command` on `backend` and checks that its container is gone afterwards.
    pub fn run_with(&mut self, backend: DockerBackend, command: &[&str]) -> Run {
        self.spec.command = command.iter().map(|s| s.to_string()).collect();
        let invocation = unique_token("run");
        let started = Instant::now();
        self.spec.invocation = nanoclaw_spec::Invocation {
            tool: "docker-tests".into(),
            id: invocation.clone(),
        };
        let result = backend.run_container(&self.spec, self.io);
        let run = Run {
            result,
            command: self.spec.command.clone(),
            wall: started.elapsed(),
        };
        let left = engine().containers(&format!("{LABEL_INVOCATION}={invocation}"));
        assert!(
            left.is_empty(),
            "the run left its container behind: {left:?}\n{}",
            run.context()
        );
        run
    }

    /// Runs probe `name` with `args` from the image's probe binary.
    pub fn probe(&mut self, name: &str, args: &[&str]) -> Probe {
        let mut command = vec![PROBE, "probe", name];
        command.extend_from_slice(args);
        let run = self.run(&command);
        let report = run.outcome().stdout.text.lines().find_map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(|v| v["probe"] == name)
        });
        Probe { run, report }
    }
}

/// How one run ended.
pub struct Run {
    pub result: Result<DockerRun, BackendError>,
    pub command: Vec<String>,
    pub wall: Duration,
}

impl Run {
    /// The outcome; fails the test when the backend refused or failed.
    pub fn outcome(&self) -> &Outcome {
        match &self.result {
            Ok(run) => &run.outcome,
            Err(e) => panic!("{:?} did not run: {e}", self.command),
        }
    }

    pub fn code(&self) -> i32 {
        self.outcome().exit_status()
    }

    pub fn stdout(&self) -> &str {
        &self.outcome().stdout.text
    }

    /// Everything about the run, for a failure message.
    pub fn context(&self) -> String {
        match &self.result {
            Ok(run) => format!(
                "command {:?}: exit {:?} signal {:?} timed_out {} oom {} in {:?}\nstdout: {}\nstderr: {}",
                self.command,
                run.outcome.exit_code,
                run.outcome.signal,
                run.outcome.timed_out,
                run.outcome.oom_killed,
                self.wall,
                run.outcome.stdout.text,
                run.outcome.stderr.text
            ),
            Err(e) => format!("command {:?}: error {e}", self.command),
        }
    }
}

/// A probe's run and its report.
pub struct Probe {
    pub run: Run,
    pub report: Option<Value>,
}

impl Probe {
    pub fn detail(&self) -> String {
        self.report
            .as_ref()
            .and_then(|r| r["detail"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// Fails the test unless the probe ran, reported, and was blocked.
    pub fn assert_blocked(&self) -> &Probe {
        let report = self
            .report
            .as_ref()
            .unwrap_or_else(|| panic!("no probe report\n{}", self.run.context()));
        assert!(
            report["blocked"] == true && self.run.code() == 0,
            "NOT BLOCKED: {report}\n{}",
            self.run.context()
        );
        self
    }
}
