//! One sandbox's record path, bounded: decisions reach the caller through a bounded queue,
//! and refusals, which a sandbox can cause as fast as it can connect, are aggregated so
//! that a flood costs a bounded number of records and bounded memory.
//!
//! A refusal of a new kind (protocol, host, port, reason) in an interval is recorded at
//! once; its repeats in that interval are only counted, and `flush` (every interval, and
//! at the end) turns the count into one record with `count`. At most `MAX_KINDS` kinds are
//! tracked per interval and at most the budget (`ProxyConfig::max_refusal_records`) of
//! refusal records are written per sandbox; everything beyond is counted into one
//! `Suppressed` record at the end.
//!
//! This module must never let a sandbox grow the proxy's memory or the audit log without
//! bound, never make a refusal wait (the accept loop and the refused connection go on),
//! and never drop an allowed connection's records: those wait for room in the queue
//! instead, which slows only that sandbox's own connections (backpressure).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::decision::{Decision, Phase, Protocol};

/// Distinct kinds of refusal tracked in one interval; more are only counted.
const MAX_KINDS: usize = 64;

/// What makes two refusals identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    protocol: Protocol,
    host: String,
    port: u16,
    reason: String,
}

impl Kind {
    fn of(decision: &Decision) -> Kind {
        Kind {
            protocol: decision.protocol,
            host: decision.host.clone(),
            port: decision.port,
            reason: decision.reason.clone(),
        }
    }
}

/// A kind seen this interval: its first record, and the repeats not recorded yet.
struct Seen {
    first: Decision,
    unrecorded: u64,
}

struct Tally {
    seen: HashMap<Kind, Seen>,
    /// Refusal records this run may still write.
    budget: usize,
    /// Refusals that got no record of their own.
    suppressed: u64,
}

pub(crate) struct Ledger {
    queue: mpsc::Sender<Decision>,
    tally: Mutex<Tally>,
}

impl Ledger {
    /// Sends into `queue`, writing at most `budget` refusal records in all.
    pub(crate) fn new(queue: mpsc::Sender<Decision>, budget: usize) -> Ledger {
        Ledger {
            queue,
            tally: Mutex::new(Tally {
                seen: HashMap::new(),
                budget,
                suppressed: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an allowed connection's `Decided` or `Closed` record, waiting for room.
    pub(crate) async fn record(&self, decision: Decision) {
        // A caller that dropped its receiver wants no records; the proxy carries on.
        let _ = self.queue.send(decision).await;
    }

    /// Records or counts a refusal; never waits.
    pub(crate) fn refuse(&self, decision: Decision) {
        let mut tally = self.lock();
        let kind = Kind::of(&decision);
        if let Some(seen) = tally.seen.get_mut(&kind) {
            seen.unrecorded += 1;
            return;
        }
        if tally.seen.len() >= MAX_KINDS || tally.budget == 0 {
            tally.suppressed += 1;
            return;
        }
        let unrecorded = match self.queue.try_send(decision.clone()) {
            Ok(()) => {
                tally.budget -= 1;
                0
            }
            // The queue is full: the next flush records it, with its repeats.
            Err(mpsc::error::TrySendError::Full(_)) => 1,
            Err(mpsc::error::TrySendError::Closed(_)) => 0,
        };
        tally.seen.insert(
            kind,
            Seen {
                first: decision,
                unrecorded,
            },
        );
    }

    /// Ends the interval: one record for each kind's unrecorded repeats (while the budget
    /// lasts; the rest are counted as suppressed).
    pub(crate) async fn flush(&self) {
        let records = {
            let mut tally = self.lock();
            let mut seen: Vec<Seen> = std::mem::take(&mut tally.seen).into_values().collect();
            seen.sort_by_key(|s| s.first.connection);
            let mut records = Vec::new();
            for Seen { first, unrecorded } in seen {
                if unrecorded == 0 {
                    continue;
                }
                if tally.budget == 0 {
                    tally.suppressed += unrecorded;
                    continue;
                }
                tally.budget -= 1;
                records.push(Decision {
                    count: unrecorded,
                    ..first
                });
            }
            records
        };
        for record in records {
            self.record(record).await;
        }
    }

    /// Flushes, then records how many refusals got no record of their own, if any.
    pub(crate) async fn finish(&self) {
        self.flush().await;
        let suppressed = std::mem::take(&mut self.lock().suppressed);
        if suppressed > 0 {
            self.record(Decision {
                connection: 0,
                phase: Phase::Suppressed,
                allowed: false,
                protocol: Protocol::Unknown,
                host: String::new(),
                port: 0,
                resolved: None,
                method: None,
                reason: format!(
                    "{suppressed} refusals past the limit of {MAX_KINDS} kinds a second \
                     or of the run's refusal records"
                ),
                bytes_up: 0,
                bytes_down: 0,
                elapsed_ms: 0,
                count: suppressed,
                secret: None,
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(connection: u64, host: &str) -> Decision {
        Decision {
            connection,
            phase: Phase::Decided,
            allowed: false,
            protocol: Protocol::Connect,
            host: host.into(),
            port: 443,
            resolved: None,
            method: None,
            reason: "not allowed".into(),
            bytes_up: 0,
            bytes_down: 0,
            elapsed_ms: 0,
            count: 1,
            secret: None,
        }
    }

    fn drain(rx: &mut mpsc::Receiver<Decision>) -> Vec<Decision> {
        let mut out = Vec::new();
        while let Ok(d) = rx.try_recv() {
            out.push(d);
        }
        out
    }

    fn block_on(future: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future);
    }

    #[test]
    fn repeats_collapse_into_one_counted_record_per_interval() {
        let (tx, mut rx) = mpsc::channel(16);
        let ledger = Ledger::new(tx, 100);
        for id in 0..1000 {
            ledger.refuse(refusal(id, "a.test"));
        }
        ledger.refuse(refusal(1000, "b.test"));
        block_on(ledger.finish());
        let records = drain(&mut rx);
        let summary: Vec<(&str, u64)> =
            records.iter().map(|r| (r.host.as_str(), r.count)).collect();
        assert_eq!(summary, [("a.test", 1), ("b.test", 1), ("a.test", 999)]);
    }

    #[test]
    fn past_the_budget_refusals_are_only_counted() {
        let (tx, mut rx) = mpsc::channel(1024);
        let ledger = Ledger::new(tx, 10);
        for id in 0..500 {
            ledger.refuse(refusal(id, &format!("h{id}.test")));
        }
        block_on(ledger.finish());
        let records = drain(&mut rx);
        assert_eq!(records.len(), 11, "{records:?}");
        let last = records.last().unwrap();
        assert_eq!((last.phase, last.count), (Phase::Suppressed, 490));
        let total: u64 = records.iter().map(|r| r.count).sum();
        assert_eq!(total, 500);
    }

    #[test]
    fn a_full_queue_never_blocks_a_refusal_and_loses_no_count() {
        let (tx, mut rx) = mpsc::channel(1);
        let ledger = Ledger::new(tx, 100);
        for id in 0..10 {
            ledger.refuse(refusal(id, &format!("h{}.test", id % 2)));
        }
        let first = drain(&mut rx);
        assert_eq!(first.len(), 1);
        let tail = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(d) = rx.blocking_recv() {
                got.push(d);
            }
            got
        });
        block_on(ledger.finish());
        drop(ledger);
        let rest = tail.join().unwrap();
        let total: u64 = first.iter().chain(&rest).map(|r| r.count).sum();
        assert_eq!(total, 10, "{first:?} {rest:?}");
    }
}
