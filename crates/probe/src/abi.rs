//! System calls through the other ABIs of an x86_64 kernel. Their numbers differ from the
//! native ones, so a filter that checks numbers without the architecture, or a deny list that
//! forgets them, lets them through. A good filter kills the caller, so both run in a child and
//! any failure, death included, counts as blocked.

#[cfg(target_arch = "x86_64")]
use crate::attempt::{errno_of, failed, Attempts};
use crate::Finding;

#[cfg(target_arch = "x86_64")]
pub(crate) fn x32(_: &[String]) -> Result<Finding, String> {
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    let mut attempts = Attempts::judged_by(failed);
    attempts.in_child("getpid through the x32 ABI (0x40000000 | 39)", || {
        // SAFETY: getpid takes no arguments and touches no memory, whichever ABI serves it.
        errno_of(unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) })
    });
    Ok(attempts.finish())
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn i386(_: &[String]) -> Result<Finding, String> {
    const I386_GETPID: i32 = 20;
    let mut attempts = Attempts::judged_by(failed);
    attempts.in_child("getpid through int 0x80 (i386 number 20)", || {
        let ret: i32;
        // SAFETY: `int 0x80` enters the kernel's 32-bit entry point. getpid takes no arguments
        // and touches no user memory; the entry returns in eax and may clobber r8-r11, all
        // declared. Without ia32 emulation the child dies of a signal instead.
        unsafe {
            core::arch::asm!(
                "int 0x80",
                inlateout("eax") I386_GETPID => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack),
            );
        }
        if ret < 0 {
            -ret
        } else {
            0
        }
    });
    Ok(attempts.finish())
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn x32(_: &[String]) -> Result<Finding, String> {
    Ok(Finding::blocked(
        "not applicable: the x32 ABI exists only on x86_64",
    ))
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn i386(_: &[String]) -> Result<Finding, String> {
    Ok(Finding::blocked(
        "not applicable: int 0x80 exists only on x86",
    ))
}
