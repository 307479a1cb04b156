//! New namespaces, mounts and root changes: the calls that give a process a fresh set of
//! capabilities or a different view of the filesystem.
//!
//! Every attempt runs in a child, so a namespace or root it gains dies with it and the probe
//! itself is never moved.

use std::ffi::{CStr, CString};
use std::io;
use std::ptr;

use libc::c_long;

use crate::attempt::{errno_of, refused, Attempts};
use crate::{optional, Finding};

/// A limit of zero user namespaces refuses a new one as surely as a filter does; a sandbox
/// may set it on purpose.
fn userns_refused(e: &io::Error) -> bool {
    refused(e) || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EUSERS))
}

pub(crate) fn userns(_: &[String]) -> Result<Finding, String> {
    let mut attempts = Attempts::judged_by(userns_refused);
    attempts.in_child("unshare(CLONE_NEWUSER)", || {
        // SAFETY: unshare takes no pointers and changes only this child.
        errno_of(unsafe { libc::unshare(libc::CLONE_NEWUSER) })
    });
    attempts.in_child("clone(CLONE_NEWUSER)", || {
        let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as c_long;
        // SAFETY: without CLONE_VM or a new stack this clone is a fork; `reap_clone` makes the
        // new process leave at once.
        reap_clone(unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags,
                0 as c_long,
                0 as c_long,
                0 as c_long,
                0 as c_long,
            )
        })
    });
    attempts.in_child("unshare(CLONE_NEWNS)", || {
        // SAFETY: unshare takes no pointers and changes only this child.
        errno_of(unsafe { libc::unshare(libc::CLONE_NEWNS) })
    });
    Ok(attempts.finish())
}

/// The first version of struct clone_args (CLONE_ARGS_SIZE_VER0).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

pub(crate) fn clone3(_: &[String]) -> Result<Finding, String> {
    let mut attempts = Attempts::judged_by(userns_refused);
    attempts.in_child("clone3(CLONE_NEWUSER)", || {
        let args = CloneArgs {
            flags: libc::CLONE_NEWUSER as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        let size = std::mem::size_of::<CloneArgs>() as c_long;
        // SAFETY: `args` is a valid clone_args of `size` bytes; with no stack given, clone3 is
        // a fork, and `reap_clone` makes the new process leave at once.
        reap_clone(unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size) })
    });
    Ok(attempts.finish())
}

/// Completes a fork-like raw clone inside an `in_child` call: the new process exits at once
/// and its parent reaps it.
fn reap_clone(ret: c_long) -> i32 {
    if ret == 0 {
        // SAFETY: `_exit` is a raw exit, safe in a process that libc did not set up.
        unsafe { libc::_exit(0) }
    }
    if ret < 0 {
        return errno_of(ret);
    }
    // SAFETY: a null status pointer is allowed.
    unsafe { libc::waitpid(ret as libc::pid_t, ptr::null_mut(), 0) };
    0
}

pub(crate) fn mount(args: &[String]) -> Result<Finding, String> {
    let dir: String = optional(args, 0, "DIR", "/tmp".to_string())?;
    let target = c_path(&dir)?;
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child(&format!("mount tmpfs on {dir}"), || {
        mount_then_detach(c"none", &target, Some(c"tmpfs"), 0)
    });
    attempts.in_child(&format!("bind-mount / on {dir}"), || {
        // Recursive, because a plain bind of a tree with locked mounts fails with EINVAL even
        // when mounting is allowed.
        mount_then_detach(c"/", &target, None, libc::MS_BIND | libc::MS_REC)
    });
    Ok(attempts.finish())
}

/// Mounts, and on success detaches the mount again at once.
fn mount_then_detach(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
) -> i32 {
    let fstype = fstype.map_or(ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is a NUL-terminated string or null (allowed for fstype with
    // MS_BIND), and the data argument is null.
    let ret = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype, flags, ptr::null()) };
    if ret == 0 {
        // SAFETY: `target` is a NUL-terminated string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    errno_of(ret)
}

pub(crate) fn chroot(args: &[String]) -> Result<Finding, String> {
    let dir: String = optional(args, 0, "DIR", "/".to_string())?;
    let path = c_path(&dir)?;
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child(&format!("chroot {dir}"), || {
        // SAFETY: `path` is a NUL-terminated string; the new root is the child's alone.
        errno_of(unsafe { libc::chroot(path.as_ptr()) })
    });
    Ok(attempts.finish())
}

/// pivot_root checks CAP_SYS_ADMIN before it looks at its paths, so a missing path turns a
/// permitted call into a harmless ENOENT. A real pivot would move the root of every process
/// in the mount namespace, the host's included when the probe runs outside a sandbox.
pub(crate) fn pivot_root(_: &[String]) -> Result<Finding, String> {
    const MISSING: &CStr = c"/nanoclaw-probe-missing-dir";
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child(
        "pivot_root on a missing path (ENOENT means permitted)",
        || {
            // SAFETY: both arguments are NUL-terminated strings.
            errno_of(unsafe {
                libc::syscall(libc::SYS_pivot_root, MISSING.as_ptr(), MISSING.as_ptr())
            })
        },
    );
    Ok(attempts.finish())
}

fn c_path(path: &str) -> Result<CString, String> {
    CString::new(path).map_err(|_| format!("path contains a NUL byte: {path:?}"))
}
