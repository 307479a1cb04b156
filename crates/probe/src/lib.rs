//! Escape attempts that run inside a sandbox, as the untrusted program would, and say whether
//! each was blocked.
//!
//! This crate is deliberately hostile code. It runs only inside a sandbox, as
//! `nanoclaw probe NAME [ARGS...]`, and is not part of the trusted core: the runner, the policy
//! and the backends must never call it. Besides the native backend it is the only crate allowed
//! `unsafe`, because the attacks need raw system calls that no safe wrapper offers. It uses only
//! std and libc, and assumes nothing about the backend, so that one static (musl) binary can
//! probe native namespaces and Docker alike.
//!
//! How to read a [`Report`]:
//! - `blocked == true` means the attack failed.
//! - Where the point is that a filter or the kernel refuses a call (seccomp, capabilities),
//!   only a refusal counts as blocked: EPERM, EACCES, ENOSYS, or death by SIGSYS. Any other
//!   error means the call reached the kernel; the probe reports it as not blocked, with the
//!   error, so that a test fails loudly instead of passing by accident.
//! - A probe that could not make its attempt at all (no input file, nothing to copy) reports
//!   not blocked with a detail that begins `not attempted:`.
//! - Calls a filter might answer by killing the caller run in a forked child, so the probe
//!   lives to report it (see `attempt`).
//! - When an attack succeeds the probe undoes it (files removed, mounts detached, children
//!   reaped), except `orphan`, whose point is to leave a process behind.

use std::fmt::Display;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod abi;
mod attempt;
mod files;
mod flood;
mod hidden;
mod identity;
mod inspect;
mod kernel;
mod namespaces;
mod network;
mod processes;
mod resources;
mod sockets;
mod terminal;
mod writes;

/// What one probe found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    pub probe: String,
    /// The attack failed.
    pub blocked: bool,
    /// What happened, precise enough to tell which layer stopped the attack.
    pub detail: String,
}

impl Report {
    /// The report as one line of JSON (`probe`, `blocked`, `detail`), without the newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Unreachable: strings and a bool always serialize. Fail towards "not blocked".
            format!(
                r#"{{"probe":"?","blocked":false,"detail":"cannot serialize the report: {e}"}}"#
            )
        })
    }

    /// 0 when the attack was blocked, 10 when it got through.
    pub fn exit_code(&self) -> i32 {
        if self.blocked {
            0
        } else {
            10
        }
    }
}

/// One escape attempt the library knows.
pub struct Probe {
    /// The kebab-case name `run` takes.
    pub name: &'static str,
    pub about: &'static str,
    /// The arguments, e.g. `"PATH"`; `[X]` is optional and `[X...]` takes any number.
    pub args: &'static str,
    run: fn(&[String]) -> Result<Finding, String>,
}

/// Every probe, in the order `nanoclaw probe` lists them.
pub fn all() -> &'static [Probe] {
    PROBES
}

/// Runs the probe `name`. Err means no probe ran: the name is unknown or the arguments are bad.
pub fn run(name: &str, args: &[String]) -> Result<Report, String> {
    let probe = all().iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|p| p.name).collect();
        format!("unknown probe {name:?}; valid probes: {}", names.join(", "))
    })?;
    check_arity(probe, args)?;
    let finding = (probe.run)(args)?;
    Ok(Report {
        probe: name.to_string(),
        blocked: finding.blocked,
        detail: finding.detail,
    })
}

/// The verdict of one probe, before `run` names it.
struct Finding {
    blocked: bool,
    detail: String,
}

impl Finding {
    fn blocked(detail: impl Into<String>) -> Self {
        Finding {
            blocked: true,
            detail: detail.into(),
        }
    }

    fn escaped(detail: impl Into<String>) -> Self {
        Finding {
            blocked: false,
            detail: detail.into(),
        }
    }

    /// The attack could not even be tried, which proves nothing, so it does not count as blocked.
    fn not_attempted(why: impl Display) -> Self {
        Finding::escaped(format!("not attempted: {why}"))
    }

    /// Appends the failure of undoing a successful attack, which the caller should hear about.
    fn with_cleanup(mut self, undo: io::Result<()>, what: impl Display) -> Self {
        if let Err(e) = undo {
            self.detail
                .push_str(&format!("; cleanup failed: {what}: {e}"));
        }
        self
    }
}

fn check_arity(probe: &Probe, args: &[String]) -> Result<(), String> {
    let spec: Vec<&str> = probe.args.split_whitespace().collect();
    let min = spec.iter().filter(|t| !t.starts_with('[')).count();
    let max = if spec.iter().any(|t| t.contains("...")) {
        usize::MAX
    } else {
        spec.len()
    };
    if (min..=max).contains(&args.len()) {
        Ok(())
    } else {
        Err(format!(
            "usage: probe {} {} (got {} arguments)",
            probe.name,
            probe.args,
            args.len()
        ))
    }
}

fn parse_arg<T: FromStr>(args: &[String], index: usize, what: &str) -> Result<Option<T>, String>
where
    T::Err: Display,
{
    args.get(index)
        .map(|s| s.parse().map_err(|e| format!("bad {what} {s:?}: {e}")))
        .transpose()
}

fn required<T: FromStr>(args: &[String], index: usize, what: &str) -> Result<T, String>
where
    T::Err: Display,
{
    parse_arg(args, index, what)?.ok_or_else(|| format!("missing {what}"))
}

fn optional<T: FromStr>(args: &[String], index: usize, what: &str, default: T) -> Result<T, String>
where
    T::Err: Display,
{
    Ok(parse_arg(args, index, what)?.unwrap_or(default))
}

fn noop(_: &[String]) -> Result<Finding, String> {
    Ok(Finding::escaped("ran"))
}

static PROBES: &[Probe] = &[
    Probe {
        name: "noop",
        about: "does nothing and reports that it ran",
        args: "",
        run: noop,
    },
    Probe {
        name: "env",
        about: "lists the environment, one KEY=VALUE a line (informational: always blocked)",
        args: "",
        run: identity::env,
    },
    Probe {
        name: "hidden",
        about: "reads each PATH (credentials the runner hid) and is blocked when every one reads \
                empty: an empty file or directory, or no way in; reports sizes, never contents",
        args: "PATH...",
        run: hidden::hidden,
    },
    Probe {
        name: "inspect",
        about: "reports as JSON what the sandbox shows from inside (ids, capabilities, seccomp, \
                interfaces, mounts, writable mount points, env names, connects to HOST:PORT, by \
                default 1.1.1.1:443 and 127.0.0.1:9) for `verify` (informational: always blocked)",
        args: "[HOST:PORT...]",
        run: inspect::inspect,
    },
    Probe {
        name: "egress-flood",
        about: "connects to the egress proxy's socket as fast as it can for SECONDS, each \
                connection asking for a refused host, and reports how many it made \
                (informational: always blocked)",
        args: "SECONDS",
        run: flood::egress_flood,
    },
    Probe {
        name: "proxy-connect",
        about: "asks the egress proxy (HTTPS_PROXY) to CONNECT to each HOST:PORT and reports its \
                answers and whether a name lookup works, as JSON for `verify` (informational: \
                always blocked)",
        args: "[HOST:PORT...]",
        run: network::proxy_connect,
    },
    Probe {
        name: "open-fds",
        about: "lists the descriptors it started with and what each refers to; blocked when \
                none but 0, 1 and 2 is open",
        args: "",
        run: identity::open_fds,
    },
    Probe {
        name: "whoami",
        about: "uids, gids, groups, capability sets, NoNewPrivs and seccomp mode; blocked when \
                euid != 0, every capability set is empty and NoNewPrivs is 1",
        args: "",
        run: identity::whoami,
    },
    Probe {
        name: "setuid-exec",
        about: "executes PATH (a setuid-root copy of nanoclaw) as `PATH probe whoami`; blocked \
                when the child has euid != 0 and no effective capabilities",
        args: "PATH",
        run: identity::setuid_exec,
    },
    Probe {
        name: "read-file",
        about: "opens and reads PATH (up to 1 MiB); reading 0 bytes counts as blocked (masked)",
        args: "PATH",
        run: files::read_file,
    },
    Probe {
        name: "list-dir",
        about: "lists PATH; an empty listing counts as blocked (masked)",
        args: "PATH",
        run: files::list_dir,
    },
    Probe {
        name: "write-file",
        about: "creates or appends to PATH, then undoes the write",
        args: "PATH",
        run: files::write_file,
    },
    Probe {
        name: "exec-from",
        about: "drops a copy of /usr/bin/true, /bin/true or this program into DIR and executes it",
        args: "DIR",
        run: files::exec_from,
    },
    Probe {
        name: "memfd-exec",
        about: "copies /usr/bin/true, /bin/true or this program into a memfd and executes it \
                through /proc/self/fd (no file system, so no noexec mount, is involved)",
        args: "",
        run: files::memfd_exec,
    },
    Probe {
        name: "disk-fill",
        about: "writes MIB mebibytes to the new file PATH, then deletes it; blocked when a space \
                limit stops it (ENOSPC, EFBIG, EDQUOT)",
        args: "PATH MIB",
        run: resources::disk_fill,
    },
    Probe {
        name: "write-budget",
        about: "writes MIB mebibytes in files of 64 MiB under DIR, then deletes them; blocked \
                when the space runs out (ENOSPC, EDQUOT), never by the file size limit",
        args: "DIR MIB",
        run: writes::write_budget,
    },
    Probe {
        name: "tcp-connect",
        about: "connects to HOST:PORT within 2 s",
        args: "HOST:PORT",
        run: network::tcp_connect,
    },
    Probe {
        name: "udp-send",
        about: "sends one datagram to HOST:PORT; a send to a local address succeeds even without \
                a network, so use a non-local one (10.255.255.1:9, 1.1.1.1:53) to check routing",
        args: "HOST:PORT",
        run: network::udp_send,
    },
    Probe {
        name: "dns-lookup",
        about: "resolves NAME with getaddrinfo; names in /etc/hosts resolve without a network",
        args: "NAME",
        run: network::dns_lookup,
    },
    Probe {
        name: "raw-socket",
        about: "opens socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)",
        args: "",
        run: network::raw_socket,
    },
    Probe {
        name: "packet-socket",
        about: "opens socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)",
        args: "",
        run: network::packet_socket,
    },
    Probe {
        name: "ptrace",
        about: "PTRACE_SEIZE of PID (default 1), which never stops the target",
        args: "[PID]",
        run: processes::ptrace,
    },
    Probe {
        name: "process-vm-read",
        about: "process_vm_readv of one page of PID (default 1); only EPERM, EACCES, ENOSYS count \
                as blocked",
        args: "[PID]",
        run: processes::process_vm_read,
    },
    Probe {
        name: "proc-pids",
        about: "lists the processes in /proc; blocked unless more than ALLOWED_MAX (default 8) \
                are visible or one's parent is invisible (a view into an outer pid namespace)",
        args: "[ALLOWED_MAX]",
        run: processes::proc_pids,
    },
    Probe {
        name: "orphan",
        about: "leaves a grandchild in its own session running `probe sleep 3600 TOKEN` and \
                returns at once (always blocked); the caller checks that no process with TOKEN \
                outlives the run",
        args: "TOKEN",
        run: processes::orphan,
    },
    Probe {
        name: "mount",
        about: "mounts a tmpfs on DIR (default /tmp) and bind-mounts / there, detaching what works",
        args: "[DIR]",
        run: namespaces::mount,
    },
    Probe {
        name: "chroot",
        about: "chroot(DIR) (default /)",
        args: "[DIR]",
        run: namespaces::chroot,
    },
    Probe {
        name: "pivot-root",
        about: "pivot_root on a missing path: EPERM is blocked, ENOENT means the permission check \
                passed",
        args: "",
        run: namespaces::pivot_root,
    },
    Probe {
        name: "userns",
        about: "unshare(CLONE_NEWUSER), clone(CLONE_NEWUSER) and unshare(CLONE_NEWNS)",
        args: "",
        run: namespaces::userns,
    },
    Probe {
        name: "clone3",
        about: "clone3 with CLONE_NEWUSER (a filter should answer ENOSYS)",
        args: "",
        run: namespaces::clone3,
    },
    Probe {
        name: "io-uring",
        about: "io_uring_setup(8)",
        args: "",
        run: kernel::io_uring,
    },
    Probe {
        name: "bpf",
        about: "bpf(BPF_MAP_CREATE) of a one-entry array",
        args: "",
        run: kernel::bpf,
    },
    Probe {
        name: "keyctl",
        about: "keyctl(KEYCTL_GET_KEYRING_ID, session, create) and add_key",
        args: "",
        run: kernel::keyctl,
    },
    Probe {
        name: "perf-event",
        about: "perf_event_open of a software clock counter on itself",
        args: "",
        run: kernel::perf_event,
    },
    Probe {
        name: "userfaultfd",
        about: "userfaultfd, with and without UFFD_USER_MODE_ONLY",
        args: "",
        run: kernel::userfaultfd,
    },
    Probe {
        name: "kexec",
        about: "kexec_load with an invalid architecture, harmless even when permitted",
        args: "",
        run: kernel::kexec,
    },
    Probe {
        name: "module",
        about: "init_module and finit_module with empty arguments",
        args: "",
        run: kernel::module,
    },
    Probe {
        name: "syscall-x32",
        about: "getpid through the x32 ABI (nr | 0x40000000); any failure counts as blocked",
        args: "",
        run: abi::x32,
    },
    Probe {
        name: "syscall-i386",
        about: "getpid through `int 0x80` (the i386 ABI); an error or a killed child counts as \
                blocked",
        args: "",
        run: abi::i386,
    },
    Probe {
        name: "tiocsti",
        about: "TIOCSTI on fds 0-2 and /dev/tty, also with the request | 1<<32 (CVE-2019-10063); \
                EFAULT means permitted",
        args: "",
        run: terminal::tiocsti,
    },
    Probe {
        name: "tioclinux",
        about: "TIOCLINUX on fds 0-2 and /dev/tty, also with the request | 1<<32; EFAULT means \
                permitted",
        args: "",
        run: terminal::tioclinux,
    },
    Probe {
        name: "tiocsetd",
        about: "TIOCSETD (attach a line discipline) on fd -1; EBADF means permitted",
        args: "",
        run: sockets::tiocsetd,
    },
    Probe {
        name: "netlink",
        about: "opens netlink sockets of the audit, netfilter, xfrm, sock_diag, generic and \
                uevent protocols; blocked when a filter refuses each one",
        args: "",
        run: sockets::netlink,
    },
    Probe {
        name: "ip-protocols",
        about: "opens SCTP, DCCP and UDP-Lite sockets (whose modules the kernel loads on \
                demand); blocked when a filter refuses each one",
        args: "",
        run: sockets::ip_protocols,
    },
    Probe {
        name: "interfaces",
        about: "lists the interfaces getifaddrs returns over NETLINK_ROUTE (informational: \
                always blocked)",
        args: "",
        run: sockets::interfaces,
    },
    Probe {
        name: "fork-bomb",
        about: "forks up to N idle children, then kills them; blocked when fork fails first",
        args: "N",
        run: resources::fork_bomb,
    },
    Probe {
        name: "memory-hog",
        about: "allocates and touches MIB mebibytes in 16 MiB steps, with progress on stderr; \
                under a limit the OOM killer ends it",
        args: "MIB",
        run: resources::memory_hog,
    },
    Probe {
        name: "spin",
        about: "busy-loops for SECONDS (never blocked)",
        args: "SECONDS",
        run: resources::spin,
    },
    Probe {
        name: "sleep",
        about: "sleeps for SECONDS; extra arguments are ignored (they mark the process)",
        args: "SECONDS [TOKEN...]",
        run: resources::sleep,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::path::PathBuf;

    fn probe(name: &str, args: &[&str]) -> Result<Report, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        run(name, &args)
    }

    /// A path under the temp dir that no other test or run uses.
    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("nanoclaw-probe-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn noop_runs_and_is_not_blocked() -> Result<(), String> {
        let report = probe("noop", &[])?;
        assert_eq!(
            report,
            Report {
                probe: "noop".into(),
                blocked: false,
                detail: "ran".into()
            }
        );
        assert_eq!(report.exit_code(), 10);
        Ok(())
    }

    #[test]
    fn json_line_round_trips() -> Result<(), String> {
        let report = Report {
            probe: "x".into(),
            blocked: true,
            detail: "a\nb \"c\"".into(),
        };
        let line = report.to_json_line();
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<Report>(&line).map_err(|e| e.to_string())?,
            report
        );
        assert_eq!(report.exit_code(), 0);
        Ok(())
    }

    #[test]
    fn whoami_describes_every_field() -> Result<(), String> {
        let report = probe("whoami", &[])?;
        for key in [
            "uid=",
            "euid=",
            "groups=",
            "CapEff=",
            "CapBnd=",
            "CapAmb=",
            "NoNewPrivs=",
            "Seccomp=",
        ] {
            assert!(
                report.detail.contains(key),
                "{key} missing from {}",
                report.detail
            );
        }
        Ok(())
    }

    #[test]
    fn reading_a_missing_file_is_blocked() -> Result<(), String> {
        let path = scratch("missing");
        let report = probe("read-file", &[&path.to_string_lossy()])?;
        assert!(report.blocked);
        assert!(
            report.detail.contains("No such file or directory"),
            "{}",
            report.detail
        );
        Ok(())
    }

    #[test]
    fn reading_an_empty_file_counts_as_masked() -> Result<(), String> {
        let path = scratch("empty");
        std::fs::write(&path, b"").map_err(|e| e.to_string())?;
        let report = probe("read-file", &[&path.to_string_lossy()]);
        std::fs::remove_file(&path).map_err(|e| e.to_string())?;
        assert!(report?.blocked);
        Ok(())
    }

    #[test]
    fn writing_into_temp_dir_gets_through_and_is_undone() -> Result<(), String> {
        let path = scratch("write");
        let report = probe("write-file", &[&path.to_string_lossy()])?;
        assert!(!report.blocked, "{}", report.detail);
        assert!(!path.exists(), "the probe left {} behind", path.display());
        Ok(())
    }

    #[test]
    fn appending_to_an_existing_file_restores_it() -> Result<(), String> {
        let path = scratch("append");
        std::fs::write(&path, b"keep").map_err(|e| e.to_string())?;
        let report = probe("write-file", &[&path.to_string_lossy()]);
        let left = std::fs::read(&path).map_err(|e| e.to_string());
        std::fs::remove_file(&path).map_err(|e| e.to_string())?;
        assert!(!report?.blocked);
        assert_eq!(left?, b"keep");
        Ok(())
    }

    #[test]
    fn listing_temp_dir_gets_through() -> Result<(), String> {
        let dir = scratch("list");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("a"), b"").map_err(|e| e.to_string())?;
        let report = probe("list-dir", &[&dir.to_string_lossy()]);
        std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
        let report = report?;
        assert!(!report.blocked);
        assert!(report.detail.contains("1 entries"), "{}", report.detail);
        Ok(())
    }

    /// Outside a sandbox the attack works, so a sandbox that reports it blocked did block it.
    #[test]
    fn memfd_exec_gets_through_outside_a_sandbox() -> Result<(), String> {
        let report = probe("memfd-exec", &[])?;
        assert!(!report.blocked, "{}", report.detail);
        assert!(report.detail.starts_with("executed"), "{}", report.detail);
        Ok(())
    }

    #[test]
    fn unknown_probe_names_the_valid_ones() {
        let err = probe("no-such-probe", &[]).err().unwrap_or_default();
        assert!(err.contains("unknown probe"), "{err}");
        assert!(
            err.contains("read-file") && err.contains("tcp-connect"),
            "{err}"
        );
    }

    #[test]
    fn bad_arguments_are_refused_before_running() {
        assert!(probe("read-file", &[]).is_err());
        assert!(probe("noop", &["extra"]).is_err());
        assert!(probe("ptrace", &["not-a-pid"]).is_err());
        assert!(probe("tcp-connect", &["no-port"]).is_err());
        assert!(probe("sleep", &["0", "token", "more"]).is_ok());
    }

    #[test]
    fn tcp_connect_to_a_closed_port_is_blocked() -> Result<(), String> {
        // Bind and drop a listener to find a port nothing listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let report = probe("tcp-connect", &[&format!("127.0.0.1:{port}")])?;
        assert!(report.blocked, "{}", report.detail);
        assert!(report.detail.contains("refused"), "{}", report.detail);
        Ok(())
    }

    #[test]
    fn tcp_connect_to_a_listener_gets_through() -> Result<(), String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let report = probe("tcp-connect", &[&addr.to_string()])?;
        assert!(!report.blocked, "{}", report.detail);
        Ok(())
    }

    #[test]
    fn udp_send_to_loopback_gets_through() -> Result<(), String> {
        let report = probe("udp-send", &["127.0.0.1:9"])?;
        assert!(!report.blocked, "{}", report.detail);
        Ok(())
    }

    #[test]
    fn every_probe_declares_parsable_arguments() {
        for p in all() {
            assert!(p
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            let optional_seen = p
                .args
                .split_whitespace()
                .skip_while(|t| !t.starts_with('['))
                .all(|t| t.starts_with('['));
            assert!(
                optional_seen,
                "{}: required argument after an optional one",
                p.name
            );
        }
    }

    /// Probes that are harmless on a developer's machine even when they get through: each
    /// either fails on purpose after the permission check or makes something that dies with
    /// its child. They must return a report, whatever the host allows.
    #[test]
    fn harmless_probes_report_without_crashing() -> Result<(), String> {
        let own_pid = std::process::id().to_string();
        let runs: &[(&str, &[&str])] = &[
            ("env", &[]),
            ("open-fds", &[]),
            ("proc-pids", &[]),
            ("raw-socket", &[]),
            ("packet-socket", &[]),
            ("chroot", &[]),
            ("pivot-root", &[]),
            ("userns", &[]),
            ("clone3", &[]),
            ("io-uring", &[]),
            ("bpf", &[]),
            ("keyctl", &[]),
            ("perf-event", &[]),
            ("userfaultfd", &[]),
            ("module", &[]),
            ("syscall-x32", &[]),
            ("syscall-i386", &[]),
            ("tiocsti", &[]),
            ("tioclinux", &[]),
            ("tiocsetd", &[]),
            ("netlink", &[]),
            ("interfaces", &[]),
            ("process-vm-read", &[&own_pid]),
            ("spin", &["0.01"]),
            ("sleep", &["0.01", "token"]),
        ];
        for (name, args) in runs {
            let report = probe(name, args)?;
            assert!(
                !report.detail.is_empty() || *name == "env",
                "{name}: empty detail"
            );
        }
        Ok(())
    }
}
