//! Who the probe runs as, what it could gain by executing a setuid binary, and what it
//! inherits that could leak: its environment and its open descriptors.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use libc::{c_int, c_ulong, gid_t, uid_t};

use crate::attempt::refused;
use crate::{required, Finding, Report};

pub(crate) fn env(_: &[String]) -> Result<Finding, String> {
    let vars: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    Ok(Finding::blocked(vars.join("\n")))
}

/// Any descriptor beyond the standard three is something of the runner's (a pipe, a cgroup
/// file, the audit log) that the command could use.
pub(crate) fn open_fds(_: &[String]) -> Result<Finding, String> {
    let listed: Vec<String> = match fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => return Ok(Finding::not_attempted(format!("list /proc/self/fd: {e}"))),
    };
    // The listing's own descriptor is closed by now, so its link is gone.
    let mut open: Vec<(i32, String)> = listed
        .iter()
        .filter_map(|name| {
            let target = fs::read_link(format!("/proc/self/fd/{name}")).ok()?;
            Some((name.parse().ok()?, target.display().to_string()))
        })
        .collect();
    open.sort();
    let detail: Vec<String> = open
        .iter()
        .map(|(fd, target)| format!("{fd} -> {target}"))
        .collect();
    Ok(Finding {
        blocked: open.iter().all(|(fd, _)| *fd <= 2),
        detail: if detail.is_empty() {
            "no descriptor is open".to_string()
        } else {
            detail.join(", ")
        },
    })
}

pub(crate) fn whoami(_: &[String]) -> Result<Finding, String> {
    let me = Identity::current();
    Ok(Finding {
        blocked: me.unprivileged(),
        detail: me.to_string(),
    })
}

/// The child is `PATH probe whoami`; its report (a JSON line on stdout, or else the bare
/// stdout) carries the identity the setuid bit gave it.
pub(crate) fn setuid_exec(args: &[String]) -> Result<Finding, String> {
    let path: PathBuf = required(args, 0, "PATH")?;
    let shown = path.display();
    let output = match Command::new(&path)
        .args(["probe", "whoami"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) if refused(&e) => return Ok(Finding::blocked(format!("exec {shown}: {e}"))),
        Err(e) => return Ok(Finding::not_attempted(format!("exec {shown}: {e}"))),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = stdout
        .lines()
        .find_map(|line| serde_json::from_str::<Report>(line).ok())
        .map_or_else(|| stdout.trim().to_string(), |report| report.detail);
    let euid = field(&said, "euid").and_then(|v| v.parse::<uid_t>().ok());
    let effective = field(&said, "CapEff").and_then(|v| u64::from_str_radix(v, 16).ok());
    Ok(match (euid, effective) {
        (Some(euid), Some(effective)) => Finding {
            blocked: euid != 0 && effective == 0,
            detail: format!("{shown} ran as: {said}"),
        },
        _ => Finding::escaped(format!(
            "could not read euid and CapEff from {shown} ({}): {said:?}",
            output.status
        )),
    })
}

/// The value of `key=value` in a whoami detail.
fn field<'a>(detail: &'a str, key: &str) -> Option<&'a str> {
    detail
        .split_whitespace()
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
}

/// The capability sets, in the order /proc/self/status lists them.
const CAP_SETS: [&str; 5] = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];

struct Identity {
    uid: uid_t,
    gid: gid_t,
    euid: uid_t,
    egid: gid_t,
    groups: Vec<gid_t>,
    /// In `CAP_SETS` order; None when neither /proc nor the kernel would say.
    caps: [Option<u64>; 5],
    no_new_privs: Option<u64>,
    seccomp: Option<u64>,
}

impl Identity {
    /// Reads /proc/self/status, and asks the kernel directly for what it lacks, as it does
    /// where /proc is not mounted.
    fn current() -> Self {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|line| Some(line.strip_prefix(key)?.strip_prefix(':')?.trim()))
        };
        let cap = |i: usize| field(CAP_SETS[i]).and_then(|v| u64::from_str_radix(v, 16).ok());
        let decimal = |key: &str| field(key).and_then(|v| v.parse().ok());
        let from_capget = capget();
        // SAFETY: these calls take no pointers and cannot fail.
        let (uid, gid, euid, egid) = unsafe {
            (
                libc::getuid(),
                libc::getgid(),
                libc::geteuid(),
                libc::getegid(),
            )
        };
        Identity {
            uid,
            gid,
            euid,
            egid,
            groups: groups(),
            caps: [
                cap(0).or(from_capget.map(|c| c[0])),
                cap(1).or(from_capget.map(|c| c[1])),
                cap(2).or(from_capget.map(|c| c[2])),
                cap(3).or_else(|| prctl_mask(|n| prctl(libc::PR_CAPBSET_READ, n, 0))),
                cap(4).or_else(|| {
                    prctl_mask(|n| {
                        prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_IS_SET as c_ulong,
                            n,
                        )
                    })
                }),
            ],
            no_new_privs: decimal("NoNewPrivs").or_else(|| prctl_value(libc::PR_GET_NO_NEW_PRIVS)),
            seccomp: decimal("Seccomp").or_else(|| prctl_value(libc::PR_GET_SECCOMP)),
        }
    }

    fn unprivileged(&self) -> bool {
        self.euid != 0 && self.caps.iter().all(|c| *c == Some(0)) && self.no_new_privs == Some(1)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self.groups.iter().map(|g| g.to_string()).collect();
        write!(
            f,
            "uid={} gid={} euid={} egid={} groups={}",
            self.uid,
            self.gid,
            self.euid,
            self.egid,
            groups.join(",")
        )?;
        for (name, set) in CAP_SETS.iter().zip(self.caps) {
            match set {
                Some(set) => write!(f, " {name}={set:016x}")?,
                None => write!(f, " {name}=?")?,
            }
        }
        let unknown = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        write!(
            f,
            " NoNewPrivs={} Seccomp={}",
            unknown(self.no_new_privs),
            unknown(self.seccomp)
        )
    }
}

fn groups() -> Vec<gid_t> {
    // SAFETY: a size of 0 asks only for the count and writes nothing.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let mut groups = vec![0; usize::try_from(count).unwrap_or(0)];
    // SAFETY: `groups` has room for `count` entries.
    let got = unsafe { libc::getgroups(count.max(0), groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(got).unwrap_or(0));
    groups
}

/// The inheritable, permitted and effective sets, from capget.
fn capget() -> Option<[u64; 3]> {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 writes two `Data` structs, which `data` holds.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    if ret != 0 {
        return None;
    }
    let join = |low: u32, high: u32| u64::from(low) | u64::from(high) << 32;
    Some([
        join(data[0].inheritable, data[1].inheritable),
        join(data[0].permitted, data[1].permitted),
        join(data[0].effective, data[1].effective),
    ])
}

fn prctl(option: c_int, arg2: c_ulong, arg3: c_ulong) -> c_int {
    // SAFETY: the options used here take integers only and change nothing.
    unsafe { libc::prctl(option, arg2, arg3, 0 as c_ulong, 0 as c_ulong) }
}

fn prctl_value(option: c_int) -> Option<u64> {
    u64::try_from(prctl(option, 0, 0)).ok()
}

/// A capability set queried one capability at a time; past the last capability the kernel
/// answers EINVAL.
fn prctl_mask(is_set: impl Fn(c_ulong) -> c_int) -> Option<u64> {
    let mut mask = 0;
    for cap in 0..64 {
        match is_set(cap) {
            1 => mask |= 1 << cap,
            0 => {}
            _ if cap > 0 => break,
            _ => return None,
        }
    }
    Some(mask)
}
