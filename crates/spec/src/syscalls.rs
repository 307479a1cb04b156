//! The syscall profile every sandbox runs under, as data: a default-deny allowlist of x86_64
//! syscalls, shared by both backends (the native backend compiles it to BPF in
//! `nanoclaw_native::seccomp`; the Docker backend exports it as the engine's seccomp JSON).
//!
//! [`allowed`] (syscalls allowed whatever their arguments), the argument rules
//! ([`IOCTL_REFUSED_REQUESTS`], [`CLONE_NAMESPACE_FLAGS`], [`PERSONALITY_ALLOWED`],
//! [`SOCKET_RULES`], [`SOCKETPAIR_DOMAINS`]) and [`denied_names`] (what must stay out, for
//! docs, `doctor` and tests; never compiled into a filter).
//!
//! The table must never hold an x32 number (bit 30 set; tested below): the filters compare
//! the full 32-bit number, so an x32 call lies above every allowed range and is refused.
//! `clone3` passes its flags in memory, where BPF cannot read them, so it is refused with
//! `ENOSYS` (glibc then falls back to `clone`, whose flags are checked).

/// The name under which the profile is exported (Docker profile name, audit records).
pub const PROFILE_NAME: &str = "nanoclaw-default";

/// A syscall by name and x86_64 number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    pub name: &'static str,
    pub nr: i64,
}

/// The syscalls allowed whatever their arguments. Empty on architectures without a profile.
pub fn allowed() -> &'static [Syscall] {
    ALLOWED
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

#[cfg(not(all(target_arch = "x86_64", target_pointer_width = "64")))]
static ALLOWED: &[Syscall] = &[];

// Grouped by purpose, several to a line, so the table reads in one sitting.
/// Docker's (moby) unconditional allowlist for x86_64, minus `denied_names()` and calls no
/// tool needs (get/set_thread_area, memfd_secret, listmount, statmount, fanotify_mark,
/// remap_file_pages). Each group says why it stays: a family that a shell, python3,
/// node, curl, git or a compiler needs, whose harm the other layers (namespaces,
/// capabilities, Landlock, cgroups) already bound. Left out until
/// libc has their x86_64 numbers: cachestat, map_shadow_stack, futex_wake/wait/requeue,
/// {get,set,list,remove}xattrat, io_pgetevents.
#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
#[rustfmt::skip]
static ALLOWED: &[Syscall] = &syscalls![
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
}
