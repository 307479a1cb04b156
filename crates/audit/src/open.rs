//! Opening the audit log's files (the log, its checkpoints, a torn line moved aside, a
//! checkpoint key) so that no other user can choose which file nanoclaw appends to,
//! creates or trusts: root writing its log into a shared directory must not be made to
//! append to, create or read a file of someone else's choosing.
//!
//! The path is walked one component at a time from `/` with `openat(O_PATH|O_NOFOLLOW)`,
//! each step checked on the descriptor it opened (nothing is checked by name and then
//! used by name):
//! - every directory on the way, and every symlink followed on the way, is owned by the
//!   caller (euid) or root: no one else could have planted or swapped it;
//! - the file's own directory is not writable by group or others unless it is sticky
//!   (in a shared non-sticky directory anyone could delete or replace the log);
//! - the file itself is opened relative to that directory with `O_NOFOLLOW` (never
//!   through a symlink) and is a regular file with one link, owned by the caller (or, to
//!   be read, by root), with no group or other write bit (and no group or other access
//!   at all for a secret key);
//! - a new file is created with `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0600: a dangling
//!   symlink is never followed to create its target), a missing directory with `mkdirat`
//!   (mode 0700), and each is synced into its directory.
//!
//! Never open one of these files by path with the plain `std::fs` functions: they follow
//! symlinks at every component. Never relax a check to make a setup work: refuse, naming
//! the path and what is wrong with it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// What the caller will do with the file: decides how it is opened and whom it may
/// belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a log or a checkpoints file.
    Read,
    /// Read a secret key: nobody but its owner may have any access to it.
    ReadSecret,
    /// Append to a log or a checkpoints file, creating it and its missing directories if
    /// needed.
    Append,
    /// Create a file that must not exist yet (in an existing directory) and write it.
    CreateNew,
}

/// Symlinks followed in one walk before giving up, as the kernel's own limit.
const MAX_SYMLINKS: u32 = 40;

/// Opens the file at `path` for `access`, or refuses with `Error::Untrusted`.
pub fn open(path: &Path, access: Access) -> Result<File> {
    let untrusted = |reason: String| Error::Untrusted {
        path: path.to_path_buf(),
        reason,
    };
    let name = path
        .file_name()
        .ok_or_else(|| untrusted("it does not name a file".into()))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = Walk::to(parent, path, access == Access::Append)?;
    let stat = fstat(&dir.fd, &dir.path)?;
    if stat.st_mode & 0o022 != 0 && stat.st_mode & 0o1000 == 0 {
        return Err(Error::Untrusted {
            path: dir.path,
            reason: format!(
                "this directory holds {} but is writable by group or others and not \
                 sticky (mode {:04o}): anyone who can write it can delete or replace the file",
                path.display(),
                stat.st_mode & 0o7777
            ),
        });
    }

    // O_NONBLOCK: opening a FIFO planted in place of the file must not hang; it is
    // refused below as not a regular file. O_NOCTTY: nor may a terminal become ours.
    let base = OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
    let create = OFlags::CREATE | OFlags::EXCL;
    let at = |flags: OFlags| rustix::fs::openat(&dir.fd, name, base | flags, Mode::from(0o600));
    let opened = match access {
        Access::Read | Access::ReadSecret => at(OFlags::RDONLY).map(|fd| (fd, false)),
        Access::CreateNew => at(OFlags::WRONLY | create).map(|fd| (fd, true)),
        Access::Append => {
            let append = OFlags::RDWR | OFlags::APPEND;
            match at(append | create) {
                Ok(fd) => Ok((fd, true)),
                Err(Errno::EXIST) => at(append).map(|fd| (fd, false)),
                Err(e) => Err(e),
            }
        }
    };
    let (fd, created) = opened.map_err(|e| match e {
        Errno::LOOP => untrusted(
            "it is a symbolic link; the audit log's files are never opened through one".into(),
        ),
        e => Error::Open {
            path: path.to_path_buf(),
            source: e.into(),
        },
    })?;
    check_file(&fstat(&fd, path)?, access).map_err(untrusted)?;
    rustix::fs::fcntl_getfl(&fd)
        .and_then(|flags| rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK))
        .map_err(|e| Error::Open {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
    if created {
        sync_dir(&dir.fd, &dir.path)?;
    }
    Ok(File::from(fd))
}

/// `open`, or `None` when the file (or a directory on its path) does not exist.
pub fn open_if_exists(path: &Path, access: Access) -> Result<Option<File>> {
    match open(path, access) {
        Ok(file) => Ok(Some(file)),
        Err(Error::Open { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the file itself must be, given what it is for. `Err` says what is wrong.
fn check_file(stat: &Stat, access: Access) -> std::result::Result<(), String> {
    let mode = stat.st_mode & 0o7777;
    let euid = rustix::process::geteuid().as_raw();
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err("it is not a regular file".into());
    }
    let owner_ok = match access {
        Access::Append | Access::CreateNew => stat.st_uid == euid,
        Access::Read | Access::ReadSecret => stat.st_uid == euid || stat.st_uid == 0,
    };
    if !owner_ok {
        return Err(format!(
            "it is owned by uid {}, not by you (uid {euid}){}",
            stat.st_uid,
            if matches!(access, Access::Read | Access::ReadSecret) {
                " or root"
            } else {
                ""
            }
        ));
    }
    if stat.st_nlink != 1 {
        return Err(format!(
            "it has {} hard links; another name for it could be any file",
            stat.st_nlink
        ));
    }
    if access == Access::ReadSecret && mode & 0o077 != 0 {
        return Err(format!(
            "a secret key must be accessible to its owner only (mode 0600), not {mode:04o}"
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "it is writable by group or others (mode {mode:04o}); it must be 0600"
        ));
    }
    Ok(())
}

/// A directory reached by a trusted walk: its descriptor (`O_PATH`) and where it is.
struct Walk {
    fd: OwnedFd,
    /// Resolved: symlinks followed, `..` applied. For messages only.
    path: PathBuf,
}

impl Walk {
    /// Walks from `/` to the directory `path` (relative to the working directory if not
    /// absolute), checking each step; creates missing directories (0700) if `create`.
    /// A step that cannot be opened is an error about `file`, the file in `path` to be
    /// opened, as `open(2)` would report it.
    fn to(path: &Path, file: &Path, create: bool) -> Result<Walk> {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|source| Error::Open {
                    path: path.to_path_buf(),
                    source,
                })?
                .join(path)
        };
        let mut walk = Walk::root()?;
        // A stack of the names still to walk, the next on top.
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, &absolute);
        let mut links = 0;
        while let Some(name) = pending.pop() {
            let fd = walk.step(&name, file, create)?;
            let next = if name == ".." {
                walk.path.parent().unwrap_or(Path::new("/")).to_path_buf()
            } else {
                walk.path.join(&name)
            };
            let stat = fstat(&fd, &next)?;
            let euid = rustix::process::geteuid().as_raw();
            if stat.st_uid != euid && stat.st_uid != 0 {
                return Err(Error::Untrusted {
                    path: next,
                    reason: format!(
                        "it is on the path to {} but owned by uid {}, not by you (uid {euid}) \
                         or root: its owner could redirect the file anywhere",
                        absolute.display(),
                        stat.st_uid
                    ),
                });
            }
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => walk = Walk { fd, path: next },
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Error::Open {
                            path: file.to_path_buf(),
                            source: Errno::LOOP.into(),
                        });
                    }
                    // The link read through its own descriptor: the one just checked.
                    let target =
                        rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(|e| Error::Open {
                            path: next.clone(),
                            source: e.into(),
                        })?;
                    let target = PathBuf::from(OsStr::from_bytes(target.to_bytes()));
                    if target.is_absolute() {
                        walk = Walk::root()?;
                    }
                    push_components(&mut pending, &target);
                }
                _ => {
                    return Err(Error::Open {
                        path: file.to_path_buf(),
                        source: Errno::NOTDIR.into(),
                    })
                }
            }
        }
        Ok(walk)
    }

    fn root() -> Result<Walk> {
        let path = PathBuf::from("/");
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        Ok(Walk { fd, path })
    }

    /// Opens `name` in this directory without following it, creating it as a directory
    /// (0700) if it is missing and `create` is set.
    fn step(&self, name: &OsStr, file: &Path, create: bool) -> Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let open = || rustix::fs::openat(&self.fd, name, flags, Mode::empty());
        let failed = |e: Errno| Error::Open {
            path: file.to_path_buf(),
            source: e.into(),
        };
        match open() {
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&self.fd, name, Mode::from(0o700)) {
                    // Another process made it first: it is checked like any other.
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(Error::CreateDir {
                            path: self.path.join(name),
                            source: e.into(),
                        })
                    }
                }
                sync_dir(&self.fd, &self.path)?;
                open().map_err(failed)
            }
            opened => opened.map_err(failed),
        }
    }
}

/// Pushes the components of `path` onto the stack `pending`, first component on top.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let names = path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some("..".into()),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    });
    let names: Vec<OsString> = names.collect();
    pending.extend(names.into_iter().rev());
}

fn fstat(fd: &OwnedFd, path: &Path) -> Result<Stat> {
    rustix::fs::fstat(fd).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Syncs the directory `dir` (any descriptor of it, `O_PATH` too): a new entry in it
/// must survive a crash like the contents of the file it names.
fn sync_dir(dir: &OwnedFd, path: &Path) -> Result<()> {
    rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(rustix::fs::fsync)
    .map_err(|e| Error::Sync {
        path: path.to_path_buf(),
        source: e.into(),
    })
}
