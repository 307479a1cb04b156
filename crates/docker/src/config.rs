//! The container a spec becomes: `SandboxSpec` to the Engine API's create body, one field to
//! one setting, with the strict defaults of DESIGN.md and nothing left to the engine's
//! defaults where those are looser.
//!
//! This module must never loosen a spec: whatever the spec does not grant (capabilities,
//! host namespaces, network, devices, writable paths) the container does not get. What the
//! engine really applied is checked afterwards from container inspect (`enforced`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig, Mount,
    MountBindOptions, MountBindOptionsPropagationEnum, MountType, ResourcesUlimits,
};
use nanoclaw_spec::container::ContainerInit;
use nanoclaw_spec::{
    check_env, check_sandbox_path, proc_masks, BackendError, EgressProxy, Network, Root,
    SandboxSpec,
};

use crate::init_binary::{self, InitBinary};
use crate::seccomp;

/// The smallest memory limit the engine accepts (Docker refuses less than 6 MiB).
const MIN_MEMORY_BYTES: u64 = 6 << 20;
/// The hostname inside every sandbox, as the native backend sets it.
pub const HOSTNAME: &str = "nanoclaw";
/// `SecurityOpt` entry that sets `no_new_privs` for every process of the container.
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges";

/// Paths hidden from the container beyond the shared `/proc` list
/// (`nanoclaw_spec::proc_masks`), for what the native backend does not mount at all: the
/// host's sysfs (the engine would show it read-only, with the host's devices, network
/// interfaces, cgroup tree and kernel state; masked, `/sys` is an empty read-only tmpfs, as
/// a native sandbox has no `/sys`) and the writable POSIX message-queue file system.
///
/// The engine masks in this order. The mounts the engine makes below `/sys` (the cgroup
/// tree, writable on some engines) are masked first, so that the mount table shows nothing
/// writable under `/sys` even where the `/sys` mask covers it: a mount hidden by another is
/// unreachable by path, but still listed, and `verify` judges the list.
pub const MASKED_OUTSIDE_PROC: [&str; 5] = [
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/fs/cgroup",
    "/sys",
    "/dev/mqueue",
];

/// `HostConfig.MaskedPaths`: an empty file system over each path (runc binds `/dev/null`
/// over a file, an empty read-only tmpfs over a directory, after the mounts, and skips a
/// path the container does not have). Setting the list replaces the engine's defaults,
/// which the shared list includes. Then the credential files the runner's scan found in
/// the mounts, hidden as the native backend hides them.
pub fn masked_paths(spec: &SandboxSpec) -> Vec<String> {
    let mut paths = proc_masks::masked();
    paths.extend(MASKED_OUTSIDE_PROC.map(String::from));
    paths.extend(spec.hidden.iter().map(|p| p.to_string_lossy().into_owned()));
    paths
}

/// `HostConfig.ReadonlyPaths`: the shared read-only `/proc` list, replacing the engine's.
pub fn readonly_paths() -> Vec<String> {
    proc_masks::read_only()
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::Invalid(message.into())
}

/// The image reference of a spec; the docker backend runs images only.
pub fn image_reference(spec: &SandboxSpec) -> Result<&str, BackendError> {
    match &spec.root {
        Root::Image(reference) => Ok(reference),
        Root::Host => Err(invalid(
            "the docker backend needs an image (--image NAME@sha256:… or a local image ID \
             sha256:…); the host root is for the native backend",
        )),
        Root::Rootfs(dir) => Err(invalid(format!(
            "the docker backend needs an image, not the rootfs directory {} (build or import \
             it as an image, or use the native backend)",
            dir.display()
        ))),
    }
}

/// Refuses specs this backend cannot run as written, with the same rules as the native
/// backend where they overlap.
pub fn validate(spec: &SandboxSpec) -> Result<(), BackendError> {
    if spec.command.is_empty() {
        return Err(invalid("no command given"));
    }
    image_reference(spec)?;
    check_sandbox_path("workdir", &spec.workdir)?;
    match (&spec.network, &spec.egress_proxy) {
        (Network::None, None) => {}
        (Network::Egress(_), Some(proxy)) => {
            check_sandbox_path("egress proxy socket", &proxy.socket)?;
        }
        (Network::Egress(_), None) => {
            return Err(invalid(
                "a sandbox with egress needs its host proxy (the runner starts it)",
            ))
        }
        (Network::None, Some(_)) => {
            return Err(invalid(
                "an egress proxy was given for a sandbox without egress",
            ))
        }
    }
    spec.syscalls.check()?;
    for (key, value) in &spec.env {
        check_env(key, value).map_err(invalid)?;
    }
    spec.check_mounts()?;
    spec.check_secrets()?;
    // A container's environment is kept by the engine in its config on the host (and shown
    // by `docker inspect`): only placeholders go there; `file` and `env` values go to the
    // init on its lifeline, in one frame that an empty pipe takes whole.
    let values: Vec<&[u8]> = delivered_by_init(spec).map(|s| s.value.expose()).collect();
    if nanoclaw_spec::container::secrets_frame(&values).len()
        > nanoclaw_spec::container::MAX_SECRETS_FRAME
    {
        return Err(invalid(format!(
            "the file and env secrets take more than {} bytes together, the most the docker \
             backend hands its init",
            nanoclaw_spec::container::MAX_SECRETS_FRAME
        )));
    }
    let limits = &spec.limits;
    if limits.memory_bytes < MIN_MEMORY_BYTES {
        return Err(invalid(format!(
            "memory limit {} bytes is too small for the docker backend (minimum 6m)",
            limits.memory_bytes
        )));
    }
    if limits.pids < 2 {
        return Err(invalid(
            "pids limit must be at least 2 (the sandbox init and the command)",
        ));
    }
    if limits.cpu_millis < 10 {
        return Err(invalid("cpu limit must be at least 0.01 CPU"));
    }
    Ok(())
}

/// A host path resolved once for the engine: never a symlink itself, and passed on in
/// canonical form so the engine resolves no link on the way.
pub(crate) fn mount_source(path: &Path) -> Result<PathBuf, BackendError> {
    let what = |e| BackendError::io(format!("mount source {}", path.display()), e);
    let meta = std::fs::symlink_metadata(path).map_err(what)?;
    if meta.file_type().is_symlink() {
        return Err(invalid(format!(
            "mount source {} is a symlink; name its target instead",
            path.display()
        )));
    }
    std::fs::canonicalize(path).map_err(what)
}

fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<Mount, BackendError> {
    let str_of = |p: &Path| {
        p.to_str()
            .map(String::from)
            .ok_or_else(|| invalid(format!("mount path {} is not UTF-8", p.display())))
    };
    Ok(Mount {
        target: Some(str_of(dst)?),
        source: Some(str_of(src)?),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
            // Only the source mount itself, as the native backend binds: mounts below it on
            // the host stay out, so none of them can stay writable under a read-only bind.
            non_recursive: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The bind mounts of a spec, each read-only unless writable. The sources are the run's
/// staging mounts (`staging`), which already hold a writable mount's read-only `.git`.
pub fn binds(spec: &SandboxSpec) -> Result<Vec<Mount>, BackendError> {
    spec.mounts
        .iter()
        .map(|mount| bind(&mount_source(&mount.src)?, &mount.dst, !mount.writable))
        .collect()
}

/// `HostConfig.Tmpfs`: every tmpfs noexec, nosuid, nodev, sized, world-writable with the
/// sticky bit (as the native backend mounts them); with `file` secrets, the secrets
/// directory, the sandbox user's only (the init writes the files into it).
pub fn tmpfs(spec: &SandboxSpec) -> HashMap<String, String> {
    let mut tmpfs: HashMap<String, String> = spec
        .tmpfs
        .iter()
        .map(|t| {
            (
                t.dst.to_string_lossy().into_owned(),
                format!("rw,noexec,nosuid,nodev,size={},mode=1777", t.size_bytes),
            )
        })
        .collect();
    if has_file_secrets(spec) {
        tmpfs.insert(
            nanoclaw_spec::SECRETS_DIR.into(),
            format!(
                "rw,noexec,nosuid,nodev,size={},mode=0700,uid={},gid={}",
                nanoclaw_spec::container::MAX_SECRETS_FRAME + (64 << 10),
                spec.user.uid,
                spec.user.gid
            ),
        );
    }
    tmpfs
}

/// The secrets the container's init delivers (`file` and `env`), in the order of its
/// `ContainerInit::secrets`.
pub fn delivered_by_init(
    spec: &SandboxSpec,
) -> impl Iterator<Item = &nanoclaw_spec::SandboxSecret> {
    spec.secrets
        .iter()
        .filter(|s| s.delivery != nanoclaw_spec::Delivery::Placeholder)
}

fn has_file_secrets(spec: &SandboxSpec) -> bool {
    spec.secrets
        .iter()
        .any(|s| s.delivery == nanoclaw_spec::Delivery::File)
}

/// The environment the engine gets: the spec's, and `NAME_FILE` of each `file` secret
/// (a path, not a value; `env` values go to the init, never here).
fn engine_env(spec: &SandboxSpec) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    for secret in &spec.secrets {
        if secret.delivery == nanoclaw_spec::Delivery::File {
            let key = format!("{}_FILE", secret.name);
            env.retain(|(k, _)| *k != key);
            env.push((key, secret.file_inside().to_string_lossy().into_owned()));
        }
    }
    env
}

fn ulimit(name: &str, value: u64) -> ResourcesUlimits {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(value),
        hard: Some(value),
    }
}

fn to_i64(what: &str, value: u64) -> Result<i64, BackendError> {
    i64::try_from(value).map_err(|_| invalid(format!("{what} {value} is out of range")))
}

/// The `HostConfig` of a spec.
pub fn host_config(spec: &SandboxSpec) -> Result<HostConfig, BackendError> {
    let limits = &spec.limits;
    let memory = to_i64("memory limit", limits.memory_bytes)?;
    Ok(HostConfig {
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: None,
        security_opt: Some(vec![
            NO_NEW_PRIVILEGES.into(),
            format!("seccomp={}", seccomp::profile_json()),
        ]),
        privileged: Some(false),
        // nanoclaw's own init (`InitBinary`) is the entrypoint, not the engine's.
        init: Some(false),
        pids_limit: Some(i64::from(limits.pids)),
        memory: Some(memory),
        // Equal to the memory limit: no swap on top of it.
        memory_swap: Some(memory),
        nano_cpus: Some(i64::from(limits.cpu_millis) * 1_000_000),
        network_mode: Some("none".into()),
        ipc_mode: Some("private".into()),
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        masked_paths: Some(masked_paths(spec)),
        readonly_paths: Some(readonly_paths()),
        tmpfs: Some(tmpfs(spec)),
        mounts: Some(binds(spec)?),
        ulimits: Some(vec![
            ulimit("core", 0),
            ulimit("nofile", limits.open_files),
            ulimit("fsize", limits.file_size_bytes),
        ]),
        // The engine would otherwise keep every byte the command writes in a log file on the
        // host, with no bound: output is read through the attach stream only.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        auto_remove: Some(false),
        ..Default::default()
    })
}

/// The writable places of a sandbox: its tmpfs and writable mounts, and the engine's
/// `/dev/shm` (noexec, private to the container), where POSIX shared memory lives, as in a
/// native sandbox.
fn writable(spec: &SandboxSpec) -> Vec<PathBuf> {
    let tmpfs = spec.tmpfs.iter().map(|t| t.dst.clone());
    let mounts = spec
        .mounts
        .iter()
        .filter(|m| m.writable)
        .map(|m| m.dst.clone());
    let secrets = has_file_secrets(spec).then(|| PathBuf::from(nanoclaw_spec::SECRETS_DIR));
    tmpfs
        .chain(mounts)
        .chain([PathBuf::from("/dev/shm")])
        .chain(secrets)
        .collect()
}

/// The create body: the image by ID, nanoclaw's init in front of the command, exactly the
/// spec's environment, the sandbox user, and the labels the reaper finds it by.
pub fn container_body(
    spec: &SandboxSpec,
    image_id: &str,
    labels: HashMap<String, String>,
    stdin: bool,
    init: &InitBinary,
    [report, lifeline]: [&Path; 2],
) -> Result<ContainerCreateBody, BackendError> {
    let mut host_config = host_config(spec)?;
    let mounts = host_config.mounts.get_or_insert_with(Vec::new);
    let report_inside = PathBuf::from(init_binary::REPORT_INSIDE);
    let lifeline_inside = PathBuf::from(init_binary::LIFELINE_INSIDE);
    for (src, dst) in init.mounts().into_iter().chain([
        (report.into(), report_inside.clone()),
        (lifeline.into(), lifeline_inside.clone()),
    ]) {
        mounts.push(bind(&mount_source(&src)?, &dst, true)?);
    }
    if let Some(proxy) = &spec.egress_proxy {
        // The container still has no network but loopback: its one way out is the proxy's
        // socket, which the init's bridge serves on 127.0.0.1:PORT, as in a native sandbox.
        mounts.push(bind(
            &mount_source(&proxy.socket)?,
            Path::new(EgressProxy::SOCKET_INSIDE),
            true,
        )?);
    }
    let arguments = ContainerInit {
        command: spec.command.clone(),
        env: engine_env(spec).into_iter().map(|(key, _)| key).collect(),
        writable: writable(spec),
        workdir: spec.workdir.clone(),
        bridge_port: spec.egress_proxy.as_ref().map(|proxy| proxy.port),
        report: report_inside,
        lifeline: lifeline_inside,
        timeout_ms: u64::try_from(spec.limits.timeout.as_millis()).unwrap_or(u64::MAX),
        secrets: delivered_by_init(spec)
            .map(|s| nanoclaw_spec::container::ContainerSecret {
                name: s.name.clone(),
                delivery: s.delivery,
            })
            .collect(),
    };
    let arguments = serde_json::to_string(&arguments)
        .map_err(|e| invalid(format!("the init's arguments: {e}")))?;
    Ok(ContainerCreateBody {
        image: Some(image_id.into()),
        // The entrypoint replaces the image's, and an empty Cmd drops the image's default
        // arguments: the init runs exactly the spec's command.
        entrypoint: Some(init.entrypoint(arguments)),
        cmd: Some(Vec::new()),
        user: Some(format!("{}:{}", spec.user.uid, spec.user.gid)),
        env: Some(
            engine_env(spec)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        // The init enters the spec's workdir; the engine would create a missing one.
        working_dir: Some("/".into()),
        hostname: Some(HOSTNAME.into()),
        labels: Some(labels),
        tty: Some(false),
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(stdin),
        stdin_once: Some(stdin),
        host_config: Some(host_config),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_spec::{EgressRule, Mount as SpecMount, Tmpfs};

    fn spec() -> SandboxSpec {
        let mut spec = SandboxSpec::new(vec!["id".into()]);
        spec.root = Root::Image(format!("sha256:{}", "a".repeat(64)));
        spec
    }

    #[test]
    fn strict_defaults_map_one_to_one() -> Result<(), BackendError> {
        let host = host_config(&spec())?;
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.cap_add, None);
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.init, Some(false), "nanoclaw's own init instead");
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.memory_swap, Some(512 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.pid_mode, None);
        assert_eq!(host.uts_mode, None);
        assert_eq!(host.userns_mode, None);
        let security = host.security_opt.unwrap_or_default();
        assert_eq!(security[0], "no-new-privileges");
        assert!(security[1].starts_with("seccomp={"));
        assert_eq!(
            host.tmpfs.unwrap_or_default()["/tmp"],
            format!("rw,noexec,nosuid,nodev,size={},mode=1777", 64 << 20)
        );
        let ulimits = host.ulimits.unwrap_or_default();
        let core = ulimits.iter().find(|u| u.name.as_deref() == Some("core"));
        assert_eq!(core.and_then(|u| u.hard), Some(0));
        let masked = host.masked_paths.unwrap_or_default();
        for path in [
            "/proc/kcore",
            "/proc/kallsyms",
            "/proc/driver",
            "/sys",
            "/dev/mqueue",
        ] {
            assert!(masked.iter().any(|m| m == path), "{path} is masked");
        }
        let read_only = host.readonly_paths.unwrap_or_default();
        assert!(read_only.iter().any(|p| p == "/proc/sys"));
        Ok(())
    }

    #[test]
    fn the_command_is_the_whole_argv_and_the_env_is_exact() -> Result<(), BackendError> {
        let mut spec = spec();
        spec.command = vec!["sh".into(), "-c".into(), "echo $A".into()];
        spec.set_env("A", "x=y");
        let init = InitBinary::static_at("/bin/busybox".into())?;
        let pipes = [Path::new("/dev/null"), Path::new("/dev/zero")];
        let body = container_body(&spec, "sha256:x", HashMap::new(), false, &init, pipes)?;
        let entrypoint = body.entrypoint.unwrap_or_default();
        assert_eq!(
            entrypoint[..2],
            ["/.nanoclaw/nanoclaw", "__nanoclaw_container_init"]
        );
        let init: ContainerInit = serde_json::from_str(&entrypoint[2]).unwrap();
        assert_eq!(init.command, spec.command);
        assert_eq!(init.env, ["PATH", "HOME", "LANG", "A"]);
        assert_eq!(init.writable, [Path::new("/tmp"), Path::new("/dev/shm")]);
        assert_eq!(body.cmd, Some(vec![]));
        assert_eq!(body.user.as_deref(), Some("10001:10001"));
        let env = body.env.unwrap_or_default();
        assert_eq!(env.len(), 4);
        assert_eq!(env[3], "A=x=y");
        assert_eq!(body.open_stdin, Some(false));
        Ok(())
    }

    #[test]
    fn a_symlinked_mount_source_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc", &link)?;
        let mut spec = spec();
        spec.mounts.push(SpecMount {
            src: link,
            dst: "/data".into(),
            writable: false,
        });
        let error = binds(&spec)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("is a symlink"), "{error}");
        Ok(())
    }

    #[test]
    fn specs_the_backend_cannot_honour_are_refused() {
        let refused = |change: &dyn Fn(&mut SandboxSpec)| {
            let mut spec = spec();
            change(&mut spec);
            validate(&spec).is_err()
        };
        assert!(!refused(&|_| {}));
        assert!(refused(&|s| s.root = Root::Host));
        assert!(refused(&|s| s.root = Root::Rootfs("/srv/root".into())));
        assert!(refused(&|s| s.network =
            Network::Egress(vec![EgressRule {
                host: "example.com".into(),
                port: 443
            }])));
        assert!(refused(&|s| s.command.clear()));
        assert!(refused(&|s| s.workdir = "work".into()));
        assert!(refused(&|s| s.limits.memory_bytes = 1 << 20));
        assert!(refused(&|s| s.syscalls.profile = "unconfined".into()));
        assert!(refused(&|s| s.tmpfs.push(Tmpfs {
            dst: "/proc/x".into(),
            size_bytes: 1
        })));
        assert!(refused(&|s| s.tmpfs.push(Tmpfs {
            dst: "/tmp".into(),
            size_bytes: 1
        })));
        assert!(refused(&|s| s.env.push(("A=B".into(), "c".into()))));
    }

    #[test]
    fn the_refusal_of_a_host_root_names_the_image_option() {
        let mut spec = spec();
        spec.root = Root::Host;
        let error = validate(&spec)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("needs an image"), "{error}");
    }
}
