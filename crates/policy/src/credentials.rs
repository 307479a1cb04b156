//! The runner's scan for credential files below every mount source (the list is
//! `nanoclaw_spec::credentials`): what it finds goes into `SandboxSpec::hidden`, which every
//! backend masks and the audit record names.
//!
//! The walk goes through directory descriptors and never follows a symlink, so a link in
//! the tree can neither lead it outside the source nor hide a directory from it. It is
//! bounded (entries, depth, hidden paths): a tree too large is refused, never half-scanned.
//! Besides names it reads content, bounded: files whose name could be a key's
//! (`nanoclaw_spec::credentials::sniff`) are opened and their first bytes (64, then at most
//! 64 KiB) checked for a private key; a file it cannot read so is hidden. When a hidden
//! regular file has more than one name, a second walk hides its other names (hard links).
//! This module must never write anything, never read anything but a regular file nor more
//! than `PRIVATE_KEY_HEAD_BYTES` of one, and never let a directory it could not read pass
//! as empty when the sandbox could still reach into it.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nanoclaw_spec::credentials::{
    could_start_a_key, credential_at_end, holds_private_key, sniff, unmaskable, Sniff,
    KEY_START_BYTES, PRIVATE_KEY_HEAD_BYTES,
};
use nanoclaw_spec::SandboxSpec;
use rustix::fs::{self, Access, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// The bounds of one run's scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Directory entries looked at, over all mounts.
    pub entries: u64,
    /// Directory levels below a mount source.
    pub depth: usize,
    /// Credential paths hidden, over all mounts (each is a mount in the sandbox).
    pub hidden: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            entries: 1_000_000,
            depth: 128,
            hidden: 1024,
        }
    }
}

/// What a scan looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scanned {
    pub entries: u64,
    pub hidden: usize,
}

/// Why a mount could not be scanned; the run is refused.
#[derive(Debug, thiserror::Error)]
// The path is quoted and escaped: a name planted in the tree must not reach the terminal as
// an escape sequence.
#[error("credential scan of {path:?}: {message}")]
pub struct ScanError {
    pub path: PathBuf,
    pub message: String,
}

fn refuse(path: &Path, message: impl Into<String>) -> ScanError {
    ScanError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

const NARROWER: &str = "mount a narrower directory (a policy mount may instead show its \
                        credentials: credentials = \"visible\", acknowledged)";

/// Scans every mount of `spec` whose credentials the policy does not show, and records
/// what it finds in `spec.hidden` (absolute paths inside the sandbox, sorted).
pub fn hide_credentials(spec: &mut SandboxSpec, limits: ScanLimits) -> Result<Scanned, ScanError> {
    let mut scan = Scan {
        limits,
        scanned: Scanned::default(),
        found: Vec::new(),
        covered: Vec::new(),
        dst: PathBuf::new(),
        mounts: spec
            .mounts
            .iter()
            .map(|m| (m.dst.clone(), m.src.clone()))
            .collect(),
        names: Vec::new(),
        src_names: 0,
        links: Vec::new(),
        links_pass: false,
    };
    scan.mounts(spec)?;
    // A hard link to a hidden file under another name reads the same bytes: a second walk
    // hides every such link, only when a hidden file has more than one name.
    if !scan.links.is_empty() {
        let first = std::mem::take(&mut scan.scanned.entries);
        scan.links_pass = true;
        scan.mounts(spec)?;
        scan.scanned.entries += first;
    }
    scan.found.sort();
    scan.found.dedup();
    spec.hidden = scan.found;
    Ok(scan.scanned)
}

impl Scan {
    /// Walks every mount of `spec` whose credentials the policy does not show.
    fn mounts(&mut self, spec: &SandboxSpec) -> Result<(), ScanError> {
        let scan = self;
        for mount in &spec.mounts {
            if spec.credentials_shown.contains(&mount.dst) {
                continue;
            }
            // What another mount or tmpfs covers is not visible from this one.
            scan.covered = spec
                .mounts
                .iter()
                .map(|m| &m.dst)
                .chain(spec.tmpfs.iter().map(|t| &t.dst))
                .filter(|d| *d != &mount.dst)
                .filter_map(|d| d.strip_prefix(&mount.dst).ok().map(Path::to_path_buf))
                .collect();
            scan.dst = mount.dst.clone();
            scan.mount(&mount.src)?;
        }
        Ok(())
    }
}

struct Scan {
    limits: ScanLimits,
    scanned: Scanned,
    found: Vec<PathBuf>,
    /// Paths below the current mount's target that other mounts cover.
    covered: Vec<PathBuf>,
    /// The current mount's target.
    dst: PathBuf,
    /// Every mount's (target, source), to follow a credential link across them.
    mounts: Vec<(PathBuf, PathBuf)>,
    /// The source's own components, then those of the directory being read.
    names: Vec<OsString>,
    /// How many of `names` are the source's own.
    src_names: usize,
    /// The (device, inode) of every hidden regular file with more than one name.
    links: Vec<(u64, u64)>,
    /// Whether this walk looks only for further names of `links`.
    links_pass: bool,
}

impl Scan {
    fn mount(&mut self, src: &Path) -> Result<(), ScanError> {
        self.names = src
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_os_string()),
                _ => None,
            })
            .collect();
        self.src_names = self.names.len();
        // The source itself, or a directory it lies in, is a credential: hide it whole.
        let whole =
            (1..=self.names.len()).any(|end| credential_at_end(&self.names[..end]).is_some());
        if whole {
            return match self.links_pass {
                true => Ok(()),
                false => self.hide(Path::new(""), src),
            };
        }
        let dir = match fs::open(
            src,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(dir) => dir,
            // A file source is judged by its name alone, above.
            Err(Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(refuse(src, format!("cannot open it: {e}"))),
        };
        self.dir(&dir, src, 0)
    }

    /// The path of `names` below the source.
    fn rel(&self) -> PathBuf {
        self.names[self.src_names..].iter().collect()
    }

    fn hide(&mut self, rel: &Path, shown: &Path) -> Result<(), ScanError> {
        let inside = if rel.as_os_str().is_empty() {
            self.dst.clone()
        } else {
            self.dst.join(rel)
        };
        self.hide_at(inside, shown)
    }

    /// Hides `inside`, a path inside the sandbox.
    fn hide_at(&mut self, inside: PathBuf, shown: &Path) -> Result<(), ScanError> {
        if self.links_pass && self.found.contains(&inside) {
            return Ok(());
        }
        if let Some(refusal) = unmaskable(&inside) {
            return Err(refuse(shown, refusal));
        }
        if self.found.len() >= self.limits.hidden {
            return Err(refuse(
                shown,
                format!(
                    "more than {} credential files to hide; {NARROWER}",
                    self.limits.hidden
                ),
            ));
        }
        self.found.push(inside);
        self.scanned.hidden += 1;
        Ok(())
    }

    /// Hides the entry `name` of `dir`, the last of `names`, and notes it when it is a
    /// regular file with other names (hard links).
    fn hide_file(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        kind: FileType,
        shown: &Path,
    ) -> Result<(), ScanError> {
        if kind == FileType::RegularFile {
            let st = fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| refuse(shown, format!("cannot stat it: {e}")))?;
            self.note_links(st.st_dev, st.st_ino, st.st_nlink);
        }
        self.hide(&self.rel(), shown)
    }

    fn note_links(&mut self, dev: u64, ino: u64, nlink: u64) {
        if nlink > 1 && !self.links.contains(&(dev, ino)) {
            self.links.push((dev, ino));
        }
    }

    fn dir(&mut self, dir: &OwnedFd, shown: &Path, depth: usize) -> Result<(), ScanError> {
        let listing =
            fs::Dir::read_from(dir).map_err(|e| refuse(shown, format!("cannot list it: {e}")))?;
        for entry in listing {
            let entry = entry.map_err(|e| refuse(shown, format!("cannot list it: {e}")))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            self.scanned.entries += 1;
            if self.scanned.entries > self.limits.entries {
                return Err(refuse(
                    shown,
                    format!(
                        "more than {} entries, too many to scan for credential files; {NARROWER}",
                        self.limits.entries
                    ),
                ));
            }
            self.names.push(name.to_os_string());
            let result = self.entry(dir, entry.file_type(), shown, depth);
            self.names.pop();
            result?;
        }
        Ok(())
    }

    /// One entry, whose name is the last of `names`. Paths are built only for what is
    /// hidden, descended into or refused: most entries of a tree are none of these.
    fn entry(
        &mut self,
        dir: &OwnedFd,
        kind: FileType,
        parent: &Path,
        depth: usize,
    ) -> Result<(), ScanError> {
        let name = self.names[self.names.len() - 1].clone();
        let shown = || parent.join(&name);
        if !self.covered.is_empty() && self.covered.contains(&self.rel()) {
            return Ok(());
        }
        let kind = match kind {
            FileType::Unknown => fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode))
                .map_err(|e| refuse(&shown(), format!("cannot stat it: {e}")))?,
            known => known,
        };
        let credential = credential_at_end(&self.names);
        if self.links_pass {
            if credential.is_some_and(|c| !c.private_key_only) {
                // Hidden in the first walk, whole.
                return Ok(());
            }
            if kind == FileType::RegularFile {
                let st = fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| refuse(&shown(), format!("cannot stat it: {e}")))?;
                if st.st_nlink > 1 && self.links.contains(&(st.st_dev, st.st_ino)) {
                    return self.hide(&self.rel(), &shown());
                }
            }
        } else if let Some(credential) = credential {
            if kind == FileType::Symlink {
                return self.symlink(dir, &name, &self.rel(), &shown());
            }
            if !credential.private_key_only || private_key(dir, &name, kind, Sniff::Whole) {
                return self.hide_file(dir, &name, kind, &shown());
            }
        } else if kind == FileType::RegularFile && private_key(dir, &name, kind, sniff(&name)) {
            return self.hide_file(dir, &name, kind, &shown());
        }
        if kind != FileType::Directory {
            return Ok(());
        }
        if depth + 1 >= self.limits.depth {
            return Err(refuse(
                &shown(),
                format!(
                    "deeper than {} levels, too deep to scan for credential files; {NARROWER}",
                    self.limits.depth
                ),
            ));
        }
        match fs::openat(
            dir,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(sub) => self.dir(&sub, &shown(), depth + 1),
            // Nobody without the right to search it reaches anything inside.
            Err(Errno::ACCESS)
                if fs::accessat(dir, &name, Access::EXEC_OK, AtFlags::empty()).is_err() =>
            {
                Ok(())
            }
            Err(e) => Err(refuse(
                &shown(),
                format!("cannot open it, so cannot tell which credentials it holds: {e}"),
            )),
        }
    }

    /// A credential name that is a symlink. A mask cannot cover a link, and the sandbox
    /// reads whatever it points at, so its target is hidden instead, followed (lexically,
    /// in the sandbox's own paths) through the mounts. A link to nothing any mount shows
    /// (the root, a dangling one) needs nothing hidden.
    fn symlink(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        shown: &Path,
    ) -> Result<(), ScanError> {
        const HOPS: usize = 8;
        let unreadable = |e: std::io::Error| refuse(shown, format!("cannot read the link: {e}"));
        let mut at = self.dst.join(rel);
        let mut target = fs::readlinkat(dir, name, Vec::new())
            .map(|t| PathBuf::from(OsStr::from_bytes(t.as_bytes())))
            .map_err(|e| unreadable(e.into()))?;
        for _ in 0..HOPS {
            let inside = lexical(&at.parent().unwrap_or(Path::new("/")).join(&target));
            let Some((dst, src)) = self
                .mounts
                .iter()
                .filter(|(dst, _)| inside.starts_with(dst))
                .max_by_key(|(dst, _)| dst.components().count())
            else {
                return Ok(());
            };
            let host = match inside.strip_prefix(dst) {
                Ok(below) if !below.as_os_str().is_empty() => src.join(below),
                _ => src.clone(),
            };
            match std::fs::symlink_metadata(&host) {
                Err(_) => return Ok(()),
                Ok(meta) if meta.file_type().is_symlink() => {
                    target = std::fs::read_link(&host).map_err(unreadable)?;
                    at = inside;
                }
                // The backend checks the target again as it masks it, and refuses one that
                // changed since.
                Ok(meta) => {
                    if meta.file_type().is_file() {
                        self.note_links(meta.dev(), meta.ino(), meta.nlink());
                    }
                    return self.hide_at(inside, shown);
                }
            }
        }
        Err(refuse(
            shown,
            format!("a credential link followed by more than {HOPS} others"),
        ))
    }
}

/// `path` (absolute) with `.` and `..` resolved by name, as far up as `/`.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Whether the entry `name` of `dir` holds a private key, reading as much of it as `how`
/// says. What cannot be read is hidden: the scan cannot tell, and hiding costs the tool one
/// file. Only a regular file is read; anything else `how` asks about is hidden.
fn private_key(dir: &OwnedFd, name: &OsStr, kind: FileType, how: Sniff) -> bool {
    if how == Sniff::Nothing {
        return false;
    }
    if kind != FileType::RegularFile {
        return true;
    }
    let Ok(file) = fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return true;
    };
    // The entry may have been replaced since it was listed: a device is never read (opening
    // one was harmless with these flags, reading one need not be).
    match fs::fstat(&file) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
        _ => return true,
    }
    let mut start = [0u8; KEY_START_BYTES];
    let Ok(filled) = fill(&file, &mut start) else {
        return true;
    };
    if how == Sniff::Head && !could_start_a_key(&start[..filled]) {
        return false;
    }
    if filled < start.len() {
        return holds_private_key(&start[..filled]);
    }
    let mut head = vec![0u8; PRIVATE_KEY_HEAD_BYTES];
    head[..filled].copy_from_slice(&start);
    match fill(&file, &mut head[filled..]) {
        Ok(more) => holds_private_key(&head[..filled + more]),
        Err(_) => true,
    }
}

/// Reads `file` into `buf` until it is full or the file ends; how much it read.
fn fill(file: &OwnedFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::io::read(file, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_spec::Mount;
    use std::fs as stdfs;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file);
            stdfs::create_dir_all(path.parent().unwrap()).unwrap();
            stdfs::write(&path, "token").unwrap();
        }
        dir
    }

    fn scan(dir: &Path, limits: ScanLimits) -> Result<Vec<String>, ScanError> {
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.mounts.push(Mount {
            src: dir.to_path_buf(),
            dst: "/work".into(),
            writable: false,
        });
        hide_credentials(&mut spec, limits)?;
        Ok(spec
            .hidden
            .iter()
            .map(|p| p.display().to_string())
            .collect())
    }

    #[test]
    fn finds_credentials_at_any_depth_and_nothing_else() {
        let dir = tree(&[
            ".git-credentials",
            ".config/gh/hosts.yml",
            "src/.env",
            "src/.env.example",
            ".ssh/id_ed25519",
            "a/b/c/.npmrc",
            "a/b/c/main.rs",
            "certs/ca.pem",
        ]);
        stdfs::write(
            dir.path().join("certs/server.pem"),
            "-----BEGIN PRIVATE KEY-----\n",
        )
        .unwrap();
        assert_eq!(
            scan(dir.path(), ScanLimits::default()).unwrap(),
            [
                "/work/.config/gh",
                "/work/.git-credentials",
                "/work/.ssh",
                "/work/a/b/c/.npmrc",
                "/work/certs/server.pem",
                "/work/src/.env",
            ]
        );
    }

    #[test]
    fn variants_keys_by_content_and_hard_links_are_hidden() {
        let dir = tree(&[
            "sub/.ENV",
            "sub/.env-prod",
            "sub/.env_ci",
            "sub/.Env.Example",
            "sub/Credentials",
            "sub/server.KEY",
            "sub/notes.txt",
            "sub/LICENSE",
            "sub/monkey.rs",
            "sub/id_ed25519.pub",
            ".env",
        ]);
        let sub = dir.path().join("sub");
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n";
        let openssh = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            "b3BlbnNzaC1rZXktdjEAAAAA".repeat(20)
        );
        stdfs::write(sub.join("deploy_key"), &openssh).unwrap();
        stdfs::write(sub.join("deploy"), &openssh).unwrap();
        stdfs::write(sub.join("cert"), "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let json = format!(
            "{{\"type\": \"service_account\", {}\"private_key\": \"{pem}\"}}",
            " ".repeat(200)
        );
        stdfs::write(sub.join("sa-key.json"), json).unwrap();
        stdfs::write(
            sub.join("bundle.crt"),
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n{pem}",
                "A".repeat(3000)
            ),
        )
        .unwrap();
        stdfs::hard_link(dir.path().join(".env"), sub.join("hardlink.txt")).unwrap();
        stdfs::hard_link(sub.join("deploy"), dir.path().join("copy.txt")).unwrap();
        let hidden = scan(dir.path(), ScanLimits::default()).unwrap();
        assert_eq!(
            hidden,
            [
                "/work/.env",
                "/work/copy.txt",
                "/work/sub/.ENV",
                "/work/sub/.env-prod",
                "/work/sub/.env_ci",
                "/work/sub/Credentials",
                "/work/sub/bundle.crt",
                "/work/sub/deploy",
                "/work/sub/deploy_key",
                "/work/sub/hardlink.txt",
                "/work/sub/sa-key.json",
                "/work/sub/server.KEY",
            ]
        );
    }

    #[test]
    fn a_credential_whose_name_is_not_utf8_is_found_and_refused() {
        let dir = tree(&[]);
        stdfs::create_dir(dir.path().join("sub")).unwrap();
        stdfs::write(
            dir.path().join("sub").join(OsStr::from_bytes(b"k\xff.pem")),
            "-----BEGIN PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = scan(dir.path(), ScanLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(r#""/work/sub/k\xFF.pem" must be hidden but its name is not UTF-8"#),
            "{error}"
        );
        stdfs::remove_file(dir.path().join("sub").join(OsStr::from_bytes(b"k\xff.pem"))).unwrap();
        stdfs::write(
            dir.path().join("sub").join(OsStr::from_bytes(b"\xff.KEY")),
            "",
        )
        .unwrap();
        assert!(scan(dir.path(), ScanLimits::default()).is_err());
    }

    #[test]
    fn a_file_that_cannot_be_sniffed_is_hidden() {
        let dir = tree(&["sub/LICENSE"]);
        let fifo = dir.path().join("sub/deploy_key");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // A FIFO is no key file: it is not read, and not hidden.
        assert!(scan(dir.path(), ScanLimits::default()).unwrap().is_empty());
        if rustix::process::geteuid().is_root() {
            return;
        }
        let key = dir.path().join("sub/deploy");
        stdfs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        stdfs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        assert_eq!(
            scan(dir.path(), ScanLimits::default()).unwrap(),
            ["/work/sub/deploy"]
        );
    }

    #[test]
    fn a_symlinked_credential_hides_its_target_and_is_not_followed() {
        let dir = tree(&["config/prod.txt", "config/abs.txt", "outside/.env", "a/x"]);
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(target, dir.path().join(at)).unwrap()
        };
        link("config/prod.txt", ".env");
        link("/work/config/abs.txt", "a/.npmrc");
        link("../../../../etc/passwd", ".netrc");
        link("missing", ".pypirc");
        let inner = tree(&["x"]);
        std::os::unix::fs::symlink(dir.path().join("outside"), inner.path().join("link")).unwrap();
        assert_eq!(
            scan(dir.path(), ScanLimits::default()).unwrap(),
            [
                "/work/config/abs.txt",
                "/work/config/prod.txt",
                "/work/outside/.env"
            ]
        );
        assert!(scan(inner.path(), ScanLimits::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_source_inside_a_credential_store_is_hidden_whole() {
        let dir = tree(&[".aws/config"]);
        assert_eq!(
            scan(&dir.path().join(".aws"), ScanLimits::default()).unwrap(),
            ["/work"]
        );
    }

    /// A tree of 100,000 files named by `file` in 1,111 directories, and `.env` in one,
    /// hard-linked under another name when `link` is given; its scan timed ten times.
    fn measure(what: &str, file: impl Fn(usize) -> String, link: Option<&str>) {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..1000 {
            let sub = dir
                .path()
                .join(format!("a{}/b{}/c{}", d / 100, d / 10 % 10, d % 10));
            stdfs::create_dir_all(&sub).unwrap();
            for f in 0..100 {
                stdfs::write(sub.join(file(f)), "").unwrap();
            }
        }
        stdfs::write(dir.path().join("a1/b2/.env"), "token").unwrap();
        let mut expected = vec!["/work/a1/b2/.env".to_string()];
        if let Some(link) = link {
            stdfs::hard_link(dir.path().join("a1/b2/.env"), dir.path().join(link)).unwrap();
            expected.push(format!("/work/{link}"));
            expected.sort();
        }
        let cpu = || {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        };
        let (mut wall, mut used) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let (start, start_cpu) = (std::time::Instant::now(), cpu());
            let hidden = scan(dir.path(), ScanLimits::default()).unwrap();
            wall.push(start.elapsed());
            used.push(cpu() - start_cpu);
            assert_eq!(hidden, expected);
        }
        wall.sort();
        used.sort();
        println!(
            "scan of 100,000 files in 1,111 directories, {what}: median {:?} wall ({:?} .. {:?}), {:?} CPU",
            wall[5], wall[0], wall[9], used[5]
        );
    }

    /// `cargo test --release -p nanoclaw-policy --lib -- --ignored --nocapture scan_of_100k`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn scan_of_100k_files() {
        measure("named f1.txt", |f| format!("f{f}.txt"), None);
        // Every file is opened and its first bytes read (`Sniff::Head`).
        measure("named f1, no extension", |f| format!("f{f}"), None);
        // Every regular file is looked at twice, the second time with a stat.
        measure(
            "named f1.txt, .env hard-linked",
            |f| format!("f{f}.txt"),
            Some("a0/b0/c0/x.txt"),
        );
    }

    #[test]
    fn too_large_or_too_deep_is_refused() {
        let dir = tree(&["a/b/c/d/e", "f", "g", "h"]);
        let few = ScanLimits {
            entries: 3,
            ..ScanLimits::default()
        };
        assert!(scan(dir.path(), few)
            .unwrap_err()
            .to_string()
            .contains("more than 3 entries"));
        let shallow = ScanLimits {
            depth: 3,
            ..ScanLimits::default()
        };
        assert!(scan(dir.path(), shallow)
            .unwrap_err()
            .to_string()
            .contains("deeper than 3"));
    }

    #[test]
    fn what_another_mount_covers_is_left_to_that_mount() {
        let outer = tree(&["sub/.env", ".npmrc"]);
        let inner = tree(&["plain"]);
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        for (src, dst) in [(outer.path(), "/work"), (inner.path(), "/work/sub")] {
            spec.mounts.push(Mount {
                src: src.to_path_buf(),
                dst: dst.into(),
                writable: false,
            });
        }
        hide_credentials(&mut spec, ScanLimits::default()).unwrap();
        assert_eq!(spec.hidden, [PathBuf::from("/work/.npmrc")]);
        spec.credentials_shown.push("/work".into());
        hide_credentials(&mut spec, ScanLimits::default()).unwrap();
        assert!(spec.hidden.is_empty());
    }
}
