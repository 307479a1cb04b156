//! Moving bytes between a sandbox's connection and its upstream once a request is allowed:
//! both directions at once, counted, and ended when neither direction has moved a byte for
//! the idle timeout (a stalled upstream or a client that stops reading cannot hold a
//! connection forever).
//!
//! It never looks at the bytes of a tunnel. For plain HTTP it forwards the request body
//! only up to its end (`http::Body`) and never half-closes the upstream; the response is
//! relayed until the upstream closes (the proxy asked it to with `Connection: close`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::http::Body;

const BUFFER: usize = 64 * 1024;

/// Byte counts and the time of the last progress, shared with whoever reports them.
#[derive(Debug)]
pub(crate) struct Meter {
    start: Instant,
    pub up: AtomicU64,
    pub down: AtomicU64,
    /// Nanoseconds after `start` of the last byte moved either way.
    last: AtomicU64,
}

impl Meter {
    pub(crate) fn new() -> Meter {
        Meter {
            start: Instant::now(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            last: AtomicU64::new(0),
        }
    }

    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    /// Returns once nothing has moved for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// How a relay ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Both sides finished (a tunnel), or the upstream finished its response (HTTP).
    Done,
    Idle,
    Failed(std::io::Error),
}

/// Writes `bytes` to `to`, counting them.
pub(crate) async fn send<W: AsyncWrite + Unpin>(
    to: &mut W,
    bytes: &[u8],
    counter: &AtomicU64,
    meter: &Meter,
) -> std::io::Result<()> {
    to.write_all(bytes).await?;
    counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    meter.touch();
    Ok(())
}

/// Copies `from` to `to` until `from` ends (then shuts `to` down) or, with a `body`,
/// until the body ends (then leaves `to` open).
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    counter: &AtomicU64,
    meter: &Meter,
    mut body: Option<Body>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if body.as_ref().is_some_and(Body::done) {
        return Ok(());
    }
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            if body.is_none() {
                to.shutdown().await?;
            }
            return Ok(());
        }
        meter.touch();
        let take = match &mut body {
            Some(body) => body
                .feed(&buf[..n])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            None => n,
        };
        send(&mut to, &buf[..take], counter, meter).await?;
        if body.as_ref().is_some_and(Body::done) {
            return Ok(());
        }
    }
}

/// Relays between the sandbox's `client` and `upstream` until done, idle or failed.
/// `body` is `None` for a tunnel, or the rest of a plain-HTTP request body.
pub(crate) async fn relay(
    client: &mut UnixStream,
    upstream: &mut TcpStream,
    meter: &Meter,
    idle: Duration,
    body: Option<Body>,
) -> End {
    meter.touch();
    let http = body.is_some();
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let up = pump(client_read, upstream_write, &meter.up, meter, body);
    let down = pump(upstream_read, client_write, &meter.down, meter, None);
    let transfer = async {
        if http {
            // The response decides when an HTTP exchange ends; a finished request body
            // just waits for it.
            tokio::select! {
                done = down => done,
                Err(e) = up => Err(e),
            }
        } else {
            tokio::try_join!(up, down).map(|_| ())
        }
    };
    tokio::select! {
        result = transfer => match result {
            Ok(()) => End::Done,
            Err(e) => End::Failed(e),
        },
        () = meter.idle(idle) => End::Idle,
    }
}
