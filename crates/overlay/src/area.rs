//! A bounded write area: a fresh ext4 file system of the run's write budget, on a loop
//! device whose backing file has no name (`O_TMPFILE`), so a crash leaves no file behind and
//! the device detaches itself once unmounted (`LO_FLAGS_AUTOCLEAR`).
//!
//! Writes past the budget fail with ENOSPC: the file system is simply full. It holds as root
//! on any host that has loop devices and `mkfs.ext4`, without quota mount options. It
//! bounds the host disk the run can take by the image size (sparse: only what is written
//! takes space).
//!
//! This module must never mount the area without nosuid, nodev and noexec, or keep a
//! reserve for root (an overlay writes to its upper layer with its mounter's credentials).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{self as mnt, MountFlags, UnmountFlags};

use crate::{sys, Budget, Error};

/// Where the backing file lives (unnamed): on disk, not in memory like /run or /tmp.
const BACKING_DIR: &str = "/var/tmp";
/// How often to retry a loop device that another process took between asking and attaching.
const LOOP_ATTEMPTS: usize = 16;

/// A mounted area; dropping it unmounts it (which detaches and frees the loop device).
#[derive(Debug)]
pub struct Area {
    mount_point: PathBuf,
    /// What the empty file system already uses, so that the report counts the run's own.
    baseline: Usage,
}

/// Bytes and inodes in use on a file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
    /// Whether a write failed for lack of blocks or inodes (none are left).
    pub full: bool,
}

/// The image size for `budget`: the bytes, the inode table (256 bytes an inode), and what
/// ext4 keeps for itself besides (measured: about 2% and 2 MiB), so that the tool can
/// write about the budget itself before ENOSPC.
fn image_size(budget: &Budget) -> u64 {
    let inodes = budget.files.saturating_mul(256);
    let margin = budget.bytes / 50 + (2 << 20);
    budget.bytes.saturating_add(inodes).saturating_add(margin)
}

fn mkfs() -> &'static str {
    ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mkfs.ext4")
}

impl Area {
    /// Makes a file system of `budget` and mounts it on `mount_point` (an empty directory).
    pub fn create(mount_point: &Path, budget: &Budget) -> Result<Area, Error> {
        let backing = rustix::fs::open(
            BACKING_DIR,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io(format!("create the write area's file in {BACKING_DIR}"), e))?;
        // Sparse, so the host must have the room: past its free space the area would fail
        // with I/O errors instead of ENOSPC, after filling the host's disk.
        let size = image_size(budget);
        let free = rustix::fs::fstatvfs(&backing)
            .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
            .map_err(|e| Error::io(format!("measure the free space in {BACKING_DIR}"), e))?;
        if free < size {
            return Err(Error::other(
                "make the write area",
                format!(
                    "{BACKING_DIR} has {} MiB free, less than the write budget needs ({} MiB); \
                     lower it with --write-limit or limits.writes",
                    free >> 20,
                    size >> 20
                ),
            ));
        }
        rustix::fs::ftruncate(&backing, size)
            .map_err(|e| Error::io("size the write area's file", e))?;
        let (device, path) = attach(&backing)?;
        drop(backing);
        let made = Command::new(mkfs())
            .args(["-q", "-F", "-b", "4096", "-O", "^has_journal"])
            .args(["-E", "lazy_itable_init=1,nodiscard", "-m", "0", "-N"])
            .arg(budget.files.max(16).to_string())
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::io(format!("run {}", mkfs()), e))?;
        if !made.status.success() {
            return Err(Error::other(
                format!("make the write area's file system on {}", path.display()),
                format!(
                    "{} failed ({}): {}",
                    mkfs(),
                    made.status,
                    String::from_utf8_lossy(&made.stderr).trim()
                ),
            ));
        }
        mnt::mount(
            &path,
            mount_point,
            "ext4",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::NOATIME,
            None,
        )
        .map_err(|e| {
            Error::io(
                format!("mount the write area on {}", mount_point.display()),
                e,
            )
        })?;
        // The mount now holds the device; closing ours lets it detach when unmounted.
        drop(device);
        let mut area = Area {
            mount_point: mount_point.to_path_buf(),
            baseline: Usage::default(),
        };
        area.baseline = area.raw_usage()?;
        Ok(area)
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    fn raw_usage(&self) -> Result<Usage, Error> {
        let vfs = rustix::fs::statvfs(&self.mount_point)
            .map_err(|e| Error::io("measure the write area", e))?;
        Ok(Usage {
            bytes: (vfs.f_blocks - vfs.f_bfree).saturating_mul(vfs.f_frsize),
            files: vfs.f_files - vfs.f_ffree,
            full: vfs.f_bavail == 0 || vfs.f_favail == 0,
        })
    }

    /// What the run's changes take of the area.
    pub fn usage(&self) -> Result<Usage, Error> {
        let now = self.raw_usage()?;
        Ok(Usage {
            bytes: now.bytes.saturating_sub(self.baseline.bytes),
            files: now.files.saturating_sub(self.baseline.files),
            full: now.full,
        })
    }
}

/// Attaches `backing` to a free loop device; returns the device (held open, so that it
/// stays attached until mounted) and its path.
fn attach(backing: &OwnedFd) -> Result<(OwnedFd, PathBuf), Error> {
    let control = rustix::fs::open(
        "/dev/loop-control",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::io(
            "open /dev/loop-control (the write area needs a loop device)",
            e,
        )
    })?;
    let mut last = None;
    for _ in 0..LOOP_ATTEMPTS {
        let number = sys::loop_get_free(control.as_fd())
            .map_err(|e| Error::io("find a free loop device", e))?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        match sys::loop_configure(device.as_fd(), backing.as_fd()) {
            Ok(()) => return Ok((device, path)),
            // Taken by another process since we asked: ask again.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(e) => return Err(Error::io(format!("attach {}", path.display()), e)),
        }
    }
    Err(Error::io(
        "attach a loop device (all busy)",
        last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EBUSY)),
    ))
}

impl Drop for Area {
    fn drop(&mut self) {
        if mnt::unmount(&self.mount_point, UnmountFlags::empty()).is_err() {
            let _ = mnt::unmount(&self.mount_point, UnmountFlags::DETACH);
        }
    }
}
