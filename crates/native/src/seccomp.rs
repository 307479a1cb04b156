//! The seccomp profile every sandbox runs under: a default-deny allowlist of x86_64 syscalls.
//!
//! The profile is data first: [`allowed`] (syscalls allowed whatever their arguments), the
//! argument rules ([`IOCTL_REFUSED_REQUESTS`], [`CLONE_NAMESPACE_FLAGS`],
//! [`PERSONALITY_ALLOWED`], [`SOCKET_RULES`], [`SOCKETPAIR_DOMAINS`]) and [`denied_names`] (what must stay out, for
//! docs, `doctor` and tests). The Docker backend exports the same data as a Docker seccomp
//! profile; [`default_filters`] compiles it to BPF for the native backend.
//!
//! This module must never:
//! - allow by default: any syscall not in [`allowed`] and not passing an argument rule fails
//!   with `EPERM` (Docker's choice: programs handle `EPERM` gracefully);
//! - rely on a deny list: [`denied_names`] is checked by tests, never compiled into a filter;
//! - build a filter for an architecture it has no table for: [`default_filters`] returns
//!   [`SeccompError::UnsupportedArch`] and the sandbox refuses to start.
//!
//! Other ABIs on the same CPU (firejail#87, rust-vmm/seccompiler#74):
//! - i386 (`int 0x80`, or `syscall` from a 32-bit code segment) reports `AUDIT_ARCH_I386`.
//!   The program starts with `ld arch; jeq AUDIT_ARCH_X86_64; ret KILL_PROCESS`, so any
//!   non-x86_64 arch kills the process before a syscall number is looked at.
//! - x32 reports `AUDIT_ARCH_X86_64` but sets bit 30 in the number (`0x4000_0000 | nr`).
//!   The filter compares the full 32-bit number, so an x32 call lies above every allowed
//!   range and gets `EPERM`. The table must therefore never hold an x32 number (tested below).
//!
//! `clone3` passes its flags in memory, where BPF cannot read them, so it is refused; it fails
//! with `ENOSYS`, not `EPERM`, so glibc falls back to `clone`, whose flags we do check.
//!
//! The BPF is generated here (seccompiler would give one comparison per syscall, about 1,500
//! instructions that cost most of a millisecond to install on every start); seccompiler
//! still installs it.

use std::io;

/// The name under which the profile is exported (Docker profile name, audit records).
pub const PROFILE_NAME: &str = "nanoclaw-default";

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp profile for architecture {0}")]
    UnsupportedArch(String),
    #[error("cannot compile seccomp filter: {0}")]
    Build(String),
    #[error("cannot install seccomp filter: {0}")]
    Install(io::Error),
}

/// A syscall by name and x86_64 number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    pub name: &'static str,
    pub nr: i64,
}

/// The syscalls allowed whatever their arguments. Empty on architectures without a profile.
pub fn allowed() -> &'static [Syscall] {
    profile::ALLOWED
}

/// Syscalls that must never be allowed. Documentation and a test oracle, not a filter.
pub fn denied_names() -> &'static [&'static str] {
    DENIED_NAMES
}

// Argument rules. Every comparison is on the low 32 bits of the argument, because each of these
// arguments is a 32-bit value to the kernel (ioctl's `unsigned int cmd`, clone's flags through
// `lower_32_bits`, personality's `unsigned int`, socket's `int domain` and `int protocol`): the kernel ignores the
// upper half, so the filter must too, or a caller sets high bits to dodge a not-equal check
// (bubblewrap CVE-2019-10063).

/// `ioctl` requests refused: TIOCSTI pushes input into the terminal, TIOCLINUX can too
/// (bubblewrap CVE-2017-5226); TIOCSETD attaches a line discipline to a terminal the tool
/// opens from `/dev/ptmx`, loading its module: n_hdlc (CVE-2017-2636) and n_gsm
/// (CVE-2023-6546) were root exploits from there, and no tool changes line disciplines.
/// Every other request is allowed (the sandbox's only devices are null, zero, full, random,
/// urandom and its own pseudo-terminals).
pub const IOCTL_REFUSED_REQUESTS: [u32; 3] = [
    libc::TIOCSTI as u32,
    libc::TIOCLINUX as u32,
    libc::TIOCSETD as u32,
];

/// `clone` is allowed only when none of these bits is set in its flags: a new namespace reaches
/// kernel code that is otherwise root-only. CLONE_NEWTIME shares its bit with the exit signal
/// in clone(2), where no valid signal sets it, so listing it costs nothing.
pub const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u32;

/// `personality` values allowed, as in Docker's profile: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and 0xffffffff (query). Refuses ADDR_NO_RANDOMIZE and friends.
pub const PERSONALITY_ALLOWED: [u32; 5] = [0x0, 0x8, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// What `socket` may create: an address family, and the protocols allowed in it (`None`:
/// any protocol the family has). Everything else is refused with `EPERM`:
/// - other families: AF_VSOCK (which no network namespace isolates), AF_ALG, AF_BLUETOOTH,
///   AF_PACKET, AF_KEY, ... are kernel attack surface no tool needs, and an unknown family
///   or protocol makes the kernel load its module (`net-pf-N-proto-P`) for the caller;
/// - INET and INET6 protocols but TCP, UDP and ICMP (the unprivileged "ping" socket, which
///   `net.ipv4.ping_group_range` governs): SCTP, DCCP, L2TP, UDP-Lite, MPTCP and raw
///   protocols are where the kernel's network bugs were (DCCP CVE-2017-6074, SCTP
///   CVE-2021-23133), reached through their module's autoload;
/// - netlink protocols but NETLINK_ROUTE: audit, netfilter (nf_tables was the most exploited
///   kernel subsystem of 2022-2024), xfrm, sock_diag, generic netlink and uevents are
///   host-wide or root-only kernel interfaces. NETLINK_ROUTE is what `getifaddrs` (glibc and
///   musl), `if_nameindex` and `ip addr` read the sandbox's own interfaces with; changing
///   them needs CAP_NET_ADMIN, which the sandbox lacks.
pub const SOCKET_RULES: [SocketRule; 4] = [
    SocketRule {
        domain: libc::AF_UNIX as u32,
        protocols: None,
    },
    SocketRule {
        domain: libc::AF_INET as u32,
        protocols: Some(&INET_PROTOCOLS),
    },
    SocketRule {
        domain: libc::AF_INET6 as u32,
        protocols: Some(&INET_PROTOCOLS),
    },
    SocketRule {
        domain: libc::AF_NETLINK as u32,
        protocols: Some(&[libc::NETLINK_ROUTE as u32]),
    },
];

/// The protocols an INET or INET6 socket may name; 0 is the type's default (TCP for a
/// stream, UDP for a datagram socket).
const INET_PROTOCOLS: [u32; 5] = [
    0,
    libc::IPPROTO_TCP as u32,
    libc::IPPROTO_UDP as u32,
    libc::IPPROTO_ICMP as u32,
    libc::IPPROTO_ICMPV6 as u32,
];

/// One address family `socket` may create; see [`SOCKET_RULES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketRule {
    /// `socket`'s first argument.
    pub domain: u32,
    /// The third argument's allowed values, or `None` for any.
    pub protocols: Option<&'static [u32]>,
}

/// Address families `socketpair` may create: only Unix sockets make connected pairs (every
/// other family answers `EOPNOTSUPP`), so allowing more would only reach more kernel code.
pub const SOCKETPAIR_DOMAINS: [u32; 1] = [libc::AF_UNIX as u32];

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

/// `"SYS_read"` to `"read"`, at compile time: tables name a syscall by its libc constant only,
/// so a row cannot carry one syscall's name and another's number.
const fn strip_sys_prefix(ident: &'static str) -> &'static str {
    match ident.as_bytes().split_first_chunk::<4>() {
        Some((b"SYS_", name)) => match std::str::from_utf8(name) {
            Ok(name) => name,
            Err(_) => panic!("syscall constant is not utf-8"),
        },
        _ => panic!("syscall constant must start with SYS_"),
    }
}

/// `syscalls![SYS_read, SYS_write]` is `[Syscall { name: "read", nr: libc::SYS_read }, ...]`.
#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
macro_rules! syscalls {
    ($($sys:ident),* $(,)?) => {
        [$(Syscall { name: strip_sys_prefix(stringify!($sys)), nr: libc::$sys }),*]
    };
}

/// Defines `DENIED_NAMES` from libc constants (names only, so it builds on any arch) plus names
/// libc has no x86_64 number for, and, for the tests, `DENIED` with the numbers.
macro_rules! never_allowed {
    (numbered: [$($sys:ident),* $(,)?], unnumbered: [$($name:literal),* $(,)?] $(,)?) => {
        static DENIED_NAMES: &[&str] = &[$(strip_sys_prefix(stringify!($sys)),)* $($name,)*];
        #[cfg(all(test, target_arch = "x86_64", target_pointer_width = "64"))]
        static DENIED: &[Syscall] = &syscalls![$($sys),*];
    };
}

never_allowed! {
    numbered: [
        // Bypass syscall rules: io_uring opens, connects and reads without the syscalls.
        SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register,
        // Other processes' memory; userfaultfd makes kernel races easy to win.
        SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp, SYS_pidfd_getfd,
        SYS_userfaultfd,
        // Kernel programmability and attack surface.
        SYS_bpf, SYS_perf_event_open, SYS_keyctl, SYS_add_key, SYS_request_key,
        // Mounts and namespaces (unshare/setns; clone is checked by flags, clone3 refused).
        SYS_mount, SYS_umount2, SYS_pivot_root, SYS_chroot, SYS_move_mount, SYS_open_tree,
        SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_mount_setattr,
        SYS_unshare, SYS_setns, SYS_clone3,
        // File handles walk around the mount tree.
        SYS_open_by_handle_at, SYS_name_to_handle_at,
        // Kernel, modules, hardware, host-wide state.
        SYS_kexec_load, SYS_kexec_file_load, SYS_init_module, SYS_finit_module,
        SYS_delete_module, SYS_iopl, SYS_ioperm, SYS_modify_ldt, SYS_swapon, SYS_swapoff,
        SYS_reboot, SYS_sethostname, SYS_setdomainname, SYS_acct, SYS_quotactl,
        SYS_quotactl_fd, SYS_syslog, SYS_vhangup, SYS_fanotify_init,
        // Useless without fanotify_init, which is refused: no reason to reach its code.
        SYS_fanotify_mark,
        // Clocks.
        SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime, SYS_adjtimex,
        // Obsolete.
        SYS_lookup_dcookie, SYS_nfsservctl, SYS_uselib, SYS_ustat, SYS_sysfs, SYS__sysctl,
        // Deprecated since Linux 3.16 and emulated in the kernel; no libc or tool calls it.
        SYS_remap_file_pages,
    ],
    // i386-only, or newer than the libc we build against.
    unnumbered: ["stime", "vm86", "lsm_set_self_attr"],
}

// The x32 target is target_arch x86_64 with 32-bit pointers and x32 syscall numbers in libc:
// it gets no profile.
#[cfg(not(all(target_arch = "x86_64", target_pointer_width = "64")))]
use unsupported as profile;
#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
use x86_64 as profile;

#[cfg(not(all(target_arch = "x86_64", target_pointer_width = "64")))]
mod unsupported {
    use super::{Filters, SeccompError, Syscall};

    pub(super) static ALLOWED: &[Syscall] = &[];

    pub(super) fn filters() -> Result<Filters, SeccompError> {
        Err(SeccompError::UnsupportedArch(
            std::env::consts::ARCH.to_string(),
        ))
    }
}

#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
mod x86_64 {
    use seccompiler::{sock_filter, BpfProgram};

    use super::{
        strip_sys_prefix, Filters, SeccompError, Syscall, CLONE_NAMESPACE_FLAGS,
        IOCTL_REFUSED_REQUESTS, PERSONALITY_ALLOWED, SOCKETPAIR_DOMAINS, SOCKET_RULES,
    };

    // Grouped by purpose, several to a line, so the table reads in one sitting.
    /// Docker's (moby) unconditional allowlist for x86_64, minus `denied_names()` and calls no
    /// tool needs (get/set_thread_area, memfd_secret, listmount, statmount, fanotify_mark,
    /// remap_file_pages). Each group says why it stays: a family that a shell, python3,
    /// node, curl, git or a compiler needs, whose harm the other layers (namespaces,
    /// capabilities, Landlock, cgroups) already bound. Left out until
    /// libc has their x86_64 numbers: cachestat, map_shadow_stack, futex_wake/wait/requeue,
    /// {get,set,list,remove}xattrat, io_pgetevents.
    #[rustfmt::skip]
    pub(super) static ALLOWED: &[Syscall] = &syscalls![
        // File descriptors: I/O. Every program needs them; splice/tee/vmsplice stay (pipes,
        // `cat`, `cp` use them; Dirty Pipe, CVE-2022-0847, was a page-cache bug, not a reason
        // to refuse the calls on a patched kernel).
        SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_preadv,
        SYS_preadv2, SYS_pwritev, SYS_pwritev2, SYS_lseek, SYS_sendfile, SYS_splice, SYS_tee,
        SYS_vmsplice, SYS_copy_file_range, SYS_readahead, SYS_fadvise64,
        // File descriptors: lifetime and state. sync/syncfs stay (package managers and
        // editors call them); they cost host I/O, not isolation.
        SYS_close, SYS_close_range, SYS_dup, SYS_dup2, SYS_dup3, SYS_fcntl, SYS_flock,
        SYS_pipe, SYS_pipe2, SYS_fsync, SYS_fdatasync, SYS_sync, SYS_syncfs,
        SYS_sync_file_range, SYS_ftruncate, SYS_fallocate,
        // Paths: open, inspect, traverse.
        SYS_open, SYS_openat, SYS_openat2, SYS_creat, SYS_access, SYS_faccessat,
        SYS_faccessat2, SYS_stat, SYS_lstat, SYS_fstat, SYS_newfstatat, SYS_statx, SYS_statfs,
        SYS_fstatfs, SYS_getcwd, SYS_chdir, SYS_fchdir, SYS_getdents, SYS_getdents64,
        SYS_readlink, SYS_readlinkat, SYS_umask,
        // Paths: change (Landlock and the mount layout decide where). mknod makes only FIFOs
        // and sockets without CAP_MKNOD; chown only within the sandbox's own ids.
        SYS_mkdir, SYS_mkdirat, SYS_mknod, SYS_mknodat, SYS_rmdir, SYS_rename, SYS_renameat,
        SYS_renameat2, SYS_link, SYS_linkat, SYS_symlink, SYS_symlinkat, SYS_unlink,
        SYS_unlinkat, SYS_truncate, SYS_chmod, SYS_fchmod, SYS_fchmodat, SYS_fchmodat2,
        SYS_chown, SYS_fchown, SYS_fchownat, SYS_lchown, SYS_utime, SYS_utimes, SYS_utimensat,
        SYS_futimesat,
        // Extended attributes: user.* on the sandbox's own files; security.* and trusted.*
        // need capabilities. cp -a, tar and pip read and write them.
        SYS_getxattr, SYS_lgetxattr, SYS_fgetxattr, SYS_setxattr, SYS_lsetxattr,
        SYS_fsetxattr, SYS_listxattr, SYS_llistxattr, SYS_flistxattr, SYS_removexattr,
        SYS_lremovexattr, SYS_fremovexattr,
        // Waiting for events: every event loop (python asyncio, node, curl) needs them.
        SYS_poll, SYS_ppoll, SYS_select, SYS_pselect6, SYS_epoll_create, SYS_epoll_create1,
        SYS_epoll_ctl, SYS_epoll_wait, SYS_epoll_pwait, SYS_epoll_pwait2, SYS_eventfd,
        SYS_eventfd2, SYS_inotify_init, SYS_inotify_init1, SYS_inotify_add_watch,
        SYS_inotify_rm_watch,
        // Linux AIO (not io_uring): its requests are ordinary reads and writes the filter has
        // already allowed; databases and some build tools use it.
        SYS_io_setup, SYS_io_destroy, SYS_io_submit, SYS_io_cancel, SYS_io_getevents,
        // Sockets (socket is checked by family and protocol, socketpair by family): what a
        // socket may do is then decided by the network namespace and the egress proxy.
        // setsockopt stays (every client sets timeouts and buffers); its risky options
        // (netfilter, packet rings) need CAP_NET_ADMIN or a family that is refused.
        SYS_accept, SYS_accept4, SYS_bind, SYS_connect, SYS_listen, SYS_shutdown,
        SYS_getsockname, SYS_getpeername, SYS_getsockopt, SYS_setsockopt, SYS_sendto,
        SYS_sendmsg, SYS_sendmmsg, SYS_recvfrom, SYS_recvmsg, SYS_recvmmsg,
        // Memory. memfd_create plus execveat runs a binary no noexec mount holds; allowed as
        // in Docker, since the tool can already run code.
        SYS_brk, SYS_mmap, SYS_munmap, SYS_mremap, SYS_mprotect, SYS_madvise, SYS_mincore,
        SYS_msync, SYS_mlock, SYS_mlock2, SYS_mlockall, SYS_munlock, SYS_munlockall,
        SYS_membarrier, SYS_memfd_create, SYS_pkey_alloc, SYS_pkey_free,
        SYS_pkey_mprotect, SYS_mseal,
        // Processes and threads (clone is checked by flags; clone3 gets ENOSYS).
        SYS_fork, SYS_vfork, SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group, SYS_wait4,
        SYS_waitid, SYS_set_tid_address, SYS_set_robust_list, SYS_get_robust_list,
        SYS_futex, SYS_futex_waitv, SYS_rseq, SYS_arch_prctl, SYS_prctl, SYS_restart_syscall,
        SYS_pidfd_open, SYS_pidfd_send_signal, SYS_process_mrelease,
        // Signals (the PID namespace bounds who can be signalled).
        SYS_kill, SYS_tkill, SYS_tgkill, SYS_rt_sigaction, SYS_rt_sigprocmask,
        SYS_rt_sigpending, SYS_rt_sigqueueinfo, SYS_rt_tgsigqueueinfo, SYS_rt_sigreturn,
        SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_sigaltstack, SYS_signalfd, SYS_signalfd4,
        SYS_pause,
        // Identity and credentials (changing them needs capabilities the sandbox lacks; a
        // program that drops privileges calls them and must not fail).
        SYS_getpid, SYS_getppid, SYS_gettid, SYS_getpgid, SYS_getpgrp, SYS_getsid,
        SYS_setpgid, SYS_setsid, SYS_getuid, SYS_geteuid, SYS_getgid, SYS_getegid,
        SYS_getresuid, SYS_getresgid, SYS_getgroups, SYS_setuid, SYS_setgid, SYS_setreuid,
        SYS_setregid, SYS_setresuid, SYS_setresgid, SYS_setfsuid, SYS_setfsgid,
        SYS_setgroups, SYS_capget, SYS_capset,
        // Self-restriction: a tool may always narrow itself further.
        SYS_seccomp, SYS_landlock_create_ruleset, SYS_landlock_add_rule,
        SYS_landlock_restrict_self,
        // Limits, scheduling, accounting. Raising a limit or a real-time priority needs
        // capabilities; the cgroup bounds what the rest can take.
        SYS_getrlimit, SYS_setrlimit, SYS_prlimit64, SYS_getrusage, SYS_times,
        SYS_getpriority, SYS_setpriority, SYS_ioprio_get, SYS_ioprio_set,
        SYS_sched_yield, SYS_sched_getaffinity, SYS_sched_setaffinity, SYS_sched_getattr,
        SYS_sched_setattr, SYS_sched_getparam, SYS_sched_setparam, SYS_sched_getscheduler,
        SYS_sched_setscheduler, SYS_sched_get_priority_max, SYS_sched_get_priority_min,
        SYS_sched_rr_get_interval,
        // Time (reading clocks and timers; setting the clock is denied).
        SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_nanosleep,
        SYS_gettimeofday, SYS_time, SYS_alarm, SYS_getitimer, SYS_setitimer, SYS_timer_create,
        SYS_timer_delete, SYS_timer_getoverrun, SYS_timer_gettime, SYS_timer_settime,
        SYS_timerfd_create, SYS_timerfd_gettime, SYS_timerfd_settime,
        // System information (uname, sysinfo: what any /proc shows too; getrandom).
        SYS_uname, SYS_sysinfo, SYS_getrandom, SYS_getcpu,
        // SysV and POSIX IPC (the IPC namespace removes them with the sandbox).
        SYS_msgget, SYS_msgsnd, SYS_msgrcv, SYS_msgctl, SYS_semget, SYS_semop,
        SYS_semtimedop, SYS_semctl, SYS_shmget, SYS_shmat, SYS_shmdt, SYS_shmctl,
        SYS_mq_open, SYS_mq_unlink, SYS_mq_timedsend, SYS_mq_timedreceive, SYS_mq_notify,
        SYS_mq_getsetattr,
    ];

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

        for (first, last) in ranges(ALLOWED.iter().map(|s| s.nr).filter(|&nr| keep(nr))) {
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
    fn allowlist_has_no_duplicates_and_no_denied_syscall() {
        let mut numbers: Vec<i64> = allowed().iter().map(|syscall| syscall.nr).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), allowed().len(), "duplicate syscall number");

        for denied in DENIED {
            assert!(
                !allowed().iter().any(|s| s.nr == denied.nr),
                "{} is allowed",
                denied.name
            );
        }
        for name in denied_names() {
            assert!(
                !allowed().iter().any(|s| s.name == *name),
                "{name} is allowed"
            );
        }
    }

    #[test]
    fn argument_checked_syscalls_are_not_allowed_unconditionally() {
        for name in [
            "ioctl",
            "clone",
            "clone3",
            "personality",
            "socket",
            "socketpair",
        ] {
            assert!(
                !allowed().iter().any(|s| s.name == name),
                "{name} is allowed"
            );
        }
    }

    #[test]
    fn allowlist_holds_no_x32_number() {
        assert!(allowed()
            .iter()
            .all(|s| (0..X32_SYSCALL_BIT).contains(&s.nr)));
        let x32_read = X32_SYSCALL_BIT | libc::SYS_read;
        assert!(!allowed().iter().any(|s| s.nr == x32_read));
    }

    #[test]
    fn names_come_from_the_libc_constants() {
        let read = allowed().iter().find(|s| s.name == "read");
        assert_eq!(read.map(|s| s.nr), Some(libc::SYS_read));
    }

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
