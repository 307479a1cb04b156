//! The native Linux backend: namespaces, pivot_root onto a read-only root, seccomp,
//! Landlock, cgroups (v2, and v1 where that is what the host has) and rlimits. No daemon.
//!
//! The runner side (`NativeBackend`) creates the cgroup, re-executes the current binary as
//! the single-threaded sandbox supervisor (`supervisor`), and turns its report into an
//! `Outcome`. The supervisor creates the namespaces and the sandbox's init (`init`), which
//! builds the root (`rootfs`) and waits for the call; then it drops privileges (`creds`),
//! applies Landlock and seccomp, and runs the command. A sandbox can be prepared ahead of
//! its call (`NativeBackend::prepare`, for a pool) or run at once (`Backend::run`, which is
//! prepare and run). Outside tests, the only `unsafe` code of the backend lives in `sys`.
//!
//! This crate must never start a command with a layer missing that the spec asked for, and
//! never leave a process, mount, cgroup or descriptor behind.

pub mod bridge;
pub mod cgroup;
pub mod container;
mod creds;
mod init;
mod landlock;
mod lifeline;
mod protocol;
mod rootfs;
pub mod seccomp;
mod supervisor;
mod sys;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nanoclaw_spec::{
    check_sandbox_path, Backend, BackendError, Enforced, IoMode, Network, Outcome, Root,
    SandboxSpec,
};
use rustix::event::{PollFd, PollFlags};

use crate::protocol::{SupervisorReport, SupervisorRequest, REPORT_FD, REQUEST_FD};

pub use protocol::Call;
pub use supervisor::main as supervisor_main;
pub use sys::landlock_abi;

/// The first argument that makes the nanoclaw binary act as the sandbox supervisor.
pub const SUPERVISOR_ARG: &str = "__nanoclaw_sandbox_supervisor";

/// Signals that end a run early: the sandbox is torn down and the runner reports them.
const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Runs specs with the host kernel's isolation.
pub struct NativeBackend {
    /// The binary re-executed as the supervisor (the nanoclaw binary itself).
    supervisor: PathBuf,
}

impl NativeBackend {
    /// `supervisor` is the nanoclaw binary, which dispatches `SUPERVISOR_ARG` to
    /// `supervisor_main`.
    pub fn new(supervisor: PathBuf) -> Self {
        NativeBackend { supervisor }
    }
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::Invalid(message.into())
}

/// Refuses a call no sandbox can run: no command, or an environment variable that is not
/// portable (`nanoclaw_spec::check_env`).
fn check_call(call: &Call, io: IoMode) -> Result<(), BackendError> {
    if call.command.is_empty() {
        return Err(invalid("no command given"));
    }
    for (name, value) in &call.env {
        nanoclaw_spec::check_env(name, value).map_err(invalid)?;
    }
    if call.stdin.is_some() && !io.stdin {
        return Err(invalid(
            "the call brings stdin but the sandbox was prepared without it",
        ));
    }
    Ok(())
}

/// Refuses specs this backend cannot run as written (the command and environment are
/// checked with the call).
fn validate(spec: &SandboxSpec) -> Result<(), BackendError> {
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

    /// Prepare and run in one: the sandbox is built while `commit` runs (the audit log's
    /// fsync overlaps the namespaces and mounts), and the call goes to it once committed.
    fn run(
        &self,
        spec: &SandboxSpec,
        io: IoMode,
        commit: &mut dyn FnMut() -> Result<(), BackendError>,
    ) -> Result<Outcome, BackendError> {
        let call = Call {
            command: spec.command.clone(),
            env: spec.env.clone(),
            stdin: None,
        };
        check_call(&call, io)?;
        self.prepare(spec, io)?.run(call, commit)
    }
}

impl NativeBackend {
    /// Builds a sandbox for `spec` (cgroup, namespaces, root, mounts) that waits for its
    /// call. The spec's command and environment are only a template: the call brings its
    /// own. The credential drop, Landlock and seccomp follow the call, right before the
    /// command starts. Dropping the result unused tears the sandbox down.
    ///
    /// Safe to call from a multi-threaded process: the supervisor is a re-executed binary.
    pub fn prepare(&self, spec: &SandboxSpec, io: IoMode) -> Result<Prepared, BackendError> {
        validate(spec)?;
        let ids = HostIds::for_user(spec.user)?;
        // Writable mounts become overlays on the host whose changes are applied after the
        // run; the sandbox binds them instead of the sources.
        let (writes, staged) = stage_writes(spec)?;
        let mut supervisor = Supervisor::spawn(&self.supervisor, io)?;
        // Made while the supervisor starts (they overlap on a second core); the supervisor
        // waits for its request, which names the cgroup.
        let cgroup = create_cgroup(spec)?;
        let request = SupervisorRequest {
            spec: staged,
            io,
            cgroup_join: cgroup.as_ref().map(join_files).unwrap_or_default(),
            host_uid: ids.uid,
            host_gid: ids.gid,
            privileged: ids.privileged,
        };
        supervisor.send(&encode_request(&request)?)?;
        Ok(Prepared {
            supervisor,
            cgroup,
            writes,
            spec: request.spec,
        })
    }
}

/// The host ids a sandbox's user maps to. Host root maps the sandbox ids to the same
/// unprivileged ids on the host, so files a sandbox writes never belong to host root;
/// anyone else maps them to themselves.
struct HostIds {
    uid: u32,
    gid: u32,
    privileged: bool,
}

impl HostIds {
    fn for_user(user: nanoclaw_spec::User) -> Result<HostIds, BackendError> {
        let privileged = rustix::process::geteuid().is_root();
        if privileged {
            return Ok(HostIds {
                uid: user.uid,
                gid: user.gid,
                privileged,
            });
        }
        if user.uid == 0 || user.gid == 0 {
            return Err(invalid(
                "only host root can map uid or gid 0 into a sandbox",
            ));
        }
        Ok(HostIds {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            privileged,
        })
    }
}

/// A sandbox built and waiting for its one call (see `NativeBackend::prepare`). Dropped
/// unused, its supervisor is killed (which kills the sandbox) and its cgroup and overlays
/// are removed, in that order (the fields' order).
pub struct Prepared {
    supervisor: Supervisor,
    cgroup: Option<cgroup::Cgroup>,
    writes: Option<nanoclaw_overlay::Writes>,
    /// The spec as built (writable mounts staged); its command and env are the template's.
    spec: SandboxSpec,
}

impl Prepared {
    /// Runs `call` in the sandbox, calling `commit` first: the command never starts unless
    /// `commit` succeeds, and `commit`'s error is returned. The sandbox is used once.
    pub fn run(
        mut self,
        call: Call,
        commit: &mut dyn FnMut() -> Result<(), BackendError>,
    ) -> Result<Outcome, BackendError> {
        check_call(&call, self.spec_io())?;
        commit()?;
        self.supervisor.send(&encode_call(&call)?)?;
        let report = self.supervisor.wait_report();
        let Prepared {
            supervisor,
            cgroup,
            writes,
            spec,
        } = self;
        // The sandbox is gone (its PID namespace died with its init), and so is the
        // supervisor: nothing writes the cgroup or the overlays any more.
        drop(supervisor);
        let limits = cgroup.map(finish_cgroup).transpose()?;
        let writes = writes.map(finish_writes).transpose();
        let finished = match report? {
            SupervisorReport::Finished(finished) => finished,
            SupervisorReport::SetupFailed(error) => return Err(BackendError::Setup(error)),
            SupervisorReport::ExecFailed { program, errno } => {
                return Err(BackendError::exec_failed(program, errno));
            }
        };
        let mut outcome = outcome(&spec, finished, limits);
        outcome.writes = writes?;
        Ok(outcome)
    }

    fn spec_io(&self) -> IoMode {
        self.supervisor.io
    }
}

/// What the cgroup says about a finished run.
struct CgroupEnd {
    version: String,
    oom_killed: bool,
    cpu_ms: Option<u64>,
}

fn finish_cgroup(cgroup: cgroup::Cgroup) -> Result<CgroupEnd, BackendError> {
    let end = CgroupEnd {
        version: cgroup.version().as_str().to_string(),
        oom_killed: cgroup.oom_killed(),
        cpu_ms: cgroup.usage().cpu_ms,
    };
    cgroup.remove().map_err(|e| BackendError::Io {
        what: "remove the sandbox cgroup".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(end)
}

/// The outcome of a finished run of `spec`, with the limits the cgroup enforced (if any).
fn outcome(spec: &SandboxSpec, finished: protocol::Finished, cgroup: Option<CgroupEnd>) -> Outcome {
    let mut usage = finished.usage;
    if let Some(cpu_ms) = cgroup.as_ref().and_then(|c| c.cpu_ms) {
        usage.cpu_ms = cpu_ms;
    }
    let oom_killed = cgroup.as_ref().is_some_and(|c| c.oom_killed);
    let limited = cgroup.is_some();
    Outcome {
        exit_code: finished.exit_code,
        signal: finished.signal,
        timed_out: finished.timed_out,
        oom_killed: Outcome::killed_for_memory(oom_killed, finished.signal, finished.timed_out),
        duration_ms: finished.duration_ms,
        stdout: finished.stdout,
        stderr: finished.stderr,
        usage,
        enforced: Enforced {
            backend: "native".into(),
            namespaces: ["user", "mount", "pid", "net", "ipc", "uts", "cgroup"]
                .map(String::from)
                .to_vec(),
            seccomp: Some(seccomp::PROFILE_NAME.to_string()),
            landlock: finished.landlock,
            cgroup: cgroup.map(|c| c.version),
            memory_bytes: limited.then_some(spec.limits.memory_bytes),
            cpu_millis: limited.then_some(spec.limits.cpu_millis),
            pids: limited.then_some(spec.limits.pids),
            no_new_privs: true,
            capabilities: Vec::new(),
            uid: spec.user.uid,
            gid: spec.user.gid,
            read_only_root: true,
        },
        writes: None,
        redactions: finished.redactions,
        secret_expired: false,
        warnings: Vec::new(),
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

/// One JSON line that may hold secret values: zeroed when dropped, and sized so that
/// growing it leaves no copy behind (a value is at most 4 bytes a byte in JSON).
fn encode_line(
    value: &impl serde::Serialize,
    secret_bytes: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, BackendError> {
    let mut line = zeroize::Zeroizing::new(Vec::with_capacity((1 << 20) + 4 * secret_bytes));
    serde_json::to_writer(&mut *line, value)
        .map_err(|e| BackendError::io("encode sandbox request", std::io::Error::other(e)))?;
    line.push(b'\n');
    Ok(line)
}

fn encode_request(
    request: &SupervisorRequest,
) -> Result<zeroize::Zeroizing<Vec<u8>>, BackendError> {
    let secrets = request.spec.secrets.iter();
    encode_line(request, secrets.map(|s| s.value.expose().len()).sum())
}

fn encode_call(call: &Call) -> Result<zeroize::Zeroizing<Vec<u8>>, BackendError> {
    let values = call.env.iter().map(|(_, v)| v.len()).sum::<usize>();
    encode_line(call, values + call.stdin.as_ref().map_or(0, Vec::len))
}

/// The re-executed supervisor, seen from the runner. Dropped, it is killed and reaped
/// (which kills its sandbox); after a finished run that is a no-op.
struct Supervisor {
    child: std::process::Child,
    /// The request pipe: the request, then the call; then the supervisor's lifeline, closed
    /// by the kernel however this process dies.
    request: std::fs::File,
    report: std::fs::File,
    io: IoMode,
}

impl Supervisor {
    fn spawn(binary: &std::path::Path, io: IoMode) -> Result<Supervisor, BackendError> {
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| BackendError::io("create supervisor pipe", e.into()))
        };
        let (request_r, request_w) = pipe()?;
        let (report_r, report_w) = pipe()?;
        let mut command = Command::new(binary);
        command
            .arg(SUPERVISOR_ARG)
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
        .map_err(|e| BackendError::io("pass descriptors to the supervisor", e))?;
        let child = command.spawn().map_err(|e| {
            BackendError::io(format!("start sandbox supervisor {}", binary.display()), e)
        })?;
        Ok(Supervisor {
            child,
            request: request_w.into(),
            report: report_r.into(),
            io,
        })
    }

    fn send(&mut self, line: &[u8]) -> Result<(), BackendError> {
        self.request
            .write_all(line)
            .map_err(|e| BackendError::io("send request to the sandbox supervisor", e))
    }

    /// Waits for the report. A stop signal (Ctrl-C, SIGTERM, SIGHUP) kills the supervisor,
    /// whose death kills the sandbox.
    fn wait_report(&mut self) -> Result<SupervisorReport, BackendError> {
        let stop = StopSignals::watch()?;
        let mut report = Vec::new();
        let mut interrupted = false;
        loop {
            let mut fds = [
                PollFd::new(&self.report, PollFlags::IN),
                PollFd::new(&stop.reader, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(BackendError::io("wait for sandbox supervisor", e.into())),
            }
            let (report_ready, signalled) =
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
            if signalled {
                let mut bytes = [0u8; 16];
                let _ = (&stop.reader).read(&mut bytes);
                if !interrupted {
                    interrupted = true;
                    let _ = self.child.kill();
                }
            }
            if report_ready {
                let mut chunk = [0u8; 64 * 1024];
                match self.report.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => report.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(BackendError::io("read sandbox report", e)),
                }
            }
        }
        let status = self
            .child
            .wait()
            .map_err(|e| BackendError::io("wait for sandbox supervisor", e))?;
        if interrupted {
            return Err(BackendError::Interrupted);
        }
        serde_json::from_slice(&report).map_err(|_| {
            BackendError::io(
                "sandbox supervisor",
                std::io::Error::other(format!("ended without a report ({status})")),
            )
        })
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Killed first: closing the request pipe alone would let it report to nobody.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stop signals, watched through a socket while a run waits; unwatched when dropped.
struct StopSignals {
    reader: std::os::unix::net::UnixStream,
    registered: Vec<signal_hook::SigId>,
}

impl StopSignals {
    fn watch() -> Result<StopSignals, BackendError> {
        let error = |e| BackendError::io("watch stop signals", e);
        let (reader, writer) = std::os::unix::net::UnixStream::pair().map_err(error)?;
        reader.set_nonblocking(true).map_err(error)?;
        let mut stop = StopSignals {
            reader,
            registered: Vec::new(),
        };
        for signal in STOP_SIGNALS {
            let writer = writer.try_clone().map_err(error)?;
            let id = signal_hook::low_level::pipe::register(signal, writer).map_err(error)?;
            stop.registered.push(id);
        }
        Ok(stop)
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for id in &self.registered {
            signal_hook::low_level::unregister(*id);
        }
    }
}
