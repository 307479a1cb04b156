//! Appending to the log: one linear chain across every process that writes to it.
//!
//! An append takes an exclusive `flock` on the log, reads only the last line (from the
//! end of the file), seals the next record onto it, writes the whole line with a single
//! `write(2)` in `O_APPEND` mode, unlocks, `fdatasync`s, and only then reports the record
//! written. Two appenders therefore never interleave or fork the chain, and a crash
//! never loses a record that was reported written.
//!
//! Never report a record written before it is synced. Never append after a torn or
//! unreadable last line: that would bury the damage inside the chain; the user runs
//! `nanoclaw audit verify` and repairs it explicitly instead.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::hex;
use crate::open::{self, Access};
use crate::record::{self, Record, GENESIS_HASH};
use crate::time;

/// An open audit log, ready to append to. Cheap to keep open for many appends.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
}

/// What `append` wrote, on disk by the time it is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
}

impl AuditLog {
    /// Opens the log at `path` for appending, creating the file (mode 0600) and any
    /// missing parent directories (mode 0700) if needed. Refuses a log reached through a
    /// symlink, or one someone else could have planted or could rewrite (see `open`).
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog> {
        let path = path.as_ref().to_path_buf();
        let file = open::open(&path, Access::Append)?;
        Ok(AuditLog { path, file })
    }

    /// Opens an existing log for appending (to repair it): a missing log is an error,
    /// not created.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<AuditLog> {
        let path = path.as_ref().to_path_buf();
        // Checked first, with the same rules, so that a missing log is not created.
        if open::open_if_exists(&path, Access::Read)?.is_none() {
            return Err(Error::Open {
                path,
                source: io::ErrorKind::NotFound.into(),
            });
        }
        AuditLog::open(path)
    }

    /// `$NANOCLAW_AUDIT`, else `$XDG_STATE_HOME/nanoclaw/audit.jsonl`, else
    /// `$HOME/.local/state/nanoclaw/audit.jsonl`.
    pub fn default_path() -> Result<PathBuf> {
        default_path_from(|name| std::env::var_os(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record of `kind` with `data` (a JSON object) and returns once it is on
    /// disk. Never put a secret value in `data`.
    pub fn append(&self, kind: &str, data: Value) -> Result<Appended> {
        record::check_data(kind, &data)?;
        let record = {
            let _lock = Lock::exclusive(&self.file, &self.path)?;
            let len = self.len()?;
            let (seq, prev) = match read_tail(&self.file, len).map_err(|e| self.read_error(e))? {
                Tail::Empty => (1, GENESIS_HASH.to_owned()),
                Tail::Last { seq, hash } => (seq + 1, hash),
                Tail::Torn { .. } => {
                    return Err(Error::TornTail {
                        path: self.path.clone(),
                    })
                }
                Tail::Unreadable { reason } => {
                    return Err(Error::BadTail {
                        path: self.path.clone(),
                        reason,
                    })
                }
            };
            let record = Record::seal(seq, time::now(), kind, prev, data);
            self.write_line(&record.to_line(), len)?;
            record
        };
        // Synced after unlocking, so that concurrent appenders' syncs overlap instead of
        // queueing behind the lock. Still durable before it is reported: fdatasync
        // flushes every written page of the file, this line and all lines before it,
        // whoever wrote them. A record chained onto one not yet synced is reported only
        // after its own sync, which covers both.
        self.file.sync_data().map_err(|source| Error::Sync {
            path: self.path.clone(),
            source,
        })?;
        Ok(Appended {
            seq: record.seq,
            hash: record.hash,
        })
    }

    /// Appends a typed record (see `event`).
    pub fn append_event<E: Event>(&self, event: &E) -> Result<Appended> {
        let data = serde_json::to_value(event).map_err(|source| Error::Encode {
            kind: E::KIND,
            source,
        })?;
        self.append(E::KIND, data)
    }

    /// Makes a log with a torn last line appendable again, losing nothing: the partial
    /// line is moved to a new file `<log>.torn-<millis>` (returned), then cut from the
    /// log. Does nothing (`None`) when the last line is complete. A complete but
    /// unreadable last line is not touched: that is not a crash but damage to look at.
    pub fn repair_torn_tail(&self) -> Result<Option<PathBuf>> {
        let _lock = Lock::exclusive(&self.file, &self.path)?;
        let len = self.len()?;
        let start = match read_tail(&self.file, len).map_err(|e| self.read_error(e))? {
            Tail::Torn { line_start } => line_start,
            Tail::Empty | Tail::Last { .. } => return Ok(None),
            Tail::Unreadable { reason } => {
                return Err(Error::BadTail {
                    path: self.path.clone(),
                    reason,
                })
            }
        };
        let mut torn = vec![0; usize::try_from(len - start).unwrap_or(usize::MAX)];
        self.file
            .read_exact_at(&mut torn, start)
            .map_err(|e| self.read_error(e))?;
        let mut aside = self.path.clone().into_os_string();
        aside.push(format!(
            ".torn-{}",
            time::millis_of(std::time::SystemTime::now())
        ));
        let aside = PathBuf::from(aside);
        let mut file = open::open(&aside, Access::CreateNew)?;
        file.write_all(&torn)
            .and_then(|()| file.sync_all())
            .map_err(|source| Error::Write {
                path: aside.clone(),
                source,
            })?;
        self.file
            .set_len(start)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| Error::Write {
                path: self.path.clone(),
                source,
            })?;
        Ok(Some(aside))
    }

    fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(|e| self.read_error(e))?.len())
    }

    /// Writes `line` with one `write(2)`. If it fails part-way, cuts the file back to
    /// `len` so that no partial line is left behind (we still hold the lock).
    fn write_line(&self, line: &[u8], len: u64) -> Result<()> {
        let failure = loop {
            match (&self.file).write(line) {
                Ok(n) if n == line.len() => return Ok(()),
                Ok(_) => break io::Error::new(io::ErrorKind::WriteZero, "short write"),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break e,
            }
        };
        match self.file.set_len(len) {
            Ok(()) => Err(Error::Write {
                path: self.path.clone(),
                source: failure,
            }),
            Err(source) => Err(Error::PartialWrite {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn read_error(&self, source: io::Error) -> Error {
        Error::Read {
            path: self.path.clone(),
            source,
        }
    }
}

fn default_path_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<PathBuf> {
    let var = |name| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = var("NANOCLAW_AUDIT") {
        return Ok(path);
    }
    // The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored.
    let state = var("XDG_STATE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|home| home.join(".local/state")))
        .ok_or(Error::NoDefaultPath)?;
    Ok(state.join("nanoclaw").join("audit.jsonl"))
}

/// An `flock` held until dropped. Taken shared by readers only for the instant it takes
/// to read the file's length: every line below that length is complete.
pub struct Lock<'a> {
    file: &'a File,
}

impl<'a> Lock<'a> {
    pub fn exclusive(file: &'a File, path: &Path) -> Result<Lock<'a>> {
        Lock::take(file, path, rustix::fs::FlockOperation::LockExclusive)
    }

    pub fn shared(file: &'a File, path: &Path) -> Result<Lock<'a>> {
        Lock::take(file, path, rustix::fs::FlockOperation::LockShared)
    }

    fn take(file: &'a File, path: &Path, op: rustix::fs::FlockOperation) -> Result<Lock<'a>> {
        loop {
            match rustix::fs::flock(file, op) {
                Ok(()) => return Ok(Lock { file }),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(Error::Lock {
                        path: path.to_path_buf(),
                        source: e.into(),
                    })
                }
            }
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        // Cannot fail on a valid descriptor; and closing the file would release it anyway.
        let _ = rustix::fs::flock(self.file, rustix::fs::FlockOperation::Unlock);
    }
}

/// What the end of the log holds.
#[derive(Debug, PartialEq)]
enum Tail {
    Empty,
    Last {
        seq: u64,
        hash: String,
    },
    /// The file does not end with a newline: the last write never completed.
    Torn {
        line_start: u64,
    },
    /// The last line is complete but is not a record.
    Unreadable {
        reason: String,
    },
}

/// Reads the last line of the first `len` bytes of `file`, from the end backwards, in
/// growing chunks: the cost of an append does not grow with the log.
fn read_tail(file: &File, len: u64) -> io::Result<Tail> {
    if len == 0 {
        return Ok(Tail::Empty);
    }
    let mut chunk: u64 = 4096;
    loop {
        let start = len.saturating_sub(chunk);
        let mut buf = vec![0; usize::try_from(len - start).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, start)?;
        let complete = buf.last() == Some(&b'\n');
        let body = if complete {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        let line_start = match body.iter().rposition(|&b| b == b'\n') {
            Some(newline) => newline + 1,
            None if start == 0 => 0,
            None => {
                chunk = chunk.saturating_mul(4);
                continue;
            }
        };
        if !complete {
            return Ok(Tail::Torn {
                line_start: start + line_start as u64,
            });
        }
        return Ok(match tail_fields(&body[line_start..]) {
            Ok((seq, hash)) => Tail::Last { seq, hash },
            Err(reason) => Tail::Unreadable { reason },
        });
    }
}

/// The `seq` and `hash` of a line: all that is needed to chain onto it.
fn tail_fields(line: &[u8]) -> std::result::Result<(u64, String), String> {
    #[derive(serde::Deserialize)]
    struct Tail {
        seq: u64,
        hash: String,
    }
    let tail: Tail = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if !hex::is_sha256(&tail.hash) {
        return Err("its hash is not a sha256".into());
    }
    Ok((tail.seq, tail.hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(content: &[u8]) -> Tail {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, content).unwrap();
        let file = File::open(&path).unwrap();
        read_tail(&file, content.len() as u64).unwrap()
    }

    #[test]
    fn reads_the_last_line_however_long() {
        let hash = "a".repeat(64);
        let long = format!(
            "{{\"seq\":9,\"pad\":\"{}\",\"hash\":\"{hash}\"}}\n",
            "x".repeat(100_000)
        );
        for content in [
            long.clone(),
            format!("junk\n{long}"),
            format!("{long}{long}"),
        ] {
            assert_eq!(
                tail_of(content.as_bytes()),
                Tail::Last {
                    seq: 9,
                    hash: hash.clone()
                }
            );
        }
        assert_eq!(tail_of(b""), Tail::Empty);
    }

    #[test]
    fn the_default_path_follows_nanoclaw_audit_then_xdg_then_home() {
        let path = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            default_path_from(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
                .map_err(|e| e.to_string())
        };
        let all = [
            ("NANOCLAW_AUDIT", "/a.jsonl"),
            ("XDG_STATE_HOME", "/state"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(path(&all), Ok("/a.jsonl".into()));
        assert_eq!(path(&all[1..]), Ok("/state/nanoclaw/audit.jsonl".into()));
        assert_eq!(
            path(&all[2..]),
            Ok("/home/u/.local/state/nanoclaw/audit.jsonl".into())
        );
        let relative_xdg = [
            ("NANOCLAW_AUDIT", ""),
            ("XDG_STATE_HOME", "state"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            path(&relative_xdg),
            Ok("/h/.local/state/nanoclaw/audit.jsonl".into())
        );
        let err = path(&[]).unwrap_err();
        assert!(err.contains("HOME"), "{err}");
    }

    #[test]
    fn a_missing_final_newline_is_a_torn_tail() {
        assert_eq!(
            tail_of(b"{\"seq\":1}\n{\"seq\":2"),
            Tail::Torn { line_start: 10 }
        );
        assert_eq!(tail_of(b"{\"seq\":1}"), Tail::Torn { line_start: 0 });
        assert!(matches!(
            tail_of(b"{\"seq\":1}\nnot json\n"),
            Tail::Unreadable { .. }
        ));
    }
}
