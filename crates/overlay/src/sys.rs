//! The crate's only `unsafe` code: the loop device ioctls, which neither rustix nor libc
//! wrap.
//!
//! This module must never hand the kernel a pointer to memory that does not outlive the
//! call, or a structure whose layout differs from the kernel's.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `LOOP_CTL_GET_FREE` (linux/loop.h): the number of a free loop device, made if needed.
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
/// `LOOP_CONFIGURE` (Linux 5.8): attach a backing file and set the flags in one step.
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
/// `LO_FLAGS_AUTOCLEAR`: the device detaches itself when its last user is gone.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// The number of a free loop device (`control` is `/dev/loop-control`).
pub fn loop_get_free(control: BorrowedFd<'_>) -> std::io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number or -1; the
    // descriptor is valid for the call (it is borrowed).
    let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if number < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(number as u32)
}

/// Attaches `backing` to the loop device `device`, detaching itself when no longer used.
pub fn loop_configure(device: BorrowedFd<'_>, backing: BorrowedFd<'_>) -> std::io::Result<()> {
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_AUTOCLEAR,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `config` is a fully initialised `struct loop_config` with the kernel's layout
    // (repr(C), the fields of linux/loop.h in order); the kernel only reads it during the
    // call, and it lives until the call returns. Both descriptors are valid (borrowed).
    let result = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structures_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
