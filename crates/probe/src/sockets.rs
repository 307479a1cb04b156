//! Socket families and protocols a sandbox filter keeps out of reach (netlink beyond
//! NETLINK_ROUTE, IP protocols beyond TCP, UDP and ICMP, line disciplines), and the one
//! netlink use every tool needs: listing its own interfaces.
//!
//! Only a refusal counts as blocked: an error like EPROTONOSUPPORT means the call reached
//! the kernel's socket code (and may have loaded a module for it). Each socket is opened in
//! a child, which closes it by exiting.

use std::ffi::CStr;

use libc::c_int;

use crate::attempt::{errno_of, refused, Attempts};
use crate::Finding;

/// Netlink protocols that reach host-wide or root-only kernel interfaces.
const NETLINK_REFUSED: [(&str, c_int); 6] = [
    ("NETLINK_AUDIT", libc::NETLINK_AUDIT),
    ("NETLINK_NETFILTER", libc::NETLINK_NETFILTER),
    ("NETLINK_XFRM", libc::NETLINK_XFRM),
    ("NETLINK_SOCK_DIAG", libc::NETLINK_SOCK_DIAG),
    ("NETLINK_GENERIC", libc::NETLINK_GENERIC),
    ("NETLINK_KOBJECT_UEVENT", libc::NETLINK_KOBJECT_UEVENT),
];

/// IP protocols whose modules the kernel loads on demand, and where its network bugs were.
const IP_REFUSED: [(&str, c_int, c_int, c_int); 4] = [
    (
        "AF_INET SCTP",
        libc::AF_INET,
        libc::SOCK_STREAM,
        libc::IPPROTO_SCTP,
    ),
    (
        "AF_INET6 SCTP",
        libc::AF_INET6,
        libc::SOCK_SEQPACKET,
        libc::IPPROTO_SCTP,
    ),
    (
        "AF_INET DCCP",
        libc::AF_INET,
        libc::SOCK_DCCP,
        libc::IPPROTO_DCCP,
    ),
    (
        "AF_INET UDP-Lite",
        libc::AF_INET,
        libc::SOCK_DGRAM,
        libc::IPPROTO_UDPLITE,
    ),
];

fn open_in_child(attempts: &mut Attempts, what: &str, domain: c_int, kind: c_int, protocol: c_int) {
    attempts.in_child(what, || {
        // SAFETY: socket takes no pointers.
        errno_of(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) })
    });
}

pub(crate) fn netlink(_: &[String]) -> Result<Finding, String> {
    let mut attempts = Attempts::judged_by(refused);
    for (name, protocol) in NETLINK_REFUSED {
        let what = format!("socket(AF_NETLINK, SOCK_RAW, {name})");
        open_in_child(
            &mut attempts,
            &what,
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            protocol,
        );
    }
    Ok(attempts.finish())
}

pub(crate) fn ip_protocols(_: &[String]) -> Result<Finding, String> {
    let mut attempts = Attempts::judged_by(refused);
    for (name, domain, kind, protocol) in IP_REFUSED {
        let what = format!("socket({name})");
        open_in_child(&mut attempts, &what, domain, kind, protocol);
    }
    Ok(attempts.finish())
}

/// TIOCSETD on descriptor -1: a filter refuses it; EBADF means the request reached the
/// kernel, where on a real terminal it would attach (and load) a line discipline.
pub(crate) fn tiocsetd(_: &[String]) -> Result<Finding, String> {
    let mut attempts = Attempts::judged_by(refused);
    let n_tty: c_int = 0;
    attempts.in_child("ioctl(-1, TIOCSETD, N_TTY)", || {
        // SAFETY: the argument points to an int that lives until the call returns.
        errno_of(unsafe { libc::ioctl(-1, libc::TIOCSETD, &n_tty) })
    });
    Ok(attempts.finish())
}

/// Lists the interfaces `getifaddrs` returns (over NETLINK_ROUTE, in glibc and musl alike).
/// Informational: always blocked; the detail is `interfaces: lo, ...` or `getifaddrs: ERROR`.
pub(crate) fn interfaces(_: &[String]) -> Result<Finding, String> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `list` is a valid out-pointer; on success it owns a list freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        let error = std::io::Error::last_os_error();
        return Ok(Finding::blocked(format!("getifaddrs: {error}")));
    }
    let mut names = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, not yet freed; its name is
        // a NUL-terminated string or null.
        let node = unsafe { &*at };
        if !node.ifa_name.is_null() {
            // SAFETY: as above.
            let name = unsafe { CStr::from_ptr(node.ifa_name) };
            names.push(name.to_string_lossy().into_owned());
        }
        at = node.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once; no node is used afterwards.
    unsafe { libc::freeifaddrs(list) };
    names.sort();
    names.dedup();
    Ok(Finding::blocked(format!(
        "interfaces: {}",
        names.join(", ")
    )))
}
