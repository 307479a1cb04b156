//! `inspect`: what the sandbox looks like from inside, as one JSON document, for `nanoclaw
//! verify` to hold against the policy.
//!
//! It observes and reports; it attacks nothing. The only changes it makes are a file it
//! creates and removes again under each mount point (to learn whether the mount is writable)
//! and connection attempts. Environment variables are reported by name only: values may hold
//! secrets and would end up in a verify report. Whatever it cannot read it reports as null
//! and lists under `errors`, so that verify fails the claim rather than assume it.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Finding;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Where connecting must fail: a public address, and a loopback port nothing listens on.
const DEFAULT_TARGETS: &[&str] = &["1.1.1.1:443", "127.0.0.1:9"];
/// Directories written to besides the mount points, where they exist.
const EXTRA_WRITE_DIRS: &[&str] = &["/etc", "/var/tmp", "/home", "/root", "/opt"];
/// Pseudo file systems where creating a file never works and probing adds only noise.
const SKIP_WRITES_UNDER: &[&str] = &["/proc", "/sys"];

pub(crate) fn inspect(args: &[String]) -> Result<Finding, String> {
    let mut errors = Vec::new();
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| errors.push(format!("read /proc/self/status: {e}")))
        .unwrap_or_default();
    let mounts = mounts(&mut errors);
    let targets: Vec<String> = if args.is_empty() {
        DEFAULT_TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        args.to_vec()
    };
    let mut env_names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    env_names.sort();
    let report = json!({
        "uid": ids(&status, "Uid", 0),
        "euid": ids(&status, "Uid", 1),
        "gid": ids(&status, "Gid", 0),
        "egid": ids(&status, "Gid", 1),
        "groups": groups(&status),
        "capabilities": {
            "inheritable": hex_field(&status, "CapInh"),
            "permitted": hex_field(&status, "CapPrm"),
            "effective": hex_field(&status, "CapEff"),
            "bounding": hex_field(&status, "CapBnd"),
            "ambient": hex_field(&status, "CapAmb"),
        },
        "no_new_privs": decimal_field(&status, "NoNewPrivs"),
        "seccomp": decimal_field(&status, "Seccomp"),
        "interfaces": interfaces(&mut errors),
        "writes": writes(&mounts),
        "mounts": mounts.iter().map(|m| json!({
            "path": m.path,
            "fstype": m.fstype,
            "writable": m.writable,
        })).collect::<Vec<Value>>(),
        "env_names": env_names,
        "connects": targets.iter().map(|t| connect(t)).collect::<Vec<Value>>(),
        "hostname": hostname(),
        "init_watches": init_watches(&mut errors),
        "secret_files": secret_files(),
        "errors": errors,
    });
    Ok(Finding::blocked(report.to_string()))
}

/// The files of the secrets directory: name, mode, owner. Metadata only: never read.
fn secret_files() -> Vec<Value> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(nanoclaw_spec::SECRETS_DIR) else {
        return Vec::new();
    };
    let mut files: Vec<Value> = entries
        .flatten()
        .filter_map(|e| {
            let meta = fs::symlink_metadata(e.path()).ok()?;
            Some(json!({
                "path": e.path(),
                "mode": meta.mode() & 0o7777,
                "uid": meta.uid(),
                "gid": meta.gid(),
                "regular": meta.file_type().is_file(),
            }))
        })
        .collect();
    files.sort_by_key(|v| v["path"].as_str().unwrap_or_default().to_string());
    files
}

fn field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| Some(line.strip_prefix(key)?.strip_prefix(':')?.trim()))
}

/// The `index`th id of a `Uid:` or `Gid:` line (real, effective, saved, filesystem).
fn ids(status: &str, key: &str, index: usize) -> Option<u32> {
    field(status, key)?
        .split_whitespace()
        .nth(index)?
        .parse()
        .ok()
}

fn groups(status: &str) -> Vec<u32> {
    field(status, "Groups")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect()
}

fn hex_field(status: &str, key: &str) -> Option<u64> {
    u64::from_str_radix(field(status, key)?, 16).ok()
}

/// Whether the sandbox's init (pid 1) waits the way only nanoclaw's lifeline-watching init
/// does: SIGCHLD blocked, taken from a signal descriptor polled alongside its lifeline and
/// deadline (a plain `wait` for children has it unblocked).
fn init_watches(errors: &mut Vec<String>) -> Option<bool> {
    const SIGCHLD_BIT: u64 = 1 << (libc::SIGCHLD - 1);
    let status = fs::read_to_string("/proc/1/status")
        .map_err(|e| errors.push(format!("read /proc/1/status: {e}")))
        .ok()?;
    hex_field(&status, "SigBlk").map(|blocked| blocked & SIGCHLD_BIT != 0)
}

fn decimal_field(status: &str, key: &str) -> Option<u64> {
    field(status, key)?.parse().ok()
}

fn interfaces(errors: &mut Vec<String>) -> Vec<String> {
    match fs::read_to_string("/proc/net/dev") {
        Ok(text) => text
            .lines()
            .skip(2)
            .filter_map(|line| {
                line.split_once(':')
                    .map(|(name, _)| name.trim().to_string())
            })
            .collect(),
        Err(e) => {
            errors.push(format!("read /proc/net/dev: {e}"));
            Vec::new()
        }
    }
}

struct SeenMount {
    path: String,
    fstype: String,
    writable: bool,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mounts(errors: &mut Vec<String>) -> Vec<SeenMount> {
    match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => parse_mountinfo(&text),
        Err(e) => {
            errors.push(format!("read /proc/self/mountinfo: {e}"));
            Vec::new()
        }
    }
}

/// Mount point (field 5), its per-mount options (field 6) and the file system type (first
/// field after ` - `) of each mountinfo line.
fn parse_mountinfo(text: &str) -> Vec<SeenMount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let path = unescape(fields.get(4)?);
            let writable = fields.get(5)?.split(',').any(|o| o == "rw");
            let fstype = after.split(' ').next()?.to_string();
            Some(SeenMount {
                path,
                fstype,
                writable,
            })
        })
        .collect()
}

/// Creates and removes a new file in each mount point that is a directory, and in a few
/// other places.
fn writes(mounts: &[SeenMount]) -> Vec<Value> {
    let mut dirs: BTreeSet<PathBuf> = mounts.iter().map(|m| PathBuf::from(&m.path)).collect();
    dirs.extend(EXTRA_WRITE_DIRS.iter().map(PathBuf::from));
    dirs.into_iter()
        .filter(|d| !SKIP_WRITES_UNDER.iter().any(|s| d.starts_with(s)))
        .filter(|d| fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
        .enumerate()
        .map(|(n, dir)| try_write(&dir, n))
        .collect()
}

fn try_write(dir: &Path, n: usize) -> Value {
    let file = dir.join(format!(".nanoclaw-inspect-{}-{n}", std::process::id()));
    let (ok, detail) = match OpenOptions::new().write(true).create_new(true).open(&file) {
        Err(e) => (false, e.to_string()),
        Ok(created) => {
            drop(created);
            match fs::remove_file(&file) {
                Ok(()) => (true, "created and removed a file".to_string()),
                Err(e) => (
                    true,
                    format!("created {}; removing it failed: {e}", file.display()),
                ),
            }
        }
    };
    json!({ "target": dir, "ok": ok, "detail": detail })
}

fn connect(target: &str) -> Value {
    let started = Instant::now();
    let (ok, detail) = match target.to_socket_addrs() {
        Err(e) => (false, format!("resolve: {e}")),
        Ok(addrs) => {
            let mut failures = Vec::new();
            let mut connected = None;
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                    Ok(_) => {
                        connected = Some(format!("connected to {addr}"));
                        break;
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            match connected {
                Some(done) => (true, done),
                None if failures.is_empty() => (false, "no addresses".to_string()),
                None => (false, failures.join("; ")),
            }
        }
    };
    json!({
        "target": target,
        "ok": ok,
        "detail": detail,
        "elapsed_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

fn hostname() -> Option<String> {
    if let Ok(name) = fs::read_to_string("/proc/sys/kernel/hostname") {
        return Some(name.trim().to_string());
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`, which outlives the call.
    let ret = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if ret != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/trailing\"), "/trailing\\");
        assert_eq!(unescape(r"/x\09"), "/x\\09");
    }

    #[test]
    fn mountinfo_lines_give_path_mode_and_type() {
        let text = "22 1 0:21 / / ro,nosuid,nodev shared:1 - tmpfs tmpfs ro,size=1024k\n\
                    23 22 8:1 /home/u/repo /work rw,nosuid master:2 - ext4 /dev/sda1 rw\n\
                    24 22 8:1 / /a\\040b rw - ext4 /dev/sda1 rw\n\
                    garbage\n";
        let seen = parse_mountinfo(text);
        let summary: Vec<(&str, &str, bool)> = seen
            .iter()
            .map(|m| (m.path.as_str(), m.fstype.as_str(), m.writable))
            .collect();
        assert_eq!(
            summary,
            [
                ("/", "tmpfs", false),
                ("/work", "ext4", true),
                ("/a b", "ext4", true)
            ]
        );
    }

    #[test]
    fn a_write_is_undone_and_a_refused_one_reported() -> Result<(), String> {
        let dir =
            std::env::temp_dir().join(format!("nanoclaw-inspect-test-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let written = try_write(&dir, 0);
        let left = fs::read_dir(&dir).map_err(|e| e.to_string())?.count();
        fs::remove_dir(&dir).map_err(|e| e.to_string())?;
        assert_eq!(written["ok"], true, "{written}");
        assert_eq!(left, 0);
        let refused = try_write(Path::new("/nonexistent-nanoclaw-dir"), 1);
        assert_eq!(refused["ok"], false, "{refused}");
        Ok(())
    }

    #[test]
    fn a_connect_to_a_closed_port_fails_and_says_how() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let report = connect(&format!("127.0.0.1:{port}"));
        assert_eq!(report["ok"], false, "{report}");
        assert!(report["elapsed_ms"].as_u64().is_some(), "{report}");
    }
}
