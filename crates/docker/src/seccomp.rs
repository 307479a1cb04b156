//! The seccomp profile handed to the engine (`SecurityOpt: seccomp=<json>`), generated from
//! the profile data both backends share (`nanoclaw_spec::syscalls`) so that both backends allow
//! and refuse the same syscalls.
//!
//! The engine compiles this JSON with libseccomp (through runc), which differs from the
//! native backend's hand-made BPF in ways that matter here:
//! - libseccomp compares all 64 bits of an argument, while the kernel reads ioctl's request,
//!   clone's flags, personality's value and socket's domain and protocol as 32 bits. A not-equal rule on
//!   TIOCSTI is therefore bypassed by setting a high bit (bubblewrap CVE-2019-10063). Every
//!   argument rule below is `SCMP_CMP_MASKED_EQ` with a mask of at most the low 32 bits, so
//!   the high half is never looked at, exactly as the kernel ignores it.
//! - libseccomp keeps one action per syscall: an unconditional rule swallows any
//!   conditional rule for the same syscall, whatever its action. So "allow ioctl, but refuse
//!   TIOCSTI" cannot be written as an unconditional allow plus an errno rule. Instead the
//!   allowed ioctl requests are spelled as a union of masked-equality rules covering exactly
//!   every 32-bit request except the refused ones ([`complement`]), and the refused ones are
//!   also listed as explicit errno rules, disjoint from the allows, for whoever reads the
//!   profile.
//! - Only `SCMP_ARCH_X86_64` is listed (no `archMap`, no sub-architectures): an i386 call
//!   (`int 0x80`) hits libseccomp's bad-architecture action, which kills the caller, and
//!   libseccomp's x86_64 filter refuses syscall numbers with the x32 bit (0x4000_0000).
//! - `memfd_create` is left out. The native backend allows it only where it can also set
//!   `vm.memfd_noexec` for the sandbox (so a memfd cannot be executed, which would run a
//!   binary that no noexec mount holds); the engine cannot set that per container, so here
//!   it is refused.
//!
//! This module must never widen the native profile: every syscall it allows comes from
//! `allowed()` or one of the argument rules there.

use std::sync::OnceLock;

use nanoclaw_spec::syscalls::{
    allowed, CLONE_NAMESPACE_FLAGS, IOCTL_REFUSED_REQUESTS, PERSONALITY_ALLOWED, PROFILE_NAME,
    SOCKETPAIR_DOMAINS, SOCKET_RULES,
};
use serde_json::{json, Value};

/// The name the profile is reported under in `Enforced.seccomp`.
pub const NAME: &str = PROFILE_NAME;

/// Syscalls of the native allowlist that the engine cannot make safe (see the module doc).
pub const LEFT_OUT: [&str; 1] = ["memfd_create"];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const LOW_32_BITS: u64 = 0xffff_ffff;

/// The profile as the JSON text `seccomp=` takes, built once per process.
pub fn profile_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| profile().to_string())
}

/// The Docker seccomp profile: default-deny with `EPERM`, x86_64 only.
pub fn profile() -> Value {
    let names: Vec<&str> = allowed()
        .iter()
        .map(|syscall| syscall.name)
        .filter(|name| !LEFT_OUT.contains(name))
        .collect();
    let mut rules = vec![json!({ "names": names, "action": "SCMP_ACT_ALLOW" })];
    let ioctl_refused: Vec<u32> = IOCTL_REFUSED_REQUESTS.to_vec();
    for (mask, value) in complement(&ioctl_refused) {
        rules.push(allow_if("ioctl", 1, u64::from(mask), u64::from(value)));
    }
    for request in ioctl_refused {
        rules.push(json!({
            "names": ["ioctl"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
            "args": [masked_eq(1, LOW_32_BITS, u64::from(request))],
        }));
    }
    rules.push(allow_if("clone", 0, u64::from(CLONE_NAMESPACE_FLAGS), 0));
    // A socket family with a protocol list is one rule per protocol, each comparing both
    // arguments (libseccomp ANDs the comparisons of one rule).
    for rule in SOCKET_RULES {
        let domain = masked_eq(0, LOW_32_BITS, u64::from(rule.domain));
        match rule.protocols {
            None => rules.push(allow_when("socket", vec![domain])),
            Some(protocols) => rules.extend(protocols.iter().map(|&protocol| {
                let protocol = masked_eq(2, LOW_32_BITS, u64::from(protocol));
                allow_when("socket", vec![domain.clone(), protocol])
            })),
        }
    }
    for (name, values) in [
        ("personality", &PERSONALITY_ALLOWED[..]),
        ("socketpair", &SOCKETPAIR_DOMAINS[..]),
    ] {
        for &value in values {
            rules.push(allow_if(name, 0, LOW_32_BITS, u64::from(value)));
        }
    }
    // clone3 passes its flags in memory, out of the filter's sight; ENOSYS makes libc fall
    // back to clone, whose flags are checked above.
    rules.push(json!({
        "names": ["clone3"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": ENOSYS,
    }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": rules,
    })
}

/// A rule allowing `name` when `(arg[index] & mask) == value`.
fn allow_if(name: &str, index: u32, mask: u64, value: u64) -> Value {
    allow_when(name, vec![masked_eq(index, mask, value)])
}

/// A rule allowing `name` when every comparison of `args` holds.
fn allow_when(name: &str, args: Vec<Value>) -> Value {
    json!({ "names": [name], "action": "SCMP_ACT_ALLOW", "args": args })
}

/// `SCMP_CMP_MASKED_EQ`: Docker's `value` is the mask, `valueTwo` the expected result.
fn masked_eq(index: u32, mask: u64, value: u64) -> Value {
    json!({ "index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ" })
}

/// `(mask, value)` pairs whose matches, `x & mask == value`, together cover exactly the
/// 32-bit numbers not in `refused`, each number once.
///
/// Walks the binary trie of `refused` from the top bit down: wherever one branch of a node
/// holds no refused number, that whole branch (the node's prefix plus the branch bit) is one
/// pair. At most 32 pairs per refused number.
pub fn complement(refused: &[u32]) -> Vec<(u32, u32)> {
    if refused.is_empty() {
        return vec![(0, 0)];
    }
    let mut pairs = Vec::new();
    let mut sorted = refused.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    split(&sorted, 0, 0, &mut pairs);
    pairs
}

/// Emits the pairs for the subtree of numbers that share `prefix` in their top `depth` bits.
/// `refused` is non-empty, sorted and all within that subtree.
fn split(refused: &[u32], prefix: u32, depth: u32, pairs: &mut Vec<(u32, u32)>) {
    if depth == 32 {
        return;
    }
    let bit = 1u32 << (31 - depth);
    let mask = !(bit - 1); // the top depth + 1 bits
    let (zeros, ones): (Vec<u32>, Vec<u32>) = refused.iter().partition(|&&n| n & bit == 0);
    for (branch, value) in [(zeros, prefix), (ones, prefix | bit)] {
        if branch.is_empty() {
            pairs.push((mask, value));
        } else {
            split(&branch, value, depth + 1, pairs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pairs: &[(u32, u32)], x: u32) -> usize {
        pairs.iter().filter(|(m, v)| x & m == *v).count()
    }

    #[test]
    fn complement_covers_everything_but_the_refused_numbers_once() {
        let refused = IOCTL_REFUSED_REQUESTS;
        let pairs = complement(&refused);
        assert!(pairs.len() <= 32 * refused.len());
        for &r in &refused {
            assert_eq!(matches(&pairs, r), 0, "{r:#x} is allowed");
        }
        // Neighbours of the refused numbers, every single-bit change, and a spread of others.
        let mut others: Vec<u32> = vec![0, 1, u32::MAX, 0x5401, libc::FIONREAD as u32];
        for &r in &refused {
            others.extend((0..32).map(|b| r ^ (1 << b)));
            others.extend([r.wrapping_sub(1), r.wrapping_add(1)]);
        }
        others.extend((0..100_000u32).map(|i| i.wrapping_mul(2_654_435_761)));
        for x in others.into_iter().filter(|x| !refused.contains(x)) {
            assert_eq!(matches(&pairs, x), 1, "{x:#x}");
        }
    }

    #[test]
    fn complement_of_nothing_is_everything() {
        assert_eq!(complement(&[]), [(0, 0)]);
        assert_eq!(complement(&[0]).len(), 32);
    }

    #[test]
    fn every_argument_rule_ignores_the_upper_half() {
        let profile = profile();
        let rules = profile["syscalls"].as_array().cloned().unwrap_or_default();
        let args: Vec<&Value> = rules
            .iter()
            .filter_map(|r| r["args"].as_array())
            .flatten()
            .collect();
        assert!(!args.is_empty());
        for arg in args {
            assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ", "{arg}");
            let mask = arg["value"].as_u64().unwrap_or(u64::MAX);
            assert_eq!(mask >> 32, 0, "a rule looks at the upper 32 bits: {arg}");
        }
    }

    #[test]
    fn profile_is_the_native_allowlist_without_memfd() {
        let profile = profile();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["architectures"], json!(["SCMP_ARCH_X86_64"]));
        assert!(profile.get("archMap").is_none());
        let unconditional: Vec<&str> = profile["syscalls"][0]["names"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(unconditional.len(), allowed().len() - 1);
        assert!(!unconditional.contains(&"memfd_create"));
        for name in nanoclaw_spec::syscalls::denied_names() {
            assert!(!profile_json().contains(&format!("\"{name}\"")) || *name == "clone3");
        }
        for name in ["ioctl", "clone", "personality", "socket", "socketpair"] {
            assert!(!unconditional.contains(&name), "{name} is unconditional");
        }
    }

    /// The `args` of every rule allowing `socket`, as `(domain, protocol)`; `None` where
    /// the rule does not look at the protocol.
    fn socket_rules() -> Vec<(u64, Option<u64>)> {
        let profile = profile();
        let rules = profile["syscalls"].as_array().cloned().unwrap_or_default();
        rules
            .iter()
            .filter(|r| r["names"] == json!(["socket"]))
            .map(|r| {
                assert_eq!(r["action"], "SCMP_ACT_ALLOW");
                let args = r["args"].as_array().cloned().unwrap_or_default();
                let value = |index: u64| {
                    args.iter()
                        .find(|a| a["index"] == index)
                        .and_then(|a| a["valueTwo"].as_u64())
                };
                (value(0).unwrap_or(u64::MAX), value(2))
            })
            .collect()
    }

    #[test]
    fn netlink_is_allowed_for_route_only_and_inet_for_tcp_udp_icmp() {
        let rules = socket_rules();
        let family = |domain: i32| -> Vec<Option<u64>> {
            rules
                .iter()
                .filter(|(d, _)| *d == domain as u64)
                .map(|(_, p)| *p)
                .collect()
        };
        assert_eq!(family(libc::AF_NETLINK), [Some(0)], "NETLINK_ROUTE only");
        assert_eq!(family(libc::AF_UNIX), [None]);
        for domain in [libc::AF_INET, libc::AF_INET6] {
            let protocols = family(domain);
            assert!(protocols.contains(&Some(libc::IPPROTO_TCP as u64)));
            assert!(!protocols.contains(&Some(libc::IPPROTO_SCTP as u64)));
            assert!(!protocols.contains(&None), "any protocol");
        }
        let known = [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ];
        for (domain, _) in &rules {
            assert!(
                known.iter().any(|k| *k as u64 == *domain),
                "family {domain}"
            );
        }
    }

    #[test]
    fn clone3_gets_enosys() {
        let profile = profile();
        let clone3 = profile["syscalls"]
            .as_array()
            .and_then(|rules| rules.iter().find(|r| r["names"] == json!(["clone3"])))
            .cloned()
            .unwrap_or_default();
        assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3["errnoRet"], ENOSYS);
    }
}
