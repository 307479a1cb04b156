//! The `/proc` entries every sandbox hides or makes read-only, on every backend.
//!
//! One list, imported by the native backend (which mounts it) and the Docker backend (which
//! asks the engine for it and reads it back from the container's inspect): two copies of
//! this list once drifted apart, and the shorter copy was the hole. The list is the union of
//! Docker's defaults (moby `oci/defaults.go`) and what the native backend masked.
//!
//! This module must never drop an entry to suit one backend, and never do I/O: a backend
//! that cannot apply an entry refuses to start the sandbox. An entry the running kernel does
//! not have is skipped by both backends (there is nothing to show).

/// The directory every entry is relative to.
pub const PROC: &str = "/proc";

/// Files under `/proc` replaced by an empty one (`/dev/null` bound over it): reads return
/// nothing, writes go nowhere.
pub const MASKED_FILES: &[&str] = &[
    // Physical memory as an ELF core file.
    "kcore",
    // The kernel keyrings of every user, and per-user key quotas: host-wide, not namespaced.
    "keys",
    "key-users",
    // Host-wide scheduler and timer state: which processes run, and when (side channels).
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    // Writes trigger kernel actions (reboot, crash, OOM kill) for the whole host.
    "sysrq-trigger",
    // Kernel symbol addresses (defeat KASLR where kptr_restrict lets them through).
    "kallsyms",
    // The kernel log: host messages, addresses, and a read that consumes them.
    "kmsg",
    // The host kernel's build configuration: which bugs it has, to an exploit.
    "config.gz",
];

/// Directories under `/proc` replaced by an empty read-only tmpfs.
pub const MASKED_DIRS: &[&str] = &[
    // Hardware: ACPI tables and events, sound cards, SCSI hosts (`scsi/scsi` took writes
    // that rescanned buses), driver state (rtc, nvram on some kernels).
    "acpi", "asound", "scsi", "driver",
];

/// Directories under `/proc` made read-only: the host-wide tunables (`sys` is sysctl) and
/// kernel state that is not namespaced; reading them is harmless, writing reconfigures the
/// host where a capability check is missing.
pub const READ_ONLY: &[&str] = &["bus", "fs", "irq", "sys"];

/// `/proc/NAME` for each name of `names`.
pub fn absolute(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| format!("{PROC}/{name}")).collect()
}

/// Every masked path, files then directories, as absolute paths.
pub fn masked() -> Vec<String> {
    let mut paths = absolute(MASKED_FILES);
    paths.extend(absolute(MASKED_DIRS));
    paths
}

/// Every read-only path, as absolute paths.
pub fn read_only() -> Vec<String> {
    absolute(READ_ONLY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_entry_is_listed_twice_or_climbs_out_of_proc() {
        let mut all: Vec<&str> = [MASKED_FILES, MASKED_DIRS, READ_ONLY].concat();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "an entry is listed twice");
        for name in all {
            assert!(
                !name.is_empty() && !name.contains('/') && !name.starts_with('.'),
                "{name:?}"
            );
        }
    }

    #[test]
    fn dockers_defaults_and_the_native_backends_old_list_are_all_kept() {
        let masked = masked();
        for path in [
            "/proc/asound",
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/proc/sysrq-trigger",
            "/proc/kallsyms",
            "/proc/kmsg",
            "/proc/config.gz",
            "/proc/key-users",
            "/proc/driver",
        ] {
            assert!(masked.iter().any(|m| m == path), "{path} is not masked");
        }
        assert_eq!(
            read_only(),
            ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"]
        );
    }
}
