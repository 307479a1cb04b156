//! Applies a finished run's upper layer to the host source, and refuses what could act on
//! the host later.
//!
//! Refused, never written: any path with a `.git` component (compared without case: a
//! case-insensitive file system has no other name for it), a file named `HEAD` (with
//! `objects/` and `refs/` beside it any directory is a repository to git), any change
//! inside a directory that already is one (a bare repository), a symlink that is absolute
//! or leads out of the mount, device nodes, fifos and sockets, and files with a set-id bit.
//! Deletions keep any `.git` they would remove.
//!
//! What reaches the host is bounded by the run's write budget as the apply writes it, not
//! as the area held it: every regular file counts its full size (a sparse file takes its
//! holes on the host) and each hard link name counts as its own file, and every entry
//! written counts one file. Entries past the budget are refused, in walk order.
//!
//! A file takes its place whole: it is written unnamed (`O_TMPFILE`) in its directory and
//! linked in once complete, so a runner killed mid-apply leaves no partial file (on a file
//! system without `O_TMPFILE`, a named temporary is the fallback).
//!
//! This module must never follow a symlink, on either side: the upper layer is walked and
//! the host opened one component at a time with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_XDEV` from the source's descriptor, so a link or a mount found in the source
//! (say, made by a concurrent run) stops the change instead of redirecting it. Every `*at()`
//! call on the host names one component beneath a descriptor so opened.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nanoclaw_spec::{AppliedChange, RefusedChange, WriteReport};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::source::fd_path;
use crate::Budget;

/// The prefix of the temporary names a symlink, or a complete file replacing another (or
/// any file, where the host has no `O_TMPFILE`), has for a moment before taking its place.
const TEMPORARY: &str = ".nanoclaw-apply-";

fn open_beneath(dir: &OwnedFd, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        dir,
        rel,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV,
    )
}

fn open_dir(dir: &OwnedFd, rel: &Path) -> Result<OwnedFd, Errno> {
    open_beneath(dir, rel, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// Why a path must not reach the host, if it must not.
pub fn refusal_by_name(rel: &Path) -> Option<&'static str> {
    if rel
        .components()
        .any(|c| c.as_os_str().eq_ignore_ascii_case(".git"))
    {
        return Some("a .git entry: git on the host would run the hooks and config it holds");
    }
    if rel
        .file_name()
        .is_some_and(|n| n.eq_ignore_ascii_case("HEAD"))
    {
        return Some("a file named HEAD makes its directory a repository to git on the host");
    }
    None
}

/// Why a symlink at `rel` pointing to `target` must not reach the host, if it must not.
///
/// A relative target may climb (`..`) only at its start, and no higher than the mount: a
/// `..` after a name could climb out through another link (`d/z -> up/..` with
/// `d/up -> ..`). Every link that reaches the host stays in the mount from where it is, so
/// a chain of them does too.
fn refusal_of_link(rel: &Path, target: &Path) -> Option<&'static str> {
    if target.is_absolute() {
        return Some("an absolute symlink leads out of the mount");
    }
    let mut depth = rel.components().count() as i64 - 1;
    let mut descended = false;
    for part in target.components() {
        match part {
            Component::ParentDir if descended => {
                return Some(
                    "a symlink climbs (..) after a name, which could lead out of the mount",
                )
            }
            Component::ParentDir => depth -= 1,
            Component::Normal(name) if name.eq_ignore_ascii_case(".git") => {
                return Some("a symlink into a .git entry")
            }
            Component::Normal(_) => descended = true,
            _ => {}
        }
        if depth < 0 {
            return Some("a symlink leads out of the mount");
        }
    }
    None
}

/// What the apply may still write to the host, over all of a run's writable mounts.
#[derive(Debug)]
pub struct Allowance {
    bytes: u64,
    files: u64,
}

impl Allowance {
    pub fn new(budget: &Budget) -> Allowance {
        Allowance {
            bytes: budget.bytes,
            files: budget.files,
        }
    }
}

/// The reason an entry past the budget is refused.
const OVER_BUDGET: &str =
    "over the write budget when applied: a file counts its full size, each hard link its own";

/// Collects the report, keeping at most `WriteReport::LISTED` entries of each list, and
/// spends the allowance.
struct Reporter<'a> {
    report: &'a mut WriteReport,
    root: &'a Path,
    allowance: &'a mut Allowance,
}

impl Reporter<'_> {
    /// Takes one entry of `bytes` from the allowance, or refuses `rel` if it does not fit.
    fn afford(&mut self, rel: &Path, bytes: u64) -> bool {
        let allowance = &mut *self.allowance;
        if allowance.files == 0 || bytes > allowance.bytes {
            self.report.budget_reached = true;
            self.refused(rel, OVER_BUDGET);
            return false;
        }
        allowance.files -= 1;
        allowance.bytes -= bytes;
        true
    }

    fn applied(&mut self, rel: &Path, kind: &str, bytes: u64) {
        self.report.applied_count += 1;
        if self.report.applied.len() < WriteReport::LISTED {
            self.report.applied.push(AppliedChange {
                path: self.root.join(rel).display().to_string(),
                kind: kind.into(),
                bytes,
            });
        }
    }

    fn refused(&mut self, rel: &Path, reason: impl Into<String>) {
        self.report.refused_count += 1;
        if self.report.refused.len() < WriteReport::LISTED {
            self.report.refused.push(RefusedChange {
                path: self.root.join(rel).display().to_string(),
                reason: reason.into(),
            });
        }
    }
}

/// Applies the upper layer at `upper` to the host source `source` (at `source_path`),
/// within what is left of `allowance`.
pub fn apply(
    upper: &Path,
    source: &OwnedFd,
    source_path: &Path,
    allowance: &mut Allowance,
    report: &mut WriteReport,
) {
    let mut out = Reporter {
        report,
        root: source_path,
        allowance,
    };
    let upper = match rustix::fs::open(
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            out.refused(Path::new(""), format!("the changes could not be read: {e}"));
            return;
        }
    };
    // Directories still to walk, relative to both roots; no descriptor is held per pending
    // directory, so a wide tree cannot exhaust them, and no recursion, so a deep one cannot
    // exhaust the stack.
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let (upper_dir, host_dir) = match (open_dir(&upper, &rel), open_dir(source, &rel)) {
            (Ok(u), Ok(h)) => (u, h),
            (_, Err(e)) | (Err(e), _) => {
                out.refused(&rel, format!("the directory changed on the host: {e}"));
                continue;
            }
        };
        if is_git_dir(&host_dir) || is_git_dir(&upper_dir) {
            out.refused(
                &rel,
                "inside a git directory (HEAD, objects, refs): git on the host would run its hooks and config",
            );
            continue;
        }
        let names = match list(&upper_dir) {
            Ok(names) => names,
            Err(e) => {
                out.refused(&rel, format!("the changes could not be read: {e}"));
                continue;
            }
        };
        for name in names {
            let child = rel.join(&name);
            if let Some(reason) = refusal_by_name(&child) {
                out.refused(&child, reason);
                continue;
            }
            match apply_entry(&upper_dir, &host_dir, &name, &child, &mut out) {
                Ok(Some(dir)) => pending.push(dir),
                Ok(None) => {}
                Err(e) => out.refused(&child, format!("could not be applied: {e}")),
            }
        }
    }
}

/// Whether `dir` is a repository to git by itself (a bare one, or a `.git` by another
/// name): it holds `HEAD`, `objects` and `refs`.
fn is_git_dir(dir: &OwnedFd) -> bool {
    ["HEAD", "objects", "refs"]
        .iter()
        .all(|name| rustix::fs::statat(dir, *name, AtFlags::SYMLINK_NOFOLLOW).is_ok())
}

/// The names in a directory, without `.` and `..`.
fn list(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    let listing = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&listing)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from(OsStr::from_bytes(&name)));
        }
    }
    Ok(names)
}

/// Applies one entry of an upper directory; returns the directory to walk next, if any.
fn apply_entry(
    upper_dir: &OwnedFd,
    host_dir: &OwnedFd,
    name: &OsStr,
    rel: &Path,
    out: &mut Reporter<'_>,
) -> Result<Option<PathBuf>, Errno> {
    let stat = rustix::fs::statat(upper_dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let host = rustix::fs::statat(host_dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
    let host_is_dir = host
        .as_ref()
        .is_some_and(|h| FileType::from_raw_mode(h.st_mode) == FileType::Directory);
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::CharacterDevice if stat.st_rdev == 0 => {
            // A whiteout: the tool deleted this.
            if host.is_some() && out.afford(rel, 0) {
                remove(host_dir, name, rel, out)?;
                out.applied(rel, "deleted", 0);
            }
            Ok(None)
        }
        FileType::Directory => {
            // A new directory is an entry; what it holds goes with it if it does not fit.
            if !host_is_dir && !out.afford(rel, 0) {
                return Ok(None);
            }
            if host.is_some() && !host_is_dir {
                remove(host_dir, name, rel, out)?;
            }
            let opaque = is_opaque(upper_dir, name);
            match host {
                Some(host) if host_is_dir => {
                    let dir = open_dir(host_dir, Path::new(name))?;
                    if opaque {
                        // Deleted and made again: what the host had in it goes (but a .git).
                        for child in list(&dir)? {
                            let child_rel = rel.join(&child);
                            if let Err(e) = remove(&dir, &child, &child_rel, out) {
                                out.refused(&child_rel, format!("could not be deleted: {e}"));
                            }
                        }
                    }
                    // The permission bits as the tool left them; the host's own set-id and
                    // sticky bits stay (a copied-up directory shows them, the tool cannot
                    // add them).
                    if (host.st_mode ^ stat.st_mode) & 0o777 != 0 {
                        let mode = (host.st_mode & 0o7000) | (stat.st_mode & 0o777);
                        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))?;
                    }
                }
                _ => {
                    rustix::fs::mkdirat(host_dir, name, Mode::from_raw_mode(0o700))?;
                    let dir = open_dir(host_dir, Path::new(name))?;
                    own(&dir, &stat)?;
                    out.applied(rel, "dir", 0);
                }
            }
            Ok(Some(rel.to_path_buf()))
        }
        FileType::RegularFile => {
            if stat.st_mode & 0o6000 != 0 {
                out.refused(rel, "a set-id bit");
                return Ok(None);
            }
            let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
            if !out.afford(rel, size) {
                return Ok(None);
            }
            if host_is_dir {
                remove(host_dir, name, rel, out)?;
            }
            let bytes = copy_file(upper_dir, host_dir, name, &stat, size)?;
            out.applied(rel, "file", bytes);
            Ok(None)
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(upper_dir, name, Vec::new())?;
            let target = Path::new(OsStr::from_bytes(target.as_bytes()));
            if let Some(reason) = refusal_of_link(rel, target) {
                out.refused(rel, reason);
                return Ok(None);
            }
            if !out.afford(rel, target.as_os_str().len() as u64) {
                return Ok(None);
            }
            if host_is_dir {
                remove(host_dir, name, rel, out)?;
            }
            let temporary = temporary_name();
            rustix::fs::symlinkat(target, host_dir, &temporary)?;
            let placed = rustix::fs::chownat(
                host_dir,
                &temporary,
                Some(rustix::fs::Uid::from_raw(stat.st_uid)),
                Some(rustix::fs::Gid::from_raw(stat.st_gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .and_then(|()| rustix::fs::renameat(host_dir, &temporary, host_dir, name));
            if let Err(e) = placed {
                let _ = rustix::fs::unlinkat(host_dir, &temporary, AtFlags::empty());
                return Err(e);
            }
            out.applied(rel, "symlink", 0);
            Ok(None)
        }
        _ => {
            out.refused(rel, "a device node, fifo or socket");
            Ok(None)
        }
    }
}

/// Whether the upper directory `name` replaced the host's (overlayfs's opaque mark).
fn is_opaque(upper_dir: &OwnedFd, name: &OsStr) -> bool {
    let Ok(dir) = open_dir(upper_dir, Path::new(name)) else {
        return false;
    };
    let mut value = [0u8; 2];
    matches!(
        rustix::fs::fgetxattr(&dir, "trusted.overlay.opaque", &mut value),
        Ok(1) if value[0] == b'y'
    )
}

fn own(fd: &OwnedFd, stat: &Stat) -> Result<(), Errno> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(stat.st_uid)),
        Some(rustix::fs::Gid::from_raw(stat.st_gid)),
    )?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(stat.st_mode & 0o777))
}

fn temporary_name() -> OsString {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    OsString::from(format!("{TEMPORARY}{}-{n}", std::process::id()))
}

/// Writes the first `size` bytes of the upper file `name` to the host, with its owner, mode
/// and times, and only then gives it its name. Returns the bytes written.
fn copy_file(
    upper_dir: &OwnedFd,
    host_dir: &OwnedFd,
    name: &OsStr,
    stat: &Stat,
    size: u64,
) -> Result<u64, Errno> {
    let from = rustix::fs::openat(
        upper_dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let (to, temporary) = create_unnamed(host_dir)?;
    let written = (|| {
        let mut to = std::fs::File::from(to);
        // Never past the size the allowance was charged, whatever the file says now.
        let bytes = std::io::copy(
            &mut std::io::Read::take(std::fs::File::from(from), size),
            &mut to,
        )
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
        let to = OwnedFd::from(to);
        own(&to, stat)?;
        let times = rustix::fs::Timestamps {
            last_access: stat_time(stat.st_atime, stat.st_atime_nsec),
            last_modification: stat_time(stat.st_mtime, stat.st_mtime_nsec),
        };
        rustix::fs::futimens(&to, &times)?;
        place(host_dir, &to, temporary.as_deref(), name)?;
        Ok(bytes)
    })();
    if let (Err(_), Some(temporary)) = (&written, &temporary) {
        let _ = rustix::fs::unlinkat(host_dir, temporary, AtFlags::empty());
    }
    written
}

/// A new file in `dir` to write to: unnamed (`O_TMPFILE`), so that nothing partial is ever
/// seen or left behind; or, where the file system has no unnamed files, under a temporary
/// name (returned) that a killed runner leaves behind.
fn create_unnamed(dir: &OwnedFd) -> Result<(OwnedFd, Option<OsString>), Errno> {
    match rustix::fs::openat(
        dir,
        ".",
        OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => return Ok((fd, None)),
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {}
        Err(e) => return Err(e),
    }
    let temporary = temporary_name();
    let fd = rustix::fs::openat(
        dir,
        &temporary,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok((fd, Some(temporary)))
}

/// Gives the complete file `fd` (from `create_unnamed`) the name `name` in `dir`, replacing
/// what is there. An unnamed file is linked in directly where the name is free; over an
/// existing name it is linked under a temporary name and renamed over it (a runner killed
/// between the two leaves that complete copy under the temporary name).
fn place(
    dir: &OwnedFd,
    fd: &OwnedFd,
    temporary: Option<&OsStr>,
    name: &OsStr,
) -> Result<(), Errno> {
    if let Some(temporary) = temporary {
        return rustix::fs::renameat(dir, temporary, dir, name);
    }
    // The /proc link of the descriptor, followed: linking an unnamed file needs no
    // capability this way (AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH).
    let link = |to: &OsStr| {
        rustix::fs::linkat(
            rustix::fs::CWD,
            fd_path(fd),
            dir,
            to,
            AtFlags::SYMLINK_FOLLOW,
        )
    };
    match link(name) {
        Err(Errno::EXIST) => {}
        placed => return placed,
    }
    let temporary = temporary_name();
    link(&temporary)?;
    let renamed = rustix::fs::renameat(dir, &temporary, dir, name);
    if renamed.is_err() {
        let _ = rustix::fs::unlinkat(dir, &temporary, AtFlags::empty());
    }
    renamed
}

fn stat_time(seconds: i64, nanos: impl TryInto<i64>) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: seconds,
        tv_nsec: nanos.try_into().unwrap_or(0),
    }
}

/// Removes `name` from the host directory `dir`, a directory with everything in it, but
/// keeps any `.git` below (and the directories holding one), reporting it.
fn remove(dir: &OwnedFd, name: &OsStr, rel: &Path, out: &mut Reporter<'_>) -> Result<(), Errno> {
    if name.eq_ignore_ascii_case(".git") {
        out.refused(rel, "deleting a .git entry");
        return Err(Errno::NOTEMPTY);
    }
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    // Depth-first with an explicit stack of paths below `name`.
    let top = PathBuf::from(name);
    let mut stack = vec![(top.clone(), false)];
    let mut kept = false;
    while let Some((path, listed)) = stack.pop() {
        if listed {
            // One level at a time: the parent opened without following a symlink, then
            // its one name removed, so a link swapped in on the way redirects nothing.
            let (Some(parent), Some(last)) = (path.parent(), path.file_name()) else {
                return Err(Errno::INVAL);
            };
            let parent = open_dir(dir, parent)?;
            match rustix::fs::unlinkat(&parent, last, AtFlags::REMOVEDIR) {
                Ok(()) => {}
                Err(Errno::NOTEMPTY) if kept => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        let sub = open_dir(dir, &path)?;
        stack.push((path.clone(), true));
        for child in list(&sub)? {
            let child_path = path.join(&child);
            if child.eq_ignore_ascii_case(".git") {
                kept = true;
                out.refused(
                    &rel.join(child_path.strip_prefix(&top).unwrap_or(&child_path)),
                    "deleting a .git entry (kept)",
                );
                continue;
            }
            let child_stat = rustix::fs::statat(&sub, &child, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(child_stat.st_mode) == FileType::Directory {
                stack.push((child_path, false));
            } else {
                rustix::fs::unlinkat(&sub, &child, AtFlags::empty())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Applies the upper `upper` to `host` within `budget`.
    fn apply_to(upper: &Path, host: &Path, budget: Budget) -> WriteReport {
        let source = crate::open_source(&std::fs::canonicalize(host).unwrap()).unwrap();
        let mut report = WriteReport::default();
        apply(
            upper,
            &source,
            host,
            &mut Allowance::new(&budget),
            &mut report,
        );
        report
    }

    /// The blocks the files below `dir` take, and the names there.
    fn used(dir: &Path) -> (u64, Vec<String>) {
        let mut blocks = 0;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            blocks += entry.metadata().unwrap().blocks() * 512;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        (blocks, names)
    }

    #[test]
    fn sparse_files_and_hard_links_are_applied_within_the_budget() {
        let (upper, host) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for i in 0..12 {
            let file = std::fs::File::create(upper.path().join(format!("sparse{i}"))).unwrap();
            file.set_len(100 << 20).unwrap();
        }
        std::fs::write(upper.path().join("real"), vec![7u8; 1 << 20]).unwrap();
        for i in 0..40 {
            std::fs::hard_link(
                upper.path().join("real"),
                upper.path().join(format!("link{i}")),
            )
            .unwrap();
        }
        let budget = Budget {
            bytes: 16 << 20,
            files: 1000,
        };
        let report = apply_to(upper.path(), host.path(), budget);
        let (bytes, names) = used(host.path());
        assert!(
            bytes <= budget.bytes + (64 << 10),
            "{bytes} bytes: {report:?}"
        );
        assert!(report.budget_reached, "{report:?}");
        assert!(report.refused_count >= 12 + 40 - 16, "{report:?}");
        assert!(report
            .refused
            .iter()
            .all(|r| r.reason.starts_with("over the write budget when applied")));
        assert!(!names.iter().any(|n| n.starts_with(TEMPORARY)), "{names:?}");
    }

    #[test]
    fn a_file_takes_its_place_whole_and_leaves_no_temporary() {
        let (upper, host) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(host.path().join("old"), "old").unwrap();
        std::fs::write(upper.path().join("old"), "new").unwrap();
        std::fs::write(upper.path().join("new"), "made").unwrap();
        let report = apply_to(
            upper.path(),
            host.path(),
            Budget {
                bytes: 1 << 20,
                files: 10,
            },
        );
        assert_eq!(report.applied_count, 2, "{report:?}");
        assert_eq!(
            std::fs::read_to_string(host.path().join("old")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(host.path().join("new")).unwrap(),
            "made"
        );
        let mut names = used(host.path()).1;
        names.sort();
        assert_eq!(names, ["new", "old"]);
    }

    #[test]
    fn no_more_entries_than_the_files_budget_are_applied() {
        let (upper, host) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for i in 0..50 {
            std::fs::create_dir(upper.path().join(format!("d{i}"))).unwrap();
        }
        let budget = Budget {
            bytes: 16 << 20,
            files: 10,
        };
        let report = apply_to(upper.path(), host.path(), budget);
        assert_eq!(report.applied_count, 10, "{report:?}");
        assert_eq!(report.refused_count, 40, "{report:?}");
        assert_eq!(used(host.path()).1.len(), 10);
    }

    #[test]
    fn a_deleted_tree_is_removed_one_level_at_a_time() {
        let (upper, host) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(host.path().join("t/a/b/c")).unwrap();
        std::fs::write(host.path().join("t/a/b/c/f"), "").unwrap();
        std::fs::create_dir_all(host.path().join("t/x/.git")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.path().join("t"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
        let report = apply_to(
            upper.path(),
            host.path(),
            Budget {
                bytes: 1 << 20,
                files: 10,
            },
        );
        assert!(!host.path().join("t/a").exists(), "{report:?}");
        assert!(host.path().join("t/x/.git").is_dir(), "{report:?}");
    }

    #[test]
    fn git_entries_and_links_out_are_refused_by_name() {
        assert!(refusal_by_name(Path::new("a/.git/config")).is_some());
        assert!(refusal_by_name(Path::new("a/.GIT")).is_some());
        assert!(refusal_by_name(Path::new("bare/HEAD")).is_some());
        assert!(refusal_by_name(Path::new("a/.gitignore")).is_none());
        assert!(refusal_of_link(Path::new("a/l"), Path::new("/etc")).is_some());
        assert!(refusal_of_link(Path::new("a/l"), Path::new("../../x")).is_some());
        assert!(refusal_of_link(Path::new("a/l"), Path::new("../x")).is_none());
        assert!(refusal_of_link(Path::new("l"), Path::new("b/../../x")).is_some());
        assert!(refusal_of_link(Path::new("l"), Path::new("sub/.git")).is_some());
        assert!(refusal_of_link(Path::new("d/z"), Path::new("up/..")).is_some());
        assert!(refusal_of_link(Path::new("d/e/z"), Path::new("../../a/b")).is_none());
    }
}
