//! A run's files on the host: its bind mounts, staged from descriptors, and the pipes
//! between the runner and the container's init. They live in one directory per run (`RunDir`), removed when the run ends, however it ends; those of a
//! nanoclaw that was killed are removed by a later run once that process is gone.
//!
//! Bind mounts: the engine binds a source by path, and a path below a directory that a
//! concurrent sandbox can write can be swapped for a symlink between any check and the
//! engine's mount. So each source is opened once here without following symlinks, bound
//! from that descriptor into the run's private directory (nothing propagates from it) and
//! remounted nosuid and nodev, read-only or, when writable, noexec (the Engine API cannot
//! make a bind noexec, but a bind keeps the flags of the mount it copies), keeping every
//! flag the source mount has; the container binds that. A writable mount's `.git` is
//! staged read-only beside it. Staging needs the right to mount on the host (root);
//! without it a bind mount is refused, never made by path.
//!
//! The init's two named pipes (`channel`) live here too, mounted read-only.
//!
//! This module must never remove anything recursively: a staging mount that could not be
//! detached still shows the user's files.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use std::os::fd::OwnedFd;

use crate::channel::{self, InitChannel};
use nanoclaw_overlay::source::fd_path;
use nanoclaw_spec::{BackendError, Mount, SandboxSpec, WriteReport};
use rustix::mount::{self as mnt, MountFlags, MountPropagationFlags, UnmountFlags};

/// Where root's runs keep their files, one directory per invocation.
pub const STAGING_ROOT: &str = "/run/nanoclaw/docker";

/// The name every run directory of `uid` starts with in the temporary directory (not root).
fn user_prefix(uid: u32) -> String {
    format!("nanoclaw-docker-{uid}")
}

/// Whether `path` is a directory of this user that nobody else can enter.
fn is_private_dir(path: &Path) -> bool {
    let me = rustix::process::geteuid().as_raw();
    fs::symlink_metadata(path)
        .is_ok_and(|meta| meta.is_dir() && meta.uid() == me && meta.mode() & 0o077 == 0)
}

/// The directory of this user's runs: `STAGING_ROOT` for root; otherwise
/// `nanoclaw-docker-UID` in the temporary directory, or, when another user took that name
/// first (to block our runs), a fresh one with a random suffix only we can enter.
fn runs_root() -> Result<PathBuf, BackendError> {
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        return Ok(PathBuf::from(STAGING_ROOT));
    }
    let usual = std::env::temp_dir().join(user_prefix(uid));
    let _ = fs::DirBuilder::new().mode(0o700).create(&usual);
    if is_private_dir(&usual) {
        return Ok(usual);
    }
    let mut nonce = [0u8; 8];
    std::io::Read::read_exact(
        &mut fs::File::open("/dev/urandom").map_err(io_error("read /dev/urandom".into()))?,
        &mut nonce,
    )
    .map_err(io_error("read /dev/urandom".into()))?;
    let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let fresh = std::env::temp_dir().join(format!("{}-{suffix}", user_prefix(uid)));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&fresh)
        .map_err(io_error(format!("create {}", fresh.display())))?;
    Ok(fresh)
}

/// Every directory that may hold runs of this user (see `runs_root`).
fn runs_roots() -> Vec<PathBuf> {
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        return vec![PathBuf::from(STAGING_ROOT)];
    }
    let prefix = user_prefix(uid);
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name == prefix
                || name
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
        .map(|e| e.path())
        .filter(|path| is_private_dir(path))
        .collect()
}

/// One run's directory; dropping it detaches its mounts and removes its files.
#[derive(Debug)]
pub struct RunDir {
    dir: PathBuf,
    /// Staging mount points, and the init's pipes, in creation order.
    entries: Vec<PathBuf>,
    /// The writable mounts, as overlays whose changes are applied after the run.
    writes: Option<nanoclaw_overlay::Writes>,
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> BackendError {
    move |e| BackendError::io(what, e)
}

fn refused(error: impl std::fmt::Display) -> BackendError {
    BackendError::LayerUnavailable {
        layer: "a bind mount staged from its opened source (docker backend)".into(),
        reason: format!(
            "nanoclaw opens each mount source once, without following symlinks, and binds \
             that descriptor on the host for the engine (the engine binds by path, which a \
             concurrent writer can swap for a symlink); this needs the right to mount there \
             (run as root): {error}; use the native backend"
        ),
    }
}

impl RunDir {
    /// Creates the directory of `invocation` (named `PID-...` after its process).
    pub fn create(invocation: &str) -> Result<RunDir, BackendError> {
        let root = runs_root()?;
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
            writes: None,
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

    /// Stages every bind mount of `spec` and returns the spec the engine gets: the same,
    /// with each source replaced by its staging mount, and a writable mount's `.git` added
    /// as a read-only mount of its own. Each source is opened once, without following a
    /// symlink, and staged from that descriptor, so the engine binds what was checked.
    pub fn stage(&mut self, spec: &SandboxSpec) -> Result<SandboxSpec, BackendError> {
        let mut engine_spec = spec.clone();
        engine_spec.mounts.clear();
        for (index, mount) in spec.mounts.iter().enumerate() {
            let staged = if mount.writable {
                self.stage_writable(spec, &mount.src)?
            } else {
                let source = nanoclaw_overlay::open_source(&mount.src)
                    .map_err(|e| BackendError::Invalid(e.to_string()))?;
                self.stage_one(&source, &mount.src, &index.to_string(), false)?
            };
            engine_spec.mounts.push(Mount {
                src: staged.clone(),
                dst: mount.dst.clone(),
                writable: mount.writable,
            });
            if !mount.writable {
                continue;
            }
            let source = self.writes.as_ref().and_then(|w| w.source_of(&staged));
            let git = source.map(|s| git_of(s, &mount.src)).transpose()?.flatten();
            if let Some(git) = git {
                let path = mount.src.join(".git");
                engine_spec.mounts.push(Mount {
                    src: self.stage_one(&git, &path, &format!("{index}.git"), false)?,
                    dst: mount.dst.join(".git"),
                    writable: false,
                });
            }
        }
        if let Some(bundle) = engine_spec.ca_bundle.take() {
            engine_spec.mounts.push(Mount {
                src: self.stage_ca_bundle(&bundle)?,
                dst: PathBuf::from(nanoclaw_spec::CA_BUNDLE_INSIDE),
                writable: false,
            });
        }
        // What the engine is told never holds a value: the runner keeps them (redaction,
        // and the init's lifeline for `file` and `env`).
        for secret in &mut engine_spec.secrets {
            secret.value = nanoclaw_spec::SecretValue::default();
        }
        Ok(engine_spec)
    }

    /// The sandbox's CA bundle (public certificates only: the proxy's CA key never leaves
    /// its memory) as a read-only file of the run's directory, for the engine to bind.
    fn stage_ca_bundle(&mut self, bundle: &str) -> Result<PathBuf, BackendError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join("ca-bundle.pem");
        self.entries.push(path.clone());
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|mut file| file.write_all(bundle.as_bytes()))
            .map_err(|e| BackendError::io(format!("write the CA bundle {}", path.display()), e))?;
        Ok(path)
    }

    /// Stages the writable mount of `src` as an overlay with the run's write budget
    /// (`nanoclaw_overlay::Writes`); the overlay is already nosuid, nodev and noexec.
    fn stage_writable(&mut self, spec: &SandboxSpec, src: &Path) -> Result<PathBuf, BackendError> {
        let unavailable = |e: nanoclaw_overlay::Error| BackendError::LayerUnavailable {
            layer: "the write budget of writable mounts".into(),
            reason: e.to_string(),
        };
        let writes = match &mut self.writes {
            Some(writes) => writes,
            None => {
                nanoclaw_overlay::reap_stale();
                let budget = nanoclaw_overlay::Budget {
                    bytes: spec.limits.write_bytes,
                    files: spec.limits.write_files,
                };
                self.writes
                    .insert(nanoclaw_overlay::Writes::create(budget).map_err(unavailable)?)
            }
        };
        writes.stage(src).map_err(unavailable)
    }

    /// Applies the writable mounts' changes to the host, once the container is gone.
    pub fn finish_writes(&mut self) -> Result<Option<WriteReport>, BackendError> {
        self.writes
            .take()
            .map(|writes| {
                writes.finish().map_err(|e| BackendError::Io {
                    what: "apply the writable mounts' changes".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
            .transpose()
    }

    /// Binds the opened `source` at `name` in the run directory, private, nosuid and nodev,
    /// and noexec when writable, read-only otherwise, keeping the flags the source's mount
    /// has (a read-only source stays read-only).
    fn stage_one(
        &mut self,
        source: &OwnedFd,
        path: &Path,
        name: &str,
        writable: bool,
    ) -> Result<PathBuf, BackendError> {
        let target = self.dir.join(name);
        let stat = rustix::fs::fstat(source)
            .map_err(|e| refused(format!("stat {}: {e}", path.display())))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
            fs::create_dir(&target)
        } else {
            fs::write(&target, "")
        }
        .map_err(|e| refused(format!("create {}: {e}", target.display())))?;
        self.entries.push(target.clone());
        let kept = kept_flags(source).map_err(refused)?;
        let mut flags = kept | MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV;
        if writable {
            flags |= MountFlags::NOEXEC;
        } else {
            flags |= MountFlags::RDONLY;
        }
        mnt::mount_bind(fd_path(source), &target)
            .and_then(|()| mnt::mount_change(&target, MountPropagationFlags::PRIVATE))
            .and_then(|()| mnt::mount_remount(&target, flags, ""))
            .map_err(|e| refused(format!("bind {}: {e}", path.display())))?;
        Ok(target)
    }
}

/// The `.git` directly beneath an opened source, if any; one that is a symlink is refused.
fn git_of(source: &OwnedFd, src: &Path) -> Result<Option<OwnedFd>, BackendError> {
    use rustix::fs::{FileType, Mode, OFlags};
    let path = src.join(".git");
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let git = match rustix::fs::openat(source, ".git", flags, Mode::empty()) {
        Ok(git) => git,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(BackendError::io(
                format!("open {}", path.display()),
                e.into(),
            ))
        }
    };
    let stat = rustix::fs::fstat(&git)
        .map_err(|e| BackendError::io(format!("open {}", path.display()), e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
        return Err(BackendError::Invalid(format!(
            "mount source {} is a symlink; name its target instead",
            path.display()
        )));
    }
    Ok(Some(git))
}

/// The flags of the mount `source` is on that its staging copy must keep: a read-only
/// source stays read-only.
fn kept_flags(source: &OwnedFd) -> Result<MountFlags, String> {
    let vfs = rustix::fs::fstatvfs(source).map_err(|e| format!("stat {}: {e}", fd_path(source)))?;
    let mask = MountFlags::RDONLY.bits()
        | MountFlags::NOSUID.bits()
        | MountFlags::NODEV.bits()
        | MountFlags::NOEXEC.bits()
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
    let usual = std::env::temp_dir().join(user_prefix(rustix::process::geteuid().as_raw()));
    for root in runs_roots() {
        reap_stale_in(&root);
        // A fallback root (random suffix) goes once empty and a minute old: a younger one
        // may be a run's that has yet to make its directory in it.
        let old = fs::symlink_metadata(&root)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 60));
        if root != usual && root != Path::new(STAGING_ROOT) && old {
            let _ = fs::remove_dir(&root);
        }
    }
}

/// Removes the run directories in `root` whose runner is gone.
fn reap_stale_in(root: &Path) {
    for (dir, entries) in nanoclaw_overlay::dead_runs(root) {
        remove(&dir, entries.into_iter());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_spec::container::ContainerMessage;

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
        channel
            .go(&[nanoclaw_spec::container::GO])
            .unwrap_or_else(|e| panic!("{e}"));
        for path in [&report, &lifeline] {
            assert_eq!(fs::metadata(path).unwrap().mode() & 0o777, 0, "sealed");
        }
        let dir = report.parent().map(Path::to_path_buf).unwrap_or_default();
        drop(channel);
        drop(run);
        assert!(!dir.exists());
    }
}
