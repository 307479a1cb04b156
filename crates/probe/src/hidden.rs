//! `hidden`: reads credential paths the runner says it hid, as a tool after a token would,
//! for `verify` and the credential tests.
//!
//! Blocked means every path read as nothing: an empty file, an empty directory, or no way
//! in (absent, refused). It reads at most a few bytes of each and never reports contents,
//! only sizes: a credential that leaked must not leak again into a verify report.

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::Finding;

/// Enough to tell empty from not empty.
const READ_BYTES: u64 = 64;

pub(crate) fn hidden(args: &[String]) -> Result<Finding, String> {
    let mut seen = Vec::new();
    let mut leaked = Vec::new();
    for path in args {
        let (what, empty) = read(Path::new(path));
        if !empty {
            leaked.push(path.clone());
        }
        seen.push(format!("{path}: {what}"));
    }
    let detail = seen.join("; ");
    Ok(if leaked.is_empty() {
        Finding::blocked(detail)
    } else {
        Finding::escaped(format!("readable: {}; {detail}", leaked.join(", ")))
    })
}

/// What reading `path` gave, and whether that was nothing.
fn read(path: &Path) -> (String, bool) {
    match fs::metadata(path) {
        Err(e) => (format!("not reachable ({e})"), true),
        Ok(meta) if meta.is_dir() => match fs::read_dir(path) {
            Err(e) => (format!("directory not listable ({e})"), true),
            Ok(entries) => {
                let n = entries.count();
                (format!("directory with {n} entries"), n == 0)
            }
        },
        Ok(_) => match fs::File::open(path) {
            Err(e) => (format!("not readable ({e})"), true),
            Ok(file) => {
                let mut head = Vec::new();
                match file.take(READ_BYTES).read_to_end(&mut head) {
                    Err(e) => (format!("read failed ({e})"), true),
                    Ok(n) => (format!("{n} bytes read"), n == 0),
                }
            }
        },
    }
}
