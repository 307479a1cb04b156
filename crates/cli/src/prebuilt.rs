//! `nanoclaw run --prebuilt`: the runner's side of the pool of the long-running modes
//! (`crates/pool`).
//!
//! The contract, between the pool (the parent) and this runner:
//!
//! 1. The pool starts `nanoclaw run --policy F --tool=T --workspace W --audit A --json
//!    --params-json=- --prebuilt` with an extra pipe as fd 3 (and stdin, stdout, stderr
//!    pipes), SIGTERM as its parent-death signal.
//! 2. The runner builds everything of the sandbox that does not depend on the call's
//!    arguments (for a tool, all of it but the argv, environment values the call fills and
//!    stdin: namespaces, root, mounts, cgroup), then writes one byte `R` to fd 3 and closes
//!    it. Nothing of the call has run and nothing is recorded in the audit log yet.
//! 3. It then waits for the params JSON on stdin until EOF, and runs the call as a plain
//!    `run --params-json=-` does (seccomp, Landlock and the credential drop are applied
//!    before the command's `execve`; audit start and end as for any run).
//! 4. If it cannot pre-build, it writes nothing, closes fd 3 and exits 125 with a message
//!    on stderr: the pool then runs that tool's calls one-shot and says so.
//! 5. A waiting runner that gets SIGTERM (idle limit, server stopping) or sees stdin closed
//!    with no byte on it tears its sandbox down and exits without running anything and
//!    without an audit record.
//!
//! In this version the pre-build is empty: the runner only says `R` and waits for the call,
//! then builds the sandbox as a one-shot run does (the native backend's `prepare` is wired
//! here later). The waiting, the one-call-per-child and the refusals are the real ones.

use std::process::ExitCode;

/// The fd the pool passes for the readiness byte.
const READY_FD: i32 = 3;

/// Exit status for errors of nanoclaw itself.
const RUNNER_ERROR: u8 = 125;

/// Says `R` on fd 3 and waits until the call's arguments come on stdin. `Err`: exit now
/// with that status, having run and recorded nothing.
pub(crate) fn ready_then_wait() -> Result<(), ExitCode> {
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
    // SAFETY: fd 3 is the readiness pipe the pool passed (the contract above); the check
    // below refuses to go on if it is not open, and it is owned (closed) here only.
    let open = unsafe { libc::fcntl(READY_FD, libc::F_GETFD) } != -1;
    if !open {
        eprintln!("nanoclaw run: --prebuilt needs the readiness pipe as fd 3");
        return Err(ExitCode::from(RUNNER_ERROR));
    }
    // SAFETY: fd 3 is open (checked above) and nothing else in this process owns it.
    let ready = unsafe { OwnedFd::from_raw_fd(READY_FD) };
    if let Err(error) = rustix::io::write(&ready, b"R") {
        eprintln!("nanoclaw run: --prebuilt: could not say ready on fd 3: {error}");
        return Err(ExitCode::from(RUNNER_ERROR));
    }
    drop(ready);
    // SAFETY: fd 0 stays open for the whole process.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    loop {
        let mut fds = [rustix::event::PollFd::new(
            &stdin,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => {
                eprintln!("nanoclaw run: --prebuilt: wait for the call: {error}");
                return Err(ExitCode::from(RUNNER_ERROR));
            }
        }
    }
    // Readable: bytes, or EOF. EOF with nothing is no call (the pool discarded this runner
    // or died): run nothing, record nothing.
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer, which points to `pending`.
    let asked = unsafe { libc::ioctl(0, libc::FIONREAD, &mut pending) };
    if asked == 0 && pending == 0 {
        return Err(ExitCode::from(RUNNER_ERROR));
    }
    Ok(())
}
