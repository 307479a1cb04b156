//! Whether an address is this host's own: one the kernel would deliver to the host itself,
//! such as the public address of `eth0` or an address in a range the classifier passes
//! (a documentation range on a test VM). The classifier (`nanoclaw_spec::address`) only
//! knows ranges; this asks the kernel, at the moment of the decision, so an address added
//! to an interface after the proxy started counts too.
//!
//! The question is put as the kernel answers it for a bind: binding a socket to an address
//! succeeds exactly when the address is local (or, with `net.ipv4.ip_nonlocal_bind` /
//! `net.ipv6.ip_nonlocal_bind` set, always, which is then reported as "cannot tell").
//! This module must never call an address remote when the kernel could not say: every
//! error but "address not available" counts as local.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Why `ip` is refused as the host's own, or `None` when it is not one of its addresses.
pub(crate) fn own_address(ip: IpAddr) -> Option<String> {
    // An IPv4-mapped address reaches the IPv4 address inside it.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match UdpSocket::bind(SocketAddr::new(ip, 0)) {
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => None,
        Err(e) => Some(format!(
            "cannot tell whether it is this host's own address: {e}"
        )),
        Ok(_) if nonlocal_bind(ip) => Some(
            "cannot tell whether it is this host's own address (ip_nonlocal_bind is set)".into(),
        ),
        Ok(_) => Some("this host's own address".into()),
    }
}

/// Whether the kernel lets any address be bound, which makes the bind test say nothing.
fn nonlocal_bind(ip: IpAddr) -> bool {
    let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    let path = format!("/proc/sys/net/{family}/ip_nonlocal_bind");
    std::fs::read_to_string(path).map_or(true, |value| value.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_an_unassigned_address_is_not() {
        assert!(own_address("127.0.0.1".parse().unwrap()).is_some());
        assert!(own_address("::ffff:127.0.0.1".parse().unwrap()).is_some());
        // Documentation space that no test network or VM interface holds.
        assert_eq!(own_address("198.51.100.254".parse().unwrap()), None);
    }
}
