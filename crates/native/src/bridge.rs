//! The in-sandbox end of egress: a loopback TCP listener inside the sandbox's network
//! namespace whose every connection is relayed, byte for byte, to the host proxy's Unix
//! socket mounted into the sandbox. It lets ordinary clients use `HTTP_PROXY` while the
//! namespace itself has no route anywhere.
//!
//! It runs inside the sandbox, under every restriction the command has, so it grants
//! nothing: the proxy decides. It must never interpret the bytes it relays.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nanoclaw_spec::SetupError;
use rustix::event::{PollFd, PollFlags};

use crate::sys::{self, Forked};

/// Listens on `127.0.0.1:port` and forks the bridge process. Returns once the port is
/// bound, so the command can connect as soon as it starts.
pub(crate) fn start(port: u16, socket: &Path) -> Result<(), SetupError> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| SetupError::io("listen on the egress bridge port", e))?;
    match sys::fork_process().map_err(|e| SetupError::io("start the egress bridge", e))? {
        Forked::Child => serve(&listener, socket),
        Forked::Parent(_) => Ok(()),
    }
}

/// Accepts forever; each connection gets its own process, which ends with the connection.
fn serve(listener: &TcpListener, socket: &Path) -> ! {
    loop {
        while let Ok(Some(_)) = sys::wait4(-1, libc::WNOHANG) {}
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        if let Ok(Forked::Child) = sys::fork_process() {
            let code = match UnixStream::connect(socket) {
                Ok(upstream) => relay(client, upstream),
                Err(_) => 1,
            };
            sys::exit_now(code);
        }
    }
}

/// Copies both ways until both directions have ended, passing half-closes along.
fn relay(mut client: TcpStream, mut upstream: UnixStream) -> i32 {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut client_open, mut upstream_open) = (true, true);
    while client_open || upstream_open {
        let mut fds = Vec::with_capacity(2);
        if client_open {
            fds.push(PollFd::new(&client, PollFlags::IN));
        }
        if upstream_open {
            fds.push(PollFd::new(&upstream, PollFlags::IN));
        }
        if rustix::event::poll(&mut fds, None).is_err() {
            return 1;
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut ready = ready.into_iter();
        if client_open && ready.next() == Some(true) {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = upstream.shutdown(Shutdown::Write);
                }
                Ok(n) => {
                    if upstream.write_all(&buf[..n]).is_err() {
                        return 1;
                    }
                }
            }
        }
        if upstream_open && ready.next() == Some(true) {
            match upstream.read(&mut buf) {
                Ok(0) | Err(_) => {
                    upstream_open = false;
                    let _ = client.shutdown(Shutdown::Write);
                }
                Ok(n) => {
                    if client.write_all(&buf[..n]).is_err() {
                        return 1;
                    }
                }
            }
        }
    }
    0
}
