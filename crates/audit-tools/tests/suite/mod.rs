mod checkpoint;
mod concurrency;
mod crash;
mod failure;
mod paths;
mod query;
mod tamper;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nanoclaw_audit::AuditLog;
use nanoclaw_audit_tools::{verify, VerifyReport};
use serde_json::json;

/// A log in a fresh temporary directory.
pub struct LogDir {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl LogDir {
    pub fn new() -> LogDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/nanoclaw/audit.jsonl");
        LogDir { _dir: dir, path }
    }

    /// A log holding `n` records of kind `test.write`.
    pub fn with_records(n: u64) -> LogDir {
        let dir = LogDir::new();
        dir.append(n);
        dir
    }

    pub fn append(&self, n: u64) {
        let log = AuditLog::open(&self.path).unwrap();
        for i in 0..n {
            log.append("test.write", json!({"i": i, "note": "hello"}))
                .unwrap();
        }
    }

    pub fn verify(&self) -> VerifyReport {
        verify(&self.path, None).unwrap()
    }

    pub fn lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.path).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    pub fn write_lines(&self, lines: &[String]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&self.path, text).unwrap();
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

/// Starts this test binary as a writer process appending `count` records (forever if
/// `None`) to `path`, printing each seq once it is reported written.
pub fn spawn_writer(path: &Path, id: usize, count: Option<u64>) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env("AUDIT_WRITER", path)
        .env("AUDIT_WRITER_ID", id.to_string())
        .env(
            "AUDIT_WRITER_COUNT",
            count.map_or("forever".into(), |c| c.to_string()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The seqs a writer reported written, from the complete `written N` lines of its stdout
/// (the test harness prints there too, and may start a line before the writer does).
pub fn reported_seqs(output: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(output);
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter_map(|l| l.split_once("written ")?.1.parse().ok())
        .collect()
}

pub fn run_writer_if_asked() {
    let Some(path) = std::env::var_os("AUDIT_WRITER") else {
        return;
    };
    let id: u64 = std::env::var("AUDIT_WRITER_ID").unwrap().parse().unwrap();
    let count = std::env::var("AUDIT_WRITER_COUNT")
        .unwrap()
        .parse()
        .unwrap_or(u64::MAX);
    let log = AuditLog::open(&path).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        match log.append("test.write", json!({"writer": id, "i": i})) {
            Ok(appended) => {
                writeln!(out, "written {}", appended.seq).unwrap();
                out.flush().unwrap();
            }
            Err(e) => {
                eprintln!("writer {id}: {e}");
                std::process::exit(3);
            }
        }
    }
}
