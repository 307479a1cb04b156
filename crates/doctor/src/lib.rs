//! What this host can enforce of the native backend's layers, and why not where it cannot (`nanoclaw doctor`). An edge crate: `nanoclaw run` never runs it. Read-only: it checks, it
//! never changes anything on the host.

use nanoclaw_native::{cgroup, landlock_abi, seccomp};

/// One isolation layer and whether this host can enforce it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub layer: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn user_namespaces() -> Check {
    let max =
        read_trimmed("/proc/sys/user/max_user_namespaces").and_then(|v| v.parse::<u64>().ok());
    let root = rustix::process::geteuid().is_root();
    let restricted = [
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
        ),
    ]
    .into_iter()
    .find(|(path, bad)| read_trimmed(path).as_deref() == Some(*bad));
    let (ok, detail) = match (max, restricted) {
        (Some(0), _) => (false, "user.max_user_namespaces is 0".to_string()),
        (None, _) => (false, "the kernel has no user namespaces".to_string()),
        (_, Some((path, value))) if !root => (
            false,
            format!("{path} is {value}: unprivileged user namespaces are restricted; run as root or lift the restriction"),
        ),
        (Some(n), _) => (true, format!("available (max {n})")),
    };
    Check {
        layer: "user namespaces",
        ok,
        detail,
    }
}

fn seccomp_filter() -> Check {
    let status = read_trimmed("/proc/self/status").unwrap_or_default();
    let has_seccomp = status.lines().any(|l| l.starts_with("Seccomp:"));
    let (ok, detail) = match (has_seccomp, seccomp::default_filters()) {
        (false, _) => (false, "the kernel has no seccomp".to_string()),
        (true, Err(e)) => (false, e.to_string()),
        (true, Ok(_)) => (
            true,
            format!(
                "profile {} compiles for this architecture",
                seccomp::PROFILE_NAME
            ),
        ),
    };
    Check {
        layer: "seccomp",
        ok,
        detail,
    }
}

fn landlock() -> Check {
    let (ok, detail) = match landlock_abi() {
        Ok(abi) if abi >= 6 => (true, format!("ABI {abi}")),
        Ok(abi) => (
            true,
            format!("ABI {abi}: enforced partially (nanoclaw's rules are written for ABI 6)"),
        ),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => (
            false,
            "built into the kernel but not enabled (add landlock to the lsm= boot parameter)"
                .to_string(),
        ),
        Err(_) => (false, "the kernel does not implement Landlock".to_string()),
    };
    Check {
        layer: "landlock",
        ok,
        detail,
    }
}

fn cgroups() -> Check {
    let (ok, detail) = match cgroup::Layout::detect() {
        Ok(layout) => (
            true,
            format!(
                "memory, cpu and pids limits through cgroup {}",
                layout.version().as_str()
            ),
        ),
        Err(e) => (
            false,
            format!("{e}; runs are refused unless --allow-unlimited"),
        ),
    };
    Check {
        layer: "cgroups",
        ok,
        detail,
    }
}

/// Every layer the native backend needs, checked on this host.
pub fn checks() -> Vec<Check> {
    vec![user_namespaces(), seccomp_filter(), landlock(), cgroups()]
}
