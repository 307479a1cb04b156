//! Measures what the audit log costs: the latency of one append from one process, and
//! the append rate of several processes writing to one log at once.
//!
//! `cargo run --release -p nanoclaw-audit --example append_rate -- [WRITERS] [RECORDS] [DIR]`
//! (defaults: 2 writers, 2000 records each, a temporary directory under $TMPDIR; give a
//! DIR on the filesystem the real log lives on, since fsync cost is the filesystem's).

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use nanoclaw_audit::AuditLog;
use nanoclaw_audit_tools::verify;
use serde_json::json;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--writer") {
        return write(PathBuf::from(&args[2]), args[3].parse()?);
    }
    let writers: usize = args.get(1).map_or(Ok(2), |a| a.parse())?;
    let records: u64 = args.get(2).map_or(Ok(2000), |a| a.parse())?;
    let dir = match args.get(3) {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };

    let floor = dir.path().join("floor");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&floor)?;
    let line = [b'x'; 600];
    let start = Instant::now();
    for _ in 0..1000 {
        file.write_all(&line)?;
        file.sync_data()?;
    }
    println!(
        "floor: {:?} per 600-byte append + fdatasync",
        start.elapsed() / 1000
    );

    let single = dir.path().join("single.jsonl");
    let log = AuditLog::open(&single)?;
    let start = Instant::now();
    for i in 0..1000 {
        log.append("bench.append", body(0, i))?;
    }
    let per_append = start.elapsed() / 1000;
    println!("1 writer: {per_append:?} per append (lock, read tail, hash, write, fdatasync)");

    // What opening costs: the walk from `/` that checks every directory, symlink and the
    // file itself, against a plain open of the same file.
    let start = Instant::now();
    for _ in 0..1000 {
        drop(std::fs::OpenOptions::new().append(true).open(&single)?);
    }
    let plain = start.elapsed() / 1000;
    let start = Instant::now();
    for _ in 0..1000 {
        drop(AuditLog::open(&single)?);
    }
    println!(
        "open: {:?} per AuditLog::open ({} components checked), {plain:?} per plain open",
        start.elapsed() / 1000,
        single.components().count()
    );

    let shared = dir.path().join("shared.jsonl");
    AuditLog::open(&shared)?;
    let start = Instant::now();
    let children = (0..writers)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .arg("--writer")
                .arg(&shared)
                .arg(records.to_string())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for mut child in children {
        if !child.wait()?.success() {
            return Err("a writer failed".into());
        }
    }
    let elapsed = start.elapsed();
    let total = records * writers as u64;
    println!(
        "{writers} writers: {total} records in {elapsed:?}: {:.0} records/s",
        total as f64 / elapsed.as_secs_f64()
    );
    let start = Instant::now();
    let report = verify(&shared, None)?;
    let took = start.elapsed();
    println!("{report}");
    println!(
        "verify: {total} records in {took:?}: {:.0} records/s (parse, exact bytes, hash, chain)",
        total as f64 / took.as_secs_f64()
    );
    let bytes = std::fs::metadata(&shared)?.len();
    println!("{} bytes per record", bytes / total);
    if !report.is_intact() || report.records != total {
        return Err("the shared log is not one intact chain of every record".into());
    }
    Ok(())
}

/// A body the size of a real `invocation.end` record.
fn body(writer: u64, i: u64) -> serde_json::Value {
    json!({
        "invocation_id": format!("{writer:016x}{i:016x}"),
        "tool": "bench",
        "exit": 0, "signal": null, "timed_out": false, "oom_killed": false,
        "duration_ms": 5,
        "usage": {"cpu_ms": 3, "max_rss_kb": 2048},
        "stdout": {"bytes": 2, "sha256": "e".repeat(64), "truncated": false},
        "stderr": {"bytes": 0, "sha256": "e".repeat(64), "truncated": false},
        "layers": ["namespaces", "seccomp", "landlock", "cgroup"],
    })
}

fn write(path: PathBuf, records: u64) -> Result<()> {
    let log = AuditLog::open(path)?;
    let writer = u64::from(std::process::id());
    for i in 0..records {
        log.append("bench.append", body(writer, i))?;
    }
    Ok(())
}
