//! Walking the chain: proves that no record was edited, dropped, inserted or reordered
//! since it was written, and that the log still extends its signed checkpoints.
//!
//! Reports the first bad line and what is wrong with it; everything before that line is
//! intact. A line is intact only if it is byte for byte what nanoclaw writes for the
//! record it parses to (see `record`). Never stop at the first problem silently or "fix"
//! anything: verify only reads. An invocation that started and never ended (its runner
//! was killed) is reported apart, as unfinished: it is not damage.
//!
//! What the chain alone cannot show: records cut from the end of the log (what is left
//! is still a valid chain), or a log rewritten and re-chained by someone with write
//! access. Signed checkpoints (see `checkpoint`) catch both, back to the last checkpoint,
//! but only when `verify` is given the trusted key: without it, a deleted checkpoints
//! file looks the same as a log never checkpointed, and a checkpoints file rewritten
//! with another key verifies.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, PublicKey};
use crate::read::Lines;
use crate::unfinished::{Starts, Unfinished};
use nanoclaw_audit::Result;
use nanoclaw_audit::{parse_line, GENESIS_HASH};

/// The outcome of `verify`: a summary of the intact prefix and the first problem, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub path: PathBuf,
    /// Records verified intact (all of them when `problem` is `None`).
    pub records: u64,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    /// The hash of the last intact record.
    pub head: Option<String>,
    /// Signed checkpoints the log was checked against.
    pub checkpoints: u64,
    /// The public key (hex) that signed the last of them.
    pub signer: Option<String>,
    pub problem: Option<Problem>,
    /// Invocations in the intact records that started and never ended: not tampering
    /// (the runner was killed mid-run, or is still running).
    pub unfinished: Vec<Unfinished>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// What is wrong, at the first line where something is. Lines are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The line is not a record at all (not JSON, or fields missing or of the wrong type).
    Malformed { line: u64, reason: String },
    /// The record's contents no longer match its hash.
    Edited { line: u64, seq: u64 },
    /// The line is not byte for byte what nanoclaw writes for the record it parses to: a
    /// duplicate key, reordered keys, whitespace or another spelling of a value. Its hash
    /// may match what one parser reads; what another reads is not what was hashed.
    NotCanonical { line: u64, seq: u64 },
    /// Records `expected_seq..found_seq` are gone: deleted from the middle of the log.
    Missing {
        line: u64,
        expected_seq: u64,
        found_seq: u64,
    },
    /// A record is out of place: moved, swapped, duplicated, or a forged record was
    /// inserted before it.
    Reordered {
        line: u64,
        expected_seq: u64,
        found_seq: u64,
    },
    /// The record has the expected seq but does not chain onto the record before it: that
    /// record was replaced by a forged one with a recomputed hash.
    BrokenChain { line: u64, seq: u64 },
    /// The last line is incomplete: a write that never finished (crash or power loss).
    TornTail { line: u64 },
    /// The log does not extend a signed checkpoint, or a checkpoint is itself bad.
    /// `line` is the line of the checkpoints file (0: the file as a whole).
    Checkpoint { line: u64, reason: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed { line, reason } => {
                write!(f, "line {line} is not an audit record: {reason}")
            }
            Problem::Edited { line, seq } => write!(
                f,
                "line {line} (seq {seq}) was edited: its hash does not match its contents"
            ),
            Problem::NotCanonical { line, seq } => write!(
                f,
                "line {line} (seq {seq}) was edited: it is not byte for byte the record \
                 nanoclaw wrote (a duplicate key, reordered keys, whitespace or another \
                 spelling of a value)"
            ),
            Problem::Missing {
                line,
                expected_seq,
                found_seq,
            } => {
                let gone = if found_seq - expected_seq == 1 {
                    format!("record {expected_seq} is missing")
                } else {
                    format!("records {expected_seq} to {} are missing", found_seq - 1)
                };
                write!(
                    f,
                    "line {line}: {gone} (expected seq {expected_seq}, found {found_seq})"
                )
            }
            Problem::Reordered {
                line,
                expected_seq,
                found_seq,
            } => write!(
                f,
                "line {line}: records were reordered, duplicated or inserted \
                 (expected seq {expected_seq}, found {found_seq})"
            ),
            Problem::BrokenChain { line, seq } => write!(
                f,
                "line {line} (seq {seq}) does not chain onto the record before it: \
                 a record was replaced or forged"
            ),
            Problem::TornTail { line } => write!(
                f,
                "line {line} is incomplete: the last write never finished (torn tail)"
            ),
            Problem::Checkpoint { line: 0, reason } => write!(f, "checkpoints: {reason}"),
            Problem::Checkpoint { line, reason } => {
                write!(
                    f,
                    "checkpoint on line {line} of the checkpoints file: {reason}"
                )
            }
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        if let Some(problem) = &self.problem {
            return write!(f, "{path}: {problem}");
        }
        match (&self.first_ts, &self.last_ts) {
            (Some(first), Some(last)) => write!(
                f,
                "{path}: intact, {} records from {first} to {last}",
                self.records
            )?,
            _ => write!(f, "{path}: intact, no records")?,
        }
        match &self.signer {
            Some(key) => write!(
                f,
                "; extends {} signed checkpoints (key {key})",
                self.checkpoints
            )?,
            None => write!(f, "; no signed checkpoints")?,
        }
        if !self.unfinished.is_empty() {
            let count = self.unfinished.len();
            let plural = if count == 1 { "" } else { "s" };
            write!(
                f,
                "\n{count} unfinished invocation{plural}: a start record with no end \
                 (a killed runner or a run in progress, not tampering):"
            )?;
            for unfinished in &self.unfinished {
                write!(f, "\n  {}: {unfinished}", unfinished.state.status())?;
            }
        }
        Ok(())
    }
}

/// Walks the whole log at `path` and its checkpoints. With `trusted_key`, checkpoints
/// signed by any other key are a problem, and so is having none.
pub fn verify(path: &Path, trusted_key: Option<&PublicKey>) -> Result<VerifyReport> {
    let (checkpoints, checkpoint_problem) = match checkpoint::load(path, trusted_key)? {
        Ok(checkpoints) => (checkpoints, None),
        Err(problem) => (Vec::new(), Some(problem)),
    };
    let mut report = VerifyReport {
        path: path.to_path_buf(),
        records: 0,
        first_ts: None,
        last_ts: None,
        head: None,
        checkpoints: 0,
        signer: None,
        problem: None,
        unfinished: Vec::new(),
    };
    let mut starts = Starts::default();
    let mut pending = checkpoints.iter().peekable();
    let mut lines = Lines::open(path)?;
    let mut prev_seq = 0;
    while let Some(line) = lines.next() {
        let line = line?;
        let number = line.number;
        if !line.complete {
            report.problem = Some(Problem::TornTail { line: number });
            break;
        }
        let parsed = match parse_line(&line.bytes) {
            Ok(parsed) => parsed,
            Err(reason) => {
                report.problem = Some(Problem::Malformed {
                    line: number,
                    reason,
                });
                break;
            }
        };
        let record = parsed.record;
        if !parsed.hash_ok {
            report.problem = Some(Problem::Edited {
                line: number,
                seq: record.seq,
            });
            break;
        }
        if !parsed.exact {
            report.problem = Some(Problem::NotCanonical {
                line: number,
                seq: record.seq,
            });
            break;
        }
        let expected_seq = prev_seq + 1;
        let prev = report.head.as_deref().unwrap_or(GENESIS_HASH);
        if record.prev != prev || record.seq != expected_seq {
            report.problem = Some(out_of_chain(number, expected_seq, record.seq, &mut lines)?);
            break;
        }
        report.records += 1;
        starts.observe(&record);
        prev_seq = record.seq;
        report.first_ts.get_or_insert(record.ts.clone());
        report.last_ts = Some(record.ts);
        report.head = Some(record.hash);
        while let Some((cp_line, cp)) = pending.next_if(|(_, cp)| cp.count <= report.records) {
            if cp.count == report.records && Some(&cp.head) != report.head.as_ref() {
                report.problem = Some(Problem::Checkpoint {
                    line: *cp_line,
                    reason: format!(
                        "record {} (line {number}) is not the one signed at {}: \
                         the log was rewritten after the checkpoint",
                        cp.count, cp.ts
                    ),
                });
                return Ok(report);
            }
            report.checkpoints += 1;
            report.signer = Some(cp.key.clone());
        }
    }
    report.unfinished = starts.finish();
    if report.problem.is_none() {
        report.problem = checkpoint_problem;
    }
    if report.problem.is_none() {
        // Only a checkpoint of an empty log (count 0, nothing to compare) can still be
        // pending with nothing missing; any other means the log lost records.
        while let Some((_, cp)) = pending.next_if(|(_, cp)| cp.count == 0) {
            report.checkpoints += 1;
            report.signer = Some(cp.key.clone());
        }
        if let Some((cp_line, cp)) = pending.next() {
            report.problem = Some(Problem::Checkpoint {
                line: *cp_line,
                reason: format!(
                    "the log has {} records but {} were signed at {}: records were removed",
                    report.records, cp.count, cp.ts
                ),
            });
        }
    }
    Ok(report)
}

/// Names what broke the chain at `line`: a seq that jumps ahead is a gap (`Missing`)
/// unless the expected record turns up later in the file (`Reordered`).
fn out_of_chain(line: u64, expected_seq: u64, found_seq: u64, rest: &mut Lines) -> Result<Problem> {
    if found_seq == expected_seq {
        return Ok(Problem::BrokenChain {
            line,
            seq: found_seq,
        });
    }
    if found_seq < expected_seq {
        return Ok(Problem::Reordered {
            line,
            expected_seq,
            found_seq,
        });
    }
    for later in rest {
        let later = later?;
        if seq_of(&later.bytes) == Some(expected_seq) {
            return Ok(Problem::Reordered {
                line,
                expected_seq,
                found_seq,
            });
        }
    }
    Ok(Problem::Missing {
        line,
        expected_seq,
        found_seq,
    })
}

fn seq_of(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(line).ok().map(|s| s.seq)
}
