//! The seccomp filter every native sandbox runs under, compiled to BPF from the profile data
//! in `nanoclaw_spec::syscalls` (which the Docker backend exports to the engine too).
//!
//! This module must never:
//! - allow by default: any syscall not in `allowed()` and not passing an argument rule fails
//!   with `EPERM` (Docker's choice: programs handle `EPERM` gracefully);
//! - rely on a deny list: `denied_names()` is checked by tests, never compiled into a filter;
//! - build a filter for an architecture it has no table for: [`default_filters`] returns
//!   [`SeccompError::UnsupportedArch`] and the sandbox refuses to start.
//!
//! Other ABIs on the same CPU (firejail#87, rust-vmm/seccompiler#74):
//! - i386 (`int 0x80`, or `syscall` from a 32-bit code segment) reports `AUDIT_ARCH_I386`.
//!   The program starts with `ld arch; jeq AUDIT_ARCH_X86_64; ret KILL_PROCESS`, so any
//!   non-x86_64 arch kills the process before a syscall number is looked at.
//! - x32 reports `AUDIT_ARCH_X86_64` but sets bit 30 in the number (`0x4000_0000 | nr`).
//!   The filter compares the full 32-bit number, so an x32 call lies above every allowed
//!   range and gets `EPERM`.
//!
//! Every argument comparison is on the low 32 bits, as the kernel reads these arguments
//! (bubblewrap CVE-2019-10063).
//!
//! The BPF is generated here (seccompiler would give one comparison per syscall, about 1,500
//! instructions that cost most of a millisecond to install on every start); seccompiler
//! still installs it.

use std::io;

pub use nanoclaw_spec::syscalls::PROFILE_NAME;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp profile for architecture {0}")]
    UnsupportedArch(String),
    #[error("cannot compile seccomp filter: {0}")]
    Build(String),
    #[error("cannot install seccomp filter: {0}")]
    Install(io::Error),
}

/// The compiled profile, ready to install: as is, and without `memfd_create` for where the
/// kernel cannot be told to refuse executable memfds (`vm.memfd_noexec`).
#[derive(Debug)]
pub struct Filters {
    allowlist: seccompiler::BpfProgram,
    without_memfd: seccompiler::BpfProgram,
}

/// Compiles the profile. Cheap enough to run on every sandbox start.
pub fn default_filters() -> Result<Filters, SeccompError> {
    profile::filters()
}

impl Filters {
    /// Installs the filter on the calling thread only. The caller is the single-threaded
    /// sandbox init and has already set `no_new_privs`; if this fails it must not run the
    /// tool. `allow_memfd` is false where executable memfds could not be forbidden.
    pub fn install(&self, allow_memfd: bool) -> Result<(), SeccompError> {
        let program = if allow_memfd {
            &self.allowlist
        } else {
            &self.without_memfd
        };
        seccompiler::apply_filter(program).map_err(|err| match err {
            seccompiler::Error::Prctl(err) | seccompiler::Error::Seccomp(err) => {
                SeccompError::Install(err)
            }
            other => SeccompError::Install(io::Error::other(other.to_string())),
        })
    }
}

// The x32 target is target_arch x86_64 with 32-bit pointers and x32 syscall numbers in libc:
// it gets no profile.
#[cfg(not(all(target_arch = "x86_64", target_pointer_width = "64")))]
use unsupported as profile;
#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
use x86_64 as profile;

#[cfg(not(all(target_arch = "x86_64", target_pointer_width = "64")))]
mod unsupported {
    use super::{Filters, SeccompError};

    pub(super) fn filters() -> Result<Filters, SeccompError> {
        Err(SeccompError::UnsupportedArch(
            std::env::consts::ARCH.to_string(),
        ))
    }
}

#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
mod x86_64 {
    use seccompiler::{sock_filter, BpfProgram};

    use nanoclaw_spec::syscalls::{
        allowed, CLONE_NAMESPACE_FLAGS, IOCTL_REFUSED_REQUESTS, PERSONALITY_ALLOWED,
        SOCKETPAIR_DOMAINS, SOCKET_RULES,
    };

    use super::{Filters, SeccompError};

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;
    /// Offsets in `struct seccomp_data`: nr, arch, then six 64-bit args (little endian, so
    /// an argument's low 32 bits are at its own offset).
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    const fn arg_low32(index: u32) -> u32 {
        16 + 8 * index
    }

    /// A jump target while the program is being laid out.
    #[derive(Clone, Copy)]
    enum Target {
        Next,
        Allow,
        Deny,
        /// Skip this many instructions after the next one.
        Skip(u8),
    }

    enum Insn {
        Load(u32),
        Return(u32),
        /// `if A <op> k then jt else jf`, op being BPF_JEQ, BPF_JGT, BPF_JGE or BPF_JSET.
        Jump(u16, u32, Target, Target),
    }

    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_RET_K: u16 = 0x06;
    const JEQ: u16 = 0x15;
    const JGT: u16 = 0x25;
    const JGE: u16 = 0x35;
    const JSET: u16 = 0x45;

    /// Compiles the profile into one compact program. Consecutive allowed numbers become one
    /// range check, so the whole allowlist is about a hundred instructions instead of one
    /// comparison per syscall (installing, and JIT-compiling, a 1,500-instruction filter took
    /// most of a millisecond of every sandbox start).
    ///
    /// Layout: kill on any architecture but x86_64; the argument-checked syscalls and
    /// `clone3` (`ENOSYS`, so glibc falls back to `clone`); then the sorted ranges, where a
    /// number below a range's start is in no later range either; then `ret ALLOW` and
    /// `ret ERRNO(EPERM)`, which every range jumps to.
    pub(super) fn filters() -> Result<Filters, SeccompError> {
        Ok(Filters {
            allowlist: program(|_| true)?,
            without_memfd: program(|nr| nr != libc::SYS_memfd_create)?,
        })
    }

    fn program(keep: impl Fn(i64) -> bool) -> Result<BpfProgram, SeccompError> {
        let deny = RET_ERRNO | libc::EPERM as u32;
        let mut code = vec![
            Insn::Load(ARCH),
            Insn::Jump(JEQ, AUDIT_ARCH_X86_64, Target::Skip(0), Target::Next),
            Insn::Return(RET_KILL_PROCESS),
            Insn::Load(NR),
        ];
        // Each block starts with the number check and ends with a return, so A still holds
        // the syscall number for whatever follows a skipped block.
        let mut block = |nr: i64, body: Vec<Insn>| -> Result<(), SeccompError> {
            let len =
                u8::try_from(body.len()).map_err(|_| build_error("argument rule too long"))?;
            code.push(Insn::Jump(
                JEQ,
                nr as u32,
                Target::Next,
                Target::Skip(len - 1),
            ));
            code.extend(body);
            Ok(())
        };
        let mut ioctl = vec![Insn::Load(arg_low32(1))];
        for request in IOCTL_REFUSED_REQUESTS {
            ioctl.push(Insn::Jump(JEQ, request, Target::Deny, Target::Next));
        }
        ioctl.push(Insn::Return(RET_ALLOW));
        block(libc::SYS_ioctl, ioctl)?;
        block(
            libc::SYS_clone,
            vec![
                Insn::Load(arg_low32(0)),
                Insn::Jump(JSET, CLONE_NAMESPACE_FLAGS, Target::Deny, Target::Allow),
            ],
        )?;
        block(libc::SYS_socket, socket_rules(deny)?)?;
        for (nr, values) in [
            (libc::SYS_personality, &PERSONALITY_ALLOWED[..]),
            (libc::SYS_socketpair, &SOCKETPAIR_DOMAINS[..]),
        ] {
            let mut body = vec![Insn::Load(arg_low32(0))];
            body.extend(
                values
                    .iter()
                    .map(|&v| Insn::Jump(JEQ, v, Target::Allow, Target::Next)),
            );
            body.push(Insn::Return(deny));
            block(nr, body)?;
        }
        block(
            libc::SYS_clone3,
            vec![Insn::Return(RET_ERRNO | libc::ENOSYS as u32)],
        )?;

        for (first, last) in ranges(allowed().iter().map(|s| s.nr).filter(|&nr| keep(nr))) {
            code.push(Insn::Jump(JGT, last, Target::Skip(0), Target::Next));
            code.push(Insn::Jump(JGE, first, Target::Allow, Target::Deny));
        }
        code.push(Insn::Return(deny));
        let allow_at = code.len();
        code.push(Insn::Return(RET_ALLOW));
        let deny_at = code.len();
        code.push(Insn::Return(deny));
        assemble(&code, allow_at, deny_at)
    }

    /// The body of `socket`'s block: each family either allowed outright, or followed by its
    /// protocol check, which allows or denies and so never falls through to the next family
    /// (whose comparison needs the domain, not the protocol, in A).
    fn socket_rules(deny: u32) -> Result<Vec<Insn>, SeccompError> {
        let mut body = vec![Insn::Load(arg_low32(0))];
        for rule in SOCKET_RULES {
            let Some(protocols) = rule.protocols else {
                body.push(Insn::Jump(JEQ, rule.domain, Target::Allow, Target::Next));
                continue;
            };
            // The load, one comparison per protocol, the refusal.
            let check = u8::try_from(protocols.len() + 2)
                .map_err(|_| build_error("socket rule too long"))?;
            body.push(Insn::Jump(
                JEQ,
                rule.domain,
                Target::Next,
                Target::Skip(check - 1),
            ));
            body.push(Insn::Load(arg_low32(2)));
            body.extend(
                protocols
                    .iter()
                    .map(|&p| Insn::Jump(JEQ, p, Target::Allow, Target::Next)),
            );
            body.push(Insn::Return(deny));
        }
        body.push(Insn::Return(deny));
        Ok(body)
    }

    /// Sorted, merged runs of consecutive syscall numbers.
    fn ranges(numbers: impl Iterator<Item = i64>) -> Vec<(u32, u32)> {
        let mut sorted: Vec<u32> = numbers.map(|nr| nr as u32).collect();
        sorted.sort_unstable();
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for nr in sorted {
            match ranges.last_mut() {
                Some((_, last)) if nr <= *last + 1 => *last = (*last).max(nr),
                _ => ranges.push((nr, nr)),
            }
        }
        ranges
    }

    fn assemble(
        code: &[Insn],
        allow_at: usize,
        deny_at: usize,
    ) -> Result<BpfProgram, SeccompError> {
        code.iter()
            .enumerate()
            .map(|(at, insn)| {
                let offset = |target: Target| -> Result<u8, SeccompError> {
                    let to = match target {
                        Target::Next => at + 1,
                        Target::Skip(n) => at + 2 + usize::from(n),
                        Target::Allow => allow_at,
                        Target::Deny => deny_at,
                    };
                    u8::try_from(to - at - 1).map_err(|_| build_error("jump out of range"))
                };
                Ok(match *insn {
                    Insn::Load(k) => sock_filter {
                        code: BPF_LD_W_ABS,
                        jt: 0,
                        jf: 0,
                        k,
                    },
                    Insn::Return(k) => sock_filter {
                        code: BPF_RET_K,
                        jt: 0,
                        jf: 0,
                        k,
                    },
                    Insn::Jump(op, k, jt, jf) => sock_filter {
                        code: op,
                        jt: offset(jt)?,
                        jf: offset(jf)?,
                        k,
                    },
                })
            })
            .collect()
    }

    fn build_error(message: &str) -> SeccompError {
        SeccompError::Build(message.to_string())
    }
}

#[cfg(all(test, target_arch = "x86_64", target_pointer_width = "64"))]
mod tests {
    use super::*;

    const X32_SYSCALL_BIT: i64 = 0x4000_0000;

    #[test]
    fn profile_compiles() -> TestResult {
        let filters = default_filters()?;
        // Ranges keep the program short: it is installed on every sandbox start.
        assert!(
            filters.allowlist.len() < 200,
            "{} instructions",
            filters.allowlist.len()
        );
        assert!(filters.without_memfd.len() <= filters.allowlist.len() + 2);
        Ok(())
    }

    /// What a syscall made under the filters must return.
    #[derive(Clone, Copy)]
    enum Want {
        Succeeds,
        Fails(i32),
    }

    /// A raw syscall the filtered child makes. Arguments are integers, -1 file descriptors or
    /// null pointers (the rest are 0), so no call can touch the child's memory. Each is chosen
    /// so that, were the filter to let it through, the kernel would refuse it with another
    /// errno (unshare would succeed, changing only the throwaway child).
    struct Call {
        what: &'static str,
        nr: i64,
        args: [u64; 3],
        want: Want,
    }

    const NO_FD: u64 = u64::MAX; // -1
    const HIGH: u64 = 1 << 32;

    fn int(value: i32) -> u64 {
        u64::from(value as u32)
    }

    /// `libc::Ioctl` is `c_ulong` with glibc and `c_int` with musl.
    fn request(value: libc::Ioctl) -> u64 {
        u64::from(value as u32)
    }

    fn calls() -> Vec<Call> {
        use libc::*;
        use Want::*;
        let (eperm, enosys, ebadf) = (Fails(EPERM), Fails(ENOSYS), Fails(EBADF));
        // clone with CLONE_THREAD but not CLONE_SIGHAND is EINVAL in the kernel, so none of
        // these clones would fork even if the filter let it through.
        let clone = |flags: i32| int(flags | CLONE_THREAD);
        let namespaces = [
            CLONE_NEWNS,
            CLONE_NEWUTS,
            CLONE_NEWIPC,
            CLONE_NEWUSER,
            CLONE_NEWPID,
            CLONE_NEWNET,
            CLONE_NEWCGROUP,
        ];
        #[rustfmt::skip]
        let netlink = |protocol: i32| [int(AF_NETLINK), int(SOCK_RAW | SOCK_CLOEXEC), int(protocol)];
        let inet = |protocol: i32| [int(AF_INET), int(SOCK_STREAM), int(protocol)];
        let rows = [
            ("getpid", SYS_getpid, [0, 0, 0], Succeeds),
            ("write reaches the kernel", SYS_write, [NO_FD, 0, 0], ebadf),
            ("read reaches the kernel", SYS_read, [NO_FD, 0, 0], ebadf),
            ("io_uring_setup", SYS_io_uring_setup, [1, 0, 0], eperm),
            ("bpf", SYS_bpf, [0, 0, 0], eperm),
            ("userfaultfd", SYS_userfaultfd, [0, 0, 0], eperm),
            ("ptrace", SYS_ptrace, [PTRACE_PEEKDATA as u64, 1, 0], eperm),
            ("keyctl", SYS_keyctl, [0, 0, 0], eperm),
            ("setns", SYS_setns, [NO_FD, 0, 0], eperm),
            ("unshare", SYS_unshare, [int(CLONE_NEWUSER), 0, 0], eperm),
            ("mount", SYS_mount, [0, 0, 0], eperm),
            ("x32 getpid", X32_SYSCALL_BIT | SYS_getpid, [0, 0, 0], eperm),
            ("clone3 gets ENOSYS", SYS_clone3, [0, 0, 0], enosys),
            (
                "clone without namespaces reaches the kernel",
                SYS_clone,
                [clone(0), 0, 0],
                Fails(EINVAL),
            ),
            (
                "clone CLONE_NEWUSER, high bits set",
                SYS_clone,
                [HIGH | clone(CLONE_NEWUSER), 0, 0],
                eperm,
            ),
            (
                "ioctl TIOCSTI",
                SYS_ioctl,
                [NO_FD, request(TIOCSTI), 0],
                eperm,
            ),
            (
                "ioctl TIOCSTI, high bits set",
                SYS_ioctl,
                [NO_FD, HIGH | request(TIOCSTI), 0],
                eperm,
            ),
            (
                "ioctl TIOCLINUX, high bits set",
                SYS_ioctl,
                [NO_FD, HIGH | request(TIOCLINUX), 0],
                eperm,
            ),
            (
                "ioctl FIONREAD reaches the kernel",
                SYS_ioctl,
                [NO_FD, request(FIONREAD), 0],
                ebadf,
            ),
            (
                "personality query",
                SYS_personality,
                [0xffff_ffff, 0, 0],
                Succeeds,
            ),
            (
                "personality ADDR_NO_RANDOMIZE",
                SYS_personality,
                [int(ADDR_NO_RANDOMIZE), 0, 0],
                eperm,
            ),
            (
                "socket AF_UNIX",
                SYS_socket,
                [int(AF_UNIX), int(SOCK_STREAM), 0],
                Succeeds,
            ),
            (
                "socket AF_VSOCK",
                SYS_socket,
                [int(AF_VSOCK), int(SOCK_STREAM), 0],
                eperm,
            ),
            (
                "socket AF_ALG",
                SYS_socket,
                [int(AF_ALG), int(SOCK_SEQPACKET), 0],
                eperm,
            ),
            (
                "socketpair AF_VSOCK",
                SYS_socketpair,
                [int(AF_VSOCK), int(SOCK_STREAM), 0],
                eperm,
            ),
            (
                "socketpair AF_INET",
                SYS_socketpair,
                [int(AF_INET), int(SOCK_STREAM), 0],
                eperm,
            ),
            (
                "socket NETLINK_ROUTE",
                SYS_socket,
                netlink(NETLINK_ROUTE),
                Succeeds,
            ),
            (
                "socket NETLINK_AUDIT",
                SYS_socket,
                netlink(NETLINK_AUDIT),
                eperm,
            ),
            (
                "socket NETLINK_NETFILTER",
                SYS_socket,
                netlink(NETLINK_NETFILTER),
                eperm,
            ),
            (
                "socket NETLINK_XFRM",
                SYS_socket,
                netlink(NETLINK_XFRM),
                eperm,
            ),
            (
                "socket NETLINK_SOCK_DIAG",
                SYS_socket,
                netlink(NETLINK_SOCK_DIAG),
                eperm,
            ),
            (
                "socket NETLINK_GENERIC",
                SYS_socket,
                netlink(NETLINK_GENERIC),
                eperm,
            ),
            (
                "socket NETLINK_AUDIT, high bits set",
                SYS_socket,
                [int(AF_NETLINK), int(SOCK_RAW), HIGH | int(NETLINK_AUDIT)],
                eperm,
            ),
            (
                "socket NETLINK_ROUTE, high bits set",
                SYS_socket,
                [int(AF_NETLINK), int(SOCK_RAW), HIGH],
                Succeeds,
            ),
            ("socket TCP", SYS_socket, inet(IPPROTO_TCP), Succeeds),
            (
                "socket AF_INET6 UDP",
                SYS_socket,
                [int(AF_INET6), int(SOCK_DGRAM), int(IPPROTO_UDP)],
                Succeeds,
            ),
            ("socket SCTP", SYS_socket, inet(IPPROTO_SCTP), eperm),
            (
                "socket DCCP",
                SYS_socket,
                [int(AF_INET6), int(SOCK_DCCP), int(IPPROTO_DCCP)],
                eperm,
            ),
            (
                "socket AF_INET, high bits, SCTP",
                SYS_socket,
                [HIGH | int(AF_INET), int(SOCK_STREAM), int(IPPROTO_SCTP)],
                eperm,
            ),
            (
                "ioctl TIOCSETD",
                SYS_ioctl,
                [NO_FD, request(TIOCSETD), 0],
                eperm,
            ),
        ];
        let rows = rows.into_iter().chain(namespaces.map(|ns| {
            (
                "clone with a namespace flag",
                SYS_clone,
                [clone(ns), 0, 0],
                eperm,
            )
        }));
        rows.map(|(what, nr, args, want)| Call {
            what,
            nr,
            args,
            want,
        })
        .collect()
    }

    fn errno() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Runs in the filtered child: 0 if every call behaves, else 1 + the index of the first
    /// that does not. Makes no allocation (the parent may have other threads).
    fn run_calls(calls: &[Call]) -> i32 {
        for (index, call) in calls.iter().enumerate() {
            let [a, b, c] = call.args;
            // SAFETY: every argument is an integer, -1 or a null pointer (see `Call`); the
            // kernel validates them and never writes to our memory for these calls.
            let ret = unsafe { libc::syscall(call.nr, a, b, c, 0u64, 0u64, 0u64) };
            let ok = match call.want {
                Want::Succeeds => ret >= 0,
                Want::Fails(want) => ret == -1 && errno() == want,
            };
            if !ok {
                return 1 + index as i32;
            }
        }
        0
    }

    /// An ordinary fork (glibc's fork is clone with SIGCHLD) still works under the filters.
    fn fork_works() -> bool {
        // SAFETY: the grandchild only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: _exit ends the grandchild without running any Rust code.
            unsafe { libc::_exit(0) }
        }
        pid > 0 && wait(pid).ok().and_then(exit_code) == Some(0)
    }

    const INSTALL_FAILED: i32 = 100;
    const FORK_FAILED: i32 = 101;

    /// Forks; the child installs `filters` (if any), runs `body` and exits with its result.
    /// Returns the child's wait status.
    fn in_child(filters: Option<&Filters>, body: impl Fn() -> i32) -> io::Result<i32> {
        // SAFETY: the test harness may have other threads, so after fork the child must stay
        // async-signal-safe: `child_main` and the bodies make raw syscalls only, do not
        // allocate or panic, and the child leaves with _exit, never returning into the harness.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child_main(filters, &body);
            // SAFETY: as above; _exit skips atexit handlers and unwinding.
            unsafe { libc::_exit(code) }
        }
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        wait(pid)
    }

    fn child_main(filters: Option<&Filters>, body: &dyn Fn() -> i32) -> i32 {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prctl and setrlimit on this process with valid arguments. No core dump when
        // a filter kills the child on purpose.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        }
        match filters.map(|f| f.install(true)) {
            Some(Err(_)) => INSTALL_FAILED,
            _ => body(),
        }
    }

    fn wait(pid: libc::pid_t) -> io::Result<i32> {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer and `pid` is our own child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            Ok(status)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn exit_code(status: i32) -> Option<i32> {
        libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
    }

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn filtered_child_is_refused_what_the_profile_refuses() -> TestResult {
        let filters = default_filters()?;
        let calls = calls();
        let status = in_child(Some(&filters), || match run_calls(&calls) {
            0 if !fork_works() => FORK_FAILED,
            code => code,
        })?;
        let failed = match exit_code(status) {
            Some(0) => return Ok(()),
            Some(INSTALL_FAILED) => "installing the filters",
            Some(FORK_FAILED) => "fork",
            Some(code) => calls[code as usize - 1].what,
            None => "child killed by a signal",
        };
        Err(format!("under the filters: {failed} (status {status:#x})").into())
    }

    /// Makes i386 getpid (20) through `int 0x80`: 0 if it returned a pid, 1 otherwise.
    fn i386_getpid() -> i32 {
        let ret: i32;
        // SAFETY: i386 getpid takes no arguments and touches no memory; `int 0x80` returns
        // to the next instruction with the result in eax. r8-r11 are marked clobbered because
        // kernels before 4.17 did not preserve them for `int 0x80` from 64-bit code.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") 20 => ret,
                lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
                options(nostack),
            );
        }
        i32::from(ret <= 0)
    }

    #[test]
    fn i386_syscall_kills_the_process() -> TestResult {
        let unfiltered = in_child(None, i386_getpid)?;
        if exit_code(unfiltered) != Some(0) {
            eprintln!("skipped: this kernel runs no i386 syscalls (status {unfiltered:#x})");
            return Ok(());
        }
        let filters = default_filters()?;
        let status = in_child(Some(&filters), i386_getpid)?;
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "status {status:#x}"
        );
        Ok(())
    }
}
