//! Reading records back: filtered listing, one invocation's records together, and a
//! plain-text table for people.
//!
//! Query trusts nothing it reads: it does not check the chain (that is `verify`), and the
//! table escapes control characters, because argv and reasons come from an agent and a
//! crafted escape sequence must not be able to repaint the operator's terminal.
//! Never write to the log from here.

use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

use crate::read::Lines;
use crate::unfinished::Unfinished;
use nanoclaw_audit::time;
use nanoclaw_audit::{parse_line, push_canonical, Record};
use nanoclaw_audit::{Error, Result};
use nanoclaw_audit::{Event, InvocationEnd, InvocationStart, PolicyRefused};

/// Which records `list` returns. Every field set must match; `exit_nonzero` and
/// `refused` together select either kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub tool: Option<String>,
    /// At or after this time.
    pub since: Option<SystemTime>,
    /// At or before this time.
    pub until: Option<SystemTime>,
    /// Only `invocation.end` records that did not exit 0 (signalled, timed out, …).
    pub exit_nonzero: bool,
    /// Only `policy.refused` records.
    pub refused: bool,
}

impl Filter {
    pub fn matches(&self, record: &Record) -> bool {
        if let Some(tool) = &self.tool {
            if record.tool() != Some(tool.as_str()) {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(ts) = time::parse_millis(&record.ts) else {
                return false;
            };
            if self.since.is_some_and(|since| ts < time::millis_of(since))
                || self.until.is_some_and(|until| ts > time::millis_of(until))
            {
                return false;
            }
        }
        if self.exit_nonzero || self.refused {
            let failed = record.kind == InvocationEnd::KIND
                && record.data.get("exit").and_then(Value::as_i64) != Some(0);
            let refused = record.kind == PolicyRefused::KIND;
            return (self.exit_nonzero && failed) || (self.refused && refused);
        }
        true
    }
}

/// The complete records of the log at `path` that match `filter`, in log order. A torn
/// last line is not a record and is left out; any other unreadable line is an error.
pub fn list(path: &Path, filter: &Filter) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for line in Lines::open(path)? {
        let line = line?;
        if !line.complete {
            break;
        }
        let record = parse_line(&line.bytes)
            .map_err(|reason| Error::Malformed {
                path: path.to_path_buf(),
                line: line.number,
                reason,
            })?
            .record;
        if filter.matches(&record) {
            records.push(record);
        }
    }
    Ok(records)
}

/// The record with `seq` and every other record of the same invocation (its start,
/// its end, …), in log order.
pub fn show(path: &Path, seq: u64) -> Result<Vec<Record>> {
    let records = list(path, &Filter::default())?;
    let Some(wanted) = records.iter().find(|r| r.seq == seq) else {
        return Err(Error::NoSuchRecord {
            path: path.to_path_buf(),
            seq,
        });
    };
    let Some(id) = wanted.invocation_id().map(str::to_owned) else {
        return Ok(vec![wanted.clone()]);
    };
    Ok(records
        .into_iter()
        .filter(|r| r.invocation_id() == Some(id.as_str()))
        .collect())
}

/// A table with one row per record: seq, time, kind, tool, invocation, and a summary.
/// The start of an invocation in `unfinished` says so first: `[unfinished]` or
/// `[running]`.
pub fn table(records: &[Record], unfinished: &[Unfinished]) -> String {
    const HEADER: [&str; 6] = ["SEQ", "TIME", "KIND", "TOOL", "INVOCATION", "DETAIL"];
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            [
                r.seq.to_string(),
                r.ts.clone(),
                r.kind.clone(),
                r.tool().unwrap_or("-").to_owned(),
                r.invocation_id()
                    .map_or("-".into(), |id| id.chars().take(8).collect()),
                match unfinished.iter().find(|u| u.seq == r.seq) {
                    Some(u) => format!("[{}] {}", u.state.status(), detail(r)),
                    None => detail(r),
                },
            ]
            .map(|cell| printable(&cell))
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What a row says about its record, cut to a readable length.
fn detail(record: &Record) -> String {
    let data = &record.data;
    let text = match record.kind.as_str() {
        InvocationStart::KIND => data
            .get("argv")
            .and_then(Value::as_array)
            .map(|argv| {
                argv.iter()
                    .map(|a| a.as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        InvocationEnd::KIND => {
            let mut parts = Vec::new();
            match (
                data.get("exit").and_then(Value::as_i64),
                data.get("signal").and_then(Value::as_i64),
            ) {
                (Some(code), _) => parts.push(format!("exit {code}")),
                (None, Some(signal)) => parts.push(format!("signal {signal}")),
                (None, None) => match data.get("error").and_then(Value::as_str) {
                    Some(error) => parts.push(format!("error: {error}")),
                    None => parts.push("no exit status".into()),
                },
            }
            for flag in ["timed_out", "oom_killed"] {
                if data.get(flag).and_then(Value::as_bool) == Some(true) {
                    parts.push(flag.replace('_', " "));
                }
            }
            if let Some(ms) = data.get("duration_ms").and_then(Value::as_u64) {
                parts.push(format!("{ms} ms"));
            }
            parts.join(", ")
        }
        PolicyRefused::KIND => data
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => {
            let mut text = String::new();
            push_canonical(&mut text, data);
            text
        }
    };
    const MAX: usize = 100;
    if text.chars().count() > MAX {
        let mut cut: String = text.chars().take(MAX - 1).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

/// `text` with every control character escaped (`\u{1b}`, `\n`, …).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_escapes_terminal_control_sequences() {
        let record = Record {
            seq: 1,
            ts: "2025-01-31T12:00:00.000Z".into(),
            kind: InvocationStart::KIND.into(),
            prev: String::new(),
            data: serde_json::json!({"tool": "t", "invocation_id": "0123456789", "argv": ["echo", "\u{1b}[2J\n"]}),
            hash: String::new(),
        };
        let table = table(&[record], &[]);
        assert!(!table.contains('\u{1b}'), "{table}");
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(table.contains("echo \\u{1b}[2J\\n"), "{table}");
        assert!(table.contains("01234567 "), "{table}");
    }
}
