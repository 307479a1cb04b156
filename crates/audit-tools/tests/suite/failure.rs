use std::os::unix::fs::PermissionsExt;

use nanoclaw_audit::{AuditLog, Error};
use serde_json::json;

use super::LogDir;

#[test]
fn a_new_log_is_private_to_its_owner() {
    let dir = LogDir::new();
    AuditLog::open(&dir.path).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path), 0o600);
    assert_eq!(mode(dir.path.parent().unwrap()), 0o700);
    assert_eq!(mode(dir.path.parent().unwrap().parent().unwrap()), 0o700);
}

#[test]
fn a_log_path_that_is_a_directory_is_refused_naming_it() {
    let dir = LogDir::new();
    std::fs::create_dir_all(&dir.path).unwrap();
    let err = AuditLog::open(&dir.path).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_log_path_under_a_regular_file_is_refused_naming_it() {
    let dir = LogDir::new();
    let parent = dir.path.parent().unwrap();
    std::fs::create_dir_all(parent.parent().unwrap()).unwrap();
    std::fs::write(parent, "not a directory").unwrap();
    let err = AuditLog::open(&dir.path).unwrap_err();
    assert!(
        err.to_string().contains(&dir.path.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("Not a directory"), "{err}");
}

#[test]
fn a_log_that_is_not_a_regular_file_is_refused() {
    let err = AuditLog::open("/dev/null").unwrap_err();
    assert!(matches!(err, Error::Untrusted { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "refusing /dev/null: it is not a regular file"
    );
}

/// Root ignores file modes, so this can only be shown as another user.
#[test]
fn a_read_only_log_is_refused_for_users_other_than_root() {
    if rustix::process::geteuid().is_root() {
        eprintln!("skipped: root can write a 0400 file");
        return;
    }
    let dir = LogDir::with_records(1);
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let err = AuditLog::open(&dir.path).unwrap_err();
    assert!(err.to_string().contains("Permission denied"), "{err}");
}

#[test]
fn data_that_is_not_an_object_is_refused() {
    let dir = LogDir::new();
    let log = AuditLog::open(&dir.path).unwrap();
    let err = log.append("x", json!([1])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "audit record data must be a JSON object, got an array for kind x"
    );
    assert_eq!(dir.bytes(), b"");
}
