//! Builds the sandbox's file system view inside its new mount namespace and pivots into it.
//!
//! The new root is a fresh tmpfs holding only what the spec names: the host's `/usr` (or an
//! unpacked image) read-only, a generated `/etc`, a fresh `/proc` with the sensitive files
//! masked, a minimal `/dev`, tmpfs mounts, and the user's bind mounts with the credential
//! files the runner found in them covered by empty ones. It ends read-only.
//!
//! What this module must never do: follow a symlink while walking a path it is about to
//! mount on or from (every component is opened `O_NOFOLLOW`, so a link planted in a
//! writable tree cannot redirect a mount onto the host), mount anything writable that the
//! spec did not ask for, or leave a mount without nosuid and nodev.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nanoclaw_spec::{proc_masks, Delivery, Root, SandboxSpec, SetupError};
use rustix::fs::{self, AtFlags, FileType, Mode, OFlags};
use rustix::mount::{self as mnt, MountFlags, MountPropagationFlags, UnmountFlags};

/// Where the new root is assembled before the pivot. Sources are opened before this path is
/// covered, so a mount source below it still works.
const STAGING: &str = "/tmp";

/// Top-level entries of the host that a `Root::Host` sandbox sees (read-only) besides /usr.
const HOST_TOP_LEVEL: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Host files and directories under /etc that a `Root::Host` sandbox gets read-only. Files
/// are copied into the (then read-only) root, which costs less than a bind mount each;
/// directories are bound.
const HOST_ETC: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ssl/certs",
    "ssl/openssl.cnf",
    "alternatives",
    "localtime",
];

/// Device nodes bound from the host's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

const SETUP: &str = "prepare the root file system";

/// The flags of every mount the sandbox may only read: no writes, no set-id, no device
/// nodes, no execution.
const SEALED: MountFlags = MountFlags::RDONLY
    .union(MountFlags::NOSUID)
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);
/// The flags of every writable mount: no set-id, no device nodes, no execution.
const SCRATCH: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// What the Landlock layer needs to know about the finished tree.
#[derive(Debug, Default)]
pub struct Layout {
    /// Read-only trees the command may read and execute from.
    pub read_exec: Vec<PathBuf>,
    /// Writable trees (read and write, never execute).
    pub read_write: Vec<PathBuf>,
}

fn fail(step: &str, path: impl AsRef<Path>, err: impl Into<std::io::Error>) -> SetupError {
    let err: std::io::Error = err.into();
    SetupError {
        step: step.to_string(),
        path: Some(path.as_ref().display().to_string()),
        errno: err.raw_os_error(),
        message: err.to_string(),
    }
}

fn invalid(step: &str, path: impl AsRef<Path>, message: impl Into<String>) -> SetupError {
    SetupError {
        step: step.to_string(),
        path: Some(path.as_ref().display().to_string()),
        errno: None,
        message: message.into(),
    }
}

/// The `/proc/self/fd/N` path through which mount(2) reaches exactly the file behind `fd`.
fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens a host path as a mount source, once, without following a symlink anywhere in it:
/// the runner made the path canonical, so a link found now was planted (or swapped in by a
/// concurrent sandbox) and is refused. Everything after uses the descriptor.
fn open_source(path: &Path) -> Result<OwnedFd, SetupError> {
    nanoclaw_overlay::open_source(path).map_err(|e| SetupError {
        step: "open mount source".into(),
        path: Some(e.path.display().to_string()),
        errno: e.errno,
        message: e.message,
    })
}

/// What to create at the end of a walk when it is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    Dir,
    File,
}

/// Opens `rel` (absolute or relative) beneath `dir` with `O_PATH`, one component at a time,
/// never following a symlink. Missing directories on the way are created when `create` is
/// set, and so is the final component, as a directory or an empty file.
///
/// Every component but the last is opened `O_DIRECTORY | O_NOFOLLOW`, which the kernel
/// refuses for a symlink (ENOTDIR), so only a last component that will be mounted on
/// needs a `stat`.
fn walk(dir: &OwnedFd, rel: &Path, create: Option<Create>) -> Result<OwnedFd, SetupError> {
    const STEP: &str = "resolve path";
    let names: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(Ok(name)),
            Component::RootDir | Component::CurDir => None,
            Component::ParentDir | Component::Prefix(_) => {
                Some(Err(invalid(STEP, rel, "must not contain '..'")))
            }
        })
        .collect::<Result<_, _>>()?;
    let mut current = None;
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let kind = if last {
            create
        } else {
            create.map(|_| Create::Dir)
        };
        let mut flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if kind == Some(Create::Dir) || !last {
            flags |= OFlags::DIRECTORY;
        }
        let parent = current.as_ref().unwrap_or(dir);
        let opened = match fs::openat(parent, *name, flags, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if kind.is_some() => {
                create_entry(parent, name, kind).map_err(|e| fail("create mount point", rel, e))?;
                fs::openat(parent, *name, flags, Mode::empty())
            }
            other => other,
        }
        .map_err(|e| fail(STEP, rel, e))?;
        if last && kind == Some(Create::File) {
            let stat = fs::fstat(&opened).map_err(|e| fail(STEP, rel, e))?;
            if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
                return Err(invalid(
                    STEP,
                    rel,
                    "contains a symlink; refusing to follow it",
                ));
            }
        }
        current = Some(opened);
    }
    match current {
        Some(fd) => Ok(fd),
        None => fs::openat(
            dir,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail(STEP, rel, e)),
    }
}

fn create_entry(parent: &OwnedFd, name: &OsStr, kind: Option<Create>) -> rustix::io::Result<()> {
    match kind {
        Some(Create::Dir) => fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)),
        _ => fs::openat(
            parent,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
    }
}

/// The mount flags a bind mount must keep: the kernel refuses to clear nosuid, nodev,
/// noexec or the atime flags that a more privileged namespace set on the source.
fn locked_flags(source: &OwnedFd) -> Result<MountFlags, SetupError> {
    let vfs = fs::fstatvfs(source).map_err(|e| fail("stat mount source", fd_path(source), e))?;
    let mask = MountFlags::NOSUID.bits()
        | MountFlags::NODEV.bits()
        | MountFlags::NOEXEC.bits()
        | MountFlags::NOATIME.bits()
        | MountFlags::NODIRATIME.bits()
        | MountFlags::RELATIME.bits()
        | MountFlags::RDONLY.bits();
    Ok(MountFlags::from_bits_truncate(
        vfs.f_flag.bits() as u32 & mask,
    ))
}

/// Assembles the tree under the staging root.
struct Builder {
    root: OwnedFd,
    layout: Layout,
}

impl Builder {
    /// Binds `source` onto `dst` (a path inside the sandbox), read-only unless `writable`,
    /// always nosuid and nodev; writable binds are also noexec.
    fn bind(&mut self, source: &OwnedFd, dst: &Path, writable: bool) -> Result<(), SetupError> {
        let stat = fs::fstat(source).map_err(|e| fail("stat mount source", dst, e))?;
        let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        let create = if is_dir { Create::Dir } else { Create::File };
        let target = walk(&self.root, dst, Some(create))?;
        mnt::mount_bind(fd_path(source), fd_path(&target))
            .map_err(|e| fail("bind mount", dst, e))?;
        let mut flags = locked_flags(source)? | MountFlags::NOSUID | MountFlags::NODEV;
        if writable {
            flags |= MountFlags::NOEXEC;
            flags.remove(MountFlags::RDONLY);
            self.layout.read_write.push(dst.to_path_buf());
        } else {
            flags |= MountFlags::RDONLY;
            self.layout.read_exec.push(dst.to_path_buf());
        }
        self.remount(dst, flags, "make bind mount read-only")
    }

    /// Sets `flags` on the bind mount at `dst`, reopened: a descriptor taken before the
    /// mount names the directory underneath it.
    fn remount(&self, dst: &Path, flags: MountFlags, step: &str) -> Result<(), SetupError> {
        let mounted = walk(&self.root, dst, None)?;
        mnt::mount_remount(fd_path(&mounted), flags | MountFlags::BIND, "")
            .map_err(|e| fail(step, dst, e))
    }

    /// Covers a credential file the runner's scan found with an empty read-only file (a
    /// bind of /dev/null) and a credential directory with an empty read-only tmpfs. The
    /// walk creates nothing and follows no symlink: a path that vanished or became a link
    /// since the scan is refused, since what it held may now lie elsewhere in the mount.
    fn hide(&mut self, path: &Path, dev_null: &OwnedFd) -> Result<(), SetupError> {
        const STEP: &str = "hide credential";
        let target = match walk(&self.root, path, None) {
            Ok(target) => target,
            // The sandbox user cannot reach it either.
            Err(e) if e.errno == Some(libc::EACCES) => return Ok(()),
            Err(e) => {
                return Err(invalid(
                    STEP,
                    path,
                    format!("changed since the credential scan: {}", e.message),
                ))
            }
        };
        let stat = fs::fstat(&target).map_err(|e| fail(STEP, path, e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => Err(invalid(
                STEP,
                path,
                "became a symlink since the credential scan",
            )),
            FileType::Directory => mnt::mount(
                "tmpfs",
                fd_path(&target),
                "tmpfs",
                SEALED,
                Some(c"size=0,mode=0555"),
            )
            .map_err(|e| fail(STEP, path, e)),
            _ => {
                mnt::mount_bind(fd_path(dev_null), fd_path(&target))
                    .map_err(|e| fail(STEP, path, e))?;
                // Not nodev: that would make the file unreadable instead of empty, and it is
                // the null device, which hands out nothing.
                let flags = locked_flags(dev_null)?
                    | MountFlags::RDONLY
                    | MountFlags::NOSUID
                    | MountFlags::NOEXEC;
                self.remount(path, flags, STEP)
            }
        }
    }

    fn tmpfs(&mut self, dst: &Path, options: &str, flags: MountFlags) -> Result<(), SetupError> {
        let target = walk(&self.root, dst, Some(Create::Dir))?;
        mnt::mount(
            "tmpfs",
            fd_path(&target),
            "tmpfs",
            flags,
            Some(c_string(options)?.as_c_str()),
        )
        .map_err(|e| fail("mount tmpfs", dst, e))
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> Result<(), SetupError> {
        let parent = link.parent().unwrap_or(Path::new("/"));
        let name = link
            .file_name()
            .ok_or_else(|| invalid("create symlink", link, "has no name"))?;
        let dir = walk(&self.root, parent, Some(Create::Dir))?;
        fs::symlinkat(target, &dir, name).map_err(|e| fail("create symlink", link, e))
    }

    fn write_file(&mut self, path: &Path, contents: &[u8], mode: u32) -> Result<(), SetupError> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let name = path
            .file_name()
            .ok_or_else(|| invalid("write file", path, "has no name"))?;
        // An O_PATH descriptor serves as the directory of an openat.
        let dir = walk(&self.root, parent, Some(Create::Dir))?;
        let file = fs::openat(
            &dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| fail("write file", path, e))?;
        std::io::Write::write_all(&mut std::fs::File::from(file), contents)
            .map_err(|e| fail("write file", path, e))
    }
}

fn c_string(s: &str) -> Result<std::ffi::CString, SetupError> {
    std::ffi::CString::new(s).map_err(|_| invalid(SETUP, s, "contains a NUL byte"))
}

/// Sources opened on the host side of the staging mount, in the order they are used.
pub struct Sources {
    /// (path inside the sandbox, source) for the read-only base: /usr and friends, or the image.
    base: Vec<(PathBuf, OwnedFd)>,
    /// (link path inside, link target) for top-level symlinks.
    links: Vec<(PathBuf, PathBuf)>,
    /// Whether the sandbox gets a generated /etc (the host root) or the image's own.
    generated_etc: bool,
    /// Small host files copied in: (path inside, contents).
    copies: Vec<(PathBuf, Vec<u8>)>,
    devices: Vec<(&'static str, OwnedFd)>,
    dev_null: OwnedFd,
    user: Vec<(OwnedFd, PathBuf, bool)>,
    /// Read-only `.git` inside writable mounts: (source, path inside).
    git: Vec<(OwnedFd, PathBuf)>,
}

fn open_host_base(sources: &mut Sources) -> Result<(), SetupError> {
    sources
        .base
        .push(("/usr".into(), open_source(Path::new("/usr"))?));
    let top = HOST_TOP_LEVEL.iter().map(|name| Path::new("/").join(name));
    for host in top.chain(HOST_ETC.iter().map(|name| Path::new("/etc").join(name))) {
        open_host_entry(sources, host)?;
    }
    Ok(())
}

/// A host entry the sandbox sees as it is: a symlink recreated, a file copied, a
/// directory bound; absent is fine.
fn open_host_entry(sources: &mut Sources, host: PathBuf) -> Result<(), SetupError> {
    match std::fs::symlink_metadata(&host) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = std::fs::read_link(&host).map_err(|e| fail(SETUP, &host, e))?;
            sources.links.push((host, target));
        }
        Ok(meta) if meta.is_file() => {
            let contents = std::fs::read(&host).map_err(|e| fail(SETUP, &host, e))?;
            sources.copies.push((host, contents));
        }
        Ok(meta) if meta.is_dir() => {
            let fd = open_source(&host)?;
            sources.base.push((host, fd));
        }
        _ => {}
    }
    Ok(())
}

/// An image root: every top-level entry but the ones the sandbox provides itself.
fn open_image_base(dir: &Path, sources: &mut Sources) -> Result<(), SetupError> {
    const STEP: &str = "open rootfs";
    let root = open_source(dir)?;
    let listing = fs::openat(
        &root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(STEP, dir, e))?;
    let entries = fs::Dir::read_from(&listing).map_err(|e| fail(STEP, dir, e))?;
    sources.generated_etc = true;
    for entry in entries {
        let entry = entry.map_err(|e| fail(STEP, dir, e))?;
        let name = entry.file_name().to_bytes();
        if matches!(name, b"." | b".." | b"proc" | b"dev" | b"tmp" | b"sys") {
            continue;
        }
        let inside = Path::new("/").join(OsStr::from_bytes(name));
        let stat = fs::statat(&root, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail(STEP, &inside, e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => {
                let target = fs::readlinkat(&root, entry.file_name(), Vec::new())
                    .map_err(|e| fail(STEP, &inside, e))?;
                sources
                    .links
                    .push((inside, PathBuf::from(OsStr::from_bytes(target.as_bytes()))));
            }
            FileType::Directory | FileType::RegularFile => {
                if name == b"etc" {
                    sources.generated_etc = false;
                }
                let fd = fs::openat(
                    &root,
                    entry.file_name(),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fail(STEP, &inside, e))?;
                sources.base.push((inside, fd));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Opens every mount source while the process still has the caller's identity (so it can
/// traverse the directories the caller can) and before the staging tmpfs covers any path.
pub fn open_sources(spec: &SandboxSpec) -> Result<Sources, SetupError> {
    mnt::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| fail("make mounts private", "/", e))?;
    let mut sources = Sources {
        base: Vec::new(),
        links: Vec::new(),
        generated_etc: true,
        copies: Vec::new(),
        devices: Vec::new(),
        dev_null: open_source(Path::new("/dev/null"))?,
        user: Vec::new(),
        git: Vec::new(),
    };
    match &spec.root {
        Root::Host => open_host_base(&mut sources)?,
        Root::Rootfs(dir) => open_image_base(dir, &mut sources)?,
        Root::Image(image) => {
            return Err(invalid(
                SETUP,
                image,
                "an image root needs a container backend",
            ))
        }
    }
    for name in DEVICES {
        sources
            .devices
            .push((name, open_source(&Path::new("/dev").join(name))?));
    }
    if let Some(proxy) = &spec.egress_proxy {
        // Read-only is no obstacle: connecting to a socket never writes the file system.
        sources.user.push((
            open_source(&proxy.socket)?,
            PathBuf::from(nanoclaw_spec::EgressProxy::SOCKET_INSIDE),
            false,
        ));
    }
    let mut mounts: Vec<_> = spec.mounts.iter().collect();
    mounts.sort_by_key(|m| m.dst.components().count());
    for mount in mounts {
        let source = open_source(&mount.src)?;
        // A writable repository keeps its .git read-only: hooks and config there run later
        // on the host, outside any sandbox. Opened beneath the source's descriptor, never
        // by name again.
        if mount.writable {
            if let Some(git) = open_git(&source, &mount.src)? {
                sources.git.push((git, mount.dst.join(".git")));
            }
        }
        sources
            .user
            .push((source, mount.dst.clone(), mount.writable));
    }
    Ok(sources)
}

/// The `.git` entry directly beneath an opened writable source, if there is one; a `.git`
/// that is a symlink is refused (binding it read-only would follow it).
fn open_git(source: &OwnedFd, src: &Path) -> Result<Option<OwnedFd>, SetupError> {
    const STEP: &str = "open mount source";
    let path = src.join(".git");
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let git = match fs::openat(source, ".git", flags, Mode::empty()) {
        Ok(git) => git,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(fail(STEP, &path, e)),
    };
    let stat = fs::fstat(&git).map_err(|e| fail(STEP, &path, e))?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
        return Err(invalid(
            STEP,
            &path,
            "is a symlink; name its target instead",
        ));
    }
    Ok(Some(git))
}

fn passwd(spec: &SandboxSpec) -> (String, String) {
    let (uid, gid) = (spec.user.uid, spec.user.gid);
    let mut passwd = String::from("root:x:0:0:root:/root:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    if uid != 0 {
        passwd.push_str(&format!(
            "sandbox:x:{uid}:{gid}:nanoclaw sandbox:/tmp:/usr/sbin/nologin\n"
        ));
    }
    if gid != 0 {
        group.push_str(&format!("sandbox:x:{gid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    (passwd, group)
}

fn generate_etc(builder: &mut Builder, spec: &SandboxSpec) -> Result<(), SetupError> {
    let (passwd, group) = passwd(spec);
    let files: [(&str, &str); 5] = [
        ("/etc/passwd", &passwd),
        ("/etc/group", &group),
        ("/etc/hostname", "nanoclaw\n"),
        (
            "/etc/hosts",
            "127.0.0.1\tlocalhost nanoclaw\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        (
            "/etc/nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n",
        ),
    ];
    for (path, contents) in files {
        builder.write_file(Path::new(path), contents.as_bytes(), 0o644)?;
    }
    Ok(())
}

fn mount_proc(builder: &mut Builder, dev_null: &OwnedFd) -> Result<(), SetupError> {
    let target = walk(&builder.root, Path::new("/proc"), Some(Create::Dir))?;
    mnt::mount("proc", fd_path(&target), "proc", SCRATCH, None)
        .map_err(|e| fail("mount proc", "/proc", e))?;
    for name in proc_masks::MASKED_FILES {
        let path = Path::new(proc_masks::PROC).join(name);
        if let Ok(target) = walk(&builder.root, &path, None) {
            mnt::mount_bind(fd_path(dev_null), fd_path(&target))
                .map_err(|e| fail("mask", &path, e))?;
        }
    }
    for name in proc_masks::MASKED_DIRS {
        let path = Path::new(proc_masks::PROC).join(name);
        if walk(&builder.root, &path, None).is_ok() {
            builder.tmpfs(&path, "size=0,mode=0555", SEALED)?;
        }
    }
    for name in proc_masks::READ_ONLY {
        let path = Path::new(proc_masks::PROC).join(name);
        if let Ok(dir) = walk(&builder.root, &path, None) {
            mnt::mount_bind(fd_path(&dir), fd_path(&dir)).map_err(|e| fail("protect", &path, e))?;
            builder.remount(&path, SEALED, "protect")?;
        }
    }
    Ok(())
}

fn mount_dev(builder: &mut Builder, devices: &[(&'static str, OwnedFd)]) -> Result<(), SetupError> {
    let dev = Path::new("/dev");
    let flags = MountFlags::NOSUID | MountFlags::NOEXEC;
    builder.tmpfs(dev, "size=64k,mode=0755", flags)?;
    for (name, source) in devices {
        let path = dev.join(name);
        let target = walk(&builder.root, &path, Some(Create::File))?;
        mnt::mount_bind(fd_path(source), fd_path(&target))
            .map_err(|e| fail("bind device", &path, e))?;
    }
    let pts = walk(&builder.root, &dev.join("pts"), Some(Create::Dir))?;
    mnt::mount(
        "devpts",
        fd_path(&pts),
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| fail("mount devpts", "/dev/pts", e))?;
    builder.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))?;
    builder.symlink(Path::new("/proc/self/fd"), &dev.join("fd"))?;
    builder.symlink(Path::new("/proc/self/fd/0"), &dev.join("stdin"))?;
    builder.symlink(Path::new("/proc/self/fd/1"), &dev.join("stdout"))?;
    builder.symlink(Path::new("/proc/self/fd/2"), &dev.join("stderr"))?;
    builder.tmpfs(&dev.join("shm"), "size=64m,mode=1777", SCRATCH)?;
    builder.layout.read_write.push(dev.join("shm"));
    Ok(())
}

/// Builds the sandbox root for `spec` from `sources` and pivots into it. On return the
/// process's `/` is the new, read-only root and nothing of the host is reachable but what
/// was mounted. Runs as the sandbox user (which owns what it creates) with the namespace's
/// capabilities.
pub fn assemble(spec: &SandboxSpec, sources: Sources) -> Result<Layout, SetupError> {
    let staging = fs::open(
        STAGING,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(SETUP, STAGING, e))?;
    mnt::mount(
        "tmpfs",
        fd_path(&staging),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"size=1m,mode=0755"),
    )
    .map_err(|e| fail("mount root tmpfs", STAGING, e))?;
    let root = fs::open(
        STAGING,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(SETUP, STAGING, e))?;
    let mut builder = Builder {
        root,
        layout: Layout::default(),
    };

    for (inside, source) in &sources.base {
        builder.bind(source, inside, false)?;
    }
    for (inside, target) in &sources.links {
        builder.symlink(target, inside)?;
    }
    if sources.generated_etc {
        generate_etc(&mut builder, spec)?;
    }
    for (inside, contents) in &sources.copies {
        builder.write_file(inside, contents, 0o644)?;
    }
    mount_proc(&mut builder, &sources.dev_null)?;
    mount_dev(&mut builder, &sources.devices)?;
    for tmpfs in &spec.tmpfs {
        let options = format!("size={},mode=1777", tmpfs.size_bytes);
        builder.tmpfs(&tmpfs.dst, &options, SCRATCH)?;
        builder.layout.read_write.push(tmpfs.dst.clone());
    }
    deliver_files(&mut builder, spec)?;
    for (source, dst, writable) in &sources.user {
        builder.bind(source, dst, *writable)?;
    }
    for (source, dst) in &sources.git {
        builder.bind(source, dst, false)?;
    }
    for path in &spec.hidden {
        builder.hide(path, &sources.dev_null)?;
    }

    pivot(&builder.root)?;
    mnt::mount_remount("/dev", SEALED, "").map_err(|e| fail("make read-only", "/dev", e))?;
    let root = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    mnt::mount_remount("/", root, "").map_err(|e| fail("make root read-only", "/", e))?;
    Ok(builder.layout)
}

/// Puts the `file` secrets (mode 0400) and the CA bundle (0444) on fresh tmpfs mounts that
/// only this sandbox has, owned by the sandbox user (who is making them), then makes each
/// mount read-only. The bytes come from the spec pipe; no host file ever holds them.
fn deliver_files(builder: &mut Builder, spec: &SandboxSpec) -> Result<(), SetupError> {
    let files: Vec<_> = spec
        .secrets
        .iter()
        .filter(|s| s.delivery == Delivery::File)
        .collect();
    let fresh = |builder: &mut Builder, dir: &Path, bytes: usize| -> Result<(), SetupError> {
        let options = format!("size={},nr_inodes=1024,mode=0700", bytes + (64 << 10));
        builder.tmpfs(dir, &options, SCRATCH)?;
        builder.layout.read_exec.push(dir.to_path_buf());
        Ok(())
    };
    let seal = |builder: &mut Builder, dir: &Path, mode: u32| -> Result<(), SetupError> {
        let mounted = walk(&builder.root, dir, None)?;
        fs::chmod(fd_path(&mounted), Mode::from_raw_mode(mode))
            .map_err(|e| fail("seal secrets", dir, e))?;
        builder.remount(dir, SEALED, "seal secrets")
    };
    if !files.is_empty() {
        let dir = Path::new(nanoclaw_spec::SECRETS_DIR);
        let total = files.iter().map(|s| s.value.expose().len() + 4096).sum();
        fresh(builder, dir, total)?;
        for secret in &files {
            builder.write_file(&secret.file_inside(), secret.value.expose(), 0o400)?;
        }
        seal(builder, dir, 0o500)?;
    }
    if let Some(bundle) = &spec.ca_bundle {
        let path = Path::new(nanoclaw_spec::CA_BUNDLE_INSIDE);
        let dir = path.parent().unwrap_or(Path::new("/run"));
        fresh(builder, dir, bundle.len())?;
        builder.write_file(path, bundle.as_bytes(), 0o444)?;
        seal(builder, dir, 0o555)?;
    }
    Ok(())
}

/// Makes `root` the process's `/` and detaches the old root entirely.
fn pivot(root: &OwnedFd) -> Result<(), SetupError> {
    rustix::process::fchdir(root.as_fd()).map_err(|e| fail("enter new root", STAGING, e))?;
    // pivot_root(".", ".") stacks the old root on top of the new one at "/"; unmounting
    // "." then drops the old root without needing a directory for it.
    rustix::process::pivot_root(".", ".").map_err(|e| fail("pivot_root", STAGING, e))?;
    mnt::unmount(".", UnmountFlags::DETACH).map_err(|e| fail("detach old root", "/", e))?;
    rustix::process::chdir("/").map_err(|e| fail("enter new root", "/", e))
}
