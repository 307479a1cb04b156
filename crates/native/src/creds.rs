//! Drops everything the sandboxed process could use to regain privilege: supplementary
//! groups, capabilities (all five sets), the ability to gain any through exec, and sets the
//! resource limits that are per process rather than per cgroup.
//!
//! The credential calls are rustix's thread-level ones (raw syscalls, not the libc
//! wrappers that broadcast to every thread): they change only the calling thread. That is
//! the whole process here, because the sandbox init that calls them is single-threaded.
//!
//! This must never return Ok with a capability left or no_new_privs unset.

use nanoclaw_spec::{Limits, SetupError, User};
use rustix::io::Errno;
use rustix::process::{Gid, Resource, Rlimit, Uid};
use rustix::thread::{self as thread, CapabilitiesSecureBits as Bits, CapabilitySet};

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
        thread::set_thread_groups(&[])
            .map_err(|e| SetupError::io("clear supplementary groups", e))?;
    }
    set_ids(user)
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
    // Neither uid 0 nor a setuid transition regains capabilities, and the lock itself
    // cannot be undone.
    let locked = Bits::NO_ROOT
        | Bits::NO_ROOT_LOCKED
        | Bits::NO_SETUID_FIXUP
        | Bits::NO_SETUID_FIXUP_LOCKED
        | Bits::KEEP_CAPS_LOCKED
        | Bits::NO_CAP_AMBIENT_RAISE
        | Bits::NO_CAP_AMBIENT_RAISE_LOCKED;
    thread::set_capabilities_secure_bits(locked)
        .map_err(|e| SetupError::io("lock securebits", e))?;
    // Needs CAP_SETPCAP, so before the uid changes: no later exec can grant a capability.
    let known = known_capabilities();
    for &cap in &known {
        thread::remove_capability_from_bounding_set(cap)
            .map_err(|e| SetupError::io("drop bounding capabilities", e))?;
    }
    thread::clear_ambient_capability_set()
        .map_err(|e| SetupError::io("drop ambient capabilities", e))?;
    set_ids(user)?;
    thread::set_capabilities(None, no_capabilities())
        .map_err(|e| SetupError::io("drop capabilities", e))?;
    thread::set_no_new_privs(true).map_err(|e| SetupError::io("set no_new_privs", e))?;
    verify(&known)
}

/// Sets the real, effective and saved uid and gid of the calling (only) thread.
fn set_ids(user: User) -> Result<(), SetupError> {
    let step = "switch to the sandbox user";
    // To the kernel, id -1 means "leave unchanged": never a sandbox user.
    if user.uid == u32::MAX || user.gid == u32::MAX {
        return Err(SetupError {
            step: step.into(),
            path: None,
            errno: None,
            message: "uid or gid 4294967295 (-1) cannot be a sandbox user".into(),
        });
    }
    let gid = Gid::from_raw(user.gid);
    let uid = Uid::from_raw(user.uid);
    thread::set_thread_res_gid(gid, gid, gid).map_err(|e| SetupError::io(step, e))?;
    thread::set_thread_res_uid(uid, uid, uid).map_err(|e| SetupError::io(step, e))
}

fn no_capabilities() -> thread::CapabilitySets {
    thread::CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    }
}

/// Every capability this kernel knows: numbers from 0 up to the first one the bounding
/// set does not know (EINVAL), asked of the kernel instead of read from /proc.
fn known_capabilities() -> Vec<CapabilitySet> {
    (0..64u32)
        .map(|n| CapabilitySet::from_bits_retain(1 << n))
        .take_while(|&cap| thread::capability_is_in_bounding_set(cap) != Err(Errno::INVAL))
        .collect()
}

fn set_rlimit(resource: Resource, value: u64, step: &str) -> Result<(), SetupError> {
    let limit = Rlimit {
        current: Some(value),
        maximum: Some(value),
    };
    rustix::process::setrlimit(resource, limit).map_err(|e| SetupError::io(step, e))
}

/// Asks the kernel back what the thread now holds, set by set. The ambient set needs no
/// question of its own: the kernel keeps it a subset of permitted and inheritable, which
/// capget reports empty.
fn verify(known: &[CapabilitySet]) -> Result<(), SetupError> {
    let step = "read back credentials";
    let sets = thread::capabilities(None).map_err(|e| SetupError::io(step, e))?;
    let mut left = Vec::new();
    if sets != no_capabilities() {
        left.push(format!("{sets:?}"));
    }
    for &cap in known {
        if thread::capability_is_in_bounding_set(cap) != Ok(false) {
            left.push(format!("bounding {cap:?}"));
        }
    }
    if thread::no_new_privs() != Ok(true) {
        left.push("no_new_privs unset".into());
    }
    if left.is_empty() {
        return Ok(());
    }
    Err(SetupError {
        step: step.into(),
        path: None,
        errno: None,
        message: format!("still held after dropping privileges: {}", left.join(", ")),
    })
}
