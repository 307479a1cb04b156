//! Writes to a writable mount, as a tool filling the host's disk would.
//!
//! This module must never leave what it wrote behind: every file it made is removed before
//! it reports.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use crate::{required, Finding};

/// Each file stays below the default RLIMIT_FSIZE, so that only a space limit can stop it.
const FILE_MIB: u64 = 64;

pub(crate) fn write_budget(args: &[String]) -> Result<Finding, String> {
    let dir: PathBuf = required(args, 0, "DIR")?;
    let wanted: u64 = required(args, 1, "MIB")?;
    let block = vec![0x5au8; 1 << 20];
    let mut written = 0;
    let mut made = Vec::new();
    let mut stopped = None;
    'files: while written < wanted {
        let path = dir.join(format!(".nanoclaw-write-budget-{}", made.len()));
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) => {
                stopped = Some(e);
                break;
            }
        };
        made.push(path);
        for _ in 0..FILE_MIB.min(wanted - written) {
            if let Err(e) = file.write_all(&block) {
                stopped = Some(e);
                break 'files;
            }
            written += 1;
        }
        if let Err(e) = file.sync_all() {
            stopped = Some(e);
            break;
        }
    }
    let cleanup = made
        .iter()
        .map(fs::remove_file)
        .find(Result::is_err)
        .unwrap_or(Ok(()));
    let shown = dir.display();
    let finding = match stopped {
        Some(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
            Finding::blocked(format!(
                "wrote {written} of {wanted} MiB in {shown}, then: {e}"
            ))
        }
        Some(e) => Finding::escaped(format!(
            "wrote {written} of {wanted} MiB in {shown}, then: {e} (not a space limit)"
        )),
        None => Finding::escaped(format!("wrote {wanted} MiB in {shown}")),
    };
    Ok(finding.with_cleanup(cleanup, &shown))
}
