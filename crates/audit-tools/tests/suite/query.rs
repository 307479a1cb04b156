use nanoclaw_audit::{
    invocation_id, parse_time, AuditLog, Error, InvocationEnd, InvocationStart, OutputDigest,
    PolicyRefused, Runner,
};
use nanoclaw_audit_tools::{list, show, table, unfinished, Filter, RunState};
use serde_json::json;

use super::LogDir;

/// Two invocations of `fetch` (exit 0, then killed by a timeout), one of `python` that
/// exits 1, and one refused `shell`.
fn sample() -> LogDir {
    let dir = LogDir::new();
    let log = AuditLog::open(&dir.path).unwrap();
    let run = |tool: &str, exit: Option<i32>, timed_out: bool| {
        let id = invocation_id().unwrap();
        log.append_event(&InvocationStart {
            invocation_id: id.clone(),
            tool: tool.into(),
            spec_sha256: "ab".repeat(32),
            backend: "native".into(),
            argv: vec![tool.into(), "--flag".into()],
            uid: 1000,
            ..Default::default()
        })
        .unwrap();
        log.append_event(&InvocationEnd {
            invocation_id: id,
            tool: tool.into(),
            exit,
            signal: exit.is_none().then_some(9),
            timed_out,
            duration_ms: 7,
            usage: json!({"cpu_ms": 3}),
            stdout: Some(OutputDigest::of(b"out", false)),
            stderr: Some(OutputDigest::of(b"", false)),
            layers: vec!["seccomp".into()],
            ..Default::default()
        })
        .unwrap();
    };
    run("fetch", Some(0), false);
    run("fetch", None, true);
    run("python", Some(1), false);
    log.append_event(&PolicyRefused {
        invocation_id: invocation_id().unwrap(),
        tool: "shell".into(),
        reason: "tool \"shell\" is not in the policy".into(),
        ..Default::default()
    })
    .unwrap();
    dir
}

fn seqs(dir: &LogDir, filter: &Filter) -> Vec<u64> {
    list(&dir.path, filter)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[test]
fn list_filters_by_tool_outcome_and_refusal() {
    let dir = sample();
    assert_eq!(seqs(&dir, &Filter::default()), (1..=7).collect::<Vec<_>>());
    let tool = |t: &str| Filter {
        tool: Some(t.into()),
        ..Default::default()
    };
    assert_eq!(seqs(&dir, &tool("fetch")), [1, 2, 3, 4]);
    assert_eq!(seqs(&dir, &tool("shell")), [7]);
    assert_eq!(
        seqs(
            &dir,
            &Filter {
                exit_nonzero: true,
                ..Default::default()
            }
        ),
        [4, 6]
    );
    assert_eq!(
        seqs(
            &dir,
            &Filter {
                refused: true,
                ..Default::default()
            }
        ),
        [7]
    );
    let failures = Filter {
        exit_nonzero: true,
        refused: true,
        ..Default::default()
    };
    assert_eq!(seqs(&dir, &failures), [4, 6, 7]);
    let fetch_failures = Filter {
        tool: Some("fetch".into()),
        ..failures
    };
    assert_eq!(seqs(&dir, &fetch_failures), [4]);
}

#[test]
fn list_filters_by_time() {
    let dir = sample();
    let records = list(&dir.path, &Filter::default()).unwrap();
    let at = |ts: &str| Some(parse_time(ts).unwrap());
    let all_since_first = Filter {
        since: at(&records[0].ts),
        ..Default::default()
    };
    assert_eq!(seqs(&dir, &all_since_first).len(), 7);
    let none_before = Filter {
        until: at("2000-01-01"),
        ..Default::default()
    };
    assert_eq!(seqs(&dir, &none_before), Vec::<u64>::new());
    let none_after = Filter {
        since: at("2999-01-01T00:00:00+02:00"),
        ..Default::default()
    };
    assert_eq!(seqs(&dir, &none_after), Vec::<u64>::new());
    let up_to_last = Filter {
        until: at(&records[6].ts),
        ..Default::default()
    };
    assert_eq!(seqs(&dir, &up_to_last).len(), 7);
}

#[test]
fn show_joins_an_invocations_start_and_end_from_either_seq() {
    let dir = sample();
    for seq in [3, 4] {
        let records = show(&dir.path, seq).unwrap();
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["invocation.start", "invocation.end"]);
        assert_eq!(records[0].invocation_id(), records[1].invocation_id());
        assert_eq!(records[1].data["timed_out"], json!(true));
    }
    assert_eq!(show(&dir.path, 7).unwrap().len(), 1);
    let err = show(&dir.path, 99).unwrap_err();
    assert!(matches!(err, Error::NoSuchRecord { seq: 99, .. }), "{err}");
}

#[test]
fn the_table_has_a_readable_row_per_record() {
    let dir = sample();
    let text = table(&list(&dir.path, &Filter::default()).unwrap(), &[]);
    eprintln!("{text}");
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 8);
    assert!(rows[0].starts_with("SEQ  TIME"));
    assert!(rows[1].contains("invocation.start") && rows[1].contains("fetch --flag"));
    assert!(rows[2].contains("exit 0, 7 ms"));
    assert!(rows[4].contains("signal 9, timed out, 7 ms"));
    assert!(rows[7].contains("policy.refused") && rows[7].contains("is not in the policy"));
}

#[test]
fn list_skips_a_torn_tail_but_refuses_a_malformed_line() {
    let dir = sample();
    let mut bytes = dir.bytes();
    bytes.extend_from_slice(b"{\"seq\":8,");
    std::fs::write(&dir.path, &bytes).unwrap();
    assert_eq!(list(&dir.path, &Filter::default()).unwrap().len(), 7);

    let mut lines = dir.lines();
    lines[2] = "{".into();
    dir.write_lines(&lines[..7]);
    let err = list(&dir.path, &Filter::default()).unwrap_err();
    assert!(matches!(err, Error::Malformed { line: 3, .. }), "{err}");
}

/// Starts with no end: one whose runner (this test) still runs, one whose runner is gone
/// (same pid, another start time: a reused pid is not the runner), one that does not name
/// its runner. `verify` reports them apart from damage; the ended invocations are not
/// among them.
#[test]
fn starts_with_no_end_are_unfinished_not_tampering() {
    let dir = sample();
    let log = AuditLog::open(&dir.path).unwrap();
    let me = Runner::current().expect("/proc names this process");
    let gone = Runner {
        start_time: me.start_time + 1,
        ..me.clone()
    };
    for runner in [Some(me.clone()), Some(gone), None] {
        log.append_event(&InvocationStart {
            invocation_id: invocation_id().unwrap(),
            tool: "long".into(),
            runner,
            ..Default::default()
        })
        .unwrap();
    }
    let report = dir.verify();
    assert!(report.is_intact(), "{report}");
    let states: Vec<(u64, RunState)> = report
        .unfinished
        .iter()
        .map(|u| (u.seq, u.state.clone()))
        .collect();
    assert_eq!(
        states,
        [
            (8, RunState::Running { pid: me.pid }),
            (9, RunState::Died { pid: me.pid }),
            (10, RunState::Unknown)
        ]
    );
    let text = report.to_string();
    assert!(
        text.contains("3 unfinished invocations: a start record with no end"),
        "{text}"
    );
    assert!(text.contains("killed or crashed mid-run"), "{text}");
    let records = list(&dir.path, &Filter::default()).unwrap();
    assert_eq!(unfinished(&records), report.unfinished);
    let table = table(&records, &report.unfinished);
    assert!(table.contains("[running]"), "{table}");
    assert_eq!(table.matches("[unfinished]").count(), 2, "{table}");
}
