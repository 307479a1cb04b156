//! The sandbox helper: the single-threaded process the runner re-executes. It creates the
//! namespaces, maps the sandbox user, puts the init in the cgroup, relays the standard
//! streams, enforces the wall-clock timeout, and reports how the command ended.
//!
//! It runs on the host side with the runner's privileges, so it must never act on anything
//! the sandbox says except to report it, and never let the sandbox hold its report pipe.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nanoclaw_spec::{add_counts, Capture, Captured, Redactor, SandboxSecret, SetupError, Usage};
use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};
use rustix::pipe::PipeFlags;

use crate::init::{self, InitIo};
use crate::protocol::{
    Finished, HelperReport, HelperRequest, InitMessage, COMMIT, REPORT_FD, REQUEST_FD,
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

/// Entry point of the re-executed helper. Never returns.
pub fn main() -> ! {
    let Some(report_fd) = sys::take_inherited_fd(REPORT_FD) else {
        eprintln!("nanoclaw: the sandbox helper is started by `nanoclaw run`, not by hand");
        sys::exit_now(125);
    };
    let mut report_fd = Some(report_fd);
    let report = match run(&mut report_fd) {
        Ok(report) => report,
        Err(error) => HelperReport::SetupFailed(error),
    };
    let written = report_fd.is_some_and(|fd| {
        let mut file = std::fs::File::from(fd);
        serde_json::to_writer(&mut file, &report).is_ok() && file.flush().is_ok()
    });
    sys::exit_now(if written { 0 } else { 125 });
}

/// Reads the request line; the reader stays open for the runner's commit byte.
fn read_request() -> Result<(HelperRequest, BufReader<std::fs::File>), SetupError> {
    let fd = sys::take_inherited_fd(REQUEST_FD)
        .ok_or_else(|| setup_error("read sandbox request", "descriptor 3 is not open"))?;
    let mut reader = BufReader::new(std::fs::File::from(fd));
    // It holds the secret values: zeroed once parsed.
    let mut line = zeroize::Zeroizing::new(Vec::new());
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| setup_error("read sandbox request", e))?;
    let request =
        serde_json::from_slice(&line).map_err(|e| setup_error("read sandbox request", e))?;
    Ok((request, reader))
}

/// Waits for the runner's commit (its audit record is on disk); anything else withdraws
/// the request.
fn await_commit(reader: &mut BufReader<std::fs::File>) -> Result<(), SetupError> {
    let mut byte = [0u8; 1];
    match reader.read(&mut byte) {
        Ok(1) if byte == COMMIT => Ok(()),
        _ => Err(setup_error(
            "start the command",
            "the runner withdrew the request before the command started",
        )),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SetupError> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| setup_error("create pipe", e))
}

/// The helper's ends of the pipes it shares with the init.
struct HelperIo {
    go: OwnedFd,
    messages: OwnedFd,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// `report_fd` is the runner's report pipe; the sandbox's copy of it is closed right after
/// the clone, so nothing inside can ever write a report.
fn run(report_fd: &mut Option<OwnedFd>) -> Result<HelperReport, SetupError> {
    // If the runner dies, so does the helper, and with it (by the init's own death signal)
    // everything in the sandbox.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| setup_error("set parent death signal", e))?;
    let (request, mut commit) = read_request()?;
    let filters = seccomp::default_filters().map_err(|e| setup_error("build seccomp filter", e))?;

    let (go_r, go_w) = pipe()?;
    let (msg_r, msg_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_child, stdin_helper) = if request.io.stdin {
        let (r, w) = pipe()?;
        rustix::fs::fcntl_setfl(&w, OFlags::NONBLOCK)
            .map_err(|e| setup_error("configure stdin pipe", e))?;
        (r, Some(w))
    } else {
        let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| setup_error("open /dev/null", e))?;
        (null, None)
    };
    let child_io = InitIo {
        go: go_r,
        messages: msg_w,
        stdin: stdin_child,
        stdout: out_w,
        stderr: err_w,
    };
    let helper_io = HelperIo {
        go: go_w,
        messages: msg_r,
        stdin: stdin_helper,
        stdout: out_r,
        stderr: err_r,
    };

    let started = Instant::now();
    let pid = match sys::clone_process(sys::NAMESPACE_FLAGS) {
        Ok(Forked::Child) => {
            drop(report_fd.take());
            drop(helper_io);
            // The sandbox never holds a placeholder secret's value, not even in the init's
            // memory (which the command cannot read anyway: the init is not dumpable).
            let mut request = request;
            for secret in &mut request.spec.secrets {
                if secret.delivery == nanoclaw_spec::Delivery::Placeholder {
                    secret.value = nanoclaw_spec::SecretValue::default();
                }
            }
            init::run(&request, &filters, child_io);
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => return Err(setup_error("create namespaces", e)),
    };
    drop(child_io);
    match prepare_child(&request, pid) {
        Ok(()) => {}
        Err(error) => {
            sys::kill_hard(pid);
            let _ = sys::wait4(pid, 0);
            return Err(error);
        }
    }
    supervise(&request, pid, helper_io, started, &mut commit)
}

/// Host-side setup of the new init: its id maps. Until this is done the init waits on the
/// `go` pipe.
fn prepare_child(request: &HelperRequest, pid: libc::pid_t) -> Result<(), SetupError> {
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

/// A bounded capture of one stream, or a pass-through to one of the helper's own, with
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

/// The helper's own stdout (1) or stderr (2).
fn own_stream(fd: i32) -> rustix::fd::BorrowedFd<'static> {
    match fd {
        1 => rustix::stdio::stdout(),
        _ => rustix::stdio::stderr(),
    }
}

/// Relays the streams and waits for the init, enforcing the timeout.
fn supervise(
    request: &HelperRequest,
    pid: libc::pid_t,
    io: HelperIo,
    started: Instant,
    commit: &mut BufReader<std::fs::File>,
) -> Result<HelperReport, SetupError> {
    let limits = &request.spec.limits;
    let capture = request.io.capture;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| setup_error("watch init", "invalid pid"))?,
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(|e| setup_error("watch init", e))?;
    rustix::io::write(&io.go, b"g").map_err(|e| setup_error("start init", e))?;
    // The init builds the sandbox meanwhile; it starts the command only after this byte.
    if let Err(error) = await_commit(commit) {
        sys::kill_hard(pid);
        let _ = sys::wait4(pid, 0);
        return Err(error);
    }
    rustix::io::write(&io.go, COMMIT).map_err(|e| setup_error("start the command", e))?;
    // `io.go` stays open until the init is reaped: it is the init's lifeline to this
    // process. The runner's end of the request pipe is this process's lifeline to the
    // runner: end of file (or anything) on it now means the runner is gone.
    let runner = commit.get_ref();

    let deadline = started + limits.timeout;
    let secrets = &request.spec.secrets;
    let mut stdout = Sink::new(capture, limits.output_bytes, 1, secrets);
    let mut stderr = Sink::new(capture, limits.output_bytes, 2, secrets);
    let mut messages = Vec::new();
    let mut out_fd = Some(io.stdout);
    let mut err_fd = Some(io.stderr);
    let mut msg_fd = Some(io.messages);
    let mut stdin_w = io.stdin;
    let mut stdin_open = stdin_w.is_some();
    let mut pending: Vec<u8> = Vec::new();
    let mut timed_out = false;
    let mut reaped = None;
    let mut drain_deadline = None;
    let mut buf = vec![0u8; 64 * 1024];
    let own_stdin = rustix::stdio::stdin();

    loop {
        if reaped.is_some() && out_fd.is_none() && err_fd.is_none() && msg_fd.is_none() {
            break;
        }
        let now = Instant::now();
        if drain_deadline.is_some_and(|d| now >= d) {
            break;
        }
        if reaped.is_none() && !timed_out && now >= deadline {
            timed_out = true;
            sys::kill_hard(pid);
        }
        let wake = drain_deadline.unwrap_or(if timed_out {
            now + DRAIN_GRACE
        } else {
            deadline
        });
        let timeout = rustix::time::Timespec::try_from(wake.saturating_duration_since(now))
            .unwrap_or(rustix::time::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });

        // Slots: 0 stdout, 1 stderr, 2 messages, 3 pidfd, 4 our stdin, 5 sandbox stdin,
        // 6 the runner's lifeline.
        let mut fds: Vec<(usize, PollFd)> = Vec::with_capacity(7);
        fds.push((6, PollFd::new(runner, PollFlags::IN)));
        for (slot, fd) in [(0, &out_fd), (1, &err_fd), (2, &msg_fd)] {
            if let Some(fd) = fd {
                fds.push((slot, PollFd::new(fd, PollFlags::IN)));
            }
        }
        if reaped.is_none() {
            fds.push((3, PollFd::new(&pidfd, PollFlags::IN)));
        }
        if stdin_open {
            if let Some(w) = &stdin_w {
                if pending.is_empty() {
                    fds.push((4, PollFd::new(&own_stdin, PollFlags::IN)));
                } else {
                    fds.push((5, PollFd::new(w, PollFlags::OUT)));
                }
            }
        }
        let mut polled: Vec<PollFd> = fds.iter().map(|(_, p)| p.clone()).collect();
        match rustix::event::poll(&mut polled, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(setup_error("wait for sandbox", e)),
        }
        let ready: Vec<(usize, PollFlags)> = fds
            .iter()
            .zip(&polled)
            .map(|((slot, _), p)| (*slot, p.revents()))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        drop(polled);
        drop(fds);
        for (slot, _) in ready {
            match slot {
                0 => read_into(&mut out_fd, &mut buf, |b| stdout.push(b)),
                1 => read_into(&mut err_fd, &mut buf, |b| stderr.push(b)),
                2 => read_into(&mut msg_fd, &mut buf, |b| messages.extend_from_slice(b)),
                3 => {
                    reaped = sys::wait4(pid, 0).map_err(|e| setup_error("reap init", e))?;
                    drain_deadline = Some(Instant::now() + DRAIN_GRACE);
                    stdin_open = false;
                    stdin_w = None;
                }
                6 => {
                    // Nobody is left to report to: the sandbox goes with the runner.
                    sys::kill_hard(pid);
                    let _ = sys::wait4(pid, 0);
                    return Err(setup_error("supervise the sandbox", "the runner is gone"));
                }
                4 => match rustix::io::read(own_stdin, &mut buf) {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        stdin_w = None;
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                },
                _ => {
                    if let Some(w) = &stdin_w {
                        match rustix::io::write(w, &pending) {
                            Ok(n) => {
                                pending.drain(..n);
                            }
                            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                            Err(_) => {
                                stdin_open = false;
                                stdin_w = None;
                            }
                        }
                    }
                }
            }
        }
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    let reaped = match reaped {
        Some(r) => r,
        None => {
            sys::kill_hard(pid);
            sys::wait4(pid, 0)
                .map_err(|e| setup_error("reap init", e))?
                .ok_or_else(|| setup_error("reap init", "init did not exit"))?
        }
    };
    let mut landlock = None;
    let mut status = None;
    for line in messages.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<InitMessage>(line) {
            Ok(InitMessage::Ready { landlock: l }) => landlock = Some(l),
            Ok(InitMessage::SetupFailed(error)) => return Ok(HelperReport::SetupFailed(error)),
            Ok(InitMessage::ExecFailed { program, errno, .. }) => {
                return Ok(HelperReport::ExecFailed { program, errno })
            }
            Ok(InitMessage::Exited { status: s }) => status = Some(s),
            Err(_) => {}
        }
    }
    let Some(landlock) = landlock else {
        if timed_out {
            return Err(setup_error(
                "set up sandbox",
                "timed out before the command started",
            ));
        }
        return Err(setup_error(
            "set up sandbox",
            "the sandbox init ended before it was ready",
        ));
    };
    let (exit_code, signal) = sys::decode_status(status.unwrap_or(reaped.status));
    let (stdout, mut redactions) = stdout.finish();
    let (stderr, more) = stderr.finish();
    add_counts(&mut redactions, more);
    Ok(HelperReport::Finished(Finished {
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
        usage: Usage {
            cpu_ms: reaped.cpu_ms,
            max_rss_kib: reaped.max_rss_kib,
        },
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
