//! Flooding the egress proxy: connections straight to its mounted socket (past the
//! in-sandbox bridge and its process limit), as fast as they go, each asking for a
//! destination the proxy refuses. The runner's side must stay bounded in memory, audit
//! records and time; what this probe can see from inside proves nothing about that, so it
//! only reports how much it sent (informational: always blocked).

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::{required, Finding};

/// Where every backend mounts the proxy's socket (`EgressProxy::SOCKET_INSIDE`).
const SOCKET: &str = "/run/nanoclaw/egress.sock";

/// Connections held open at once, so the proxy's connection limit is reached too.
const HELD: usize = 512;

/// Distinct refused hosts, so that refusals do not all aggregate into one kind.
const HOSTS: u64 = 5000;

/// `egress-flood SECONDS`: connects for SECONDS seconds, each connection asking to
/// CONNECT to a refused host (a third of them one fixed host, the rest distinct).
pub(crate) fn egress_flood(args: &[String]) -> Result<Finding, String> {
    let seconds: u64 = required(args, 0, "SECONDS")?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut held = VecDeque::with_capacity(HELD);
    let (mut connected, mut failed, mut last_error) = (0u64, 0u64, String::new());
    while Instant::now() < until {
        match UnixStream::connect(SOCKET) {
            Ok(mut stream) => {
                connected += 1;
                let host = if connected % 3 == 0 {
                    "flood.invalid".to_string()
                } else {
                    format!("f{}.flood.invalid", connected % HOSTS)
                };
                let _ = write!(
                    stream,
                    "CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n"
                );
                if held.len() == HELD {
                    held.pop_front();
                }
                held.push_back(stream);
            }
            Err(e) => {
                failed += 1;
                last_error = e.to_string();
            }
        }
    }
    let report = serde_json::json!({
        "connected": connected,
        "failed": failed,
        "last_error": last_error,
    });
    Ok(Finding::blocked(report.to_string()))
}
