//! The command's standard streams: stdout and stderr captured up to the output limit (or
//! passed through to ours), and our stdin passed in when the caller asks.
//!
//! Captures are bounded exactly as the native backend bounds them: the first
//! `limits.output_bytes` of each stream are kept, the rest is counted and dropped, so an
//! output flood costs the caller no memory.

use std::time::Duration;

use nanoclaw_spec::{Capture, Captured, Redactor, SandboxSecret};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Where one stream goes.
pub struct Sink {
    capture: Capture,
    /// The invocation's secret values, replaced before the bytes go anywhere.
    redactor: Redactor,
    target: Target,
    /// Our own stream went away (a closed pipe); the rest is dropped, the run goes on.
    broken: bool,
}

#[derive(Clone, Copy)]
pub enum Target {
    Stdout,
    Stderr,
}

impl Sink {
    pub fn new(capture: bool, limit: u64, target: Target, secrets: &[SandboxSecret]) -> Self {
        Sink {
            capture: Capture::new(capture, limit),
            redactor: Redactor::new(secrets),
            target,
            broken: false,
        }
    }

    pub async fn push(&mut self, bytes: &[u8]) {
        if self.redactor.is_active() {
            let clean = self.redactor.push(bytes);
            self.pass(&clean).await;
        } else {
            self.pass(bytes).await;
        }
    }

    async fn pass(&mut self, bytes: &[u8]) {
        self.capture.push(bytes);
        if self.capture.is_capturing() || self.broken {
            return;
        }
        // tokio's stdout and stderr write on a blocking thread, so a slow reader of ours
        // never stalls the timeout.
        let written = match self.target {
            Target::Stdout => write_all(tokio::io::stdout(), bytes).await,
            Target::Stderr => write_all(tokio::io::stderr(), bytes).await,
        };
        self.broken = written.is_err();
    }

    /// The capture, and the redactions made, by secret name.
    pub async fn finish(mut self) -> (Captured, std::collections::BTreeMap<String, u64>) {
        let rest = self.redactor.finish();
        self.pass(&rest).await;
        (self.capture.finish(), self.redactor.counts())
    }
}

async fn write_all(mut out: impl AsyncWriteExt + Unpin, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes).await?;
    out.flush().await
}

/// How often the stdin reader checks whether the run is over.
const STDIN_POLL: Duration = Duration::from_millis(100);

/// Reads our stdin on a thread of its own into a channel that ends at end of file. The
/// thread reads only when stdin is readable and stops within [`STDIN_POLL`] of the receiver
/// being dropped, so a finished run stops taking our input.
pub fn stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(4);
    std::thread::spawn(move || {
        let stdin = rustix::stdio::stdin();
        let mut buffer = vec![0u8; 64 * 1024];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: STDIN_POLL.as_nanos() as i64,
        };
        loop {
            if sender.is_closed() {
                return;
            }
            let mut fds = [rustix::event::PollFd::new(
                &stdin,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(_) => return,
            }
            match rustix::io::read(stdin, &mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(_) => return,
            }
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_capture_keeps_the_first_bytes_and_counts_all() {
        let captured = run(async {
            let mut sink = Sink::new(true, 5, Target::Stdout, &[]);
            sink.push(b"abc").await;
            sink.push(b"defgh").await;
            sink.finish().await.0
        });
        assert_eq!(
            captured,
            Captured {
                text: "abcde".into(),
                total_bytes: 8,
                truncated: true
            }
        );
    }

    #[test]
    fn a_capture_at_the_limit_is_not_truncated() {
        let captured = run(async {
            let mut sink = Sink::new(true, 3, Target::Stderr, &[]);
            sink.push(b"abc").await;
            sink.finish().await.0
        });
        assert!(!captured.truncated);
        assert_eq!(captured.text, "abc");
    }
}
