//! The one classifier of internal addresses: everything that is not a public unicast
//! destination. The egress proxy refuses to connect to what it names, so that an allowed
//! *name* can never be pointed (by its owner, by a rebinding DNS server, or by
//! `/etc/hosts`) at the host itself, the local network or a cloud metadata service; the
//! policy lint flags an allow entry that names such an address. Both use this module and
//! nothing else, so the two can never disagree (a second, shorter list was a hole).
//!
//! Pure functions, no I/O: the host's own public addresses are the proxy's business
//! (it asks the kernel at connect time). The only way to reach a refused address is a rule
//! that names that exact IP literal (`127.0.0.1:8080`); that decision is made by the
//! proxy's policy, never here. This module must never allow an address because of how it
//! is written: IPv4-mapped, NAT64 and 6to4 forms are judged by the IPv4 address inside
//! them, and every other IPv6 form that embeds an IPv4 address or is not global unicast
//! (2000::/3) is refused outright.
//!
//! Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)
//! are *not* refused: they are never routed on the internet, so a host that reaches one has
//! configured it on purpose (the tests use them for upstreams in their own namespace).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, e.g. "loopback" or "loopback (ipv4-mapped)".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub kind: &'static str,
    /// The IPv6 form that carried a refused IPv4 address, if any.
    pub via: Option<&'static str>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            Some(via) => write!(f, "{} ({via})", self.kind),
            None => f.write_str(self.kind),
        }
    }
}

/// Names that are metadata services whatever they resolve to.
const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata"];

const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Whether a (normalised) name is refused before any lookup.
pub fn refused_name(name: &str) -> Option<&'static str> {
    METADATA_NAMES
        .contains(&name)
        .then_some("cloud metadata endpoint")
}

/// Why `ip` must not be connected to, or `None` for a public unicast address.
pub fn refusal(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4).map(|kind| Refusal { kind, via: None }),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from_be_bytes(net) & mask
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const TABLE: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "this network (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared address space (cgnat)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "ietf protocol assignments"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    if ip == METADATA_V4 {
        return Some("cloud metadata endpoint");
    }
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, kind)| *kind)
}

fn embedded_v4(bits: u128, shift: u32) -> Ipv4Addr {
    // Truncation is the point: the 32 bits at `shift` are the embedded address.
    Ipv4Addr::from((bits >> shift) as u32)
}

fn refusal_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let bits = u128::from(ip);
    let in_net = |net: u128, prefix: u32| {
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
        bits & mask == net & mask
    };
    let own = |kind| Some(Refusal { kind, via: None });
    let inner = |v4: Ipv4Addr, via| {
        refusal_v4(v4).map(|kind| Refusal {
            kind,
            via: Some(via),
        })
    };
    if ip == METADATA_V6 {
        return own("cloud metadata endpoint");
    }
    if ip == Ipv6Addr::UNSPECIFIED {
        return own("unspecified");
    }
    if ip == Ipv6Addr::LOCALHOST {
        return own("loopback");
    }
    // ::ffff:0:0/96, IPv4-mapped: connecting to it is connecting to the IPv4 address.
    if in_net(0xffff << 32, 96) {
        return inner(embedded_v4(bits, 0), "ipv4-mapped");
    }
    // Every other address whose first 64 bits are zero (IPv4-compatible ::/96,
    // IPv4-translated ::ffff:0:0:0/96, and the rest of ::/64) is deprecated or reserved.
    if in_net(0, 64) {
        return own("ipv4-compatible or reserved");
    }
    // 64:ff9b::/96, well-known NAT64 prefix: a NAT64 gateway forwards to the IPv4 inside.
    if in_net(0x0064_ff9b << 96, 96) {
        return inner(embedded_v4(bits, 0), "nat64");
    }
    if in_net(0x0064_ff9b_0001 << 80, 48) {
        return own("local-use nat64");
    }
    // 2002::/16, 6to4: the IPv4 address of the relay sits in bits 16..48.
    if in_net(0x2002 << 112, 16) {
        return inner(embedded_v4(bits, 80), "6to4");
    }
    const TABLE: &[(u128, u32, &str)] = &[
        (0x2001_0000 << 96, 32, "teredo"),
        (0x0100 << 112, 64, "discard-only"),
        (0xfc00 << 112, 7, "unique-local"),
        (0xfe80 << 112, 10, "link-local"),
        (0xfec0 << 112, 10, "site-local"),
        (0xff00 << 112, 8, "multicast"),
    ];
    if let Some((_, _, kind)) = TABLE.iter().find(|(net, prefix, _)| in_net(*net, *prefix)) {
        return own(kind);
    }
    if !in_net(0x2000 << 112, 3) {
        return own("reserved (not global unicast)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<String> {
        refusal(ip.parse().unwrap()).map(|r| r.to_string())
    }

    #[test]
    fn refused_v4() {
        for (ip, want) in [
            ("0.0.0.0", "this network (0.0.0.0/8)"),
            ("0.1.2.3", "this network (0.0.0.0/8)"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "shared address space (cgnat)"),
            ("100.127.255.255", "shared address space (cgnat)"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "cloud metadata endpoint"),
            ("169.254.1.1", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.170", "ietf protocol assignments"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
        ] {
            assert_eq!(kind(ip).as_deref(), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_and_documentation_v4_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "192.0.1.1",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.10",
            "223.255.255.255",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn refused_v6_including_forms_that_carry_v4() {
        for (ip, want) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fd00:ec2::254", "cloud metadata endpoint"),
            ("::ffff:127.0.0.1", "loopback (ipv4-mapped)"),
            (
                "::ffff:169.254.169.254",
                "cloud metadata endpoint (ipv4-mapped)",
            ),
            ("::ffff:10.0.0.1", "private (ipv4-mapped)"),
            ("::127.0.0.1", "ipv4-compatible or reserved"),
            ("::8.8.8.8", "ipv4-compatible or reserved"),
            ("::ffff:0:7f00:1", "ipv4-compatible or reserved"),
            ("64:ff9b::127.0.0.1", "loopback (nat64)"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata endpoint (nat64)"),
            ("64:ff9b:1::1.2.3.4", "local-use nat64"),
            ("2002:7f00:1::1", "loopback (6to4)"),
            ("2002:c0a8:101::1", "private (6to4)"),
            ("2001:0:4136:e378::1", "teredo"),
            ("100::1", "discard-only"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("4000::1", "reserved (not global unicast)"),
            ("1::1", "reserved (not global unicast)"),
        ] {
            assert_eq!(kind(ip).as_deref(), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_v6_passes() {
        for ip in [
            "2606:4700::1111",
            "2001:db8::1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn metadata_names() {
        assert!(refused_name("metadata.google.internal").is_some());
        assert!(refused_name("metadata").is_some());
        assert!(refused_name("api.test").is_none());
    }
}
