//! The sandbox supervisor: the single-threaded process the runner re-executes. It creates
//! the namespaces, maps the sandbox user, hands the init its call, relays the standard
//! streams, enforces the wall-clock timeout, and reports how the command ended.
//!
//! It runs on the host side with the runner's privileges, so it must never act on anything
//! the sandbox says except to report it, and never let the sandbox hold its report pipe.
//! Its lifeline to the runner is the request pipe, watched at every step: the runner's
//! death (or a withdrawn sandbox) ends it, and its `Init` guard takes the sandbox along.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nanoclaw_spec::{add_counts, Capture, Captured, Redactor, SandboxSecret, SetupError, Usage};
use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};
use rustix::pipe::PipeFlags;

use crate::init::{self, InitIo};
use crate::protocol::{
    Call, Finished, InitMessage, SupervisorReport, SupervisorRequest, MAPPED, REPORT_FD, REQUEST_FD,
};
use crate::seccomp;
use crate::sys::{self, Forked};

/// How long output may keep arriving after the sandbox's init has exited (every process in
/// it is dead by then, so this only bounds draining the pipes).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

fn setup_error(step: &str, err: impl std::fmt::Display) -> SetupError {
    SetupError {
        step: step.to_string(),
        path: None,
        errno: None,
        message: err.to_string(),
    }
}

/// Entry point of the re-executed supervisor. Never returns.
pub fn main() -> ! {
    let Some(report_fd) = sys::take_inherited_fd(REPORT_FD) else {
        eprintln!("nanoclaw: the sandbox supervisor is started by `nanoclaw run`, not by hand");
        sys::exit_now(125);
    };
    let mut report_fd = Some(report_fd);
    let report = match run(&mut report_fd) {
        Ok(report) => report,
        Err(error) => SupervisorReport::SetupFailed(error),
    };
    let written = report_fd.is_some_and(|fd| {
        let mut file = std::fs::File::from(fd);
        serde_json::to_writer(&mut file, &report).is_ok() && file.flush().is_ok()
    });
    sys::exit_now(if written { 0 } else { 125 });
}

/// The runner's request pipe: the request line, then the call line; then the lifeline.
struct FromRunner(BufReader<std::fs::File>);

impl FromRunner {
    fn open() -> Result<Self, SetupError> {
        let fd = sys::take_inherited_fd(REQUEST_FD)
            .ok_or_else(|| setup_error("read sandbox request", "descriptor 3 is not open"))?;
        Ok(FromRunner(BufReader::new(std::fs::File::from(fd))))
    }

    /// One JSON line. It may hold secret values: zeroed once parsed.
    fn line<T: serde::de::DeserializeOwned>(&mut self, step: &str) -> Result<T, SetupError> {
        let mut line = zeroize::Zeroizing::new(Vec::new());
        self.0
            .read_until(b'\n', &mut line)
            .map_err(|e| setup_error(step, e))?;
        if line.is_empty() {
            return Err(setup_error(
                step,
                "the runner withdrew the sandbox before the command started",
            ));
        }
        serde_json::from_slice(&line).map_err(|e| setup_error(step, e))
    }

    fn lifeline(&self) -> &std::fs::File {
        self.0.get_ref()
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SetupError> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| setup_error("create pipe", e))
}

/// The supervisor's ends of the pipes it shares with the init.
struct SupervisorIo {
    go: OwnedFd,
    messages: OwnedFd,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// The pipes between supervisor and init: the init's ends and the supervisor's.
fn pipes(stdin: bool) -> Result<(InitIo, SupervisorIo), SetupError> {
    let (go_r, go_w) = pipe()?;
    let (msg_r, msg_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_init, stdin_own) = if stdin {
        let (r, w) = pipe()?;
        rustix::fs::fcntl_setfl(&w, OFlags::NONBLOCK)
            .map_err(|e| setup_error("configure stdin pipe", e))?;
        (r, Some(w))
    } else {
        let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| setup_error("open /dev/null", e))?;
        (null, None)
    };
    let init = InitIo {
        go: go_r,
        messages: msg_w,
        stdin: stdin_init,
        stdout: out_w,
        stderr: err_w,
    };
    let own = SupervisorIo {
        go: go_w,
        messages: msg_r,
        stdin: stdin_own,
        stdout: out_r,
        stderr: err_r,
    };
    Ok((init, own))
}

/// The sandbox's init, seen from the supervisor. Dropped unreaped, it is killed and
/// reaped, and its death (it is the PID namespace's init) kills everything in the sandbox.
struct Init {
    pid: libc::pid_t,
    reaped: Option<sys::Reaped>,
}

impl Init {
    fn kill(&self) {
        if self.reaped.is_none() {
            sys::kill_hard(self.pid);
        }
    }

    /// Waits for the init to end (after a kill, or once its pidfd is readable).
    fn reap(&mut self) -> Result<&sys::Reaped, SetupError> {
        if self.reaped.is_none() {
            self.reaped = sys::wait4(self.pid, 0).map_err(|e| setup_error("reap init", e))?;
        }
        self.reaped
            .as_ref()
            .ok_or_else(|| setup_error("reap init", "init did not exit"))
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            sys::kill_hard(self.pid);
            let _ = sys::wait4(self.pid, 0);
        }
    }
}

/// `report_fd` is the runner's report pipe; the sandbox's copy of it is closed right after
/// the clone, so nothing inside can ever write a report.
fn run(report_fd: &mut Option<OwnedFd>) -> Result<SupervisorReport, SetupError> {
    let mut runner = FromRunner::open()?;
    let request: SupervisorRequest = runner.line("read sandbox request")?;
    let filters = seccomp::default_filters().map_err(|e| setup_error("build seccomp filter", e))?;
    let (init_io, io) = pipes(request.io.stdin)?;
    let pid = match sys::clone_process(sys::NAMESPACE_FLAGS) {
        Ok(Forked::Child) => {
            drop(report_fd.take());
            drop(io);
            drop(runner);
            init::run(without_placeholders(request), &filters, init_io);
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => return Err(setup_error("create namespaces", e)),
    };
    let init = Init { pid, reaped: None };
    drop(init_io);
    map_ids(&request, pid)?;
    rustix::io::write(&io.go, MAPPED).map_err(|e| setup_error("start init", e))?;
    // The init builds the sandbox meanwhile, then waits for the call.
    let call: Call = runner.line("read the call")?;
    let stdin = call.stdin.clone();
    if send_call(&io.go, call).is_err() {
        // The init is gone or cannot take its call; its messages still say why.
        init.kill();
    }
    supervise(&request, init, io, stdin, &runner)
}

/// The sandbox never holds a placeholder secret's value, not even in the init's memory
/// (which the command cannot read anyway: the init is not dumpable).
fn without_placeholders(mut request: SupervisorRequest) -> SupervisorRequest {
    for secret in &mut request.spec.secrets {
        if secret.delivery == nanoclaw_spec::Delivery::Placeholder {
            secret.value = nanoclaw_spec::SecretValue::default();
        }
    }
    request
}

/// Hands the init its command and environment (its stdin stays here, to be relayed).
fn send_call(go: &OwnedFd, call: Call) -> Result<(), SetupError> {
    let call = Call {
        stdin: None,
        ..call
    };
    let mut line = serde_json::to_vec(&call).map_err(|e| setup_error("send the call", e))?;
    line.push(b'\n');
    let mut rest = &line[..];
    while !rest.is_empty() {
        match rustix::io::write(go, rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(setup_error("send the call", e)),
        }
    }
    Ok(())
}

/// Host-side setup of the new init: its id maps. Until this is done the init waits on the
/// `go` pipe.
fn map_ids(request: &SupervisorRequest, pid: libc::pid_t) -> Result<(), SetupError> {
    let user = request.spec.user;
    let proc_dir = format!("/proc/{pid}");
    let write = |file: &str, contents: String| {
        let path = format!("{proc_dir}/{file}");
        std::fs::write(&path, contents).map_err(|e| SetupError {
            step: "map sandbox user".into(),
            path: Some(path),
            errno: e.raw_os_error(),
            message: e.to_string(),
        })
    };
    if !request.privileged {
        write("setgroups", "deny".into())?;
    }
    write("uid_map", format!("{} {} 1\n", user.uid, request.host_uid))?;
    write("gid_map", format!("{} {} 1\n", user.gid, request.host_gid))?;
    Ok(())
}

/// A bounded capture of one stream, or a pass-through to one of the supervisor's own, with
/// the invocation's secret values redacted before either.
struct Sink {
    capture: Capture,
    target: i32,
    redactor: Redactor,
}

impl Sink {
    fn new(capture: bool, limit: u64, target: i32, secrets: &[SandboxSecret]) -> Self {
        Sink {
            capture: Capture::new(capture, limit),
            target,
            redactor: Redactor::new(secrets),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.redactor.is_active() {
            let clean = self.redactor.push(bytes);
            self.pass(&clean);
        } else {
            self.pass(bytes);
        }
    }

    fn pass(&mut self, bytes: &[u8]) {
        self.capture.push(bytes);
        if self.capture.is_capturing() {
            return;
        }
        // Our own stdout going away (a closed pipe) must not stop the sandbox's
        // supervision: the bytes are dropped and the run goes on.
        let mut rest = bytes;
        while !rest.is_empty() {
            match rustix::io::write(own_stream(self.target), rest) {
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
    }

    /// The capture, and the redactions made, by secret name.
    fn finish(mut self) -> (Captured, std::collections::BTreeMap<String, u64>) {
        let rest = self.redactor.finish();
        self.pass(&rest);
        (self.capture.finish(), self.redactor.counts())
    }
}

/// The supervisor's own stdout (1) or stderr (2).
fn own_stream(fd: i32) -> rustix::fd::BorrowedFd<'static> {
    match fd {
        1 => rustix::stdio::stdout(),
        _ => rustix::stdio::stderr(),
    }
}

/// The call's standard input: bytes the call brought, or the supervisor's own stdin (the
/// runner's, passed through), written to the sandbox's stdin pipe as it accepts them.
struct StdinFeed {
    to: Option<OwnedFd>,
    pending: Vec<u8>,
    from_own: bool,
}

impl StdinFeed {
    fn new(to: Option<OwnedFd>, bytes: Option<Vec<u8>>) -> Self {
        let mut feed = StdinFeed {
            to,
            from_own: bytes.is_none(),
            pending: bytes.unwrap_or_default(),
        };
        feed.close_when_done();
        feed
    }

    /// Given bytes end with end of file once written.
    fn close_when_done(&mut self) {
        if self.pending.is_empty() && !self.from_own {
            self.to = None;
        }
    }

    fn write_pending(&mut self) {
        let Some(to) = &self.to else { return };
        match rustix::io::write(to, &self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
                self.close_when_done();
            }
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
            // The command closed its stdin: the rest is dropped.
            Err(_) => self.to = None,
        }
    }

    fn read_own(&mut self, buf: &mut [u8]) {
        match rustix::io::read(rustix::stdio::stdin(), &mut *buf) {
            Ok(0) | Err(_) => self.to = None,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// What the supervisor watches while the command runs.
#[derive(Clone, Copy)]
enum Slot {
    Stdout,
    Stderr,
    Messages,
    InitEnded,
    OwnStdin,
    SandboxStdin,
    RunnerGone,
}

/// Everything the supervision loop moves along.
struct Relay {
    stdout: Sink,
    stderr: Sink,
    messages: Vec<u8>,
    out_fd: Option<OwnedFd>,
    err_fd: Option<OwnedFd>,
    msg_fd: Option<OwnedFd>,
    stdin: StdinFeed,
    pidfd: OwnedFd,
    timed_out: bool,
    drain_deadline: Option<Instant>,
    buf: Vec<u8>,
}

impl Relay {
    fn done(&self, init: &Init) -> bool {
        let drained = self.out_fd.is_none() && self.err_fd.is_none() && self.msg_fd.is_none();
        (init.reaped.is_some() && drained)
            || self.drain_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The descriptors to wait on now, each with its slot.
    fn watched<'a>(&'a self, init: &Init, runner: &'a std::fs::File) -> Vec<(Slot, PollFd<'a>)> {
        let mut fds = vec![(Slot::RunnerGone, PollFd::new(runner, PollFlags::IN))];
        for (slot, fd) in [
            (Slot::Stdout, &self.out_fd),
            (Slot::Stderr, &self.err_fd),
            (Slot::Messages, &self.msg_fd),
        ] {
            if let Some(fd) = fd {
                fds.push((slot, PollFd::new(fd, PollFlags::IN)));
            }
        }
        if init.reaped.is_none() {
            fds.push((Slot::InitEnded, PollFd::new(&self.pidfd, PollFlags::IN)));
        }
        if let Some(to) = &self.stdin.to {
            if !self.stdin.pending.is_empty() {
                fds.push((Slot::SandboxStdin, PollFd::new(to, PollFlags::OUT)));
            } else if self.stdin.from_own {
                let own = rustix::stdio::stdin();
                fds.push((Slot::OwnStdin, PollFd::from_borrowed_fd(own, PollFlags::IN)));
            }
        }
        fds
    }

    /// Waits until `wake` for any watched descriptor; the ready slots.
    fn wait(
        &self,
        init: &Init,
        runner: &std::fs::File,
        wake: Instant,
    ) -> Result<Vec<Slot>, SetupError> {
        let timeout =
            rustix::time::Timespec::try_from(wake.saturating_duration_since(Instant::now()))
                .unwrap_or(rustix::time::Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
        let watched = self.watched(init, runner);
        let mut polled: Vec<PollFd> = watched.iter().map(|(_, p)| p.clone()).collect();
        match rustix::event::poll(&mut polled, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(setup_error("wait for sandbox", e)),
        }
        Ok(watched
            .iter()
            .zip(&polled)
            .filter(|(_, p)| !p.revents().is_empty())
            .map(|((slot, _), _)| *slot)
            .collect())
    }

    fn handle(&mut self, slot: Slot, init: &mut Init) -> Result<(), SetupError> {
        match slot {
            Slot::Stdout => read_into(&mut self.out_fd, &mut self.buf, |b| self.stdout.push(b)),
            Slot::Stderr => read_into(&mut self.err_fd, &mut self.buf, |b| self.stderr.push(b)),
            Slot::Messages => read_into(&mut self.msg_fd, &mut self.buf, |b| {
                self.messages.extend_from_slice(b)
            }),
            Slot::InitEnded => {
                init.reap()?;
                self.drain_deadline = Some(Instant::now() + DRAIN_GRACE);
                self.stdin.to = None;
            }
            // Nobody is left to report to: the sandbox goes with the runner (`init`'s drop).
            Slot::RunnerGone => {
                return Err(setup_error("supervise the sandbox", "the runner is gone"))
            }
            Slot::OwnStdin => self.stdin.read_own(&mut self.buf),
            Slot::SandboxStdin => self.stdin.write_pending(),
        }
        Ok(())
    }
}

/// Relays the streams and waits for the init, enforcing the timeout, which counts from the
/// call.
fn supervise(
    request: &SupervisorRequest,
    mut init: Init,
    io: SupervisorIo,
    stdin: Option<Vec<u8>>,
    runner: &FromRunner,
) -> Result<SupervisorReport, SetupError> {
    let started = Instant::now();
    let limits = &request.spec.limits;
    let (capture, secrets) = (request.io.capture, &request.spec.secrets);
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(init.pid)
            .ok_or_else(|| setup_error("watch init", "invalid pid"))?,
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(|e| setup_error("watch init", e))?;
    // `io.go` stays open until the init is reaped: it is the init's lifeline to this
    // process. The runner's end of the request pipe is this process's lifeline to the
    // runner: end of file (or anything) on it now means the runner is gone.
    let _go = io.go;
    let mut relay = Relay {
        stdout: Sink::new(capture, limits.output_bytes, 1, secrets),
        stderr: Sink::new(capture, limits.output_bytes, 2, secrets),
        messages: Vec::new(),
        out_fd: Some(io.stdout),
        err_fd: Some(io.stderr),
        msg_fd: Some(io.messages),
        stdin: StdinFeed::new(io.stdin, stdin),
        pidfd,
        timed_out: false,
        drain_deadline: None,
        buf: vec![0u8; 64 * 1024],
    };
    let deadline = started + limits.timeout;
    while !relay.done(&init) {
        if init.reaped.is_none() && !relay.timed_out && Instant::now() >= deadline {
            relay.timed_out = true;
            init.kill();
        }
        let wake = relay.drain_deadline.unwrap_or(if relay.timed_out {
            Instant::now() + DRAIN_GRACE
        } else {
            deadline
        });
        for slot in relay.wait(&init, runner.lifeline(), wake)? {
            relay.handle(slot, &mut init)?;
        }
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    init.kill();
    let reaped = init.reap()?;
    let (status, cpu_ms, max_rss_kib) = (reaped.status, reaped.cpu_ms, reaped.max_rss_kib);
    report(
        relay,
        status,
        duration_ms,
        Usage {
            cpu_ms,
            max_rss_kib,
        },
    )
}

/// Turns the init's messages and the captured streams into the report.
fn report(
    relay: Relay,
    init_status: i32,
    duration_ms: u64,
    usage: Usage,
) -> Result<SupervisorReport, SetupError> {
    let mut landlock = None;
    let mut status = None;
    for line in relay
        .messages
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
    {
        match serde_json::from_slice::<InitMessage>(line) {
            Ok(InitMessage::Ready { landlock: l }) => landlock = Some(l),
            Ok(InitMessage::SetupFailed(error)) => return Ok(SupervisorReport::SetupFailed(error)),
            Ok(InitMessage::ExecFailed { program, errno, .. }) => {
                return Ok(SupervisorReport::ExecFailed { program, errno })
            }
            Ok(InitMessage::Exited { status: s }) => status = Some(s),
            Err(_) => {}
        }
    }
    let timed_out = relay.timed_out;
    let Some(landlock) = landlock else {
        let why = if timed_out {
            "timed out before the command started"
        } else {
            "the sandbox init ended before it was ready"
        };
        return Err(setup_error("set up sandbox", why));
    };
    let (exit_code, signal) = sys::decode_status(status.unwrap_or(init_status));
    let (stdout, mut redactions) = relay.stdout.finish();
    let (stderr, more) = relay.stderr.finish();
    add_counts(&mut redactions, more);
    Ok(SupervisorReport::Finished(Finished {
        exit_code: if timed_out { None } else { exit_code },
        signal: if timed_out {
            Some(libc::SIGKILL)
        } else {
            signal
        },
        timed_out,
        duration_ms,
        stdout,
        stderr,
        redactions,
        usage,
        landlock,
    }))
}

/// Reads what is available from `fd`; closes it (sets `None`) at end of file or error.
fn read_into(fd: &mut Option<OwnedFd>, buf: &mut [u8], mut sink: impl FnMut(&[u8])) {
    let Some(f) = fd else { return };
    match rustix::io::read(f.as_fd(), &mut *buf) {
        Ok(0) => *fd = None,
        Ok(n) => sink(&buf[..n]),
        Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
        Err(_) => *fd = None,
    }
}
