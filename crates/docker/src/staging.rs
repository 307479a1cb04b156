//! A run's files on the host: its writable mounts, made noexec, and the pipes between the
//! runner and the container's init. They live in one directory per
//! run (`RunDir`), removed when the run ends, however it ends; those of a nanoclaw that was
//! killed are removed by a later run once that process is gone.
//!
//! Writable mounts: the Engine API cannot make a bind mount noexec, but a bind mount keeps
//! the flags of the mount it copies, and the engine remounts a writable bind with no flags
//! of its own. So each writable mount's source is first bound here, private (nothing
//! propagates from it to the host's other mounts) and remounted noexec, nosuid and nodev,
//! keeping every flag the source mount has, read-only included; the container binds that.
//! Staging needs the right to mount on the host (root); without it a writable mount is
//! refused, never made without noexec.
//!
//! The init's two named pipes (`channel`) live here too, mounted read-only.
//!
//! This module must never remove anything recursively: a staging mount that could not be
//! detached still shows the user's files.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::channel::{self, InitChannel};
use nanoclaw_spec::{BackendError, SandboxSpec};
use rustix::mount::{self as mnt, MountFlags, MountPropagationFlags, UnmountFlags};

/// Where root's runs keep their files, one directory per invocation.
pub const STAGING_ROOT: &str = "/run/nanoclaw/docker";

/// The directory of every run of this user: `STAGING_ROOT` for root, a private directory
/// in the temporary directory otherwise.
fn runs_root() -> PathBuf {
    match rustix::process::geteuid().as_raw() {
        0 => PathBuf::from(STAGING_ROOT),
        uid => std::env::temp_dir().join(format!("nanoclaw-docker-{uid}")),
    }
}

/// One run's directory; dropping it detaches its mounts and removes its files.
#[derive(Debug)]
pub struct RunDir {
    dir: PathBuf,
    /// Staging mount points, and the init's pipes, in creation order.
    entries: Vec<PathBuf>,
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> BackendError {
    move |e| BackendError::io(what, e)
}

fn refused(error: impl std::fmt::Display) -> BackendError {
    BackendError::LayerUnavailable {
        layer: "a noexec writable mount (docker backend)".into(),
        reason: format!(
            "nanoclaw makes it noexec by staging it on the host, which needs the right to \
             mount there (run as root), and the engine cannot do it itself: {error}; mount it \
             read-only or use the native backend"
        ),
    }
}

impl RunDir {
    /// Creates the directory of `invocation` (named `PID-...` after its process).
    pub fn create(invocation: &str) -> Result<RunDir, BackendError> {
        let root = runs_root();
        // 0700 throughout: a staged source must not become reachable to users who could not
        // get to it through its own parent directories, and nobody else may plant a file.
        let created = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root);
        created.map_err(io_error(format!("create {}", root.display())))?;
        let meta =
            fs::symlink_metadata(&root).map_err(io_error(format!("inspect {}", root.display())))?;
        let me = rustix::process::geteuid().as_raw();
        if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(BackendError::Invalid(format!(
                "{} is not a private directory of uid {me}; remove it",
                root.display()
            )));
        }
        let dir = root.join(invocation);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_error(format!("create {}", dir.display())))?;
        Ok(RunDir {
            dir,
            entries: Vec::new(),
        })
    }

    /// The named pipes of the container's init (`InitChannel`), removed with the run.
    pub fn init_channel(&mut self) -> Result<InitChannel, BackendError> {
        let channel = InitChannel::create(&self.dir);
        // Whatever of the two was made goes with the run, also after a failure.
        for name in [channel::REPORT, channel::LIFELINE] {
            self.entries.push(self.dir.join(name));
        }
        channel
    }

    /// Stages the writable mounts of `spec` and returns the spec the engine gets: the same,
    /// with each writable mount's source replaced by its staging mount.
    pub fn stage(&mut self, spec: &SandboxSpec) -> Result<SandboxSpec, BackendError> {
        let mut engine_spec = spec.clone();
        for (index, mount) in engine_spec.mounts.iter_mut().enumerate() {
            if !mount.writable {
                continue;
            }
            let source = crate::config::mount_source(&mount.src)?;
            let target = self.dir.join(index.to_string());
            if source.is_dir() {
                fs::create_dir(&target)
            } else {
                fs::write(&target, "")
            }
            .map_err(|e| refused(format!("create {}: {e}", target.display())))?;
            self.entries.push(target.clone());
            let kept = kept_flags(&source).map_err(refused)?;
            mnt::mount_bind(&source, &target)
                .and_then(|()| mnt::mount_change(&target, MountPropagationFlags::PRIVATE))
                .and_then(|()| {
                    let flags = kept
                        | MountFlags::BIND
                        | MountFlags::NOEXEC
                        | MountFlags::NOSUID
                        | MountFlags::NODEV;
                    mnt::mount_remount(&target, flags, "")
                })
                .map_err(|e| refused(format!("bind {} noexec: {e}", source.display())))?;
            mount.src = target;
        }
        Ok(engine_spec)
    }
}

/// The flags of the mount `source` is on that its staging copy must keep: a read-only
/// source stays read-only.
fn kept_flags(source: &Path) -> Result<MountFlags, String> {
    let vfs = rustix::fs::statvfs(source).map_err(|e| format!("stat {}: {e}", source.display()))?;
    let mask = MountFlags::RDONLY.bits()
        | MountFlags::NOATIME.bits()
        | MountFlags::NODIRATIME.bits()
        | MountFlags::RELATIME.bits();
    Ok(MountFlags::from_bits_truncate(
        vfs.f_flag.bits() as u32 & mask,
    ))
}

/// Detaches and removes each entry of `dir`, then `dir`. An entry still mounted stays.
fn remove(dir: &Path, entries: impl Iterator<Item = PathBuf>) {
    for entry in entries {
        // Not a mount point (the report, a failed stage) is fine: only the entry is left.
        let _ = mnt::unmount(&entry, UnmountFlags::DETACH);
        let _ = fs::remove_dir(&entry).or_else(|_| fs::remove_file(&entry));
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for RunDir {
    fn drop(&mut self) {
        remove(&self.dir, self.entries.drain(..).rev());
    }
}

/// Removes the run directories of this user's nanoclaw processes that are gone.
pub fn reap_stale() {
    let Ok(runs) = fs::read_dir(runs_root()) else {
        return;
    };
    for run in runs.flatten() {
        let name = run.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().filter(|p| p.parse::<u32>().is_ok()) else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let dir = run.path();
        let entries = fs::read_dir(&dir)
            .map(|e| e.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        remove(&dir, entries.into_iter());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_native::container::ContainerMessage;

    #[test]
    fn a_run_directory_holds_the_inits_pipes_and_goes_with_the_run() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _context = runtime.enter();
        let name = format!("{}-test-{}", std::process::id(), line!());
        let mut run = RunDir::create(&name).unwrap_or_else(|e| panic!("{e}"));
        let mut channel = run.init_channel().unwrap_or_else(|e| panic!("{e}"));
        let [report, lifeline] = channel.paths().map(Path::to_path_buf);
        let mut writer = fs::OpenOptions::new().write(true).open(&report).unwrap();
        let ended =
            br#"{"ended":{"exit_code":null,"signal":15,"usage":{"cpu_ms":12,"max_rss_kib":3}}}"#;
        std::io::Write::write_all(&mut writer, ended).unwrap();
        std::io::Write::write_all(&mut writer, b"\nnot a message\n").unwrap();
        drop(writer);
        let messages = channel.rest();
        assert!(matches!(
            &messages[..],
            [ContainerMessage::Ended(ended)] if ended.signal == Some(15) && ended.usage.cpu_ms == 12
        ));
        channel.go().unwrap_or_else(|e| panic!("{e}"));
        for path in [&report, &lifeline] {
            assert_eq!(fs::metadata(path).unwrap().mode() & 0o777, 0, "sealed");
        }
        let dir = report.parent().map(Path::to_path_buf).unwrap_or_default();
        drop(channel);
        drop(run);
        assert!(!dir.exists());
    }
}
