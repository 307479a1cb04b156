use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nanoclaw_audit::AuditLog;
use nanoclaw_audit_tools::{list, Filter, Problem};

use super::{reported_seqs, spawn_writer, LogDir};

/// Kills writers with SIGKILL at random moments, 25 rounds, two writers at a time: every
/// record a writer reported written is in the log, and the log is intact or torn only at
/// its last line (then repaired, as a user would, before the next round).
#[test]
fn records_reported_written_survive_kill_9_at_any_moment() {
    let dir = LogDir::new();
    let mut random = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut next_delay = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        Duration::from_micros(random % 40_000)
    };
    let mut reported = Vec::new();
    let mut torn = 0;
    for _round in 0..25 {
        let mut first = spawn_writer(&dir.path, 0, None);
        let mut second = spawn_writer(&dir.path, 1, None);
        std::thread::sleep(next_delay());
        first.kill().unwrap();
        std::thread::sleep(next_delay());
        second.kill().unwrap();
        for writer in [first, second] {
            reported.extend(reported_seqs(&writer.wait_with_output().unwrap().stdout));
        }

        let report = dir.verify();
        match report.problem {
            None => {}
            Some(Problem::TornTail { line }) => {
                assert_eq!(line as usize, dir.lines().len(), "torn only at the end");
                AuditLog::open(&dir.path)
                    .unwrap()
                    .repair_torn_tail()
                    .unwrap();
                torn += 1;
            }
            Some(problem) => panic!("{problem}"),
        }
    }

    let present: Vec<u64> = list(&dir.path, &Filter::default())
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    for seq in &reported {
        assert!(
            present.contains(seq),
            "record {seq} was reported written but is gone"
        );
    }
    assert!(!reported.is_empty());
    eprintln!(
        "{} records reported, {} present, {torn} torn tails",
        reported.len(),
        present.len()
    );
}
