//! Making attempts and judging how they ended.
//!
//! A seccomp filter may answer a forbidden call by killing the caller, so the calls a filter
//! is expected to stop run in a forked child ([`in_child`]) and the probe lives to report the
//! death. That child is a copy of a possibly multithreaded process: the closure it runs must
//! make only raw system calls over memory prepared before the fork — no allocation, no locks,
//! no panics — and return 0 or an errno, which becomes its exit code.

use std::{fmt, io};

use crate::Finding;

/// How a child of [`in_child`] ended when a signal, not its own return, ended it.
#[derive(Debug)]
pub(crate) struct KilledBy(pub(crate) i32);

impl fmt::Display for KilledBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::SIGSYS => " (SIGSYS)",
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGILL => " (SIGILL)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGABRT => " (SIGABRT)",
            _ => "",
        };
        write!(f, "killed by signal {}{name}", self.0)
    }
}

impl std::error::Error for KilledBy {}

/// A refusal by a seccomp filter, an LSM or a missing capability: the call never did its work.
pub(crate) fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::ENOSYS)
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<KilledBy>())
        .map(|k| k.0)
        == Some(libc::SIGSYS)
}

/// For attacks where any failure leaves the attacker with nothing.
pub(crate) fn failed(_: &io::Error) -> bool {
    true
}

/// The exit code for [`in_child`] of a raw call that returns a negative value on failure.
pub(crate) fn errno_of(ret: impl Into<i64>) -> i32 {
    if ret.into() < 0 {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        0
    }
}

/// Runs `call` in a forked child (see the module doc): Ok when it returned 0, the errno it
/// returned otherwise, or [`KilledBy`] when a signal ended it.
pub(crate) fn in_child(call: impl FnOnce() -> i32) -> io::Result<()> {
    // SAFETY: fork has no preconditions of its own. The child runs only `call`, which by this
    // module's contract makes raw system calls over memory prepared before the fork, and then
    // leaves through `_exit`, so it never touches a lock or allocator state that a thread
    // missing from the child might have held.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = call();
            // SAFETY: `_exit` is async-signal-safe and ends the child without running the
            // parent's destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        child => wait_for(child),
    }
}

/// Reaps `pid` and reads its status the way [`in_child`] reports it.
pub(crate) fn wait_for(pid: libc::pid_t) -> io::Result<()> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid place for waitpid to write for the whole call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if libc::WIFSIGNALED(status) {
        return Err(io::Error::other(KilledBy(libc::WTERMSIG(status))));
    }
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// The attempts one probe made. The probe is blocked when it made at least one and every one
/// failed in a way `judge` accepts.
pub(crate) struct Attempts {
    judge: fn(&io::Error) -> bool,
    lines: Vec<String>,
    blocked: bool,
}

impl Attempts {
    pub(crate) fn judged_by(judge: fn(&io::Error) -> bool) -> Self {
        Attempts {
            judge,
            lines: Vec::new(),
            blocked: true,
        }
    }

    /// Records an attempt; Ok carries what the success achieved.
    pub(crate) fn record(&mut self, what: &str, outcome: io::Result<String>) {
        let line = match outcome {
            Ok(achieved) => {
                self.blocked = false;
                format!("{what}: {achieved}")
            }
            Err(e) if (self.judge)(&e) => format!("{what}: {e}"),
            Err(e) => {
                self.blocked = false;
                format!("{what}: {e} (does not count as blocked)")
            }
        };
        self.lines.push(line);
    }

    /// Makes an attempt in a forked child; see [`in_child`] for what `call` may do.
    pub(crate) fn in_child(&mut self, what: &str, call: impl FnOnce() -> i32) {
        self.record(what, in_child(call).map(|()| "succeeded".to_string()));
    }

    pub(crate) fn finish(self) -> Finding {
        Finding {
            blocked: self.blocked && !self.lines.is_empty(),
            detail: self.lines.join("; "),
        }
    }
}
