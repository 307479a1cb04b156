//! Opens a mount source once, by the path the runner made canonical, into a descriptor
//! the checks and the mount then use.
//!
//! This module must never follow a symlink: a path that passes through one (a component
//! swapped for a link by a concurrent sandbox, as with `renameat2(RENAME_EXCHANGE)`) is
//! refused, not resolved. A caller that wants a link's target names the target.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

/// A mount source that could not be opened as named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    pub path: PathBuf,
    pub errno: Option<i32>,
    pub message: String,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mount source {}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for SourceError {}

fn error(path: &Path, errno: Option<Errno>, message: impl Into<String>) -> SourceError {
    SourceError {
        path: path.to_path_buf(),
        errno: errno.map(|e| e.raw_os_error()),
        message: message.into(),
    }
}

/// The `/proc/self/fd/N` path through which mount(2) and friends reach the file behind `fd`.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens the absolute, canonical `path` with `O_PATH`, refusing a symlink anywhere in it
/// (`RESOLVE_NO_SYMLINKS`), and checks that the descriptor still names `path`.
pub fn open(path: &Path) -> Result<OwnedFd, SourceError> {
    if !path.is_absolute() {
        return Err(error(path, None, "is not an absolute path"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(error(path, None, "must not contain '..'"));
    }
    let fd = rustix::fs::openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        Errno::LOOP | Errno::XDEV => error(
            path,
            Some(e),
            "is or passes through a symlink (or changed into one while being opened); name the real path",
        ),
        Errno::NOSYS => error(
            path,
            Some(e),
            "this kernel has no openat2 (Linux 5.6), which opening a source without following symlinks needs",
        ),
        other => error(path, Some(other), std::io::Error::from(other).to_string()),
    })?;
    let named = std::fs::read_link(fd_path(&fd))
        .map_err(|e| error(path, None, format!("read back the opened source: {e}")))?;
    if named != path {
        return Err(error(
            path,
            None,
            format!("changed while being opened (it is now {})", named.display()),
        ));
    }
    // O_NOFOLLOW with O_PATH opens a final symlink itself instead of failing.
    let stat = rustix::fs::fstat(&fd).map_err(|e| error(path, Some(e), e.to_string()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Symlink {
        return Err(error(path, None, "is a symlink; name its target instead"));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_opens_and_a_link_on_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("data")).unwrap();
        std::os::unix::fs::symlink(real.join("data"), real.join("link")).unwrap();
        assert!(open(&real.join("data")).is_ok());
        let through = open(&real.join("link/x")).unwrap_err();
        assert_eq!(through.errno, Some(libc::ELOOP), "{through}");
        let last = open(&real.join("link")).unwrap_err();
        assert!(last.message.contains("symlink"), "{last}");
        assert!(open(Path::new("relative")).is_err());
        assert!(open(&real.join("data/../data")).is_err());
    }
}
