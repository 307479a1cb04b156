//! The thin, unsafe edge of the native backend: the few system calls that neither std nor
//! rustix offers safely (fork-like `clone` with namespace flags, `execve` of a prepared
//! argv, raising a network interface, `wait4` with resource usage, `signalfd`,
//! `close_range`). Credentials, groups, capabilities and securebits go through rustix
//! (see `creds`).
//!
//! Every function here is a small safe wrapper whose `// SAFETY:` comment says why the call
//! is sound. Nothing else in the crate may use `unsafe`; nothing here may allocate between
//! a `clone` and the caller's next step, or hold a lock across it.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

/// The namespaces every sandbox gets.
pub const NAMESPACE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// Which side of a `clone` the caller is on.
pub enum Forked {
    Parent(libc::pid_t),
    Child,
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `clone(flags | SIGCHLD)` with fork semantics (the child gets a copy of the address space
/// and continues from here).
///
/// Must only be called from a single-threaded process: the child is a copy of this one
/// thread, so any lock another thread held would stay locked forever in the child.
pub fn clone_process(flags: libc::c_int) -> io::Result<Forked> {
    // SAFETY: with a null stack pointer the raw clone syscall behaves like fork(2): the
    // child continues on a copy of the parent's stack and memory. The callers (the helper
    // and the sandbox init) are single-threaded, so no lock is held by another thread, and
    // glibc does not cache the pid, so nothing in the child sees stale process state.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match check(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as libc::pid_t)),
    }
}

/// `fork()` for the sandbox init, which is single-threaded.
pub fn fork_process() -> io::Result<Forked> {
    clone_process(0)
}

/// Gives every signal its default action back. An ignored signal stays ignored across
/// execve, and the runner ignores SIGPIPE (Rust's runtime does) and inherits whatever its
/// own parent ignored: the command starts as under a fresh shell, with none ignored.
/// glibc's `sigaction` refuses its two internal signals (32, 33), so this is the raw call.
fn default_signals() {
    /// The kernel's `struct sigaction` on x86_64 (the one architecture built here).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads one kernel `struct sigaction` from `&default`, which
        // lives across the call, with the kernel's sigset size (8 bytes); it writes nothing
        // (the old action pointer is null). SIG_DFL installs no handler.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
}

/// Replaces the process image. Returns only on failure.
pub fn execve(path: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    default_signals();
    // SAFETY: `path`, every argv and envp entry are valid NUL-terminated strings that live
    // until the call returns, and both pointer arrays end with a null pointer as execve(2)
    // requires.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// `_exit(2)`: ends the process without running destructors or atexit handlers, which
/// belong to the parent's copy of the state after a fork.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// `dup2(old, new)` without CLOEXEC on `new`, for wiring a child's standard streams.
pub fn dup2(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the fd table; invalid descriptors give EBADF.
    check(unsafe { libc::dup2(old, new) } as libc::c_long).map(drop)
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use std::os::fd::AsRawFd;
    let socket = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data for which all-zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a valid, initialised ifreq naming "lo"; the socket is
    // open for the whole call.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) };
    check(ret as libc::c_long).map(drop)
}

/// Marks the process non-dumpable, so processes of the same uid cannot ptrace it or read
/// its memory through /proc. (Safe, through rustix; here because both inits call it.)
pub fn set_not_dumpable() -> io::Result<()> {
    use rustix::process::{set_dumpable_behavior, DumpableBehavior};
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(io::Error::from)
}

/// The raw wait status and resource usage of a reaped child.
pub struct Reaped {
    pub pid: libc::pid_t,
    pub status: libc::c_int,
    pub cpu_ms: u64,
    pub max_rss_kib: u64,
}

/// `wait4(pid, ..., flags)`: reaps one child. `Ok(None)` with WNOHANG when none is ready.
pub fn wait4(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<Reaped>> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data for which all-zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: status and usage are valid, writable and live across the call.
        let ret = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if ret == 0 {
            return Ok(None);
        }
        let ms = |tv: libc::timeval| tv.tv_sec as u64 * 1000 + tv.tv_usec as u64 / 1000;
        return Ok(Some(Reaped {
            pid: ret,
            status,
            cpu_ms: ms(usage.ru_utime) + ms(usage.ru_stime),
            max_rss_kib: usage.ru_maxrss.max(0) as u64,
        }));
    }
}

/// `kill(pid, SIGKILL)`, ignoring a process that is already gone.
pub fn kill_hard(pid: libc::pid_t) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Splits a raw wait status into (exit code, terminating signal).
pub fn decode_status(status: libc::c_int) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

/// Arranges for `cmd`'s child to receive each `(fd, target)` as descriptor `target`,
/// inherited across exec. The fds are first moved above every target so that one
/// `dup2` cannot clobber a descriptor another one still needs.
pub fn pass_fds(
    cmd: &mut std::process::Command,
    fds: Vec<(std::os::fd::OwnedFd, RawFd)>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut moved = Vec::with_capacity(fds.len());
    for (fd, target) in fds {
        let high = rustix::io::fcntl_dupfd_cloexec(&fd, 64)?;
        moved.push((high, target));
    }
    let pairs: Vec<(RawFd, RawFd)> = moved.iter().map(|(fd, t)| (fd.as_raw_fd(), *t)).collect();
    // SAFETY: the closure runs in the forked child before exec and only calls dup2, which
    // is async-signal-safe; it allocates nothing. `moved` is kept alive by the closure so the
    // raw descriptors stay valid until the child has duplicated them.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &moved;
            for &(fd, target) in &pairs {
                if libc::dup2(fd, target) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec, so that nothing but the standard
/// streams crosses into the sandboxed command.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range(2) with the CLOEXEC flag only sets flags on descriptors.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) })
        .map(drop)
}

/// Takes ownership of a descriptor inherited by protocol (the helper's fds 3 and 4).
///
/// Returns `None` when `fd` is not open, so a mistaken invocation cannot make the process
/// close or reuse a descriptor it does not own.
pub fn take_inherited_fd(fd: RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only queries the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: the descriptor is open (checked above), was handed to this process by the
    // runner for exactly this purpose, and nothing else in the process refers to it; the
    // helper takes it once at start-up.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling process into a new cgroup namespace rooted at its current cgroup.
pub fn unshare_cgroup() -> io::Result<()> {
    // SAFETY: CLONE_NEWCGROUP changes only which cgroup paths this process sees; it shares
    // no memory or descriptor tables, which is what makes unshare unsafe in general.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) }
        .map_err(io::Error::from)
}

/// The kernel's Landlock ABI version, or the errno that says why there is none.
pub fn landlock_abi() -> Result<i32, io::Error> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the syscall only
    // returns the ABI version and reads no memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    check(ret).map(|v| v as i32)
}

/// Blocks SIGCHLD and returns a descriptor (close-on-exec, non-blocking) that becomes
/// readable when one is pending, so an init can wait for its children and other events in
/// one `poll`. A child forked afterwards inherits the blocked mask: it calls
/// [`unblock_signals`] before exec.
pub fn sigchld_fd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t; SIGCHLD is a valid signal number.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
    }
    // SAFETY: `set` is initialised and lives across the call; the old mask is not asked
    // for. The caller is single-threaded, so the process mask is this thread's.
    let blocked = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    check(blocked as libc::c_long)?;
    // SAFETY: -1 asks for a new descriptor; `set` is initialised and only read.
    let fd = check(
        unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) } as libc::c_long,
    )?;
    // SAFETY: signalfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Empties the calling thread's blocked signal mask (a forked command must not inherit the
/// init's blocked SIGCHLD across exec).
pub fn unblock_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: `set` is initialised and lives across the call; the old mask is not asked for.
    check(
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) } as libc::c_long,
    )
    .map(drop)
}
