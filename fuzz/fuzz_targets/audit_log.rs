//! The audit log reader on any bytes: each line parses to a record or an error, and
//! `verify` walks the whole file to a report (intact or naming a problem), never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A private directory for the log under test, one per fuzzing process.
fn log_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nanoclaw-fuzz-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        dir.join("audit.jsonl")
    })
}

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        let _ = nanoclaw_audit::parse_line(line);
    }
    let path = log_path();
    if std::fs::write(path, data).is_ok() {
        if let Ok(report) = nanoclaw_audit_tools::verify(path, None) {
            let _ = report.to_string();
            let _ = report.is_intact();
        }
    }
});
