use std::os::unix::fs::PermissionsExt;

use nanoclaw_audit::Error;
use nanoclaw_audit_tools::{
    checkpoint, checkpoints_path, generate_key, verify, Problem, PublicKey,
};

use super::LogDir;

struct Signed {
    log: LogDir,
    key_file: std::path::PathBuf,
    key: PublicKey,
}

/// A log of 5 records, checkpointed, then 3 more records.
fn signed() -> Signed {
    let log = LogDir::with_records(5);
    let key_file = log.path.with_file_name("checkpoint.key");
    let key = generate_key(&key_file).unwrap();
    let cp = checkpoint(&log.path, &key_file).unwrap();
    assert_eq!(cp.count, 5);
    assert_eq!(cp.key, key.to_string());
    log.append(3);
    Signed { log, key_file, key }
}

fn checkpoint_problem(signed: &Signed) -> String {
    let report = verify(&signed.log.path, Some(&signed.key)).unwrap();
    match report.problem {
        Some(problem @ Problem::Checkpoint { .. }) => problem.to_string(),
        other => panic!("expected a checkpoint problem, got {other:?}"),
    }
}

#[test]
fn a_log_that_extends_its_checkpoint_verifies() {
    let signed = signed();
    let report = verify(&signed.log.path, Some(&signed.key)).unwrap();
    assert_eq!(report.problem, None, "{report}");
    assert_eq!((report.records, report.checkpoints), (8, 1));
    assert_eq!(report.signer, Some(signed.key.to_string()));
    assert!(
        report.to_string().contains("extends 1 signed checkpoints"),
        "{report}"
    );

    checkpoint(&signed.log.path, &signed.key_file).unwrap();
    let report = verify(&signed.log.path, None).unwrap();
    assert_eq!((report.problem, report.checkpoints), (None, 2));
}

#[test]
fn records_cut_from_the_end_are_caught_by_the_checkpoint() {
    let signed = signed();
    let lines = signed.log.lines();
    signed.log.write_lines(&lines[..3]);
    assert_eq!(verify(&signed.log.path, None).unwrap().records, 3);
    let problem = checkpoint_problem(&signed);
    assert!(
        problem.contains("the log has 3 records but 5 were signed"),
        "{problem}"
    );
}

#[test]
fn a_log_rewritten_and_rechained_is_caught_by_the_checkpoint() {
    let signed = signed();
    std::fs::remove_file(&signed.log.path).unwrap();
    signed.log.append(8);
    let problem = checkpoint_problem(&signed);
    assert!(
        problem.contains("record 5 (line 5) is not the one signed"),
        "{problem}"
    );
}

#[test]
fn a_forged_or_foreign_checkpoint_is_caught() {
    let signed = signed();
    let path = checkpoints_path(&signed.log.path);
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replace("\"count\":5", "\"count\":4")).unwrap();
    assert!(checkpoint_problem(&signed).contains("signature does not match"));

    std::fs::write(&path, &original).unwrap();
    let other_key = signed.log.path.with_file_name("other.key");
    generate_key(&other_key).unwrap();
    std::fs::remove_file(&path).unwrap();
    checkpoint(&signed.log.path, &other_key).unwrap();
    assert!(checkpoint_problem(&signed).contains("not the trusted key"));
    assert_eq!(verify(&signed.log.path, None).unwrap().problem, None);

    std::fs::remove_file(&path).unwrap();
    assert!(checkpoint_problem(&signed).contains("does not exist"));
}

#[test]
fn a_damaged_log_is_never_checkpointed() {
    let signed = signed();
    let lines = signed.log.lines();
    signed.log.write_lines(&[&lines[..2], &lines[3..]].concat());
    let err = checkpoint(&signed.log.path, &signed.key_file).unwrap_err();
    assert!(matches!(err, Error::NotIntact { .. }), "{err}");
    assert!(err.to_string().contains("record 3 is missing"), "{err}");
}

#[test]
fn keys_are_private_never_overwritten_and_read_as_raw_or_hex() {
    let signed = signed();
    let mode = std::fs::metadata(&signed.key_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(generate_key(&signed.key_file).is_err());

    let hex = std::fs::read_to_string(&signed.key_file).unwrap();
    assert_eq!(hex.trim().len(), 64);
    let raw: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let raw_file = signed.key_file.with_file_name("raw.key");
    std::fs::write(&raw_file, raw).unwrap();
    let err = PublicKey::from_key_file(&raw_file).unwrap_err();
    assert!(
        err.to_string().contains("accessible to its owner only"),
        "a key others can read is refused: {err}"
    );
    std::fs::set_permissions(&raw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(PublicKey::from_key_file(&raw_file).unwrap(), signed.key);
    assert_eq!(
        PublicKey::from_hex(&signed.key.to_string()).unwrap(),
        signed.key
    );

    std::fs::write(&raw_file, "short").unwrap();
    let err = PublicKey::from_key_file(&raw_file).unwrap_err();
    assert!(err.to_string().contains("raw.key"), "{err}");
    assert!(
        !err.to_string().contains(hex.trim()),
        "a key never appears in an error"
    );
}
