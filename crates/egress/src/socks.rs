//! The SOCKS5 side of the proxy (RFC 1928): no authentication, the CONNECT command only,
//! targets as host names (resolved by the proxy, as `socks5h://` clients expect) or IPv4
//! and IPv6 literals.
//!
//! It only reads the request and writes the reply; the decision is the same one HTTP
//! requests get. It must never report the proxy's own outbound address to the sandbox
//! (the bound address in a success reply is all zeros).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::target::{Host, Target};

pub(crate) const SUCCEEDED: u8 = 0x00;
pub(crate) const GENERAL_FAILURE: u8 = 0x01;
pub(crate) const NOT_ALLOWED: u8 = 0x02;
pub(crate) const HOST_UNREACHABLE: u8 = 0x04;
pub(crate) const CONNECTION_REFUSED: u8 = 0x05;
pub(crate) const TTL_EXPIRED: u8 = 0x06;
const COMMAND_NOT_SUPPORTED: u8 = 0x07;
const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;

/// A SOCKS5 request the proxy will not serve; the reply (if any) has been sent.
#[derive(Debug)]
pub(crate) struct Refused {
    pub reason: String,
    /// What the request named, when it got that far.
    pub target: Option<Target>,
}

fn refused(reason: impl Into<String>) -> Refused {
    Refused {
        reason: reason.into(),
        target: None,
    }
}

/// Reads the greeting (whose version byte 0x05 the caller already consumed) and the
/// request, and returns the target. Replies to the greeting, and to a request it refuses.
pub(crate) async fn handshake<S>(stream: &mut S) -> Result<Target, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = |e: std::io::Error| refused(format!("socks5 handshake: {e}"));
    let count = stream.read_u8().await.map_err(io)?;
    let mut methods = vec![0; usize::from(count)];
    stream.read_exact(&mut methods).await.map_err(io)?;
    if !methods.contains(&0x00) {
        let _ = stream.write_all(&[0x05, 0xff]).await;
        return Err(refused("socks5 client offers no unauthenticated method"));
    }
    stream.write_all(&[0x05, 0x00]).await.map_err(io)?;

    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.map_err(io)?;
    let [version, command, _reserved, address_type] = header;
    if version != 0x05 {
        return Err(refused("socks5 request with a wrong version"));
    }
    let host = match address_type {
        0x01 => {
            let mut octets = [0u8; 4];
            stream.read_exact(&mut octets).await.map_err(io)?;
            Host::Ip(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        0x04 => {
            let mut octets = [0u8; 16];
            stream.read_exact(&mut octets).await.map_err(io)?;
            Host::Ip(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        0x03 => {
            let len = stream.read_u8().await.map_err(io)?;
            let mut name = vec![0; usize::from(len)];
            stream.read_exact(&mut name).await.map_err(io)?;
            let parsed = std::str::from_utf8(&name).ok().map(Host::parse);
            match parsed {
                Some(Ok(host)) => host,
                _ => {
                    reply(stream, NOT_ALLOWED).await;
                    return Err(refused(format!(
                        "{:?} is not a valid host name or ip literal",
                        String::from_utf8_lossy(&name)
                    )));
                }
            }
        }
        _ => {
            reply(stream, ADDRESS_TYPE_NOT_SUPPORTED).await;
            return Err(refused("socks5 address type not supported"));
        }
    };
    let port = stream.read_u16().await.map_err(io)?;
    let target = Target { host, port };
    if command != 0x01 {
        reply(stream, COMMAND_NOT_SUPPORTED).await;
        return Err(Refused {
            reason: "only the socks5 connect command is supported".into(),
            target: Some(target),
        });
    }
    Ok(target)
}

/// Sends a reply with `code` and an all-zero bound address. Errors are ignored: a client
/// that went away needs no answer.
pub(crate) async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, code: u8) {
    let _ = stream
        .write_all(&[0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0])
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(client_bytes: &[u8]) -> (Result<Target, Refused>, Vec<u8>) {
        let (mut proxy, mut client) = tokio::io::duplex(1024);
        client.write_all(client_bytes).await.unwrap();
        let result = handshake(&mut proxy).await;
        drop(proxy);
        let mut replies = Vec::new();
        client.read_to_end(&mut replies).await.unwrap();
        (result, replies)
    }

    #[tokio::test]
    async fn hostname_request() {
        let mut bytes = vec![1, 0x00, 0x05, 0x01, 0x00, 0x03, 8];
        bytes.extend_from_slice(b"API.test");
        bytes.extend_from_slice(&443u16.to_be_bytes());
        let (target, replies) = run(&bytes).await;
        assert_eq!(target.unwrap().to_string(), "api.test:443");
        assert_eq!(replies, [0x05, 0x00]);
    }

    #[tokio::test]
    async fn ip_requests() {
        let (t, _) = run(&[1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]).await;
        assert_eq!(t.unwrap().to_string(), "127.0.0.1:8080");
        let mut v6 = vec![1, 0, 5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        assert_eq!(run(&v6).await.0.unwrap().to_string(), "[::1]:80");
    }

    #[tokio::test]
    async fn refusals_reply_with_their_codes() {
        let (r, replies) = run(&[1, 0x02]).await;
        assert!(r.is_err());
        assert_eq!(replies, [0x05, 0xff]);
        let (r, replies) = run(&[1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80]).await;
        assert!(r.unwrap_err().reason.contains("connect command"));
        assert_eq!(&replies[2..4], [0x05, COMMAND_NOT_SUPPORTED]);
        let (r, replies) = run(&[1, 0, 5, 1, 0, 9]).await;
        assert!(r.is_err());
        assert_eq!(&replies[2..4], [0x05, ADDRESS_TYPE_NOT_SUPPORTED]);
        let (r, replies) = run(&[1, 0, 5, 1, 0, 3, 5, b'1', b'2', b'7', b'.', b'1', 0, 80]).await;
        assert!(r.unwrap_err().reason.contains("not a valid host"));
        assert_eq!(&replies[2..4], [0x05, NOT_ALLOWED]);
    }
}
