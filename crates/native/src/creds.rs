//! Drops everything the sandboxed process could use to regain privilege: supplementary
//! groups, capabilities (all five sets), the ability to gain any through exec, and sets the
//! resource limits that are per process rather than per cgroup.
//!
//! This must never return Ok with a capability left or no_new_privs unset.

use nanoclaw_spec::{Limits, SetupError, User};

use rustix::process::{Resource, Rlimit};

use crate::sys;

/// Switches to the sandbox user while keeping the namespace's capabilities, so that what
/// the setup creates belongs to an id that exists in the namespace (the caller's own id is
/// not mapped when it is host root, and the kernel refuses to create files for it).
///
/// The capabilities survive because the namespace maps no uid 0, so the kernel's
/// "leaving root clears capabilities" rule has no root to leave; `drop_privileges` clears
/// them explicitly afterwards.
///
/// `privileged` is true when the helper ran as host root and mapped the ids itself, in
/// which case the supplementary groups can (and must) be cleared; an unprivileged user
/// namespace forbids setgroups, so the process keeps the caller's own groups.
pub fn assume_user(user: User, privileged: bool) -> Result<(), SetupError> {
    if privileged {
        sys::clear_groups().map_err(|e| SetupError::io("clear supplementary groups", e))?;
    }
    sys::set_ids(user.uid, user.gid).map_err(|e| SetupError::io("switch to the sandbox user", e))
}

/// Applies rlimits and drops all privilege for good.
pub fn drop_privileges(user: User, limits: &Limits) -> Result<(), SetupError> {
    set_rlimit(Resource::Core, 0, "set core size limit")?;
    set_rlimit(
        Resource::Fsize,
        limits.file_size_bytes,
        "set file size limit",
    )?;
    set_rlimit(Resource::Nofile, limits.open_files, "set open file limit")?;
    sys::lock_securebits().map_err(|e| SetupError::io("lock securebits", e))?;
    sys::drop_bounding_and_ambient()
        .map_err(|e| SetupError::io("drop bounding capabilities", e))?;
    sys::set_ids(user.uid, user.gid)
        .map_err(|e| SetupError::io("switch to the sandbox user", e))?;
    sys::clear_capabilities().map_err(|e| SetupError::io("drop capabilities", e))?;
    rustix::thread::set_no_new_privs(true).map_err(|e| SetupError::io("set no_new_privs", e))?;
    verify()
}

fn set_rlimit(resource: Resource, value: u64, step: &str) -> Result<(), SetupError> {
    let limit = Rlimit {
        current: Some(value),
        maximum: Some(value),
    };
    rustix::process::setrlimit(resource, limit).map_err(|e| SetupError::io(step, e))
}

/// Reads back what the kernel says the process now holds.
fn verify() -> Result<(), SetupError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| SetupError::io("read back credentials", e))?;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let bad = match key {
            "CapInh" | "CapPrm" | "CapEff" | "CapBnd" | "CapAmb" => value
                .trim_start_matches('0')
                .is_empty()
                .then_some(())
                .is_none(),
            "NoNewPrivs" => value != "1",
            _ => false,
        };
        if bad {
            return Err(SetupError {
                step: "read back credentials".into(),
                path: None,
                errno: None,
                message: format!("{key} is {value} after dropping privileges"),
            });
        }
    }
    Ok(())
}
