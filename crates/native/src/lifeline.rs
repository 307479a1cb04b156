//! The sandbox's own second line: how an init (the native one and a container's) waits for
//! its command while it watches its lifeline and the deadline.
//!
//! The lifeline is a descriptor whose other end only the runner's side holds (the helper
//! natively, the runner itself for a container); the command never holds either end. When
//! that side dies, however it dies (SIGKILL included), the kernel closes its end and the
//! init reads end of file. The deadline is the spec's timeout plus [`GRACE`], counted from
//! when the command was allowed to start: the supervisor kills at the timeout while it
//! lives, and the init does it itself when the supervisor cannot (stopped, or gone).
//!
//! This must never return while the command still runs except to let its caller exit at
//! once: an init's exit is what makes the kernel kill every process of the PID namespace.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nanoclaw_spec::Usage;
use rustix::event::{PollFd, PollFlags};

use crate::sys;

/// How long past the timeout the init waits for the supervisor's kill before it kills the
/// sandbox itself.
pub const GRACE: Duration = Duration::from_secs(1);

/// Why the wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The command ended with this raw wait status; `usage` adds up everything reaped.
    Command { status: i32, usage: Usage },
    /// The lifeline's other end closed: the runner's side is gone.
    Cut,
    /// The deadline passed with the command still running.
    Deadline,
    /// Waiting for children failed; the init cannot supervise any more.
    WaitFailed,
}

/// The deadline of a command allowed to start now with `timeout` (a timeout too long to
/// count to is a year: the runner's own bound is the spec's).
pub fn deadline(timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout.saturating_add(GRACE))
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// Reaps every child as it ends until `command` does, `lifeline` reads end of file, or
/// `deadline` passes. `sigchld` comes from `sys::sigchld_fd`, made before the command was
/// forked.
pub fn wait(
    command: libc::pid_t,
    lifeline: &OwnedFd,
    sigchld: &OwnedFd,
    deadline: Instant,
) -> Ended {
    let mut usage = Usage::default();
    loop {
        loop {
            match sys::wait4(-1, libc::WNOHANG) {
                Ok(Some(reaped)) => {
                    usage.cpu_ms += reaped.cpu_ms;
                    usage.max_rss_kib = usage.max_rss_kib.max(reaped.max_rss_kib);
                    if reaped.pid == command {
                        return Ended::Command {
                            status: reaped.status,
                            usage,
                        };
                    }
                }
                Ok(None) => break,
                Err(_) => return Ended::WaitFailed,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ended::Deadline;
        }
        let timeout = rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [
            PollFd::new(lifeline, PollFlags::IN),
            PollFd::new(sigchld, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return Ended::WaitFailed,
        }
        let (cut, child) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
        if cut && is_cut(lifeline) {
            return Ended::Cut;
        }
        if child {
            drain(sigchld);
        }
    }
}

/// Whether `lifeline`, reported readable, is at end of file (or broken). A stray byte is
/// read and ignored.
fn is_cut(lifeline: &OwnedFd) -> bool {
    let mut byte = [0u8; 16];
    match rustix::io::read(lifeline.as_fd(), &mut byte) {
        Ok(0) => true,
        Ok(_) | Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => false,
        Err(_) => true,
    }
}

/// Empties the signal descriptor; the children are reaped by `wait4` whatever it held.
fn drain(sigchld: &OwnedFd) {
    let mut info = [0u8; 128 * 8];
    while matches!(rustix::io::read(sigchld.as_fd(), &mut info), Ok(n) if n > 0) {}
}
