//! The sandbox's init: the first process of the new PID namespace. It finishes the
//! isolation from the inside (mounts, pivot, credentials, Landlock, seccomp), starts the
//! command, reaps every orphan, and exits as soon as the command does, which makes the
//! kernel kill whatever is left in the namespace.
//!
//! It must never start the command before every layer it was asked for is in place, and
//! never keep a descriptor of the supervisor's beyond the ones in `InitIo`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nanoclaw_spec::{LandlockStatus, SetupError};
use rustix::process::Signal;

use crate::protocol::{Call, InitMessage, SupervisorRequest, MAPPED};
use crate::seccomp::Filters;
use crate::sys::{self, Forked};
use crate::{bridge, creds, landlock, lifeline, rootfs};

/// The descriptors the init keeps from the supervisor.
pub(crate) struct InitIo {
    /// `MAPPED` once the supervisor has mapped the ids (setup may start), then the call (a
    /// JSON line: the command may start); then the lifeline: the supervisor holds the other
    /// end until it has reaped the init, so end of file means it is gone.
    pub go: OwnedFd,
    /// Where `InitMessage`s go. Close-on-exec: the command never holds it.
    pub messages: OwnedFd,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The most a call line may hold (its argv and environment).
const MAX_CALL: usize = 64 << 20;

fn send(messages: &OwnedFd, message: &InitMessage) {
    if let Ok(mut line) = serde_json::to_vec(message) {
        line.push(b'\n');
        // A short or failed write leaves the supervisor without this message; it then
        // reports the init's exit status, which is never mistaken for success.
        let _ = rustix::io::write(messages, &line);
    }
}

/// Reports a setup failure and ends the init (and with it the sandbox).
fn fail(messages: &OwnedFd, error: SetupError) -> ! {
    send(messages, &InitMessage::SetupFailed(error));
    sys::exit_now(125);
}

/// Runs the init. Never returns.
///
/// The sandbox is built (namespaces, root, mounts) before the call is known; the
/// credential drop, Landlock and seccomp follow the call, right before the command starts.
pub(crate) fn run(mut request: SupervisorRequest, filters: &Filters, io: InitIo) -> ! {
    let built = match build(&request, &io.go) {
        Ok(built) => built,
        Err(error) => fail(&io.messages, error),
    };
    // Built; nothing more happens until the call (or end of file: withdrawn).
    let Some(call) = read_call(&io.go) else {
        sys::exit_now(125)
    };
    request.spec.command = call.command;
    request.spec.env = call.env;
    let landlock = match lock(&request, filters, built) {
        Ok(status) => status,
        Err(error) => fail(&io.messages, error),
    };
    // The command's deadline counts from here; the supervisor's started earlier, so the
    // supervisor's kill always comes first while it lives.
    let deadline = lifeline::deadline(request.spec.limits.timeout);
    let sigchld = match sys::sigchld_fd() {
        Ok(fd) => fd,
        Err(e) => fail(&io.messages, SetupError::io("watch the command", e)),
    };
    send(&io.messages, &InitMessage::Ready { landlock });
    let command = match sys::fork_process() {
        Ok(Forked::Child) => exec_command(&request, &io),
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => fail(&io.messages, SetupError::io("start the command", e)),
    };
    drop(io.stdin);
    drop(io.stdout);
    drop(io.stderr);
    // The supervisor keeps its end of `go` open until it has reaped this process: end of
    // file on it means the supervisor is gone, and this exit then takes the whole sandbox
    // with it.
    match lifeline::wait(command, &io.go, &sigchld, deadline) {
        lifeline::Ended::Command { status, .. } => {
            send(&io.messages, &InitMessage::Exited { status });
            sys::exit_now(0);
        }
        lifeline::Ended::Cut | lifeline::Ended::Deadline | lifeline::Ended::WaitFailed => {
            sys::exit_now(125)
        }
    }
}

/// The call, sent by the supervisor once the runner has committed; `None` if it never
/// comes (the supervisor withdrew the sandbox or died).
fn read_call(go: &OwnedFd) -> Option<Call> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while !line.contains(&b'\n') && line.len() <= MAX_CALL {
        match rustix::io::read(go, &mut chunk) {
            Ok(0) => return None,
            Ok(n) => line.extend_from_slice(&chunk[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    let end = line.iter().position(|b| *b == b'\n')?;
    serde_json::from_slice(&line[..end]).ok()
}

/// What the init holds between building the sandbox and locking it.
struct Built {
    layout: rootfs::Layout,
    memfd_exec_forbidden: bool,
}

/// Everything between "a fresh set of namespaces" and "a root ready for any call": the
/// cgroup, the session, the network, the mounts and the pivot.
fn build(request: &SupervisorRequest, go: &OwnedFd) -> Result<Built, SetupError> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| SetupError::io("set parent death signal", e))?;
    let mut byte = [0u8; 1];
    match rustix::io::read(go, &mut byte) {
        Ok(1) if byte == MAPPED => {}
        // The supervisor gave up (or died) before finishing the id maps: never run
        // unmapped.
        _ => sys::exit_now(125),
    }
    for file in &request.cgroup_join {
        std::fs::write(file, "0").map_err(|e| SetupError {
            step: "join cgroup".into(),
            path: Some(file.display().to_string()),
            errno: e.raw_os_error(),
            message: e.to_string(),
        })?;
    }
    rustix::process::setsid().map_err(|e| SetupError::io("start a new session", e))?;
    // Unshared only now, inside the sandbox's cgroup, so that the namespace's root is it.
    sys::unshare_cgroup().map_err(|e| SetupError::io("create cgroup namespace", e))?;
    rustix::system::sethostname(b"nanoclaw").map_err(|e| SetupError::io("set hostname", e))?;
    sys::loopback_up().map_err(|e| SetupError::io("bring up loopback", e))?;
    // Where the sysctl cannot be set (an unprivileged caller, an old kernel), memfd_create
    // is refused outright instead.
    let memfd_exec_forbidden = forbid_memfd_exec().is_ok();
    let sources = rootfs::open_sources(&request.spec)?;
    creds::assume_user(request.spec.user, request.privileged)?;
    let layout = rootfs::assemble(&request.spec, sources)?;
    Ok(Built {
        layout,
        memfd_exec_forbidden,
    })
}

/// Everything between "the call is known" and "ready to exec": the credential drop,
/// Landlock, seccomp, and the egress bridge under all of them.
fn lock(
    request: &SupervisorRequest,
    filters: &Filters,
    built: Built,
) -> Result<LandlockStatus, SetupError> {
    creds::drop_privileges(request.spec.user, &request.spec.limits)?;
    // A credential change clears the death signal, so it is set again after the last one.
    // If the supervisor died before this, the init learns it from `go` (end of file) before
    // the command starts, and from the lifeline wait after.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| SetupError::io("set parent death signal", e))?;
    sys::set_not_dumpable().map_err(|e| SetupError::io("mark init not dumpable", e))?;
    let landlock = landlock::restrict(&built.layout)?;
    filters
        .install(built.memfd_exec_forbidden)
        .map_err(|e| SetupError {
            step: "install seccomp filter".into(),
            path: None,
            errno: None,
            message: e.to_string(),
        })?;
    // Started last, so the bridge runs under every restriction the command has.
    if let Some(proxy) = &request.spec.egress_proxy {
        bridge::start(
            proxy.port,
            Path::new(nanoclaw_spec::EgressProxy::SOCKET_INSIDE),
        )?;
    }
    Ok(landlock)
}

/// An anonymous memory file can be written and then executed, which would run a dropped
/// binary despite noexec mounts and Landlock (neither sees a path). The sysctl is per PID
/// namespace and applies to the writer's namespace whatever /proc it goes through, so the
/// init sets it through the host's /proc before the pivot, while its euid is still the
/// one the kernel's sysctl permission check wants.
fn forbid_memfd_exec() -> Result<(), SetupError> {
    const SYSCTL: &str = "/proc/sys/vm/memfd_noexec";
    let step = "forbid executable memfds (vm.memfd_noexec)";
    let error = |message: String| SetupError {
        step: step.into(),
        path: Some(SYSCTL.into()),
        errno: None,
        message,
    };
    std::fs::write(SYSCTL, "2").map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => error("the kernel has no vm.memfd_noexec (Linux 6.3 or later is needed to stop memfd execution)".into()),
        _ => error(e.to_string()),
    })?;
    match std::fs::read_to_string(SYSCTL) {
        Ok(value) if value.trim() == "2" => Ok(()),
        Ok(value) => Err(error(format!(
            "reads back {} after writing 2",
            value.trim()
        ))),
        Err(e) => Err(error(e.to_string())),
    }
}

/// The command's side of the fork: wire the streams, enter the workdir, exec.
fn exec_command(request: &SupervisorRequest, io: &InitIo) -> ! {
    let spec = &request.spec;
    let report = |message: InitMessage, code: i32| -> ! {
        send(&io.messages, &message);
        sys::exit_now(code)
    };
    if let Err(e) = sys::unblock_signals() {
        report(
            InitMessage::SetupFailed(SetupError::io("unblock signals", e)),
            125,
        );
    }
    for (fd, target) in [(&io.stdin, 0), (&io.stdout, 1), (&io.stderr, 2)] {
        if let Err(e) = sys::dup2(fd.as_raw_fd(), target) {
            report(
                InitMessage::SetupFailed(SetupError::io("connect standard streams", e)),
                125,
            );
        }
    }
    if let Err(error) = close_and_enter(&spec.workdir) {
        report(InitMessage::SetupFailed(error), 125);
    }
    let program = spec.command.first().cloned().unwrap_or_default();
    let (argv, envp) = match (
        c_strings(spec.command.iter().map(String::as_str)),
        c_strings(spec.command_env().into_iter().map(|(k, v)| {
            let mut entry = k.into_bytes();
            entry.push(b'=');
            entry.extend_from_slice(&v);
            entry
        })),
    ) {
        (Some(argv), Some(envp)) => (argv, envp),
        _ => report(
            InitMessage::SetupFailed(SetupError {
                step: "prepare the command".into(),
                path: None,
                errno: None,
                message: "an argument or environment value contains a NUL byte".into(),
            }),
            125,
        ),
    };
    let path = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(nanoclaw_spec::DEFAULT_PATH);
    let error = exec_on_path(&program, path, &argv, &envp);
    report(
        InitMessage::ExecFailed {
            program,
            errno: error.raw_os_error().unwrap_or(0),
            message: error.to_string(),
        },
        127,
    )
}

/// The last steps before exec: no descriptor but the standard streams survives it, and
/// the command starts in `workdir`.
pub(crate) fn close_and_enter(workdir: &Path) -> Result<(), SetupError> {
    sys::cloexec_from(3).map_err(|e| SetupError::io("close inherited descriptors", e))?;
    rustix::process::chdir(workdir).map_err(|e| {
        let mut error = SetupError::io("enter working directory", e);
        error.path = Some(workdir.display().to_string());
        error
    })
}

pub(crate) fn c_strings<I, S>(items: I) -> Option<Vec<CString>>
where
    I: Iterator<Item = S>,
    S: Into<Vec<u8>>,
{
    items.map(|s| CString::new(s).ok()).collect()
}

/// execvp(3) semantics: a name with a slash is run as is; otherwise each `PATH` entry is
/// tried, and a permission error is remembered over a later "not found".
pub(crate) fn exec_on_path(
    program: &str,
    path: &str,
    argv: &[CString],
    envp: &[CString],
) -> std::io::Error {
    let candidates: Vec<std::path::PathBuf> = if program.contains('/') {
        vec![program.into()]
    } else {
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(program))
            .collect()
    };
    let mut denied = None;
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    for candidate in candidates {
        let Ok(c_path) = CString::new(candidate.as_os_str().as_bytes()) else {
            continue;
        };
        let error = sys::execve(&c_path, argv, envp);
        match error.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => last = error,
            Some(libc::EACCES) | Some(libc::EPERM) => denied = Some(error),
            _ => return error,
        }
    }
    denied.unwrap_or(last)
}
