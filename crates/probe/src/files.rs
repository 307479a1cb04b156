//! Reading, listing and writing paths the sandbox should hide or protect, and running a
//! binary dropped into a writable place or into memory.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{required, Finding};

/// Enough to prove a leak; /proc/kcore would otherwise read for ever.
const READ_LIMIT: u64 = 1 << 20;

pub(crate) fn read_file(args: &[String]) -> Result<Finding, String> {
    let path: PathBuf = required(args, 0, "PATH")?;
    let shown = path.display();
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => return Ok(Finding::blocked(format!("open {shown}: {e}"))),
    };
    Ok(match count_bytes(file.take(READ_LIMIT)) {
        Err(e) => Finding::blocked(format!("read {shown}: {e}")),
        Ok(0) => Finding::blocked(format!("read 0 bytes from {shown} (empty or masked)")),
        Ok(n) if n == READ_LIMIT => {
            Finding::escaped(format!("read {n} bytes from {shown} (stopped there)"))
        }
        Ok(n) => Finding::escaped(format!("read {n} bytes from {shown}")),
    })
}

fn count_bytes(mut reader: impl Read) -> io::Result<u64> {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn list_dir(args: &[String]) -> Result<Finding, String> {
    let path: PathBuf = required(args, 0, "PATH")?;
    let shown = path.display();
    let names: io::Result<Vec<String>> = fs::read_dir(&path).and_then(|entries| {
        entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    });
    Ok(match names {
        Err(e) => Finding::blocked(format!("list {shown}: {e}")),
        Ok(names) if names.is_empty() => {
            Finding::blocked(format!("listed 0 entries in {shown} (empty or masked)"))
        }
        Ok(mut names) => {
            names.sort();
            let more = if names.len() > 20 { ", ..." } else { "" };
            let first: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
            Finding::escaped(format!(
                "listed {} entries in {shown}: {}{more}",
                names.len(),
                first.join(", ")
            ))
        }
    })
}

pub(crate) fn write_file(args: &[String]) -> Result<Finding, String> {
    const LINE: &[u8] = b"nanoclaw probe was here\n";
    let path: PathBuf = required(args, 0, "PATH")?;
    let shown = path.display();
    let old_len = fs::metadata(&path).ok().map(|m| m.len());
    let mut file = match OpenOptions::new().append(true).create(true).open(&path) {
        Ok(file) => file,
        Err(e) => return Ok(Finding::blocked(format!("open {shown} for appending: {e}"))),
    };
    let written = file.write_all(LINE);
    let (undo, how) = match old_len {
        None => (fs::remove_file(&path), "removed it again".to_string()),
        Some(len) => (
            file.set_len(len),
            format!("truncated it back to {len} bytes"),
        ),
    };
    let finding = match written {
        Err(e) => Finding::blocked(format!("write {shown}: {e}")),
        Ok(()) => Finding::escaped(format!(
            "appended {} bytes to {shown}, then {how}",
            LINE.len()
        )),
    };
    Ok(finding.with_cleanup(undo, &shown))
}

/// Binaries to drop, each with arguments that end it at once. `true` comes first because a
/// copy of the running program is, under `cargo test`, the test harness and not nanoclaw;
/// busybox picks its applet from argv[0], which is why the copy runs as `true`.
const DROPPABLE: &[(&str, &[&str])] = &[
    ("/usr/bin/true", &[]),
    ("/bin/true", &[]),
    ("/proc/self/exe", &["probe", "noop"]),
];

/// A binary to drop: its path, its contents and the arguments that end it at once.
type Droppable = (&'static str, Vec<u8>, &'static [&'static str]);

/// The first of `DROPPABLE` that can be read; without one the attack is not attempted.
fn droppable() -> Result<Droppable, Finding> {
    DROPPABLE
        .iter()
        .find_map(|(src, argv)| Some((*src, fs::read(src).ok()?, *argv)))
        .ok_or_else(|| {
            let tried: Vec<&str> = DROPPABLE.iter().map(|(src, _)| *src).collect();
            Finding::not_attempted(format!("no readable binary to copy ({})", tried.join(", ")))
        })
}

pub(crate) fn exec_from(args: &[String]) -> Result<Finding, String> {
    let dir: PathBuf = required(args, 0, "DIR")?;
    let (source, bytes, argv) = match droppable() {
        Ok(found) => found,
        Err(finding) => return Ok(finding),
    };
    let copy = dir.join(format!("nanoclaw-probe-exec-{}", std::process::id()));
    let shown = copy.display();
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&copy)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Ok(Finding::not_attempted(format!("create {shown}: {e}")))
        }
        Err(e) => return Ok(Finding::blocked(format!("create {shown}: {e}"))),
    };
    // The umask may have cleared execute bits; the write fd must be closed before the exec
    // or it fails with ETXTBSY.
    let written = file
        .write_all(&bytes)
        .and_then(|()| fs::set_permissions(&copy, Permissions::from_mode(0o755)));
    drop(file);
    let finding = match written {
        Err(e) => Finding::blocked(format!("write {shown}: {e}")),
        Ok(()) => run_dropped(&copy, source, argv),
    };
    Ok(finding.with_cleanup(fs::remove_file(&copy), &shown))
}

/// A program that never touches a file system: a copy in an anonymous memory file
/// (memfd_create), executed through its descriptor. Any step that fails stops the attack.
pub(crate) fn memfd_exec(_: &[String]) -> Result<Finding, String> {
    let (source, bytes, argv) = match droppable() {
        Ok(found) => found,
        Err(finding) => return Ok(finding),
    };
    // No MFD_CLOEXEC: the child that executes the copy must inherit the descriptor.
    // SAFETY: the name is a NUL-terminated string literal; memfd_create reads nothing else.
    let fd = unsafe { libc::memfd_create(c"nanoclaw-probe".as_ptr(), 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Ok(Finding::blocked(format!("memfd_create: {e}")));
    }
    // SAFETY: `fd` was just returned by memfd_create, is open, and nothing else owns it.
    let mut memfd = unsafe { fs::File::from_raw_fd(fd) };
    if let Err(e) = memfd.write_all(&bytes) {
        return Ok(Finding::blocked(format!("write the memfd: {e}")));
    }
    Ok(run_dropped(
        Path::new(&format!("/proc/self/fd/{fd}")),
        source,
        argv,
    ))
}

/// Whatever the exit status, a started process proves the exec was allowed: `probe noop`
/// itself exits 10.
fn run_dropped(copy: &Path, source: &str, argv: &[&str]) -> Finding {
    let status = Command::new(copy)
        .arg0("true")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) => Finding::escaped(format!(
            "executed {} (a copy of {source}): {status}",
            copy.display()
        )),
        Err(e) => Finding::blocked(format!("exec {}: {e}", copy.display())),
    }
}
