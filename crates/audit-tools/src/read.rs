//! Reading the log line by line for `verify` and `query`, without blocking appenders.
//!
//! The file's length is read under a shared `flock`, held only for that instant, and
//! nothing past that length is read: every line below it was written and synced by an
//! appender that has since unlocked, so a reader never sees a line half-written by a
//! concurrent append. Never take the lock for a whole walk: a long `verify` would stall
//! every sandbox waiting to log its start.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Take};
use std::path::{Path, PathBuf};

use nanoclaw_audit::open::{self, Access};
use nanoclaw_audit::Lock;
use nanoclaw_audit::{Error, Result};

/// One line of the log as found on disk.
pub(crate) struct Line {
    /// 1-based.
    pub(crate) number: u64,
    /// Without its newline.
    pub(crate) bytes: Vec<u8>,
    /// Whether it ended with a newline; only the last line of a torn log does not.
    pub(crate) complete: bool,
}

pub(crate) struct Lines {
    path: PathBuf,
    reader: BufReader<Take<File>>,
    number: u64,
}

impl Lines {
    pub(crate) fn open(path: &Path) -> Result<Lines> {
        let file = open::open(path, Access::Read)?;
        let len = {
            let _lock = Lock::shared(&file, path)?;
            file.metadata()
                .map_err(|source| Error::Read {
                    path: path.to_path_buf(),
                    source,
                })?
                .len()
        };
        Ok(Lines {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file.take(len)),
            number: 0,
        })
    }
}

impl Iterator for Lines {
    type Item = Result<Line>;

    fn next(&mut self) -> Option<Result<Line>> {
        let mut bytes = Vec::new();
        match self.reader.read_until(b'\n', &mut bytes) {
            Ok(0) => None,
            Ok(_) => {
                self.number += 1;
                let complete = bytes.last() == Some(&b'\n');
                if complete {
                    bytes.pop();
                }
                Some(Ok(Line {
                    number: self.number,
                    bytes,
                    complete,
                }))
            }
            Err(source) => Some(Err(Error::Read {
                path: self.path.clone(),
                source,
            })),
        }
    }
}
