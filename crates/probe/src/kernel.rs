//! Kernel interfaces that ordinary tools never need and that carry a large share of the
//! kernel's exploitable bugs: a sandbox filter must keep them out of reach.
//!
//! Only a refusal counts as blocked; any other error means the call reached the kernel. The
//! arguments are chosen so that a call that does get through either fails harmlessly after
//! the permission check or makes something that dies with the child that made it.

use std::ptr;

use libc::{c_long, c_void};

use crate::attempt::{errno_of, refused, Attempts};
use crate::Finding;

pub(crate) fn io_uring(_: &[String]) -> Result<Finding, String> {
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child("io_uring_setup(8)", || {
        // struct io_uring_params is 120 bytes; zero asks for the defaults.
        let mut params = [0u32; 30];
        // SAFETY: `params` is writable and as large as the struct the kernel fills in.
        errno_of(unsafe {
            libc::syscall(libc::SYS_io_uring_setup, 8 as c_long, params.as_mut_ptr())
        })
    });
    Ok(attempts.finish())
}

pub(crate) fn bpf(_: &[String]) -> Result<Finding, String> {
    const BPF_MAP_CREATE: c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child("bpf(BPF_MAP_CREATE, one-entry array)", || {
        // The head of union bpf_attr for BPF_MAP_CREATE: type, key size, value size, entries;
        // the kernel requires the rest to be zero.
        let mut attr = [0u32; 12];
        attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
        let size = std::mem::size_of_val(&attr) as c_long;
        // SAFETY: `attr` is readable for `size` bytes.
        errno_of(unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_ptr(), size) })
    });
    Ok(attempts.finish())
}

pub(crate) fn keyctl(_: &[String]) -> Result<Finding, String> {
    const KEYCTL_GET_KEYRING_ID: c_long = 0;
    const KEY_SPEC_PROCESS_KEYRING: c_long = -2;
    const KEY_SPEC_SESSION_KEYRING: c_long = -3;
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child(
        "keyctl(KEYCTL_GET_KEYRING_ID, session keyring, create)",
        || {
            // SAFETY: this keyctl operation takes only integers.
            errno_of(unsafe {
                libc::syscall(
                    libc::SYS_keyctl,
                    KEYCTL_GET_KEYRING_ID,
                    KEY_SPEC_SESSION_KEYRING,
                    1 as c_long,
                )
            })
        },
    );
    // The process keyring belongs to the child and goes with it.
    attempts.in_child("add_key(user, process keyring)", || {
        let payload = b"x";
        // SAFETY: type and description are NUL-terminated strings, the payload is readable
        // for the length given.
        errno_of(unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"nanoclaw-probe".as_ptr(),
                payload.as_ptr(),
                payload.len() as c_long,
                KEY_SPEC_PROCESS_KEYRING,
            )
        })
    });
    Ok(attempts.finish())
}

/// The first version of struct perf_event_attr (PERF_ATTR_SIZE_VER0), with the bitfield of
/// flags as one word (little-endian layout: bit 0 is `disabled`).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

pub(crate) fn perf_event(_: &[String]) -> Result<Finding, String> {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
    const DISABLED: u64 = 1 << 0;
    const EXCLUDE_KERNEL: u64 = 1 << 5;
    const EXCLUDE_HV: u64 = 1 << 6;
    const PERF_FLAG_FD_CLOEXEC: c_long = 1 << 3;
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child("perf_event_open(software task clock, self)", || {
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_TASK_CLOCK,
            // Excluding the kernel keeps the call legal under perf_event_paranoid=2, so that
            // only a filter or a stricter setting refuses it.
            flags: DISABLED | EXCLUDE_KERNEL | EXCLUDE_HV,
            ..PerfEventAttr::default()
        };
        // SAFETY: `attr` is a valid perf_event_attr of the size it states; pid 0 and cpu -1
        // mean this process on any CPU, with no group.
        errno_of(unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                0 as c_long,
                -1 as c_long,
                -1 as c_long,
                PERF_FLAG_FD_CLOEXEC,
            )
        })
    });
    Ok(attempts.finish())
}

pub(crate) fn userfaultfd(_: &[String]) -> Result<Finding, String> {
    const UFFD_USER_MODE_ONLY: c_long = 1;
    let mut attempts = Attempts::judged_by(refused);
    for (what, flags) in [
        ("userfaultfd(O_CLOEXEC)", libc::O_CLOEXEC as c_long),
        // Allowed to unprivileged users even when vm.unprivileged_userfaultfd is 0.
        (
            "userfaultfd(O_CLOEXEC | UFFD_USER_MODE_ONLY)",
            libc::O_CLOEXEC as c_long | UFFD_USER_MODE_ONLY,
        ),
    ] {
        attempts.in_child(what, || {
            // SAFETY: userfaultfd takes only flags.
            errno_of(unsafe { libc::syscall(libc::SYS_userfaultfd, flags) })
        });
    }
    Ok(attempts.finish())
}

/// kexec_load checks CAP_SYS_BOOT and lockdown before the architecture in its flags, so an
/// unknown architecture turns a permitted call into a harmless EINVAL instead of loading (or
/// unloading) a kernel.
pub(crate) fn kexec(_: &[String]) -> Result<Finding, String> {
    const BOGUS_ARCH: c_long = 0xdead << 16;
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child("kexec_load(no segments, unknown architecture)", || {
        // SAFETY: with no segments the kernel reads no memory; the segment pointer is null.
        errno_of(unsafe {
            libc::syscall(
                libc::SYS_kexec_load,
                0 as c_long,
                0 as c_long,
                ptr::null::<c_void>(),
                BOGUS_ARCH,
            )
        })
    });
    Ok(attempts.finish())
}

/// Both calls check CAP_SYS_MODULE first; past it, an empty image fails with ENOEXEC and fd
/// -1 with EBADF, so nothing is ever loaded.
pub(crate) fn module(_: &[String]) -> Result<Finding, String> {
    let mut attempts = Attempts::judged_by(refused);
    attempts.in_child("init_module(empty image)", || {
        let image = [0u8; 0];
        // SAFETY: the image is zero bytes long, and the parameters a NUL-terminated string.
        errno_of(unsafe {
            libc::syscall(
                libc::SYS_init_module,
                image.as_ptr(),
                0 as c_long,
                c"".as_ptr(),
            )
        })
    });
    attempts.in_child("finit_module(fd -1)", || {
        // SAFETY: the parameters are a NUL-terminated string; the fd is checked by the kernel.
        errno_of(unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                -1 as c_long,
                c"".as_ptr(),
                0 as c_long,
            )
        })
    });
    Ok(attempts.finish())
}
