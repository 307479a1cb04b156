use nanoclaw_audit::{sha256_hex, AuditLog, Error, GENESIS_HASH};
use nanoclaw_audit_tools::Problem;

use super::LogDir;

fn problem_after(edit: impl FnOnce(&mut Vec<String>)) -> Problem {
    let dir = LogDir::with_records(10);
    let mut lines = dir.lines();
    edit(&mut lines);
    dir.write_lines(&lines);
    let report = dir.verify();
    assert!(!report.is_intact());
    let problem = report.problem.unwrap();
    eprintln!("{problem}");
    problem
}

#[test]
fn an_untouched_log_is_intact() {
    let dir = LogDir::with_records(10);
    let report = dir.verify();
    assert_eq!(report.problem, None);
    assert_eq!(report.records, 10);
    assert!(report.first_ts.unwrap() <= report.last_ts.unwrap());
    assert!(report.head.is_some());
    let empty = LogDir::new();
    AuditLog::open(&empty.path).unwrap();
    assert_eq!(empty.verify().records, 0);
    assert!(empty.verify().is_intact());
}

#[test]
fn a_flipped_byte_inside_a_value_is_an_edit() {
    let problem = problem_after(|lines| lines[4] = lines[4].replacen("hello", "hellp", 1));
    assert_eq!(problem, Problem::Edited { line: 5, seq: 5 });
    assert!(problem.to_string().contains("line 5"));
    assert!(problem.to_string().contains("edited"));
}

#[test]
fn a_flipped_byte_that_breaks_the_syntax_is_a_malformed_line() {
    let problem = problem_after(|lines| lines[4] = lines[4].replacen(':', ";", 1));
    assert!(
        matches!(problem, Problem::Malformed { line: 5, .. }),
        "{problem:?}"
    );
}

#[test]
fn a_deleted_line_is_missing() {
    let problem = problem_after(|lines| drop(lines.remove(4)));
    assert_eq!(
        problem,
        Problem::Missing {
            line: 5,
            expected_seq: 5,
            found_seq: 6
        }
    );
    assert!(
        problem.to_string().contains("record 5 is missing"),
        "{problem}"
    );

    let problem = problem_after(|lines| drop(lines.drain(4..7)));
    assert_eq!(
        problem,
        Problem::Missing {
            line: 5,
            expected_seq: 5,
            found_seq: 8
        }
    );
    assert!(
        problem.to_string().contains("records 5 to 7 are missing"),
        "{problem}"
    );

    let problem = problem_after(|lines| drop(lines.remove(0)));
    assert_eq!(
        problem,
        Problem::Missing {
            line: 1,
            expected_seq: 1,
            found_seq: 2
        }
    );
}

#[test]
fn swapped_or_duplicated_lines_are_reordered() {
    let problem = problem_after(|lines| lines.swap(3, 4));
    assert_eq!(
        problem,
        Problem::Reordered {
            line: 4,
            expected_seq: 4,
            found_seq: 5
        }
    );
    assert!(problem.to_string().contains("reordered"));

    let problem = problem_after(|lines| lines.swap(2, 8));
    assert_eq!(
        problem,
        Problem::Reordered {
            line: 3,
            expected_seq: 3,
            found_seq: 9
        }
    );

    let problem = problem_after(|lines| {
        let copy = lines[4].clone();
        lines.insert(5, copy);
    });
    assert_eq!(
        problem,
        Problem::Reordered {
            line: 6,
            expected_seq: 6,
            found_seq: 5
        }
    );
}

#[test]
fn a_forged_record_with_a_recomputed_hash_breaks_the_chain_after_it() {
    let problem = problem_after(|lines| {
        let original: serde_json::Value = serde_json::from_str(&lines[4]).unwrap();
        let (ts, prev) = (
            original["ts"].as_str().unwrap(),
            original["prev"].as_str().unwrap(),
        );
        let canonical = format!(
            r#"{{"data":{{"i":4,"note":"forged"}},"kind":"test.write","prev":"{prev}","seq":5,"ts":"{ts}"}}"#
        );
        let hash = sha256_hex(canonical.as_bytes());
        lines[4] = format!(
            r#"{{"seq":5,"ts":"{ts}","kind":"test.write","prev":"{prev}","data":{{"i":4,"note":"forged"}},"hash":"{hash}"}}"#
        );
    });
    assert_eq!(problem, Problem::BrokenChain { line: 6, seq: 6 });
    assert!(problem.to_string().contains("line 6"));
}

#[test]
fn a_record_whose_chain_starts_anywhere_but_genesis_is_caught() {
    let problem = problem_after(|lines| {
        lines[0] = lines[0].replacen(GENESIS_HASH, &"1".repeat(64), 1);
    });
    assert_eq!(problem, Problem::Edited { line: 1, seq: 1 });
}

#[test]
fn a_line_cut_mid_way_is_a_torn_tail_that_blocks_appends_until_repaired() {
    let dir = LogDir::with_records(10);
    let mut bytes = dir.bytes();
    bytes.truncate(bytes.len() - 30);
    std::fs::write(&dir.path, &bytes).unwrap();

    let report = dir.verify();
    assert_eq!(report.problem, Some(Problem::TornTail { line: 10 }));
    assert_eq!(report.records, 9);
    assert!(
        report.to_string().contains("line 10 is incomplete"),
        "{report}"
    );

    let log = AuditLog::open(&dir.path).unwrap();
    let err = log.append("test.write", serde_json::json!({})).unwrap_err();
    assert!(matches!(err, Error::TornTail { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("nanoclaw audit verify"), "{err}");
    assert_eq!(dir.bytes(), bytes, "a refused append changes nothing");

    let aside = log.repair_torn_tail().unwrap().unwrap();
    let torn = std::fs::read(&aside).unwrap();
    assert!(bytes.ends_with(&torn) && !torn.is_empty() && !torn.contains(&b'\n'));
    assert_eq!(dir.verify().problem, None);
    assert_eq!(
        log.append("test.write", serde_json::json!({})).unwrap().seq,
        10
    );
    assert_eq!(dir.verify().records, 10);
    assert_eq!(
        log.repair_torn_tail().unwrap(),
        None,
        "nothing left to repair"
    );
}

#[test]
fn a_file_cut_in_the_middle_is_torn_at_its_new_end() {
    let dir = LogDir::with_records(10);
    let mut bytes = dir.bytes();
    let fifth_line_start = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(3)
        .unwrap()
        .0
        + 1;
    bytes.truncate(fifth_line_start + 20);
    std::fs::write(&dir.path, &bytes).unwrap();
    assert_eq!(dir.verify().problem, Some(Problem::TornTail { line: 5 }));
}

#[test]
fn an_unreadable_last_line_blocks_appends_and_is_not_repaired() {
    let dir = LogDir::with_records(3);
    let mut lines = dir.lines();
    lines.push("garbage".into());
    dir.write_lines(&lines);
    assert!(matches!(
        dir.verify().problem,
        Some(Problem::Malformed { line: 4, .. })
    ));
    let log = AuditLog::open(&dir.path).unwrap();
    let err = log.append("test.write", serde_json::json!({})).unwrap_err();
    assert!(matches!(err, Error::BadTail { .. }), "{err}");
    assert!(log.repair_torn_tail().is_err());
}

/// A reader that takes the first of two duplicate keys would see `"i":9`; the hash covers
/// the last. Neither that nor any other respelling of a line verifies: only the bytes
/// nanoclaw wrote do.
#[test]
fn a_duplicated_key_or_any_other_spelling_of_a_record_is_an_edit() {
    for (from, to) in [
        ("\"data\":{\"i\":2,", "\"data\":{\"i\":9,\"i\":2,"),
        (
            "{\"i\":2,\"note\":\"hello\"}",
            "{\"note\":\"hello\",\"i\":2}",
        ),
        ("\"data\":{", "\"data\": {"),
        ("\"hello\"", "\"hell\\u006f\""),
    ] {
        let problem = problem_after(|lines| lines[2] = lines[2].replacen(from, to, 1));
        assert_eq!(problem, Problem::NotCanonical { line: 3, seq: 3 }, "{to}");
        assert!(problem.to_string().contains("duplicate key"), "{problem}");
    }
}
