//! `nanoclaw run --prebuilt`: the runner's side of the pool of the long-running modes
//! (`crates/pool`).
//!
//! The contract, between the pool (the parent) and this runner:
//!
//! 1. The pool starts `nanoclaw run --policy F --tool=T --workspace W --audit A --json
//!    --params-json=- --prebuilt` with an extra pipe as fd 3 (and stdin, stdout, stderr
//!    pipes), SIGTERM as its parent-death signal.
//! 2. The runner builds everything of the sandbox that does not depend on the call's
//!    arguments (a tool's arguments only fill its argv and stdin: the namespaces, root,
//!    mounts and cgroup are built here, by the native backend's `prepare`), then writes one
//!    byte `R` to fd 3 and closes it. Nothing of the call has run and nothing is recorded
//!    in the audit log yet.
//! 3. It then waits for the params JSON on stdin until EOF, and runs the call as a plain
//!    `run --params-json=-` does, through the same runner (audit start and end): the call's
//!    spec must be the one the sandbox was built from, but for its argv; seccomp, Landlock
//!    and the credential drop are applied right before the command's `execve`.
//! 4. If it cannot pre-build, it writes nothing, closes fd 3 and exits 125 with a message
//!    on stderr: the pool then runs that tool's calls one-shot and says so.
//! 5. A waiting runner that gets SIGTERM, SIGINT or SIGHUP (idle limit, server stopping) or
//!    sees stdin closed with no byte on it tears its sandbox down and exits 125 without
//!    running anything and without an audit record.
//!
//! The call's spec is resolved again when it comes: if it differs from the one built ahead
//! (a credential file came or went in the workspace, or was replaced), the sandbox built
//! ahead is torn down and the call gets one built for it.
//!
//! A tool with secrets or network egress is not pre-built (a secret's lifetime and the
//! proxy belong to one call): its runner says `R` at once and builds the sandbox after the
//! call arrives, as a one-shot run does.

use std::cell::RefCell;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use anyhow::{Context, Result};
use nanoclaw_native::{Call, NativeBackend, Prepared};
use nanoclaw_policy::Invocation;
use nanoclaw_spec::{Backend, BackendError, IoMode, Network, Outcome, Root, SandboxSpec};
use rustix::event::{PollFd, PollFlags};

use crate::run::RunArgs;
use crate::RUNNER_ERROR;

/// The fd the pool passes for the readiness byte.
const READY_FD: i32 = 3;

/// Signals that withdraw a waiting runner.
const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// A sandbox built before its call, used as the backend of that one call.
pub(crate) struct Prebuilt {
    prepared: RefCell<Option<Prepared>>,
    /// The spec the sandbox was built from (command unbound).
    template: SandboxSpec,
    /// The host files behind the template's hidden credential paths, as they were when the
    /// sandbox was built (see `hidden_files`).
    hidden: Vec<Option<(u64, u64)>>,
    /// Builds a fresh sandbox when the one built ahead no longer fits the call.
    backend: NativeBackend,
    io: IoMode,
    /// The call's standard input (its stdin parameter), empty without one.
    stdin: RefCell<Vec<u8>>,
}

impl Prebuilt {
    pub(crate) fn set_stdin(&self, stdin: Option<Vec<u8>>) {
        *self.stdin.borrow_mut() = stdin.unwrap_or_default();
    }
}

/// What may differ between the sandbox built ahead and the call's: the argv only (and the
/// invocation identity, which the runner sets).
fn scope(spec: &SandboxSpec) -> SandboxSpec {
    let mut scope = spec.clone();
    scope.command.clear();
    scope.invocation = Default::default();
    scope
}

impl Backend for Prebuilt {
    fn name(&self) -> &'static str {
        "native"
    }

    fn run(
        &self,
        spec: &SandboxSpec,
        _io: IoMode,
        commit: &mut dyn FnMut() -> Result<(), BackendError>,
    ) -> Result<Outcome, BackendError> {
        let mut prepared = self.prepared.borrow_mut().take().ok_or_else(|| {
            BackendError::Invalid("a pre-built sandbox runs exactly one call".into())
        })?;
        // The sandbox built ahead masks the credential files that were there then, by the
        // files they were: if the call's scope differs (a credential file came or went) or a
        // hidden file was replaced since (a rename over it drops its mask), it is torn down
        // and the call gets a sandbox built now, as a one-shot run would.
        if scope(spec) != scope(&self.template) || hidden_files(spec) != self.hidden {
            drop(prepared);
            prepared = self.backend.prepare(spec, self.io)?;
        }
        let call = Call {
            command: spec.command.clone(),
            env: spec.env.clone(),
            stdin: Some(std::mem::take(&mut *self.stdin.borrow_mut())),
        };
        prepared.run(call, commit)
    }
}

/// `--prebuilt`: builds the tool's sandbox where it can, says `R` on fd 3 and waits for
/// the call on stdin. `Err`: exit now with that status, having run and recorded nothing.
pub(crate) fn start(args: &RunArgs) -> Result<Option<Prebuilt>, ExitCode> {
    let refuse = |message: String| {
        eprintln!("nanoclaw run: --prebuilt: {message}");
        ExitCode::from(RUNNER_ERROR)
    };
    // SAFETY: F_GETFD only reads the descriptor's flags; any fd number is valid to ask.
    if unsafe { libc::fcntl(READY_FD, libc::F_GETFD) } == -1 {
        return Err(refuse("needs the readiness pipe as fd 3".into()));
    }
    // SAFETY: fd 3 is open (checked above), passed by the pool for this process alone, and
    // owned (closed) here only.
    let ready = unsafe { OwnedFd::from_raw_fd(READY_FD) };
    // Registered before the build, so that a stop during it tears the sandbox down too.
    let stop = StopSignals::register().map_err(|e| refuse(format!("{e:#}")))?;
    let prebuilt = build(args).map_err(|e| refuse(format!("{e:#}")))?;
    rustix::io::write(&ready, b"R")
        .map_err(|e| refuse(format!("could not say ready on fd 3: {e}")))?;
    drop(ready);
    match stop.wait_for_stdin() {
        Ok(true) => Ok(prebuilt),
        // Withdrawn: dropping the sandbox tears it down.
        Ok(false) => Err(ExitCode::from(RUNNER_ERROR)),
        Err(error) => Err(refuse(format!("wait for the call: {error}"))),
    }
}

/// The tool's sandbox, built; `None` for a tool built after its call (see the module).
fn build(args: &RunArgs) -> Result<Option<Prebuilt>> {
    let (Some(policy), Some(tool)) = (&args.policy, &args.tool) else {
        anyhow::bail!("needs --policy and --tool");
    };
    if args.params_json.as_deref() != Some("-") {
        anyhow::bail!("needs --params-json=- (the call comes on standard input)");
    }
    let policy = crate::policy::load(policy)?;
    let invocation = Invocation {
        workspace: args
            .workspace
            .as_deref()
            .map(crate::run::host_path_of)
            .transpose()?,
        extra_args: Vec::new(),
        params: Default::default(),
        narrowing: crate::run::narrowing(args)?,
    };
    let mut spec = policy.resolve_scope(tool, &invocation)?;
    crate::run::hide_credentials(&mut spec)?;
    if !spec.secrets.is_empty()
        || spec.network != Network::None
        || matches!(spec.root, Root::Image(_))
    {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("locate the nanoclaw binary")?;
    let io = IoMode {
        stdin: true,
        capture: args.json,
    };
    let backend = NativeBackend::new(exe);
    let hidden = hidden_files(&spec);
    let prepared = backend.prepare(&spec, io)?;
    Ok(Some(Prebuilt {
        prepared: RefCell::new(Some(prepared)),
        template: spec,
        hidden,
        backend,
        io,
        stdin: RefCell::new(Vec::new()),
    }))
}

/// The device and inode of the host file behind each of `spec`'s hidden credential paths
/// (`None`: not there, or not reachable through a mount).
fn hidden_files(spec: &SandboxSpec) -> Vec<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    spec.hidden
        .iter()
        .map(|path| {
            let mount = spec
                .mounts
                .iter()
                .filter(|m| path.starts_with(&m.dst))
                .max_by_key(|m| m.dst.components().count())?;
            let host = mount.src.join(path.strip_prefix(&mount.dst).ok()?);
            let meta = std::fs::symlink_metadata(host).ok()?;
            Some((meta.dev(), meta.ino()))
        })
        .collect()
}

/// The stop signals, delivered to a socket instead of ending the process while it waits.
struct StopSignals {
    reader: UnixStream,
    ids: Vec<signal_hook::SigId>,
}

impl StopSignals {
    fn register() -> Result<StopSignals> {
        let (reader, writer) = UnixStream::pair().context("create the signal pipe")?;
        reader.set_nonblocking(true)?;
        let mut signals = StopSignals {
            reader,
            ids: Vec::new(),
        };
        for signal in STOP_SIGNALS {
            let writer = writer.try_clone()?;
            let id = signal_hook::low_level::pipe::register(signal, writer)
                .context("watch stop signals")?;
            signals.ids.push(id);
        }
        Ok(signals)
    }

    /// Waits until stdin is readable: `true` when the call's bytes are there, `false` on a
    /// stop signal or an end of file with nothing before it (the pool withdrew this runner).
    fn wait_for_stdin(&self) -> std::io::Result<bool> {
        // SAFETY: fd 0 stays open for the whole process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        loop {
            let mut fds = [
                PollFd::new(&stdin, PollFlags::IN),
                PollFd::new(&self.reader, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => return Err(error.into()),
            }
            if !fds[1].revents().is_empty() {
                return Ok(false);
            }
            if !fds[0].revents().is_empty() {
                return Ok(has_pending_bytes(stdin.as_fd()));
            }
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for id in &self.ids {
            signal_hook::low_level::unregister(*id);
        }
        let mut drained = [0u8; 16];
        let _ = (&self.reader).read(&mut drained);
    }
}

/// Whether readable `fd` holds bytes (rather than only its end of file).
fn has_pending_bytes(fd: BorrowedFd<'_>) -> bool {
    rustix::io::ioctl_fionread(fd).is_ok_and(|n| n > 0)
}
