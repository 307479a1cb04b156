//! Other processes: controlling or reading them, seeing them, and leaving one behind.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

use libc::{c_char, c_int, c_long, c_void};

use crate::attempt::{errno_of, failed, refused, wait_for, Attempts};
use crate::{optional, required, Finding};

pub(crate) fn ptrace(args: &[String]) -> Result<Finding, String> {
    let pid: libc::pid_t = optional(args, 0, "PID", 1)?;
    let mut attempts = Attempts::judged_by(failed);
    // PTRACE_SEIZE, unlike PTRACE_ATTACH, sends no SIGSTOP that could leave the target
    // stopped; the tracee is detached when the child that seized it exits.
    attempts.in_child(&format!("PTRACE_SEIZE pid {pid}"), || {
        // SAFETY: PTRACE_SEIZE takes no memory arguments.
        errno_of(unsafe {
            libc::syscall(
                libc::SYS_ptrace,
                libc::PTRACE_SEIZE as c_long,
                pid as c_long,
                0 as c_long,
                0 as c_long,
            )
        })
    });
    Ok(attempts.finish())
}

/// Only a refusal counts as blocked. EFAULT at a guessed address, for one, means the kernel
/// granted access to the target's memory and found nothing mapped there.
pub(crate) fn process_vm_read(args: &[String]) -> Result<Finding, String> {
    let pid: libc::pid_t = optional(args, 0, "PID", 1)?;
    let (address, whence) = match first_mapping(pid) {
        Ok(address) => (address, "its first mapping".to_string()),
        Err(e) => (0x40_0000, format!("a guess, since /proc/{pid}/maps: {e}")),
    };
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child(
        &format!("process_vm_readv pid {pid} at {address:#x} ({whence})"),
        || {
            let mut page = [0u8; 4096];
            let local = libc::iovec {
                iov_base: page.as_mut_ptr().cast(),
                iov_len: page.len(),
            };
            let remote = libc::iovec {
                iov_base: address as *mut c_void,
                iov_len: page.len(),
            };
            // SAFETY: `local` describes `page`, which outlives the call; `remote` is only an
            // address in the other process, which the kernel checks.
            errno_of(unsafe {
                libc::syscall(
                    libc::SYS_process_vm_readv,
                    pid as c_long,
                    &local as *const libc::iovec,
                    1 as c_long,
                    &remote as *const libc::iovec,
                    1 as c_long,
                    0 as c_long,
                )
            })
        },
    );
    Ok(attempts.finish())
}

fn first_mapping(pid: libc::pid_t) -> io::Result<usize> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    maps.lines()
        .next()
        .and_then(|line| line.split('-').next())
        .and_then(|start| usize::from_str_radix(start, 16).ok())
        .ok_or_else(|| io::Error::other("no mapping listed"))
}

/// One entry of /proc.
struct Visible {
    pid: libc::pid_t,
    name: String,
    ppid: Option<libc::pid_t>,
}

/// A process whose parent is not in /proc sees into an outer pid namespace, and so does one
/// that sees more processes than a sandbox holds. PPid 0 is the namespace's init (or a kernel
/// thread) and is fine.
pub(crate) fn proc_pids(args: &[String]) -> Result<Finding, String> {
    let allowed: usize = optional(args, 0, "ALLOWED_MAX", 8)?;
    let entries = match fs::read_dir("/proc") {
        Ok(entries) => entries,
        Err(e) => {
            return Ok(Finding::blocked(format!(
                "list /proc: {e} (no process is visible)"
            )))
        }
    };
    let mut procs: Vec<Visible> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(describe)
        .collect();
    procs.sort_by_key(|p| p.pid);
    let pids: BTreeSet<libc::pid_t> = procs.iter().map(|p| p.pid).collect();
    let outside: BTreeSet<libc::pid_t> = procs
        .iter()
        .filter_map(|p| p.ppid)
        .filter(|ppid| *ppid != 0 && !pids.contains(ppid))
        .collect();
    let listed: Vec<String> = procs
        .iter()
        .take(40)
        .map(|p| match p.ppid {
            Some(ppid) => format!("{} {} (ppid {ppid})", p.pid, p.name),
            None => format!("{} {} (ppid ?)", p.pid, p.name),
        })
        .collect();
    let more = if procs.len() > listed.len() {
        ", ..."
    } else {
        ""
    };
    let outside_list: Vec<String> = outside.iter().map(|p| p.to_string()).collect();
    let detail = format!(
        "{} visible (allowed {allowed}): {}{more}; parents outside the view: {}",
        procs.len(),
        listed.join(", "),
        if outside.is_empty() {
            "none".to_string()
        } else {
            outside_list.join(", ")
        },
    );
    let blocked = outside.is_empty() && procs.len() <= allowed;
    Ok(Finding { blocked, detail })
}

/// Reads a process's name and parent; None when it has exited since /proc was listed.
fn describe(pid: libc::pid_t) -> Option<Visible> {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => {
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| Some(l.strip_prefix(key)?.strip_prefix(':')?.trim().to_string()))
            };
            Some(Visible {
                pid,
                name: field("Name").unwrap_or_else(|| "?".to_string()),
                ppid: field("PPid").and_then(|p| p.parse().ok()),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(_) => Some(Visible {
            pid,
            name: "?".to_string(),
            ppid: None,
        }),
    }
}

/// What the forked helpers of `orphan` tell the probe, as (tag, value) pairs of i32.
const GRANDCHILD_PID: i32 = 1;
const FORK_FAILED: i32 = 2;
const EXEC_FAILED: i32 = 3;

/// Double-forks a grandchild that starts its own session, detaches from the probe's stdio and
/// re-executes this program as `probe sleep 3600 TOKEN`, so that TOKEN is in its command
/// line. Whether it outlives the sandbox is for the caller to check.
pub(crate) fn orphan(args: &[String]) -> Result<Finding, String> {
    let token: String = required(args, 0, "TOKEN")?;
    let argv_owned = ["nanoclaw", "probe", "sleep", "3600", &token]
        .map(|a| CString::new(a).map_err(|_| format!("TOKEN contains a NUL byte: {token:?}")));
    let argv_owned: Vec<CString> = argv_owned.into_iter().collect::<Result<_, _>>()?;
    let mut argv: Vec<*const c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
    argv.push(ptr::null());
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .ok();
    let devnull_fd = devnull.as_ref().map(|f| f.as_raw_fd());

    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Ok(Finding::not_attempted(format!(
            "pipe2: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: pipe2 just returned these descriptors, and nothing else owns them.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: the child runs only `detach`, which makes raw calls over memory prepared above
    // (argv, descriptors) and ends in exec or `_exit`.
    let child = unsafe { libc::fork() };
    match child {
        -1 => {
            return Ok(Finding::not_attempted(format!(
                "fork: {}",
                io::Error::last_os_error()
            )))
        }
        0 => detach(writer.as_raw_fd(), devnull_fd, &argv),
        _ => {}
    }
    drop(writer);
    let reaped = wait_for(child);
    let mut report = Vec::new();
    let read = File::from(reader).read_to_end(&mut report);

    let mut detail = Vec::new();
    for message in report.chunks_exact(8) {
        let word = |i: usize| {
            i32::from_ne_bytes([message[i], message[i + 1], message[i + 2], message[i + 3]])
        };
        let (tag, value) = (word(0), word(4));
        let error = io::Error::from_raw_os_error(value);
        detail.push(match tag {
            GRANDCHILD_PID => {
                format!("spawned grandchild pid {value} in its own session to run `probe sleep 3600 {token}`")
            }
            FORK_FAILED => format!("fork of the grandchild failed: {error}"),
            EXEC_FAILED => {
                format!("exec /proc/self/exe failed ({error}), so it sleeps without TOKEN in its command line")
            }
            _ => format!("unknown message {tag} from a helper"),
        });
    }
    if detail.is_empty() {
        detail.push("the helpers reported nothing".to_string());
    }
    if let Err(e) = reaped {
        detail.push(format!("intermediate child: {e}"));
    }
    if let Err(e) = read {
        detail.push(format!("reading the helpers' report: {e}"));
    }
    Ok(Finding::blocked(detail.join("; ")))
}

/// The intermediate child: forks the grandchild, reports its pid and exits, which leaves the
/// grandchild to be reparented.
fn detach(report: c_int, devnull: Option<c_int>, argv: &[*const c_char]) -> ! {
    // SAFETY: fork in a child that goes on with raw calls only.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        grandchild(report, devnull, argv);
    }
    if pid < 0 {
        send(report, FORK_FAILED, errno_of(pid));
    } else {
        send(report, GRANDCHILD_PID, pid);
    }
    // SAFETY: a raw exit, without the parent's destructors or atexit handlers.
    unsafe { libc::_exit(0) }
}

fn grandchild(report: c_int, devnull: Option<c_int>, argv: &[*const c_char]) -> ! {
    // SAFETY: raw calls on descriptors this process holds; `argv` is a null-terminated array
    // of NUL-terminated strings that outlive the call, and exec replaces the process image.
    unsafe {
        libc::setsid();
        if let Some(fd) = devnull {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
        }
        libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr());
        send(report, EXEC_FAILED, errno_of(-1));
        libc::close(report);
        libc::sleep(3600);
        libc::_exit(0)
    }
}

/// Writes one message; 8 bytes is far below PIPE_BUF, so the write is atomic.
fn send(fd: c_int, tag: i32, value: i32) {
    let mut message = [0u8; 8];
    message[..4].copy_from_slice(&tag.to_ne_bytes());
    message[4..].copy_from_slice(&value.to_ne_bytes());
    // SAFETY: `message` is readable for its length.
    unsafe { libc::write(fd, message.as_ptr().cast(), message.len()) };
}
