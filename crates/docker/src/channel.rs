//! The runner's side of the container init's two named pipes (see
//! `nanoclaw_native::container`): the report pipe, from which it reads the init's
//! messages, and the lifeline, whose write end it holds for as long as it lives.
//!
//! Both are created in the run's private directory and mounted read-only into the
//! container, openable by the sandbox user only until the init has opened them and said
//! `Ready`: then [`InitChannel::go`] takes every permission off both (no process in the
//! container has a capability to override that, or a writable mount to change it back) and
//! only after that sends the byte that lets the command start. The command therefore can
//! neither write a report nor hold the lifeline open.
//!
//! This must never take anything from the command's own streams for the init's word, and
//! never let the command start before both pipes are sealed.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nanoclaw_spec::container::ContainerMessage;
use nanoclaw_spec::BackendError;
use rustix::fs::{Mode, OFlags};
use tokio::net::unix::pipe::Receiver;

/// The report pipe's name in a run's directory.
pub const REPORT: &str = "report";
/// The lifeline's name in a run's directory.
pub const LIFELINE: &str = "lifeline";
/// The longest line the init writes (a setup error with a path); longer is not its.
const LINE_MAX: usize = 64 * 1024;

/// The runner's ends of the pipes to one container's init.
#[derive(Debug)]
pub struct InitChannel {
    report_path: PathBuf,
    lifeline_path: PathBuf,
    report: Receiver,
    /// Held, never written but for the secrets frame and `GO`, until this process ends: its closing (by the
    /// kernel, however this process dies) is what the init watches for.
    lifeline: OwnedFd,
    pending: Vec<u8>,
    messages: VecDeque<ContainerMessage>,
}

impl InitChannel {
    /// Creates both pipes in `dir` (a run's private directory). Must run inside the
    /// backend's runtime.
    pub fn create(dir: &Path) -> Result<InitChannel, BackendError> {
        let report_path = dir.join(REPORT);
        let lifeline_path = dir.join(LIFELINE);
        // The sandbox user may write the report and read the lifeline until `go`; it is
        // never the owner, whose bits are the runner's.
        let report = fifo(&report_path, 0o622, OFlags::RDONLY)?;
        // Read-write: a write-only open would fail before the init has a read end, and this
        // end is never read from.
        let lifeline = fifo(&lifeline_path, 0o644, OFlags::RDWR)?;
        let report = Receiver::from_owned_fd(report)
            .map_err(|e| BackendError::io(format!("watch {}", report_path.display()), e))?;
        Ok(InitChannel {
            report_path,
            lifeline_path,
            report,
            lifeline,
            pending: Vec::new(),
            messages: VecDeque::new(),
        })
    }

    /// The host paths of the report pipe and the lifeline.
    pub fn paths(&self) -> [&Path; 2] {
        [&self.report_path, &self.lifeline_path]
    }

    /// The init's next message; waits for it (forever once the init is gone: the caller
    /// races it against the container's exit).
    pub async fn next(&mut self) -> Option<ContainerMessage> {
        loop {
            if let Some(message) = self.messages.pop_front() {
                return Some(message);
            }
            self.report.readable().await.ok()?;
            let mut chunk = [0u8; 4096];
            match self.report.try_read(&mut chunk) {
                Ok(0) => {
                    // End of file: no writer now (before the init opened it, or after it
                    // ended). Nothing more comes until a writer does.
                    std::future::pending::<()>().await;
                }
                Ok(n) => self.take(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    }

    /// Seals both pipes (mode 0) and lets the command start.
    /// `frame` (`secrets_frame`: the `file` and `env` secrets' values, then `GO`) goes to
    /// the init in one write, after the seal: only the init can hold the lifeline then.
    pub fn go(&self, frame: &[u8]) -> Result<(), BackendError> {
        for path in self.paths() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000))
                .map_err(|e| BackendError::io(format!("seal {}", path.display()), e))?;
        }
        match rustix::io::write(&self.lifeline, frame) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(_) => Err(BackendError::io(
                "start the command",
                std::io::Error::other("the lifeline took no byte"),
            )),
            Err(e) => Err(BackendError::io("start the command", e.into())),
        }
    }

    /// Every message still unread, without waiting (the init has ended).
    pub fn rest(&mut self) -> Vec<ContainerMessage> {
        let mut chunk = [0u8; 4096];
        // Straight from the (non-blocking) descriptor: the runtime may not have seen the
        // last readiness yet.
        while let Ok(n) = rustix::io::read(self.report.as_fd(), &mut chunk) {
            if n == 0 {
                break;
            }
            self.take(&chunk[..n]);
        }
        self.messages.drain(..).collect()
    }

    /// Adds `bytes` and parses every whole line. A line that is not a message, or a run of
    /// bytes longer than any message without a line end, is dropped: only the init writes
    /// here, so neither happens but by a bug.
    fn take(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if let Ok(message) = serde_json::from_slice(&line[..end]) {
                self.messages.push_back(message);
            }
        }
        if self.pending.len() > LINE_MAX {
            self.pending.clear();
        }
    }
}

/// A named pipe at `path` with `mode`, opened (non-blocking, close-on-exec) with `flags`.
fn fifo(path: &Path, mode: u32, flags: OFlags) -> Result<OwnedFd, BackendError> {
    let what = || format!("create the init's pipe {}", path.display());
    rustix::fs::mkfifoat(rustix::fs::CWD, path, Mode::from_raw_mode(0o600))
        .map_err(|e| BackendError::io(what(), e.into()))?;
    // Set explicitly: the umask must not decide who may open it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| BackendError::io(what(), e))?;
    rustix::fs::open(
        path,
        flags | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| BackendError::io(what(), e.into()))
}
