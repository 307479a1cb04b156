//! Reaching out: connections, datagrams, name lookups and the raw sockets that sniff or forge
//! traffic.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use crate::attempt::{errno_of, failed, Attempts};
use crate::{required, Finding};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn tcp_connect(args: &[String]) -> Result<Finding, String> {
    each_address(args, |addr| {
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map(|_| format!("connected to {addr}"))
    })
}

pub(crate) fn udp_send(args: &[String]) -> Result<Finding, String> {
    const PAYLOAD: &[u8] = b"nanoclaw probe";
    each_address(args, |addr| {
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sent = UdpSocket::bind(local)?.send_to(PAYLOAD, addr)?;
        Ok(format!("sent {sent} bytes to {addr}"))
    })
}

/// Tries `attack` on each address HOST:PORT resolves to; the first success gets through.
/// A name that does not resolve blocks the attack as surely as a refused connection.
fn each_address(
    args: &[String],
    attack: impl Fn(SocketAddr) -> io::Result<String>,
) -> Result<Finding, String> {
    let target: String = required(args, 0, "HOST:PORT")?;
    match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return Err(format!("expected HOST:PORT, got {target:?}")),
    }
    let addrs = match target.to_socket_addrs() {
        Ok(addrs) => addrs,
        Err(e) => return Ok(Finding::blocked(format!("resolve {target}: {e}"))),
    };
    let mut failures = Vec::new();
    for addr in addrs {
        match attack(addr) {
            Ok(done) => return Ok(Finding::escaped(done)),
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    if failures.is_empty() {
        return Ok(Finding::blocked(format!("resolve {target}: no addresses")));
    }
    Ok(Finding::blocked(failures.join("; ")))
}

pub(crate) fn dns_lookup(args: &[String]) -> Result<Finding, String> {
    let name: String = required(args, 0, "NAME")?;
    Ok(match (name.as_str(), 0).to_socket_addrs() {
        Err(e) => Finding::blocked(format!("resolve {name}: {e}")),
        Ok(addrs) => {
            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            Finding::escaped(format!("resolved {name} to {}", ips.join(", ")))
        }
    })
}

pub(crate) fn raw_socket(_: &[String]) -> Result<Finding, String> {
    Ok(open_socket(
        "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)",
        libc::AF_INET,
        libc::IPPROTO_ICMP,
    ))
}

pub(crate) fn packet_socket(_: &[String]) -> Result<Finding, String> {
    // The protocol of a packet socket is in network byte order.
    let all = i32::from((libc::ETH_P_ALL as u16).to_be());
    Ok(open_socket(
        "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)",
        libc::AF_PACKET,
        all,
    ))
}

/// Opens a raw socket in a child, which closes it by exiting.
fn open_socket(what: &str, domain: i32, protocol: i32) -> Finding {
    let mut attempts = Attempts::judged_by(failed);
    attempts.in_child(what, || {
        // SAFETY: socket takes no pointers.
        errno_of(unsafe { libc::socket(domain, libc::SOCK_RAW, protocol) })
    });
    attempts.finish()
}

/// Asks the egress proxy (from `HTTPS_PROXY`) to CONNECT to each HOST:PORT and reports the
/// status it answers, plus whether a name lookup works inside, as JSON for `verify`: 403
/// means the proxy refused the destination; anything else means it let the request
/// through (502 or 504 when the destination itself was unreachable from the host).
/// Informational: always blocked.
pub(crate) fn proxy_connect(args: &[String]) -> Result<Finding, String> {
    use std::io::{BufRead, BufReader, Write};
    let proxy = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok())
        .map(|url| {
            url.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        });
    let mut results = Vec::new();
    for target in args {
        let outcome = match &proxy {
            None => Err("no proxy variable is set".to_string()),
            Some(proxy) => (|| -> io::Result<String> {
                let mut stream = TcpStream::connect(proxy.as_str())?;
                stream.set_read_timeout(Some(Duration::from_secs(20)))?;
                write!(
                    stream,
                    "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
                )?;
                let mut line = String::new();
                BufReader::new(stream).read_line(&mut line)?;
                Ok(line.trim().to_string())
            })()
            .map_err(|e| e.to_string()),
        };
        let status = outcome
            .as_ref()
            .ok()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse::<u16>().ok());
        results.push(serde_json::json!({
            "target": target,
            "status": status,
            "answer": outcome.unwrap_or_else(|e| e),
        }));
    }
    let dns = match ("example.com", 443).to_socket_addrs() {
        Ok(mut addrs) => format!("resolved to {:?}", addrs.next()),
        Err(e) => format!("failed: {e}"),
    };
    let report = serde_json::json!({ "proxy": proxy, "results": results, "dns": dns });
    Ok(Finding::blocked(report.to_string()))
}
