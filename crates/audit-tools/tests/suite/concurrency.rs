use std::collections::HashSet;

use nanoclaw_audit_tools::{list, Filter};

use super::{reported_seqs, spawn_writer, LogDir};

#[test]
fn eight_processes_appending_at_once_build_one_linear_intact_chain() {
    let dir = LogDir::new();
    let writers: Vec<_> = (0..8)
        .map(|id| spawn_writer(&dir.path, id, Some(200)))
        .collect();
    let mut reported = Vec::new();
    for writer in writers {
        let output = writer.wait_with_output().unwrap();
        assert!(output.status.success());
        reported.extend(reported_seqs(&output.stdout));
    }

    let report = dir.verify();
    assert_eq!(report.problem, None, "{report}");
    assert_eq!(report.records, 1600);

    reported.sort_unstable();
    assert_eq!(reported, (1..=1600).collect::<Vec<u64>>());
    let records = list(&dir.path, &Filter::default()).unwrap();
    let writes: HashSet<(u64, u64)> = records
        .iter()
        .map(|r| {
            (
                r.data["writer"].as_u64().unwrap(),
                r.data["i"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(writes.len(), 1600, "every write appears exactly once");
}
