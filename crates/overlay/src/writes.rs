//! A run's writable mounts as overlays: the host source is the read-only lower layer, the
//! changes go to an upper layer in the run's bounded area, and after the run they are
//! applied to the host (`apply`). Everything lives in one private, root-only directory per
//! run under `STAGING_ROOT`, removed when the run ends; a killed runner's directory is
//! removed by a later run once its process is gone, and its unapplied changes are lost.
//!
//! This module must never make a writable mount without a bounded area (without root it
//! refuses), mount anything that propagates out of the staging root, or remove anything
//! recursively (a mount point that could not be detached still shows the user's files).

use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nanoclaw_spec::WriteReport;
use rustix::fs::FileType;
use rustix::mount::{self as mnt, MountFlags, MountPropagationFlags, UnmountFlags};

use crate::area::Area;
use crate::source::fd_path;
use crate::{apply, Budget, Error};

/// Where root's runs stage their writable mounts, one directory per run.
pub const STAGING_ROOT: &str = "/run/nanoclaw/writes";
/// The area's mount point in a run's directory; the overlays are named by their index.
const AREA: &str = "area";

/// One writable mount, staged.
#[derive(Debug)]
struct Staged {
    /// The host source, opened once; the apply writes beneath it.
    source: OwnedFd,
    source_path: PathBuf,
    merged: PathBuf,
    upper: PathBuf,
    mounted: bool,
}

/// A run's writable mounts; dropping it unmounts and removes everything it made.
#[derive(Debug)]
pub struct Writes {
    dir: PathBuf,
    budget: Budget,
    area: Option<Area>,
    mounts: Vec<Staged>,
}

impl Writes {
    /// A new run directory. Refuses without host root: only root can make the bounded area.
    pub fn create(budget: Budget) -> Result<Writes, Error> {
        if rustix::process::geteuid().as_raw() != 0 {
            return Err(Error::other(
                "stage a writable mount",
                "its writes go to a bounded area (a loop-mounted file system, the write \
                 budget) and reach the host after the run, which needs host root; mount it \
                 read-only, or run as root",
            ));
        }
        let root = staging_root()?;
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let dir = root.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        Ok(Writes {
            dir,
            budget,
            area: None,
            mounts: Vec::new(),
        })
    }

    /// Stages the writable mount of `src` (made canonical by the runner) and returns the
    /// path of its overlay, which the sandbox binds instead.
    pub fn stage(&mut self, src: &Path) -> Result<PathBuf, Error> {
        let source = crate::open_source(src)
            .map_err(|e| Error::other("stage a writable mount", e.to_string()))?;
        let stat = rustix::fs::fstat(&source)
            .map_err(|e| Error::io(format!("stat {}", src.display()), e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
            return Err(Error::other(
                format!("stage the writable mount {}", src.display()),
                "a writable mount must be a directory (its writes go through an overlay); \
                 mount the directory that holds the file",
            ));
        }
        let area = match &mut self.area {
            Some(area) => area,
            None => {
                let point = self.dir.join(AREA);
                mkdir(&point, 0o700)?;
                self.area.insert(Area::create(&point, &self.budget)?)
            }
        };
        let index = self.mounts.len();
        let layers = area.path().join(index.to_string());
        let (upper, work) = (layers.join("upper"), layers.join("work"));
        mkdir(&layers, 0o700)?;
        mkdir(&work, 0o700)?;
        // The merged root takes the upper root's attributes: the source's own.
        mkdir(&upper, stat.st_mode & 0o7777)?;
        std::os::unix::fs::lchown(&upper, Some(stat.st_uid), Some(stat.st_gid))
            .map_err(|e| Error::io(format!("own {}", upper.display()), e))?;
        std::fs::set_permissions(
            &upper,
            std::os::unix::fs::PermissionsExt::from_mode(stat.st_mode & 0o7777),
        )
        .map_err(|e| Error::io(format!("mode {}", upper.display()), e))?;
        let merged = self.dir.join(index.to_string());
        mkdir(&merged, 0o700)?;
        self.mounts.push(Staged {
            source,
            source_path: src.to_path_buf(),
            merged: merged.clone(),
            upper: upper.clone(),
            mounted: false,
        });
        let staged = self
            .mounts
            .last_mut()
            .ok_or_else(|| Error::other("stage", "lost"))?;
        // No index, redirect or metacopy: the upper layer holds whole files and plain
        // directories, which is what `apply` understands; a renamed directory is EXDEV to
        // the tool, which then copies.
        let options = format!(
            "lowerdir={},upperdir={},workdir={},index=off,redirect_dir=off,metacopy=off,xino=off",
            fd_path(&staged.source),
            upper.display(),
            work.display()
        );
        let options = std::ffi::CString::new(options)
            .map_err(|_| Error::other("mount the overlay", "a path holds a NUL byte"))?;
        let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        // A source on a read-only mount stays read-only, as a bind of it would.
        let vfs = rustix::fs::fstatvfs(&staged.source)
            .map_err(|e| Error::io(format!("stat {}", src.display()), e))?;
        if vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
            flags |= MountFlags::RDONLY;
        }
        mnt::mount(
            "nanoclaw",
            &merged,
            "overlay",
            flags,
            Some(options.as_c_str()),
        )
        .map_err(|e| Error::io(format!("mount the overlay of {}", src.display()), e))?;
        staged.mounted = true;
        Ok(merged)
    }

    /// The host source of the overlay at `merged` (as `stage` returned it), opened once.
    pub fn source_of(&self, merged: &Path) -> Option<&OwnedFd> {
        self.mounts
            .iter()
            .find(|m| m.merged == merged)
            .map(|m| &m.source)
    }

    /// Applies the changes to the host, once the sandbox is gone (nothing writes the
    /// overlays any more), and reports them.
    pub fn finish(mut self) -> Result<WriteReport, Error> {
        for staged in &mut self.mounts {
            unmount(&staged.merged);
            staged.mounted = false;
        }
        let usage = match &self.area {
            Some(area) => area.usage()?,
            None => Default::default(),
        };
        let mut report = WriteReport {
            bytes_used: usage.bytes,
            files_used: usage.files,
            budget_bytes: self.budget.bytes,
            budget_files: self.budget.files,
            budget_reached: usage.full
                || usage.bytes >= self.budget.bytes
                || usage.files >= self.budget.files,
            ..Default::default()
        };
        // One allowance over all the mounts, as the area is one budget over all of them.
        let mut allowance = apply::Allowance::new(&self.budget);
        for staged in &self.mounts {
            apply::apply(
                &staged.upper,
                &staged.source,
                &staged.source_path,
                &mut allowance,
                &mut report,
            );
        }
        Ok(report)
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))
}

fn unmount(path: &Path) {
    if mnt::unmount(path, UnmountFlags::empty()).is_err() {
        let _ = mnt::unmount(path, UnmountFlags::DETACH);
    }
}

impl Drop for Writes {
    fn drop(&mut self) {
        for staged in self.mounts.iter().rev() {
            if staged.mounted {
                unmount(&staged.merged);
            }
            let _ = std::fs::remove_dir(&staged.merged);
        }
        // Unmounted (the loop device goes with it) before its mount point is removed.
        drop(self.area.take());
        let _ = std::fs::remove_dir(self.dir.join(AREA));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `STAGING_ROOT`, made private to root and a private mount (made once per boot), so that
/// nothing mounted below it propagates to other mount namespaces.
fn staging_root() -> Result<PathBuf, Error> {
    let root = PathBuf::from(STAGING_ROOT);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .map_err(|e| Error::io(format!("create {}", root.display()), e))?;
    let meta = std::fs::symlink_metadata(&root)
        .map_err(|e| Error::io(format!("inspect {}", root.display()), e))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(Error::other(
            format!("use {}", root.display()),
            "not a private directory of root; remove it",
        ));
    }
    if !is_mount_point(&root) {
        mnt::mount_bind(&root, &root)
            .map_err(|e| Error::io(format!("bind {} over itself", root.display()), e))?;
    }
    mnt::mount_change(&root, MountPropagationFlags::PRIVATE)
        .map_err(|e| Error::io(format!("make {} a private mount", root.display()), e))?;
    Ok(root)
}

/// Whether `path` is a mount point in this mount namespace.
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| point == wanted)
}

/// The run directories in `root` (named `PID-...` after their runner) whose runner is gone,
/// each with its entries: what a later run removes. Both backends' staging uses this.
pub fn dead_runs(root: &Path) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let Ok(runs) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    runs.flatten()
        .filter(|run| {
            let name = run.file_name().to_string_lossy().into_owned();
            name.split('-')
                .next()
                .filter(|p| p.parse::<u32>().is_ok())
                .is_some_and(|pid| !Path::new("/proc").join(pid).exists())
        })
        .map(|run| {
            let dir = run.path();
            let entries = std::fs::read_dir(&dir)
                .map(|e| e.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            (dir, entries)
        })
        .collect()
}

/// Removes the run directories of nanoclaw processes that are gone: their overlays and
/// areas are detached (the changes in them are discarded) and the empty directories removed.
pub fn reap_stale() {
    for (dir, mut entries) in dead_runs(Path::new(STAGING_ROOT)) {
        // The overlays before the area they write to.
        entries.sort_by_key(|p| p.file_name().is_some_and(|n| n == AREA));
        for entry in entries {
            let _ = mnt::unmount(&entry, UnmountFlags::DETACH);
            let _ = std::fs::remove_dir(&entry);
        }
        let _ = std::fs::remove_dir(&dir);
    }
}
