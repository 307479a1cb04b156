//! What a tool's policy claims about its sandbox, and whether a live sandbox
//! bears each claim out.
//!
//! [`claims`] lists what must hold for a tool's resolved spec: only the declared mounts
//! (and the sandbox's own) are visible, each with its mode; writes fail outside the
//! writable ones; the uid and gid; no capabilities; no_new_privs; seccomp filter mode;
//! Landlock; loopback only; no connection out; the memory, CPU and PID limits; the
//! environment names; and ([`credentials_claim`]) that the credential files in the mounts
//! read empty. [`check`] compares them with what `nanoclaw probe inspect` saw inside
//! the sandbox ([`Inspection`]) and what the backend reported it enforced.
//!
//! Both are pure functions: running the sandbox is the caller's job. This module must never
//! take the probe's word for more than it observed: anything missing from an inspection is
//! a failed claim, never a passed one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nanoclaw_spec::{Delivery, Enforced, Root, SandboxSpec};
use serde::{Deserialize, Serialize};

use nanoclaw_policy::{egress_rule_covers, format_bytes, format_cpus, Tool};

/// What `nanoclaw probe inspect` reports from inside a sandbox (its report's `detail`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Inspection {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub euid: Option<u32>,
    pub egid: Option<u32>,
    pub groups: Vec<u32>,
    pub capabilities: CapabilitySets,
    pub no_new_privs: Option<u64>,
    /// 0 off, 1 strict, 2 filter.
    pub seccomp: Option<u64>,
    /// Network interface names from /proc/net/dev.
    pub interfaces: Vec<String>,
    /// The mount table from /proc/self/mountinfo, in its order.
    pub mounts: Vec<SeenMount>,
    /// Names only, never values.
    pub env_names: Vec<String>,
    pub writes: Vec<Attempt>,
    /// Writes past the write budget in each writable mount (`probe write-budget`, run by
    /// the caller after `inspect`): `ok` when they failed with ENOSPC or EDQUOT.
    pub write_budgets: Vec<Attempt>,
    pub connects: Vec<Attempt>,
    pub hostname: Option<String>,
    /// Whether the sandbox's init waits on its lifeline and deadline (SIGCHLD blocked).
    pub init_watches: Option<bool>,
    /// The files of the secrets directory (metadata only).
    pub secret_files: Vec<SeenSecretFile>,
    /// What the probe could not observe.
    pub errors: Vec<String>,
}

impl Inspection {
    /// Parses an inspect report's `detail`.
    pub fn from_json(detail: &str) -> Result<Inspection, serde_json::Error> {
        serde_json::from_str(detail)
    }
}

/// The capability sets of /proc/self/status; `None` when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CapabilitySets {
    pub inheritable: Option<u64>,
    pub permitted: Option<u64>,
    pub effective: Option<u64>,
    pub bounding: Option<u64>,
    pub ambient: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeenMount {
    pub path: PathBuf,
    pub fstype: String,
    pub writable: bool,
}

/// A file of the sandbox's secrets directory, as the probe saw it (never its contents).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeenSecretFile {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub regular: bool,
}

/// One write or connect the probe tried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attempt {
    /// The directory written in, or the HOST:PORT connected to.
    pub target: String,
    /// It worked.
    pub ok: bool,
    pub detail: String,
}

/// Where a mount the sandbox should show comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `[[tools.NAME.mounts]]`.
    Declared,
    /// A tmpfs (`/tmp`).
    Tmpfs,
    /// Added to the spec by the caller (e.g. the probe binary `verify` binds in).
    Caller,
}

/// One thing a tool's policy says about its sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Claim {
    Mount {
        path: PathBuf,
        writable: bool,
        origin: Origin,
    },
    OnlyExpectedMounts {
        /// Mount points the spec makes, with whether each is writable.
        expected: Vec<(PathBuf, bool)>,
        /// The masks over hidden credential files (empty files and directories).
        masks: Vec<PathBuf>,
        /// The base mounts a host root has; `None`: any top-level read-only mount (an image).
        base: Option<Vec<PathBuf>>,
    },
    RootReadOnly,
    WritesFailOutside {
        writable: Vec<PathBuf>,
    },
    User {
        uid: u32,
        gid: u32,
    },
    NoCapabilities,
    NoNewPrivs,
    SeccompFilter,
    LandlockFull,
    OnlyLoopback,
    NoConnectionOut,
    MemoryLimit {
        bytes: u64,
    },
    CpuLimit {
        millis: u32,
    },
    PidsLimit {
        pids: u32,
    },
    EnvNames {
        allowed: Vec<String>,
    },
    /// The sandbox's init watches its lifeline to the runner and the deadline, so the
    /// sandbox dies with its runner.
    DiesWithRunner,
    /// Writes past `bytes` in the writable mount `path` fail with ENOSPC.
    WriteBudget {
        path: PathBuf,
        bytes: u64,
    },
    /// A secret arrives as declared: `file` as a 0400 file of the sandbox user with its
    /// path in `NAME_FILE` and not in the environment, `env` in the environment,
    /// `placeholder` in the environment as a stand-in that differs from the value and is
    /// substituted only toward hosts of the allow list.
    Secret {
        name: String,
        delivery: Delivery,
        uid: u32,
        /// `placeholder`: the stand-in differs from the value (checked by the runner, which
        /// alone holds both).
        placeholder_differs: bool,
        /// `placeholder`: hosts outside the tool's allow list (none, to pass).
        hosts_outside: Vec<String>,
    },
}

/// One claim checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimResult {
    pub claim: String,
    pub expected: String,
    pub observed: String,
    pub pass: bool,
}

/// What a `Root::Host` sandbox shows of the host, read-only (the native backend's base).
const HOST_BASE: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Environment names every sandbox has.
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG"];
/// The sandbox's own trees, whatever is mounted inside them.
const OWN_TREES: &[&str] = &["/proc", "/dev"];

/// The claims `tool`'s policy makes about a sandbox running `spec` (the spec that was
/// really run: a mount in it that the tool does not declare is the caller's, e.g. the
/// probe binary).
pub fn claims(tool: &Tool, spec: &SandboxSpec) -> Vec<Claim> {
    let mut out = Vec::new();
    let mut expected = Vec::new();
    for mount in &spec.mounts {
        let origin = if tool
            .mounts
            .iter()
            .any(|m| m.path == mount.dst && m.writable == mount.writable)
        {
            Origin::Declared
        } else {
            Origin::Caller
        };
        out.push(Claim::Mount {
            path: mount.dst.clone(),
            writable: mount.writable,
            origin,
        });
        expected.push((mount.dst.clone(), mount.writable));
    }
    for tmpfs in &spec.tmpfs {
        out.push(Claim::Mount {
            path: tmpfs.dst.clone(),
            writable: true,
            origin: Origin::Tmpfs,
        });
        expected.push((tmpfs.dst.clone(), true));
    }
    if spec.egress_proxy.is_some() {
        // The proxy's socket, the sandbox's one way out; read-only like every base mount.
        let socket = PathBuf::from(nanoclaw_spec::EgressProxy::SOCKET_INSIDE);
        out.push(Claim::Mount {
            path: socket.clone(),
            writable: false,
            origin: Origin::Caller,
        });
        expected.push((socket, false));
    }
    if spec.secrets.iter().any(|s| s.delivery == Delivery::File) {
        // Sealed read-only by the native init; on docker a tmpfs of the sandbox user's that
        // the container's init (without the capability to remount) writes the files into.
        let writable = matches!(spec.root, Root::Image(_));
        expected.push((PathBuf::from(nanoclaw_spec::SECRETS_DIR), writable));
    }
    if spec.ca_bundle.is_some() {
        let bundle = PathBuf::from(nanoclaw_spec::CA_BUNDLE_INSIDE);
        // A directory of its own on the native backend, a bound file on docker.
        expected.extend(bundle.parent().map(|dir| (dir.to_path_buf(), false)));
        expected.push((bundle, false));
    }
    let base = match spec.root {
        Root::Host => Some(HOST_BASE.iter().map(PathBuf::from).collect()),
        Root::Rootfs(_) | Root::Image(_) => None,
    };
    let writable: Vec<PathBuf> = expected
        .iter()
        .filter(|(_, w)| *w)
        .map(|(p, _)| p.clone())
        .chain([PathBuf::from("/dev/shm")])
        .collect();
    out.push(Claim::OnlyExpectedMounts {
        expected,
        masks: spec.hidden.clone(),
        base,
    });
    out.push(Claim::RootReadOnly);
    out.push(Claim::WritesFailOutside { writable });
    out.push(Claim::User {
        uid: spec.user.uid,
        gid: spec.user.gid,
    });
    out.push(Claim::NoCapabilities);
    out.push(Claim::NoNewPrivs);
    out.push(Claim::SeccompFilter);
    out.push(Claim::LandlockFull);
    out.push(Claim::OnlyLoopback);
    out.push(Claim::NoConnectionOut);
    out.push(Claim::MemoryLimit {
        bytes: spec.limits.memory_bytes,
    });
    out.push(Claim::CpuLimit {
        millis: spec.limits.cpu_millis,
    });
    out.push(Claim::PidsLimit {
        pids: spec.limits.pids,
    });
    let mut allowed: Vec<String> = spec.command_env().into_iter().map(|(k, _)| k).collect();
    allowed.extend(BASE_ENV.iter().map(|s| s.to_string()));
    allowed.sort();
    allowed.dedup();
    out.push(Claim::EnvNames { allowed });
    out.push(Claim::DiesWithRunner);
    let allow: &[nanoclaw_spec::EgressRule] = match &spec.network {
        nanoclaw_spec::Network::Egress(rules) => rules,
        nanoclaw_spec::Network::None => &[],
    };
    for secret in &spec.secrets {
        out.push(Claim::Secret {
            name: secret.name.clone(),
            delivery: secret.delivery,
            uid: spec.user.uid,
            placeholder_differs: secret
                .placeholder
                .as_ref()
                .is_some_and(|p| p.as_bytes() != secret.value.expose()),
            hosts_outside: secret
                .hosts
                .iter()
                .filter(|h| !allow.iter().any(|rule| egress_rule_covers(rule, h)))
                .map(|h| format!("{}:{}", h.host, h.port))
                .collect(),
        });
    }
    for mount in spec.mounts.iter().filter(|m| m.writable) {
        out.push(Claim::WriteBudget {
            path: mount.dst.clone(),
            bytes: spec.limits.write_bytes,
        });
    }
    out
}

/// The mebibytes `probe write-budget` writes to prove a budget of `bytes`: past it.
pub fn past_write_budget_mib(bytes: u64) -> u64 {
    (bytes >> 20) + 8
}

/// Checks each claim against what was observed inside the sandbox and what the backend
/// reported it enforced.
pub fn check(claims: &[Claim], inspection: &Inspection, enforced: &Enforced) -> Vec<ClaimResult> {
    claims
        .iter()
        .map(|c| check_one(c, inspection, enforced))
        .collect()
}

fn mode(writable: bool) -> &'static str {
    if writable {
        "read-write"
    } else {
        "read-only"
    }
}

fn result(
    claim: impl Into<String>,
    expected: impl Into<String>,
    observed: impl Into<String>,
    pass: bool,
) -> ClaimResult {
    ClaimResult {
        claim: claim.into(),
        expected: expected.into(),
        observed: observed.into(),
        pass,
    }
}

fn unknown<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

/// The topmost mount at each mount point (the last in mountinfo order).
fn topmost(inspection: &Inspection) -> Vec<&SeenMount> {
    let mut seen: Vec<&SeenMount> = Vec::new();
    for mount in inspection.mounts.iter().rev() {
        if !seen.iter().any(|m| m.path == mount.path) {
            seen.push(mount);
        }
    }
    seen.reverse();
    seen
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// One claim against what was seen and enforced: each kind of claim is its own step below.
fn check_one(claim: &Claim, seen: &Inspection, enforced: &Enforced) -> ClaimResult {
    match claim {
        Claim::Mount {
            path,
            writable,
            origin,
        } => check_mount(seen, path, writable, origin),
        Claim::OnlyExpectedMounts {
            expected,
            masks,
            base,
        } => check_only_expected_mounts(seen, expected, masks, base.as_deref()),
        Claim::RootReadOnly => check_root_read_only(seen, enforced),
        Claim::WritesFailOutside { writable } => check_writes_outside(seen, writable),
        Claim::User { uid, gid } => check_user(seen, uid, gid),
        Claim::NoCapabilities => check_no_capabilities(seen, enforced),
        Claim::NoNewPrivs => result(
            "no_new_privs",
            "1",
            unknown(seen.no_new_privs),
            seen.no_new_privs == Some(1),
        ),
        Claim::SeccompFilter => {
            let observed = format!(
                "mode {}; profile {}",
                unknown(seen.seccomp),
                enforced.seccomp.as_deref().unwrap_or("none")
            );
            result(
                "seccomp",
                "mode 2 (filter)",
                observed,
                seen.seccomp == Some(2) && enforced.seccomp.is_some(),
            )
        }
        Claim::LandlockFull => {
            let l = &enforced.landlock;
            let observed = match &l.reason {
                Some(reason) => format!("{} (abi {}): {reason}", l.status, l.abi),
                None => format!("{} (abi {})", l.status, l.abi),
            };
            result("landlock", "full", observed, l.status == "full")
        }
        Claim::OnlyLoopback => {
            let mut names = seen.interfaces.clone();
            names.sort();
            let pass = names == ["lo"];
            result("network interfaces", "lo only", list(&names), pass)
        }
        Claim::NoConnectionOut => check_no_connection_out(seen),
        Claim::MemoryLimit { bytes } => result(
            "memory limit",
            format_bytes(*bytes),
            enforced
                .memory_bytes
                .map_or("not enforced".into(), format_bytes),
            enforced.memory_bytes == Some(*bytes),
        ),
        Claim::CpuLimit { millis } => result(
            "cpu limit",
            format_cpus(*millis),
            enforced
                .cpu_millis
                .map_or("not enforced".into(), format_cpus),
            enforced.cpu_millis == Some(*millis),
        ),
        Claim::PidsLimit { pids } => result(
            "pids limit",
            pids.to_string(),
            enforced
                .pids
                .map_or("not enforced".into(), |p| p.to_string()),
            enforced.pids == Some(*pids),
        ),
        Claim::DiesWithRunner => result(
            "dies with its runner",
            "init watches a lifeline and the deadline",
            match seen.init_watches {
                Some(true) => "init waits on its lifeline (SIGCHLD taken by descriptor)",
                Some(false) => "init waits for children only",
                None => "unknown",
            },
            seen.init_watches == Some(true),
        ),
        Claim::WriteBudget { path, bytes } => {
            let attempt = seen
                .write_budgets
                .iter()
                .find(|w| Path::new(&w.target) == path);
            result(
                format!("write budget in {}", path.display()),
                format!("ENOSPC past {}", format_bytes(*bytes)),
                attempt.map_or("not tried".into(), |w| w.detail.clone()),
                attempt.is_some_and(|w| w.ok),
            )
        }
        Claim::Secret {
            name,
            delivery,
            uid,
            placeholder_differs,
            hosts_outside,
        } => secret_result(
            seen,
            name,
            *delivery,
            *uid,
            *placeholder_differs,
            hosts_outside,
        ),
        Claim::EnvNames { allowed } => check_env_names(seen, allowed),
    }
}

/// A declared, tmpfs or caller's mount: visible, with its mode.
fn check_mount(seen: &Inspection, path: &Path, writable: &bool, origin: &Origin) -> ClaimResult {
    let what = match origin {
        Origin::Declared => "mount",
        Origin::Tmpfs => "tmpfs",
        Origin::Caller => "caller's mount",
    };
    let found = topmost(seen).into_iter().find(|m| m.path == *path);
    let mut observed = found.map_or_else(
        || "not visible".to_string(),
        |m| format!("{} ({})", mode(m.writable), m.fstype),
    );
    // Informational: a writable mount the sandbox user cannot write to (ownership,
    // permissions) holds the policy but will not do the tool much good.
    let write = seen.writes.iter().find(|w| Path::new(&w.target) == path);
    if let Some(w) = write.filter(|w| *writable && !w.ok) {
        observed.push_str(&format!("; a test write failed: {}", w.detail));
    }
    let pass = found.is_some_and(|m| m.writable == *writable);
    result(
        format!("{what} {}", path.display()),
        mode(*writable),
        observed,
        pass,
    )
}

/// Nothing visible but the expected mounts, the masks and the base.
fn check_only_expected_mounts(
    seen: &Inspection,
    expected: &[(PathBuf, bool)],
    masks: &[PathBuf],
    base: Option<&[PathBuf]>,
) -> ClaimResult {
    if seen.mounts.is_empty() {
        return result(
            "only expected mounts visible",
            "declared + sandbox's own",
            "no mount table observed",
            false,
        );
    }
    let unexpected: Vec<String> = topmost(seen)
        .into_iter()
        .filter(|m| !masks.contains(&m.path))
        .filter(|m| !mount_expected(m, expected, base))
        .map(|m| format!("{} ({})", m.path.display(), mode(m.writable)))
        .collect();
    let pass = unexpected.is_empty();
    let observed = if pass {
        format!("{} mounts, none unexpected", topmost(seen).len())
    } else {
        format!("unexpected: {}", unexpected.join(", "))
    };
    result(
        "only expected mounts visible",
        "declared + sandbox's own",
        observed,
        pass,
    )
}

/// `/` is read-only, seen inside and reported by the backend.
fn check_root_read_only(seen: &Inspection, enforced: &Enforced) -> ClaimResult {
    let root = topmost(seen).into_iter().find(|m| m.path == Path::new("/"));
    let observed = match root {
        Some(m) => format!(
            "{}; backend says {}",
            mode(m.writable),
            if enforced.read_only_root {
                "read-only"
            } else {
                "writable"
            }
        ),
        None => "/ not in the mount table".into(),
    };
    let pass = root.is_some_and(|m| !m.writable) && enforced.read_only_root;
    result("root file system", "read-only", observed, pass)
}

/// Writes were tried outside the writable mounts, and all failed.
fn check_writes_outside(seen: &Inspection, writable: &[PathBuf]) -> ClaimResult {
    let outside: Vec<&Attempt> = seen
        .writes
        .iter()
        .filter(|w| !writable.iter().any(|p| p == Path::new(&w.target)))
        .collect();
    let written: Vec<String> = outside
        .iter()
        .filter(|w| w.ok)
        .map(|w| w.target.clone())
        .collect();
    let pass = !outside.is_empty() && written.is_empty();
    let observed = if outside.is_empty() {
        "no write attempted".to_string()
    } else if pass {
        format!("{} tried, all refused", outside.len())
    } else {
        format!("written: {}", written.join(", "))
    };
    result("writes outside rw mounts", "all fail", observed, pass)
}

/// The real and effective ids are the tool's, with no other group.
fn check_user(seen: &Inspection, uid: &u32, gid: &u32) -> ClaimResult {
    let ids = [seen.uid, seen.euid, seen.gid, seen.egid];
    let groups_ok = seen.groups.iter().all(|g| g == gid);
    let pass = ids == [Some(*uid), Some(*uid), Some(*gid), Some(*gid)] && groups_ok;
    let groups: Vec<String> = seen.groups.iter().map(u32::to_string).collect();
    let observed = format!(
        "uid {} euid {} gid {} egid {} groups [{}]",
        unknown(seen.uid),
        unknown(seen.euid),
        unknown(seen.gid),
        unknown(seen.egid),
        groups.join(",")
    );
    result(
        "user",
        format!("uid {uid} gid {gid}, no other groups"),
        observed,
        pass,
    )
}

/// Every capability set is empty, and the backend granted none.
fn check_no_capabilities(seen: &Inspection, enforced: &Enforced) -> ClaimResult {
    let c = &seen.capabilities;
    let sets = [
        ("inh", c.inheritable),
        ("prm", c.permitted),
        ("eff", c.effective),
        ("bnd", c.bounding),
        ("amb", c.ambient),
    ];
    let pass = sets.iter().all(|(_, v)| *v == Some(0)) && enforced.capabilities.is_empty();
    let shown: Vec<String> = sets
        .iter()
        .map(|(n, v)| format!("{n}={}", v.map_or("?".into(), |v| format!("{v:x}"))))
        .collect();
    result("capabilities", "none in any set", shown.join(" "), pass)
}

/// Connections out were tried, and all failed.
fn check_no_connection_out(seen: &Inspection) -> ClaimResult {
    let outward = seen
        .connects
        .iter()
        .any(|c| !c.target.starts_with("127.") && !c.target.starts_with("[::1]"));
    let made: Vec<String> = seen
        .connects
        .iter()
        .filter(|c| c.ok)
        .map(|c| c.target.clone())
        .collect();
    let pass = outward && made.is_empty();
    let observed = if !outward {
        "no outward connection attempted".into()
    } else if pass {
        let tried: Vec<String> = seen
            .connects
            .iter()
            .map(|c| format!("{}: {}", c.target, c.detail))
            .collect();
        format!("all failed ({})", tried.join("; "))
    } else {
        format!("connected to {}", made.join(", "))
    };
    result("connections out", "all fail", observed, pass)
}

/// The environment holds only the names the spec sets.
fn check_env_names(seen: &Inspection, allowed: &[String]) -> ClaimResult {
    let allowed: BTreeSet<&str> = allowed.iter().map(String::as_str).collect();
    let extra: Vec<String> = seen
        .env_names
        .iter()
        .filter(|n| !allowed.contains(n.as_str()))
        .cloned()
        .collect();
    let pass = !seen.env_names.is_empty() && extra.is_empty();
    let observed = if seen.env_names.is_empty() {
        "no environment observed".into()
    } else if pass {
        seen.env_names.join(", ")
    } else {
        format!("undeclared: {}", extra.join(", "))
    };
    let expected = format!(
        "subset of {}",
        allowed.into_iter().collect::<Vec<_>>().join(", ")
    );
    result("environment names", expected, observed, pass)
}

fn secret_result(
    seen: &Inspection,
    name: &str,
    delivery: Delivery,
    uid: u32,
    placeholder_differs: bool,
    hosts_outside: &[String],
) -> ClaimResult {
    let in_env = |n: &str| seen.env_names.iter().any(|e| e == n);
    let claim = format!("secret {name}");
    let observed_env = if in_env(name) {
        "in the environment"
    } else {
        "not in the environment"
    };
    match delivery {
        Delivery::File => {
            let path = PathBuf::from(nanoclaw_spec::SECRETS_DIR).join(name);
            let file = seen.secret_files.iter().find(|f| f.path == path);
            let expected = format!(
                "{} mode 0400 uid {uid}, in {name}_FILE, not in the environment",
                path.display()
            );
            let observed = match file {
                Some(f) => format!(
                    "{}{} mode {:04o} uid {}, {}{}",
                    path.display(),
                    if f.regular {
                        ""
                    } else {
                        " (not a regular file)"
                    },
                    f.mode,
                    f.uid,
                    observed_env,
                    if in_env(&format!("{name}_FILE")) {
                        ""
                    } else {
                        ", no NAME_FILE"
                    }
                ),
                None => format!("no {}, {observed_env}", path.display()),
            };
            let pass = file.is_some_and(|f| f.regular && f.mode == 0o400 && f.uid == uid)
                && !in_env(name)
                && in_env(&format!("{name}_FILE"));
            result(claim, expected, observed, pass)
        }
        Delivery::Env => result(
            claim,
            "in the environment (env delivery)",
            observed_env,
            in_env(name),
        ),
        Delivery::Placeholder => {
            let expected = "a placeholder in the environment, differing from the value, substituted only toward the allow list";
            let mut observed = vec![observed_env.to_string()];
            if !placeholder_differs {
                observed.push("the placeholder is the value".into());
            }
            if !hosts_outside.is_empty() {
                observed.push(format!(
                    "substituted toward {} outside the allow list",
                    hosts_outside.join(", ")
                ));
            }
            let pass = in_env(name) && placeholder_differs && hosts_outside.is_empty();
            result(claim, expected, observed.join("; "), pass)
        }
    }
}

/// The claim that every credential file the runner's scan found in `spec`'s mounts reads
/// empty inside; `probe` is what the `hidden` probe reported for `spec.hidden` (blocked,
/// detail), `None` when it did not run. No claim for a sandbox without mounts.
pub fn credentials_claim(spec: &SandboxSpec, probe: Option<(bool, &str)>) -> Option<ClaimResult> {
    if spec.mounts.is_empty() {
        return None;
    }
    let shown: Vec<String> = spec
        .credentials_shown
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut expected = "each reads empty".to_string();
    if !shown.is_empty() {
        expected.push_str(&format!(" (shown by the policy: {})", shown.join(", ")));
    }
    let n = spec.hidden.len();
    let (observed, pass) = match probe {
        _ if n == 0 => ("none found in the mounts".to_string(), true),
        None => ("not probed".to_string(), false),
        Some((true, _)) => (format!("{n} hidden, all read empty"), true),
        Some((false, detail)) => (detail.to_string(), false),
    };
    Some(result("credential files", expected, observed, pass))
}

/// Whether a mount seen inside is one the spec or the sandbox itself makes.
fn mount_expected(m: &SeenMount, expected: &[(PathBuf, bool)], base: Option<&[PathBuf]>) -> bool {
    if let Some((_, writable)) = expected.iter().find(|(p, _)| *p == m.path) {
        return *writable == m.writable;
    }
    if m.path == Path::new("/") {
        return !m.writable;
    }
    if OWN_TREES.iter().any(|t| m.path.starts_with(t)) {
        return true;
    }
    if m.writable {
        return false;
    }
    // A writable mount's .git, re-bound read-only by the runner.
    let parent = m.path.parent();
    if m.path.file_name() == Some(".git".as_ref())
        && expected
            .iter()
            .any(|(p, w)| *w && Some(p.as_path()) == parent)
    {
        return true;
    }
    if m.path.starts_with("/etc") {
        return true;
    }
    let top_level = m.path.parent() == Some(Path::new("/"));
    match base {
        Some(base) => base.contains(&m.path),
        None => top_level || m.path.starts_with("/sys"),
    }
}

/// A table of results for one tool, for people.
pub fn render_table(tool: &str, results: &[ClaimResult]) -> String {
    let headers = ["RESULT", "CLAIM", "EXPECTED", "OBSERVED"];
    let rows: Vec<[String; 4]> = results
        .iter()
        .map(|r| {
            [
                if r.pass { "pass" } else { "FAIL" }.to_string(),
                r.claim.clone(),
                r.expected.clone(),
                r.observed.clone(),
            ]
        })
        .collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([headers[i].len()])
            .max()
            .unwrap_or(0)
            .min(40)
    };
    let widths = [width(0), width(1), width(2)];
    let line = |cells: [&str; 4]| {
        format!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    let failed = results.iter().filter(|r| !r.pass).count();
    let mut out = format!("tool `{tool}`\n");
    out.push_str(&line(headers));
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    out.push_str(&format!("  {} claims, {} failed\n", results.len(), failed));
    out
}
