//! How the log's path is opened: what is refused is in the CLI suite
//! (`audit_hardening`); here, that what must keep working does, and that odd files and
//! paths end in a clear error, never a hang.

use std::os::unix::fs::symlink;
use std::process::Command;

use nanoclaw_audit::{AuditLog, Error};
use nanoclaw_audit_tools::verify;

use super::LogDir;

#[test]
fn symlinks_and_dot_dots_the_caller_owns_are_followed_to_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    symlink("real", dir.path().join("relative")).unwrap();
    symlink(dir.path().join("real"), dir.path().join("absolute")).unwrap();
    for via in ["relative", "absolute", "real/../relative"] {
        let path = dir.path().join(via).join("nanoclaw/audit.jsonl");
        AuditLog::open(&path)
            .unwrap()
            .append("t", serde_json::json!({}))
            .unwrap();
    }
    let log = dir.path().join("real/nanoclaw/audit.jsonl");
    let report = verify(&log, None).unwrap();
    assert!(report.is_intact() && report.records == 3, "{report}");
}

#[test]
fn a_fifo_in_place_of_the_log_is_refused_without_waiting_for_a_writer() {
    let dir = LogDir::new();
    std::fs::create_dir_all(dir.path.parent().unwrap()).unwrap();
    let made = Command::new("mkfifo").arg(&dir.path).status().unwrap();
    assert!(made.success());
    for err in [
        AuditLog::open(&dir.path).unwrap_err(),
        verify(&dir.path, None).unwrap_err(),
    ] {
        assert!(matches!(err, Error::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}

#[test]
fn a_symlink_loop_on_the_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    symlink("b", dir.path().join("a")).unwrap();
    symlink("a", dir.path().join("b")).unwrap();
    let err = AuditLog::open(dir.path().join("a/audit.jsonl")).unwrap_err();
    assert!(
        err.to_string()
            .contains("Too many levels of symbolic links"),
        "{err}"
    );
}
