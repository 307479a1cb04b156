//! Invocations that started but never ended: an `invocation.start` with no
//! `invocation.end` or `policy.refused` of the same invocation id. Either the runner died
//! mid-run (SIGKILL, the OOM killer, a power loss) or it is still running. The start
//! record names its runner (pid, boot id, and the process's start time, so that a reused
//! pid is not mistaken for it), which tells the two apart on the machine that wrote it.
//!
//! An unfinished invocation is not tampering: the chain is intact, and `verify` reports
//! it apart from damage. Never call an invocation finished that has no end record, and
//! never call a run in progress dead when its runner cannot be identified: say so.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use nanoclaw_audit::{Event, InvocationEnd, InvocationStart, PolicyRefused, Record, Runner};

/// An invocation with a start record and no end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The seq of its start record.
    pub seq: u64,
    pub ts: String,
    pub invocation_id: String,
    pub tool: String,
    pub state: RunState,
}

/// Whether an unfinished invocation's runner still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Its runner is still running: the invocation is in progress.
    Running { pid: u32 },
    /// Its runner is gone: it was killed or crashed mid-run.
    Died { pid: u32 },
    /// The start record does not name its runner (written by an older nanoclaw): killed
    /// or still running cannot be told apart.
    Unknown,
}

impl RunState {
    /// One word for tables and JSON: `running` or `unfinished`.
    pub fn status(&self) -> &'static str {
        match self {
            RunState::Running { .. } => "running",
            RunState::Died { .. } | RunState::Unknown => "unfinished",
        }
    }
}

impl fmt::Display for Unfinished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short: String = self.invocation_id.chars().take(8).collect();
        write!(
            f,
            "seq {} (invocation {short}, tool {}, started {}): ",
            self.seq, self.tool, self.ts
        )?;
        match self.state {
            RunState::Running { pid } => write!(f, "still running (runner pid {pid})"),
            RunState::Died { pid } => write!(
                f,
                "no end record and its runner (pid {pid}) is gone: killed or crashed mid-run"
            ),
            RunState::Unknown => write!(
                f,
                "no end record; the start does not name its runner, so a run still in \
                 progress looks the same"
            ),
        }
    }
}

/// Follows the records of a log in order and keeps the starts not yet ended.
#[derive(Debug, Default)]
pub(crate) struct Starts {
    /// By the seq of the start record, so that they are reported in log order; the
    /// state is left `Unknown` until `finish` looks at the runner.
    open: BTreeMap<u64, (Unfinished, Option<Runner>)>,
    by_id: HashMap<String, u64>,
}

impl Starts {
    pub(crate) fn observe(&mut self, record: &Record) {
        let Some(id) = record.invocation_id() else {
            return;
        };
        match record.kind.as_str() {
            InvocationStart::KIND => {
                let runner = record
                    .data
                    .get("runner")
                    .and_then(|r| serde_json::from_value(r.clone()).ok());
                let start = Unfinished {
                    seq: record.seq,
                    ts: record.ts.clone(),
                    invocation_id: id.to_owned(),
                    tool: record.tool().unwrap_or("-").to_owned(),
                    state: RunState::Unknown,
                };
                self.by_id.insert(id.to_owned(), record.seq);
                self.open.insert(record.seq, (start, runner));
            }
            InvocationEnd::KIND | PolicyRefused::KIND => {
                if let Some(seq) = self.by_id.remove(id) {
                    self.open.remove(&seq);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn finish(self) -> Vec<Unfinished> {
        self.open
            .into_values()
            .map(|(start, runner)| Unfinished {
                state: match runner {
                    Some(r) if r.is_running() => RunState::Running { pid: r.pid },
                    Some(r) => RunState::Died { pid: r.pid },
                    None => RunState::Unknown,
                },
                ..start
            })
            .collect()
    }
}

/// The invocations among `records` (a whole log, in order) that started and never ended.
pub fn unfinished<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<Unfinished> {
    let mut starts = Starts::default();
    for record in records {
        starts.observe(record);
    }
    starts.finish()
}
