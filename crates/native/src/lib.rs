//! The native Linux backend: namespaces, pivot_root onto a read-only root, seccomp,
//! Landlock, cgroups (v2, and v1 where that is what the host has) and rlimits. No daemon.
//!
//! The runner side (`NativeBackend`) creates the cgroup, re-executes the current binary as
//! the single-threaded sandbox helper (`helper`), and turns its report into an `Outcome`.
//! The helper creates the namespaces and the sandbox's init (`init`), which builds the root
//! (`rootfs`), drops privileges (`creds`), applies Landlock and seccomp, and runs the
//! command. Outside tests, the only `unsafe` code of the backend lives in `sys`.
//!
//! This crate must never start a command with a layer missing that the spec asked for, and
//! never leave a process, mount, cgroup or descriptor behind.

pub mod bridge;
pub mod cgroup;
pub mod container;
mod creds;
mod helper;
mod init;
mod landlock;
mod lifeline;
mod protocol;
mod rootfs;
pub mod seccomp;
mod sys;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nanoclaw_spec::{
    check_sandbox_path, Backend, BackendError, Enforced, IoMode, Network, Outcome, Root,
    SandboxSpec,
};
use rustix::event::{PollFd, PollFlags};

use crate::protocol::{HelperReport, HelperRequest, COMMIT, REPORT_FD, REQUEST_FD};

pub use helper::main as helper_main;
pub use sys::landlock_abi;

/// The first argument that makes the nanoclaw binary act as the sandbox helper.
pub const HELPER_ARG: &str = "__nanoclaw_sandbox_helper";

/// Signals that end a run early: the sandbox is torn down and the runner reports them.
const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Runs specs with the host kernel's isolation.
pub struct NativeBackend {
    /// The binary re-executed as the helper (the nanoclaw binary itself).
    helper: PathBuf,
}

impl NativeBackend {
    /// `helper` is the nanoclaw binary, which dispatches `HELPER_ARG` to `helper_main`.
    pub fn new(helper: PathBuf) -> Self {
        NativeBackend { helper }
    }
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::Invalid(message.into())
}

/// Refuses specs this backend cannot run as written.
fn validate(spec: &SandboxSpec) -> Result<(), BackendError> {
    if spec.command.is_empty() {
        return Err(invalid("no command given"));
    }
    if let Root::Image(image) = &spec.root {
        return Err(invalid(format!(
            "image {image} needs the docker backend; the native backend takes a --rootfs directory"
        )));
    }
    if let Root::Rootfs(dir) = &spec.root {
        check_sandbox_path("rootfs", dir)?;
    }
    check_sandbox_path("workdir", &spec.workdir)?;
    match (&spec.network, &spec.egress_proxy) {
        (Network::None, None) => {}
        (Network::None, Some(_)) => {
            return Err(invalid(
                "an egress proxy was given for a sandbox without egress",
            ))
        }
        (Network::Egress(_), None) => {
            return Err(invalid(
                "a sandbox with egress needs its host proxy (the runner starts it)",
            ))
        }
        (Network::Egress(_), Some(proxy)) => {
            check_sandbox_path("egress proxy socket", &proxy.socket)?;
            if proxy.port == 0 {
                return Err(invalid("the egress bridge port must not be 0"));
            }
        }
    }
    spec.syscalls.check()?;
    spec.check_mounts()?;
    spec.check_secrets()?;
    let limits = &spec.limits;
    if limits.memory_bytes < 4 << 20 {
        return Err(invalid(format!(
            "memory limit {} bytes is too small to start a process (minimum 4m)",
            limits.memory_bytes
        )));
    }
    if limits.pids < 2 {
        return Err(invalid(
            "pids limit must be at least 2 (the sandbox init and the command)",
        ));
    }
    Ok(())
}

impl Backend for NativeBackend {
    fn name(&self) -> &'static str {
        "native"
    }

    /// The sandbox is built while `commit` runs (the audit log's fsync overlaps the
    /// namespaces and mounts); the init waits for the commit before it starts the command.
    fn run(
        &self,
        spec: &SandboxSpec,
        io: IoMode,
        commit: &mut dyn FnMut() -> Result<(), BackendError>,
    ) -> Result<Outcome, BackendError> {
        validate(spec)?;
        let host_uid = rustix::process::geteuid().as_raw();
        let privileged = host_uid == 0;
        if !privileged && (spec.user.uid == 0 || spec.user.gid == 0) {
            return Err(invalid(
                "only host root can map uid or gid 0 into a sandbox",
            ));
        }
        // Writable mounts become overlays on the host whose changes are applied after the
        // run; the sandbox binds them instead of the sources.
        let (writes, staged) = stage_writes(spec)?;
        // The cgroup is made while the helper starts (they overlap on a second core); the
        // helper waits for its request, which names the cgroup.
        let mut cgroup = None;
        let report = self.spawn_helper(io, commit, || {
            cgroup = create_cgroup(spec)?;
            Ok(HelperRequest {
                spec: staged,
                io,
                cgroup_join: cgroup.as_ref().map(join_files).unwrap_or_default(),
                // Host root maps the sandbox ids to the same unprivileged ids on the host,
                // so files a sandbox writes never belong to host root; anyone else maps
                // them to themselves.
                host_uid: if privileged { spec.user.uid } else { host_uid },
                host_gid: if privileged {
                    spec.user.gid
                } else {
                    rustix::process::getegid().as_raw()
                },
                privileged,
            })
        });
        let (oom_killed, usage) = match &cgroup {
            Some(c) => (c.oom_killed(), Some(c.usage())),
            None => (false, None),
        };
        let cgroup_version = cgroup.as_ref().map(|c| c.version().as_str().to_string());
        if let Some(cgroup) = cgroup {
            cgroup.remove().map_err(|e| BackendError::Io {
                what: "remove the sandbox cgroup".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        // The sandbox is gone (its PID namespace died with its init): nothing writes the
        // overlays any more, however the run ended.
        let writes = writes.map(finish_writes).transpose();
        let finished = match report? {
            HelperReport::Finished(finished) => finished,
            HelperReport::SetupFailed(error) => return Err(BackendError::Setup(error)),
            HelperReport::ExecFailed { program, errno } => {
                return Err(BackendError::exec_failed(program, errno));
            }
        };
        let mut usage_out = finished.usage;
        if let Some(u) = usage {
            usage_out.cpu_ms = u.cpu_ms.unwrap_or(usage_out.cpu_ms);
        }
        let limited = cgroup_version.is_some();
        Ok(Outcome {
            exit_code: finished.exit_code,
            signal: finished.signal,
            timed_out: finished.timed_out,
            oom_killed: Outcome::killed_for_memory(oom_killed, finished.signal, finished.timed_out),
            duration_ms: finished.duration_ms,
            stdout: finished.stdout,
            stderr: finished.stderr,
            usage: usage_out,
            enforced: Enforced {
                backend: "native".into(),
                namespaces: ["user", "mount", "pid", "net", "ipc", "uts", "cgroup"]
                    .map(String::from)
                    .to_vec(),
                seccomp: Some(seccomp::PROFILE_NAME.to_string()),
                landlock: finished.landlock,
                cgroup: cgroup_version,
                memory_bytes: limited.then_some(spec.limits.memory_bytes),
                cpu_millis: limited.then_some(spec.limits.cpu_millis),
                pids: limited.then_some(spec.limits.pids),
                no_new_privs: true,
                capabilities: Vec::new(),
                uid: spec.user.uid,
                gid: spec.user.gid,
                read_only_root: true,
            },
            writes: writes?,
            redactions: finished.redactions,
            secret_expired: false,
            warnings: Vec::new(),
        })
    }
}

/// Stages each writable mount of `spec` as an overlay with the run's write budget and
/// returns the spec the sandbox is built from: the same, with those sources replaced.
fn stage_writes(
    spec: &SandboxSpec,
) -> Result<(Option<nanoclaw_overlay::Writes>, SandboxSpec), BackendError> {
    let mut staged = spec.clone();
    if !spec.mounts.iter().any(|m| m.writable) {
        return Ok((None, staged));
    }
    let unavailable = |e: nanoclaw_overlay::Error| BackendError::LayerUnavailable {
        layer: "the write budget of writable mounts".into(),
        reason: e.to_string(),
    };
    nanoclaw_overlay::reap_stale();
    let mut writes = nanoclaw_overlay::Writes::create(nanoclaw_overlay::Budget {
        bytes: spec.limits.write_bytes,
        files: spec.limits.write_files,
    })
    .map_err(unavailable)?;
    for mount in staged.mounts.iter_mut().filter(|m| m.writable) {
        mount.src = writes.stage(&mount.src).map_err(unavailable)?;
    }
    Ok((Some(writes), staged))
}

fn finish_writes(
    writes: nanoclaw_overlay::Writes,
) -> Result<nanoclaw_spec::WriteReport, BackendError> {
    writes.finish().map_err(|e| BackendError::Io {
        what: "apply the writable mounts' changes".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// A fresh cgroup with the spec's limits, or `None` where the host cannot give one and the
/// spec allows running without (the outcome then says the limits were not enforced).
fn create_cgroup(spec: &SandboxSpec) -> Result<Option<cgroup::Cgroup>, BackendError> {
    let limits = cgroup::CgroupLimits {
        memory_bytes: spec.limits.memory_bytes,
        cpu_millis: spec.limits.cpu_millis,
        pids: spec.limits.pids,
    };
    match cgroup::Layout::detect()
        .inspect(cgroup::reap_stale)
        .and_then(|layout| cgroup::Cgroup::create(&layout, &limits))
    {
        Ok(cgroup) => Ok(Some(cgroup)),
        Err(_) if spec.allow_unlimited => Ok(None),
        Err(error) => Err(BackendError::LayerUnavailable {
            layer: "cgroup limits (memory, cpu, pids)".into(),
            reason: format!("{error}; pass --allow-unlimited to run without them"),
        }),
    }
}

/// The files through which the init moves itself into `cgroup`.
///
/// On v1 a single thread writing "0" (itself) to `tasks` skips the kernel's global
/// threadgroup lock, whose first writer waits a whole RCU grace period (4 to 16 ms here);
/// `cgroup.procs` would take it. The init is single-threaded, so moving its one thread
/// moves the process, and everything it forks is born inside.
fn join_files(cgroup: &cgroup::Cgroup) -> Vec<PathBuf> {
    let file = match cgroup.version() {
        cgroup::Version::V1 => "tasks",
        cgroup::Version::V2 => "cgroup.procs",
    };
    cgroup.paths().iter().map(|dir| dir.join(file)).collect()
}

impl NativeBackend {
    /// Starts the helper, hands it the request and waits for its report. A stop signal
    /// (Ctrl-C, SIGTERM, SIGHUP) kills the helper, whose death kills the sandbox.
    fn spawn_helper(
        &self,
        io: IoMode,
        commit: &mut dyn FnMut() -> Result<(), BackendError>,
        prepare: impl FnOnce() -> Result<HelperRequest, BackendError>,
    ) -> Result<HelperReport, BackendError> {
        let io_err = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| BackendError::io(what, e)
        };
        let (request_r, request_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| BackendError::io("create helper pipe", e.into()))?;
        let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| BackendError::io("create helper pipe", e.into()))?;
        let (signal_r, signal_w) =
            std::os::unix::net::UnixStream::pair().map_err(io_err("create signal pipe"))?;
        signal_r
            .set_nonblocking(true)
            .map_err(io_err("create signal pipe"))?;
        let mut registered = Vec::new();
        for signal in STOP_SIGNALS {
            let writer = signal_w.try_clone().map_err(io_err("watch stop signals"))?;
            registered.push(
                signal_hook::low_level::pipe::register(signal, writer)
                    .map_err(io_err("watch stop signals"))?,
            );
        }
        let unregister = || {
            for id in &registered {
                signal_hook::low_level::unregister(*id);
            }
        };

        let mut command = Command::new(&self.helper);
        command
            .arg(HELPER_ARG)
            .env_clear()
            .stdin(if io.stdin {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        sys::pass_fds(
            &mut command,
            vec![(request_r, REQUEST_FD), (report_w, REPORT_FD)],
        )
        .map_err(io_err("pass descriptors to the helper"))?;
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                unregister();
                return Err(BackendError::io(
                    format!("start sandbox helper {}", self.helper.display()),
                    e,
                ));
            }
        };
        drop(command);
        let payload = match prepare().and_then(|request| {
            // It holds the secret values: zeroed when sent, and sized so that growing it
            // leaves no copy behind (a value is at most 4 bytes a byte in JSON).
            let values: usize = request
                .spec
                .secrets
                .iter()
                .map(|s| s.value.expose().len())
                .sum();
            let mut line = zeroize::Zeroizing::new(Vec::with_capacity((1 << 20) + 4 * values));
            serde_json::to_writer(&mut *line, &request).map_err(|e| {
                BackendError::io("encode sandbox request", std::io::Error::other(e))
            })?;
            line.push(b'\n');
            Ok(line)
        }) {
            Ok(payload) => payload,
            Err(error) => {
                // Closing the request pipe unsent makes the helper end without a sandbox.
                drop(request_w);
                let _ = child.kill();
                let _ = child.wait();
                unregister();
                return Err(error);
            }
        };
        // The request starts the sandbox's setup; the commit byte after it lets the command
        // start. Without it (the commit failed) the pipe closes and the sandbox is torn down.
        let mut request_file = std::fs::File::from(request_w);
        let sent = request_file.write_all(&payload);
        let committed = match &sent {
            Ok(()) => commit(),
            Err(_) => Ok(()),
        };
        let sent = match (sent, &committed) {
            (Ok(()), Ok(())) => request_file.write_all(COMMIT),
            (sent, _) => sent,
        };
        // Once committed, the request pipe stays open until the helper is reaped: it is the
        // helper's lifeline, closed by the kernel however this process dies. Otherwise it
        // closes now, which withdraws the request.
        let _lifeline = match (&sent, &committed) {
            (Ok(()), Ok(())) => Some(request_file),
            _ => {
                drop(request_file);
                None
            }
        };

        let mut report = Vec::new();
        let mut report_file = std::fs::File::from(report_r);
        let mut stopped_by = None;
        loop {
            let mut fds = [
                PollFd::new(&report_file, PollFlags::IN),
                PollFd::new(&signal_r, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    unregister();
                    return Err(BackendError::io("wait for sandbox helper", e.into()));
                }
            }
            let (report_ready, signal_ready) =
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
            if signal_ready && stopped_by.is_none() {
                let mut byte = [0u8; 16];
                let _ = (&signal_r).read(&mut byte);
                stopped_by = Some(());
                let _ = child.kill();
            }
            if report_ready {
                let mut chunk = [0u8; 64 * 1024];
                match report_file.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => report.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        unregister();
                        return Err(BackendError::io("read sandbox report", e));
                    }
                }
            }
        }
        let status = child.wait();
        unregister();
        if stopped_by.is_some() {
            return Err(BackendError::Interrupted);
        }
        committed?;
        sent.map_err(io_err("send request to the sandbox helper"))?;
        let status = status.map_err(io_err("wait for sandbox helper"))?;
        serde_json::from_slice(&report).map_err(|_| {
            BackendError::io(
                "sandbox helper",
                std::io::Error::other(format!("ended without a report ({status})")),
            )
        })
    }
}
