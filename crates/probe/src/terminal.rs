//! Typing into the caller's terminal: TIOCSTI pushes characters into a tty's input queue and
//! TIOCLINUX can paste a console selection (bubblewrap CVE-2017-5226).
//!
//! The argument is a NULL pointer. The kernel checks permission before it reads the
//! character, so a permitted request fails with EFAULT and types nothing; only EFAULT or
//! success counts as getting through. Every other error means the request was refused or the
//! fd is no terminal at all.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr;

use libc::{c_long, c_ulong, c_void};

use crate::attempt::{errno_of, Attempts};
use crate::Finding;

pub(crate) fn tiocsti(_: &[String]) -> Result<Finding, String> {
    Ok(inject("TIOCSTI", libc::TIOCSTI as c_ulong))
}

pub(crate) fn tioclinux(_: &[String]) -> Result<Finding, String> {
    Ok(inject("TIOCLINUX", libc::TIOCLINUX as c_ulong))
}

fn not_efault(e: &io::Error) -> bool {
    e.raw_os_error() != Some(libc::EFAULT)
}

fn inject(name: &str, request: c_ulong) -> Finding {
    let mut attempts = Attempts::judged_by(not_efault);
    let mut targets = vec![
        (0, "fd 0".to_string()),
        (1, "fd 1".to_string()),
        (2, "fd 2".to_string()),
    ];
    // Kept open until the attempts are done.
    let tty = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/tty");
    let tty = match tty {
        Ok(file) => Some(file),
        Err(e) => {
            attempts.record("open /dev/tty", Err(e));
            None
        }
    };
    if let Some(file) = &tty {
        targets.push((file.as_raw_fd(), "/dev/tty".to_string()));
    }
    for (fd, label) in targets {
        for (variant, request) in variants(request) {
            attempts.in_child(&format!("{name}{variant} on {label}"), || {
                // SAFETY: the argument is null, which the kernel rejects with EFAULT once the
                // request is permitted; nothing is read or written.
                errno_of(unsafe {
                    libc::syscall(
                        libc::SYS_ioctl,
                        fd as c_long,
                        request,
                        ptr::null::<c_void>(),
                    )
                })
            });
        }
    }
    attempts.finish()
}

/// The kernel takes the request as 32 bits, so on a 64-bit system a filter that compares all
/// 64 lets `request | 1 << 32` through (bubblewrap CVE-2019-10063).
fn variants(request: c_ulong) -> Vec<(&'static str, c_ulong)> {
    #[cfg(target_pointer_width = "64")]
    return vec![("", request), (" | 1<<32", request | 1 << 32)];
    #[cfg(not(target_pointer_width = "64"))]
    return vec![("", request)];
}
