//! What the engine really applied, read back from container inspect before the container
//! starts, never assumed from what was asked.
//!
//! [`verify`] refuses to start a container whose inspect shows any layer weaker than the
//! spec asked for (an engine that silently drops a memory limit on a host without the memory
//! cgroup, a seccomp profile that is not ours, a missing `no-new-privileges`), unless the
//! spec allows running without cgroup limits, in which case the outcome says they are absent.

use bollard::models::{ContainerInspectResponse, HostConfigCgroupnsModeEnum};
use nanoclaw_spec::{Enforced, LandlockStatus, SandboxSpec};

use crate::config::{masked_paths, readonly_paths, NO_NEW_PRIVILEGES};
use crate::seccomp;

/// Facts about the engine that no container inspect shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineFacts {
    /// "v1" or "v2".
    pub cgroup_version: Option<String>,
    /// The engine runs containers in a user namespace (`userns-remap`, or a rootless engine).
    pub user_namespace: bool,
}

impl EngineFacts {
    pub fn from_info(info: &bollard::models::SystemInfo) -> Self {
        let cgroup_version = info
            .cgroup_version
            .as_ref()
            .map(|v| v.to_string())
            .filter(|v| !v.is_empty())
            .map(|v| format!("v{v}"));
        let user_namespace = info.security_options.iter().flatten().any(|option| {
            option
                .split(',')
                .any(|part| part == "name=userns" || part == "name=rootless")
        });
        EngineFacts {
            cgroup_version,
            user_namespace,
        }
    }
}

/// A layer the engine did not apply as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weaker {
    pub layer: &'static str,
    pub reported: String,
}

/// Limits the engine applied, or `None` where it dropped them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u32>,
    pub pids: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

fn weaker(layer: &'static str, reported: impl std::fmt::Debug) -> Weaker {
    Weaker {
        layer,
        reported: format!("{reported:?}"),
    }
}

/// Checks the container's inspect against the spec. A limit the engine dropped is an error
/// unless `spec.allow_unlimited`; every other difference is an error.
pub fn verify(
    spec: &SandboxSpec,
    entrypoint: &[String],
    inspect: &ContainerInspectResponse,
) -> Result<Applied, Weaker> {
    let host = inspect.host_config.clone().unwrap_or_default();
    let config = inspect.config.clone().unwrap_or_default();
    if host.readonly_rootfs != Some(true) {
        return Err(weaker("read-only root", host.readonly_rootfs));
    }
    let cap_drop = host.cap_drop.clone().unwrap_or_default();
    if !cap_drop.iter().any(|c| c.eq_ignore_ascii_case("ALL"))
        || !host.cap_add.clone().unwrap_or_default().is_empty()
    {
        return Err(weaker(
            "capabilities dropped",
            (&host.cap_drop, &host.cap_add),
        ));
    }
    if host.privileged == Some(true) {
        return Err(weaker("unprivileged container", host.privileged));
    }
    let security = host.security_opt.clone().unwrap_or_default();
    let no_new_privs = security
        .iter()
        .any(|o| o == NO_NEW_PRIVILEGES || o == "no-new-privileges:true");
    if !no_new_privs {
        return Err(weaker("no-new-privileges", &security));
    }
    let ours = format!("seccomp={}", seccomp::profile_json());
    let seccomp_options: Vec<&String> = security
        .iter()
        .filter(|o| o.starts_with("seccomp=") || o.starts_with("seccomp:"))
        .collect();
    if seccomp_options != [&ours] {
        let shown: Vec<String> = seccomp_options
            .iter()
            .map(|o| o.chars().take(40).collect())
            .collect();
        return Err(weaker("seccomp profile", shown));
    }
    // nanoclaw's init runs first, exactly as asked (it applies Landlock).
    if host.init == Some(true) || config.entrypoint.as_deref() != Some(entrypoint) {
        return Err(weaker(
            "nanoclaw's init as the entrypoint",
            &config.entrypoint,
        ));
    }
    if host.network_mode.as_deref() != Some("none") {
        return Err(weaker("network none", host.network_mode));
    }
    for (layer, mode) in [
        ("private pid namespace", &host.pid_mode),
        ("private uts namespace", &host.uts_mode),
        ("engine user namespace", &host.userns_mode),
    ] {
        if !matches!(mode.as_deref(), None | Some("")) {
            return Err(weaker(layer, mode));
        }
    }
    if !matches!(host.ipc_mode.as_deref(), Some("private")) {
        return Err(weaker("private ipc namespace", host.ipc_mode));
    }
    if host.cgroupns_mode != Some(HostConfigCgroupnsModeEnum::PRIVATE) {
        return Err(weaker("private cgroup namespace", host.cgroupns_mode));
    }
    // Exactly the shared lists and the hidden credential files: an engine that dropped or
    // replaced any entry (an older one that ignores the field shows its own defaults) is
    // refused.
    if host.masked_paths.as_deref() != Some(&masked_paths(spec)[..]) {
        return Err(weaker("masked paths", host.masked_paths));
    }
    if host.readonly_paths.as_deref() != Some(&readonly_paths()[..]) {
        return Err(weaker("read-only paths", host.readonly_paths));
    }
    // Exactly the spec's tmpfs mounts: an engine that adds writable ones (Podman adds /run
    // and /var/tmp to read-only containers) is refused.
    if host.tmpfs.clone().unwrap_or_default() != crate::config::tmpfs(spec) {
        return Err(weaker("tmpfs mounts", host.tmpfs));
    }
    let want_user = format!("{}:{}", spec.user.uid, spec.user.gid);
    if config.user.as_deref() != Some(want_user.as_str()) {
        return Err(weaker("sandbox user", config.user));
    }

    let limits = &spec.limits;
    let memory = host.memory.filter(|&m| m > 0).map(|m| m as u64);
    let swap = host.memory_swap;
    let cpus = host
        .nano_cpus
        .filter(|&n| n > 0)
        .map(|n| (n / 1_000_000) as u32);
    let pids = host.pids_limit.filter(|&p| p > 0).map(|p| p as u32);
    let want_memory = Some(limits.memory_bytes);
    let exact = memory == want_memory
        && swap == host.memory
        && cpus == Some(limits.cpu_millis)
        && pids == Some(limits.pids);
    if !exact {
        let dropped_only = [
            memory.is_none() || memory == want_memory,
            cpus.is_none() || cpus == Some(limits.cpu_millis),
            pids.is_none() || pids == Some(limits.pids),
        ]
        .iter()
        .all(|ok| *ok);
        if !(spec.allow_unlimited && dropped_only) {
            return Err(weaker(
                "cgroup limits (memory, swap, cpu, pids)",
                (host.memory, swap, host.nano_cpus, host.pids_limit),
            ));
        }
    }
    Ok(Applied {
        memory_bytes: memory,
        cpu_millis: cpus,
        pids,
        uid: spec.user.uid,
        gid: spec.user.gid,
    })
}

/// The `Enforced` of a verified container whose init reported `landlock`.
pub fn enforced(applied: &Applied, facts: &EngineFacts, landlock: LandlockStatus) -> Enforced {
    let mut namespaces = Vec::new();
    if facts.user_namespace {
        namespaces.push("user");
    }
    // Verified above: network none, private ipc and cgroup, no host pid or uts.
    namespaces.extend(["mount", "pid", "net", "ipc", "uts", "cgroup"]);
    let limited = applied.memory_bytes.is_some() || applied.pids.is_some();
    Enforced {
        backend: "docker".into(),
        namespaces: namespaces.into_iter().map(String::from).collect(),
        seccomp: Some(seccomp::NAME.to_string()),
        landlock,
        cgroup: facts.cgroup_version.clone().filter(|_| limited),
        memory_bytes: applied.memory_bytes,
        cpu_millis: applied.cpu_millis,
        pids: applied.pids,
        no_new_privs: true,
        capabilities: Vec::new(),
        uid: applied.uid,
        gid: applied.gid,
        read_only_root: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, HostConfig};
    use nanoclaw_spec::Root;

    fn spec() -> SandboxSpec {
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.root = Root::Image("sha256:x".into());
        spec
    }

    /// The inspect of a container the engine created exactly as asked.
    fn as_asked(spec: &SandboxSpec) -> ContainerInspectResponse {
        let body = crate::config::container_body(
            spec,
            "sha256:x",
            Default::default(),
            false,
            &init(),
            [std::path::Path::new("/dev/null"); 2],
        )
        .unwrap();
        let mut host = body.host_config.unwrap();
        host.pid_mode = Some(String::new());
        ContainerInspectResponse {
            host_config: Some(host),
            config: Some(ContainerConfig {
                user: body.user,
                entrypoint: body.entrypoint,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn init() -> crate::InitBinary {
        crate::InitBinary::static_at("/bin/busybox".into()).unwrap()
    }

    fn entrypoint(inspect: &ContainerInspectResponse) -> Vec<String> {
        inspect
            .config
            .as_ref()
            .and_then(|c| c.entrypoint.clone())
            .unwrap_or_default()
    }

    fn with_host(change: impl Fn(&mut HostConfig)) -> Result<Applied, Weaker> {
        let spec = spec();
        let mut inspect = as_asked(&spec);
        let asked = entrypoint(&inspect);
        if let Some(host) = inspect.host_config.as_mut() {
            change(host);
        }
        verify(&spec, &asked, &inspect)
    }

    #[test]
    fn a_container_as_asked_passes_and_reports_every_layer() {
        let applied = with_host(|_| {}).unwrap();
        let facts = EngineFacts {
            cgroup_version: Some("v1".into()),
            user_namespace: false,
        };
        let landlock = LandlockStatus {
            status: "full".into(),
            abi: 6,
            reason: None,
        };
        let enforced = enforced(&applied, &facts, landlock);
        assert_eq!(enforced.backend, "docker");
        assert_eq!(
            enforced.namespaces,
            ["mount", "pid", "net", "ipc", "uts", "cgroup"]
        );
        assert_eq!(enforced.memory_bytes, Some(512 << 20));
        assert_eq!(enforced.cpu_millis, Some(500));
        assert_eq!(enforced.pids, Some(256));
        assert_eq!(enforced.cgroup.as_deref(), Some("v1"));
        assert_eq!(enforced.landlock.status, "full", "as the init reported it");
        assert_eq!((enforced.uid, enforced.gid), (10001, 10001));
    }

    type Change<'a> = &'a dyn Fn(&mut HostConfig);

    #[test]
    fn any_weaker_layer_is_refused() {
        let cases: [(&str, Change); 16] = [
            ("tmpfs", &|h| {
                h.tmpfs.as_mut().unwrap().insert("/run".into(), "rw".into());
            }),
            ("read-only", &|h| h.readonly_rootfs = Some(false)),
            ("caps", &|h| h.cap_drop = Some(vec![])),
            ("cap add", &|h| h.cap_add = Some(vec!["NET_RAW".into()])),
            ("privileged", &|h| h.privileged = Some(true)),
            ("nnp", &|h| {
                h.security_opt.as_mut().unwrap().remove(0);
            }),
            ("seccomp", &|h| {
                h.security_opt.as_mut().unwrap()[1] = "seccomp=unconfined".into()
            }),
            ("network", &|h| h.network_mode = Some("host".into())),
            ("pid", &|h| h.pid_mode = Some("host".into())),
            ("swap", &|h| h.memory_swap = Some(-1)),
            ("docker-init", &|h| h.init = Some(true)),
            ("masked paths", &|h| h.masked_paths = None),
            ("one masked path dropped", &|h| {
                h.masked_paths
                    .as_mut()
                    .unwrap()
                    .retain(|p| p != "/proc/kallsyms");
            }),
            ("host sysfs shown", &|h| {
                h.masked_paths.as_mut().unwrap().retain(|p| p != "/sys");
            }),
            ("read-only paths", &|h| h.readonly_paths = None),
            ("one read-only path dropped", &|h| {
                h.readonly_paths
                    .as_mut()
                    .unwrap()
                    .retain(|p| p != "/proc/sys");
            }),
        ];
        for (what, change) in cases {
            assert!(with_host(change).is_err(), "{what} passed");
        }
    }

    #[test]
    fn dropped_limits_pass_only_when_the_spec_allows_unlimited() {
        let drop = |h: &mut HostConfig| {
            h.memory = Some(0);
            h.memory_swap = Some(0);
            h.pids_limit = None;
        };
        assert!(with_host(drop).is_err());
        let mut spec = spec();
        spec.allow_unlimited = true;
        let mut inspect = as_asked(&spec);
        drop(inspect.host_config.as_mut().unwrap());
        let applied = verify(&spec, &entrypoint(&inspect), &inspect).unwrap();
        assert_eq!(applied.memory_bytes, None);
        assert_eq!(applied.pids, None);
        assert_eq!(applied.cpu_millis, Some(500));
    }

    #[test]
    fn a_user_namespace_is_reported_only_when_the_engine_has_one() {
        let info = bollard::models::SystemInfo {
            security_options: Some(vec![
                "name=seccomp,profile=default".into(),
                "name=userns".into(),
            ]),
            ..Default::default()
        };
        assert!(EngineFacts::from_info(&info).user_namespace);
        assert!(!EngineFacts::from_info(&Default::default()).user_namespace);
    }
}
